"""Fixtures: real local conda channels built by the suite, and the real `envkit` command."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conda_envkit.testing.local_channel import build_channel
from conda_envkit.testing.toy_channel import ALL_PLATFORMS, toy_packages

SHARED_CHANNELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "channels"


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


def _serve(root: Path, credentials: str | None) -> Iterator[ChannelServer]:
    """Serve `root` over HTTP on 127.0.0.1 until the fixture ends (stopped by PID)."""
    script = Path(__file__).parent / "servers" / "channel_server.py"
    args = [sys.executable, str(script), str(root)] + ([credentials] if credentials else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    yield ChannelServer(f"http://127.0.0.1:{port}", root, proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    """A real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1."""

    host: str
    pid: int
    root: Path


def _start_registry(root: Path, auth: str = "") -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed; run .ci/run (it installs docker-registry, skopeo, umoci, busybox-static)")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=(root / "registry.log").open("wb"))
    host = f"127.0.0.1:{port}"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, host
        except OSError:
            time.sleep(0.05)
    _stop_popen(proc)
    pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()}")


def _stop_popen(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    root = tmp_path / "registry"
    root.mkdir()
    proc, host = _start_registry(root)
    yield Registry(host, proc.pid, root)
    _stop_popen(proc)


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    """The registry behind basic auth: user `envkit`, password `s3cret-Pa55`."""
    root = tmp_path / "auth-registry"
    root.mkdir()
    htpasswd = root / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", "envkit", "s3cret-Pa55"], capture_output=True, text=True, check=True).stdout
    htpasswd.write_text(line.strip() + "\n")
    proc, host = _start_registry(root, f"auth:\n  htpasswd:\n    realm: envkit-test\n    path: {htpasswd}\n")
    yield Registry(host, proc.pid, root)
    _stop_popen(proc)


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
    tokens = subprocess.Popen(args, stdout=subprocess.PIPE)
    token_port = int(tokens.stdout.readline())  # type: ignore[union-attr]
    auth = (
        f"auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: envkit-registry\n"
        f"    issuer: envkit-issuer\n    rootcertbundle: {cert}\n"
    )
    proc, host = _start_registry(root, auth)
    yield Registry(host, proc.pid, root)
    _stop_popen(proc)
    os.kill(tokens.pid, signal.SIGTERM)
    tokens.wait(timeout=10)


@dataclass
class MlflowServer:
    """A real MLflow tracking server (sqlite backend, local artifact store) on 127.0.0.1."""

    uri: str
    pid: int


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "artifacts").as_uri()],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
    yield MlflowServer(uri, proc.pid)
    # mlflow server runs uvicorn/gunicorn workers: stop the whole process group it leads.
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
