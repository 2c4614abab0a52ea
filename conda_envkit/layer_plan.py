"""Which packages form which layer of an image, and each layer's cache key: from the lock alone.

The plan and the keys are computed before any package is fetched: sizes come from the
package info cached by sha256 (conda_envkit.pkginfo), everything else from the lock.
A layer's key names every input that decides its bytes: the packages (name, version,
build, sha256 and locked URL, which conda-meta records), the in-image prefix, the
platform, the compression, the mtime, the layout version and the linking tools'
versions, plus the locked python for layers holding noarch-python packages or wheels
(their files land in `lib/pythonX.Y`), and the paths of its packages that another package of the
lock wins (their files go to `__clobbers__`, conda_envkit.clobbers). A layer whose key is in the layer cache is
reused without reading its packages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from conda_envkit.errors import EnvkitError

MiB = 1 << 20
# Runtimes cap the layers of one image (overlayfs: ~128 lower dirs; docker: 125).
MAX_LAYERS = 120
# 4: own layers in archive order; 5, 6: placeholders; 7: noarch: python; 8: wheels; 9: a package's files keep their
# archive's permission bits and entry points are 0775, as `envkit install` (py-rattler) writes them; 10: a package's
# hard links are tar hard links, and a placeholder file's non-UTF-8 shebang is rattler's (U+FFFD)
LAYER_FORMAT = "envkit-layer/10"


@dataclass(frozen=True)
class LayerPolicy:
    """How the environment is split: big packages alone, small ones in stable groups."""

    own_layer_bytes: int = 32 * MiB
    small_groups: int = 4
    max_layers: int = MAX_LAYERS


@dataclass(frozen=True)
class PlannedPackage:
    """One locked package as the layer plan sees it."""

    name: str  # conda name, or pip:<name>
    label: str  # name-version-build (the conda-meta file name), or pip:<name>-<version>
    sha256: str
    url: str  # as locked, without credentials
    size: int  # installed bytes (info/paths.json, or the wheel's unpacked size)
    python_bound: bool = False  # noarch: python or a wheel: its paths depend on the locked python
    clobbered: tuple[str, ...] = ()  # its paths another package's file wins (conda_envkit.clobbers), sorted


@dataclass(frozen=True)
class PlannedLayer:
    """A layer of the plan: its history title and its packages (one, for a package layer of its own)."""

    title: str
    packages: tuple[PlannedPackage, ...]
    single: bool = False


@dataclass(frozen=True)
class KeyContext:
    """The inputs besides the packages that decide a layer's bytes."""

    prefix: str
    platform: str
    compression: str
    mtime: int
    python: str = ""  # sha256 of the locked python package, if any


class PlanError(EnvkitError):
    """An environment that cannot be split into layers as asked."""


def _group_of(name: str, groups: int) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % groups


def plan_layers(packages: list[PlannedPackage], policy: LayerPolicy, base_layers: int) -> list[PlannedLayer]:
    """Split the environment's packages into layers.

    Packages at least `own_layer_bytes` big get a layer each (so images sharing that
    package build share the layer's digest); the others go into `small_groups` groups
    chosen by a hash of the package name, so that changing one small package changes
    one group. One more layer (environment metadata) follows. If that would exceed
    `max_layers`, the smallest big packages join the groups.
    """
    budget = policy.max_layers - base_layers - policy.small_groups - 1
    if budget < 0:
        raise PlanError(
            f"the base image already has {base_layers} layers; with envkit's layers the image would exceed {policy.max_layers}",
            hint="use a base image with fewer layers (squash it), or fewer small-package groups",
        )
    big = sorted((p for p in packages if p.size >= policy.own_layer_bytes), key=lambda p: (-p.size, p.name))[:budget]
    big_names = {p.name for p in big}
    plans = [PlannedLayer(f"package {p.label}", (p,), True) for p in sorted(big, key=lambda p: p.name)]
    groups: dict[int, list[PlannedPackage]] = {}
    for p in packages:
        if p.name not in big_names:
            groups.setdefault(_group_of(p.name, policy.small_groups), []).append(p)
    for index in sorted(groups):
        members = tuple(sorted(groups[index], key=lambda p: p.name))
        small = f"{len(members)} small package{'' if len(members) == 1 else 's'}"
        plans.append(PlannedLayer(f"packages group {index + 1}/{policy.small_groups}: {small}", members))
    return plans


@cache
def _tool_versions() -> tuple[str, ...]:
    out = []
    for dist in ("conda-envkit", "py-rattler", "installer", "zstandard"):
        try:
            out.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist}=?")
    return tuple(out)


def _key(kind: str, packages: tuple[PlannedPackage, ...], context: KeyContext, compression: str) -> str:
    document = {
        "format": LAYER_FORMAT,
        "kind": kind,
        "prefix": context.prefix,
        "platform": context.platform,
        "compression": compression,
        "mtime": context.mtime,
        "tools": list(_tool_versions()),
        "python": context.python if any(p.python_bound for p in packages) else "",
        "packages": [[p.label, p.sha256, p.url] for p in packages],
    }
    if any(p.clobbered for p in packages):  # (only then: every other key stays what it was)
        document["clobbered"] = [[p.label, list(p.clobbered)] for p in packages if p.clobbered]
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def layer_key(layer: PlannedLayer, context: KeyContext) -> str:
    """The cache key of a layer's compressed blob."""
    return _key("layer", layer.packages, context, context.compression)


def fragment_key(package: PlannedPackage, context: KeyContext) -> str:
    """The cache key of one package's uncompressed tar members (compression does not enter)."""
    return _key("fragment", (package,), context, "")
