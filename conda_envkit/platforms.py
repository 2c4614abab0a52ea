"""Platform names, their default virtual packages, selectors, CUDA and BLAS variants."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from conda_envkit.errors import EnvkitError
from conda_envkit.inputs import load_yaml, read_input

SUPPORTED_PLATFORMS: tuple[str, ...] = (
    "linux-64",
    "linux-aarch64",
    "osx-64",
    "osx-arm64",
    "win-64",
)
# Accepted as input, solved like the others, but not part of the promised matrix.
EXTRA_PLATFORMS: tuple[str, ...] = ("linux-ppc64le",)
KNOWN_PLATFORMS = SUPPORTED_PLATFORMS + EXTRA_PLATFORMS
DEFAULT_PLATFORM = "linux-64"

# Selector names true on each platform (conda-build's names). `x86_64`, `aarch64` and
# `arm64` are the machine names; `linux64`, `osx64`, `win64` the combined ones.
SELECTOR_NAMES: dict[str, frozenset[str]] = {
    "linux-64": frozenset({"linux", "linux64", "unix", "x86_64", "x86"}),
    "linux-aarch64": frozenset({"linux", "aarch64", "unix"}),  # not arm64: conda-build and conda-lock keep that for osx-arm64
    "linux-ppc64le": frozenset({"linux", "ppc64le", "unix"}),
    "osx-64": frozenset({"osx", "osx64", "unix", "x86_64", "x86"}),
    "osx-arm64": frozenset({"osx", "arm64", "unix"}),
    "win-64": frozenset({"win", "win64", "x86_64", "x86"}),
}
ALL_SELECTOR_NAMES = frozenset().union(*SELECTOR_NAMES.values())


def selector_for(wanted: set[str], platforms: set[str]) -> str:
    """The shortest selector that is true on `wanted` and false on the rest of `platforms`: one name
    (`linux`) or `not` one name (`not aarch64`: first when no more platforms are left out than kept), else
    each platform's own name joined by `or`."""
    for negate in (True, False) if len(wanted) >= len(platforms - wanted) else (False, True):
        for name in sorted(ALL_SELECTOR_NAMES):
            if {p for p in platforms if (name in SELECTOR_NAMES.get(p, ())) != negate} == wanted:
                return f"not {name}" if negate else name
    own = [next((n for n in sorted(SELECTOR_NAMES.get(p, ())) if _only(n, p, platforms)), p) for p in sorted(wanted)]
    return " or ".join(own)


def _only(name: str, platform: str, platforms: set[str]) -> bool:
    return all((name in SELECTOR_NAMES.get(p, ())) == (p == platform) for p in platforms)


# What conda-lock and pixi assume when nothing is said: a build host old enough that
# the lock runs on any current machine (manylinux_2_28 era glibc, macOS 11 on Apple
# silicon).
DEFAULT_VIRTUAL_PACKAGES: dict[str, dict[str, str]] = {
    "linux-64": {"__unix": "0", "__linux": "5.10", "__glibc": "2.28", "__archspec": "1 x86_64"},
    "linux-aarch64": {"__unix": "0", "__linux": "5.10", "__glibc": "2.28", "__archspec": "1 aarch64"},
    "linux-ppc64le": {"__unix": "0", "__linux": "5.10", "__glibc": "2.28", "__archspec": "1 ppc64le"},
    "osx-64": {"__unix": "0", "__osx": "11.0", "__archspec": "1 x86_64"},
    "osx-arm64": {"__unix": "0", "__osx": "11.0", "__archspec": "1 arm64"},
    "win-64": {"__win": "0", "__archspec": "1 x86_64"},
}

CUDA_PLATFORMS = frozenset({"linux-64", "linux-aarch64", "win-64"})
# conda-lock's default `__cuda` on CUDA platforms (its default-virtual-packages.yaml): what a
# lock conda-lock wrote was solved for when it says nothing else.
CONDA_LOCK_DEFAULT_CUDA = "11.4"
# Patterns are strings compiled by `re` on first use (most commands never parse a CUDA version).
_CUDA_VERSION = r"\d{1,3}(\.\d{1,3}){0,2}"
_NO_CUDA = ("none", "cpu", "false")
_FIRST_DRIVER_RELEASE = 100  # CUDA versions are 1-13 and counting; NVIDIA driver releases start at 100 (R418, 550...)


def parse_cuda_driver(value: object, where: str) -> str | None:
    """A CUDA driver version (`12.4`), or None for `none`/`cpu`; anything else is an error naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PlatformError(
            f"{where}: CUDA must be a version like 12.4 or `none`, not {type(value).__name__} {value!r}",
            hint='write e.g. `cuda: "12.4"` (the driver version) or `cuda: none`',
        )
    text = str(value).strip()
    if text.lower() in _NO_CUDA:
        return None
    if not re.fullmatch(_CUDA_VERSION, text):
        raise PlatformError(
            f"{where}: invalid CUDA driver version {text!r}",
            hint="write the driver's CUDA version as MAJOR[.MINOR], e.g. 12.4 (what nvidia-smi shows), or none",
        )
    if int(text.split(".")[0]) >= _FIRST_DRIVER_RELEASE:
        # nvidia-smi's "Driver Version: 550.54.15" beside "CUDA Version: 12.4": __cuda=550 fits every cuda-version.
        raise PlatformError(
            f"{where}: {text} is an NVIDIA driver release, not the CUDA version it supports",
            hint='write the "CUDA Version" nvidia-smi shows beside it (e.g. 12.4 for driver 550), or none',
        )
    return text


class Blas(StrEnum):
    """A BLAS implementation, as conda-forge's `libblas` build strings name it."""

    MKL = "mkl"
    OPENBLAS = "openblas"
    ACCELERATE = "accelerate"
    BLIS = "blis"
    NETLIB = "netlib"  # the reference BLAS: correct everywhere, and the slowest
    ANY = "any"  # asked for on purpose: no BLAS pin (clears one a lock records; the solver's default)


# Where each BLAS exists on conda-forge. Asking for one elsewhere is an error, never a
# silent substitution.
BLAS_PLATFORMS: dict[Blas, frozenset[str]] = {
    Blas.MKL: frozenset({"linux-64", "osx-64", "win-64"}),
    Blas.OPENBLAS: frozenset(KNOWN_PLATFORMS),
    Blas.ACCELERATE: frozenset({"osx-64", "osx-arm64"}),
    Blas.BLIS: frozenset({"linux-64", "osx-64", "win-64"}),
    Blas.NETLIB: frozenset(KNOWN_PLATFORMS),
    Blas.ANY: frozenset(KNOWN_PLATFORMS),
}


class PlatformError(EnvkitError):
    """A platform, virtual package or variant request that cannot be honoured."""


def host_platform() -> str:
    """This machine's conda platform (linux-64, osx-arm64, ...)."""
    from rattler import Platform

    return str(Platform.current())


def default_platform(available: list[str] | tuple[str, ...]) -> str | None:
    """The platform a command takes when none is named: the only one there, else this machine's if it is
    there (the environment a run here uses), else None (the caller says which there are)."""
    if len(available) == 1:
        return available[0]
    host = host_platform()
    return host if host in available else None


def check_platform(name: str, where: str) -> str:
    """Return `name` if it is a known platform, else raise naming `where` it came from."""
    if name not in KNOWN_PLATFORMS:
        raise PlatformError(
            f"{where}: unknown platform {name!r}",
            hint=f"use one of: {', '.join(KNOWN_PLATFORMS)}",
        )
    return name


def check_blas(blas: Blas, platform: str) -> None:
    """Raise if `blas` is not available on `platform`."""
    if platform not in BLAS_PLATFORMS[blas]:
        have = sorted(b.value for b, plats in BLAS_PLATFORMS.items() if platform in plats)
        example = Blas.OPENBLAS.value if Blas.OPENBLAS.value in have else have[0]  # conda-forge's default, everywhere
        raise PlatformError(
            f"{platform}: BLAS {blas.value!r} does not exist on this platform",
            hint=f"choose one of {', '.join(have)} for {platform} (e.g. `--blas {platform}={example}`), or drop {platform}",
        )


def blas_constraint(blas: Blas) -> str:
    """The match spec that pins libblas to `blas` without requiring libblas."""
    return f"libblas * *{blas.value}"


def blas_of_build(build: str) -> Blas | None:
    """Which BLAS a libblas build string names (`8_h5875eb1_mkl` -> MKL)."""
    for blas in Blas:
        if blas != Blas.ANY and build.endswith(blas.value):
            return blas
    return None


@dataclass(frozen=True)
class VirtualPackage:
    """One virtual package: `__glibc 2.28`, `__archspec 1 x86_64`."""

    name: str
    version: str
    build: str = "0"

    def __str__(self) -> str:
        return f"{self.name}={self.version}={self.build}"


def virtual_packages_for(
    platform: str,
    cuda: str | None,
    overrides: dict[str, str] | None = None,
) -> tuple[VirtualPackage, ...]:
    """The virtual packages a solve for `platform` assumes, sorted by name.

    `cuda` adds `__cuda` on platforms that have CUDA; `overrides` (from a virtual
    package spec file) replace or add entries, and an empty version removes one.
    """
    versions = dict(DEFAULT_VIRTUAL_PACKAGES[platform])
    if cuda is not None and platform in CUDA_PLATFORMS:
        versions["__cuda"] = cuda
    for name, version in (overrides or {}).items():
        if version == "":
            versions.pop(name, None)
        else:
            versions[name] = version
    packages = []
    for name, version in sorted(versions.items()):
        ver, _, build = version.partition(" ")
        packages.append(VirtualPackage(name, ver, build or "0"))
    return tuple(packages)


_VIRTUAL_NAME = r"__[a-z0-9][a-z0-9_.-]*"
# `2.17`, `12.4`, `1 x86_64` (version, then an optional build), or empty to remove.
_VIRTUAL_VERSION = r"(|[0-9][0-9A-Za-z_.+!]*( [A-Za-z0-9_.+-]+)?)"


def read_virtual_package_spec(path: Path) -> dict[str, dict[str, str]]:
    """Read a conda-lock `--virtual-package-spec` file: `subdirs: {platform: {packages: {...}}}`."""
    data = load_yaml(read_input(path, "virtual package spec"))
    subdirs = data.get("subdirs") if isinstance(data, dict) else None
    if not isinstance(subdirs, dict):
        raise PlatformError(
            f"{path}: expected a `subdirs:` mapping of platform -> packages",
            hint="see conda-lock's virtual-packages.yml format",
        )
    result: dict[str, dict[str, str]] = {}
    for platform, entry in subdirs.items():
        check_platform(str(platform), str(path))
        packages = entry.get("packages") if isinstance(entry, dict) else None
        if not isinstance(packages, dict):
            raise PlatformError(
                f"{path}: {platform}: expected `packages:` mapping",
                hint="write e.g. `packages: {__glibc: '2.17'}`",
            )
        for name, value in packages.items():
            if not re.fullmatch(_VIRTUAL_NAME, str(name)):
                raise PlatformError(
                    f"{path}: {platform}: {name!r} is not a virtual package",
                    hint="virtual package names start with `__`, e.g. __glibc",
                )
            if value is not None and (isinstance(value, (dict, list, bool)) or not re.fullmatch(_VIRTUAL_VERSION, str(value))):
                raise PlatformError(
                    f"{path}: {platform}: {name}: invalid version {value!r}",
                    hint="write a version, optionally a space and a build (e.g. '2.17', '1 x86_64'), or an empty value to remove it",
                )
        result[str(platform)] = {str(k): "" if v is None else str(v) for k, v in packages.items()}
    return result
