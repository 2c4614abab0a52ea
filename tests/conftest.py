"""Fixtures: real local conda channels built by the suite, and the real `envkit` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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


def _serve(root: Path, credentials: str | None) -> subprocess.Popen[str]:
    script = Path(__file__).parent / "servers" / "channel_server.py"
    args = [sys.executable, str(script), str(root)] + ([credentials] if credentials else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture
def channel_server(tmp_path: Path, toy_channel: Path) -> Iterator[ChannelServer]:
    """The toy channel over HTTP on 127.0.0.1 (no auth), under /toy/."""
    root = tmp_path / "served"
    shutil.copytree(toy_channel, root / "toy")
    proc = _serve(root, None)
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    yield ChannelServer(f"http://127.0.0.1:{port}", root, proc.pid)
    _stop(proc)


@pytest.fixture
def auth_channel_server(tmp_path: Path, toy_channel: Path) -> Iterator[ChannelServer]:
    """The toy channel over HTTP on 127.0.0.1 behind basic auth `envkit:s3cret-Pa55`."""
    root = tmp_path / "served-auth"
    shutil.copytree(toy_channel, root / "toy")
    proc = _serve(root, "envkit:s3cret-Pa55")
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    yield ChannelServer(f"http://127.0.0.1:{port}", root, proc.pid)
    _stop(proc)
