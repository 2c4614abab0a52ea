"""The CPUs a bake splits its work over: its CPU set, or its cgroup's CPU quota if fewer (a container's --cpus)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conda_envkit.cpus import cgroup_cpu_quota, usable_cpus


def _proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc-self"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup, encoding="utf-8")
    (proc / "mountinfo").write_text(mountinfo, encoding="utf-8")
    return proc


def _put(directory: Path, **files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", ".", 1) if name.startswith("cpu_") else directory / name).write_text(text)


def test_cgroup_v1_quota_is_the_smallest_on_the_way_up(tmp_path: Path) -> None:
    cpu = tmp_path / "sys" / "cpu,cpuacct"
    mountinfo = (
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        f"32 31 0:29 / {cpu} rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
        f"33 31 0:30 / {tmp_path / 'sys' / 'memory'} rw,relatime - cgroup cgroup rw,memory\n"
    )
    proc = _proc(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n", mountinfo)
    _put(cpu / "docker" / "abc", cpu_cfs_quota_us="150000\n", cpu_cfs_period_us="100000\n")
    assert cgroup_cpu_quota(proc) == 1.5
    _put(cpu / "docker", cpu_cfs_quota_us="50000\n", cpu_cfs_period_us="100000\n")  # the parent's is smaller
    assert cgroup_cpu_quota(proc) == 0.5
    _put(cpu / "docker", cpu_cfs_quota_us="-1\n")  # no quota there
    _put(cpu / "docker" / "abc", cpu_cfs_quota_us="-1\n")
    assert cgroup_cpu_quota(proc) is None


def test_cgroup_v1_seen_from_inside_a_container(tmp_path: Path) -> None:
    # The container sees its own cgroup mounted as the hierarchy's root (mountinfo's root field), with a space in
    # the mount point (octal-escaped by the kernel).
    cpu = tmp_path / "sys fs" / "cpu"
    escaped = str(cpu).replace(" ", "\\040")
    proc = _proc(tmp_path, "4:cpu,cpuacct:/docker/abc\n", f"32 31 0:29 /docker/abc {escaped} ro,nosuid - cgroup cgroup rw,cpu,cpuacct\n")
    _put(cpu, cpu_cfs_quota_us="200000\n", cpu_cfs_period_us="100000\n")
    assert cgroup_cpu_quota(proc) == 2.0


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    proc = _proc(tmp_path, "0::/kubepods/pod1/ctr\n", f"30 23 0:27 / {unified} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    _put(unified / "kubepods" / "pod1" / "ctr", cpu_max="max 100000\n")
    _put(unified / "kubepods" / "pod1", cpu_max="250000 100000\n")
    _put(unified, cpu_max="100000 100000\n")  # the mount point: the top of what this process may see
    assert cgroup_cpu_quota(proc) == 1.0
    _put(unified, cpu_max="max 100000\n")
    assert cgroup_cpu_quota(proc) == 2.5


@pytest.mark.parametrize(
    ("cgroup", "quota", "period"),
    [
        ("0::/a\n", "garbage", "100000"),  # unreadable values: no quota, not an error
        ("0::/a\n", "100000", "0"),
        ("0::/a\n", "-5", "100000"),
        ("nonsense\n", "100000", "100000"),  # a cgroup line of no hierarchy
        ("", "100000", "100000"),
    ],
)
def test_no_quota_when_nothing_sane_can_be_read(tmp_path: Path, cgroup: str, quota: str, period: str) -> None:
    unified = tmp_path / "unified"
    proc = _proc(tmp_path, cgroup, f"30 23 0:27 / {unified} rw - cgroup2 cgroup2 rw\n")
    _put(unified / "a", cpu_max=f"{quota} {period}\n")
    assert cgroup_cpu_quota(proc) is None
    assert cgroup_cpu_quota(tmp_path / "no-such-proc") is None


def _cpu_cgroup_root() -> tuple[Path, str] | None:
    """Where this machine lets root make a cgroup with a CPU quota: (directory, quota file), or None."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").is_file():
        return v1, "v1"
    v2 = Path("/sys/fs/cgroup")
    try:
        if "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
            return v2, "v2"
    except OSError:
        pass
    return None


NO_CGROUP = "making a cgroup with a CPU quota needs root and a cpu controller"


@pytest.mark.skipif(os.geteuid() != 0 or _cpu_cgroup_root() is None, reason=NO_CGROUP)
def test_a_process_in_a_real_cgroup_with_half_a_cpu_uses_one() -> None:
    root, kind = _cpu_cgroup_root()  # type: ignore[misc]
    group = root / f"envkit-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here: {exc}")
    try:
        try:
            if kind == "v1":
                (group / "cpu.cfs_period_us").write_text("100000")
                (group / "cpu.cfs_quota_us").write_text("50000")
            else:
                (group / "cpu.max").write_text("50000 100000")
        except OSError as exc:
            pytest.skip(f"cannot give a cgroup a CPU quota here: {exc}")
        code = "import json, conda_envkit.cpus as c; print(json.dumps([c.usable_cpus(), c.cgroup_cpu_quota()]))"
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
            ).stdout
        except subprocess.SubprocessError as exc:
            if "preexec_fn" not in str(exc):
                raise
            pytest.skip(f"cannot move a process into a cgroup here: {exc}")
        assert json.loads(out) == [1, 0.5]
    finally:
        with contextlib.suppress(OSError):  # (its one process has ended: it is empty)
            group.rmdir()
    # Outside it, as many as the CPU set allows (this machine's own quota, if any, counted too).
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
