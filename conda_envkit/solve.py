"""Solve one `EnvSpec` for one platform (and variant) with py-rattler."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import rattler
from rattler import BuildString, GenericVirtualPackage, MatchSpec, PackageName, RepoDataRecord, Version
from rattler.exceptions import GatewayError, SolverError

from conda_envkit.channels import ResolvedChannel
from conda_envkit.errors import EnvkitError
from conda_envkit.network import TIMEOUT_ENV_VAR, network_timeout, size_text
from conda_envkit.pins import AddedKind, AddedSpec, PinOrigin, PinSource, added_specs_hint, blas_flag
from conda_envkit.platforms import (
    CUDA_PLATFORMS,
    Blas,
    VirtualPackage,
    blas_constraint,
    blas_of_build,
    check_blas,
    selector_for,
)
from conda_envkit.repodata_guard import REPODATA_CAP_ENV_VAR, RepodataGuard
from conda_envkit.spec import Dependency

if TYPE_CHECKING:
    from conda_envkit.pip_lock import PipInputs

# Packages whose presence means the environment was built for CUDA.
_CUDA_NAMES = frozenset({"cudatoolkit", "pytorch-cuda", "cuda-version", "cudnn", "nccl"})
_CUDA_BUILD = re.compile(r"(^|_)cuda\d")


class SolveError(EnvkitError):
    """A platform whose spec has no solution, or a solution that breaks a rule."""


class MissingPackage(SolveError):
    """A requested package the channels do not have for the platform at all (`name`, its `source` line)."""

    def __init__(self, message: str, name: str, platform: str, source: str | None) -> None:
        super().__init__(message, hint=_missing_hint(name, set(), {platform}, source))
        self.name, self.platform, self.source = name, platform, source


def _missing_hint(name: str, having: set[str], lacking: set[str], source: str | None) -> str:
    """What to do about a package that `lacking` platforms' channels do not have (and `having` platforms' do)."""
    where = f" ({source})" if source else ""
    selector = selector_for(having, having | lacking) if having else None
    plural = "s" if len(lacking) > 1 else ""
    only_there = f"to lock it only where it exists, add `# [{selector}]` to its line{where}, " if selector else ""
    spelling = "check the name's spelling (a PyPI-only package goes under `- pip:`)"
    return f"{spelling}; {only_there}add a channel that has it, or drop the platform{plural}"


class AddedSpecConflict(SolveError):
    """An unsatisfiable solve whose explanation names a spec envkit added (`added`: the BLAS pin, the CUDA driver).

    The hint says first how to change those; `rest_hint` is the advice about the user's own specs, kept apart so
    that several platforms' errors are merged with the added specs' advice said once for all of them.
    """

    def __init__(self, message: str, added: tuple[AddedSpec, ...], rest_hint: str) -> None:
        super().__init__(message, hint="; ".join(part for part in (added_specs_hint(added), rest_hint) if part))
        self.added = added
        self.rest_hint = rest_hint


class ChannelReadError(SolveError):
    """A channel whose repodata could not be fetched or parsed.

    `waited`: the request only shared a download another request started, which failed or was
    cancelled (rattler's "a coalesced request failed"): the other request has the cause.
    """

    def __init__(self, message: str, hint: str, urls: tuple[str, ...], waited: bool = False) -> None:
        super().__init__(message, hint)
        self.urls = urls
        self.waited = waited


@dataclass(frozen=True)
class SolveTarget:
    """One solve: a platform, the variant it belongs to, and what it assumes."""

    platform: str
    variant: str | None
    dependencies: tuple[Dependency, ...]
    virtual_packages: tuple[VirtualPackage, ...]
    cuda: str | None
    blas: Blas | None
    # The platform's `pip:` section, parsed; resolved after the conda solve (pip_lock.py).
    pip: PipInputs | None = None
    # Who set `blas` and `cuda` (a flag, an `envkit:` key, the lock), named when one of them makes the solve fail.
    blas_origin: PinOrigin | None = field(default=None, compare=False)
    cuda_origin: PinOrigin | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return f"{self.platform} ({self.variant})" if self.variant else self.platform

    def constraints(self) -> tuple[str, ...]:
        """Match specs that bound the solve without adding packages."""
        out = []
        if self.blas not in (None, Blas.ANY):
            out.append(blas_constraint(self.blas))
        # `cuda` is the driver (`__cuda`), as conda-lock's --with-cuda: packages' own
        # `__cuda >=` depends decide which toolkits it runs; a toolkit cap is a spec
        # the user writes (`cuda-version=12.4`).
        return tuple(out)


@dataclass(frozen=True)
class SolvedPlatform:
    """The records a target resolved to, and what the solution chose for CUDA and BLAS."""

    target: SolveTarget
    records: tuple[RepoDataRecord, ...]
    seconds: float
    notes: tuple[str, ...] = ()  # what the user should know of how it was solved (an --update that moved more)

    @property
    def chosen_blas(self) -> Blas | None:
        for record in self.records:
            if record.name.normalized == "libblas":
                return blas_of_build(str(record.build))
        return None

    @property
    def cuda_packages(self) -> list[str]:
        """`name version build` of every CUDA build in the solution (`cuda-version` alone, a constraint the spec may
        ask for to cap the toolkit, is none: a CPU pytorch beside it is a CPU-only lock)."""
        return [c for c in _cuda_records(list(self.records)) if not c.startswith("cuda-version ")]

    @property
    def chosen_cuda_version(self) -> str | None:
        for record in self.records:
            if record.name.normalized == "cuda-version":
                return str(record.version)
        return None


def _cuda_records(records: list[RepoDataRecord]) -> list[str]:
    # Records that depend on `__cuda` need no scan: without --cuda the solve assumes no
    # `__cuda`, so the solver cannot pick them; with it, they are wanted.
    found = []
    for record in records:
        name = record.name.normalized
        build = str(record.build)
        if name in _CUDA_NAMES or name.startswith("cuda-") or _CUDA_BUILD.search(build):
            found.append(f"{name} {record.version} {build}")
    return found


def _missing_package(message: str, target: SolveTarget) -> tuple[str, str] | None:
    """(name, constraint) when the solver's root cause is a *requested* package with no candidates.

    Only the first line of rattler's explanation is its root; a "no candidates" deeper in the
    tree is a consequence of another conflict, and blaming that package misleads.
    """
    first = message.splitlines()[0] if message else ""
    match = re.search(r"No candidates (?:were )?found for (\S+)(.*?)\.?$", first)
    if match is None or not any(d.name == match.group(1) for d in target.dependencies):
        return None
    return match.group(1), match.group(2).strip()


def _involved(target: SolveTarget, message: str) -> list[Dependency]:
    """The requested specs the solver's explanation (its unsat core) names."""
    words = set(re.findall(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", message))
    return [d for d in target.dependencies if d.name in words]


def _fold_repeats(message: str) -> str:
    # rattler repeats an identical line once per candidate; say it once with a count.
    out: list[str] = []
    counts: list[int] = []
    for line in message.splitlines():
        bare = line.lstrip("│├└─ ")
        if out and out[-1].lstrip("│├└─ ") == bare:
            counts[-1] += 1
            continue
        out.append(line)
        counts.append(1)
    return "\n".join(f"{line} (x{n})" if n > 1 else line for line, n in zip(out, counts, strict=True))


async def _versions_of(name: str, target: SolveTarget, channels: tuple[ResolvedChannel, ...], gateway: rattler.Gateway) -> list[str]:
    """The versions of `name` the channels have for the target (from the repodata the solve loaded), newest first."""
    try:
        found = await asyncio.wait_for(
            gateway.query([c.url for c in channels], [target.platform, "noarch"], [name], recursive=False),  # type: ignore[list-item]
            network_timeout(),
        )
    except (TimeoutError, GatewayError, ValueError):
        return []
    versions = {r.version for per_channel in found for r in per_channel if r.name.normalized == name}
    return [str(v) for v in sorted(versions, reverse=True)]


def _explain(
    target: SolveTarget, channels: tuple[ResolvedChannel, ...], message: str, missing: tuple[str, str] | None, versions: list[str]
) -> SolveError:
    """The solve's failure for a user: `message` is rattler's explanation (folded), `missing` its requested
    package with no candidates (`_missing_package`), `versions` those the channels have of it."""
    names = ", ".join(c.written for c in channels)
    if missing and missing[1] not in ("", "*") and versions:
        # A version the channels do not have: no clash between specs, so say which versions there are.
        source = next((d.source for d in target.dependencies if d.name == missing[0]), None)
        where = f" (requested at {source})" if source else ""
        shown = ", ".join(versions[:8]) + (f" and {len(versions) - 8} older" if len(versions) > 8 else "")
        return SolveError(
            f"{target.label}: no {missing[0]} matching {missing[1]}{where} for {target.platform} in {names} (it has {shown})\n{message}",
            hint="ask for a version the channel has, or add a channel that has this one",
        )
    if missing and (missing[1] in ("", "*") or not versions):  # (pinned or not: the channels have none of it there)
        source = next((d.source for d in target.dependencies if d.name == missing[0]), None)
        where = f" (requested at {source})" if source else ""
        return MissingPackage(
            f"{target.label}: package {missing[0]!r}{where} is not available for {target.platform} in {names}\n{message}",
            missing[0],
            target.platform,
            source,
        )
    # Name only the requested specs in the solver's explanation, and the specs envkit added that it names (the BLAS
    # pin, the CUDA driver): the others are not the cause.
    involved = _involved(target, message)
    added = _added_specs(target, message)
    named = [*(a.named for a in added), *(f"{d.spec} ({d.source})" for d in involved)]
    specs = "; ".join(named) or "none named directly (see the explanation)"
    assumed = " ".join(str(v) for v in target.virtual_packages)
    hint = "relax one of the specs named above (the explanation says which versions clash)"
    if re.search(r"__cuda\b", message) and target.cuda is None and target.variant is not None:
        hint += f"; `__cuda` in the explanation: {_cpu_variant_hint(target.variant, involved)}"
    elif re.search(r"__cuda\b", message) and target.cuda is None:
        hint += "; `__cuda` in the explanation: pass --cuda DRIVER_VERSION to lock CUDA builds"
    elif re.search(r"__glibc\b|__osx\b", message):
        hint += "; `__glibc`/`__osx` in the explanation: --virtual-package-spec changes the assumed system"
    cause = " and ".join(a.cause for a in added)
    head = f"{cause} cannot be satisfied together with the specs" if added else "the specs cannot be satisfied together"
    constraints = [c for c in target.constraints() if c not in {a.spec for a in added}]  # (those not named above)
    text = f"{target.label}: {head}\n{message}\n  conflicting specs: {specs}\n  assumed: {assumed}" + (
        f"\n  constraints: {', '.join(constraints)}" if constraints else ""
    )
    return AddedSpecConflict(text, added, hint) if added else SolveError(text, hint=hint)


def _cpu_variant_hint(variant: str, asked: list[Dependency]) -> str:
    """What to do about a variant without CUDA whose solve wants CUDA builds of `asked` (the requested specs involved):
    pin CPU builds in the variant's own `dependencies:`, or move a CUDA-only package out of the shared list (a
    variant replaces shared lines, it cannot drop one)."""
    key = f"envkit.variants.{variant}.dependencies"
    cuda_only = [d for d in asked if d.name in _CUDA_NAMES or d.name.startswith("cuda-")]
    pinnable = [d for d in asked if d not in cuda_only]
    parts = []
    if pinnable or not cuda_only:
        example = _cpu_pin(pinnable[0]) if pinnable else "pytorch=*=*cpu*"
        parts.append(
            f"variant {variant!r} has no CUDA: pin CPU builds in its own dependencies (`{key}: [{example}]`; a variant's"
            " line replaces the shared line for that package in this variant alone)"
        )
    if cuda_only:
        named = ", ".join(f"{d.name} ({d.source})" for d in cuda_only)
        one = len(cuda_only) == 1
        name = pinnable[0].name if pinnable else "pytorch"
        parts.append(
            f"{named} {'is a CUDA package' if one else 'are CUDA packages'} and a variant cannot drop a shared line: write"
            f" {'it' if one else 'them'} only in the `dependencies:` of the variants that want CUDA, or ask for CUDA builds"
            f" on a line this variant can replace (`{name}=*=*cuda*` in the shared list, `{name}=*=*cpu*` in this variant's)"
        )
    return "; ".join(parts) + ", or give the variant `cuda:`"


def _cpu_pin(dep: Dependency) -> str:
    """`dep` as written, with a CPU build asked for (`pytorch=2.3` -> `pytorch 2.3.* *cpu*`)."""
    version = MatchSpec(dep.match_spec, strict=False).version
    channel = dep.spec.split("::", 1)[0] + "::" if "::" in dep.spec else ""
    return f"{channel}{dep.name} {version} *cpu*" if str(version or "*") != "*" else f"{channel}{dep.name}=*=*cpu*"


def _added_specs(target: SolveTarget, message: str) -> tuple[AddedSpec, ...]:
    """The specs envkit added to the solve (the BLAS pin, the CUDA driver) that the solver's explanation names."""
    added = []
    if target.blas not in (None, Blas.ANY) and blas_constraint(target.blas) in message:
        p, blas = target.platform, target.blas
        origin = target.blas_origin or PinOrigin(PinSource.FLAG, blas_flag(p, blas), p)
        added.append(AddedSpec(AddedKind.BLAS, p, blas.value, blas_constraint(blas), origin))
    if target.cuda is not None and re.search(r"__cuda\b", message):
        origin = target.cuda_origin or PinOrigin(PinSource.FLAG, f"--cuda {target.cuda}")
        added.append(AddedSpec(AddedKind.CUDA, target.platform, target.cuda, f"__cuda={target.cuda}", origin))
    return tuple(added)


def bind_channel(dep: Dependency, channels: tuple[ResolvedChannel, ...]) -> MatchSpec:
    """The match spec to solve: `chan::name ...` points at the URL that `chan` resolved to.

    rattler would otherwise resolve `chan` against its own default alias, ignoring
    --channel-alias, mirrors, local paths and credentials.
    """
    if "::" not in dep.spec:
        return MatchSpec(dep.match_spec, strict=False)
    written, rest = dep.spec.split("::", 1)
    for channel in channels:
        if written.rstrip("/") in (channel.written.rstrip("/"), channel.public_url, channel.url) or channel.public_url.endswith(
            "/" + written.strip("/")
        ):
            return MatchSpec(f"{channel.url}::{rest}", strict=False)
    raise SolveError(
        f"{dep.source}: {dep.spec!r} names channel {written!r}, which is not in `channels:`",
        hint=f"add {written} to `channels:` (in priority order), or drop the `{written}::` prefix",
    )


def _virtual(packages: tuple[VirtualPackage, ...]) -> list[GenericVirtualPackage]:
    return [GenericVirtualPackage(PackageName(v.name), Version(v.version), BuildString(v.build)) for v in packages]


def _channel_read_error(target: SolveTarget, channels: tuple[ResolvedChannel, ...], exc: GatewayError) -> ChannelReadError:
    # rattler's text is a chain of "Caused by:" lines; the first and the root cause say it.
    lines = [line.removeprefix("Caused by:").strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = lines[0] + (f" ({lines[-1]})" if len(lines) > 1 else "")
    urls = ", ".join(c.public_url for c in channels)
    return ChannelReadError(
        f"{target.label}: cannot read a channel ({urls}): {reason}",
        hint="check the channel names/URLs in the spec, --channel-alias and --mirror, and your network or credentials"
        f" (each request has ${TIMEOUT_ENV_VAR} seconds)",
        urls=tuple(c.url for c in channels),
        waited=_waited_on_another(exc),
    )


def _waited_on_another(exc: BaseException | None) -> bool:
    """Whether `exc` is py-rattler's error for a request that shared another request's failed download."""
    return isinstance(exc, GatewayError) and "a coalesced request failed" in str(exc)


# A name no channel has: querying it loads a subdir's repodata (or a sharded channel's index)
# without turning every package name in it into a Python object, as `Gateway.names` would.
_PROBE = "envkit-repodata-probe-no-such-package"


async def fetch_repodata(target: SolveTarget, channels: tuple[ResolvedChannel, ...], gateway: rattler.Gateway) -> None:
    """Load every channel's repodata for the target's subdirs into `gateway`, each within the deadline.

    py-rattler bounds each request by the deadline, but retries one that timed out, and
    caps nothing by size: a channel that sends without end would hold a lock for four
    deadlines. Here each (channel, subdir) gets one deadline as a whole, retries included;
    a solve running alongside shares these loads (the gateway downloads a subdir once). For
    a sharded channel this fetches the shard index; its shards are fetched by the solve,
    each request within the deadline.
    """
    seconds = network_timeout()
    pending_for = {
        asyncio.ensure_future(gateway.query([channel.url], [subdir], [_PROBE], recursive=False)): (channel, subdir)  # type: ignore[list-item]  # any subdir string is valid at runtime
        for channel in channels
        for subdir in (target.platform, "noarch")
    }
    done, pending = await asyncio.wait(pending_for, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()  # drops py-rattler's download and its temporary file
    await asyncio.gather(*pending, return_exceptions=True)
    # A request that waited on another's download has only "a coalesced request failed": report the other's cause.
    for task in sorted(done, key=lambda task: _waited_on_another(task.exception())):
        exc = task.exception()
        if isinstance(exc, GatewayError):
            raise _channel_read_error(target, channels, exc)
        if exc is not None:
            raise exc
    if pending:
        stuck = sorted({pending_for[task] for task in pending}, key=lambda cs: (cs[0].public_url, cs[1]))
        where = ", ".join(f"{channel.public_url.rstrip('/')}/{subdir}/" for channel, subdir in stuck)
        urls = ", ".join(c.public_url for c in channels)
        raise ChannelReadError(
            f"{target.label}: cannot read a channel ({urls}): no complete repodata from {where} within {seconds:g} s",
            hint="the channel is slow, stuck or sends without end; retry, or raise the deadline"
            f" (--timeout or {TIMEOUT_ENV_VAR}, now {seconds:g} s)",
            urls=tuple(dict.fromkeys(channel.url for channel, _subdir in stuck)),
        )


def _repodata_overrun(channels: tuple[ResolvedChannel, ...], guard: RepodataGuard, what: str) -> ChannelReadError:
    urls = ", ".join(c.public_url for c in channels)
    return ChannelReadError(
        f"cannot read the channels ({urls}): {what}",
        hint=f"a channel may be sending without end: check it; if its repodata really is that big, raise {REPODATA_CAP_ENV_VAR}"
        f" (now {size_text(guard.max_bytes)})",
        urls=tuple(c.url for c in channels),
    )


async def locked_records(
    target: SolveTarget, channels: tuple[ResolvedChannel, ...], gateway: rattler.Gateway, keep: dict[str, str]
) -> list[RepoDataRecord]:
    """The channel records of packages to keep at their locked build (`keep`: name -> sha256).

    Records are matched by sha256, never by parsing build strings (`22_openblas`,
    `4_cp311`), so every build keeps exactly the file it had.
    """
    if not keep:
        return []
    result = await gateway.query([c.url for c in channels], [target.platform, "noarch"], sorted(keep), recursive=False)  # type: ignore[list-item]  # any subdir string is valid at runtime
    found = {}
    for record in (r for per_channel in result for r in per_channel):
        name = record.name.normalized
        if record.sha256 is not None and record.sha256.hex() == keep.get(name):
            found[name] = record
    return [found[name] for name in sorted(found)]


async def solve_target(
    target: SolveTarget,
    channels: tuple[ResolvedChannel, ...],
    gateway: rattler.Gateway,
    keep: dict[str, str] | None = None,
    on_solving: Callable[[], object] | None = None,
    pinned: frozenset[str] = frozenset(),
) -> SolvedPlatform:
    """Solve one target; raise `SolveError` naming the platform and the failing spec.

    `keep` (name -> sha256) prefers those locked builds (rattler's locked packages): the
    solver moves them only where an updated package strictly requires it. Those `pinned`
    (what the updated packages do not depend on) must stay their locked builds, where in
    the solution, in a first solve; if that has no solution, they are only preferred too. `on_solving()`
    is called once the solve's task exists: what it schedules runs after the task's first
    step, which hands the solve to rattler.

    The solve starts alongside `fetch_repodata`, which bounds the repodata loads by the
    deadline: both ask the gateway for the same subdirs, which it downloads once. Waiting
    for the loads before starting the solve would put a round trip through Python's event
    loop between them; a subdir that misses the deadline cancels the solve with it.
    """
    if target.blas is not None:
        check_blas(target.blas, target.platform)
    specs = [bind_channel(d, channels) for d in target.dependencies]
    virtual, constraints = _virtual(target.virtual_packages), list(target.constraints()) or None
    started = time.perf_counter()
    loading = asyncio.ensure_future(fetch_repodata(target, channels, gateway))
    locked: list[RepoDataRecord] = []
    if keep:  # --update: the locked records are an input of the solve, read from the loaded repodata
        await loading
        locked = await locked_records(target, channels, gateway, keep)

    def solve(pin: bool) -> asyncio.Future[list[RepoDataRecord]]:
        # Pinned: each of `pinned` in the solution is its locked build (as conda's freeze-installed first try);
        # else they are only preferred, and move where the update needs it.
        pins = (
            [f"{r.name.normalized}[sha256={r.sha256.hex()}]" for r in locked if r.sha256 is not None and r.name.normalized in pinned]
            if pin
            else []
        )
        return asyncio.ensure_future(
            rattler.solve(
                sources=[c.url for c in channels],
                specs=specs,
                gateway=gateway,
                platforms=[target.platform, "noarch"],  # type: ignore[list-item]  # any subdir string is valid at runtime
                virtual_packages=virtual,
                constraints=[*(constraints or []), *pins] or None,
                channel_priority=rattler.ChannelPriority.Strict,
                locked_packages=locked or None,
            )
        )

    solving = solve(pin=bool(locked and pinned))
    if on_solving is not None:
        on_solving()
    notes: tuple[str, ...] = ()
    try:
        try:
            records = await _solved(loading, solving)
        except SolverError:
            if not (locked and pinned):
                raise
            records = await _solved(loading, solve(pin=False))  # the update needs the packages pinned to move
            notes = (_moved_note(target, locked, pinned, records),)
    except SolverError as exc:
        message = _fold_repeats(str(exc).strip())
        missing = _missing_package(message, target)
        versions = await _versions_of(missing[0], target, channels, gateway) if missing and missing[1] not in ("", "*") else []
        raise _explain(target, channels, message, missing, versions) from None
    except GatewayError as exc:
        raise _channel_read_error(target, channels, exc) from None
    if target.cuda is None:
        cuda = _cuda_records(records)
        if target.platform not in CUDA_PLATFORMS:
            # `cuda-version` only constrains (the way to cap the toolkit, in a file shared with macOS): harmless where
            # there is no CUDA, as conda-lock and pixi have it. Anything else is a CUDA build where none can run.
            cuda = [c for c in cuda if not c.startswith("cuda-version ")]
            if cuda:
                requested = [f"{d.name} ({d.source})" for d in target.dependencies if any(c.startswith(d.name + " ") for c in cuda)]
                raise SolveError(
                    f"{target.label}: the solution contains CUDA packages, and {target.platform} has no CUDA: {', '.join(cuda)}"
                    + (f"; requested as {', '.join(requested)}" if requested else ""),
                    hint=f"lock them only where CUDA exists: add `# [not {target.platform.split('-')[0]}]` to their lines, "
                    "or pin CPU builds",
                )
        elif cuda:
            asked = [d for d in target.dependencies if any(c.startswith(d.name + " ") for c in cuda)]
            raise SolveError(
                f"{target.label}: the solution contains CUDA packages but no CUDA was requested: {', '.join(cuda)}"
                + (f"; requested as {', '.join(f'{d.name} ({d.source})' for d in asked)}" if asked else ""),
                hint=_cpu_variant_hint(target.variant, asked)
                if target.variant is not None
                else "pass --cuda VERSION (or set `envkit: {cuda: ...}`) to lock for a GPU, or pin CPU builds",
            )
    return SolvedPlatform(target, tuple(records), time.perf_counter() - started, notes)


def _moved_note(target: SolveTarget, locked: list[RepoDataRecord], pinned: frozenset[str], records: list[RepoDataRecord]) -> str:
    """What an --update moved besides the named packages and their dependencies, when keeping them had no solution."""
    now = {r.name.normalized: r for r in records}
    moved = [
        f"{r.name.normalized} {r.version} -> {now[r.name.normalized].version}"
        if r.name.normalized in now
        else f"{r.name.normalized} removed"
        for r in locked
        if r.name.normalized in pinned and (r.name.normalized not in now or now[r.name.normalized].sha256 != r.sha256)
    ]
    return f"{target.label}: the update has no solution with every package that does not depend on it kept, so these moved too: " + (
        ", ".join(moved[:12]) + (f" and {len(moved) - 12} more" if len(moved) > 12 else "") if moved else "none in the end"
    )


async def _solved(loading: asyncio.Future[None], solving: asyncio.Future[list[RepoDataRecord]]) -> list[RepoDataRecord]:
    """The solve's records, once the repodata loads that bound it by the deadline are in.

    A load that failed or missed the deadline cancels the solve. One that only shared a download
    another request started (`ChannelReadError.waited`) has no cause of its own: the solve shares
    that download too and ends at once, with the cause (or with records, where it loaded the
    subdir again, within a deadline of its own).
    """
    try:
        await loading
        return await solving
    except ChannelReadError as exc:
        if exc.waited:
            await asyncio.wait([solving], timeout=network_timeout())
            if solving.done():
                return solving.result()
        raise
    finally:
        solving.cancel()  # if still running: drops its downloads, with the loads that missed the deadline
        await asyncio.gather(solving, return_exceptions=True)  # and its error is seen (no "never retrieved" warning)


def _hint_missing_together(errors: list[EnvkitError], platforms: set[str]) -> None:
    """One hint per package the channels lack on some platforms: where it exists, the selector that keeps it
    there (`# [linux]`, `# [not aarch64]`), given with the first platform's error; the others' hints are dropped."""
    lacking: dict[str, list[MissingPackage]] = {}
    for error in errors:
        if isinstance(error, MissingPackage):
            lacking.setdefault(error.name, []).append(error)
    for name, found in lacking.items():
        without = {e.platform for e in found}
        found[0].hint = _missing_hint(name, platforms - without, without, found[0].source)
        for other in found[1:]:
            other.hint = ""


def _merged_hints(errors: list[EnvkitError]) -> str:
    """The hints of several platforms' errors as one, each piece of advice once (platforms that failed alike share
    most of theirs); the advice about the specs envkit added is left to AddedSpecConflict, which says it once for all."""
    parts = (e.rest_hint if isinstance(e, AddedSpecConflict) else e.hint for e in errors)
    return "; ".join(dict.fromkeys(part for hint in parts for part in hint.split("; ") if part))


async def solve_targets(
    targets: list[SolveTarget],
    channels: tuple[ResolvedChannel, ...],
    gateway: rattler.Gateway,
    on_solved: Callable[[SolvedPlatform], None] | None = None,
    keep: Callable[[SolveTarget], dict[str, str]] | None = None,
    meanwhile: Callable[[], object] | None = None,
    guard: RepodataGuard | None = None,
    pin: Callable[[SolveTarget], frozenset[str]] | None = None,
) -> list[SolvedPlatform]:
    """Solve all targets concurrently; the first error wins, reported for its platform.

    `meanwhile()` runs once every solve has been handed to rattler: rattler loads the
    repodata and solves in its own threads, without Python's lock, so Python is free to
    prepare what comes after. `guard` caps the repodata read on the way by size (py-rattler
    caps it only by time).
    """
    handed = 0

    def solving() -> None:
        nonlocal handed
        handed += 1
        if handed == len(targets) and meanwhile is not None:
            # call_soon: after this task's next step, which hands its solve to rattler.
            asyncio.get_running_loop().call_soon(meanwhile)

    async def one(target: SolveTarget) -> SolvedPlatform:
        solved = await solve_target(target, channels, gateway, keep(target) if keep else None, solving, pin(target) if pin else frozenset())
        if on_solved is not None:
            on_solved(solved)
        return solved

    work = asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
    if guard is None:
        results = await work
    else:
        finished, overrun = await guard.run(work)
        if overrun is not None:
            raise _repodata_overrun(channels, guard, overrun.what)
        results = finished or []
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        envkit_errors = [e for e in errors if isinstance(e, EnvkitError)]
        if len(envkit_errors) != len(errors):
            raise next(e for e in errors if not isinstance(e, EnvkitError))
        # A platform that only shared another's failed download has nothing to add to that one's error.
        envkit_errors = [e for e in envkit_errors if not (isinstance(e, ChannelReadError) and e.waited)] or envkit_errors
        _hint_missing_together(envkit_errors, {t.platform for t in targets})
        if len(envkit_errors) == 1:
            raise envkit_errors[0]
        message, hint = "\n".join(e.message for e in envkit_errors), _merged_hints(envkit_errors)
        added = tuple(a for e in envkit_errors if isinstance(e, AddedSpecConflict) for a in e.added)
        raise AddedSpecConflict(message, added, hint) if added else SolveError(message, hint=hint)
    return [r for r in results if isinstance(r, SolvedPlatform)]
