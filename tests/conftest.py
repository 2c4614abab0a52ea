"""Fixtures: real local conda channels built by the suite, real servers, and the real `envkit` command.

Every server listens on a port the OS picked, is ready when its health endpoint answers, and is
stopped by its PID with a bounded wait (SIGTERM, then SIGKILL). Under pytest-xdist each worker
has its own session fixtures, temporary directories, HOME and caches.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from conda_envkit.testing.local_channel import build_channel
from conda_envkit.testing.toy_channel import ALL_PLATFORMS, toy_packages

SHARED_CHANNELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "channels"
# Local servers only: an http_proxy in the environment must not see the tests' requests.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A HOME and XDG directories of this session's (this worker's) own.

    envkit, uv and py-rattler keep caches and configuration under them (~/.cache/envkit,
    ~/.docker, ...): tests must neither read the developer's nor share them between workers.
    """
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        for name, sub in (
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_STATE_HOME", ".local/state"),  # the cache seal's secret
        ):
            (home / sub).mkdir(parents=True)
            patch.setenv(name, str(home / sub))
        for name in ("ENVKIT_CACHE_DIR", "ENVKIT_CONFIG", "DOCKER_CONFIG", "ENVKIT_REGISTRY_USER", "ENVKIT_REGISTRY_PASSWORD"):
            patch.delenv(name, raising=False)
        # Registry logins (skopeo, podman) go to the runtime directory: this session's own, not /run/containers/<uid>.
        (home / "run").mkdir()
        patch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
        patch.delenv("REGISTRY_AUTH_FILE", raising=False)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the tests' MLflow clients
        yield


@pytest.fixture(scope="session")
def toy_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    channel = tmp_path_factory.mktemp("channels") / "toy"
    build_channel(channel, toy_packages(), subdirs=ALL_PLATFORMS)
    return channel


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_envkit(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """Run the real `envkit` command in a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "conda_envkit", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def interruptible() -> None:
    """A `preexec_fn`: in the child, before envkit starts, Ctrl-C handled as by default, whatever the test runner's
    handling is. A shell running the tests in the background without job control (as .ci/run may be) ignores SIGINT,
    and a child inherits that (as it should: envkit then ignores Ctrl-C too, like any program started that way), so a
    test that stops envkit with SIGINT must start it with this."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_env(directory: Path, text: str, name: str = "environment.yml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


@dataclass
class ChannelServer:
    url: str
    root: Path
    pid: int

    def requests(self) -> list[str]:
        log = self.root / "requests.log"
        return log.read_text().splitlines() if log.exists() else []


def stop_process(proc: subprocess.Popen, *, group: bool = False, grace: float = 10.0) -> None:
    """Stop a server the suite started, by its PID (or its process group): SIGTERM, and SIGKILL
    if it is still there after `grace` seconds. Never waits longer than twice `grace`."""

    def send(sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(timeout=grace)
    if group:
        send(signal.SIGKILL)  # workers that outlived their leader
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _start_port_printer(args: list[str]) -> tuple[subprocess.Popen, int]:
    """Start one of tests/servers/*.py: it binds port 0 (the OS picks) and prints the port."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.strip().isdigit():
        stop_process(proc)
        pytest.fail(f"{Path(args[1]).name} did not start (exit {proc.returncode}): {line!r}")
    return proc, int(line)


def _serve(root: Path, credentials: str | None) -> Iterator[ChannelServer]:
    """Serve `root` over HTTP on 127.0.0.1 until the fixture ends (stopped by PID)."""
    script = Path(__file__).parent / "servers" / "channel_server.py"
    proc, port = _start_port_printer([sys.executable, str(script), str(root)] + ([credentials] if credentials else []))
    try:
        yield ChannelServer(f"http://127.0.0.1:{port}", root, proc.pid)
    finally:
        stop_process(proc)


@pytest.fixture
def channel_server(tmp_path: Path, toy_channel: Path) -> Iterator[ChannelServer]:
    """The toy channel over HTTP on 127.0.0.1 (no auth), under /toy/."""
    shutil.copytree(toy_channel, tmp_path / "served" / "toy")
    yield from _serve(tmp_path / "served", None)


@pytest.fixture
def auth_channel_server(tmp_path: Path, toy_channel: Path) -> Iterator[ChannelServer]:
    """The toy channel over HTTP on 127.0.0.1 behind basic auth `envkit:s3cret-Pa55`."""
    shutil.copytree(toy_channel, tmp_path / "served-auth" / "toy")
    yield from _serve(tmp_path / "served-auth", "envkit:s3cret-Pa55")


@pytest.fixture(scope="session")
def pip_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEP 503 index of real wheels built by the suite (root holds `simple/` and `files/`)."""
    from conda_envkit.testing.local_index import DEMO_SDISTS, build_index, demo_wheels

    root = tmp_path_factory.mktemp("pypi") / "index"
    build_index(root, demo_wheels(), DEMO_SDISTS)
    return root


@pytest.fixture
def pip_index_server(tmp_path: Path, pip_index: Path) -> Iterator[ChannelServer]:
    """The wheel index over HTTP on 127.0.0.1 (no auth): `<url>/simple`."""
    shutil.copytree(pip_index, tmp_path / "pypi-served")
    yield from _serve(tmp_path / "pypi-served", None)


@pytest.fixture
def auth_pip_index_server(tmp_path: Path, pip_index: Path) -> Iterator[ChannelServer]:
    """The wheel index behind basic auth `pipuser:wheel-Pa55`."""
    shutil.copytree(pip_index, tmp_path / "pypi-served-auth")
    yield from _serve(tmp_path / "pypi-served-auth", "pipuser:wheel-Pa55")


@pytest.fixture(scope="session")
def image_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real .conda packages for images: static busybox, a relocated script, big and small packages."""
    from conda_envkit.testing.image_channel import IMAGE_PLATFORMS, image_packages

    channel = tmp_path_factory.mktemp("channels") / "image"
    build_channel(channel, image_packages(), subdirs=IMAGE_PLATFORMS)
    return channel


def _free_port() -> int:
    """A port the OS has just handed out (a server started on it may still lose a race: callers retry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    """True once `url` gives any HTTP answer (a 401 from a registry with auth counts)."""
    try:
        with _LOCAL.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _wait_until_ready(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    """Poll `url` until it answers (True), or until the process exits or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers(url):
            return True
        time.sleep(0.1)
    return False


@dataclass
class Registry:
    """A real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1."""

    host: str
    pid: int
    root: Path


def _start_registry(root: Path, auth: str = "") -> tuple[subprocess.Popen, str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed; run .ci/run (it installs docker-registry, skopeo, umoci, busybox-static)")
    log_path = root / "registry.log"
    for _attempt in range(3):
        port = _free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
        if _wait_until_ready(proc, f"http://127.0.0.1:{port}/v2/", timeout=60):
            return proc, f"127.0.0.1:{port}"
        stop_process(proc)
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    pytest.fail(f"docker-registry did not start: {log_path.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    root = tmp_path / "registry"
    root.mkdir()
    proc, host = _start_registry(root)
    try:
        yield Registry(host, proc.pid, root)
    finally:
        stop_process(proc)


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    """The registry behind basic auth: user `envkit`, password `s3cret-Pa55`."""
    root = tmp_path / "auth-registry"
    root.mkdir()
    htpasswd = root / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", "envkit", "s3cret-Pa55"], capture_output=True, text=True, check=True).stdout
    htpasswd.write_text(line.strip() + "\n")
    proc, host = _start_registry(root, f"auth:\n  htpasswd:\n    realm: envkit-test\n    path: {htpasswd}\n")
    try:
        yield Registry(host, proc.pid, root)
    finally:
        stop_process(proc)


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[Registry]:
    """The registry behind bearer-token auth, with a token server (tests/servers/token_server.py)
    that grants push to `envkit` / `s3cret-Pa55` and pull to anonymous clients."""
    root = tmp_path / "token-registry"
    root.mkdir()
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=envkit-test"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    script = Path(__file__).parent / "servers" / "token_server.py"
    args = [sys.executable, str(script), str(key), str(cert), "envkit-issuer", "envkit-registry", "envkit:s3cret-Pa55"]
    tokens, token_port = _start_port_printer(args)
    try:
        auth = (
            f"auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: envkit-registry\n"
            f"    issuer: envkit-issuer\n    rootcertbundle: {cert}\n"
        )
        proc, host = _start_registry(root, auth)
        try:
            yield Registry(host, proc.pid, root)
        finally:
            stop_process(proc)
    finally:
        stop_process(tokens)


@dataclass
class MlflowServer:
    """A real MLflow tracking server (sqlite backend, local artifact store) on 127.0.0.1."""

    uri: str
    pid: int


def _start_mlflow(root: Path, log: IO[bytes]) -> tuple[subprocess.Popen, str] | None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "artifacts").as_uri()],
        stdout=log,
        stderr=log,
        # Without the job runner: it would start eight more Python processes (huey consumers) the tests never use.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,  # it runs a uvicorn worker: stopped as a process group
    )
    uri = f"http://127.0.0.1:{port}"
    if _wait_until_ready(proc, f"{uri}/health", timeout=180):
        return proc, uri
    stop_process(proc, group=True)
    return None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow")
    with (root / "server.log").open("ab") as log:
        for _attempt in range(3):
            started = _start_mlflow(root, log)
            if started is not None:
                break
            log.flush()
            if "address already in use" not in (root / "server.log").read_text(errors="replace").lower():
                break
        else:
            started = None
        if started is None:
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text(errors='replace')[-2000:]}")
        proc, uri = started
        try:
            yield MlflowServer(uri, proc.pid)
        finally:
            stop_process(proc, group=True)
