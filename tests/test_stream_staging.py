"""The pieces of a cold bake's streaming path: an archive staged while it is checked, the tar
writer's reused buffer, and blobs the store wrote itself."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
import zipfile
from pathlib import Path

import pytest

from conda_envkit.archive_check import (
    ArchiveEntry,
    PackageContentError,
    check_links_together,
    check_package_archive,
    stage_package_archive,
)
from conda_envkit.oci.blobs import BlobStore, OciError
from conda_envkit.oci.tarstream import FILE, SYMLINK, Member, TarWriter
from conda_envkit.safepath import UnsafePathError, resolve_in_root
from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel

BIG = bytes(range(256)) * 10_000 + b"tail"  # 2.5 MB: more than the writer's buffer, not a multiple of it


def _archive(tmp_path: Path) -> Path:
    spec = PackageSpec(
        "staged",
        files=(
            PackageFile("lib/big.bin", BIG),
            PackageFile("bin/tool", b"#!/bin/sh\necho hi\n", executable=True),
            PackageFile("share/empty", b""),
        ),
        symlinks=(("bin/alias", "tool"),),
    )
    channel = build_channel(tmp_path / "channel", [spec])
    return next((channel / "noarch").glob("staged-*.conda"))


def test_staged_payload_holds_each_file_at_its_offset(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    staged = stage_package_archive(archive, "staged", tmp_path / "payload.tar")
    assert staged.checked() == check_package_archive(archive, "staged")  # the same check, the same findings
    assert staged.paths_json is not None and b"lib/big.bin" in staged.paths_json
    payload = staged.payload.read_bytes()
    files = {e.path: e for e in staged.members if e.kind == "file"}
    assert payload[files["lib/big.bin"].offset :][: len(BIG)] == BIG
    assert payload[files["bin/tool"].offset :][: files["bin/tool"].size] == b"#!/bin/sh\necho hi\n"
    assert hashlib.sha256(BIG).hexdigest() == files["lib/big.bin"].sha256
    assert [e.target for e in staged.members if e.kind == "symlink"] == ["tool"]


def test_tar_writer_bytes_are_tarfile_pax_bytes(tmp_path: Path) -> None:
    source = tmp_path / "payload"
    source.write_bytes(b"x" * 700 + BIG)
    members = [
        Member("opt/env/bin/tool", FILE, 0o755, 5, data=b"hello"),
        Member("opt/env/lib/big.bin", FILE, 0o644, len(BIG), source=source, offset=700),
        Member("opt/env/lib/link", SYMLINK, 0o777, linkname="big.bin"),
        Member("opt/env/share/" + "é" * 120, FILE, 0o644, 3, data=b"abc"),
    ]
    out = io.BytesIO()
    writer = TarWriter(out, 0)
    for m in members:
        writer.add(m)
    writer.close()

    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.path)
            info.mode, info.mtime, info.uname, info.gname = m.mode, 0, "", ""
            if m.kind == SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, m.linkname
                tar.addfile(info)
            else:
                content = m.data if m.data is not None else BIG
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    assert out.getvalue() == expected.getvalue()


def test_a_blob_edited_after_the_store_wrote_it_is_hashed_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"layer bytes" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tmp = store.temp_path()
    tmp.write_bytes(data)
    path = store.adopt(tmp, digest)
    assert store.verified_path(digest) == path  # written here, unchanged: trusted
    before = path.stat().st_mtime_ns
    path.write_bytes(b"LAYER BYTES" * 1000)  # same size, other bytes, same inode
    os.utime(path, ns=(before + 1, before + 1))  # as a fine-grained clock would have it, whatever the file system's
    with pytest.raises(OciError, match="does not match its digest"):
        store.verified_path(digest)


def test_an_archive_checked_once_is_not_hashed_again_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit import archive_check
    from conda_envkit.install import is_checked, mark_checked

    archive = _archive(tmp_path)
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert not is_checked(archive, sha256)
    mark_checked(archive, sha256)
    assert is_checked(archive, sha256)
    hashed: list[str] = []
    real = archive_check.hash_member
    monkeypatch.setattr(archive_check, "hash_member", lambda tar, m, keep=False: (hashed.append(m.name), real(tar, m, keep))[1])
    unhashed = stage_package_archive(archive, "staged", tmp_path / "again.tar", hashed=False)
    assert hashed == ["info/paths.json"]  # read for the listing; no payload file hashed
    assert [(e.path, e.offset) for e in unhashed.members] == [
        (e.path, e.offset) for e in stage_package_archive(archive, "staged", tmp_path / "p.tar").members
    ]
    # An edit in place (same size, mtime put back) changes the ctime: the stamp no longer holds.
    st = archive.stat()
    data = bytearray(archive.read_bytes())
    data[-1] ^= 1
    archive.write_bytes(bytes(data))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not is_checked(archive, sha256)


def test_archives_staged_into_one_payload_file_keep_their_own_offsets(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    shared = tmp_path / "groups.tar"
    first = stage_package_archive(archive, "staged", shared)
    second = stage_package_archive(archive, "staged", shared)
    payload = shared.read_bytes()
    big = [e for s in (first, second) for e in s.members if e.path == "lib/big.bin"]
    assert big[0].offset < len(payload) // 2 < big[1].offset  # the second one was appended
    assert all(payload[e.offset :][: len(BIG)] == BIG for e in big)


def test_a_checked_marker_without_this_users_seal_is_not_trusted(tmp_path: Path) -> None:
    from conda_envkit.cache_seal import user_seal
    from conda_envkit.install import _CHECKED, _stamp, is_checked, mark_checked

    archive = _archive(tmp_path)
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    marker = archive.parent / f"checked.{user_seal().owner}"
    # Someone who can write the cache, but not read this user's secret: the right stamp, no seal.
    marker.write_text(f"{_CHECKED} {_stamp(archive, sha256)}", encoding="utf-8")
    assert not is_checked(archive, sha256)
    mark_checked(archive, sha256)
    assert is_checked(archive, sha256)


def test_package_info_from_the_info_tarball_is_rattlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # read_conda_info reads index.json and paths.json from a .conda's info tarball itself (rattler's reader scans
    # the whole zip in 1 KiB reads); what it makes of them must be what rattler's archive reader gives.
    from conda_envkit import pkginfo
    from conda_envkit.testing.toy_channel import toy_packages

    specs = [s for s in toy_packages() if s.subdir in ("noarch", "linux-64")]
    specs.append(
        PackageSpec(
            "placeholder",
            subdir="linux-64",
            files=(PackageFile("bin/tool", b"#!/opt/anaconda1anaconda2anaconda3/bin/python\n", executable=True, has_prefix=True),),
            symlinks=(("bin/alias", "tool"),),
        )
    )
    channel = build_channel(tmp_path / "channel", specs, subdirs=("linux-64",))
    # A binary prefix placeholder (the bake replaces it: plain), and a no_link file (rattler's to copy: not plain).
    from conda_envkit.testing.hostile_packages import HostilePackage, Member, write_hostile_package

    data = b"\x7fELF/opt/anaconda1anaconda2anaconda3/lib\x00"
    entry = {"_path": "lib/libx.so", "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}
    binary = {**entry, "prefix_placeholder": "/opt/anaconda1anaconda2anaconda3", "file_mode": "binary"}
    write_hostile_package(HostilePackage("binary-placeholder", (Member("lib/libx.so", content=data),), (binary,)), channel)
    write_hostile_package(HostilePackage("no-link", (Member("lib/libx.so", content=data),), ({**entry, "no_link": True},)), channel)
    archives = sorted(channel.glob("*/*.conda"))
    assert len(archives) >= 10
    fast = [pkginfo.read_conda_info(a, "0" * 64) for a in archives]
    assert all(pkginfo._conda_info_files(a) is not None for a in archives)  # the fast path was taken
    monkeypatch.setattr(pkginfo, "_conda_info_files", lambda archive: None)
    assert fast == [pkginfo.read_conda_info(a, "0" * 64) for a in archives]
    plain = {info.name: info.plain for info in fast}
    assert plain["placeholder"] and plain["binary-placeholder"] and not plain["no-link"]
    assert any(plain.values()) and not all(plain.values())


def test_package_info_without_paths_json_is_an_error_either_way(tmp_path: Path) -> None:
    import zipfile

    from conda_envkit import pkginfo

    archive = _archive(tmp_path)
    broken = tmp_path / "broken-1.0-0.conda"
    with zipfile.ZipFile(archive) as z, zipfile.ZipFile(broken, "w") as out:
        for item in z.infolist():
            data = z.read(item)
            if item.filename.startswith("info-"):
                import zstandard

                raw = io.BytesIO()
                plain = io.BytesIO(zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 24))
                with tarfile.open(fileobj=plain) as src, tarfile.open(fileobj=raw, mode="w") as dst:
                    for m in src.getmembers():
                        if m.name != "info/paths.json":
                            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
                data = zstandard.ZstdCompressor().compress(raw.getvalue())
            out.writestr(item, data)
    assert pkginfo._conda_info_files(broken) is None
    with pytest.raises(pkginfo.PackageInfoError, match=r"broken-1\.0-0\.conda: cannot read info/index\.json or info/paths\.json"):
        pkginfo.read_conda_info(broken, "0" * 64)


def _links_by_walking_entries(payloads: dict[str, list[ArchiveEntry]]) -> str | None:
    """The first problem a walk of every entry finds (the check as it was before link summaries), or None."""
    links = {e.path: e.target for entries in payloads.values() for e in entries if e.kind == "symlink"}
    owner = {e.path: label for label, entries in payloads.items() for e in entries if e.kind == "symlink"}
    for label, entries in payloads.items():
        for e in entries:
            parts = e.path.split("/")
            for i in range(1, len(parts)):
                if (parent := "/".join(parts[:i])) in links:
                    return f"{label}: {e.path} would be written through the symlink {parent} -> {links[parent]} of {owner[parent]}"
    try:
        for path, target in links.items():
            resolve_in_root(links, f"{path.rpartition('/')[0]}/{target}" if "/" in path else target, strict=True)
    except UnsafePathError:
        return "leaves the prefix"
    return None


def test_link_summaries_find_what_walking_every_entry_finds() -> None:
    # A bake keeps per package only its symlinks and directories (payload_links), not every entry, until all
    # packages are read; the check must name the same entry and symlink a walk of every entry names.
    rng = random.Random(5)
    names = ["a", "b", "c", "lib", "bin", "x"]
    found = {"through": 0, "chain": 0, "none": 0}
    for _ in range(3000):
        payloads: dict[str, list[ArchiveEntry]] = {}
        for p in range(rng.randint(1, 3)):
            entries = []
            for _ in range(rng.randint(1, 6)):
                path = "/".join(rng.choice(names) for _ in range(rng.randint(1, 4)))
                if rng.random() < 0.3:
                    target = rng.choice(["..", "../..", "x", "a/b", "/etc", "../x/y", "c"])
                    entries.append(ArchiveEntry(path, "symlink", target=target))
                else:
                    entries.append(ArchiveEntry(path, "file"))
            payloads[f"pkg{p}"] = entries
        expected = _links_by_walking_entries(payloads)
        try:
            check_links_together(payloads)
            got = None
        except PackageContentError as exc:
            got = exc.message if "written through" in exc.message else "leaves the prefix"
        assert got == expected, payloads
        found["none" if got is None else "through" if "through" in got else "chain"] += 1
    assert min(found.values()) > 100  # every outcome was exercised


def _rezip(archive: Path, out: Path, pkg_compression: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """`archive` written again with its pkg- member compressed as asked; that member's entry."""
    with zipfile.ZipFile(archive) as z, zipfile.ZipFile(out, "w") as new:
        for item in z.infolist():
            compress = pkg_compression if item.filename.startswith("pkg-") else zipfile.ZIP_STORED
            new.writestr(item.filename, z.read(item), compress_type=compress)
    with zipfile.ZipFile(out) as z:
        return next(i for i in z.infolist() if i.filename.startswith("pkg-"))


def test_stored_pkg_member_is_read_from_the_archive_and_deflated_one_through_zipfile(tmp_path: Path) -> None:
    # The pkg tarball (stored, as in every .conda) is read straight from the archive file, without zipfile's
    # CRC pass; a deflated one (no .conda has it, zip allows it) still goes through zipfile: the same payload.
    archive = _archive(tmp_path)
    expected = stage_package_archive(archive, "staged", tmp_path / "a.tar")
    deflated = tmp_path / "deflated" / archive.name
    deflated.parent.mkdir()
    assert _rezip(archive, deflated, zipfile.ZIP_DEFLATED).compress_type == zipfile.ZIP_DEFLATED
    again = stage_package_archive(deflated, "staged", tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert again.members == expected.members


@pytest.mark.parametrize("damage", ["local-header", "local-name", "cut-short"])
def test_stored_pkg_member_that_is_not_where_the_zip_says_is_refused(tmp_path: Path, damage: str) -> None:
    archive = _archive(tmp_path)
    with zipfile.ZipFile(archive) as z:
        pkg = next(i for i in z.infolist() if i.filename.startswith("pkg-"))
    data = bytearray(archive.read_bytes())
    if damage == "local-header":
        data[pkg.header_offset : pkg.header_offset + 4] = b"PK\x09\x09"
    elif damage == "local-name":
        data[pkg.header_offset + 30] ^= 0x20  # the local header names another member than the directory does
    else:  # the central directory gives the member more bytes than the archive holds (a download cut short)
        entry = data.index(b"PK\x01\x02")
        while data[entry + 46 : entry + 46 + len(pkg.filename)] != pkg.filename.encode():
            entry = data.index(b"PK\x01\x02", entry + 4)
        data[entry + 20 : entry + 24] = (len(data) + 1).to_bytes(4, "little")
    broken = tmp_path / "broken" / archive.name
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    # Refused as a zip that holds what its directory does not list (conda_envkit.archive_check.check_zip_layout), or
    # one cut short, before any member is read.
    said = "its zip holds data its directory does not list|is not a readable package"
    with pytest.raises(PackageContentError, match=said):
        stage_package_archive(broken, "staged", tmp_path / "payload.tar")
    with pytest.raises(PackageContentError, match=said):
        check_package_archive(broken, "staged")


def test_ustar_header_with_precomputed_checksum_is_the_field_by_field_one() -> None:
    # The tar writer adds the constant fields' share of the header checksum once; a header must come out as the
    # field-by-field writer (compared with tarfile's bytes above) makes it, long, non-ASCII and oversized fields too.
    from conda_envkit.oci.tarstream import _ustar, _ustar_fields

    rng = random.Random(3)
    for _ in range(20_000):
        name = "".join(rng.choice("abé/._-x") for _ in range(rng.randint(0, 130)))
        link = "".join(rng.choice("ab/..x") for _ in range(rng.randint(0, 120)))
        fields = (name, rng.choice("025x"), rng.randint(0, 0o17777), rng.choice([0, rng.randint(1, 8**11 - 1), 8**11 + 5]))
        mtime = rng.choice([0, rng.randint(1, 2**31), 8**12])
        assert _ustar(*fields, mtime, link) == _ustar_fields(*fields, mtime, link), (fields, mtime, link)


def _as_tar_bz2(conda: Path, out_dir: Path) -> Path:
    """The same package as a `.tar.bz2`: info/ first, then the payload (conda-build's order)."""
    import bz2
    import io
    import tarfile
    import zipfile

    import zstandard

    out = out_dir / (conda.name[: -len(".conda")] + ".tar.bz2")
    with zipfile.ZipFile(conda) as z, bz2.open(out, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as combined:
        for prefix in ("info-", "pkg-"):
            name = next(n for n in z.namelist() if n.startswith(prefix))
            inner = io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(z.read(name)))
            with tarfile.open(fileobj=inner, mode="r:") as tar:
                for member in tar:
                    combined.addfile(member, tar.extractfile(member) if member.isfile() else None)
    return out


def test_package_info_from_a_tar_bz2_is_rattlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit import pkginfo
    from conda_envkit.testing.toy_channel import toy_packages

    channel = build_channel(tmp_path / "channel", [s for s in toy_packages() if s.subdir == "linux-64"], subdirs=("linux-64",))
    (tmp_path / "bz2").mkdir()
    archives = [_as_tar_bz2(a, tmp_path / "bz2") for a in sorted(channel.glob("linux-64/*.conda"))]
    assert archives
    fast = [pkginfo.read_conda_info(a, "0" * 64) for a in archives]
    assert all(pkginfo._conda_info_files(a) is not None for a in archives)  # read by envkit, not rattler
    monkeypatch.setattr(pkginfo, "_conda_info_files", lambda archive: None)
    assert fast == [pkginfo.read_conda_info(a, "0" * 64) for a in archives]
