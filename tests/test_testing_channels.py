"""The channels the suite and the demo build (conda_envkit.testing): byte-identical on every
build, and their command-line builders exit cleanly."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import zstandard

from conda_envkit.testing.local_channel import build_channel, source_date_epoch
from conda_envkit.testing.toy_channel import ALL_PLATFORMS, toy_packages


def _digests(channel: Path) -> dict[str, str]:
    return {str(p.relative_to(channel)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(channel.rglob("*")) if p.is_file()}


def test_two_builds_of_the_toy_channel_are_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = build_channel(tmp_path / "one" / "toy", toy_packages(), subdirs=ALL_PLATFORMS)
    # A day later, in another directory: nothing in the channel may depend on when or where it was built.
    later = time.time() + 86400
    monkeypatch.setattr(time, "time", lambda: later)
    second = build_channel(tmp_path / "two" / "channel", toy_packages(), subdirs=ALL_PLATFORMS)
    monkeypatch.undo()

    one, two = _digests(first), _digests(second)
    assert len(one) == len(toy_packages()) + len(ALL_PLATFORMS) + 1  # every package and one repodata.json per subdir
    assert one == two
    repodata = json.loads((first / "linux-64" / "repodata.json").read_text(encoding="utf-8"))
    assert repodata["packages.conda"]["numpy-2.0.1-py311_0.conda"]["sha256"] == one["linux-64/numpy-2.0.1-py311_0.conda"]
    assert not [r for r in repodata["packages.conda"].values() if "indexed_timestamp" in r]


def test_source_date_epoch_sets_every_member_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = build_channel(tmp_path / "default", toy_packages()[-1:])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = build_channel(tmp_path / "dated", toy_packages()[-1:])
    (package,) = dated.glob("noarch/*.conda")
    stem = package.name.removesuffix(".conda")
    with zipfile.ZipFile(package) as archive:
        assert [i.filename for i in archive.infolist()] == ["metadata.json", f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"]
        assert {i.date_time for i in archive.infolist()} == {time.gmtime(1700000000)[:6]}
        pkg = zstandard.ZstdDecompressor().decompress(archive.read(archive.infolist()[2]))
    with tarfile.open(fileobj=io.BytesIO(pkg)) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    assert _digests(default) != _digests(dated)

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH must be a whole number"):
        source_date_epoch()


@pytest.mark.parametrize("module, runs", [("toy_channel", 5), ("image_channel", 2)])
def test_channel_builders_exit_cleanly(tmp_path: Path, module: str, runs: int) -> None:
    # An in-process py-rattler index used to crash the interpreter's exit in about one run in
    # five (SIGSEGV/SIGABRT): seven clean exits in a row would have happened about one time in five.
    for attempt in range(runs):
        target = tmp_path / str(attempt)
        proc = subprocess.run([sys.executable, "-m", f"conda_envkit.testing.{module}", str(target)], capture_output=True, text=True)
        assert (proc.returncode, proc.stderr) == (0, ""), f"run {attempt + 1}: exit {proc.returncode}\n{proc.stderr}"
        assert (target / "noarch" / "repodata.json").is_file()
