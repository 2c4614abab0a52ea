"""The offline demo's channel: the toy channel, plus a static busybox (the host's Debian
busybox-static) and a `hello` 3.0 whose shebang is relocated onto it, so that the demo image's
CMD `hello` runs in a scratch image (umoci + chroot, podman) and not only on the host.

busybox is packaged for the host's own linux subdir only (the binary is the host's); `hello`
3.0 on every other platform is a plain `#!/bin/sh` script, as before.

Run `python -m conda_envkit.testing.demo_channel DIR` to write it to DIR.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

from conda_envkit.testing.image_channel import BUSYBOX, busybox_package
from conda_envkit.testing.local_channel import PREFIX_PLACEHOLDER, PackageFile, PackageSpec, build_channel, script_package
from conda_envkit.testing.toy_channel import ALL_PLATFORMS, toy_packages

HELLO_TEXT = "hello from conda 3"
# ELF e_machine values of the linux subdirs the demo locks.
_ELF_MACHINES = {62: "linux-64", 183: "linux-aarch64"}
_PT_INTERP = 3


class NoStaticBusybox(Exception):
    """The host has no static busybox to put into the demo image."""


def static_busybox_subdir(path: Path = BUSYBOX) -> str:
    """The conda subdir of a static ELF busybox (linux-64 or linux-aarch64); raises if it is missing or dynamic."""
    hint = "install Debian's busybox-static (apt-get install busybox-static): the image has no libc for a dynamic one"
    try:
        data = path.read_bytes()
    except OSError:
        raise NoStaticBusybox(f"{path} not found; {hint}") from None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise NoStaticBusybox(f"{path} is not a 64-bit little-endian ELF executable; {hint}")
    machine, phoff = struct.unpack_from("<H", data, 18)[0], struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    interpreters = [i for i in range(phnum) if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == _PT_INTERP]
    if interpreters:
        raise NoStaticBusybox(f"{path} is dynamically linked; {hint}")
    if machine not in _ELF_MACHINES:
        raise NoStaticBusybox(f"{path} is for ELF machine {machine}, not x86_64 or aarch64")
    return _ELF_MACHINES[machine]


def hello_on_busybox(subdir: str) -> PackageSpec:
    """`hello` 3.0 for `subdir`: its shebang is the prefix's busybox sh, so it runs with nothing else in the image."""
    script = f"#!{PREFIX_PLACEHOLDER}/bin/sh\necho '{HELLO_TEXT}'\n".encode()
    return PackageSpec(
        "hello",
        "3.0",
        "busybox_0",
        subdir=subdir,
        depends=("busybox", "python"),
        files=(PackageFile("bin/hello", script, executable=True, has_prefix=True),),
    )


def demo_packages(busybox: Path = BUSYBOX) -> list[PackageSpec]:
    """The toy channel plus busybox and `hello` 3.0 (on busybox for the host's subdir, `#!/bin/sh` elsewhere)."""
    host = static_busybox_subdir(busybox)
    pkgs = toy_packages()
    pkgs.append(busybox_package(host, busybox))
    pkgs.append(hello_on_busybox(host))
    for subdir in ALL_PLATFORMS:
        if subdir != host:
            pkgs.append(script_package("hello", "3.0", HELLO_TEXT, build="sh_0", subdir=subdir, depends=("python",)))
    return pkgs


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "channel")
    try:
        packages = demo_packages()
    except NoStaticBusybox as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    build_channel(target, packages, subdirs=ALL_PLATFORMS)
    print(f"wrote demo channel to {target}")
    sys.stdout.flush()
    # py-rattler's worker threads can abort interpreter teardown; the channel is complete here.
    os._exit(0)


if __name__ == "__main__":
    main()
