"""Two inputs a user's machine or a registry hands envkit, read as hostile:

1. containers-style registry login files (`auth.json`: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/
   and $XDG_CONFIG_HOME/containers/, then docker's config.json). A malformed or special file is an error naming
   it (exit 2, no traceback); its credential goes to its own registry only and is never printed. Registries on
   127.0.0.1 log every header they receive.
2. The lock copy bake puts in a registry image's metadata layer, which `envkit inspect REGISTRY/REPO:TAG` and
   `envkit export --image` list packages from: an image pushed with the OCI distribution API (urllib, as an
   attacker with push rights would) whose copy disagrees with its labels is refused, never listed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conda_envkit.testing.hostile_images import Layers, find, manifest_of, repack_layout, rewrite_config
from conda_envkit.testing.hostile_packages import RawWheel, write_raw_wheel
from tests.conftest import Registry, Result
from tests.hostile.conftest import (
    LoggingServer,
    Workspace,
    assert_refused,
    basic_challenge,
    empty_answer,
    locked_workspace,
    run_cli,
    sends_elsewhere,
)

PASSWORD = "authjson-Pa55-canary-5e1f"
REPO = "team/app:1"


def _auth(user: str, password: str = PASSWORD) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def _recording_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = LoggingServer(tmp_path_factory.mktemp("recording"), responder=basic_challenge)
    yield server
    server.close()  # (once: a close waits up to half a second)


@pytest.fixture
def recording_registry(_recording_server: LoggingServer) -> LoggingServer:
    """A registry on 127.0.0.1 that asks for basic auth on every request and logs every header it gets (this test's)."""
    _recording_server.log.clear()
    return _recording_server


@dataclass
class Logins:
    """The four places a login is read from, all under the test's own directory (none exists until written)."""

    root: Path

    @property
    def explicit(self) -> Path:  # $REGISTRY_AUTH_FILE
        return self.root / "explicit" / "auth.json"

    @property
    def runtime(self) -> Path:  # $XDG_RUNTIME_DIR/containers/auth.json (podman/skopeo login)
        return self.root / "run" / "containers" / "auth.json"

    @property
    def config_home(self) -> Path:  # $XDG_CONFIG_HOME/containers/auth.json
        return self.root / "config" / "containers" / "auth.json"

    @property
    def docker(self) -> Path:  # $DOCKER_CONFIG/config.json
        return self.root / "docker" / "config.json"

    def path(self, where: str) -> Path:
        return getattr(self, where.replace("-", "_"))

    def write(self, where: str, content: bytes | dict) -> Path:
        path = self.path(where)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        return path

    def env(self, explicit: bool = False) -> dict[str, str | None]:
        return {
            "REGISTRY_AUTH_FILE": str(self.explicit) if explicit else None,
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "DOCKER_CONFIG": str(self.root / "docker"),
            "ENVKIT_REGISTRY_USER": None,
            "ENVKIT_REGISTRY_PASSWORD": None,
        }


@pytest.fixture
def logins(tmp_path: Path) -> Logins:
    (tmp_path / "logins").mkdir()
    return Logins(tmp_path / "logins")


def _inspect(logins: Logins, host: str, explicit: bool = False, env: dict[str, str | None] | None = None) -> Result:
    return run_cli("inspect", f"{host}/{REPO}", "--insecure", cwd=logins.root, env={**logins.env(explicit), **(env or {})})  # type: ignore[dict-item]


def _names(where: str, path: Path) -> list[str]:
    """What an error about the file at `path` must start with: its path (but see
    test_an_error_about_registry_auth_file_names_the_file: $REGISTRY_AUTH_FILE's path is masked today)."""
    return [] if where == "explicit" else [f"error: {path}"]


def _no_secret(result: Result, server: LoggingServer | None = None, secret: str = PASSWORD) -> None:
    assert "Traceback" not in result.output
    assert secret not in result.output, result.output
    assert base64.b64encode(secret.encode()).decode() not in result.output
    if server is not None:
        assert "Authorization" not in server.text(), server.text()


# -- 1. auth.json: where it is read from, and in which order ---------------------------------------------------------


@pytest.mark.parametrize("where", ["explicit", "runtime", "config-home", "docker"])
def test_a_login_in_each_file_goes_to_its_registry_and_is_never_printed(
    logins: Logins, recording_registry: LoggingServer, where: str
) -> None:
    logins.write(where, {"auths": {recording_registry.host: {"auth": _auth(where)}}})
    result = _inspect(logins, recording_registry.host, explicit=where == "explicit")
    # The registry keeps refusing: an error, after the login was sent once (basic auth, its own host).
    assert result.returncode == 2, result.output
    assert f"Authorization: Basic {_auth(where)}" in recording_registry.text()
    _no_secret(result)


def test_a_podman_login_in_auth_json_lets_bake_push_and_inspect_read_back(
    tmp_path: Path, logins: Logins, auth_registry: Registry, hostile_channel: Path
) -> None:
    # The real registry behind htpasswd: a `podman login` (auth.json only, no docker config, no ENVKIT_REGISTRY_*).
    host = auth_registry.host
    logins.write("runtime", {"auths": {host: {"auth": _auth("envkit", "s3cret-Pa55")}}})
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    env = {"ENVKIT_CACHE_DIR": str(ws.cache), **logins.env()}
    baked = run_cli("bake", "-q", "-p", "linux-64", "--push", f"{host}/team/app", "--insecure", cwd=ws.root, env=env)  # type: ignore[arg-type]
    assert baked.returncode == 0, baked.output
    tag = json.loads((ws.root / "bake.json").read_text())["tags"][0]
    read = run_cli("inspect", f"{host}/team/app:{tag}", "--insecure", cwd=ws.root, env=env)  # type: ignore[arg-type]
    assert read.returncode == 0, read.output
    assert json.loads(read.stdout)["record"]["packages"] == ["honest=1.0=0"]
    # A wrong password in the same file: refused, and neither password printed.
    logins.write("runtime", {"auths": {host: {"auth": _auth("envkit", PASSWORD)}}})
    refused = run_cli("inspect", f"{host}/team/app:{tag}", "--insecure", cwd=ws.root, env=env)  # type: ignore[arg-type]
    assert refused.returncode == 2 and "error: " in refused.stderr, refused.output
    _no_secret(refused)
    _no_secret(refused, secret="s3cret-Pa55")


PRECEDENCE = [
    # (the file that wins, the file it wins over)
    ("explicit", "runtime"),
    ("explicit", "config-home"),
    ("explicit", "docker"),
    ("runtime", "config-home"),
    ("runtime", "docker"),
    ("config-home", "docker"),
]


@pytest.mark.parametrize("winner,loser", PRECEDENCE, ids=[f"{w}-over-{lo}" for w, lo in PRECEDENCE])
def test_the_first_file_with_a_login_for_the_host_wins(logins: Logins, recording_registry: LoggingServer, winner: str, loser: str) -> None:
    host = recording_registry.host
    logins.write(winner, {"auths": {host: {"auth": _auth("winner")}}})
    logins.write(loser, {"auths": {host: {"auth": _auth("loser")}}})
    result = _inspect(logins, host, explicit=winner == "explicit")
    log = recording_registry.text()
    assert f"Authorization: Basic {_auth('winner')}" in log
    assert _auth("loser") not in log
    _no_secret(result)


def test_registry_auth_file_replaces_the_containers_files_and_docker_comes_after_it(
    logins: Logins, recording_registry: LoggingServer
) -> None:
    host = recording_registry.host
    # With $REGISTRY_AUTH_FILE set, the per-user containers files are not read at all (even malformed) ...
    logins.write("explicit", {"auths": {"other.example": {"auth": _auth("other")}}})
    logins.write("runtime", b"{not json")
    logins.write("config-home", {"auths": {host: {"auth": _auth("config-home")}}})
    # ... and docker's config.json still is, after it (docs/bake.md "Registries and auth").
    logins.write("docker", {"auths": {host: {"auth": _auth("docker")}}})
    result = _inspect(logins, host, explicit=True)
    log = recording_registry.text()
    assert f"Authorization: Basic {_auth('docker')}" in log
    assert _auth("config-home") not in log and _auth("other") not in log
    assert "not JSON" not in result.stderr
    _no_secret(result)


def test_a_file_without_an_entry_for_the_host_falls_through(logins: Logins, recording_registry: LoggingServer) -> None:
    host = recording_registry.host
    logins.write("runtime", {"auths": {"registry.example.org": {"auth": _auth("elsewhere")}}})
    logins.write("config-home", {"auths": {}})
    logins.write("docker", {"auths": {host: {"auth": _auth("docker")}}})
    _no_secret(_inspect(logins, host))
    log = recording_registry.text()
    assert f"Authorization: Basic {_auth('docker')}" in log and _auth("elsewhere") not in log


# -- 1. auth.json: a login for another host is never sent -------------------------------------------------------------


def _lookalikes(host: str) -> list[str]:
    ip, _, port = host.partition(":")
    other_port = str(int(port) + 1 if int(port) < 65535 else int(port) - 1)
    return [
        ip,  # the host without its port
        f"{ip}:{other_port}",
        f"localhost:{port}",  # the same machine by another name
        f"http://{ip}:{other_port}",
        f"{host}.evil.example",
        f"{host.upper()}x",
        f"https://{ip}:{other_port}/v2/",
        f"evil.example/{host}",
    ]


def test_logins_for_other_hosts_are_never_sent(logins: Logins, recording_registry: LoggingServer) -> None:
    host = recording_registry.host
    entries = {key: {"auth": _auth(f"u{i}")} for i, key in enumerate(_lookalikes(host))}
    entries["registry.example.org"] = {"username": "plain", "password": PASSWORD}
    for where in ("runtime", "config-home", "docker"):
        logins.write(where, {"auths": entries, "credHelpers": {"registry.example.org": "not-installed-helper"}})
    result = _inspect(logins, host)
    assert_refused(result, f"{host}: authentication required")
    assert recording_registry.log, "the registry was asked"
    _no_secret(result, recording_registry)


def test_a_login_does_not_follow_a_redirect_to_another_port(tmp_path: Path, logins: Logins) -> None:
    elsewhere = LoggingServer(tmp_path / "elsewhere", responder=lambda h: empty_answer(h, 404))
    redirecting = sends_elsewhere(307, lambda h: f"http://127.0.0.1:{elsewhere.port}{h.path}")
    registry = LoggingServer(tmp_path / "registry", responder=redirecting)
    try:
        logins.write("runtime", {"auths": {registry.host: {"auth": _auth("mine")}}})
        result = _inspect(logins, registry.host)
    finally:
        registry.close()
        elsewhere.close()
    assert f"Authorization: Basic {_auth('mine')}" in registry.text()
    assert elsewhere.log, "the redirect was followed"
    assert result.returncode == 2
    _no_secret(result, elsewhere)


# -- 1. auth.json: malformed content ---------------------------------------------------------------------------------

# name -> (content with HOST and PASS placeholders, what the error must say)
MALFORMED: dict[str, tuple[bytes, str]] = {
    "truncated": (b'{"auths": {"HOST": {"auth": "PASS', "containers auth file is not JSON"),
    "empty": (b"", "containers auth file is not JSON"),
    "deeply-nested": (b"[" * 200_000, "containers auth file is not JSON"),
    "a-list": (b'[{"auths": {}}]', "containers auth file is a JSON list, not an object"),
    "a-string": (b'"PASS"', "containers auth file is a JSON str, not an object"),
    "a-number": (b"1e999", "containers auth file is a JSON float, not an object"),
    "auths-a-list": (b'{"auths": ["HOST"]}', "`auths` is not a mapping"),
    "auths-a-string": (b'{"auths": "PASS"}', "`auths` is not a mapping"),
    "entry-a-string": (b'{"auths": {"HOST": "PASS"}}', "auths.HOST is not a mapping"),
    "entry-a-list": (b'{"auths": {"HOST": ["PASS"]}}', "auths.HOST is not a mapping"),
    "entry-a-number": (b'{"auths": {"HOST": 7}}', "auths.HOST is not a mapping"),
    "http-key-entry-a-list": (b'{"auths": {"http://HOST": [1]}}', "auths.http://HOST is not a mapping"),
    "auth-not-base64": (b'{"auths": {"HOST": {"auth": "PASS!!"}}}', "auths.HOST.auth is not base64"),
    "auth-a-number": (b'{"auths": {"HOST": {"auth": 12345}}}', "auths.HOST.auth is not base64"),
    "auth-a-list": (b'{"auths": {"HOST": {"auth": ["PASS"]}}}', "auths.HOST.auth is not base64"),
    "auth-a-mapping": (b'{"auths": {"HOST": {"auth": {"user": "u", "password": "PASS"}}}}', "auths.HOST.auth is not base64"),
    "auth-not-utf8": (b'{"auths": {"HOST": {"auth": "/w=="}}}', "auths.HOST.auth is not base64 of UTF-8"),
    "auth-urlsafe-base64": (b'{"auths": {"HOST": {"auth": "B64URL"}}}', "auths.HOST.auth is not base64"),
    "file-not-utf8": (b'{"auths": {"HOST": {"auth": "PASS\xe9"}}}', "not UTF-8"),
    "file-utf16": ('{"auths": {}}'.encode("utf-16"), "not UTF-8"),
    "helper-a-path": (b'{"credHelpers": {"HOST": "../../../../bin/sh"}}', "is not a plain name"),
    "helper-with-arguments": (b'{"credHelpers": {"HOST": "pass; rm -rf ~"}}', "is not a plain name"),
    "store-a-mapping": (b'{"credsStore": {"name": "x"}}', "is not a plain name"),
    "store-a-list": (b'{"credsStore": ["osxkeychain"]}', "is not a plain name"),
}


def _content(template: bytes, host: str) -> bytes:
    urlsafe = base64.urlsafe_b64encode(b"\xfb\xff\xbf" + PASSWORD.encode()).decode()
    return template.replace(b"HOST", host.encode()).replace(b"PASS", PASSWORD.encode()).replace(b"B64URL", urlsafe.encode())


@pytest.mark.parametrize("where", ["explicit", "runtime", "config-home"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_auth_file_is_an_error_naming_it(logins: Logins, recording_registry: LoggingServer, case: str, where: str) -> None:
    host = recording_registry.host
    template, expected = MALFORMED[case]
    path = logins.write(where, _content(template, host))
    # A good login further down the order must not paper over the broken file.
    logins.write("docker", {"auths": {host: {"auth": _auth("docker")}}})
    result = _inspect(logins, host, explicit=where == "explicit")
    error = assert_refused(result, *_names(where, path), expected.replace("HOST", host))
    assert "hint: " in result.stderr
    assert "docker config" not in error  # (it is not the docker config that is broken)
    _no_secret(result, recording_registry)


# Entries of the wrong shape, refused as docker refuses them ("invalid auth configuration file"); envkit used to
# send them as a credential.
WRONG_SHAPES: dict[str, tuple[bytes, str]] = {
    # The whole decoded text was sent as a user name with an empty password.
    "auth-without-colon": (b'{"auths": {"HOST": {"auth": "NOCOLON"}}}', "auths.HOST.auth"),
    # str() of a list or mapping was sent as the user name / password.
    "username-a-list": (b'{"auths": {"HOST": {"username": ["u"], "password": "PASS"}}}', "auths.HOST"),
    "password-a-mapping": (b'{"auths": {"HOST": {"username": "u", "password": {"PASS": 1}}}}', "auths.HOST"),
}


@pytest.mark.parametrize("case", sorted(WRONG_SHAPES))
def test_a_login_entry_of_the_wrong_shape_is_an_error_naming_the_file(logins: Logins, recording_registry: LoggingServer, case: str) -> None:
    host = recording_registry.host
    template, expected = WRONG_SHAPES[case]
    content = template.replace(b"NOCOLON", base64.b64encode(PASSWORD.encode()))
    path = logins.write("runtime", _content(content, host))
    result = _inspect(logins, host)
    assert_refused(result, f"error: {path}", expected.replace("HOST", host))
    _no_secret(result, recording_registry)


def test_a_file_with_the_secret_in_every_position_never_prints_it(logins: Logins, recording_registry: LoggingServer) -> None:
    # The password as a key, a value, a helper name's neighbour, and in the text a JSON error points at.
    host = recording_registry.host
    text = (
        '{"auths": {"' + PASSWORD + '": {"auth": "' + PASSWORD + '"}, "' + host + '": {"auth": "x' + PASSWORD + '"}},'
        ' "credHelpers": {"' + PASSWORD + '": "' + PASSWORD + '"}}'
    )
    path = logins.write("runtime", text.encode())
    result = _inspect(logins, host)
    assert_refused(result, f"error: {path}", "is not base64")
    _no_secret(result, recording_registry)


# -- 1. auth.json: what is at the path -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["explicit", "runtime", "config-home"])
@pytest.mark.parametrize(
    "kind,expected",
    [
        ("directory", "containers auth file is a directory"),
        ("dev-zero", "is not a regular file or a pipe"),
        ("dev-null", "is not a regular file or a pipe"),
        ("dev-urandom", "is not a regular file or a pipe"),
        ("dangling-symlink", "file not found"),
        ("symlink-loop", "cannot read containers auth file"),
    ],
)
def test_a_special_file_at_the_path_is_an_error_naming_it(
    logins: Logins, recording_registry: LoggingServer, where: str, kind: str, expected: str
) -> None:
    path = logins.path(where)
    path.parent.mkdir(parents=True)
    if kind == "directory":
        path.mkdir()
    elif kind.startswith("dev-"):
        path.symlink_to("/dev/" + kind[4:])
    elif kind == "dangling-symlink":
        path.symlink_to(logins.root / "nowhere.json")
    else:
        path.symlink_to(path.name)
    started = time.monotonic()
    result = _inspect(logins, recording_registry.host, explicit=where == "explicit")
    assert time.monotonic() - started < 20
    assert_refused(result, *_names(where, path), expected)
    _no_secret(result, recording_registry)


def test_a_huge_auth_file_is_refused_at_the_input_cap(logins: Logins, recording_registry: LoggingServer) -> None:
    path = logins.path("runtime")
    path.parent.mkdir(parents=True)
    with path.open("wb") as out:  # valid JSON all the way: only its size is wrong
        out.write(b'{"auths": {"' + recording_registry.host.encode() + b'": {"auth": "' + _auth("big").encode() + b'"}}, "pad": "')
        out.write(b"a" * (33 << 20))
        out.write(b'"}')
    result = _inspect(logins, recording_registry.host)
    assert_refused(result, f"error: {path}", "larger than the 32 MiB limit")
    _no_secret(result, recording_registry)


def test_a_fifo_nobody_writes_is_an_error_not_a_hang(
    logins: Logins, recording_registry: LoggingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conda_envkit.inputs

    monkeypatch.setattr(conda_envkit.inputs, "PIPE_IDLE_SECONDS", 0.5)
    path = logins.path("runtime")
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    started = time.monotonic()
    result = _inspect(logins, recording_registry.host)
    assert time.monotonic() - started < 15
    assert_refused(result, f"error: {path}", "the pipe sent nothing")
    _no_secret(result, recording_registry)


def test_a_fifo_a_helper_writes_is_read_once(logins: Logins, recording_registry: LoggingServer) -> None:
    # `REGISTRY_AUTH_FILE=<(vault read ...)`: the login is read from the pipe, and sent to its host.
    path = logins.explicit
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    payload = json.dumps({"auths": {recording_registry.host: {"auth": _auth("piped")}}}).encode()

    def write() -> None:
        with path.open("wb") as fifo:
            fifo.write(payload)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result = _inspect(logins, recording_registry.host, explicit=True)
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert f"Authorization: Basic {_auth('piped')}" in recording_registry.text()
    _no_secret(result)


def test_a_symlink_to_proc_environ_prints_no_variable(tmp_path: Path, logins: Logins, recording_registry: LoggingServer) -> None:
    # A real process (its /proc/self/environ holds the canary), under a name redaction would not guess is secret.
    canary = "plain-looking-value-" + PASSWORD
    path = logins.path("runtime")
    path.parent.mkdir(parents=True)
    path.symlink_to("/proc/self/environ")
    env = {k: v for k, v in os.environ.items() if k not in logins.env()}
    env.update({k: v for k, v in logins.env().items() if v is not None})
    env["HOSTILE_NOTE"] = canary
    proc = subprocess.run(
        [sys.executable, "-m", "conda_envkit", "inspect", f"{recording_registry.host}/{REPO}", "--insecure"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert_refused(result, f"error: {path}")
    _no_secret(result, recording_registry, secret=canary)
    assert "HOSTILE_NOTE" not in result.output


# -- 1. credential helpers named by an auth file ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["credsStore", "credHelpers"])
def test_a_helper_that_is_not_installed_is_an_error_naming_the_file_and_the_helper(
    tmp_path: Path, logins: Logins, recording_registry: LoggingServer, field: str
) -> None:
    host = recording_registry.host
    helper = "envkit-hostile-absent"
    value = helper if field == "credsStore" else {host: helper}
    path = logins.write("runtime", {"auths": {}, field: value})
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = _inspect(logins, host, env={"PATH": str(empty)})
    assert_refused(result, f"error: {path}", f"docker-credential-{helper} is not on PATH")
    assert "install the helper" in result.stderr
    _no_secret(result, recording_registry)


def test_a_helper_for_another_host_is_not_asked_and_not_required(tmp_path: Path, logins: Logins, recording_registry: LoggingServer) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked.log"
    helper = bin_dir / "docker-credential-spy"
    helper.write_text(f'#!/bin/sh\ncat >> {asked}\nprintf \'{{"Username": "spy", "Secret": "{PASSWORD}"}}\'\n')
    helper.chmod(0o755)
    logins.write("runtime", {"credHelpers": {"registry.example.org": "spy", "127.0.0.1": "absent-helper"}})
    result = _inspect(logins, recording_registry.host, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert_refused(result, "authentication required")
    assert not asked.exists(), asked.read_text()
    _no_secret(result, recording_registry)


@pytest.mark.parametrize(
    "script",
    [
        f"echo 'backend error for {PASSWORD}' >&2; exit 1",  # a failing helper that prints the secret
        f"printf 'Secret={PASSWORD} not json'",  # an answer that is not JSON, holding it
        f'printf \'{{"Username": "u", "Secret": "{PASSWORD}"\'',  # truncated JSON
    ],
    ids=["fails-printing-secret", "not-json", "truncated-json"],
)
def test_a_broken_helper_named_by_auth_json_prints_nothing_of_its_output(
    tmp_path: Path, logins: Logins, recording_registry: LoggingServer, script: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-broken"
    helper.write_text(f"#!/bin/sh\ncat >/dev/null\n{script}\n")
    helper.chmod(0o755)
    logins.write("runtime", {"credHelpers": {recording_registry.host: "broken"}})
    result = _inspect(logins, recording_registry.host, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert_refused(result, "docker-credential-broken", recording_registry.host)
    _no_secret(result, recording_registry)


def test_an_error_about_registry_auth_file_names_the_file(logins: Logins, recording_registry: LoggingServer) -> None:
    path = logins.write("explicit", b'{"auths": [1]}')
    result = _inspect(logins, recording_registry.host, explicit=True)
    assert_refused(result, f"error: {path}: `auths` is not a mapping")


# -- 2. the lock copy in a registry image's metadata layer -----------------------------------------------------------

LOCK_COPY = "conda-meta/envkit/conda-lock.yml"
GENUINE = ["cryptominer==6.6.6", "honest=1.0=0", "linky=1.0=0", "python=3.11.9=h0_0"]
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (an http_proxy must not see 127.0.0.1)


@pytest.fixture(scope="module")
def baked_image(tmp_path_factory: pytest.TempPathFactory, hostile_channel: Path) -> tuple[Workspace, str]:
    """conda packages and a wheel, baked (scratch base) into an OCI layout `image`; and its tag."""
    root = tmp_path_factory.mktemp("baked-lock-copy")
    ws = locked_workspace(root / "work", hostile_channel, ["python", "honest", "linky"])
    wheel = write_raw_wheel(RawWheel("cryptominer", "6.6.6", (("cryptominer/__init__.py", b"mine = True\n"),)), root / "wheels")
    ws.add_wheel(wheel, "cryptominer", "6.6.6")
    return ws, ws.bake_layout()


def _layout(baked_image: tuple[Workspace, str], tmp_path: Path) -> tuple[Path, str]:
    ws, tag = baked_image
    layout = tmp_path / "image"
    shutil.copytree(ws.root / "image", layout)
    return layout, tag


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.partition(":")[2]


def _http(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with _LOCAL.open(request, timeout=30) as response:
        return response.status, dict(response.headers)


def push_blob(host: str, repository: str, data: bytes, digest: str | None = None) -> str:
    """A monolithic blob upload (POST, then PUT ?digest=): the OCI distribution API, no envkit code."""
    digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers = _http("POST", f"http://{host}/v2/{repository}/blobs/uploads/")
    assert status == 202, status
    location = headers["Location"]
    location = location if location.startswith("http") else f"http://{host}{location}"
    status, _ = _http(
        "PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}", data, {"Content-Type": "application/octet-stream"}
    )
    assert status == 201, status
    return digest


def push_manifest(host: str, repository: str, tag: str, manifest: dict) -> str:
    data = json.dumps(manifest).encode()
    status, _ = _http("PUT", f"http://{host}/v2/{repository}/manifests/{tag}", data, {"Content-Type": manifest["mediaType"]})
    assert status == 201, status
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_layout(layout: Path, tag: str, host: str, repository: str = "team/app") -> dict:
    """Image `tag` of `layout` pushed as it is (every blob its manifest names, then the manifest); the manifest."""
    _entry, manifest = manifest_of(layout, tag)
    for desc in [manifest["config"], *manifest["layers"]]:
        push_blob(host, repository, _blob_path(layout, desc["digest"]).read_bytes())
    push_manifest(host, repository, tag, manifest)
    return manifest


def _envkit_reads(ws_root: Path, ref: str) -> tuple[Result, Result, Path]:
    """`envkit inspect REF` and `envkit export --image REF --to json -o out.json`: (inspect, export, out.json)."""
    out = ws_root / "exported.json"
    inspect = run_cli("inspect", ref, "--insecure", cwd=ws_root)
    export = run_cli("export", "--image", ref, "--insecure", "--to", "json", "-o", out, cwd=ws_root)
    return inspect, export, out


def test_a_genuine_image_pushed_by_hand_lists_its_packages(baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry) -> None:
    # The baseline of every case below: the same push, untampered, is read and listed by both commands.
    layout, tag = _layout(baked_image, tmp_path)
    push_layout(layout, tag, registry.host)
    inspect, export, out = _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")
    assert inspect.returncode == 0, inspect.output
    assert json.loads(inspect.stdout)["record"]["packages"] == GENUINE
    assert export.returncode == 0, export.output
    assert json.loads(out.read_text())["packages"] == GENUINE


def _lock_copy(layers: Layers):  # type: ignore[no-untyped-def]
    return find(layers, LOCK_COPY)


def _edit_copy(edit: Callable[[str], str]) -> Callable[[Layers, dict], None]:
    def apply(layers: Layers, config: dict) -> None:
        entry = _lock_copy(layers)
        entry.data = edit(entry.data.decode()).encode()

    return apply


def _set_copy(data: bytes) -> Callable[[Layers, dict], None]:
    def apply(layers: Layers, config: dict) -> None:
        _lock_copy(layers).data = data

    return apply


def _drop_package(text: str) -> str:
    # linky's entry gone: the copy now claims an environment without it.
    start = text.index("- name: linky")
    end = text.find("\n- name:", start + 1)
    return text[:start] + (text[end + 1 :] if end != -1 else "")


def _retarget_url(text: str) -> str:
    return text.replace("noarch/honest-1.0-0.conda", "noarch/../../evil/noarch/honest-1.0-0.conda")


def _other_sha(text: str) -> str:
    import re

    return re.sub(r"(name: honest\n(?:.*\n)*?    sha256: )[0-9a-f]{64}", lambda m: m.group(1) + "f" * 64, text, count=1)


def _not_utf8_in_url(layers: Layers, config: dict) -> None:
    entry = _lock_copy(layers)
    entry.data = entry.data.replace(b"noarch/honest-1.0-0.conda", b"noarch/hon\xe9st-1.0-0.conda")


def _lying_label(layers: Layers, config: dict) -> None:
    config["config"]["Labels"]["dev.envkit.lock-hash"] = "sha256:" + "0" * 64


def _huge_copy(layers: Layers, config: dict) -> None:
    _lock_copy(layers).data = b"#" * ((32 << 20) + 1)  # one byte over the input cap (gzip makes it ~33 KiB)


TAMPERED: dict[str, tuple[Callable[[Layers, dict], None], str]] = {
    "package-removed": (_edit_copy(_drop_package), "does not match its dev.envkit.lock-hash label"),
    "url-changed": (_edit_copy(_retarget_url), "does not match its dev.envkit.lock-hash label"),
    "sha256-changed": (_edit_copy(_other_sha), "does not match its dev.envkit.lock-hash label"),
    "lock-hash-label-changed": (_lying_label, "does not match its dev.envkit.lock-hash label"),
    "not-utf8-in-a-url": (_not_utf8_in_url, LOCK_COPY),
    "utf16": (lambda layers, config: _set_copy(_lock_copy(layers).data.decode().encode("utf-16"))(layers, config), LOCK_COPY),
    "not-yaml": (_set_copy(b"version: 1\nmetadata: {platforms: [linux-64\n"), LOCK_COPY),
    "not-a-lock": (_set_copy(b"- just\n- a list\n"), LOCK_COPY),
    "empty": (_set_copy(b""), LOCK_COPY),
    "over-the-size-cap": (_huge_copy, f"{LOCK_COPY} is {(32 << 20) + 1} bytes"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_lock_copy_that_disagrees_with_the_labels_is_refused(
    baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry, case: str
) -> None:
    edit, expected = TAMPERED[case]
    layout, tag = _layout(baked_image, tmp_path)
    if case == "lock-hash-label-changed":
        rewrite_config(layout, tag, lambda config: _lying_label([], config))
    else:
        repack_layout(layout, tag, edit)
    push_layout(layout, tag, registry.host)
    for result in _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")[:2]:
        assert_refused(result, expected)
        assert result.stdout == "", result.stdout  # no record, no package, from a copy the labels do not vouch for
    assert not (tmp_path / "exported.json").exists()


def _replace_top_layer(layout: Path, tag: str, blob: bytes) -> None:
    """The metadata layer (the top one) replaced by `blob` in the manifest, the config left as it is."""
    index = json.loads((layout / "index.json").read_text())
    entry, manifest = manifest_of(layout, tag)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    _blob_path(layout, digest).write_bytes(blob)
    manifest["layers"][-1] = {**manifest["layers"][-1], "digest": digest, "size": len(blob)}
    data = json.dumps(manifest).encode()
    new = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob_path(layout, new).write_bytes(data)
    for m in index["manifests"]:
        if m.get("digest") == entry["digest"]:
            m["digest"], m["size"] = new, len(data)
    (layout / "index.json").write_text(json.dumps(index))


def _not_tar(genuine: bytes) -> dict[str, bytes]:
    noise = hashlib.sha256(b"noise").digest() * 64
    return {
        "random-bytes": noise,
        "gzip-of-text": gzip.compress(b"this is not a tar archive\n" * 64, mtime=0),
        "truncated-gzip": genuine[: len(genuine) // 2],
        "zstd-magic-then-noise": b"\x28\xb5\x2f\xfd" + noise,
        "empty": b"",
        "tar-cut-mid-header": gzip.compress(gzip.decompress(genuine)[:300], mtime=0),
    }


@pytest.mark.parametrize("case", ["random-bytes", "gzip-of-text", "truncated-gzip", "zstd-magic-then-noise", "empty", "tar-cut-mid-header"])
def test_a_metadata_layer_that_is_not_a_tar_is_an_error(
    baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry, case: str
) -> None:
    layout, tag = _layout(baked_image, tmp_path)
    _entry, manifest = manifest_of(layout, tag)
    _replace_top_layer(layout, tag, _not_tar(_blob_path(layout, manifest["layers"][-1]["digest"]).read_bytes())[case])
    push_layout(layout, tag, registry.host)
    for result in _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")[:2]:
        assert_refused(result, f"{registry.host}/team/app")
        assert result.stdout == "", result.stdout
    assert not (tmp_path / "exported.json").exists()


def _registry_blob(registry: Registry, digest: str) -> Path:
    hexdigest = digest.partition(":")[2]
    return registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"


@pytest.mark.parametrize("case", ["same-size-one-byte-flipped", "another-layer", "declared-smaller"])
def test_a_metadata_layer_that_is_not_what_its_descriptor_says_is_refused(
    baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry, case: str
) -> None:
    layout, tag = _layout(baked_image, tmp_path)
    _entry, manifest = manifest_of(layout, tag)
    top = manifest["layers"][-1]
    genuine = _blob_path(layout, top["digest"]).read_bytes()
    if case.startswith("declared"):
        # The registry holds the genuine blob; the manifest lies about its size.
        for desc in [manifest["config"], *manifest["layers"]]:
            push_blob(registry.host, "team/app", _blob_path(layout, desc["digest"]).read_bytes())
        top["size"] += -16 if case == "declared-smaller" else 16
        push_manifest(registry.host, "team/app", tag, manifest)
    else:
        # The registry's own storage altered under the digest the manifest names (a corrupt or hostile mirror).
        push_layout(layout, tag, registry.host)
        stored = _registry_blob(registry, top["digest"])
        assert stored.read_bytes() == genuine
        if case == "another-layer":
            repack_layout(layout, tag, _edit_copy(_drop_package))
            _e, tampered = manifest_of(layout, tag)
            stored.write_bytes(_blob_path(layout, tampered["layers"][-1]["digest"]).read_bytes())
        else:
            middle = len(genuine) // 2
            stored.write_bytes(genuine[:middle] + bytes([genuine[middle] ^ 0x01]) + genuine[middle + 1 :])
    for result in _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")[:2]:
        assert_refused(result, registry.host, "arrived with another digest" if "size" in case or "layer" in case else "limit")
        assert result.stdout == "", result.stdout
    assert not (tmp_path / "exported.json").exists()


# Edits of the copy that its lock hash (url and sha256 of each package, docs/lock-format.md) does not see, but that
# change the packages `inspect` lists: the listed names are not the baked ones.
UNHASHED: dict[str, Callable[[str], str]] = {
    "pip-package-renamed": lambda text: (
        text.replace("name: cryptominer", "name: requests").replace("'6.6.6'", "'2.32.3'").replace("version: 6.6.6", "version: 2.32.3")
    ),
    "conda-name-case": lambda text: text.replace("name: linky", "name: LINKY"),
}


@pytest.mark.parametrize("case", sorted(UNHASHED))
def test_a_lock_copy_edit_the_hash_does_not_cover_lists_no_renamed_package(
    baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry, case: str
) -> None:
    layout, tag = _layout(baked_image, tmp_path)
    repack_layout(layout, tag, _edit_copy(UNHASHED[case]))
    push_layout(layout, tag, registry.host)
    inspect, export, out = _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")
    listed = {
        "inspect": json.loads(inspect.stdout)["record"]["packages"] if inspect.returncode == 0 else None,
        "export": json.loads(out.read_text())["packages"] if export.returncode == 0 else None,
    }
    for command, result in (("inspect", inspect), ("export", export)):
        if listed[command] is None:
            assert_refused(result, "conda-lock.yml")
    # Listed, then only what was baked.
    assert all(packages in (None, GENUINE) for packages in listed.values()), listed


def _appended_copy(layers: Layers, config: dict) -> None:
    # The genuine copy stays first in the layer; a second entry of the same path, after it, is what an unpacked image
    # (and ENVKIT_LOCK_FILE inside it) holds.
    import copy

    genuine = _lock_copy(layers)
    info = copy.copy(genuine.info)
    layers[-1].append(type(genuine)(info, _drop_package(genuine.data.decode()).encode()))


def test_the_lock_copy_an_unpacked_image_holds_is_the_one_judged(
    baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry
) -> None:
    layout, tag = _layout(baked_image, tmp_path)
    repack_layout(layout, tag, _appended_copy)
    push_layout(layout, tag, registry.host)
    for result in _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")[:2]:
        assert_refused(result, f"{LOCK_COPY} is there twice")


def _bad_crc(layout: Path, tag: str) -> None:
    _entry, manifest = manifest_of(layout, tag)
    genuine = _blob_path(layout, manifest["layers"][-1]["digest"]).read_bytes()
    _replace_top_layer(layout, tag, genuine[:-8] + bytes(b ^ 0xFF for b in genuine[-8:-4]) + genuine[-4:])


@pytest.mark.parametrize("case", ["gzip-trailer-corrupt", "descriptor-declares-more"])
def test_a_broken_layer_whose_digest_checks_out_is_refused_or_listed_as_baked(
    baked_image: tuple[Workspace, str], tmp_path: Path, registry: Registry, case: str
) -> None:
    # Bytes the manifest's digest vouches for (the tar inside is the genuine one): a refusal is honest, and so is
    # the baked list; anything else is not.
    layout, tag = _layout(baked_image, tmp_path)
    if case == "gzip-trailer-corrupt":
        _bad_crc(layout, tag)
        push_layout(layout, tag, registry.host)
    else:
        _entry, manifest = manifest_of(layout, tag)
        for desc in [manifest["config"], *manifest["layers"]]:
            push_blob(registry.host, "team/app", _blob_path(layout, desc["digest"]).read_bytes())
        manifest["layers"][-1]["size"] += 16
        push_manifest(registry.host, "team/app", tag, manifest)
    inspect, export, out = _envkit_reads(tmp_path, f"{registry.host}/team/app:{tag}")
    for result, listed in (
        (inspect, lambda: json.loads(inspect.stdout)["record"]["packages"]),
        (export, lambda: json.loads(out.read_text())["packages"]),
    ):
        if result.returncode == 0:
            assert listed() == GENUINE
        else:
            assert_refused(result, registry.host)
