"""A conda platform as pip sees it: uv's `--python-platform`, and the wheel tags it accepts.

Pure functions of the platform, the locked Python version and the lock's virtual
packages (`__glibc`, `__osx`), so that pip packages are resolved for the machine the
conda solve assumed, not for the machine running `envkit lock`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from conda_envkit.platforms import VirtualPackage

_ARCH = {
    "linux-64": "x86_64",
    "linux-aarch64": "aarch64",
    "osx-64": "x86_64",
    "osx-arm64": "arm64",
    "win-64": "amd64",
}
# The manylinux levels uv accepts as `<arch>-manylinux_2_<minor>` targets.
_UV_GLIBC_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
# Legacy manylinux names and the glibc they stand for (PEP 600).
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


@dataclass(frozen=True)
class WheelTarget:
    """Where pip packages of one locked platform must run."""

    platform: str
    python_version: str  # the locked CPython, e.g. "3.11.9"
    uv_platform: str  # uv's --python-platform
    macos_version: str | None  # MACOSX_DEPLOYMENT_TARGET for uv, on osx platforms
    tags: tuple[Tag, ...]  # accepted wheel tags, most preferred first

    @property
    def python_minor(self) -> str:
        return ".".join(self.python_version.split(".")[:2])

    def describe(self) -> str:
        return f"{self.platform} (CPython {self.python_minor}, {self.tags[0].platform})"


def _version_tuple(text: str, parts: int = 2) -> tuple[int, ...]:
    numbers = []
    for piece in text.split(".")[:parts]:
        digits = "".join(c for c in piece if c.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers + [0] * (parts - len(numbers)))


def _linux_platform_tags(arch: str, glibc_minor: int) -> list[str]:
    tags = []
    for minor in range(glibc_minor, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[minor]}_{arch}")
    tags.append(f"linux_{arch}")
    return tags


def supports_pip(platform: str) -> bool:
    """Whether envkit can resolve pip packages for this conda platform."""
    return platform in _ARCH


def wheel_target(platform: str, python_version: str, virtual_packages: Iterable[VirtualPackage]) -> WheelTarget:
    """The pip view of `platform` with Python `python_version` and the lock's virtual packages."""
    virtual = {v.name: v.version for v in virtual_packages}
    arch = _ARCH[platform]
    macos_version = None
    if platform.startswith("linux"):
        glibc_minor = _version_tuple(virtual.get("__glibc", "2.17"))[1]
        uv_minor = max([m for m in _UV_GLIBC_MINORS if m <= glibc_minor] or [17])
        uv_platform = f"{arch}-manylinux_2_{uv_minor}"
        platforms = _linux_platform_tags(arch, glibc_minor)
    elif platform.startswith("osx"):
        major, minor = _version_tuple(virtual.get("__osx", "11.0"))
        macos_version = f"{major}.{minor}"
        uv_platform = "aarch64-apple-darwin" if arch == "arm64" else "x86_64-apple-darwin"
        platforms = list(mac_platforms((major, minor), arch))
    else:
        uv_platform = "x86_64-pc-windows-msvc"
        platforms = ["win_amd64"]
    version = _version_tuple(python_version)
    interpreter = f"cp{version[0]}{version[1]}"
    tags = list(cpython_tags(version, platforms=platforms))
    tags += list(compatible_tags(version, interpreter, platforms=platforms))
    return WheelTarget(platform, python_version, uv_platform, macos_version, tuple(dict.fromkeys(tags)))


def wheel_rank(file_name: str, target: WheelTarget) -> int | None:
    """How well a wheel fits the target (lower is better), or None if it does not install there."""
    try:
        _name, _version, _build, tags = parse_wheel_filename(file_name)
    except InvalidWheelFilename:
        return None
    order = {tag: index for index, tag in enumerate(target.tags)}
    ranks = [order[tag] for tag in tags if tag in order]
    return min(ranks) if ranks else None
