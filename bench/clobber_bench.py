"""What finding an environment's clobbers costs a plan: `environment_clobbers` on a synthetic environment of
--packages packages of --files paths each (site-packages-like trees), against the least any such check does in the
same process: one set of every path. Run with and without clobbered paths (--clobbered of them, each in 2 packages).

Usage: python bench/clobber_bench.py [--packages 300] [--files 300] [--clobbered 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from conda_envkit.clobbers import environment_clobbers
from conda_envkit.pkginfo import PackageInfo


def environment(packages: int, files: int, clobbered: int) -> list[PackageInfo]:
    rng = random.Random(1)
    infos = []
    for i in range(packages):
        name = f"pkg{i:04d}"
        paths = [f"lib/python3.11/site-packages/{name}/sub{j % 20}/mod{j}.py" for j in range(files)]
        paths.append(f"share/licenses/{'shared' if i < 2 * clobbered else name}-{i // 2 if i < 2 * clobbered else 0}.txt")
        depends = tuple(f"pkg{k:04d}" for k in rng.sample(range(packages), 3) if k != i)
        infos.append(PackageInfo(sha256="0" * 64, manager="conda", name=name, version="1", depends=depends, paths=tuple(paths)))
    return infos


def timed(call, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", type=int, default=300)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--clobbered", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for clobbered in (0, args.clobbered):
        infos = environment(args.packages, args.files, clobbered)
        total = sum(len(info.paths) for info in infos)
        baseline = timed(lambda: set().union(*(info.paths for info in infos)), args.rounds)  # noqa: B023
        ours = timed(lambda: environment_clobbers(infos, "linux-64"), args.rounds)  # noqa: B023
        losers = environment_clobbers(infos, "linux-64")
        print(
            f"{total} paths, {sum(len(p) for p in losers.values())} clobbered: {ours * 1000:.1f} ms "
            f"({ours / baseline:.1f}x one set of every path, {baseline * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
