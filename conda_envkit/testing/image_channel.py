"""A channel for image tests: static busybox (from the host's Debian busybox-static), a script
that runs on it with its in-prefix shebang, and a large package for layer-splitting checks.

Run `python -m conda_envkit.testing.image_channel DIR` to write it to DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conda_envkit.testing.local_channel import PREFIX_PLACEHOLDER, PackageFile, PackageSpec, build_channel

BUSYBOX = Path("/bin/busybox")
IMAGE_PLATFORMS = ("linux-64", "linux-aarch64")


def busybox_package(subdir: str = "linux-64", busybox: Path = BUSYBOX) -> PackageSpec:
    """`busybox` with bin/sh, bin/echo, bin/cat as symlinks to it (as conda-forge's busybox lays them out)."""
    return PackageSpec(
        "busybox",
        "1.35.0",
        "h0_0",
        subdir=subdir,
        files=(PackageFile("bin/busybox", busybox.read_bytes(), executable=True),),
        symlinks=(("bin/sh", "busybox"), ("bin/echo", "busybox"), ("bin/cat", "busybox")),
    )


def greeter_package(version: str = "1.0", message: str = "hello from the image") -> PackageSpec:
    """`greet`: a shell script whose shebang is the prefix placeholder, so it only runs if relocated right."""
    script = f"#!{PREFIX_PLACEHOLDER}/bin/sh\necho '{message}'\necho \"prefix is {PREFIX_PLACEHOLDER}\"\n".encode()
    return PackageSpec(
        "greet",
        version,
        "0",
        depends=("busybox",),
        files=(PackageFile("bin/greet", script, executable=True, has_prefix=True),),
    )


def blob_package(name: str, size: int, version: str = "1.0", subdir: str = "noarch") -> PackageSpec:
    """A package with one file of `size` incompressible-ish bytes (deterministic), for big-layer tests."""
    import hashlib

    chunks: list[bytes] = []
    seed = f"{name}-{version}".encode()
    block = hashlib.sha256(seed).digest()
    while sum(len(c) for c in chunks) < size:
        block = hashlib.sha256(block).digest()
        chunks.append(block * 128)
    data = b"".join(chunks)[:size]
    return PackageSpec(name, version, "0", subdir=subdir, files=(PackageFile(f"lib/{name}.bin", data),))


def image_packages(busybox: Path = BUSYBOX) -> list[PackageSpec]:
    pkgs = [busybox_package(subdir, busybox) for subdir in IMAGE_PLATFORMS]
    pkgs += [greeter_package("1.0"), greeter_package("2.0", "hello from greet 2")]
    pkgs += [blob_package("bigmodel", 3 << 20), blob_package("bigmodel", 3 << 20, version="2.0"), blob_package("smalldata", 4096)]
    return pkgs


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "image-channel")
    build_channel(target, image_packages(), subdirs=IMAGE_PLATFORMS)
    print(f"wrote image channel to {target}")


if __name__ == "__main__":
    main()
