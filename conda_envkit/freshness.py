"""Is a lock still right for its spec? Judged by satisfaction (as pixi does), not only by hash.

A platform is fresh when its input hash is unchanged, or else when the locked packages
still satisfy the spec: same channels, same assumed virtual packages, CUDA and BLAS,
every requested spec matched by a locked package, every locked dependency present,
and no locked package that nothing requires any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile
from rattler import BuildString, MatchSpec, PackageRecord

from conda_envkit.channels import ResolvedChannel
from conda_envkit.errors import EnvkitError
from conda_envkit.lockfile import input_hash, pip_input_hash, read_lockfile
from conda_envkit.locking import LockOptions, LockPlan, plan_locks
from conda_envkit.solve import SolveTarget
from conda_envkit.spec import EnvSpec


@dataclass(frozen=True)
class PlatformFreshness:
    """Whether one platform of one lock file still satisfies the spec, and why not."""

    path: str
    variant: str | None
    platform: str
    fresh: bool
    reasons: tuple[str, ...] = ()
    hash_matched: bool = False


def _record(p: LockedDependency) -> PackageRecord:
    subdir = PurePosixPath(urlsplit(p.url).path).parent.name or p.platform
    return PackageRecord(name=p.name, version=p.version, build=BuildString(p.build or ""), build_number=0, subdir=subdir)


def _matches(spec: str, record: PackageRecord) -> bool:
    try:
        return MatchSpec(spec).matches(record)
    except Exception:  # an unparsable spec in an old lock is a mismatch, not a crash
        return False


def _virtual_records(target: SolveTarget) -> dict[str, PackageRecord]:
    return {
        v.name: PackageRecord(name=v.name, version=v.version, build=BuildString(v.build), build_number=0, subdir="noarch")
        for v in target.virtual_packages
    }


def unsatisfied(lockfile: Lockfile, target: SolveTarget, channels: tuple[ResolvedChannel, ...]) -> list[str]:
    """The reasons the locked packages of `target.platform` no longer fit the spec (empty if they do)."""
    p = target.platform
    reasons: list[str] = []
    locked_channels = [c.url for c in lockfile.metadata.channels]
    wanted_channels = [c.public_url for c in channels]
    if locked_channels != wanted_channels:
        reasons.append(f"channels changed: locked {locked_channels}, spec {wanted_channels}")
    custom = lockfile.metadata.custom_metadata or {}
    # Virtual packages are judged through the locked packages' dependencies below; the
    # CUDA assumption itself must match, since a CPU lock "satisfies" a GPU request.
    locked_cuda = custom.get(f"envkit.{p}.cuda")
    if locked_cuda != (target.cuda or "none"):
        reasons.append(f"CUDA changed: locked {locked_cuda!r}, now {target.cuda or 'none'!r}")
    # pip pins come from an index that changes daily; only the section itself is compared.
    if custom.get(f"envkit.{p}.pip-inputs") != (pip_input_hash(target.pip) if target.pip is not None else None):
        reasons.append("the pip: section (requirements or indexes) changed since locking")
    locked_blas = custom.get(f"envkit.{p}.blas")
    if target.blas is not None and locked_blas not in (target.blas.value, "none"):
        reasons.append(f"BLAS changed: locked {locked_blas!r}, now {target.blas.value!r}")

    packages = {d.name: d for d in lockfile.package if d.platform == p and d.manager == "conda"}
    records = {name: _record(d) for name, d in packages.items()}
    for dep in target.dependencies:
        record = records.get(dep.name)
        if record is None:
            reasons.append(f"{dep.spec!r} ({dep.source}) is not in the lock")
        elif not _matches(dep.match_spec, record):
            d = packages[dep.name]
            reasons.append(f"{dep.spec!r} ({dep.source}) is not satisfied by locked {d.name} {d.version} {d.build}")

    virtual = _virtual_records(target)
    for d in packages.values():
        for name, version_spec in d.dependencies.items():
            provider = virtual.get(name) if name.startswith("__") else records.get(name)
            if provider is None:
                what = "virtual package " if name.startswith("__") else ""
                reasons.append(f"{d.name} needs {what}{name} {version_spec}, which is not in the lock or assumed")
                continue
            if not _matches(f"{name} {version_spec}", provider):
                reasons.append(f"{d.name} needs {name} {version_spec}, locked/assumed {provider.version} {provider.build}")

    # Anything nothing asks for any more means a dependency was removed from the spec.
    reachable: set[str] = set()
    todo = [dep.name for dep in target.dependencies]
    while todo:
        name = todo.pop()
        if name in reachable or name not in packages:
            continue
        reachable.add(name)
        todo.extend(packages[name].dependencies)
    for name in sorted(set(packages) - reachable):
        reasons.append(f"{name} is locked but no longer required by the spec")
    return reasons


def check_plan(plan: LockPlan, channels: tuple[ResolvedChannel, ...]) -> list[PlatformFreshness]:
    """Freshness of every platform one lock file should hold."""
    try:
        lockfile = read_lockfile(plan.path)
    except EnvkitError as exc:
        return [PlatformFreshness(str(plan.path), plan.variant, t.platform, False, (exc.message,)) for t in plan.targets]
    results = []
    wanted = {t.platform for t in plan.targets}
    for extra in sorted(set(lockfile.metadata.platforms) - wanted):
        results.append(PlatformFreshness(str(plan.path), plan.variant, extra, False, ("locked, but no longer requested by the spec",)))
    for target in plan.targets:
        if target.platform not in lockfile.metadata.platforms:
            results.append(PlatformFreshness(str(plan.path), plan.variant, target.platform, False, ("requested, but not in the lock",)))
            continue
        if lockfile.metadata.content_hash.get(target.platform) == input_hash(target, channels):
            results.append(PlatformFreshness(str(plan.path), plan.variant, target.platform, True, (), hash_matched=True))
            continue
        reasons = unsatisfied(lockfile, target, channels)
        results.append(PlatformFreshness(str(plan.path), plan.variant, target.platform, not reasons, tuple(reasons)))
    return results


def check_locks(spec: EnvSpec, options: LockOptions) -> list[PlatformFreshness]:
    """Freshness of every lock file and platform the spec asks for (no solving, no network)."""
    channels, plans = plan_locks(spec, options)
    return [result for plan in plans for result in check_plan(plan, channels)]
