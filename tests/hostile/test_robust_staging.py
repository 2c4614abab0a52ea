"""A bake whose cache cannot take a package's staged payload (a full disk, a file size limit) says so:
the cache's error, naming the file and what to free, not "the package is corrupt"; exit 2, no image."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import yaml

from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel
from tests.hostile.conftest import crafted_lock

LIMIT = 256 << 10


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ: a write past the limit fails with EFBIG, as a full disk fails with ENOSPC.
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_payload_the_cache_cannot_hold_is_the_caches_error(tmp_path: Path) -> None:
    # 2 MB of text: a few KiB as an archive (it downloads under the limit), 2 MB once staged.
    spec = PackageSpec("roomy", files=(PackageFile("share/roomy/big.txt", b"the same line again\n" * 100_000),))
    channel = build_channel(tmp_path / "channel", [spec])
    work = tmp_path / "work"
    work.mkdir()
    (work / "conda-lock.yml").write_text(yaml.safe_dump(crafted_lock(channel, ["roomy"]), sort_keys=False))
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
    assert "cannot write staged package payload (File too large)" in proc.stderr, proc.stderr
    assert "corrupt" not in proc.stderr
    assert not (tmp_path / "img").exists()
    assert not list((tmp_path / "cache" / "tmp").glob("bake-*"))
