"""The envkit cache: where it is, and the one place that names the paths inside it.

    <cache>/                         $ENVKIT_CACHE_DIR, else $XDG_CACHE_HOME/envkit, else ~/.cache/envkit
      pkgs/<sha256>/<file>           conda archives and wheels, content-addressed, re-hashed before use
      pkginfo/<owner>/               what was read from each archive (index.json, paths), by sha256
      extracted/                     rattler's extracted packages, for `install` into an existing prefix (sync)
      blobs/sha256/<hex>             OCI blobs: base image layers, configs, manifests, baked layers
      layers/<owner>/                layer cache: (package set, compression) -> a written layer
      fragments/<owner>/             per-package layer fragments, reused across bakes
      uv/                            uv's cache while resolving pip: sections
      repodata/                      py-rattler's repodata cache (credentials scrubbed after every lock)
      tmp/                           staging: bake, build contexts, verify, and each install's own extraction
                                     directory (rattler hard-links from it; removed afterwards)

<owner> names the user's cache seal (conda_envkit.cache_seal): each user trusts only the entries
it sealed, so users who share a cache keep theirs apart. Outside the cache, and private to the user:

    $XDG_STATE_HOME/envkit/cache-seal.key   the secret that seals the entries this user wrote or checked

Every other module asks this one for a path; none joins paths under the cache itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

CACHE_ENV_VAR = "ENVKIT_CACHE_DIR"
# How a user moves the cache: named in every error about writing into it.
CACHE_SETTING = f"--cache-dir or ${CACHE_ENV_VAR}"


def default_cache_dir() -> Path:
    """$ENVKIT_CACHE_DIR, else $XDG_CACHE_HOME/envkit, else ~/.cache/envkit."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "envkit"


def seal_key_path() -> Path:
    """The cache seal's secret: $XDG_STATE_HOME/envkit/cache-seal.key (~/.local/state/envkit/...).

    Outside the cache on purpose: whoever can write a shared or restored cache must not be able to read it.
    """
    # Asked for several times per package in a bake: worked out once for each value of the variables it reads.
    return _seal_key_path(os.environ.get("XDG_STATE_HOME") or "", os.environ.get("HOME") or "")


@functools.cache
def _seal_key_path(state_home: str, home: str) -> Path:  # (`home`: what Path.home() reads first)
    base = state_home or str(Path.home() / ".local" / "state")
    return Path(base) / "envkit" / "cache-seal.key"


def cache_dir_or_default(cache_dir: Path | None) -> Path:
    """The cache a command uses: `--cache-dir` if given, else the default (its directories checked: `check_cache_dirs`)."""
    chosen = cache_dir or default_cache_dir()
    check_cache_dirs(chosen)
    return chosen


_CACHE_DIRS = (
    *("pkgs", "pkginfo", "fragments", "layers", "uv", "tmp", "repodata", "extracted"),
    *("blobs", "blobs/sha256", "blobs/tmp", "blobs/scans"),
)
_OWNED_DIRS = ("pkginfo", "fragments", "layers")  # one directory per cache seal below each


def check_cache_dirs(cache_dir: Path) -> None:
    """Refuse a cache whose own directories (pkgs/, blobs/, layers/<owner>/, ...) are symlinks: whoever else can
    write the cache could send envkit's writes anywhere through one. The cache root itself may be a symlink (a cache
    moved to a bigger disk): it is the user's choice, made once."""
    names = [cache_dir / d for d in _CACHE_DIRS]
    for owned in _OWNED_DIRS:
        with contextlib.suppress(OSError):
            names += list((cache_dir / owned).iterdir())
    for path in names:
        refuse_symlinked_dir(path)


def refuse_symlinked_dir(path: Path) -> None:
    """An EnvkitError naming `path`, a directory of the cache, if it is a symlink (`check_cache_dirs`)."""
    if path.is_symlink():
        from conda_envkit.errors import EnvkitError

        raise EnvkitError(
            f"{path}: a directory of envkit's cache is a symlink (to {os.readlink(path)})",
            hint=f"remove it (deleting any part of the cache is safe); {CACHE_SETTING} names the cache",
        )


def packages_dir(cache_dir: Path) -> Path:
    """The package archive store (conda archives and wheels)."""
    return cache_dir / "pkgs"


def package_path(cache_dir: Path, sha256: str, file_name: str) -> Path:
    """Where the archive with this sha256 is kept: `pkgs/<sha256>/<file name>`."""
    return packages_dir(cache_dir) / sha256 / file_name


def pkginfo_dir(cache_dir: Path, owner: str) -> Path:
    """What envkit read from each archive (index.json, paths), by sha256: no archive is opened twice.
    One directory per cache seal (`CacheSeal.owner`)."""
    return cache_dir / "pkginfo" / owner


def fragments_dir(cache_dir: Path, owner: str) -> Path:
    """Per-package layer fragments (tar members already written), reused across bakes; one directory per seal."""
    return cache_dir / "fragments" / owner


def blobs_dir(cache_dir: Path) -> Path:
    """The root of the OCI blob store (a BlobStore keeps `sha256/<hex>` below it)."""
    return cache_dir / "blobs"


def layers_dir(cache_dir: Path, owner: str) -> Path:
    """The layer cache (oci.layer.LayerCache); one directory per cache seal (`CacheSeal.owner`)."""
    return cache_dir / "layers" / owner


def uv_dir(cache_dir: Path) -> Path:
    """uv's cache while resolving pip: sections."""
    return cache_dir / "uv"


def tmp_dir(cache_dir: Path) -> Path:
    """Staging space on the cache's filesystem (so staged trees can hard-link from pkgs/)."""
    return cache_dir / "tmp"


def repodata_dir(cache_dir: Path) -> Path:
    """The gateway's repodata cache (py-rattler's format), under envkit's cache like every cache."""
    return cache_dir / "repodata"


def repodata_cache_dir() -> Path:
    """The repodata cache of the default cache (`<cache>/repodata`, not py-rattler's own ~/.cache/rattler,
    which would keep channel tokens outside envkit's cache)."""
    return repodata_dir(default_cache_dir())
