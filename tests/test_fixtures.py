"""The suite's own machinery (tests/conftest.py): servers are stopped by PID within a bounded
wait even when they ignore SIGTERM, process groups included, and HOME is the session's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import stop_process

STUBBORN = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"


def test_a_server_that_ignores_sigterm_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # type: ignore[union-attr]
    stop_process(proc, grace=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_a_process_group_is_stopped_with_its_workers(tmp_path: Path) -> None:
    # A leader that exits on SIGTERM, and a worker that ignores it (as a uvicorn worker might).
    leader = (
        "import subprocess, sys, time\n"
        f"worker = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], stdout=subprocess.PIPE, text=True)\n"
        "worker.stdout.readline()\n"
        "print(worker.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", leader], stdout=subprocess.PIPE, text=True, start_new_session=True)
    worker_pid = int(proc.stdout.readline())  # type: ignore[union-attr]
    stop_process(proc, group=True, grace=0.5)
    assert proc.returncode == -signal.SIGTERM
    # The worker got SIGKILL too (it would otherwise sleep for ten minutes).
    assert _dies(worker_pid)


def _dies(pid: int) -> bool:
    """True once `pid` is gone or a zombie (polled for up to 20 s: signals are delivered asynchronously)."""
    for _ in range(200):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_the_session_has_its_own_home() -> None:
    home = Path(os.environ["HOME"])
    assert home != Path("/root") and home.name.startswith("home")
    assert os.environ["XDG_CACHE_HOME"] == str(home / ".cache")
    assert "ENVKIT_CACHE_DIR" not in os.environ
