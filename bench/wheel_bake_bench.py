"""Wheel bake benchmark: `envkit bake` of a lock whose pip section holds one big wheel, against the floor of
`tar | zstd -3 -T0` (or gzip) of the same installed tree, measured in the same run.

The environment is synthesized (no network): a stand-in conda python and one wheel of --mb megabytes
(64 KiB files, each half random and half text, deflated as real wheels are, like a torch or nvidia-* wheel's
share of a pip-based ML environment). Its own layer is the wheel's files as pypa's installer installs them.

Usage: python bench/wheel_bake_bench.py [--mb 400] [--rounds 3] [--compression zstd|gzip]
Prints a table and a JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bake_bench import CPU, envkit, floor, tree_bytes  # noqa: E402

from conda_envkit.testing.crafted_lock import lock_document, lock_entry, wheel_lock_entry  # noqa: E402
from conda_envkit.testing.hostile_packages import RawWheel, python_package, write_raw_wheel  # noqa: E402
from conda_envkit.testing.local_channel import build_channel  # noqa: E402

FILE_BYTES = 64 << 10


def big_wheel(directory: Path, megabytes: int) -> Path:
    rng = random.Random(18)
    files = tuple(
        (f"bigwheel/part{i // 100:03d}/f{i:05d}.bin", rng.randbytes(FILE_BYTES // 2) + (b"text line %08d\n" % i) * (FILE_BYTES // 32))
        for i in range(megabytes * (1 << 20) // FILE_BYTES)
    )
    stored = write_raw_wheel(RawWheel("bigwheel", "1.0", files), directory / "stored")
    wheel = directory / stored.name
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as out:
        for info in source.infolist():
            out.writestr(zipfile.ZipInfo(info.filename, info.date_time), source.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compression", choices=("zstd", "gzip"), default="zstd")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envkit-wheel-bench-") as root:
        tmp = Path(root)
        build_channel(tmp / "channel", [python_package()], subdirs=("linux-64",))
        wheel = big_wheel(tmp / "wheels", args.mb)
        work, cache = tmp / "work", tmp / "cache"
        work.mkdir()
        python = lock_entry(tmp / "channel" / "linux-64" / "python-3.11.9-h0_0.conda", "python", "3.11.9", "h0_0")
        lock = lock_document(tmp / "channel", [python, wheel_lock_entry(wheel, "bigwheel", "1.0")])
        (work / "conda-lock.yml").write_text(yaml.safe_dump(lock, sort_keys=False), encoding="utf-8")
        env = {"ENVKIT_CACHE_DIR": str(cache)}
        envkit("install", "-q", "--prefix", str(tmp / "tree"), "-p", "linux-64", cwd=work, env=env)
        installed = tree_bytes(tmp / "tree")
        image, record = str(tmp / "image"), str(tmp / "bake.json")
        bake = ("bake", "-q", "-p", "linux-64", "--compression", args.compression, "--oci", image, "--record", record)
        floors, colds, floor_cpu, cold_cpu = [], [], [], []
        tool = ""
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            seconds, tool = floor(tmp / "tree", tmp / "floor.out", args.compression)
            floors.append(seconds)
            floor_cpu.append(CPU["last"])
            for sub in ("extracted", "blobs", "layers", "fragments", "pkginfo", "tmp"):
                shutil.rmtree(cache / sub, ignore_errors=True)
            shutil.rmtree(tmp / "image", ignore_errors=True)
            os.sync()
            colds.append(envkit(*bake, cwd=work, env=env)[0])
            cold_cpu.append(CPU["last"])
        f, c = statistics.median(floors), statistics.median(colds)
        result = {
            "wheel_bytes": wheel.stat().st_size,
            "installed_tree_bytes": installed,
            "compression": args.compression,
            "floor_tool": tool,
            "floor_s": round(f, 2),
            "cold_bake_s": round(c, 2),
            "ratio_cold_vs_floor": round(c / f, 3),
            "ratio_cold_vs_floor_cpu": round(statistics.median(cold_cpu) / statistics.median(floor_cpu), 3),
            "rounds": {"floor_s": [round(x, 2) for x in floors], "cold_bake_s": [round(x, 2) for x in colds]},
        }
    print(f"installed tree    {installed / 1e6:.0f} MB from a {result['wheel_bytes'] / 1e6:.0f} MB wheel")
    print(f"floor tar | {tool:<6} {f:.2f} s")
    print(f"cold bake         {c:.2f} s  ({c / f:.2f}x floor, CPU {result['ratio_cold_vs_floor_cpu']:.2f}x)")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
