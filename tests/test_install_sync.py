"""`envkit install` into a prefix envkit made brings it to the lock: only what changed is unlinked
and linked, `envkit verify` passes after each step, and an up-to-date prefix is left untouched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import run_envkit
from tests.test_bake import _lock


def _snapshot(prefix: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_mtime_ns for p in [prefix, *prefix.rglob("*")]}


def _install(work: Path, prefix: Path, cache: Path, *extra: str) -> str:
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", *extra, cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.output
    verify = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert verify.returncode == 0, verify.output
    return result.stdout


def test_install_syncs_add_remove_change_and_noop(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "envs" / "train"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0"])
    _install(work, prefix, cache)
    greet = subprocess.run([str(prefix / "bin" / "greet")], capture_output=True, text=True, check=True).stdout
    assert greet.splitlines()[0] == "hello from the image"

    before = _snapshot(prefix)
    out = _install(work, prefix, cache)
    assert out.strip() == f"{prefix} is up to date"
    assert _snapshot(prefix) == before  # nothing touched

    _lock(work, image_channel, ["greet=2.0", "bigmodel=1.0"])
    busybox = (prefix / "bin" / "busybox").lstat()
    assert "0 added, 1 changed, 0 removed" in _install(work, prefix, cache)
    greet = subprocess.run([str(prefix / "bin" / "greet")], capture_output=True, text=True, check=True).stdout
    assert greet.splitlines() == ["hello from greet 2", f"prefix is {prefix}"]
    assert (prefix / "bin" / "busybox").lstat().st_mtime_ns == busybox.st_mtime_ns  # unchanged package not relinked

    _lock(work, image_channel, ["greet=2.0", "bigmodel=1.0", "smalldata"])
    assert "1 added, 0 changed, 0 removed" in _install(work, prefix, cache)
    assert (prefix / "lib" / "smalldata.bin").is_file()

    _lock(work, image_channel, ["greet=2.0", "smalldata"])
    assert "0 added, 0 changed, 1 removed" in _install(work, prefix, cache)
    assert not (prefix / "lib" / "bigmodel.bin").exists()
    assert not list((prefix / "conda-meta").glob("bigmodel-*.json"))
    assert (prefix / "conda-meta" / "envkit" / "conda-lock.yml").read_text() == (work / "conda-lock.yml").read_text()
    assert _install(work, prefix, cache).strip() == f"{prefix} is up to date"


def test_a_prefix_envkit_did_not_make_is_refused_unless_forced(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "other"
    _lock(work, image_channel, ["greet=1.0"])
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "notes.txt").write_text("someone else's")
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    refused = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env=env)
    assert refused.returncode == 2 and "was not created by envkit" in refused.stderr and "--force" in refused.stderr
    assert sorted(os.listdir(prefix)) == ["conda-meta", "notes.txt"]
    forced = run_envkit("install", "--prefix", prefix, "-p", "linux-64", "--force", cwd=work, env=env)
    assert forced.returncode == 0 and "2 added" in forced.stdout, forced.output
    assert (prefix / "notes.txt").read_text() == "someone else's"  # synced, not wiped
    verify = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert verify.returncode == 1 and "notes.txt" in verify.stderr  # and verify still names the stranger
