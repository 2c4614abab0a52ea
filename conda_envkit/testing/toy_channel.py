"""A small ML-shaped channel for tests, benchmarks and the offline demo.

python (3.11, 3.12), numpy (1.26, 2.0) linked against libblas in openblas / mkl /
accelerate builds (mkl and accelerate ranked lower with track_features, as on
conda-forge), a library with a CPU and a CUDA build, a CUDA-only one, cuda-version, mkl and a
library that depends on it directly, a package that exists on linux-64 only, and `hello`, a script
that prints a line.

Run `python -m conda_envkit.testing.toy_channel DIR` to write it to DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conda_envkit.testing.local_channel import PackageSpec, build_channel, script_package

ALL_PLATFORMS = ("linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")


def toy_packages() -> list[PackageSpec]:
    """A small ML-shaped channel: python, numpy on three BLAS variants, a CPU/CUDA library."""
    pkgs: list[PackageSpec] = []
    for subdir in ALL_PLATFORMS:
        pkgs.append(PackageSpec("python", "3.11.9", "h0_cpython", subdir=subdir))
        pkgs.append(PackageSpec("python", "3.12.4", "h0_cpython", subdir=subdir))
        blas_builds = ["openblas"]
        if subdir in ("linux-64", "osx-64", "win-64"):
            blas_builds.append("mkl")
        if subdir.startswith("osx"):
            blas_builds.append("accelerate")
        for blas in blas_builds:
            # conda-forge ranks non-default BLAS lower with track_features; so do we.
            pkgs.append(
                PackageSpec(
                    "libblas",
                    "3.9.0",
                    f"20_{blas}",
                    build_number=20,
                    subdir=subdir,
                    track_features="" if blas == "openblas" else f"blas_{blas}",
                )
            )
        for version in ("1.26.4", "2.0.1"):
            pkgs.append(PackageSpec("numpy", version, "py311_0", subdir=subdir, depends=("python >=3.11,<3.12.0a0", "libblas >=3.9.0,<4")))
            pkgs.append(PackageSpec("numpy", version, "py312_0", subdir=subdir, depends=("python >=3.12,<3.13.0a0", "libblas >=3.9.0,<4")))
        if subdir in ("linux-64", "linux-aarch64", "win-64"):
            pkgs.append(
                PackageSpec("gpulib", "1.0", "cuda12_0", build_number=1, subdir=subdir, depends=("__cuda", "cuda-version >=12.0,<13"))
            )
        pkgs.append(PackageSpec("gpulib", "1.0", "cpu_0", subdir=subdir))
        if subdir in ("linux-64", "linux-aarch64", "win-64"):  # a CUDA-only library, beside gpulib's CPU build
            pkgs.append(PackageSpec("cudakernels", "1.0", "cuda12_0", subdir=subdir, depends=("__cuda", "cuda-version >=12.0,<13")))
        if subdir in ("linux-64", "osx-64", "win-64"):
            # MKL itself, and a library built against it directly (not through libblas), as older pytorch builds are.
            pkgs.append(PackageSpec("mkl", "2024.2.2", "0", subdir=subdir))
            pkgs.append(PackageSpec("mkltorch", "1.0", "cpu_mkl_0", subdir=subdir, depends=("mkl >=2024", "numpy")))
    pkgs.append(PackageSpec("linuxonly", "1.0", "0", subdir="linux-64"))
    pkgs.append(PackageSpec("needs-new-glibc", "1.0", "0", subdir="linux-64", depends=("__glibc >=2.28",)))
    for cuda in ("11.8", "12.0", "12.4", "12.6"):
        pkgs.append(PackageSpec("cuda-version", cuda, "0", constrains=(f"__cuda >={cuda.split('.')[0]}",)))
    pkgs.append(script_package("hello", "1.0", "hello from conda", depends=("python",)))
    pkgs.append(script_package("hello", "2.0", "hello from conda 2", depends=("python",)))
    return pkgs


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "channel")
    build_channel(target, toy_packages(), subdirs=ALL_PLATFORMS)
    print(f"wrote toy channel to {target}")


if __name__ == "__main__":
    main()
