"""Is a lock still right for its spec? Judged by satisfaction (as pixi does), never by hash alone.

Every platform's locked packages are checked against the spec whether or not the input hash
matches (a hand edit can keep the hash): same channels, every package from one of them and
for its platform, the assumed virtual packages, CUDA and BLAS, every requested spec matched
by a locked package, every locked dependency present at a matching version, and no locked
package that nothing requires any more. What was assumed comes from the command line first,
then the spec's `envkit:` keys, then the lock's own metadata, then (for a lock conda-lock
wrote) conda-lock's defaults, and the report says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

from rattler import BuildString, MatchSpec, PackageRecord

from conda_envkit.channels import ResolvedChannel
from conda_envkit.lockfile import read_lockfile
from conda_envkit.locking import LockOptions, LockPlan, plan_locks, recorded_target
from conda_envkit.lockmodel import (
    DEFAULT_VARIANT,
    METADATA_VERSION,
    LockedPackage,
    LockFile,
    dependency_closure,
    spec_beside,
    unread_sources,
)
from conda_envkit.lockwrite import input_hash, is_relative_channel, pip_input_hash, recorded_channel_url
from conda_envkit.platforms import Blas
from conda_envkit.redact import redact
from conda_envkit.solve import SolveTarget
from conda_envkit.spec import EnvSpec
from conda_envkit.variant_locks import (
    base_lock_path,
    recorded_variant,
    removed_variant_locks,
    unread_candidates_note,
    variant_lock_at,
    variant_path,
)


@dataclass(frozen=True)
class PlatformFreshness:
    """Whether one platform of one lock file still satisfies the spec, and why not."""

    path: str
    variant: str | None
    platform: str
    fresh: bool
    reasons: tuple[str, ...] = ()
    # None: the lock's content_hash is not envkit's (conda-lock wrote it), so it says nothing.
    hash_matched: bool | None = False
    notes: tuple[str, ...] = ()
    # When every reason is a spec dependency added, changed or dropped: their names (`lock --update` moves only
    # them); empty otherwise.
    update: tuple[str, ...] = ()
    # The lock of a variant the spec no longer declares: deleting it, not `envkit lock`, is what to do.
    variant_removed: bool = False
    # The lock file does not exist yet (a variant just added): `lock --variant NAME` makes it alone.
    unlocked: bool = False
    # The platform is not in the lock (just added to the spec's platforms): `lock -p PLATFORM` adds it alone.
    new_platform: bool = False


def _record(p: LockedPackage) -> PackageRecord:
    return PackageRecord(name=p.name, version=p.version, build=BuildString(p.build or ""), build_number=0, subdir=p.subdir)


def _matches(spec: str, record: PackageRecord) -> bool:
    try:
        return MatchSpec(spec, strict=False).matches(record)
    except Exception:  # an unparsable dependency in a lock is a mismatch, not a crash
        return False


def _virtual_records(target: SolveTarget) -> dict[str, PackageRecord]:
    return {
        v.name: PackageRecord(name=v.name, version=v.version, build=BuildString(v.build), build_number=0, subdir="noarch")
        for v in target.virtual_packages
    }


def _channel_urls(lockfile: LockFile, channels: tuple[ResolvedChannel, ...], alias: str) -> tuple[list[str], list[str]]:
    """(locked, wanted) channel URLs, both normalised: names through the alias, relative paths resolved."""
    base = lockfile.base_dir or Path.cwd()

    def norm(url: str) -> str:
        # Percent-decoded: a path's non-ASCII name is encoded by as_uri and may not be in a URL as written (`chän`).
        return unquote((base / unquote(url)).resolve().as_uri() if url.startswith((".", "/")) and "://" not in url else url.rstrip("/"))

    locked = [norm(c.normalized(alias)) for c in lockfile.metadata.channels]
    wanted = [norm(recorded_channel_url(c, base)) if is_relative_channel(c) else unquote(c.public_url.rstrip("/")) for c in channels]
    return locked, wanted


def unsatisfied(lockfile: LockFile, target: SolveTarget, channels: tuple[ResolvedChannel, ...], alias: str) -> tuple[list[str], list[str]]:
    """The reasons the locked packages of `target.platform` no longer fit the spec (empty if they do), and the
    names of the spec dependencies among them (added, changed, or no longer required)."""
    p = target.platform
    reasons: list[str] = []
    named: list[str] = []
    locked_channels, wanted_channels = _channel_urls(lockfile, channels, alias)
    if locked_channels != wanted_channels:
        # (masked: a conda-lock lock keeps its channels' credentials unless --strip-auth, and this is printed)
        reason = redact(f"channels changed: locked {locked_channels}, spec {wanted_channels}")
        # The same names under another alias: the lock was made with --channel-alias (which it does not record).
        names = [c.written for c in channels]
        if len(locked_channels) == len(names) and all(u.rstrip("/").endswith("/" + n) for u, n in zip(locked_channels, names, strict=True)):
            alias_used = locked_channels[0].rstrip("/")[: -len(names[0])]
            reason += f" (the same channels under the alias {alias_used}: pass --channel-alias {alias_used} as when locking)"
        reasons.append(reason)
    meta = lockfile.envkit
    platform_meta = meta.for_platform(p) if meta is not None else None
    if platform_meta is not None:
        # Virtual packages are judged through the locked packages' dependencies below; the
        # CUDA assumption itself must match, since a CPU lock "satisfies" a GPU request.
        if (platform_meta.cuda_driver or "none") != (target.cuda or "none"):
            reasons.append(f"CUDA changed: locked {platform_meta.cuda_driver or 'none'!r}, now {target.cuda or 'none'!r}")
        # pip pins come from an index that changes daily; only the section itself is compared.
        # (as pip reads them; a lock written before that hashed the lines as written: either fits)
        pip_hashes = {pip_input_hash(target.pip), pip_input_hash(target.pip, as_written=True)} if target.pip is not None else {None}
        if platform_meta.pip_inputs not in pip_hashes:
            # The requirements the locked pip packages do not meet are named (`lock --update` moves them); a change
            # nothing locked contradicts (an index, a line dropped or loosened) is told as a change of the section.
            changed = _unmet_pip_requirements(lockfile, target)
            reasons += [reason for reason, _ in changed] or [_PIP_CHANGED]
            named += [name for _, name in changed]
        if target.blas not in (None, Blas.ANY) and platform_meta.blas not in (target.blas.value, None):
            reasons.append(f"BLAS changed: locked {platform_meta.blas!r}, now {target.blas.value!r}")
    elif target.pip is not None and not any(d.platform == p and d.manager == "pip" for d in lockfile.package):
        reasons.append("the spec has a pip: section but the lock has no pip packages")

    packages = {d.name: d for d in lockfile.package if d.platform == p and d.manager == "conda"}
    for d in packages.values():
        if d.subdir not in (p, "noarch"):
            reasons.append(f"{d.name} {d.version} {d.build} is a {d.subdir} package in the {p} section")
        if not any(unquote(d.url).startswith(c + "/") for c in locked_channels):
            reasons.append(f"{d.name} {d.version} {d.build} comes from {d.locked_url}, which is not under a locked channel")
    records = {name: _record(d) for name, d in packages.items()}
    for dep in target.dependencies:
        record = records.get(dep.name)
        if record is None:
            reasons.append(f"{dep.spec!r} ({dep.source}) is not in the lock")
            named.append(dep.name)
        elif not _matches(dep.match_spec, record):
            d = packages[dep.name]
            reasons.append(f"{dep.spec!r} ({dep.source}) is not satisfied by locked {d.name} {d.version} {d.build}")
            named.append(dep.name)

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
    reachable = dependency_closure(packages.values(), (dep.name for dep in target.dependencies))
    for name in sorted(set(packages) - reachable):
        reasons.append(f"{name} is locked but no longer required by the spec")
        named.append(name)
    return reasons, named


_PIP_CHANGED = "the pip: section (requirements or indexes) changed since locking"


def _unmet_pip_requirements(lockfile: LockFile, target: SolveTarget) -> list[tuple[str, str]]:
    """(reason, PEP 503 name) for each `pip:` requirement of `target` that no locked pip package of its platform
    meets: one not in the lock, or locked at a version outside its specifier. Requirements conda installs, and those
    with an environment marker, are not judged here."""
    if target.pip is None:
        return []
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion

    from conda_envkit.pip_lock import CONDA_TO_PYPI

    p = target.platform
    locked = {canonicalize_name(d.name): d for d in lockfile.package if d.platform == p and d.manager == "pip"}
    conda = {canonicalize_name(CONDA_TO_PYPI.get(d.name, d.name)) for d in lockfile.package if d.platform == p and d.manager == "conda"}
    found: list[tuple[str, str]] = []
    for line in target.pip.requirements:
        try:
            requirement = Requirement(line.line.strip())
        except InvalidRequirement:
            continue
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None or name in conda:
            continue
        written = " ".join(line.line.split())
        d = locked.get(name)
        if d is None:
            found.append((f"{written!r} ({line.source}, pip:) is not in the lock", name))
            continue
        try:
            meets = requirement.specifier.contains(d.version, prereleases=True)
        except InvalidVersion:
            meets = False
        if not meets:
            found.append((f"{written!r} ({line.source}, pip:) is not satisfied by locked {d.name} {d.version}", name))
    return found


def _migration(lockfile: LockFile, target: SolveTarget) -> tuple[list[str], list[str]]:
    """(reasons, notes) for a lock written by an envkit whose metadata meant something else."""
    meta = lockfile.envkit
    if meta is None or meta.version == METADATA_VERSION:
        return [], []
    if not meta.version.isdigit() or int(meta.version) > int(METADATA_VERSION):
        # (its keys may mean what this envkit cannot know: the packages themselves are conda-lock's, read as ever)
        return [], [
            f"written by a newer envkit (metadata version {meta.version}; this one knows {METADATA_VERSION}): its envkit "
            "metadata may mean more than this check knows; upgrade envkit (re-locking with this one would rewrite it)"
        ]
    platform_meta = meta.for_platform(target.platform)
    driver = platform_meta.cuda_driver if platform_meta else None
    if driver is None:
        return [], [f"written by an older envkit (metadata version {meta.version}); re-locking updates the metadata"]
    return [
        f"locked by an older envkit (metadata version {meta.version}): --cuda {driver} then also capped cuda-version <={driver}; "
        f"it now means only the driver (__cuda={driver}, like conda-lock's --with-cuda), so a re-lock may pick a newer "
        f"cuda-version the driver runs (minor-version compatibility); write `cuda-version <={driver}` in the spec to keep the cap"
    ], []


_DROPPED = "locked, but no longer requested by the spec"


def check_plan(
    plan: LockPlan, channels: tuple[ResolvedChannel, ...], spec: EnvSpec, options: LockOptions, lockfile: LockFile | None = None
) -> list[PlatformFreshness]:
    """Freshness of every platform one lock file should hold (`lockfile`: that file, if the caller has read it)."""
    if lockfile is None:
        if not plan.path.exists():
            missing = ("not locked yet (no lock file)",)
            return [PlatformFreshness(str(plan.path), plan.variant, t.platform, False, missing, unlocked=True) for t in plan.targets]
        # A lock that exists but does not read is bad input (exit 2), not merely stale.
        lockfile = read_lockfile(plan.path)
    results = []
    wanted = {t.platform for t in plan.targets}
    # With -p, the platforms not named are kept as they are by `lock -p`: only the named ones are checked.
    for extra in () if options.keep_other_platforms else sorted(set(lockfile.metadata.platforms) - wanted):
        results.append(PlatformFreshness(str(plan.path), plan.variant, extra, False, (_DROPPED,)))
    lock_dir = plan.path.resolve().parent
    for requested in plan.targets:
        if requested.platform not in lockfile.metadata.platforms:
            reason = ("requested, but not in the lock",)
            results.append(PlatformFreshness(str(plan.path), plan.variant, requested.platform, False, reason, new_platform=True))
            continue
        target, notes = recorded_target(requested, lockfile, spec, options)
        hash_matched = (
            None
            if lockfile.envkit is None
            else lockfile.metadata.content_hash.get(target.platform)
            in {input_hash(target, channels, lock_dir), input_hash(target, channels, lock_dir, pip_as_written=True)}
        )
        reasons, migration_notes = _migration(lockfile, target)
        found, named = unsatisfied(lockfile, target, channels, options.settings.channel_alias)
        # (any `lock --update` resolves the pip: section again, holding the locked pip versions: a change to it that
        # names no package needs no full solve when other names do)
        update = tuple(dict.fromkeys(named)) if not reasons and len(named) == len(found) - (_PIP_CHANGED in found) else ()
        reasons += found
        results.append(
            PlatformFreshness(
                str(plan.path),
                plan.variant,
                target.platform,
                not reasons,
                tuple(reasons),
                hash_matched,
                tuple(notes + migration_notes),
                update,
            )
        )
    return results


def check_locks(spec: EnvSpec, options: LockOptions, note: Callable[[str], None] = lambda _text: None) -> list[PlatformFreshness]:
    """Freshness of every lock file and platform the spec asks for (no solving, no network), and of the locks beside
    it of variants the spec no longer declares (stale: no spec makes them); `note` gets what the search left unread."""
    channels, plans = plan_locks(spec, options)
    results = [result for plan in plans for result in check_plan(plan, channels, spec, options)]
    return results + _removed_variants(spec, options, note)


def _removed_variants(spec: EnvSpec, options: LockOptions, note: Callable[[str], None]) -> list[PlatformFreshness]:
    """A stale result per platform of each lock beside `options.lock_path` whose variant the spec does not declare
    (only of the variants named, with --variant or a variant's --lockfile)."""
    declared = {v.name for v in spec.variants}
    if options.variants:
        named = [name for name in options.variants if name not in declared and name != DEFAULT_VARIANT]
        found = [lock for name in named if (lock := variant_lock_at(variant_path(options.lock_path, name), name)) is not None]
    else:
        search = removed_variant_locks(options.lock_path, declared)
        found = list(search.found)
        if search.unread:
            note(unread_candidates_note(options.lock_path, search.unread))
    files = spec.files_named
    return [
        PlatformFreshness(
            str(lock.path),
            lock.variant,
            platform,
            False,
            (f"variant {lock.variant} is no longer in {files}: remove {lock.path} (or add {lock.variant} back under `envkit.variants`)",),
            variant_removed=True,
        )
        for lock in found
        for platform in lock.platforms or ("",)
    ]


_UPDATE_NAMES = 20  # the most `--update NAME`s a stale-lock warning suggests


# What a stale lock's warning says was made from it, per command: (what holds the lock's packages, made from it as it
# is, the verb for using another lock).
_MADE = {"bake": ("the image", "baked", "bake"), "install": ("the environment", "installed", "install")}


def stale_lock_warning(lock_path: Path, lockfile: LockFile, platforms: list[str], options: LockOptions, use: str = "bake") -> str | None:
    """What `lock --check` would say of `platforms` of a lock, as one warning, when the environment files it was made
    from (`spec_beside`) no longer fit it: a bake or an install of a stale lock builds what the lock says, not what
    the spec asks for. None when it fits, or when there is nothing to check it against. `use`: the command (bake,
    install), for its wording."""
    import shlex

    from conda_envkit.errors import EnvkitError
    from conda_envkit.spec import read_env_spec

    holds, made, verb = _MADE[use]
    sources = spec_beside(lock_path, lockfile)
    if not sources:
        unread = unread_sources(lock_path, lockfile)
        if unread is None or not unread.outside:  # (a lock copied alone: nothing to check it against)
            return None
        return f"{lock_path}: not checked against the spec it was made from: {unread}; `envkit lock --check -f FILE` checks it"
    named = ", ".join(str(s.relative_to(lock_path.resolve().parent)) for s in sources)
    try:
        spec = read_env_spec(sources)
        if not spec.platforms_given:
            spec = read_env_spec(sources, list(lockfile.metadata.platforms))
        lock = lock_path.resolve()
        declared = [v.name for v in spec.variants]
        removed = recorded_variant(lockfile)
        if removed is not None and removed not in declared and base_lock_path(lock, removed) is not None:
            return (
                f"{lock_path}: variant {removed} is no longer in {named}, so no spec makes this lock any more "
                f"(`envkit lock --check` calls it stale): {verb} from a lock of the spec's variants, and delete {lock_path}"
            )
        base = _default_lock(lock, declared)
        checked = replace(options, lock_path=base, keep_other_platforms=False)
        channels, plans = plan_locks(spec, checked)
        plan = next((p for p in plans if p.path == lock), None)
        if plan is None:
            return f"{lock_path}: not one of the locks {named} asks for; it was not checked against it"
        plan = LockPlan(plan.path, plan.variant, tuple(t for t in plan.targets if t.platform in platforms))
        results = check_plan(plan, channels, spec, checked, lockfile)  # (the lock as the bake read it: not read again)
    except EnvkitError:
        return f"{lock_path}: not checked against {named}, which does not read (`envkit lock --check` says why)"
    except Exception as exc:  # advice only: whatever went wrong, the bake goes on, and says so
        return f"{lock_path}: not checked against {named} ({type(exc).__name__}; `envkit lock --check` checks it)"
    stale = [r for r in results if not r.fresh and r.platform in platforms and r.reasons != (_DROPPED,)]
    dropped = [r.platform for r in results if r.platform in platforms and r.reasons == (_DROPPED,)]
    if dropped and not stale:
        return f"{lock_path}: {named} no longer names {', '.join(dropped)}, {made} from the lock as it is (`envkit lock` would drop it)"
    if not stale:
        return None
    reasons = "; ".join(f"{r.platform}: {r.reasons[0]}" + (f" (+{len(r.reasons) - 1} more)" if len(r.reasons) > 1 else "") for r in stale)
    names = list(dict.fromkeys(n for r in stale for n in r.update))
    # (a few names: a command to run; for many, the plain re-lock is the one that fits on a command line)
    few = 0 < len(names) <= _UPDATE_NAMES and all(r.update for r in stale)
    fix = "envkit lock" + "".join(f" --update {shlex.quote(n)}" for n in names) if few else "envkit lock"
    return f"{lock_path} is stale against {named} ({reasons}): {holds} holds what the lock says; `{fix}` brings it up to date"


def _default_lock(lock: Path, variants: list[str]) -> Path:
    """The default variant's lock path of which `lock` is a variant's (`conda-lock.<variant>.yml`), else `lock`."""
    for variant in variants:
        base = base_lock_path(lock, variant)
        if base is not None:
            return base
    return lock
