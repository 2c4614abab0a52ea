"""What `envkit --help` and `envkit hash` import: no solver, conda_lock, uv, httpx, jinja2 or mlflow.

Start-up time itself is measured in bench/startup_bench.py (as ratios, never asserted here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_envkit, write_env

HEAVY = ("rattler", "conda_lock", "uv", "httpx", "requests", "jinja2", "mlflow", "wandb", "pydantic", "packaging", "cyclonedx")
PROBE = """\
import json, sys
from conda_envkit import cli
try:
    cli.main(sys.argv[1:], prog_name="envkit")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(args: list[str], cwd: Path) -> tuple[set[str], set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    modules = json.loads(proc.stderr.strip().splitlines()[-1])
    return {m.split(".")[0] for m in modules}, {m for m in modules if m.startswith("conda_envkit")}


def test_help_imports_only_click_and_the_cli(tmp_path: Path) -> None:
    top, ours = _imported(["--help"], tmp_path)
    assert not top & set(HEAVY), top & set(HEAVY)
    assert "yaml" not in top
    assert ours == {"conda_envkit", "conda_envkit.cli", "conda_envkit.errors"}


def test_hash_imports_the_lock_model_only(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\ndependencies: [numpy]\n")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    top, ours = _imported(["hash"], tmp_path)
    assert not top & set(HEAVY), top & set(HEAVY)
    assert ours == {
        "conda_envkit",
        "conda_envkit.cli",
        "conda_envkit.errors",
        "conda_envkit.files",
        "conda_envkit.inputs",
        "conda_envkit.lockfile",
        "conda_envkit.lockmodel",
        "conda_envkit.lock_yaml",
        "conda_envkit.strict_yaml",
    }


def test_reading_a_lock_never_imports_the_solver() -> None:
    probe = "import sys; import conda_envkit.lockfile, conda_envkit.lockmodel; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert not {m.strip("'").split(".")[0] for m in out.strip("[]\n").split(", ")} & set(HEAVY)
