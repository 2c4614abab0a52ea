"""Fixtures of the hostile suite: a channel of crafted packages, locks naming them, and checks
that a refused command left nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from rattler.index import index_fs

from conda_envkit.testing.crafted_lock import lock_document, lock_entry, wheel_lock_entry
from conda_envkit.testing.hostile_packages import HostilePackage, Member, RawWheel, python_package, write_hostile_package, write_raw_wheel
from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel
from tests.conftest import Result, run_envkit, write_env

CANARY = "/tmp/envkit-hostile-canary"


def _file(name: str, content: bytes = b"x\n", mode: int = 0o644) -> Member:
    return Member(name, "file", content, mode=mode)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listed(path: str, content: bytes = b"x\n", **extra: object) -> dict:
    return {"_path": path, "path_type": "hardlink", "sha256": _sha(content), "size_in_bytes": len(content), **extra}


PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
PLACEHOLDER_SCRIPT = f"#!{PLACEHOLDER}/bin/sh\n".encode()

# name -> (package, what the error must say). Every one is a real .conda in the hostile channel.
HOSTILE_CONDA: dict[str, tuple[HostilePackage, str]] = {
    "abs-path": (HostilePackage("abs-path", (_file(CANARY + "-abs"),), (_listed(CANARY + "-abs"),)), "leaves its root"),
    "dotdot-path": (
        HostilePackage("dotdot-path", (_file("bin/ok"),), (_listed("../../../envkit-hostile-dotdot"),)),
        "leaves its root",
    ),
    "abs-tar-entry": (HostilePackage("abs-tar-entry", (_file("bin/ok"), _file(CANARY + "-tar")), None), "leaves its root"),
    "dotdot-tar-entry": (HostilePackage("dotdot-tar-entry", (_file("bin/ok"), _file("../../escape.txt")), None), "leaves its root"),
    "drive-path": (HostilePackage("drive-path", (_file("bin/ok"),), (_listed("C:/Windows/evil.dll"),)), "leaves its root"),
    "symlink-absolute": (
        HostilePackage("symlink-absolute", (Member("lib/hostlink", "symlink", target="/etc"),), None),
        "points outside the prefix",
    ),
    "symlink-climb": (
        HostilePackage("symlink-climb", (Member("lib/up", "symlink", target="../../../../tmp"),), None),
        "points outside the prefix",
    ),
    "hardlink-out": (
        HostilePackage("hardlink-out", (_file("bin/ok"), Member("bin/passwd", "hardlink", target="../../etc/passwd")), None),
        "points outside the prefix",
    ),
    # A hard link stands for the file it names, written before it: none there, or content paths.json contradicts.
    "hardlink-dangling": (
        HostilePackage("hardlink-dangling", (_file("bin/ok"), Member("bin/alias", "hardlink", target="bin/ghost")), None),
        "hard link bin/alias -> bin/ghost names no file before it",
    ),
    "hardlink-forward": (
        HostilePackage("hardlink-forward", (Member("bin/alias", "hardlink", target="bin/ok"), _file("bin/ok")), None),
        "hard link bin/alias -> bin/ok names no file before it",
    ),
    "hardlink-lies": (
        HostilePackage(
            "hardlink-lies",
            (_file("bin/ok", b"honest\n"), Member("bin/tool", "hardlink", target="bin/ok")),
            (_listed("bin/ok", b"honest\n"), _listed("bin/tool", b"trojan\n")),
        ),
        "its paths.json says",
    ),
    "directory-entry": (
        HostilePackage(
            "directory-entry",
            (_file("bin/ok"), Member("share/empty", "dir")),
            (_listed("bin/ok"), {"_path": "share/empty", "path_type": "directory"}),
        ),
        "as a directory (path_type directory), which py-rattler cannot install",
    ),
    "long-name": (HostilePackage("long-name", (_file("bin/ok"), _file("bin/" + "a" * 300)), None), "has a name no Linux filesystem holds"),
    "tab-name": (HostilePackage("tab-name", (_file("bin/ok"), _file("bin/a\tb")), None), "holds a control character"),
    "fifo": (HostilePackage("fifo", (_file("bin/ok"), Member("bin/pipe", "fifo")), None), "special file"),
    "chardev": (HostilePackage("chardev", (_file("bin/ok"), Member("dev/mem", "chardev")), None), "special file"),
    "sha-mismatch": (
        HostilePackage("sha-mismatch", (_file("bin/tool", b"trojan\n"),), (_listed("bin/tool", b"honest\n"),)),
        "its paths.json says",
    ),
    # The same with a text prefix placeholder (a file the bake replaces itself while streaming).
    "placeholder-sha-mismatch": (
        HostilePackage(
            "placeholder-sha-mismatch",
            (_file("bin/tool", PLACEHOLDER_SCRIPT + b"trojan\n"),),
            (_listed("bin/tool", PLACEHOLDER_SCRIPT + b"honest\n", prefix_placeholder=PLACEHOLDER, file_mode="text"),),
        ),
        "its paths.json says",
    ),
    "size-mismatch": (
        HostilePackage("size-mismatch", (_file("bin/tool", b"abc\n"),), ({**_listed("bin/tool", b"abc\n"), "size_in_bytes": 999},)),
        "its paths.json says 999",
    ),
    "listed-missing": (
        HostilePackage("listed-missing", (_file("bin/ok"),), (_listed("bin/ok"), _listed("bin/ghost"))),
        "does not hold",
    ),
    "type-confusion": (
        HostilePackage("type-confusion", (Member("bin/tool", "symlink", target="ok"), _file("bin/ok")), (_listed("bin/tool"),)),
        "listed as a file",
    ),
    "writes-conda-meta": (
        HostilePackage("writes-conda-meta", (_file("conda-meta/python-3.11.9-h0_0.json", b"{}\n"),), None),
        "which no package may install",
    ),
    "through-own-symlink": (
        HostilePackage("through-own-symlink", (Member("lib/here", "symlink", target="."), _file("lib/here/evil.txt")), None),
        "through the symlink lib/here",
    ),
}
# Two packages that are each harmless alone; together a symlink chain leaves the prefix.
CHAIN = (
    HostilePackage("chain-a", (Member("lib/up", "symlink", target=".."),), None),
    HostilePackage("chain-b", (Member("lib/upup", "symlink", target="up/.."),), None),
)


@pytest.fixture(scope="session")
def hostile_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local channel holding every crafted package above, a stand-in python, and an honest package."""
    channel = tmp_path_factory.mktemp("channels") / "hostile"
    honest = PackageSpec("honest", "1.0", "0", files=(PackageFile("bin/honest", b"#!/bin/sh\necho honest\n", executable=True),))
    linky = PackageSpec(
        "linky",
        "1.0",
        "0",
        files=(PackageFile("lib/python3.11/site-packages/linky/__init__.py", b"VALUE = 1\n"),),
        symlinks=(("bin/linky", "honest"),),
    )
    build_channel(channel, [python_package(), honest, linky], subdirs=("linux-64",))
    for package, _ in HOSTILE_CONDA.values():
        write_hostile_package(package, channel)
    for package in CHAIN:
        write_hostile_package(package, channel)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    return channel


@dataclass
class Workspace:
    """A directory with a lock, a cache, and a place that must stay empty."""

    root: Path
    cache: Path

    @property
    def lock(self) -> Path:
        return self.root / "conda-lock.yml"

    def envkit(self, *args: str | Path, env: dict[str, str] | None = None) -> Result:
        return run_cli(*args, cwd=self.root, env={"ENVKIT_CACHE_DIR": str(self.cache), **(env or {})})

    def install(self, prefix: str = "env", env: dict[str, str] | None = None) -> Result:
        return self.envkit("install", "-q", "--prefix", prefix, "-p", "linux-64", env=env)

    def bake_layout(self) -> str:
        """The lock baked (scratch base, linux-64) into the OCI layout `image`: its tag."""
        import json

        result = self.envkit("bake", "-q", "--oci", "image", "-p", "linux-64")
        assert result.returncode == 0, result.output
        return str(json.loads((self.root / "bake.json").read_text())["tags"][0])

    def entries(self) -> list[dict]:
        return yaml.safe_load(self.lock.read_text())["package"]

    def rewrite(self, edit) -> None:  # type: ignore[no-untyped-def]
        """Apply `edit(document)` to the lock (bypassing envkit: a hand-crafted lock)."""
        document = yaml.safe_load(self.lock.read_text())
        edit(document)
        self.lock.write_text(yaml.safe_dump(document, sort_keys=False))

    def add_wheel(self, wheel: Path, name: str, version: str, url: str | None = None) -> None:
        """Append a pip entry for `wheel` to the lock (as `envkit lock` would write it)."""

        def edit(document: dict) -> None:
            document["package"].append(wheel_lock_entry(wheel, name, version, url))

        self.rewrite(edit)


def run_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """The real `envkit` command line, in this process (the suite runs hundreds of cases).

    An exception other than the CLI's own exit is a traceback: the case fails.
    """
    from click.testing import CliRunner

    from conda_envkit.cli import main

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("Traceback:\n" + "".join(traceback.format_exception(result.exception)))
    return Result(result.exit_code, result.stdout, result.stderr)


def crafted_lock(channel: Path, names: list[str]) -> dict:
    """A lock (as a document) naming packages of the hostile channel, written the way `envkit lock` writes it."""
    entries = []
    for name in names:
        if name == "python":
            entries.append(lock_entry(channel / "linux-64" / "python-3.11.9-h0_0.conda", "python", "3.11.9", "h0_0"))
        else:
            entries.append(lock_entry(channel / "noarch" / f"{name}-1.0-0.conda", name))
    return lock_document(channel, entries)


def locked_workspace(root: Path, channel: Path, deps: list[str]) -> Workspace:
    """A lock of `deps` from `channel` for linux-64 in `root` (crafted, as a pull request could)."""
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace(root, root.parent / f"{root.name}-cache")
    ws.lock.write_text(yaml.safe_dump(crafted_lock(channel, deps), sort_keys=False))
    return ws


def real_locked_workspace(root: Path, channel: Path, deps: list[str]) -> Workspace:
    """`envkit lock` of `deps` from `channel` for linux-64, in `root`."""
    write_env(root, f"channels: [{channel}]\nplatforms: [linux-64]\ndependencies: [{', '.join(deps)}]\n")
    ws = Workspace(root, root.parent / f"{root.name}-cache")
    result = run_envkit("lock", "-q", cwd=root, env={"ENVKIT_CACHE_DIR": str(ws.cache)})
    assert result.returncode == 0, result.output
    return ws


def assert_refused(result: Result, *fragments: str) -> str:
    """Exit 2, a one-line error (plus hint) naming every fragment; return the error line."""
    assert result.returncode == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("error: ", "  hint: ")) for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def assert_nothing_left(parent: Path, prefix: str = "env") -> None:
    """No prefix and no staging directory next to it."""
    assert not (parent / prefix).exists()
    assert not [p for p in parent.iterdir() if "envkit-staging" in p.name]


def make_wheel(directory: Path, wheel: RawWheel) -> Path:
    return write_raw_wheel(wheel, directory)


def environ_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def empty_answer(handler, status: int, location: str | None = None) -> bool:  # type: ignore[no-untyped-def]
    """A LoggingServer responder's answer with no body: `status` (and a Location, if given)."""
    handler.send_response(status)
    if location is not None:
        handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return True


def basic_challenge(handler) -> bool:  # type: ignore[no-untyped-def]
    """A LoggingServer responder asking for basic auth (401), as a registry that needs a login does."""
    handler.send_response(401)
    handler.send_header("WWW-Authenticate", 'Basic realm="hostile"')
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return True


def sends_elsewhere(status: int, location: Callable[[Any], str]) -> Callable[[Any], bool]:
    """A responder that asks for basic auth, then answers a request that carries it with `status` and a Location
    (`location(handler)`) on another server: whether the credentials follow."""

    def respond(handler) -> bool:  # type: ignore[no-untyped-def]
        if "Authorization" not in handler.headers:
            return basic_challenge(handler)
        return empty_answer(handler, status, location(handler))

    return respond


def json_answer(handler, document: object, content_type: str = "application/json", status: int = 200) -> bool:  # type: ignore[no-untyped-def]
    """A LoggingServer responder's answer: `document` as a JSON body."""
    body = json.dumps(document).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    return True


def own_token_realm(handler) -> bool:  # type: ignore[no-untyped-def]
    """A LoggingServer responder for a host a registry sends requests to (an upload Location, a redirect) that asks
    for a bearer token from a realm of its own, and hands one out there: whether the registry's login goes to it."""
    if handler.path.startswith("/token"):
        return json_answer(handler, {"token": "stolen"})
    handler.send_response(401)
    handler.send_header("WWW-Authenticate", f'Bearer realm="http://{handler.headers["Host"]}/token",service="elsewhere"')
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return True


Answer = tuple[int, list[tuple[str, str]], bytes]


def forwards_to(
    upstream: str,
    before: Callable[[Any], bool] | None = None,
    after: Callable[[Any, Answer], Answer | None] | None = None,
) -> Callable[[Any], bool]:
    """A LoggingServer responder that makes it a proxy in front of the registry at `upstream` (host:port): a request
    `before(handler)` does not answer itself (True) goes to upstream (with this server's Host, so the registry's
    Locations name the proxy), and `after(handler, (status, headers, body))` may change upstream's answer.
    `handler.body` holds the request's body."""
    import http.client

    def respond(handler) -> bool:  # type: ignore[no-untyped-def]
        length = int(handler.headers.get("Content-Length") or 0)
        handler.body = handler.rfile.read(length) if length else b""
        if before is not None and before(handler):
            return True
        skipped = ("connection", "content-length", "transfer-encoding", "keep-alive")
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in skipped}
        connection = http.client.HTTPConnection(upstream, timeout=30)
        try:
            sends_body = handler.body or handler.command in ("POST", "PUT", "PATCH")
            connection.request(handler.command, handler.path, body=handler.body if sends_body else None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            answer: Answer = (response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in (*skipped, "date")], body)
        finally:
            connection.close()
        length_of_head = response.getheader("Content-Length", "0")  # (a HEAD's: the size of what a GET would send)
        if after is not None:
            answer = after(handler, answer) or answer
        status, answer_headers, body = answer
        handler.send_response(status)
        for key, value in answer_headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", length_of_head if handler.command == "HEAD" else str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        return True

    return respond


def replace_header(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    """`headers` (as `forwards_to`'s `after` gets them) with `name` set to `value` (and only to it)."""
    return [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, value)]


def header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name.lower()), "")


class LoggingServer:
    """An HTTP server on 127.0.0.1 (in a thread) that serves a directory and logs every request:
    the request line and every header, so a test can assert no secret ever reached it."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None, responder=None) -> None:  # type: ignore[no-untyped-def]
        import http.server
        import ssl
        import threading

        self.root = root
        self.log: list[str] = []
        server_self = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=str(root), **kwargs)

            def _record(self) -> None:
                server_self.log.append(f"{self.command} {self.path}\n{self.headers}")

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                if responder is None or not responder(self):
                    super().do_GET()

            def do_HEAD(self) -> None:  # noqa: N802
                self._record()
                if responder is None or not responder(self):
                    super().do_HEAD()

            def do_POST(self) -> None:  # noqa: N802
                self._record()
                if responder is None or not responder(self):
                    self.send_error(405)

            do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{scheme}://{self.host}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "\n".join(self.log)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def logging_server(tmp_path: Path, hostile_channel: Path):  # type: ignore[no-untyped-def]
    """The hostile channel over HTTP (under /ch/), every request and header logged."""
    import shutil

    root = tmp_path / "served"
    shutil.copytree(hostile_channel, root / "ch")
    server = LoggingServer(root)
    yield server
    server.close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key): trust it with REQUESTS_CA_BUNDLE."""
    import subprocess

    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def with_package(lock, name: str, **changes: str):  # type: ignore[no-untyped-def]
    """`lock` (a LockFile) with package `name` changed: `url`, `name`, `md5` or `sha256` (bypassing the parser)."""
    from dataclasses import replace

    hash_changes = {k: changes.pop(k) for k in ("md5", "sha256") if k in changes}
    packages = tuple(replace(p, hash=replace(p.hash, **hash_changes), **changes) if p.name == name else p for p in lock.package)
    return replace(lock, package=packages)


def skopeo() -> str:
    """The skopeo executable (an independent reader of images); a failure, not a skip, when it is missing."""
    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is not installed; run .ci/run (it installs docker-registry, skopeo, umoci, busybox-static)")
    return path
