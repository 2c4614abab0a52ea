"""What changed between two locks, per platform, with the packages that move numbers flagged.

A platform only one lock has (a variant's lock of fewer platforms, a platform added or dropped) is said once as
such, not as an addition or removal of every one of its packages.

An update of numpy, a BLAS, cuDNN, CUDA, a deep-learning framework or the interpreter can
change a model's results without changing a line of its code: such changes are marked
`numerics` so that they get a model-behaviour check before they ship.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from rattler import Version

from conda_envkit.lockfile import LockFileError, read_lockfile
from conda_envkit.lockmodel import LockedPackage as LockedDependency
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import parse_lock_text
from conda_envkit.output_safety import code_span, markdown_cell
from conda_envkit.progress import counted

DIFF_SCHEMA = "envkit.diff/1"
# Packages whose update can change a model's numbers, by exact name (conda and PyPI names).
# Documented in docs/lock-format.md ("numerics-sensitive packages"); a name not listed here is not flagged.
_CUDA_LIBRARIES = ("cublas", "cufft", "curand", "cusolver", "cusparse", "nvjitlink", "cuda-runtime", "cuda-nvrtc", "cudnn", "nccl")
NUMERICS_PACKAGES = frozenset(
    {
        # interpreter
        "python",
        # BLAS / LAPACK and their providers
        *("blas", "blas-devel", "libblas", "libcblas", "liblapack", "liblapacke", "lapack", "openblas", "libopenblas", "blis"),
        *("mkl", "mkl-devel", "mkl-include", "mkl-service", "intel-openmp", "llvm-openmp", "accelerate", "libflame"),
        # CUDA runtime / toolkit, cuDNN, NCCL, cuTENSOR (conda-forge, defaults and nvidia channel names)
        *("cudatoolkit", "cuda-toolkit", "cuda-runtime", "cuda-cudart", "cuda-nvrtc", "cuda-libraries", "cuda-version", "cuda-nvcc"),
        *("libcublas", "libcufft", "libcurand", "libcusolver", "libcusparse", "libnvjitlink", "cudnn", "libcudnn", "nccl", "libnccl"),
        *("cutensor", "libcutensor"),
        # PyPI wheels of the same libraries (nvidia-cublas-cu12, ...)
        *(f"nvidia-{lib}-cu{major}" for lib in _CUDA_LIBRARIES for major in (11, 12)),
        # array and ML libraries
        *("numpy", "scipy", "scikit-learn", "numba", "cupy", "onnxruntime", "onnxruntime-gpu"),
        *("pytorch", "pytorch-cpu", "pytorch-gpu", "libtorch", "torch", "jax", "jaxlib", "tensorflow", "tensorflow-base"),
        *("tensorflow-cpu", "tensorflow-gpu", "libtensorflow", "libtensorflow_cc"),
    }
)
KINDS = ("added", "removed", "upgraded", "downgraded", "rebuilt", "moved")


@dataclass(frozen=True)
class PackageChange:
    """One package that differs between the locks on one platform."""

    platform: str
    manager: str
    name: str
    kind: str
    old: str | None  # "version build"
    new: str | None
    numerics: bool


@dataclass(frozen=True)
class PlatformInOneLock:
    """A platform only one of the locks has: its packages are not compared, and not listed as changes."""

    platform: str
    only_in: Literal["old", "new"]  # the lock that has it
    packages: int  # how many packages that lock holds for it (conda and pip)


def _label(p: LockedDependency) -> str:
    return f"{p.version} {p.build}" if p.build else p.version


def _kind(old: LockedDependency, new: LockedDependency) -> str | None:
    if old.version != new.version:
        try:
            return "upgraded" if Version(new.version) > Version(old.version) else "downgraded"
        except Exception:  # a pip version rattler cannot parse: order as text
            return "upgraded" if new.version > old.version else "downgraded"
    if old.build != new.build or old.hash.sha256 != new.hash.sha256:
        return "rebuilt"
    if old.locked_url != new.locked_url:
        return "moved"  # the same archive (same sha256) from another URL: nothing installed changes
    return None


def diff_locks(old: Lockfile, new: Lockfile) -> list[PackageChange]:
    """The changes from `old` to `new` on the platforms both locks have, sorted by platform, then name (the platforms
    only one has: `platforms_in_one_lock`)."""
    changes = []
    for platform in sorted(set(old.metadata.platforms) & set(new.metadata.platforms)):
        before = {(p.manager, p.name): p for p in old.package if p.platform == platform}
        after = {(p.manager, p.name): p for p in new.package if p.platform == platform}
        for key in sorted(set(before) | set(after), key=lambda k: (k[1], k[0])):
            manager, name = key
            a, b = before.get(key), after.get(key)
            kind = "added" if a is None else "removed" if b is None else _kind(a, b)
            if kind is None:
                continue
            numerics = name.lower() in NUMERICS_PACKAGES and kind != "moved"  # the same bytes cannot change a result
            changes.append(PackageChange(platform, manager, name, kind, _label(a) if a else None, _label(b) if b else None, numerics))
    return changes


def platforms_in_one_lock(old: Lockfile, new: Lockfile) -> list[PlatformInOneLock]:
    """The platforms only one of `old` and `new` has (`metadata.platforms`), sorted, each with the lock that has it."""
    in_old, in_new = set(old.metadata.platforms), set(new.metadata.platforms)
    found = []
    for platform in sorted(in_old ^ in_new):
        lock = old if platform in in_old else new
        packages = sum(1 for p in lock.package if p.platform == platform)
        found.append(PlatformInOneLock(platform, "old" if lock is old else "new", packages))
    return found


def read_lock_at(spec: str, cwd: Path | None = None) -> tuple[Lockfile, str]:
    """A lock from a path, or from git as `REV:path` (e.g. `HEAD~1:conda-lock.yml`); returns (lock, label)."""
    path = Path(spec)
    if path.exists() or ":" not in spec:
        return read_lockfile(path), spec
    rev, _, inner = spec.partition(":")
    from conda_envkit.inputs import MAX_INPUT_BYTES, decode_utf8

    # git would read a REV of `-...` as one of its options (`--textconv`, `--batch-all-objects`) and print its usage.
    if rev.startswith("-"):
        raise LockFileError(f"{spec}: not a file, and {rev!r} is not a git revision", hint=_GIT_HINT)
    if not inner or inner.endswith("/"):
        raise LockFileError(f"{spec}: names no file in {rev or 'the index'}", hint=_GIT_HINT)
    # Its size first: a pull request can commit a lock of gigabytes that compresses to a few MB (git show read it
    # whole into memory, then wrote it out, before any cap applied).
    size = _git(spec, ["cat-file", "-s", f"{rev}:{inner}"], cwd)
    if int(size.strip() or 0) > MAX_INPUT_BYTES:
        raise LockFileError(
            f"{spec}: {int(size)} bytes, larger than the {MAX_INPUT_BYTES >> 20} MiB limit for a lock file",
            hint="a lock is a few MiB at most: this one was not written by a locker",
        )
    data = _git(spec, ["cat-file", "blob", f"{rev}:{inner}"], cwd, refused="a directory or another object, not a file, in git")
    # Parsed as it came from git, named as the user wrote it: an error names `REV:path` and its line, not a temp copy.
    return parse_lock_text(decode_utf8(data, spec), Path(spec)), spec


_GIT_HINT = "pass a lock file's path, or REV:path (e.g. HEAD~1:conda-lock.yml)"
GIT_SECONDS = 60.0  # git answers a local object lookup in milliseconds; a stuck one (a hung filesystem) is an error


def _git(spec: str, args: list[str], cwd: Path | None, refused: str = "not a file, and git cannot show it") -> bytes:
    """git's stdout for `args`; an error names `spec` and the first line git gave as its reason."""
    try:
        proc = subprocess.run(["git", *args], capture_output=True, cwd=cwd, timeout=GIT_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LockFileError(f"{spec}: git did not answer within {GIT_SECONDS:g} s", hint="pass the lock as a file") from None
    except OSError as exc:
        raise LockFileError(
            f"{spec}: not a file, and git cannot run ({exc.strerror})",
            hint="install git, or pass the lock as a file (git show REV:path > old.yml)",
        ) from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        said = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[0] if lines else "no reason given")
        raise LockFileError(f"{spec}: {refused} ({said})", hint=_GIT_HINT)
    return proc.stdout


def _arrow(c: PackageChange) -> str:
    if c.kind == "added":
        return f"{c.new}"
    if c.kind == "removed":
        return f"{c.old}"
    return f"{c.old} -> {c.new}"


def _only_in(one: PlatformInOneLock, old_label: str, new_label: str) -> tuple[str, str]:
    """The label of the lock that has `one`'s platform, and how many packages it holds there."""
    return (old_label if one.only_in == "old" else new_label), counted(one.packages, "package")


def render_text(changes: list[PackageChange], old_label: str, new_label: str, in_one_lock: Sequence[PlatformInOneLock] = ()) -> str:
    if not changes and not in_one_lock:
        return f"no changes between {old_label} and {new_label}\n"
    marks = {"added": "+", "removed": "-", "upgraded": "^", "downgraded": "v", "rebuilt": "~", "moved": ">"}
    lines = [f"--- {old_label}", f"+++ {new_label}"]
    only = {one.platform: one for one in in_one_lock}
    for platform in sorted({c.platform for c in changes} | set(only)):
        if platform in only:
            label, packages = _only_in(only[platform], old_label, new_label)
            lines.append(f"{platform}: only in {label} ({packages})")
            continue
        lines.append(f"{platform}:")
        for c in (c for c in changes if c.platform == platform):
            flag = "  [numerics]" if c.numerics else ""
            pip = " (pip)" if c.manager != "conda" else ""
            lines.append(f"  {marks[c.kind]} {c.name}{pip} {_arrow(c)}  {c.kind}{flag}")
    flagged = sorted({c.name for c in changes if c.numerics})
    if flagged:
        lines.append(f"numerics: {', '.join(flagged)} changed; check the model's behaviour before shipping this lock")
    return "\n".join(lines) + "\n"


def render_markdown(changes: list[PackageChange], old_label: str, new_label: str, in_one_lock: Sequence[PlatformInOneLock] = ()) -> str:
    lines = [f"### Lock changes: {code_span(old_label)} → {code_span(new_label)}", ""]
    if not changes and not in_one_lock:
        return "\n".join(lines + ["No package changed.", ""])
    flagged = sorted({c.name for c in changes if c.numerics})
    if flagged:
        names = ", ".join(code_span(n) for n in flagged)
        lines += [f"> **Numerics:** {names} changed. Check the model's behaviour before shipping.", ""]
    only = {one.platform: one for one in in_one_lock}
    for platform in sorted({c.platform for c in changes} | set(only)):
        if platform in only:
            label, packages = _only_in(only[platform], old_label, new_label)
            lines += [f"<b>{markdown_cell(platform)}</b>: only in {code_span(label)} ({packages})", ""]
            continue
        rows = [c for c in changes if c.platform == platform]
        counts = ", ".join(f"{sum(1 for c in rows if c.kind == k)} {k}" for k in KINDS if any(c.kind == k for c in rows))
        lines += [
            f"<details><summary><b>{markdown_cell(platform)}</b>: {counts}</summary>",
            "",
            "| package | change | old | new | numerics |",
            "| --- | --- | --- | --- | --- |",
        ]
        for c in rows:
            # Names and versions come from the pull request's lock: each cell is escaped, so none can add a row.
            pip = " (pip)" if c.manager != "conda" else ""
            cells = [f"{code_span(c.name)}{pip}", c.kind, markdown_cell(c.old or ""), markdown_cell(c.new or "")]
            lines.append("| " + " | ".join(cells) + f" | {'yes' if c.numerics else ''} |")
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def render_json(changes: list[PackageChange], old_label: str, new_label: str, in_one_lock: Sequence[PlatformInOneLock] = ()) -> str:
    summary = {k: sum(1 for c in changes if c.kind == k) for k in KINDS}
    data = {
        "schema": DIFF_SCHEMA,
        "old": old_label,
        "new": new_label,
        "summary": summary,
        "numerics_changed": sorted({c.name for c in changes if c.numerics}),
        "changes": [asdict(c) for c in changes],
        # Added to envkit.diff/1: a platform one lock has and the other not (its packages are not in `changes`).
        "platforms_in_one_lock": [asdict(one) for one in in_one_lock],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
