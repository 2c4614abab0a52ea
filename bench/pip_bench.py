"""pip benchmark: what the `pip:` step adds to `envkit lock`, against bare `uv pip compile`.

The conda side is the lock benchmark's ML spec (five platforms, real conda-forge metadata
from ../shared/data/channels/conda-forge, so conda brings numpy, scipy, pandas, torch...
that pip must not add again). The pip side is the test suite's wheels, read from a local
directory (`--no-index --find-links`), so nothing reaches the network. With `--index http`
they are a PEP 503 index served on 127.0.0.1 instead (`--index-url`): envkit then resolves
through its index proxy (conda_envkit/index_proxy.py), which this measures; bare uv reads
the same index directly.

Per round, same process:
  conda  = lock_environment(spec without pip:)
  full   = lock_environment(spec with pip:)
  bare   = `uv pip compile` of the same requirements for each platform, one after the
           other, without envkit's conda stand-ins (the floor: uv alone)
The pip step costs full - conda; the ratio reported is (full - conda) / bare.

Usage: python bench/pip_bench.py [--rounds 5] [--index dir|http]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

from conda_envkit.channels import ChannelSettings, make_gateway
from conda_envkit.locking import LockOptions, lock_environment
from conda_envkit.pip_lock import uv_binary
from conda_envkit.spec import read_env_spec
from conda_envkit.testing.local_index import build_index, demo_wheels, served_in_thread, write_wheel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lock_bench import SNAPSHOT, SPEC  # noqa: E402

PIP = """\
  - pip:
      - --no-index
      - --find-links ./wheels
      - hello-ml >=0.3
      - fastmath  # [linux64 or win]
"""
UV_PLATFORMS = {
    "linux-64": "x86_64-manylinux_2_28",
    "linux-aarch64": "aarch64-manylinux_2_28",
    "osx-64": "x86_64-apple-darwin",
    "osx-arm64": "aarch64-apple-darwin",
    "win-64": "x86_64-pc-windows-msvc",
}


def lock_seconds(env_file: Path, cache: Path) -> float:
    spec = read_env_spec([env_file])
    options = LockOptions(lock_path=env_file.with_name(f"{env_file.stem}.lock.yml"), cache_dir=cache)
    started = time.perf_counter()
    lock_environment(spec, options, make_gateway(ChannelSettings()))
    return time.perf_counter() - started


HTTP_PIP = """\
  - pip:
      - --index-url {url}/simple
      - hello-ml >=0.3
      - fastmath  # [linux64 or win]
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def served(root: Path) -> Iterator[str]:
    """`root` over HTTP on 127.0.0.1 (a thread of this process) while the block runs."""
    with served_in_thread(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield url


def bare_uv_seconds(work: Path, cache: Path, index_url: str | None = None) -> float:
    source = ["--index-url", f"{index_url}/simple"] if index_url else ["--no-index", "--find-links", str(work / "wheels")]
    started = time.perf_counter()
    for platform, uv_platform in UV_PLATFORMS.items():
        lines = ["hello-ml >=0.3"] + (["fastmath"] if platform in ("linux-64", "win-64") else [])
        (work / "bare.in").write_text("\n".join(lines) + "\n")
        subprocess.run(
            [uv_binary(), "pip", "compile", str(work / "bare.in"), *source,
             "--python-version", "3.11", "--python-platform", uv_platform, "--only-binary", ":all:",
             "--format", "pylock.toml", "-o", str(work / "pylock.toml"), "--no-config", "--quiet",
             "--python", sys.executable, "--no-python-downloads", "--cache-dir", str(cache / "uv")],
            check=True,
        )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--index", choices=("dir", "http"), default="dir")
    args = parser.parse_args()
    if not SNAPSHOT.exists():
        sys.exit(f"error: {SNAPSHOT} not found (the conda-forge snapshot beside the checkout)")
    with tempfile.TemporaryDirectory(prefix="envkit-pip-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        for spec in demo_wheels():
            write_wheel(spec, work / "wheels")
        index_url = None
        if args.index == "http":
            build_index(work / "index", demo_wheels())
            index_url = stack.enter_context(served(work / "index"))
        conda_only = work / "conda.yml"
        conda_only.write_text(SPEC.format(channel=SNAPSHOT))
        with_pip = work / "pip.yml"
        with_pip.write_text(SPEC.format(channel=SNAPSHOT) + (HTTP_PIP.format(url=index_url) if index_url else PIP))
        cache = work / "cache"
        lock_seconds(with_pip, cache)  # warm uv's cache and the repodata reads
        conda, full, bare = [], [], []
        for _ in range(args.rounds):
            conda.append(lock_seconds(conda_only, cache))
            full.append(lock_seconds(with_pip, cache))
            bare.append(bare_uv_seconds(work, cache, index_url))
        pip_lines = sum(1 for line in (work / "pip.lock.yml").read_text().splitlines() if line.strip() == "manager: pip")
    step = statistics.median(full) - statistics.median(conda)
    result = {
        "rounds": args.rounds,
        "index": args.index,
        "pip_entries": pip_lines,
        "lock_without_pip_s": round(statistics.median(conda), 3),
        "lock_with_pip_s": round(statistics.median(full), 3),
        "pip_step_s": round(step, 3),
        "bare_uv_s": round(statistics.median(bare), 3),
        "ratio_pip_step_vs_bare_uv": round(step / statistics.median(bare), 2),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("pip_bench.json" if args.index == "dir" else "pip_bench_http.json")).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
