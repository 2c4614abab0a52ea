"""Will this lock (or image) run on this host? Driver CUDA, glibc and CPU architecture against
what the locked packages require (`__cuda`, `__glibc` depends and the lock's CUDA assumption)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform as host_platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rattler import Platform, Version, VersionSpec

from conda_envkit.errors import EnvkitError
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import cuda_driver_assumption, packages_for

_CUDA_IN_SMI = re.compile(r"CUDA Version:\s*([0-9]+\.[0-9]+)")


@dataclass(frozen=True)
class HostFacts:
    """What this machine offers."""

    platform: str
    machine: str
    glibc: str | None
    cuda_driver: str | None  # the CUDA version the driver supports, e.g. "12.4"
    cuda_source: str  # nvidia-smi, libcuda, or why there is none
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """One thing the environment needs from the host, and whether this host has it."""

    what: str
    needed: str
    have: str
    ok: bool
    why: str


@dataclass(frozen=True)
class Diagnosis:
    host: HostFacts
    platform: str
    requirements: tuple[Requirement, ...] = field(default_factory=tuple)

    @property
    def runs(self) -> bool:
        return all(r.ok for r in self.requirements)


def _cuda_from_nvidia_smi() -> tuple[str | None, tuple[str, ...], str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, (), "nvidia-smi not on PATH"
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, (), f"nvidia-smi failed ({exc})"
    match = _CUDA_IN_SMI.search(out.stdout)
    if out.returncode != 0 or not match:
        return None, (), f"nvidia-smi found no driver ({(out.stderr or out.stdout).strip().splitlines()[:1]})"
    gpus: tuple[str, ...] = ()
    try:
        names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        gpus = tuple(line.strip() for line in names.stdout.splitlines() if line.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return match.group(1), gpus, "nvidia-smi"


def _cuda_from_libcuda() -> str | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if lib.cuInit(0) != 0 or lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


def host_facts() -> HostFacts:
    """Read this machine: platform, glibc, and the CUDA version its driver supports."""
    glibc = None
    with contextlib.suppress(ValueError, OSError, AttributeError):  # not glibc, or no confstr
        glibc = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]  # type: ignore[union-attr]
    cuda, gpus, source = _cuda_from_nvidia_smi()
    if cuda is None:
        from_lib = _cuda_from_libcuda()
        if from_lib is not None:
            cuda, source = from_lib, "libcuda"
    return HostFacts(str(Platform.current()), host_platform.machine(), glibc, cuda, source, gpus)


def _virtual_needs(lockfile: Lockfile, platform: str, name: str) -> list[tuple[str, str]]:
    needs = []
    for p in packages_for(lockfile, platform):
        spec = p.dependencies.get(name)
        if spec is not None:
            needs.append((p.name, spec))
    return needs


def _satisfied(spec: str, have: str | None) -> bool:
    if have is None:
        return False
    if spec in ("", "*"):
        return True
    return VersionSpec(spec.split(" ")[0]).matches(Version(have))


def _binding_need(needs: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """One requirement for a virtual package many packages constrain, and the packages that set it: the highest
    lower bound (`>=2.28` of `>=2.17,<3.0.a0` and `>=2.28,<3.0.a0`), when every spec has one; else every distinct
    spec, and every package."""
    import re

    bounds = []
    for name, spec in needs:
        found = [Version(v) for v in re.findall(r">=\s*([0-9][0-9A-Za-z.]*)", spec)]
        if not found:
            return ", ".join(sorted({spec for _, spec in needs})), sorted({name for name, _ in needs})
        bounds.append((max(found), name))
    if not bounds:
        return "any", []
    highest = max(bound for bound, _ in bounds)
    return f">={highest}", sorted({name for bound, name in bounds if bound == highest})


def cpu_locks_beside(lock_path: Path, lockfile: Lockfile, platform: str) -> tuple[Path, ...]:
    """The other locks of the same spec (the default lock and its variants' `<stem>.<variant>.yml`, beside it) that
    lock `platform` without CUDA: what a host without a driver can use instead of `lock_path`."""
    from conda_envkit.lockmodel import read_lock
    from conda_envkit.variant_locks import base_lock_path, recorded_variant, removed_variant_locks

    variant = recorded_variant(lockfile)
    base = base_lock_path(lock_path, variant) if variant is not None else lock_path
    if base is None:
        return ()
    candidates = [base] + [lock.path for lock in removed_variant_locks(base, ()).found]
    found = []
    for path in candidates:
        if path == lock_path or not path.is_file():
            continue
        try:
            other = read_lock(path)
        except (EnvkitError, OSError):
            continue  # (not this lock's concern: `lock --check` reports it)
        if platform in other.metadata.platforms and cuda_driver_assumption(other, platform) is None:
            found.append(path)
    return tuple(found)


def diagnose(lockfile: Lockfile, platform: str, host: HostFacts, cpu_locks: tuple[Path, ...] = ()) -> Diagnosis:
    """What the lock's `platform` needs from `host`, each need checked; `cpu_locks` (`cpu_locks_beside`) are named as
    what to use instead when CUDA is needed and the host has no driver."""
    reqs = [
        Requirement(
            "platform",
            platform,
            host.platform,
            platform == host.platform or platform.startswith("noarch"),
            "the environment's binaries are built for this platform"
            if platform == host.platform
            else f"binaries for {platform} cannot run on {host.platform} ({host.machine}) without emulation",
        )
    ]
    glibc_needs = _virtual_needs(lockfile, platform, "__glibc")
    if platform.startswith("linux"):
        specs, binding = _binding_need(glibc_needs)
        ok = all(_satisfied(spec, host.glibc) for _, spec in glibc_needs)
        who = ", ".join(binding[:5]) + (f" and {len(binding) - 5} more" if len(binding) > 5 else "") if binding else "no package"
        reqs.append(Requirement("glibc", specs, host.glibc or "not found", ok, f"required by {who}"))
    # The driver the lock was solved for (`--cuda`): the packages' `__cuda` needs hold for it,
    # including toolkits it runs through minor-version compatibility.
    assumed = cuda_driver_assumption(lockfile, platform)
    cuda_needs = _virtual_needs(lockfile, platform, "__cuda")
    if cuda_needs or assumed:
        needed = assumed or "none"
        have = host.cuda_driver
        ok, why = _cuda_verdict(needed, have, host.cuda_source)
        users = ", ".join(sorted({name for name, _ in cuda_needs})[:5])
        why += f" (needed by {users})" if users else ""
        if have is None and cpu_locks:  # (what to change, as for the other requirements)
            import shlex

            names = ", ".join(str(path) for path in cpu_locks)
            why += (
                f"; run where a driver is, or use a CPU lock of this spec here: {names} "
                f"(`envkit install --lockfile {shlex.quote(str(cpu_locks[0]))} --prefix ...`)"
            )
        elif have is None:
            why += "; run where a driver is, or lock CPU builds for this machine (`envkit lock --no-cuda`, or a variant with `cuda: none`)"
        reqs.append(Requirement("cuda", f">={needed}", have or "none", ok, why))
    return Diagnosis(host, platform, tuple(reqs))


def _cuda_verdict(needed: str, have: str | None, source: str) -> tuple[bool, str]:
    if have is None:
        return False, f"no NVIDIA driver here ({source}): the CUDA packages cannot use a GPU; CPU code still runs"
    if needed in ("none", ""):
        return True, f"the driver supports CUDA {have}"
    need, got = Version(needed), Version(have)
    if got >= need:
        return True, f"the driver supports CUDA {have}; the lock was solved for a CUDA {needed} driver"
    if have.split(".")[0] == needed.split(".")[0]:
        return True, (
            f"the driver supports CUDA {have}, older than {needed} but the same major version: minor-version "
            "compatibility runs most code; kernels that need newer PTX fail (update the driver to be sure)"
        )
    return (
        False,
        f"the driver supports CUDA {have}, older than the CUDA {needed} driver the lock was solved for: "
        f"update the NVIDIA driver, or re-lock with --cuda {have}",
    )
