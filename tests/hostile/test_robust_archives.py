"""Package archives py-rattler cannot read, though their sha256 matches the lock (issue 15).

A channel can publish a broken or hostile `.conda` and a lock made from it then
carries its (matching) hash. install, dockerfile and bake must say which package
is broken, exit 2, and leave no prefix or staging directory behind.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from conda_envkit.testing.local_channel import PackageFile, PackageSpec, _tar_zst, build_channel
from tests.conftest import run_envkit, write_env

GOOD_INDEX = {"name": "evil", "version": "1.0", "build": "0", "build_number": 0, "depends": [], "subdir": "noarch", "noarch": "generic"}


def _conda(out: Path, index: object, info_extra: tuple = ()) -> None:
    stem = out.name[: -len(".conda")]
    body = index if isinstance(index, bytes) else json.dumps(index).encode()
    info = [("info/index.json", body, 0o644), ("info/paths.json", b'{"paths": [], "paths_version": 1}', 0o644), *info_extra]
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"info-{stem}.tar.zst", _tar_zst(info))
        archive.writestr(f"pkg-{stem}.tar.zst", _tar_zst([]))


def _zip_without_info(out: Path) -> None:
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))


BROKEN = {
    "not-a-zip": lambda out: out.write_bytes(b"this is not a conda package\n" * 10),
    "truncated": lambda out: out.write_bytes(out.read_bytes()[:200]),
    "no-info": _zip_without_info,
    "index-not-json": lambda out: _conda(out, b"\xff\xfe not json"),
    "index-a-list": lambda out: _conda(out, []),
    "index-bad-version": lambda out: _conda(out, {**GOOD_INDEX, "version": "1.0!!@@"}),
    "index-depends-int": lambda out: _conda(out, {**GOOD_INDEX, "depends": 5}),
}


@pytest.fixture
def evil_lock(tmp_path: Path) -> tuple[Path, Path]:
    """A lock of one package `evil` from a local channel, and the channel's archive of it."""
    channel = build_channel(tmp_path / "channel", [PackageSpec("evil", files=(PackageFile("share/evil.txt", b"evil\n"),))], ("linux-64",))
    work = tmp_path / "work"
    write_env(work, f"channels: [{channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - evil\n")
    result = run_envkit("lock", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "conda-lock.yml", channel / "noarch" / "evil-1.0-0.conda"


def _rehash(lock: Path, archive: Path, old: bytes) -> None:
    # The channel served the broken file when the lock was made: the lock carries its hashes.
    new = archive.read_bytes()
    text = lock.read_text(encoding="utf-8")
    text = text.replace(hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest())
    text = text.replace(hashlib.md5(old).hexdigest(), hashlib.md5(new).hexdigest())  # noqa: S324 - conda's md5 field
    lock.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("command", ["install", "dockerfile"])
def test_unreadable_archive_with_matching_hash(tmp_path: Path, evil_lock: tuple[Path, Path], kind: str, command: str) -> None:
    lock, archive = evil_lock
    old = archive.read_bytes()
    BROKEN[kind](archive)
    _rehash(lock, archive, old)
    out = tmp_path / "out"
    out.mkdir()
    args = ["--prefix", "env"] if command == "install" else ["--recipe", "scratch", "-o", "ctx"]
    result = run_envkit(command, "--lockfile", lock, "-p", "linux-64", *args, cwd=out, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.output  # run_envkit asserts no traceback
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "evil" in errors[0], errors[0]
    assert list(out.iterdir()) == []  # no prefix, context or staging directory


@pytest.mark.parametrize("kind", [".conda", ".tar.bz2"])
@pytest.mark.parametrize("member", ["info/paths.json", "info/index.json"])
def test_package_metadata_over_its_cap_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, member: str, kind: str
) -> None:
    # A package's info/*.json is read into memory whole: zstd or bz2 turn a few KiB into gigabytes
    # of it. The cap is lowered here so the bomb can stay small; the check reads the tar header.
    from conda_envkit import pkginfo
    from conda_envkit.testing.hostile_packages import Member, _raw_tar_zst

    monkeypatch.setattr(pkginfo, "MAX_INFO_FILE_BYTES", 1 << 20)
    small = {"info/index.json": json.dumps({"name": "bomb", "version": "1.0", "build": "0", "build_number": 0}).encode()}
    small["info/paths.json"] = json.dumps({"paths": [], "paths_version": 1}).encode()
    bomb = {**small, member: b" " * (2 << 20)}
    archive = tmp_path / f"bomb-1.0-0{kind}"
    members = tuple(Member(name, content=data) for name, data in bomb.items())
    if kind == ".conda":
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
            z.writestr("info-bomb-1.0-0.tar.zst", _raw_tar_zst(members))
            z.writestr("pkg-bomb-1.0-0.tar.zst", _raw_tar_zst(()))
    else:
        import bz2

        import zstandard

        archive.write_bytes(bz2.compress(zstandard.ZstdDecompressor().decompressobj().decompress(_raw_tar_zst(members))))
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(pkginfo.PackageInfoError) as refused:
        pkginfo.read_conda_info(archive, "0" * 64)
    expected = f"{archive.name}: {member} is {2 << 20} bytes, over the 1 MiB that package metadata may hold"
    assert refused.value.message == expected
    assert "re-lock" in refused.value.hint
    if member == "info/paths.json":  # install's and bake's archive check reads it too
        from conda_envkit import archive_check

        with pytest.raises(archive_check.PackageContentError) as checked:
            archive_check.check_package_archive(archive, "noarch/bomb-1.0-0")
        assert checked.value.message == expected


_FILE = {"_path": "bin/tool", "path_type": "hardlink", "sha256": hashlib.sha256(b"x\n").hexdigest(), "size_in_bytes": 2}


@pytest.mark.parametrize(
    ("paths_json", "said"),
    [
        (b"{not json", "is not valid JSON"),
        (b'["a", "list"]', "is not valid JSON"),
        (b'{"paths": ["bin/tool"]}', "malformed entry"),
        (b'{"paths": [["bin/tool"]]}', "malformed entry"),
        (b'{"paths": [{"path": "bin/tool"}]}', "malformed entry"),
        (b'{"paths": [{"_path": 7}]}', "malformed entry"),
        (b'{"paths": [{"_path": {"_path": "bin/tool"}}]}', "malformed entry"),
        (b'{"paths": [{"_path": "../escape"}]}', "leaves its root"),
        # the last of a repeated key counts, as for json.loads: here the path of a file the archive does not hold
        (json.dumps({"paths": [_FILE]}).replace('"size_in_bytes"', '"_path": "bin/ghost", "size_in_bytes"').encode(), "does not hold"),
        (json.dumps({"paths": [{**_FILE, "size_in_bytes": 3}]}).encode(), "its paths.json says 3"),
    ],
)
def test_a_malformed_paths_json_is_refused_by_the_check_and_not_streamed(paths_json: bytes, said: str) -> None:
    # The archive check reads paths.json after the payload (streamed or staged) and refuses what it cannot use; the
    # layer stream reads it first and leaves a package whose entries are not entries to the staged read.
    from conda_envkit.archive_check import ArchiveEntry, PackageContentError, _check_listing
    from conda_envkit.stream_package import NotPlain, _listed

    archive = [ArchiveEntry("bin/tool", "file", _FILE["sha256"], 2)]
    with pytest.raises(PackageContentError, match=said):
        _check_listing("evil-1.0-0", archive, paths_json)
    if said == "is not valid JSON" or not any(isinstance(item, dict) for item in json.loads(paths_json)["paths"]):
        with pytest.raises(NotPlain):
            _listed("evil", paths_json)


def test_a_package_from_before_paths_json_is_refused_saying_so(tmp_path: Path) -> None:
    # conda-build 2 and older listed a package's files in info/files (and placeholders in info/has_prefix): py-rattler
    # installs packages with info/paths.json only. The error says which kind of package it is; re-locking cannot help.
    import bz2
    import io
    import tarfile

    from conda_envkit import pkginfo

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (
            ("info/index.json", json.dumps({**GOOD_INDEX, "name": "old"}).encode()),
            ("info/files", b"bin/x\n"),
            ("bin/x", b"x\n"),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    archive = tmp_path / "old-1.0-0.tar.bz2"
    archive.write_bytes(bz2.compress(raw.getvalue()))
    with pytest.raises(pkginfo.PackageInfoError) as refused:
        pkginfo.read_conda_info(archive, "0" * 64)
    assert refused.value.message.startswith("old-1.0-0.tar.bz2: has no info/paths.json, only the older info/files")
    assert "lock another build or version" in refused.value.hint and "re-lock" not in refused.value.hint
