"""A default lock's variant locks: `conda-lock.<variant>.yml` beside `conda-lock.yml`, recording `envkit.variant`.

A file is a variant's lock when its name and its metadata both say so; a file that only looks like one is left
alone, and nothing beside a lock is read but the few files named like its variants' locks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conda_envkit.errors import EnvkitError
from conda_envkit.spec import VARIANT_NAME

if TYPE_CHECKING:
    from conda_envkit.lockmodel import LockFile

# The most files named like a variant's lock one search reads: a directory may hold thousands of them.
MOST_CANDIDATES_READ = 64


def variant_path(lock_path: Path, variant: str | None) -> Path:
    """`conda-lock.yml` for the default variant, `conda-lock.<variant>.yml` for the others."""
    if variant is None:
        return lock_path
    suffix = lock_path.suffix or ".yml"
    return lock_path.with_name(f"{lock_path.stem}.{variant}{suffix}")


def base_lock_path(lock_path: Path, variant: str) -> Path | None:
    """The default lock whose `variant` lock `lock_path` is named as (`conda-lock.yml` for `conda-lock.gpu.yml` and
    `gpu`), or None when its name is not that of a `variant` lock."""
    tail = f".{variant}{lock_path.suffix}"
    if not lock_path.suffix or not lock_path.name.endswith(tail) or len(lock_path.name) == len(tail):
        return None
    base = lock_path.with_name(lock_path.name[: -len(tail)] + lock_path.suffix)
    return base if variant_path(base, variant) == lock_path else None


def recorded_variant(lockfile: LockFile) -> str | None:
    """The variant a lock records (`envkit.variant`); None for the default variant's and a lock envkit did not write."""
    from conda_envkit.lockmodel import DEFAULT_VARIANT

    meta = lockfile.envkit
    return meta.variant if meta is not None and meta.variant != DEFAULT_VARIANT else None


@dataclass(frozen=True)
class VariantLock:
    """A file beside a default lock that envkit wrote for one of its variants."""

    path: Path
    variant: str
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class RemovedVariantLocks:
    """The variant locks beside a default lock whose variants the spec no longer declares."""

    found: tuple[VariantLock, ...]
    # Named like variant locks, beyond MOST_CANDIDATES_READ: not read, so not known to be locks.
    unread: tuple[Path, ...] = ()


def variant_lock_at(path: Path, variant: str) -> VariantLock | None:
    """`path` as `variant`'s lock if it is one: a regular file in its own directory (a symlink only to a file there)
    that reads as a lock recording `envkit.variant: <variant>`. Else None, whatever it is (another file, unreadable,
    not a lock, a link out of the directory): no more is read of it, and there is nothing to say about it."""
    from conda_envkit.lockmodel import read_lock
    from conda_envkit.safepath import is_within

    try:
        real = path.resolve(strict=True)
        if not is_within(path.parent, real) or not stat.S_ISREG(os.stat(real).st_mode):
            return None  # (a FIFO or a device would block the read; a link out is not this directory's lock)
        lockfile = read_lock(real)
    except (OSError, RuntimeError, EnvkitError):  # (RuntimeError: a symlink loop, as Python 3.11 resolves one)
        return None
    if recorded_variant(lockfile) != variant:
        return None
    return VariantLock(path, variant, lockfile.metadata.platforms)


def removed_variant_locks(base: Path, declared: Collection[str]) -> RemovedVariantLocks:
    """The variant locks beside the default lock `base` of variants not in `declared` (the spec's): files no spec
    makes any more. Only names of the form `<stem>.<variant>.yml` are looked at, and at most MOST_CANDIDATES_READ
    of them read."""
    prefix, suffix = f"{base.stem}.", base.suffix or ".yml"

    def undeclared_variant(name: str) -> str | None:
        if not (name.startswith(prefix) and name.endswith(suffix)) or len(name) <= len(prefix) + len(suffix):
            return None
        variant = name[len(prefix) : -len(suffix)]
        return variant if VARIANT_NAME.fullmatch(variant) and variant not in declared else None

    try:
        with os.scandir(base.parent) as entries:
            candidates = sorted((entry.name, variant) for entry in entries if (variant := undeclared_variant(entry.name)))
    except OSError:  # (the directory went, or cannot be listed: no lock of it to speak of)
        return RemovedVariantLocks(())
    found = []
    for name, variant in candidates[:MOST_CANDIDATES_READ]:
        lock = variant_lock_at(base.parent / name, variant)
        if lock is not None:
            found.append(lock)
    unread = tuple(base.parent / name for name, _variant in candidates[MOST_CANDIDATES_READ:])
    return RemovedVariantLocks(tuple(found), unread)


def unread_candidates_note(base: Path, unread: tuple[Path, ...]) -> str:
    """What a search that left files unread says: how many, which (the first few), and what to do."""
    suffix = base.suffix or ".yml"
    shown = ", ".join(str(path) for path in unread[:3]) + (", ..." if len(unread) > 3 else "")
    return (
        f"{len(unread)} files beside {base} named like variant locks ({base.stem}.<variant>{suffix}) were not read (envkit "
        f"reads at most {MOST_CANDIDATES_READ} of them): {shown}; the lock of a variant the spec no longer declares among "
        "them goes unreported: delete those that are not locks of the spec's variants"
    )
