"""How many CPUs this process may keep busy: its CPU set, or its cgroup's CPU quota if that is fewer.

A container started with `--cpus 2`, or a Kubernetes pod with a CPU limit of 2, still sees every CPU of its host
in its affinity: the kernel throttles it to its quota instead. Work split by the affinity alone (zstd's workers,
the bake's layer workers) would then run 64 ways on 2 CPUs' worth of time, with the memory of 64. So the quota
counts too, rounded up (1.5 CPUs: 2), as Go and the JVM read it: cgroup v2's `cpu.max` and cgroup v1's
`cpu.cfs_quota_us` / `cpu.cfs_period_us`, of this process's cgroup and of every cgroup above it.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

PROC_SELF = Path("/proc/self")


def usable_cpus() -> int:
    """The CPUs this process may keep busy (at least 1)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not on macOS)
        allowed = os.cpu_count() or 1
    quota = _own_quota()
    return max(1, min(allowed, math.ceil(quota))) if quota is not None else max(1, allowed)


@functools.cache
def _own_quota() -> float | None:
    """This process's cgroup CPU quota, read once (a few files: ~0.1 ms), as Go reads it at start-up: every layer
    writer asks for the CPUs, and a quota changed while a bake runs is not followed."""
    return cgroup_cpu_quota()


def cgroup_cpu_quota(proc_self: Path = PROC_SELF) -> float | None:
    """The smallest CPU quota (in CPUs) on the way from this process's cgroup up to its hierarchy's root, for the
    cgroup v2 hierarchy or the v1 `cpu` controller; None if there is none, or nothing there can be read."""
    try:
        groups = (proc_self / "cgroup").read_text(encoding="utf-8").splitlines()
        mounts = (proc_self / "mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    quotas = []
    for line in groups:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            where = _mounted(mounts, "cgroup2", None, path)
            quotas += [q for q in (_v2_quota(d) for d in _up_from(where)) if q is not None] if where else []
        elif "cpu" in controllers.split(","):
            where = _mounted(mounts, "cgroup", "cpu", path)
            quotas += [q for q in (_v1_quota(d) for d in _up_from(where)) if q is not None] if where else []
    return min(quotas) if quotas else None


def _mounted(mounts: list[str], fstype: str, controller: str | None, path: str) -> tuple[Path, Path] | None:
    """(mount point, the cgroup's directory under it) of the hierarchy holding `path`, from /proc/self/mountinfo:
    `id parent dev root mount-point options [optional...] - fstype source super-options`."""
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        left, right = fields.split(), tail.split()
        if len(left) < 5 or len(right) < 3 or right[0] != fstype:
            continue
        if controller is not None and controller not in right[2].split(","):
            continue
        root, point = _unescaped(left[3]), Path(_unescaped(left[4]))
        inner = path if root == "/" else path[len(root) :] if path == root or path.startswith(root + "/") else None
        if inner is None:
            continue  # another part of the hierarchy is mounted here
        directory = (point / inner.lstrip("/")) if inner.strip("/") else point
        return point, directory
    return None


def _unescaped(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash written as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _up_from(where: tuple[Path, Path]) -> list[Path]:
    """The cgroup's directory and every one above it, up to the mount point, without leaving it."""
    point, directory = where
    out = []
    while True:
        out.append(directory)
        if directory == point or point not in directory.parents:
            return out
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text(encoding="ascii").partition(" ")
        return int(quota) / int(period) if quota != "max" and int(period) > 0 and int(quota) > 0 else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period = int((directory / "cpu.cfs_period_us").read_text(encoding="ascii"))
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
