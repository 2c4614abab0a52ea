"""The specs envkit adds to a solve on the user's behalf (the BLAS pin, the CUDA driver), where each came from, and
what an unsatisfiable solve says of them: they are named first, with the flag or key that changes them, since the
user never wrote them as specs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from conda_envkit.platforms import Blas


class PinSource(StrEnum):
    """Who set a BLAS pin or a CUDA driver: a flag, an environment file's `envkit:` key, or the lock's record."""

    FLAG = "flag"
    SPEC = "spec"
    LOCK = "lock"


@dataclass(frozen=True)
class PinOrigin:
    """Where a solve's BLAS pin or CUDA driver came from, named as the user finds it again.

    `written`: `--blas linux-64=blis`, `--cuda 11.8`, `` `envkit.blas` in environment.yml ``,
    `` `envkit.linux-64.blas-requested` in conda-lock.yml ``; `scope`: the platform it was given for, `*` for all.
    """

    source: PinSource
    written: str
    scope: str = "*"


class AddedKind(StrEnum):
    BLAS = "blas"
    CUDA = "cuda"


@dataclass(frozen=True)
class AddedSpec:
    """A spec envkit added to one platform's solve, named by the solver's explanation of why the solve failed."""

    kind: AddedKind
    platform: str
    value: str  # the BLAS (`blis`) or the CUDA driver (`11.8`)
    spec: str  # as the solver saw it: `libblas * *blis`, `__cuda=11.8`
    origin: PinOrigin

    @property
    def named(self) -> str:
        """The spec and who added it, for the error's `conflicting specs:` line."""
        return f"{self.spec} ({self.origin.written})"

    @property
    def cause(self) -> str:
        """`the BLAS pin blis (--blas linux-64=blis)`, `the CUDA driver 11.8 (--cuda 11.8)`."""
        what = "the BLAS pin" if self.kind is AddedKind.BLAS else "the CUDA driver"
        return f"{what} {self.value} ({self.origin.written})"


def blas_flag(scope: str, blas: Blas) -> str:
    """`--blas openblas` for every platform (`scope` `*`), `--blas linux-64=openblas` for one."""
    return f"--blas {blas.value}" if scope == "*" else f"--blas {scope}={blas.value}"


def added_specs_hint(added: Sequence[AddedSpec]) -> str:
    """What to do about the added specs of failed solves, each piece of advice once for all their platforms
    (pieces separated by `; `, as the hints of several platforms' errors are merged)."""
    parts = []
    blas = [a for a in added if a.kind is AddedKind.BLAS]
    if blas:
        parts.append(_blas_advice(blas))
    cuda = [a for a in added if a.kind is AddedKind.CUDA]
    if cuda:
        parts.append(_cuda_advice(cuda))
    return "; ".join(parts)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _blas_advice(pins: Sequence[AddedSpec]) -> str:
    written = _unique(a.origin.written for a in pins)
    subject = f"the BLAS pin ({', '.join(written)}) is" if len(written) == 1 else f"the BLAS pins ({', '.join(written)}) are"
    # Another BLAS: openblas (conda-forge's default, on every platform) unless that is the one that does not fit.
    instead = " ".join(_unique(blas_flag(a.origin.scope, Blas.OPENBLAS if a.value != Blas.OPENBLAS else Blas.ANY) for a in pins))
    ways = []
    if flags := _unique(a.origin.written for a in pins if a.origin.source is PinSource.FLAG):
        ways.append(f"ask for another BLAS (`{instead}`) or drop `{' '.join(flags)}`")
    if keys := _unique(a.origin.written for a in pins if a.origin.source is PinSource.SPEC and not _variant_key(a)):
        ways.append(f"set {' and '.join(keys)} to another BLAS (e.g. openblas) or remove it (`{instead}` overrides it)")
    if own := _unique(a.origin.written for a in pins if _variant_key(a)):  # (no flag changes a variant's own BLAS)
        ways.append(f"set {' and '.join(own)} to another BLAS (e.g. openblas) or remove it")
    if recorded := [a for a in pins if a.origin.source is PinSource.LOCK]:
        cleared = " ".join(_unique(blas_flag(a.origin.scope, Blas.ANY) for a in recorded))
        ways.append(f"ask for another BLAS (`{instead}`) or clear the pin the lock records (`{cleared}`)")
    return f"{subject} part of the conflict: {', or '.join(ways)}"


def _variant_key(added: AddedSpec) -> bool:
    """Whether a variant's own key set it (`envkit.variants.NAME.cuda`/`.blas`): no flag changes those."""
    return added.origin.source is PinSource.SPEC and added.origin.written.startswith("`envkit.variants.")


def _cuda_advice(drivers: Sequence[AddedSpec]) -> str:
    written = _unique(a.origin.written for a in drivers)
    values = " and ".join(_unique(a.value for a in drivers))
    ways = []
    if any(not _variant_key(a) for a in drivers):
        ways.append(
            f"lock for the driver your machines have (`--cuda VERSION`), pin builds that run on {values}, or lock CPU builds (`--no-cuda`)"
        )
    if own := _unique(a.origin.written for a in drivers if _variant_key(a)):  # (--cuda/--no-cuda leave those alone)
        ways.append(f"set {' and '.join(own)} to the driver your machines have, or to none for CPU builds")
    return f"the CUDA driver {values} assumed ({', '.join(written)}) is part of the conflict: {'; or '.join(ways)}"
