"""A bake on a full disk: each write of the cache and the output that can meet it (layer blob, package
fragment, package info, image layout) ends the bake with an error naming the file and saying to free
space; exit 2, no traceback, no image, and no temp file left behind.

The full disk is real: a tiny tmpfs mounted over one directory of the cache (or the output's parent),
in a mount namespace of the envkit process only (`unshare`), so nothing outside the test sees it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel
from tests.hostile.conftest import crafted_lock

# Each mount target is $1, $3, ... with its size in $2, $4, ...; then the command.
_MOUNT_THEN_RUN = (
    'while [ "$1" != -- ]; do mkdir -p "$1" && mount -t tmpfs -o "size=$2" tmpfs "$1" || exit 97; shift 2; done; shift; exec "$@"'
)


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs `unshare -rm` and tmpfs mounts (user and mount namespaces)")


def _workspace(tmp_path: Path, count: int = 3, size: int = 300_000) -> Path:
    """A lock of `count` packages, each `size` bytes of noise (so their layers and fragments stay that big)."""
    rng = random.Random(11)
    specs = [PackageSpec(f"noise{i}", files=(PackageFile(f"share/noise{i}/data.bin", rng.randbytes(size)),)) for i in range(count)]
    channel = build_channel(tmp_path / "channel", specs)
    work = tmp_path / "work"
    work.mkdir()
    (work / "conda-lock.yml").write_text(yaml.safe_dump(crafted_lock(channel, [s.name for s in specs]), sort_keys=False))
    return work


def _bake(tmp_path: Path, work: Path, full: dict[Path, str]) -> subprocess.CompletedProcess[str]:
    mounts = [str(a) for path, size in full.items() for a in (path, size)]
    command = [sys.executable, "-m", "conda_envkit", "bake", "-q", "-p", "linux-64", "--oci", str(tmp_path / "out" / "img")]
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", _MOUNT_THEN_RUN, "sh", *mounts, "--", *command],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")},
        timeout=300,
    )


def _leftovers(root: Path) -> list[Path]:
    """Temp files and staging directories under `root` (the tmpfs mounts are gone with the namespace)."""
    return [
        p
        for p in root.rglob("*")
        if p.name.startswith((".part.", "bake.", ".blob.")) or p.name.endswith((".tmp", ".new")) or (p.name.startswith(".") and p.is_file())
    ]


def _assert_clean_failure(proc: subprocess.CompletedProcess[str], what: str, tmp_path: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot write {what} (No space left on device)" in proc.stderr, proc.stderr
    assert "hint: free space on the filesystem of" in proc.stderr
    assert "corrupt" not in proc.stderr
    assert not (tmp_path / "out" / "img").exists()
    assert _leftovers(tmp_path / "cache") == []


def test_a_layer_blob_on_a_full_disk(tmp_path: Path) -> None:
    work = _workspace(tmp_path)
    proc = _bake(tmp_path, work, {tmp_path / "cache" / "blobs": "64k"})
    _assert_clean_failure(proc, "layer blob", tmp_path)


def test_a_package_fragment_on_a_full_disk(tmp_path: Path) -> None:
    work = _workspace(tmp_path)
    proc = _bake(tmp_path, work, {tmp_path / "cache" / "fragments": "64k"})
    _assert_clean_failure(proc, "package fragment", tmp_path)


def test_package_info_on_a_full_disk(tmp_path: Path) -> None:
    work = _workspace(tmp_path, count=12, size=1000)
    proc = _bake(tmp_path, work, {tmp_path / "cache" / "pkginfo": "4k"})
    _assert_clean_failure(proc, "package info cache entry", tmp_path)


def test_an_image_layout_on_a_full_disk(tmp_path: Path) -> None:
    """The layout's blobs cannot be hard-linked across filesystems: they are copied, and the copy fills the disk."""
    work = _workspace(tmp_path)
    proc = _bake(tmp_path, work, {tmp_path / "out": "256k"})
    _assert_clean_failure(proc, "image layout", tmp_path)
    # The cache is whole: the same bake with room to write the layout reuses every layer.
    again = _bake(tmp_path, work, {})
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out" / "img" / "index.json").is_file()


def test_any_other_storage_error_is_a_message_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's net for a write envkit does not name itself: the disk's errors only; any other OSError is a bug."""
    import errno

    from conda_envkit.cli import _reports_errors

    def full() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/out/records.json")

    def missing() -> None:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/srv/out")

    with pytest.raises(SystemExit) as ended:
        _reports_errors(full)()
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "error: /srv/out/records.json: cannot write (No space left on device)" in err
    assert "hint: free space" in err
    with pytest.raises(FileNotFoundError):
        _reports_errors(missing)()


def _on_a_full_disk(disk: Path, script: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """`script` (sh) run with a 64 KiB tmpfs at `disk` filled up (`disk/fill`), in a mount namespace of its own."""
    full = f"mkdir -p {disk} && mount -t tmpfs -o size=64k tmpfs {disk} || exit 97; dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null"
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(cache)}
    command = ["unshare", "-rm", "sh", "-c", f"{full}; {script}"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_an_install_into_an_empty_directory_on_a_full_disk_leaves_it_empty_for_the_next(tmp_path: Path) -> None:
    # An existing empty prefix (a volume) on a full disk: the lock's copy, written first, failed; the error named the
    # source lock, a temp file stayed in the prefix, and every later install called the prefix "not envkit's".
    work = _workspace(tmp_path, count=1, size=1000)
    disk = tmp_path / "disk"
    prefix = disk / "volume"
    envkit = f"{sys.executable} -m conda_envkit install -q -p linux-64 --prefix {prefix}"
    script = f"mkdir {prefix}; {envkit}; echo rc=$?; ls -A {prefix}; echo listed; rm {disk}/fill; {envkit} && echo second=ok"
    proc = _on_a_full_disk(disk, script, work, tmp_path / "cache")
    assert f"{prefix}/conda-meta/envkit/conda-lock.yml: cannot write environment (No space left on device)" in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["rc=2", "listed"], proc.stdout  # the prefix is empty again
    assert "second=ok" in proc.stdout, proc.stdout + proc.stderr


def test_a_pip_section_locked_with_a_full_cache_disk_says_so(tmp_path: Path) -> None:
    # uv could not write its cache: reported as a requirement that cannot be resolved ("relax the pip requirement").
    work = tmp_path / "work"
    work.mkdir()
    for module, target in (("demo_channel", "channel"), ("local_index", "wheels")):
        subprocess.run(
            [sys.executable, "-m", f"conda_envkit.testing.{module}", target, *(["--flat"] if target == "wheels" else [])],
            cwd=work,
            check=True,
            capture_output=True,
        )
    pip = "  - pip:\n      - --no-index\n      - --find-links ./wheels\n      - hello-ml >=0.3\n"
    (work / "environment.yml").write_text("channels: [./channel]\nplatforms: [linux-64]\ndependencies:\n  - python=3.11\n" + pip)
    disk = tmp_path / "disk"
    proc = _on_a_full_disk(disk, f"exec {sys.executable} -m conda_envkit lock -q", work, disk / "cache")
    assert proc.returncode == 2, proc.stderr
    assert (
        "uv could not write its cache" in proc.stderr and f"hint: free space on the filesystem of {disk / 'cache' / 'uv'}" in proc.stderr
    ), proc.stderr
    assert "relax the pip requirement" not in proc.stderr
