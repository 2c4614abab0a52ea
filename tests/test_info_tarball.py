"""A `.conda`'s info tarball read with envkit's own header reader (the plan's package info, the streaming
check) gives what tarfile gives: the same info/index.json and info/paths.json, the same refusals; a tar
that reader does not follow is read again by tarfile."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

import conda_envkit.archive_check as archive_check
import conda_envkit.tar_members as tar_members
from conda_envkit.archive_check import NotStreamable, PackageContentError, stream_package_archive
from conda_envkit.pkginfo import _conda_info_files
from conda_envkit.tar_members import NeedsTarfile
from conda_envkit.testing.hostile_packages import Member, _raw_tar_zst

INDEX = json.dumps({"name": "pkg", "version": "1.0", "build": "0", "build_number": 0, "depends": []}).encode()
PATHS = json.dumps({"paths": [{"_path": "lib/a.txt", "path_type": "hardlink", "sha256": "0" * 64, "size_in_bytes": 2}]}).encode()
IDX, PJ = Member("info/index.json", content=INDEX), Member("info/paths.json", content=PATHS)
LONG = "info/test/" + "a_long_directory_name/" * 6 + "run_test.py"  # > 100 bytes


def _conda(path: Path, info: tuple[Member, ...], tar_format: int = tarfile.PAX_FORMAT) -> Path:
    """A `.conda` with the given info tarball and a one-file payload."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        z.writestr("pkg-pkg-1.0-0.tar.zst", _raw_tar_zst((Member("lib/a.txt", content=b"a\n"),)))
        z.writestr("info-pkg-1.0-0.tar.zst", _raw_tar_zst(info, tar_format))
    return path


def _with_tarfile_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise NeedsTarfile

    monkeypatch.setattr(tar_members, "stream_headers", refuse)
    monkeypatch.setattr(archive_check, "stream_headers", refuse)


VARIANTS = {
    "pax": ((IDX, PJ), tarfile.PAX_FORMAT),
    "ustar, paths first": ((PJ, IDX), tarfile.USTAR_FORMAT),
    # A GNU long-name record: only tarfile reads it (the fast reader gives up, and tarfile reads the tar again).
    "gnu long name": (
        (IDX, Member(LONG, content=b"print(1)\n"), PJ),
        tarfile.GNU_FORMAT,
    ),
    "pax long name": ((Member(LONG, content=b"x"), IDX, PJ), tarfile.PAX_FORMAT),
    "paths.json twice": (
        (IDX, Member("info/paths.json", content=b'{"paths": []}'), PJ),
        tarfile.PAX_FORMAT,
    ),
    "no paths.json": ((IDX,), tarfile.PAX_FORMAT),
    "a directory and a symlink": (
        (Member("info", kind="dir", mode=0o755), IDX, Member("info/link", kind="symlink", target="index.json"), PJ),
        tarfile.PAX_FORMAT,
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_info_read_by_envkit_is_what_tarfile_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    members, tar_format = VARIANTS[variant]
    archive = _conda(tmp_path / "pkg-1.0-0.conda", members, tar_format)
    tarfile_opened: list[object] = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: tarfile_opened.append(a) or real_open(*a, **k))
    fast_info = _conda_info_files(archive)
    with stream_package_archive(archive, "pkg") as streamed:
        fast_paths = streamed.paths_json
    assert bool(tarfile_opened) == (variant == "gnu long name")  # tarfile reads only the tar the fast reader gives up on
    monkeypatch.undo()
    _with_tarfile_only(monkeypatch)
    assert fast_info == _conda_info_files(archive)
    with stream_package_archive(archive, "pkg") as streamed:
        assert fast_paths == streamed.paths_json
    if variant == "paths.json twice":
        assert fast_info is not None and json.loads(fast_info[1]) == {"paths": []}  # the first, as tarfile's reader takes it
        assert fast_paths == PATHS  # the check takes the last one, as the staged read does


HOSTILE = {
    "outside info/": (Member("lib/evil.so", content=b"x"),),
    "dot-dot": (Member("info/../../evil", content=b"x"),),
    "absolute": (Member("/etc/evil", content=b"x"),),
    "symlink out": (Member("info/evil", kind="symlink", target="../../../../etc/passwd"),),
    "a fifo": (Member("info/fifo", kind="fifo"),),
}


@pytest.mark.parametrize("variant", HOSTILE)
def test_a_hostile_info_tarball_is_refused_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    members = (IDX, *HOSTILE[variant], PJ)
    archive = _conda(tmp_path / "pkg-1.0-0.conda", members)

    def refusal() -> str:
        with pytest.raises((PackageContentError, NotStreamable)) as caught, stream_package_archive(archive, "pkg"):
            pass
        return f"{type(caught.value).__name__}: {caught.value}"

    fast = refusal()
    _with_tarfile_only(monkeypatch)
    assert fast == refusal()
    assert fast.startswith("PackageContentError")


def test_a_truncated_info_tarball_is_what_tarfile_makes_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zstandard

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("info/index.json", INDEX), ("info/paths.json", PATHS)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    cut = raw.getvalue()[: 512 * 3 + 100]  # inside info/paths.json's content
    archive = tmp_path / "pkg-1.0-0.conda"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg-pkg-1.0-0.tar.zst", _raw_tar_zst((Member("lib/a.txt", content=b"a\n"),)))
        z.writestr("info-pkg-1.0-0.tar.zst", zstandard.ZstdCompressor().compress(cut))
    fast = _conda_info_files(archive)
    _with_tarfile_only(monkeypatch)
    assert fast == _conda_info_files(archive)
