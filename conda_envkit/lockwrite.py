"""Solved platforms -> the lock model: entries, envkit metadata and input hashes (producer side).

Reading a lock never imports this module; it needs the solver's records.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conda_envkit.channels import ResolvedChannel, public_package_url
from conda_envkit.lockmodel import (
    DEFAULT_VARIANT,
    METADATA_VERSION,
    CurrentLock,
    LockChannel,
    LockedPackage,
    LockFile,
    LockFileError,
    LockMetadata,
    PackageHash,
    package_text,
    relative_url,
    render_lock,
)
from conda_envkit.solve import SolvedPlatform, SolveTarget

if TYPE_CHECKING:
    from rattler import RepoDataRecord

    from conda_envkit.pip_lock import PipInputs, PipPin

# 2: `--cuda` is the driver only (no `cuda-version <=` constraint); channels as recorded.
INPUT_HASH_SCHEME = "envkit-inputs/2"


def _sha256_json(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_relative_channel(channel: ResolvedChannel) -> bool:
    """A channel written as a path relative to environment.yml (`./channel`)."""
    return channel.written == "." or channel.written.startswith(("./", "../"))


def recorded_channel_url(channel: ResolvedChannel, lock_dir: Path) -> str:
    """The channel URL the lock records: relative channels stay relative (to the lock file)."""
    return relative_url(channel.public_url, lock_dir) if is_relative_channel(channel) else channel.public_url


def recorded_package_url(url: str, channels: tuple[ResolvedChannel, ...], lock_dir: Path) -> str:
    """A solved package's URL as the lock records it: no credentials, relative in a relative channel."""
    public = public_package_url(url, channels)
    for channel in channels:
        if is_relative_channel(channel) and public.startswith(channel.public_url + "/"):
            return relative_url(public, lock_dir)
    return public


def pip_input_hash(pip: PipInputs, as_written: bool = False) -> str:
    """The hash of a platform's `pip:` section (requirements and index templates, no secrets); `as_written`: of its
    lines as written, as envkit hashed them before (a lock check accepts either)."""
    return _sha256_json({"scheme": INPUT_HASH_SCHEME, "pip": pip.hash_input(as_written)})


def input_hash(target: SolveTarget, channels: tuple[ResolvedChannel, ...], lock_dir: Path, pip_as_written: bool = False) -> str:
    """The content hash of everything a platform's solve depends on (docs/lock-format.md)."""
    inputs: dict[str, object] = {
        "scheme": INPUT_HASH_SCHEME,
        "platform": target.platform,
        "channels": [recorded_channel_url(c, lock_dir) for c in channels],
        "channel_priority": "strict",
        "dependencies": sorted(d.match_spec for d in target.dependencies),
        "virtual_packages": [str(v) for v in target.virtual_packages],
        "constraints": list(target.constraints()),
    }
    if target.pip is not None:  # absent without a pip: section, so such locks keep their hashes
        inputs["pip"] = pip_input_hash(target.pip, pip_as_written)
    return _sha256_json(inputs)


def _split_depend(depend: str) -> tuple[str, str]:
    name, _, spec = depend.strip().partition(" ")
    return name, spec.strip() or "*"


def _merge_constraints(specs: list[str]) -> str:
    """One `version [build]` string for several depends on the same name.

    conda-lock keeps one entry per name; `_openmp_mutex >=4.5` plus
    `_openmp_mutex * *_llvm` become `>=4.5 *_llvm`, which means the same.
    """
    if len(specs) == 1:
        return specs[0]
    versions: list[str] = []
    builds: list[str] = []
    for spec in specs:
        version, _, build = spec.partition(" ")
        if version not in ("", "*") and version not in versions:
            versions.append(version)
        if build.strip() not in ("", "*") and build.strip() not in builds:
            builds.append(build.strip())
    merged = ",".join(versions) or "*"
    return f"{merged} {builds[0]}" if builds else merged


def locked_package(record: RepoDataRecord, platform: str, channels: tuple[ResolvedChannel, ...], lock_dir: Path) -> LockedPackage:
    """A solver record (rattler RepoDataRecord) as a lock entry."""
    if record.md5 is None or record.sha256 is None:
        raise LockFileError(
            f"{platform}: package {record.name.normalized} {record.version} {record.build} has no md5/sha256 in its channel",
            hint="re-index the channel so that every record carries both hashes",
        )
    constraints: dict[str, list[str]] = {}
    for depend in record.depends:
        name, spec = _split_depend(depend)
        constraints.setdefault(name, []).append(spec)
    public = public_package_url(record.url, channels)
    return LockedPackage(
        name=record.name.normalized,
        version=str(record.version),
        manager="conda",
        platform=platform,
        url=public,
        hash=PackageHash(md5=record.md5.hex(), sha256=record.sha256.hex()),
        build=str(record.build),
        dependencies=dict(sorted((name, _merge_constraints(specs)) for name, specs in constraints.items())),
        written_url=recorded_package_url(record.url, channels, lock_dir),
    )


def pip_locked(pin: PipPin, platform: str, lock_dir: Path) -> LockedPackage:
    """A pip pin as conda-lock writes pip entries: wheel URL, sha256, no build.

    A local wheel inside the project (`--find-links ./wheels`) is recorded relative to the
    lock file, like a relative channel, so copies of the project lock alike.
    """
    written = pin.url
    if pin.url.startswith("file://"):
        local = relative_url(pin.url, lock_dir)
        written = local if local.startswith("./") else pin.url
    return LockedPackage(
        name=pin.name,
        version=pin.version,
        manager="pip",
        platform=platform,
        url=pin.url,
        hash=PackageHash(sha256=pin.sha256),
        build=None,
        written_url=written,
    )


def _newer(a: str, b: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    return key(a) > key(b)


def target_metadata(solved: SolvedPlatform) -> dict[str, str]:
    """The `envkit.<platform>.*` keys recorded for one solved platform."""
    t = solved.target
    p = t.platform
    blas = solved.chosen_blas
    chosen_cuda = solved.chosen_cuda_version
    meta = {
        f"envkit.{p}.cuda": t.cuda or "none",
        f"envkit.{p}.cuda-version": chosen_cuda or "none",
        f"envkit.{p}.blas-requested": t.blas.value if t.blas else "any",  # (Blas.ANY's value is "any" too)
        f"envkit.{p}.blas": blas.value if blas else "none",
        f"envkit.{p}.virtual-packages": " ".join(str(v) for v in t.virtual_packages),
    }
    if t.cuda and chosen_cuda and _newer(chosen_cuda, t.cuda) and solved.cuda_packages:  # (a CPU-only lock runs no toolkit)
        # A toolkit newer than the driver runs through CUDA minor-version compatibility
        # (same major): say so, since some features (PTX JIT) need the newer driver.
        meta[f"envkit.{p}.cuda-compat"] = "minor-version"
    if t.pip is not None:
        meta[f"envkit.{p}.pip-inputs"] = pip_input_hash(t.pip)
        # Where pip packages come from, as written (`${VAR}` credentials, never their values):
        # `envkit install` finds the credentials for a wheel URL's host here.
        meta[f"envkit.{p}.pip-indexes"] = " ".join(t.pip.index_templates())
    return meta


@dataclass(frozen=True)
class PlatformPart:
    """One solved platform as lock entries, each with its YAML text already rendered.

    Built as soon as the platform is solved, while other platforms still solve, so
    that writing the lock adds little after the last solve.
    """

    solved: SolvedPlatform
    packages: tuple[LockedPackage, ...]
    texts: dict[tuple[str, str, str], str]


def platform_part(
    solved: SolvedPlatform, channels: tuple[ResolvedChannel, ...], lock_dir: Path, pins: tuple[PipPin, ...] = ()
) -> PlatformPart:
    """Convert one platform's records (and pip pins) to lock entries and their text."""
    platform = solved.target.platform
    packages = tuple(locked_package(r, platform, channels, lock_dir) for r in solved.records)
    packages += tuple(pip_locked(pin, platform, lock_dir) for pin in pins)
    return PlatformPart(solved, packages, {p.key: package_text(p) for p in packages})


@dataclass(frozen=True)
class KeptPlatforms:
    """Platforms of an existing lock kept as they are (not solved again): their entries, input hashes and
    `envkit.<platform>.*` metadata."""

    platforms: tuple[str, ...]
    packages: tuple[LockedPackage, ...]
    content_hash: dict[str, str]
    custom: dict[str, str]


def other_platforms(current: CurrentLock, solving: set[str], channels: tuple[ResolvedChannel, ...]) -> KeptPlatforms | None:
    """The platforms of the lock as it is (`current`) that are not being solved (None: no lock there, or none other).

    Refused, so that no platform is lost or kept inconsistent without a word: a lock whose channels are not these
    (its other platforms' packages would come from channels it no longer names; conda-lock refuses that merge
    too). A lock that cannot be read is refused before, for every `envkit lock` (locking.lock_environment)."""
    lock_path = current.path
    existing = current.lockfile
    if existing is None:
        return None
    platforms = tuple(p for p in existing.metadata.platforms if p not in solving)
    if not platforms:
        return None
    lock_dir = lock_path.resolve().parent
    now = [recorded_channel_url(c, lock_dir) for c in channels]
    before = [c.url for c in existing.metadata.channels]
    if [u.rstrip("/") for u in now] != [u.rstrip("/") for u in before]:
        raise LockFileError(
            f"{lock_path}: its channels ({', '.join(before)}) are not the spec's ({', '.join(now)}), and -p would keep"
            f" {', '.join(platforms)} as locked from the old ones",
            hint="lock every platform again: run `envkit lock` without -p",
        )
    custom = existing.metadata.custom_metadata or {}
    return KeptPlatforms(
        platforms=platforms,
        packages=tuple(p for p in existing.package if p.platform in platforms),
        content_hash={p: h for p, h in existing.metadata.content_hash.items() if p in platforms},
        custom={k: v for k, v in custom.items() if any(k.startswith(f"envkit.{p}.") for p in platforms)},
    )


def build_lockfile(
    parts: list[PlatformPart],
    channels: tuple[ResolvedChannel, ...],
    sources: tuple[Path, ...],
    lock_path: Path,
    variant: str | None,
    env_name: str | None = None,
    kept: KeptPlatforms | None = None,
) -> LockFile:
    """Assemble the lock model for the solved platforms of one variant (and the platforms `kept` from the lock)."""
    lock_dir = lock_path.resolve().parent
    packages: list[LockedPackage] = []
    custom: dict[str, str] = {
        "envkit.variant": variant or DEFAULT_VARIANT,
        "envkit.channel-priority": "strict",
        "envkit.metadata-version": METADATA_VERSION,
    }
    if env_name:
        custom["envkit.name"] = env_name
    content_hash: dict[str, str] = {}
    for part in sorted(parts, key=lambda part: part.solved.target.platform):
        target = part.solved.target
        packages.extend(part.packages)
        content_hash[target.platform] = input_hash(target, channels, lock_dir)
        custom.update(target_metadata(part.solved))
    if kept is not None:
        packages.extend(kept.packages)
        content_hash.update(kept.content_hash)
        custom.update(kept.custom)
    content_hash = dict(sorted(content_hash.items()))  # as a lock of all its platforms at once has it
    packages.sort(key=lambda d: d.key)
    metadata = LockMetadata(
        content_hash=content_hash,
        channels=tuple(LockChannel(url=recorded_channel_url(c, lock_dir), used_env_vars=c.used_env_vars) for c in channels),
        platforms=tuple(sorted(content_hash)),
        sources=tuple(os.path.relpath(p.resolve(), lock_dir) for p in sources),
        custom_metadata=dict(sorted(custom.items())),
    )
    return LockFile(metadata=metadata, package=tuple(packages), path=lock_path)


def render_lockfile(lockfile: LockFile, parts: list[PlatformPart] | None = None) -> str:
    """The exact text of a lock file, reusing entries already rendered in `parts`."""
    texts: dict[tuple[str, str, str], str] = {}
    for part in parts or ():
        texts.update(part.texts)
    return render_lock(lockfile, texts)
