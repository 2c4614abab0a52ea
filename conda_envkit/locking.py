"""spec -> solve -> lock file: plan the solves of every variant, run them, write the files."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import rattler

from conda_envkit.cache import cache_dir_or_default
from conda_envkit.channels import ChannelSettings, ResolvedChannel, resolve_channels
from conda_envkit.pins import PinOrigin, PinSource, blas_flag
from conda_envkit.platforms import (
    CONDA_LOCK_DEFAULT_CUDA,
    CUDA_PLATFORMS,
    DEFAULT_VIRTUAL_PACKAGES,
    Blas,
    VirtualPackage,
    check_blas,
    virtual_packages_for,
)
from conda_envkit.solve import SolvedPlatform, SolveTarget, solve_targets
from conda_envkit.spec import EnvSpec, SpecError, Variant
from conda_envkit.thread_pool import ThreadPool
from conda_envkit.variant_locks import variant_path

if TYPE_CHECKING:
    from conda_envkit.lockmodel import CurrentLock, LockedPackage, LockFile, LockHash
    from conda_envkit.lockwrite import KeptPlatforms, PlatformPart
    from conda_envkit.pip_lock import PipInputs, PipPin
    from conda_envkit.repodata_guard import RepodataGuard


@dataclass(frozen=True)
class LockOptions:
    """What the command line adds to a spec.

    `cuda` (a driver version) overrides the spec's default CUDA, `no_cuda` forces CPU; `blas` entries are
    (platform or "*", Blas) and override the spec's; `virtual_packages` come from a
    conda-lock style `--virtual-package-spec` file.
    """

    lock_path: Path = Path("conda-lock.yml")
    cuda: str | None = None
    no_cuda: bool = False
    blas: tuple[tuple[str, Blas], ...] = ()
    virtual_packages: dict[str, dict[str, str]] = field(default_factory=dict)
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    # --update: relock only these packages; every other package keeps its locked build.
    update: tuple[str, ...] = ()
    # Where uv keeps its cache while resolving pip: sections (default: envkit's cache).
    cache_dir: Path | None = None
    # -p named the platforms: the existing lock's other platforms are kept as they are (as conda-lock does).
    keep_other_platforms: bool = False
    # --variant, or a --lockfile that is a variant's lock: lock (or check) only these variants' files, `default` naming
    # the default lock; empty: every variant's.
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockPlan:
    """One lock file to write: its path, its variant, and the solves that fill it."""

    path: Path
    variant: str | None
    targets: tuple[SolveTarget, ...]


@dataclass(frozen=True)
class LockOutcome:
    """What `lock_environment` did for one lock file."""

    path: Path
    variant: str | None
    written: bool
    solved: tuple[SolvedPlatform, ...]
    lock_hash: LockHash
    platform_hashes: dict[str, LockHash]
    pip_packages: dict[str, int] = field(default_factory=dict)  # platform -> pip packages locked
    kept_platforms: tuple[str, ...] = ()  # the existing lock's platforms kept unsolved (-p named others)


BlasTable = tuple[tuple[str, Blas], ...]


def _blas_for(platform: str, spec: EnvSpec, variant: Variant | None, options: LockOptions) -> tuple[Blas | None, PinOrigin | None]:
    """The BLAS pinned for `platform` and who pinned it: a variant's own `blas` beats --blas, which beats the spec's
    (as a variant's own `cuda` beats --cuda: a variant is the build it names); within each, an exact platform beats
    `*`."""
    files = spec.files_named
    tables: list[tuple[BlasTable, PinSource, str]] = [(spec.blas, PinSource.SPEC, f"`envkit.blas` in {files}")]
    tables.append((options.blas, PinSource.FLAG, ""))
    if variant is not None and variant.blas != spec.blas:  # (a variant without `blas:` has the spec's)
        tables.append((variant.blas, PinSource.SPEC, f"`envkit.variants.{variant.name}.blas` in {files}"))
    chosen: tuple[Blas | None, PinOrigin | None] = (None, None)
    for table, source, written in tables:
        entries = dict(table)
        scope = platform if platform in entries else "*" if "*" in entries else None
        if scope is not None:
            blas = entries[scope]
            chosen = (blas, PinOrigin(source, written or blas_flag(scope, blas), scope))
    return chosen


def _spec_cuda(spec: EnvSpec, options: LockOptions) -> str | None:
    """The CUDA driver of the default variant (and of a variant that does not say): the flags', else the spec's."""
    if options.no_cuda:
        return None
    return options.cuda if options.cuda is not None else spec.cuda


def _cuda_origin(spec: EnvSpec, options: LockOptions, variant: Variant | None) -> PinOrigin:
    """Who set the CUDA driver a target assumes (as `_spec_cuda` or the variant decides it)."""
    if variant is not None and not variant.inherits_cuda:
        return PinOrigin(PinSource.SPEC, f"`envkit.variants.{variant.name}.cuda` in {spec.files_named}")
    if options.cuda is not None:
        return PinOrigin(PinSource.FLAG, f"--cuda {options.cuda}")
    return PinOrigin(PinSource.SPEC, f"`envkit.cuda` in {spec.files_named}")


def _targets(spec: EnvSpec, options: LockOptions, variant: Variant | None) -> tuple[SolveTarget, ...]:
    if variant is None:
        cuda = _spec_cuda(spec, options)
        platforms = spec.platforms
    else:
        cuda = _spec_cuda(spec, options) if variant.inherits_cuda else variant.cuda
        platforms = tuple(p for p in spec.platforms if not variant.platforms or p in variant.platforms)
        unknown = [p for p in variant.platforms if p not in spec.platforms]
        if unknown and not options.keep_other_platforms:  # (with -p, the variant's others are kept as locked)
            raise SpecError(
                f"variant {variant.name!r} names platform(s) {', '.join(unknown)} that the spec does not lock",
                hint=f"add them to `platforms:` or -p, or remove them from the variant (locked: {', '.join(spec.platforms)})",
            )
    targets = []
    for platform in platforms:
        blas, blas_origin = _blas_for(platform, spec, variant, options)
        if blas is not None:
            check_blas(blas, platform)
        targets.append(
            SolveTarget(
                platform=platform,
                variant=variant.name if variant else None,
                dependencies=spec.dependencies_for(platform, variant),
                virtual_packages=virtual_packages_for(platform, cuda, options.virtual_packages.get(platform)),
                cuda=cuda if platform in CUDA_PLATFORMS else None,
                blas=blas,
                pip=_pip_inputs(spec, platform),
                blas_origin=blas_origin,
                cuda_origin=_cuda_origin(spec, options, variant) if cuda is not None else None,
            )
        )
    return tuple(targets)


def plan_locks(spec: EnvSpec, options: LockOptions) -> tuple[tuple[ResolvedChannel, ...], list[LockPlan]]:
    """Resolve channels and decide every solve, before any network or solver work (of the variants `options.variants`
    names, if it names any)."""
    channels = resolve_channels(spec.channels, options.settings, spec.base_dir)
    plans = [LockPlan(options.lock_path, None, _targets(spec, options, None))] if _selected(None, options) else []
    for variant in spec.variants:
        if _selected(variant.name, options):
            plans.append(LockPlan(variant_path(options.lock_path, variant.name), variant.name, _targets(spec, options, variant)))
    # -p naming none of a variant's platforms: that variant's lock is left as it is.
    return channels, [plan for plan in plans if plan.targets or not options.keep_other_platforms]


def _selected(variant: str | None, options: LockOptions) -> bool:
    """Whether this run locks (or checks) `variant`'s file (None: the default lock)."""
    if not options.variants:
        return True
    from conda_envkit.lockmodel import DEFAULT_VARIANT

    return (variant or DEFAULT_VARIANT) in options.variants


def recorded_target(target: SolveTarget, lockfile: LockFile, spec: EnvSpec, options: LockOptions) -> tuple[SolveTarget, list[str]]:
    """`target` with the assumptions the lock was made under (CUDA driver, BLAS asked for, virtual packages)
    wherever no flag or spec key says otherwise, and notes saying which; for a lock conda-lock wrote, conda-lock's
    defaults. `lock --check` judges a lock by them, and `lock` (`--update`, `-p`) solves again under them."""
    p = target.platform
    variant = next((v for v in spec.variants if v.name == target.variant), None)
    spec_cuda = variant is None or variant.inherits_cuda  # (the default variant's, or a variant's that does not say)
    cuda_given = options.cuda is not None or options.no_cuda or (spec.cuda is not None if spec_cuda else True)
    blas_given = target.blas is not None
    vp_given = p in options.virtual_packages
    meta = lockfile.envkit
    platform_meta = meta.for_platform(p) if meta is not None else None
    notes: list[str] = []
    if platform_meta is not None:
        from_lock = PinOrigin(PinSource.LOCK, f"as {lockfile.path or 'the lock'} records it", p)
        cuda = target.cuda if cuda_given else platform_meta.cuda_driver
        cuda_origin = target.cuda_origin if cuda_given else from_lock
        if not cuda_given and cuda is not None and p in CUDA_PLATFORMS:
            notes.append(f"CUDA driver {cuda} as the lock records it (pass --cuda/--no-cuda for another)")
        overrides = options.virtual_packages.get(p)
        if not vp_given and platform_meta.virtual_packages:
            overrides = _recorded_overrides(p, platform_meta.virtual_packages)
            recorded = {str(v) for v in virtual_packages_for(p, cuda, overrides)}
            if recorded != {str(v) for v in virtual_packages_for(p, cuda)}:
                notes.append(f"virtual packages as the lock records them: {' '.join(sorted(recorded))}")
        blas, blas_origin = target.blas, target.blas_origin
        if not blas_given and platform_meta.blas_requested:
            blas = Blas(platform_meta.blas_requested)
            blas_origin = from_lock
            notes.append(f"BLAS {blas.value} as the lock records it (pass --blas for another)")
    else:
        # conda-lock wrote it: conda-lock's default virtual packages, __cuda=11.4 on CUDA platforms.
        cuda = target.cuda if cuda_given else (CONDA_LOCK_DEFAULT_CUDA if p in CUDA_PLATFORMS else None)
        cuda_origin = target.cuda_origin if cuda_given else PinOrigin(PinSource.LOCK, "conda-lock's default driver", p)
        overrides = options.virtual_packages.get(p)
        blas, blas_origin = target.blas, target.blas_origin
        assumed = " ".join(str(v) for v in virtual_packages_for(p, cuda, overrides))
        # (a driver the spec or a flag gave, `envkit: {cuda: ...}` or --cuda, is theirs, not one of conda-lock's defaults)
        if vp_given:
            whose = "the virtual packages given"
        elif cuda_given and p in CUDA_PLATFORMS:
            whose = f"the CUDA driver {cuda or 'none'} the spec or --cuda gives, and conda-lock's defaults for the rest:"
        else:
            whose = "conda-lock's defaults"
        notes.append(
            f"no envkit metadata (a conda-lock lock): assumed {whose} {assumed}"
            + ("" if vp_given else "; pass --cuda (as given to conda-lock --with-cuda) or --virtual-package-spec to change them")
        )
    virtual: tuple[VirtualPackage, ...] = virtual_packages_for(p, cuda, overrides)
    cuda = cuda if p in CUDA_PLATFORMS else None
    origin = cuda_origin if cuda is not None else None
    return replace(target, cuda=cuda, blas=blas, virtual_packages=virtual, blas_origin=blas_origin, cuda_origin=origin), notes


def _recorded_overrides(platform: str, recorded: tuple[str, ...]) -> dict[str, str]:
    """The lock's `name=version=build` virtual packages as overrides of the defaults (without __cuda, which follows `cuda`)."""
    found: dict[str, str] = {}
    for item in recorded:
        name, _, rest = item.partition("=")
        version, _, build = rest.partition("=")
        found[name] = f"{version} {build or '0'}"
    overrides = {name: "" for name in DEFAULT_VIRTUAL_PACKAGES[platform] if name not in found}
    overrides.update({k: v for k, v in found.items() if k != "__cuda"})
    return overrides


def _pip_inputs(spec: EnvSpec, platform: str) -> PipInputs | None:
    """The platform's `pip:` section, checked while planning so that bad lines fail before any solve."""
    lines = spec.pip.get(platform, ())
    if not lines:
        return None
    # packaging and uv's helpers load only for specs with a pip: section.
    from conda_envkit.pip_lock import parse_pip_section
    from conda_envkit.wheel_targets import supports_pip

    if not supports_pip(platform):
        raise SpecError(
            f"{lines[0].source}: envkit cannot lock pip packages for {platform}",
            hint="limit the pip: lines to other platforms with a selector, e.g. `# [not ppc64le]`",
        )
    return parse_pip_section(lines)


@dataclass(frozen=True)
class KeptPins:
    """For `--update`: the locked conda builds (name -> sha256) and pip versions (name -> version) to keep."""

    conda: dict[str, str] = field(default_factory=dict)
    pip: dict[str, str] = field(default_factory=dict)
    # Of `conda`, those the named packages do not depend on (their dependents, and the rest): pinned for a first
    # solve, so that the update moves the named packages and, where they need it, their dependencies alone.
    pinned: frozenset[str] = frozenset()


def resolve_pip_for(solved: SolvedPlatform, keep_pip: dict[str, str], cache_dir: Path) -> tuple[PipPin, ...]:
    """The pip pins of one solved platform (none without a pip: section)."""
    from conda_envkit.pip_lock import conda_python_packages, python_version, resolve_pip
    from conda_envkit.wheel_targets import wheel_target

    target = solved.target
    inputs = target.pip
    if inputs is None or not inputs.requirements:
        return ()
    version = python_version(solved.records)
    if version is None:
        raise SpecError(
            f"{inputs.requirements[0].source}: {target.label} has pip: dependencies but the conda solution has no python",
            hint="add python (e.g. `python =3.11`) to the conda dependencies",
        )
    wheel = wheel_target(target.platform, version, target.virtual_packages)
    return tuple(resolve_pip(inputs, wheel, conda_python_packages(solved.records), keep_pip, cache_dir))


def _keep_for_update(
    plans: list[LockPlan], current: dict[Path, CurrentLock], update: tuple[str, ...], spec_names: frozenset[str] = frozenset()
) -> Callable[[SolveTarget], KeptPins]:
    """For `--update`: per target, the locked packages to keep (every locked package not named). A name the lock
    does not hold is refused unless the spec asks for it (a dependency just added: every other package keeps its
    build, and it is solved in)."""
    from conda_envkit.errors import EnvkitError
    from conda_envkit.lockmodel import dependency_closure

    kept: dict[tuple[str | None, str], KeptPins] = {}
    unknown = set(update)
    held: set[str] = set()  # every name the locks hold (for a suggestion)
    for plan in plans:
        try:
            existing = current[plan.path].required()
        except EnvkitError as exc:
            raise SpecError(f"--update needs the current lock: {exc.message}", hint="run `envkit lock` once without --update") from None
        for target in plan.targets:
            packages = [p for p in existing.package if p.platform == target.platform]
            held.update(p.name for p in packages)
            named = {p.name for p in packages if any(_names_package(n, p) for n in update)}
            unknown -= {n for n in update if any(_names_package(n, p) for p in packages)}
            conda = {p.name: p.hash.sha256 or "" for p in packages if p.name not in named and p.manager == "conda"}
            needed = dependency_closure((p for p in packages if p.manager == "conda"), named)
            kept[(target.variant, target.platform)] = KeptPins(
                conda=conda,
                pip={p.name: p.version for p in packages if p.name not in named and p.manager == "pip"},
                pinned=frozenset(conda) - needed,
            )
    unknown = {n for n in unknown if n.lower() not in spec_names and _pip_name(n) not in spec_names}
    if unknown:
        import difflib

        missing = [n for n in update if n in unknown]
        close = [match for n in missing for match in difflib.get_close_matches(n.lower(), sorted(held), n=2, cutoff=0.7)]
        near = f"did you mean {' or '.join(dict.fromkeys(close))}? " if close else ""
        raise SpecError(
            f"--update {' '.join(missing)}: not in the lock, and the spec does not ask for {'it' if len(missing) == 1 else 'them'}",
            hint=f"{near}name packages the lock holds (see `envkit render`); to add a package, write it in the spec's "
            "dependencies (or its pip: section) first, then `envkit lock --update` it",
        )
    return lambda target: kept.get((target.variant, target.platform), KeptPins())


def _pip_name(requirement: str) -> str:
    """The PEP 503 name a pip requirement line (or a bare name) asks for: lower case, runs of `-_.` as one `-`."""
    from conda_envkit.lockmodel import pip_package_name

    return pip_package_name(re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0])


def _names_package(name: str, package: LockedPackage) -> bool:
    """Whether an --update NAME means `package`: its name exactly, or spelled as its manager spells names alike
    (conda: case; pip, PEP 503: case and any run of `-`, `_`, `.`: `typing_extensions` is `typing-extensions`)."""
    if name == package.name or name.lower() == package.name.lower():
        return True
    from conda_envkit.lockmodel import pip_package_name

    return package.manager == "pip" and pip_package_name(name) == pip_package_name(package.name)


def pip_failures(errors: list[BaseException], platforms: set[str]) -> BaseException:
    """One error for the pip: sections that failed: each platform's message, and one hint, which for a requirement
    that fails on some platforms only is the selector that keeps it where it resolves."""
    from conda_envkit.pip_lock import PipLockError
    from conda_envkit.platforms import selector_for

    if not all(isinstance(e, PipLockError) for e in errors):
        return next(e for e in errors if not isinstance(e, PipLockError))
    failures = sorted((e for e in errors if isinstance(e, PipLockError)), key=lambda e: e.platform)
    lacking: dict[tuple[str, str], set[str]] = {}
    for error in failures:
        for blamed in error.blamed:
            lacking.setdefault(blamed, set()).add(error.platform)
    hints = [f.hint for f in failures]
    for (name, source), without in lacking.items():
        having = platforms - without
        if having and len(lacking) == 1:
            hints = [
                f"to lock {name} only where it resolves, add `# [{selector_for(having, platforms)}]` to its line ({source}); "
                "or relax the requirement, or add an index that has a wheel for those platforms"
            ]
    if len(failures) == 1:
        return PipLockError(failures[0].message, hints[0], failures[0].platform, failures[0].blamed)
    return PipLockError("\n".join(f.message for f in failures), "; ".join(dict.fromkeys(hints)))


def _load_lock_writer() -> None:
    """Import what turns solutions into lock files, while rattler solves.

    The solver runs in rattler's threads and Python waits for it: loading the lock model,
    its YAML writer and the hashes then (about a tenth of `envkit lock`'s start-up) costs
    no wall time on a machine with a core to spare.
    """
    import conda_envkit.lockwrite  # noqa: F401  # and with it lockmodel, lock_yaml, files, hashlib, json


def as_recorded(
    plans: list[LockPlan], current: dict[Path, CurrentLock], spec: EnvSpec, options: LockOptions, note: Callable[[str], None]
) -> list[LockPlan]:
    """Each target as its lock was made (CUDA driver, BLAS asked for, virtual packages) where no flag or spec key
    says otherwise: `lock`, `lock --update` and `lock -p` solve again under the lock's assumptions, as `lock --check`
    judges by them (a lock made with --cuda 12.4 stayed CUDA for --check and became CPU at the next `lock`).
    A platform the lock does not hold, and a lock envkit did not write, take the spec's and the flags' own."""
    planned = []
    for plan in plans:
        existing = current[plan.path].lockfile  # None if there is none (one that does not read was refused before)
        targets = []
        for target in plan.targets:
            if existing is None or existing.envkit is None or existing.envkit.for_platform(target.platform) is None:
                targets.append(target)
                continue
            recorded, notes = recorded_target(target, existing, spec, options)
            for text in notes:
                note(f"{target.label}: {text}")
            targets.append(recorded)
        planned.append(replace(plan, targets=tuple(targets)))
    return planned


def _kept_platforms(
    plans: list[LockPlan],
    current: dict[Path, CurrentLock],
    channels: tuple[ResolvedChannel, ...],
    spec: EnvSpec,
    note: Callable[[str], None],
) -> dict[Path, KeptPlatforms]:
    """For -p, before any solve: each lock's platforms kept as they are (a lock that cannot keep them is refused),
    with a note for a kept platform the spec's `platforms:` no longer names."""
    from conda_envkit.lockwrite import other_platforms

    kept_by_plan = {}
    for plan in plans:
        new = [t.platform for t in plan.targets if spec.declared_platforms and t.platform not in spec.declared_platforms]
        if new:  # locked now, and stale at the next `lock --check` (the spec does not ask for it)
            named = ", ".join(s.name for s in spec.sources) or "the environment file"
            them = "them" if len(new) > 1 else "it"
            note(
                f"{plan.path}: {', '.join(new)} locked (named by -p), but {named} does not name {them} in `platforms:`"
                f" (`envkit lock --check` calls that stale, and `envkit lock` without -p drops {them}): add {them} there"
            )
        kept = other_platforms(current[plan.path], {t.platform for t in plan.targets}, channels)
        if kept is None:
            continue
        kept_by_plan[plan.path] = kept
        undeclared = [p for p in kept.platforms if p not in spec.declared_platforms] if spec.declared_platforms else []
        if undeclared:  # kept as conda-lock keeps them, but `lock --check` will call them stale
            named = ", ".join(s.name for s in spec.sources) or "the environment file"
            them = "them" if len(undeclared) > 1 else "it"
            note(
                f"{plan.path}: {', '.join(undeclared)} kept as locked (not named by -p), but {named} no longer names "
                f"{them} in `platforms:` (`envkit lock --check` calls that stale): `envkit lock` without -p drops {them}, "
                f"or add {them} to `platforms:`"
            )
    return kept_by_plan


def lock_environment(
    spec: EnvSpec,
    options: LockOptions,
    gateway: rattler.Gateway,
    on_solved: Callable[[SolvedPlatform], None] | None = None,
    guard: RepodataGuard | None = None,
    note: Callable[[str], None] = lambda _text: None,
) -> list[LockOutcome]:
    """Solve every variant and platform, then write the lock files that changed.

    Nothing is written unless every solve succeeded, so a failure never leaves a
    half-updated set of lock files.
    """
    channels, plans = plan_locks(spec, options)
    from conda_envkit.errors import EnvkitError
    from conda_envkit.lockmodel import read_current

    current = {plan.path: read_current(plan.path) for plan in plans}
    for lock in current.values():
        if lock.error is not None:
            # A lock that does not read is not replaced: its CUDA driver, BLAS and virtual packages (what the next lock
            # solves under) would be lost without a word, and a CUDA lock locked again as CPU-only.
            raise EnvkitError(
                lock.error.message,
                hint=f"{lock.error.hint + '; ' if lock.error.hint else ''}envkit lock solves again under what {lock.path} records:"
                " fix it (a merge conflict: keep either side), or delete it to lock from the spec alone",
            )
    kept_by_plan = _kept_platforms(plans, current, channels, spec, note) if options.keep_other_platforms else {}
    plans = as_recorded(plans, current, spec, options, note)
    lock_dir = options.lock_path.resolve().parent
    all_targets = [t for plan in plans for t in plan.targets]
    parts: dict[tuple[str | None, str], PlatformPart] = {}

    def convert(solved: SolvedPlatform) -> None:
        # Runs in the event loop while the remaining platforms solve in rattler's threads.
        from conda_envkit.lockwrite import platform_part

        parts[(solved.target.variant, solved.target.platform)] = platform_part(solved, channels, lock_dir)
        if on_solved is not None:
            on_solved(solved)

    spec_names = frozenset(d.name.lower() for target in all_targets for d in target.dependencies)  # (variants' own too)
    # A pip requirement just added is a name the spec asks for too (PEP 503 spelling, as `_names_package` matches).
    spec_names |= {_pip_name(r.line) for target in all_targets if target.pip is not None for r in target.pip.requirements}
    keep = _keep_for_update(plans, current, options.update, spec_names) if options.update else (lambda _target: KeptPins())
    asyncio.run(
        solve_targets(
            all_targets,
            channels,
            gateway,
            convert,
            lambda target: keep(target).conda,
            _load_lock_writer,
            guard,
            pin=lambda target: keep(target).pinned,
        )
    )
    from conda_envkit.files import write_files
    from conda_envkit.lockmodel import lock_hash, platform_lock_hash
    from conda_envkit.lockwrite import build_lockfile, platform_part, render_lockfile

    # pip after conda: uv needs the locked python and what conda already installs.
    pip_parts = [part for part in parts.values() if part.solved.target.pip is not None]
    if pip_parts:
        from conda_envkit.pip_lock import uv_binary

        cache_dir = cache_dir_or_default(options.cache_dir)
        uv_binary()  # looked up here, before the threads: its sysconfig lookup is not thread-safe
        with ThreadPool(max_workers=2) as pool:
            futures = [pool.submit(resolve_pip_for, part.solved, keep(part.solved.target).pip, cache_dir) for part in pip_parts]
            wait(futures)
        failed = [e for f in futures if (e := f.exception()) is not None]
        if failed:  # every platform's, at once (as the conda solves report theirs)
            raise pip_failures(failed, {part.solved.target.platform for part in pip_parts})
        pins = [f.result() for f in futures]
        for part, part_pins in zip(pip_parts, pins, strict=True):
            if part_pins:
                t = part.solved.target
                parts[(t.variant, t.platform)] = platform_part(part.solved, channels, lock_dir, part_pins)

    rendered = []
    for plan in plans:
        plan_parts = [parts[(t.variant, t.platform)] for t in plan.targets]
        kept = kept_by_plan.get(plan.path)
        lockfile = build_lockfile(plan_parts, channels, spec.sources, plan.path, plan.variant, spec.name, kept)
        plan_solved = tuple(part.solved for part in plan_parts)
        pip_counts = {part.solved.target.platform: sum(1 for p in part.packages if p.manager == "pip") for part in plan_parts}
        rendered.append((plan, plan_solved, lockfile, render_lockfile(lockfile, plan_parts), pip_counts, kept))

    # All lock files or none: a variant that cannot be written leaves the others as they were.
    written_flags = write_files(
        [(plan.path, text) for plan, _solved, _lockfile, text, _counts, _kept in rendered], "lock file", "--lockfile"
    )
    outcomes = []
    for (plan, plan_solved, lockfile, _text, pip_counts, kept), written in zip(rendered, written_flags, strict=True):
        outcomes.append(
            LockOutcome(
                path=plan.path,
                variant=plan.variant,
                written=written,
                solved=plan_solved,
                lock_hash=lock_hash(lockfile),
                platform_hashes={p: platform_lock_hash(lockfile, p) for p in lockfile.metadata.platforms},
                pip_packages=pip_counts,
                kept_platforms=kept.platforms if kept else (),
            )
        )
    return outcomes
