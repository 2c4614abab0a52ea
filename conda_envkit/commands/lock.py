"""`envkit lock`, `lock --check`, `hash` and `render`: flags -> LockOptions -> locks -> lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conda_envkit.commands import EXIT_STALE, BadFlag, Output
from conda_envkit.errors import EnvkitError

if TYPE_CHECKING:
    from conda_envkit.freshness import PlatformFreshness
    from conda_envkit.locking import LockOptions, LockOutcome
    from conda_envkit.lockmodel import UnreadSource
    from conda_envkit.platforms import Blas
    from conda_envkit.solve import SolvedPlatform
    from conda_envkit.spec import EnvSpec


@dataclass(frozen=True)
class LockRequest:
    """`envkit lock`'s flags, as given."""

    files: tuple[Path, ...]
    platforms: tuple[str, ...]
    lockfile: Path
    cuda: str | None
    no_cuda: bool
    blas: tuple[str, ...]
    virtual_package_spec: Path | None
    channel_alias: str | None
    mirrors: tuple[str, ...]
    config: Path | None
    check: bool
    update: tuple[str, ...]
    variants: tuple[str, ...] = ()


def parse_blas(values: tuple[str, ...]) -> tuple[tuple[str, Blas], ...]:
    """`--blas [PLATFORM=]BLAS` values as (platform or "*", Blas)."""
    from conda_envkit.platforms import Blas, check_platform

    table = []
    for value in values:
        platform, sep, name = value.rpartition("=")
        platform = platform if sep else "*"
        if platform != "*":
            check_platform(platform, f"--blas {value}")
        try:
            table.append((platform, Blas(name)))
        except ValueError:
            raise BadFlag(
                f"unknown BLAS {name!r}; use one of {', '.join(b.value for b in Blas)} (optionally PLATFORM=BLAS)", "--blas"
            ) from None
    return tuple(table)


def check_flags(request: LockRequest) -> tuple[str | None, tuple[tuple[str, Blas], ...]]:
    """The CUDA driver and the BLAS table the flags ask for, checked before any file is read.

    BadFlag for flags that exclude each other or do not parse (PlatformError for an unknown
    platform in `--blas PLATFORM=BLAS`).
    """
    from conda_envkit.platforms import PlatformError, parse_cuda_driver

    if request.cuda and request.no_cuda:
        raise BadFlag("--cuda and --no-cuda exclude each other")
    if request.check and request.update:
        raise BadFlag("--check and --update exclude each other")
    from conda_envkit.spec import VARIANT_NAME

    for name in request.variants:
        if not VARIANT_NAME.fullmatch(name):  # (it names a file beside the lock: no dot, no slash)
            raise BadFlag(
                f"{name!r} is not a variant name",
                "--variant",
                hint="name a variant of the spec's `envkit.variants`, or `default` for the --lockfile itself",
            )
    try:
        driver = parse_cuda_driver(request.cuda, "--cuda") if request.cuda is not None else None
    except PlatformError as exc:
        # The CLI puts the flag before the message (BadFlag.option): the message need not name it again.
        raise BadFlag(f"{exc.message.removeprefix('--cuda: ')} ({exc.hint})", "--cuda") from None
    return driver, parse_blas(request.blas)


def prepare_lock(request: LockRequest) -> tuple[EnvSpec, LockOptions, list[str]]:
    """The spec and options `lock` (or `lock --check`) runs with, and warnings about flags that change nothing."""
    from conda_envkit.channels import load_settings
    from conda_envkit.locking import LockOptions
    from conda_envkit.platforms import read_virtual_package_spec
    from conda_envkit.spec import read_env_spec

    driver, blas = check_flags(request)
    lock_path, variants = _lock_path_and_variants(request)
    recorded = [] if request.files else _recorded_sources(request.lockfile)
    paths = list(request.files) or recorded or [Path("environment.yml")]
    unread = None if request.files or recorded else _unread_sources(request.lockfile)
    try:
        spec = read_env_spec(paths, list(request.platforms))
    except EnvkitError as exc:
        if unread is None or paths[0].exists():
            raise
        # No environment.yml, and the lock's own sources were not read: which, and why.
        raise EnvkitError(exc.message, hint=f"{request.lockfile} was made from other files: {unread}; pass them with -f") from None
    if not request.platforms and not spec.platforms_given:
        # Locked with -p: the lock says which platforms it holds (a re-lock keeps them all, --check checks them all).
        # (a variant's lock: the default lock's, as a plain `lock` reads them, unless there is none)
        locked = _locked_platforms(lock_path if lock_path.is_file() else request.lockfile, request.check)
        if locked:
            spec = read_env_spec(paths, locked)
    _check_variants_named(spec, lock_path, variants, request)
    options = LockOptions(
        lock_path=lock_path,
        cuda=driver,
        no_cuda=request.no_cuda or (request.cuda is not None and driver is None),
        blas=blas,
        virtual_packages=read_virtual_package_spec(request.virtual_package_spec) if request.virtual_package_spec else {},
        settings=load_settings(request.config, request.channel_alias, list(request.mirrors)),
        update=tuple(n for item in request.update for n in item.replace(",", " ").split()),
        keep_other_platforms=bool(request.platforms),
        variants=variants,
    )
    warnings = _flag_warnings(spec.platforms, driver, options.blas) + _cuda_key_warnings(spec)
    if unread is not None:  # (the default environment.yml was read instead)
        warnings.append(f"{request.lockfile} was made from other files: {unread}; environment.yml was read (-f names the files)")
    if recorded and [str(p) for p in recorded] != ["environment.yml"]:  # (as conda-lock says it: no -f, the lock's own)
        warnings.append(f"no -f given: the environment files {request.lockfile} was made from: {', '.join(map(str, recorded))}")
    return spec, options, warnings


def _lock_path_and_variants(request: LockRequest) -> tuple[Path, tuple[str, ...]]:
    """The default lock's path and the variants to lock or check: --lockfile and --variant as given, or for a
    --lockfile that is a variant's lock (`conda-lock.gpu.yml`, recording `envkit.variant: gpu`), the default lock
    beside it and that variant alone, so that its file is the one checked or written."""
    from conda_envkit.lockmodel import read_lock
    from conda_envkit.variant_locks import base_lock_path, recorded_variant, variant_path

    given = tuple(dict.fromkeys(request.variants))
    if not request.lockfile.is_file():
        return request.lockfile, given
    try:
        variant = recorded_variant(read_lock(request.lockfile))
    except EnvkitError:
        return request.lockfile, given  # (a lock that does not read: said by what reads it next)
    if variant is None:
        return request.lockfile, given
    base = base_lock_path(request.lockfile, variant)
    if base is None:
        suffix = request.lockfile.suffix
        stem, dot, _other = request.lockfile.stem.rpartition(".")  # (`conda-lock.cpu.yml`: conda-lock.yml, likely)
        default = request.lockfile.with_name(f"{stem if dot else 'conda-lock'}{suffix}")
        raise EnvkitError(
            f"{request.lockfile} records variant {variant} (`envkit.variant`), but its name is not a {variant} lock's "
            f"(<default lock's stem>.{variant}{suffix}), so it is not known which default lock it belongs to",
            hint=f"check or lock variant {variant} through its default lock (`--lockfile {default} --variant {variant}` "
            f"reads and writes {variant_path(default, variant)}), or restore {request.lockfile} from version control",
        )
    if given and given != (variant,):
        others = " ".join(f"--variant {name}" for name in given if name != variant)
        raise BadFlag(
            f"--lockfile {request.lockfile} is variant {variant}'s lock, and {others} names another",
            hint=f"name the default lock for several variants: `--lockfile {base} {others} --variant {variant}`",
        )
    return base, (variant,)


def _check_variants_named(spec: EnvSpec, lock_path: Path, variants: tuple[str, ...], request: LockRequest) -> None:
    """Refuse a variant the spec does not declare; `lock --check` takes one whose lock is there (it is stale)."""
    from conda_envkit.lockmodel import DEFAULT_VARIANT
    from conda_envkit.variant_locks import variant_lock_at, variant_path

    declared = [v.name for v in spec.variants]
    files = spec.files_named
    for name in variants:
        if name in declared or name == DEFAULT_VARIANT:
            continue
        path = variant_path(lock_path, name)
        existing = variant_lock_at(path, name)
        if existing is not None and request.check:
            continue  # reported stale, with what to do
        if existing is not None or request.lockfile == path:  # (or the --lockfile is that variant's: a link out, say)
            raise EnvkitError(
                f"{path} is the lock of variant {name}, which {files} no longer declares",
                hint=f"delete {path} (no variant of the spec makes it any more), or add {name} back under `envkit.variants` "
                "to lock it again",
            )
        known = ", ".join([f"{DEFAULT_VARIANT} ({lock_path})"] + [f"{v} ({variant_path(lock_path, v)})" for v in declared])
        raise BadFlag(f"{files} declares no variant {name!r}", "--variant", hint=f"name one of its variants: {known}")


def _recorded_sources(lockfile: Path) -> list[Path]:
    """The environment files a lock records it was made from (`metadata.sources`), as conda-lock takes them when no
    -f is given: each a file in the lock's directory or below (a lock naming others is read with the default)."""
    from conda_envkit.lockmodel import read_lock, spec_beside

    if not lockfile.is_file():
        return []
    try:
        found = spec_beside(lockfile, read_lock(lockfile))
    except EnvkitError:
        return []  # (a lock that does not read: said by what reads it next)
    return [lockfile.parent / path.relative_to(lockfile.resolve().parent) for path in found]


def _unread_sources(lockfile: Path) -> UnreadSource | None:
    """Why the environment files the lock records were not taken for a missing -f (None: it records none, or they
    were)."""
    from conda_envkit.lockmodel import read_lock, unread_sources

    if not lockfile.is_file():
        return None
    try:
        return unread_sources(lockfile, read_lock(lockfile))
    except EnvkitError:
        return None


def lock_command(request: LockRequest, as_json: bool, quiet: bool, warn: Callable[[str], None]) -> Output:
    """`envkit lock` (or `lock --check`): what it prints last; warnings and notes go to `warn` as they come."""
    spec, options, warnings = prepare_lock(request)
    for warning in warnings:
        warn(f"warning: {warning}")
    if request.check:
        return check_output(spec, options, as_json, lambda text: warn(f"note: {text}"))
    for warning in removed_variant_warnings(spec, options):
        warn(f"warning: {warning}")
    return lock_output(run_lock(spec, options, quiet, warn), as_json)


def removed_variant_warnings(spec: EnvSpec, options: LockOptions) -> list[str]:
    """What `envkit lock` says of the locks beside its own of variants the spec no longer declares: it leaves them
    (they are the user's files), and a pipeline baking from one bakes what no spec makes any more."""
    from conda_envkit.variant_locks import removed_variant_locks, unread_candidates_note

    search = removed_variant_locks(options.lock_path, {v.name for v in spec.variants})
    files = spec.files_named
    warnings = [
        f"{lock.path} is the lock of variant {lock.variant}, which {files} no longer declares: delete it (`envkit lock` leaves "
        f"it, and `envkit lock --check` calls it stale), or add {lock.variant} back under `envkit.variants`"
        for lock in search.found
    ]
    if search.unread:
        warnings.append(unread_candidates_note(options.lock_path, search.unread))
    return warnings


def _locked_platforms(lockfile: Path, check: bool) -> list[str]:
    from conda_envkit.lockfile import read_lockfile

    try:
        return list(read_lockfile(lockfile).metadata.platforms) if lockfile.is_file() else []
    except EnvkitError as exc:
        if check:
            return []  # --check reports the unreadable lock itself
        # Locking linux-64 alone (the default) would drop the platforms this lock holds without a word.
        also = "the spec names no platforms, so they come from this lock: fix it, or pass -p"
        exc.hint = f"{exc.hint}; {also}" if exc.hint else also  # (the error keeps its kind: --json reports it)
        raise


def _flag_warnings(platforms: tuple[str, ...], cuda: str | None, blas: tuple[tuple[str, Blas], ...]) -> list[str]:
    """Flags that change nothing for the platforms being locked."""
    from conda_envkit.platforms import CUDA_PLATFORMS

    out = []
    if cuda is not None and not any(p in CUDA_PLATFORMS for p in platforms):
        out.append(f"--cuda {cuda} has no effect: none of {', '.join(platforms)} has CUDA (only {', '.join(sorted(CUDA_PLATFORMS))})")
    for platform, _ in blas:
        if platform != "*" and platform not in platforms:
            out.append(f"--blas {platform}=...: {platform} is not locked ({', '.join(platforms)}), so it has no effect")
    return out


def _cuda_key_warnings(spec: EnvSpec) -> list[str]:
    """`cuda:` keys of the spec that change nothing, as --cuda on platforms without CUDA is said to: the spec's, on
    a spec that locks no CUDA platform, and a variant's own, on a variant that locks none."""
    from conda_envkit.platforms import CUDA_PLATFORMS

    files = spec.files_named
    out = []
    if spec.cuda is not None and not any(p in CUDA_PLATFORMS for p in spec.platforms):
        out.append(f"`envkit.cuda` {spec.cuda} in {files} has no effect: none of {', '.join(spec.platforms)} has CUDA")
    for variant in spec.variants:
        platforms = [p for p in spec.platforms if not variant.platforms or p in variant.platforms]
        if not variant.inherits_cuda and variant.cuda is not None and platforms and not any(p in CUDA_PLATFORMS for p in platforms):
            out.append(
                f"`envkit.variants.{variant.name}.cuda` {variant.cuda} in {files} has no effect: none of its platforms "
                f"({', '.join(platforms)}) has CUDA"
            )
    return out


def run_lock(spec: EnvSpec, options: LockOptions, quiet: bool, warn: Callable[[str], None]) -> list[LockOutcome]:
    """Solve and write the locks; `warn(text)` gets a CUDA assumption no build honours."""
    from conda_envkit.cache import repodata_cache_dir
    from conda_envkit.channels import channel_secrets, discard_failed_repodata, forget_credentials, make_gateway
    from conda_envkit.locking import lock_environment
    from conda_envkit.platforms import Blas
    from conda_envkit.progress import counted, progress_for
    from conda_envkit.repodata_guard import RepodataGuard, max_repodata_bytes
    from conda_envkit.solve import ChannelReadError

    reporter = progress_for(quiet)

    def progress(solved: SolvedPlatform) -> None:
        reporter.advance("solve", detail=f"{solved.target.label}: {counted(len(solved.records), 'package')} in {solved.seconds:.2f}s")
        for text in solved.notes:
            warn(f"warning: {text}")
        if solved.target.cuda and not solved.cuda_packages:
            asked = [d.name for d in solved.target.dependencies if d.name in _CUDA_BUILT]
            example = f"{asked[0]}=*=cuda*" if asked else "NAME=*=cuda*"
            warn(
                f"warning: {solved.target.label}: a CUDA {solved.target.cuda} driver assumed, but no CUDA build was chosen: the "
                "lock is CPU-only there (the newest versions the spec allows may be built for CPU only, no CUDA build may run "
                f"on that driver, or the spec pins CPU builds); ask for a CUDA build to get one (`{example}`), or its error says why not"
            )
        cpu_builds = _cpu_builds(solved)
        if solved.target.cuda and solved.cuda_packages and cpu_builds:
            # (the warning above is for a lock with no CUDA build at all: one CUDA package hid a CPU pytorch)
            warn(
                f"warning: {solved.target.label}: a CUDA {solved.target.cuda} driver assumed, but {', '.join(cpu_builds)} "
                f"{'is a CPU build' if len(cpu_builds) == 1 else 'are CPU builds'} beside the CUDA ones; ask for a CUDA build "
                f"(`{cpu_builds[0].split()[0]}=*=cuda*`) if it should use the GPU, or its error says why not"
            )
        mkl_users = _mkl_users(solved)
        if mkl_users:
            pin = solved.target.blas.value if solved.target.blas else ""
            one = len(mkl_users) == 1
            warn(
                f"warning: {solved.target.label}: BLAS {pin} asked for, but {', '.join(mkl_users)} depend{'s' if one else ''} on mkl"
                f" itself (not through libblas): the lock holds MKL as well, and {'it uses' if one else 'they use'} it whatever"
                " libblas is; pin builds that link libblas (e.g. a newer build), or ask for mkl"
            )
        if solved.chosen_blas == Blas.NETLIB and solved.target.blas != Blas.NETLIB:
            p = solved.target.platform
            warn(
                f"warning: {solved.target.label}: the solver chose the reference (netlib) BLAS, the slowest, which nothing asked for; "
                f"ask for a fast one with --blas {p}=openblas (or envkit: {{blas: ...}} in the environment file), or for netlib on purpose"
            )

    guard = RepodataGuard(repodata_cache_dir(), max_repodata_bytes())
    reporter.start("solve", unit="platforms")
    started = time.time_ns()
    try:
        gateway = make_gateway(options.settings, guard.cache_dir)
        outcomes = lock_environment(spec, options, gateway, progress, guard, lambda text: warn(f"note: {text}"))
    except ChannelReadError as exc:
        discard_failed_repodata(repodata_cache_dir(), exc.urls, started)  # no half-downloaded repodata kept
        raise
    finally:
        forget_credentials(repodata_cache_dir(), channel_secrets(tuple(spec.channels), options.settings))
    solves = sum(len(o.solved) for o in outcomes)
    variants = f" in {len(outcomes)} variants ({solves} solves)" if len(outcomes) > 1 else ""
    # (the spec's platforms, but those of the variants not locked: --variant, or a variant's --lockfile)
    solved = {s.target.platform for o in outcomes for s in o.solved}
    platforms = [p for p in spec.platforms if p in solved]
    reporter.done("solve", f"{counted(len(platforms), 'platform')} solved{variants}" + (f" ({', '.join(platforms)})" if platforms else ""))
    if not outcomes:
        warn(f"warning: nothing locked: {_nothing_selected(spec, options)}")
    return outcomes


def _nothing_selected(spec: EnvSpec, options: LockOptions) -> str:
    """Why a `lock` or `lock --check` of some variants only (--variant, a variant's --lockfile) has no platform to do."""
    from conda_envkit.lockmodel import DEFAULT_VARIANT
    from conda_envkit.variant_locks import variant_path

    files = ", ".join(str(variant_path(options.lock_path, None if v == DEFAULT_VARIANT else v)) for v in options.variants)
    its = "its" if len(options.variants) == 1 else "their"
    return f"-p {' -p '.join(spec.platforms)} names none of the platforms of {files}: -p one of {its} platforms, or drop -p"


def lock_output(outcomes: list[LockOutcome], as_json: bool) -> Output:
    """What `envkit lock` prints about the locks it wrote."""
    output = Output()
    if as_json:
        import json  # only for --json: every command module stays cheap to import

        output.out(json.dumps([_outcome_json(o) for o in outcomes], indent=2))
        return output
    for o in outcomes:
        state = "wrote" if o.written else "unchanged"
        output.out(f"{state} {o.path}  lock hash {o.lock_hash}")
        if o.kept_platforms:
            output.out(f"  kept as locked before (not named by -p): {', '.join(o.kept_platforms)}")
        for s in o.solved:
            p = s.target.platform
            blas = s.chosen_blas.value if s.chosen_blas else "none"
            pip = o.pip_packages.get(p, 0)
            pip_text = f" + {pip} pip" if pip else ""
            output.out(f"  {p:<14} {len(s.records):>4} packages{pip_text}  {_cuda_summary(s)}  blas {blas}  {o.platform_hashes[p].short}")
    return output


def _cpu_builds(solved: SolvedPlatform) -> list[str]:
    """`name version build` of the records whose build says it is a CPU build (`cpu_mkl_py312...`, `py3.11_cpu_0`)."""
    import re

    return [f"{r.name.normalized} {r.version} {r.build}" for r in solved.records if re.search(r"(^|_)cpu(_|$)", str(r.build))]


def _mkl_users(solved: SolvedPlatform) -> list[str]:
    """With a BLAS other than MKL pinned: the packages of the solution that depend on `mkl` itself."""
    from conda_envkit.platforms import Blas

    if solved.target.blas in (None, Blas.ANY, Blas.MKL):
        return []
    return sorted(
        f"{r.name.normalized} {r.version} {r.build}" for r in solved.records if any(str(d).split()[0] == "mkl" for d in r.depends)
    )


# Packages with CUDA and CPU builds side by side, named in the hint when the spec asks for one and got a CPU build.
_CUDA_BUILT = ("pytorch", "tensorflow", "jaxlib", "cupy", "onnxruntime", "faiss", "xgboost", "lightgbm", "mxnet", "paddlepaddle")


def _cuda_summary(solved: SolvedPlatform) -> str:
    """`cpu`, or the driver assumed and the cuda-version chosen (and whether it relies on minor-version compatibility)."""
    driver = solved.target.cuda
    if not driver:
        return "cpu"
    if not solved.cuda_packages:
        return f"cpu (cuda driver {driver} assumed; no CUDA build chosen)"
    chosen = solved.chosen_cuda_version
    compat = ""
    if chosen and _version_key(chosen) > _version_key(driver):
        compat = ", newer than the driver: runs by CUDA minor-version compatibility"
    return f"cuda driver {driver} (cuda-version {chosen or 'none'}{compat})"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".") if x.isdigit())


def _outcome_json(o: LockOutcome) -> dict[str, Any]:
    return {
        "lockfile": str(o.path),
        "variant": o.variant,
        "written": o.written,
        "lock_hash": str(o.lock_hash),
        "platforms": {
            s.target.platform: {
                "lock_hash": str(o.platform_hashes[s.target.platform]),
                "packages": len(s.records),
                "pip_packages": o.pip_packages.get(s.target.platform, 0),
                "cuda": s.target.cuda,
                "cuda_driver": s.target.cuda,
                "cuda_version": s.chosen_cuda_version,
                "cuda_minor_version_compat": bool(
                    s.target.cuda and s.chosen_cuda_version and _version_key(s.chosen_cuda_version) > _version_key(s.target.cuda)
                ),
                "blas": s.chosen_blas.value if s.chosen_blas else None,
                "seconds": round(s.seconds, 3),
            }
            for s in o.solved
        },
        # The lock's platforms kept as they were (-p named others): in lock_hash too, not solved by this run.
        "kept_platforms": list(o.kept_platforms),
    }


def check_output(spec: EnvSpec, options: LockOptions, as_json: bool, note: Callable[[str], None] = lambda _text: None) -> Output:
    """`envkit lock --check`: fresh or stale per lock and platform (status 1 if any is stale); `note` gets what the
    search for locks of removed variants left unread."""
    from conda_envkit.freshness import check_locks

    results: list[PlatformFreshness] = check_locks(spec, options, note)
    output = Output()
    stale = [r for r in results if not r.fresh]
    if not results and options.variants:
        note(f"nothing checked: {_nothing_selected(spec, options)}")
    if as_json:
        import json

        rows = [
            {
                "lockfile": r.path,
                "variant": r.variant,
                "platform": r.platform,
                "fresh": r.fresh,
                "reasons": list(r.reasons),
                "assumptions": list(r.notes),
            }
            for r in results
        ]
        output.out(json.dumps(rows, indent=2))
    else:
        for r in results:
            if r.fresh:
                changed = r.hash_matched is False
                output.out(f"fresh  {r.path} {r.platform}" + (" (inputs changed, lock still satisfies them)" if changed else ""))
            else:
                output.err(f"STALE  {r.path} {r.platform}:")
                for reason in r.reasons:
                    output.err(f"         {reason}")
            for assumed in r.notes:
                output.err(f"         note: {assumed}")
        if stale:
            output.err(f"hint: {_stale_hint(stale)}")
    output.status = EXIT_STALE if stale else 0
    return output


def _stale_hint(stale: list[PlatformFreshness]) -> str:
    """What brings stale locks up to date: `lock --update NAMES` when only spec dependencies changed (the other
    packages keep their builds), else a full `lock` (which solves again: other packages may move too)."""
    import shlex

    from conda_envkit.lockmodel import DEFAULT_VARIANT

    removed = list(dict.fromkeys(r.path for r in stale if r.variant_removed))  # (`envkit lock` does not remove them)
    delete = f"delete {', '.join(removed)} (no variant of the spec makes {'them' if len(removed) > 1 else 'it'} any more)"
    relock = [r for r in stale if not r.variant_removed]
    if not relock:
        return delete
    names = list(dict.fromkeys(n for r in relock for n in r.update))
    if all(r.unlocked for r in relock):
        # (a plain `envkit lock` would solve the existing locks again too, and may move their packages)
        variants = " ".join(f"--variant {shlex.quote(r.variant or DEFAULT_VARIANT)}" for r in _unique_files(relock))
        files = ", ".join(r.path for r in _unique_files(relock))
        hint = f"run `envkit lock {variants}` to write {files} alone (the other locks stay as they are)"
    elif all(r.new_platform for r in relock):
        platforms = list(dict.fromkeys(r.platform for r in relock))
        flags = " ".join(f"-p {shlex.quote(p)}" for p in platforms)
        hint = f"run `envkit lock {flags}` to add {', '.join(platforms)} alone (the locked platforms stay as they are)"
    elif names and all(r.update for r in relock):
        update = " ".join(f"--update {shlex.quote(n)}" for n in names)
        hint = (
            f"run `envkit lock {update}` to move only what the spec changed (every other package keeps its build); "
            "`envkit lock` solves everything again, and other packages may move to newer builds"
        )
    else:
        hint = "run `envkit lock` to update the lock (it solves again, under what the lock records for flags not given)"
    return f"{delete}; {hint}" if removed else hint


def _unique_files(results: list[PlatformFreshness]) -> list[PlatformFreshness]:
    """One result per lock file, in order."""
    return list({r.path: r for r in results}.values())


def hash_output(lockfile: Path, platform: str | None, short: bool, as_json: bool) -> Output:
    """`envkit hash`: the lock hash, whole and per platform."""
    from conda_envkit.lockfile import lock_hash, platform_lock_hash, read_lockfile

    lf = read_lockfile(lockfile)
    output = Output()
    if platform is not None:
        value = platform_lock_hash(lf, platform)
        output.out(value.short if short else str(value))
        return output
    whole = lock_hash(lf)
    per = {p: platform_lock_hash(lf, p) for p in sorted(lf.metadata.platforms)}
    if as_json:
        import json

        output.out(
            json.dumps({"lockfile": str(lockfile), "lock_hash": str(whole), "platforms": {p: str(h) for p, h in per.items()}}, indent=2)
        )
        return output
    output.out(whole.short if short else f"{whole}  {lockfile}")
    if not short:
        for p, h in per.items():
            output.out(f"{h}  {p}")
    return output


def render_output(lockfile: Path, platform: str | None, kind: str, output_path: Path | None, name: str | None, hash_kind: str) -> Output:
    """`envkit render`: one platform (given, else the lock's only one, else this machine's) as an @EXPLICIT file
    or a pinned environment.yml."""
    from conda_envkit.lockfile import read_lockfile, render_environment_yaml, render_explicit, write_if_changed
    from conda_envkit.platforms import PlatformError, default_platform, host_platform

    lf = read_lockfile(lockfile)
    if platform is None:
        locked = list(lf.metadata.platforms)
        platform = default_platform(locked)
        if platform is None:
            message = f"{lockfile} has {', '.join(locked)}, not this machine's {host_platform()}"
            raise PlatformError(message, hint="pass -p with one of those")
    text = render_explicit(lf, platform, hash_kind) if kind == "explicit" else render_environment_yaml(lf, platform, name)
    output = Output()
    if output_path is None:
        output.out(text, nl=False)
    else:
        write_if_changed(output_path, text)
        output.err(f"wrote {output_path}")
    return output
