"""A bake whose cache cannot take what it writes of a package (a full disk, a file size limit) says so:
the cache's error, naming the file and what to free, not "the package is corrupt"; exit 2, no image.
A group member's `.conda` is streamed into its fragment; a `.tar.bz2` is staged first."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel
from tests.hostile.conftest import crafted_lock, lock_entry
from tests.test_tar_headers import _as_tar_bz2

LIMIT = 256 << 10


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ: a write past the limit fails with EFBIG, as a full disk fails with ENOSPC.
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.parametrize(("archive", "written"), [(".conda", "package fragment"), (".tar.bz2", "staged package payload")])
def test_a_payload_the_cache_cannot_hold_is_the_caches_error(tmp_path: Path, archive: str, written: str) -> None:
    # 2 MB of text: a few KiB as an archive (it downloads under the limit), 2 MB once read.
    spec = PackageSpec("roomy", files=(PackageFile("share/roomy/big.txt", b"the same line again\n" * 100_000),))
    channel = build_channel(tmp_path / "channel", [spec])
    lock = crafted_lock(channel, ["roomy"])
    if archive == ".tar.bz2":
        conda = channel / "noarch" / "roomy-1.0-0.conda"
        lock["package"] = [lock_entry(_as_tar_bz2(conda, conda.with_name("roomy-1.0-0.tar.bz2")), "roomy")]
    work = tmp_path / "work"
    work.mkdir()
    (work / "conda-lock.yml").write_text(yaml.safe_dump(lock, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "conda_envkit", "bake", "-q", "-p", "linux-64", "--oci", str(tmp_path / "img")],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")},
        preexec_fn=_limit_file_size,  # noqa: PLW1509 - the limit only, no other state
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot write {written} (File too large)" in proc.stderr, proc.stderr
    assert "corrupt" not in proc.stderr
    assert not (tmp_path / "img").exists()
    assert not list((tmp_path / "cache" / "tmp").glob("bake.*"))
    assert not [p for p in (tmp_path / "cache").rglob(".*") if p.is_file()]  # no temporary fragment or blob left
