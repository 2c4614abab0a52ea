"""Progress on stderr with the real CLI: one line per step when stderr is not a terminal,
rich's bars when it is (a pty), nothing with -q, and never on stdout (--json stays JSON)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Registry, run_envkit, write_env

STEP = re.compile(r"^(solve|download|extract|layers|push)\b.*?: ")


def _steps(stderr: str) -> list[str]:
    return [line.split(": ", 1)[0] for line in stderr.splitlines() if STEP.match(line)]


def test_lock_bake_install_report_one_line_per_step(tmp_path: Path, toy_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{toy_channel}]\nplatforms: [linux-64, osx-arm64]\ndependencies: [numpy, hello]\n")
    cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    locked = run_envkit("lock", cwd=work, env=cache)
    assert locked.returncode == 0, locked.output
    assert _steps(locked.stderr) == ["solve", "solve", "solve"]  # linux-64, osx-arm64, the summary
    assert re.search(r"^solve: linux-64: \d+ packages in ", locked.stderr, re.M)
    assert "\x1b[" not in locked.stderr  # no terminal: plain lines, no bars

    repo = f"{registry.host}/team/progress"
    baked = run_envkit("bake", "--oci", "image", "--push", repo, "--insecure", "--json", cwd=work, env=cache)
    assert baked.returncode == 0, baked.output
    assert json.loads(baked.stdout)["schema"] == "envkit.bake/1"  # stdout is the record alone
    assert _steps(baked.stderr) == ["download linux-64", "extract linux-64", "layers linux-64", f"push {repo}"]
    push_line = next(line for line in baked.stderr.splitlines() if line.startswith("push "))
    assert re.search(r": \d+ blobs uploaded \([\d.]+ MB\), 0 already there", push_line), push_line
    assert re.search(r"^download linux-64: \d+ packages \(0 cached, [\d.]+ MB downloaded\)", baked.stderr, re.M)

    installed = run_envkit("install", "--prefix", "env", "-p", "linux-64", cwd=work, env=cache)
    assert installed.returncode == 0, installed.output
    assert _steps(installed.stderr) == ["download linux-64", "extract linux-64"]
    assert "cached" in installed.stderr and "installed" in installed.stdout

    for args in (("lock",), ("bake", "--oci", "image2"), ("install", "--prefix", "env2", "-p", "linux-64")):
        quiet = run_envkit(*args, "-q", cwd=work, env=cache)
        assert quiet.returncode == 0, quiet.output
        assert quiet.stderr == "", (args, quiet.stderr)


def test_a_terminal_gets_rich_bars_and_startup_imports_neither(tmp_path: Path, toy_channel: Path) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{toy_channel}]\ndependencies: [hello]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    primary, secondary = os.openpty()
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "TERM": "xterm", "COLUMNS": "100"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conda_envkit", "bake", "--oci", "image"], cwd=work, stdout=subprocess.PIPE, stderr=secondary, env=env
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.communicate(timeout=300)[0].decode()
    os.close(primary)
    assert proc.returncode == 0
    terminal = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in terminal  # rich drew on the terminal
    assert "layers linux-64: " in terminal and "download linux-64: " in terminal
    assert stdout.startswith("oci:image:") and "\x1b" not in stdout

    # Neither rich nor the progress module is imported before a command runs.
    imported = subprocess.run([sys.executable, "-X", "importtime", "-m", "conda_envkit", "--help"], capture_output=True, text=True)
    modules = {line.rsplit("|", 1)[-1].strip() for line in imported.stderr.splitlines() if "|" in line}
    assert "conda_envkit.cli" in modules
    assert not {m for m in modules if m == "rich" or m.startswith("rich.") or m == "conda_envkit.progress"}
