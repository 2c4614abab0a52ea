"""Lock benchmark: `envkit lock` vs a bare `rattler.solve` of the same specs, same run.

Realistic ML spec, five platforms, against the real-metadata snapshot in
../shared/data/channels/conda-forge. Both sides start from a fresh Gateway each round
(so both pay for reading repodata) and solve all platforms concurrently; envkit also
parses the spec, plans, builds the conda-lock model, renders and writes the file.

Usage: python bench/lock_bench.py [--rounds 7]
Prints medians and the ratio envkit / bare (target: <= 1.3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rattler

from conda_envkit.channels import ChannelSettings, make_gateway
from conda_envkit.locking import LockOptions, lock_environment, plan_locks
from conda_envkit.solve import _virtual
from conda_envkit.spec import read_env_spec

SNAPSHOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "channels" / "conda-forge"
SPEC = """\
name: training
channels:
  - {channel}
platforms: [linux-64, linux-aarch64, osx-64, osx-arm64, win-64]
dependencies:
  - python=3.11
  - numpy
  - scipy
  - pandas  # [not aarch64]
  - scikit-learn  # [not aarch64]
  - pytorch  # [not win]
  - pyarrow  # [not aarch64]
  - matplotlib-base  # [not aarch64]
"""


def bare_solve(env_file: Path) -> float:
    """Time `rattler.solve` alone for every platform (same specs, virtual packages, constraints)."""
    spec = read_env_spec([env_file])
    channels, plans = plan_locks(spec, LockOptions())
    targets = [t for plan in plans for t in plan.targets]
    gateway = rattler.Gateway()
    started = time.perf_counter()

    async def run() -> None:
        await asyncio.gather(
            *(
                rattler.solve(
                    sources=[c.url for c in channels],
                    specs=[d.match_spec for d in t.dependencies],
                    gateway=gateway,
                    platforms=[t.platform, "noarch"],
                    virtual_packages=_virtual(t.virtual_packages),
                    constraints=list(t.constraints()) or None,
                )
                for t in targets
            )
        )

    asyncio.run(run())
    return time.perf_counter() - started


def envkit_lock(env_file: Path, lock_path: Path) -> float:
    """Time the library's whole lock step: read spec, solve, build, render, write."""
    lock_path.unlink(missing_ok=True)
    started = time.perf_counter()
    spec = read_env_spec([env_file])
    lock_environment(spec, LockOptions(lock_path=lock_path), make_gateway(ChannelSettings()))
    return time.perf_counter() - started


def cli_lock(env_file: Path, lock_path: Path) -> float:
    """Time `envkit lock` as a command (includes interpreter start and imports)."""
    lock_path.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "conda_envkit", "lock", "-q", "-f", str(env_file), "--lockfile", str(lock_path)], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if not SNAPSHOT.is_dir():
        sys.exit(f"snapshot not found at {SNAPSHOT}")
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "environment.yml"
        env_file.write_text(SPEC.format(channel=SNAPSHOT.as_uri()))
        lock_path = Path(tmp) / "conda-lock.yml"
        bare, ours, cli = [], [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both sides alike
            bare.append(bare_solve(env_file))
            ours.append(envkit_lock(env_file, lock_path))
            cli.append(cli_lock(env_file, lock_path))
        packages = lock_path.read_text().count("\n- name: ")
    result = {
        "platforms": 5,
        "locked_packages": packages,
        "rounds": args.rounds,
        "bare_rattler_solve_s": round(statistics.median(bare), 4),
        "envkit_lock_library_s": round(statistics.median(ours), 4),
        "envkit_lock_cli_s": round(statistics.median(cli), 4),
        "ratio_library_vs_bare": round(statistics.median(ours) / statistics.median(bare), 3),
        "ratio_cli_vs_bare": round(statistics.median(cli) / statistics.median(bare), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
