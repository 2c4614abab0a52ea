"""The fast tar header reader (tar_members.plain_headers) says what tarfile says, or nothing.

A bake reads every member header of every package payload with it. Wherever it answers, its answer
must be tarfile's (names, types, modes, sizes, link targets, data offsets); wherever tarfile would
read something else, stop early or fail, it must give up (None) so that tarfile reads the tar.
"""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest

from conda_envkit.archive_check import stage_package_archive
from conda_envkit.tar_members import NeedsTarfile, TarHeader, each_member, plain_headers, stream_headers
from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel

LONG = "lib/python3.11/site-packages/" + "deeply_nested_module/" * 6 + "with_a_long_file_name.py"  # > 100 bytes: pax path


def _tar(fmt: int, entries: list[tuple[str, str, bytes | str]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for kind, name, body in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                assert isinstance(body, bytes)
                info.size, info.mode = len(body), 0o755 if name.startswith("bin/") else 0o644
                tar.addfile(info, io.BytesIO(body))
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(body)
                tar.addfile(info)
    return out.getvalue()


ENTRIES: list[tuple[str, str, bytes | str]] = [
    ("dir", "bin", b""),
    ("file", "bin/tool", b"#!/bin/sh\necho hi\n"),
    ("file", "share/empty", b""),
    ("file", "lib/big.bin", bytes(range(256)) * 700),
    ("file", LONG, b"print('long')\n"),
    ("file", "share/caf\u00e9/r\u00e9sum\u00e9.txt", b"accents\n"),
    ("symlink", "bin/alias", "tool"),
    ("symlink", "lib/far", "../" * 40 + "target/with/a/very/long/link/target/that/does/not/fit/in/a/ustar/header"),
    ("hardlink", "bin/tool2", "bin/tool"),
    ("dir", "share/" + "d" * 120, b""),
]


def _fields(members: list[tarfile.TarInfo] | list[TarHeader]) -> list[tuple[object, ...]]:
    return [(m.name, m.type, m.mode, m.size, m.linkname, m.offset_data) for m in members]


def _tarfile_reads(data: bytes, start: int = 0) -> list[tuple[object, ...]] | None:
    """What tarfile reads from `data` at `start` (as the archive check opens a payload), None if it fails."""
    f = io.BytesIO(data)
    f.seek(start)
    try:
        return _fields(list(each_member(tarfile.open(fileobj=f, mode="r:"))))
    except (tarfile.TarError, EOFError, ValueError):
        return None


def _fast(tmp_path: Path, data: bytes, start: int = 0) -> list[TarHeader] | None:
    path = tmp_path / "payload.tar"
    path.write_bytes(data)
    with path.open("rb") as f:
        return plain_headers(f, start, len(data))


class _Stream:
    """A tar read front to back, as a bake reads a package's payload while decompressing it."""

    def __init__(self, data: bytes) -> None:
        self.file = io.BytesIO(data)
        self.consumed = 0

    def read(self, size: int) -> bytes:
        data = self.file.read(size)
        self.consumed += len(data)
        return data


def _streamed(data: bytes, read_some: bool = False) -> list[TarHeader] | None:
    """stream_headers' members of `data` (None where it leaves the tar to tarfile); `read_some` reads part of
    every file's content between headers, as a consumer may."""
    source = _Stream(data)
    out = []
    try:
        for header in stream_headers(source):
            out.append(header)
            if read_some and header.size:
                source.read(header.size // 2 + 1)
    except NeedsTarfile:
        return None
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_fast_reader_reads_what_tarfile_reads(tmp_path: Path, fmt: int) -> None:
    fits_ustar = [e for e in ENTRIES if e[1].isascii() and len(e[1]) < 100 and e[1] != "lib/far"]
    entries = ENTRIES if fmt == tarfile.PAX_FORMAT else fits_ustar
    data = _tar(fmt, entries)
    fast = _fast(tmp_path, data)
    assert fast is not None, "the fast reader must handle what tarfile writes in this format"
    assert _fields(fast) == _tarfile_reads(data)
    assert [m.name for m in fast][: len(entries)] == [name for _, name, _ in entries]
    assert _streamed(data) == fast  # the streaming reader too, whether the files are read or skipped
    assert _streamed(data, read_some=True) == fast


def test_two_tars_in_one_payload_are_read_from_their_own_offsets(tmp_path: Path) -> None:
    first, second = _tar(tarfile.PAX_FORMAT, ENTRIES[:3]), _tar(tarfile.PAX_FORMAT, ENTRIES[3:])
    data = first + second
    fast = _fast(tmp_path, data, len(first))
    assert fast is not None
    assert _fields(fast) == _tarfile_reads(data, len(first))
    assert all(m.offset_data > len(first) for m in fast)


@pytest.mark.parametrize(
    ("why", "build"),
    [
        ("gnu long name", lambda: _tar(tarfile.GNU_FORMAT, [("file", LONG, b"x")])),
        ("empty payload", lambda: b""),
        ("truncated member data", lambda: _tar(tarfile.PAX_FORMAT, ENTRIES)[:2000]),
        ("half a header", lambda: _tar(tarfile.PAX_FORMAT, ENTRIES[:2])[: 512 + 300]),
        ("unknown pax record", lambda: _pax_tar({"SCHILY.xattr.user.x": "1", "path": "lib/a"})),
        ("pax charset", lambda: _pax_tar({"hdrcharset": "BINARY", "path": "lib/a"})),
        ("global pax header", lambda: _global_pax_tar()),
        ("fifo", lambda: _special_tar(tarfile.FIFOTYPE)),
        ("gnu sparse", lambda: _special_tar(tarfile.GNUTYPE_SPARSE)),
    ],
)
def test_fast_reader_leaves_other_tars_to_tarfile(tmp_path: Path, why: str, build: object) -> None:
    data = build()  # type: ignore[operator]
    assert _fast(tmp_path, data) is None, why
    assert _streamed(data) is None, why


def _pax_tar(records: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("lib/a")
        info.size = 1
        info.pax_headers = records
        tar.addfile(info, io.BytesIO(b"a"))
    return out.getvalue()


def _global_pax_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}) as tar:
        info = tarfile.TarInfo("lib/a")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    return out.getvalue()


def _special_tar(kind: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("lib/special")
        info.type = kind
        tar.addfile(info)
    return out.getvalue()


def test_damaged_headers_are_read_as_tarfile_reads_them_or_left_to_it(tmp_path: Path) -> None:
    """Thousands of single-byte changes in the header blocks: whenever the fast reader answers, tarfile agrees."""
    data = _tar(tarfile.PAX_FORMAT, ENTRIES)
    headers = [m.offset_data - 512 for m in _fast(tmp_path, data) or []]
    pax = [h - 1024 for h in headers if data[h - 1024 + 156 : h - 1024 + 157] == b"x"]
    blocks = headers + pax
    rng = random.Random(18)
    path = tmp_path / "damaged.tar"
    answered = refused = 0
    with path.open("w+b") as f:
        for _ in range(3000):
            damaged = bytearray(data)
            block = rng.choice(blocks)
            for _ in range(rng.choice((1, 1, 2))):
                pos = block + rng.randrange(1024 if block in pax else 512)
                damaged[pos] = rng.choice((0, 0x20, 0x2F, 0x30, 0x37, 0x38, 0x80, 0xFF, rng.randrange(256)))
            # The checksum is fixed up half the time, so the damage reaches the fields themselves.
            if rng.random() < 0.5:
                chunk = bytes(damaged[block : block + 512])
                damaged[block + 148 : block + 156] = b"%06o\0 " % (256 + sum(chunk[:148]) + sum(chunk[156:]))
            f.seek(0)
            f.truncate()
            f.write(damaged)
            f.flush()
            fast = plain_headers(f, 0, len(damaged))
            assert _streamed(bytes(damaged)) == fast, f"block at {block}"  # the streaming reader answers alike
            if fast is None:
                refused += 1
                continue
            answered += 1
            assert _fields(fast) == _tarfile_reads(bytes(damaged)), f"block at {block}"
    assert answered > 300 and refused > 300  # both sides of the reader were exercised


def _staged_fast(monkeypatch: pytest.MonkeyPatch, archive: Path, label: str, payload: Path) -> object:
    """The archive staged, after checking that the fast reader (not tarfile) read its payload's headers."""
    import conda_envkit.archive_check as archive_check

    answers: list[object] = []

    def spy(*args: object) -> object:
        answers.append(plain_headers(*args))  # type: ignore[arg-type]
        return answers[-1]

    with monkeypatch.context() as patch:
        patch.setattr(archive_check, "plain_headers", spy)
        staged = stage_package_archive(archive, label, payload)
    assert answers and all(a is not None for a in answers)
    return staged


def test_staged_package_reads_the_same_with_either_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PackageSpec(
        "headers",
        files=(
            PackageFile("bin/tool", b"#!/bin/sh\n", executable=True),
            PackageFile(LONG, b"print(1)\n"),
            PackageFile("share/caf\u00e9.txt", b"x" * 5000),
        ),
        symlinks=(("bin/alias", "tool"),),
    )
    archive = next((build_channel(tmp_path / "channel", [spec]) / "noarch").glob("headers-*.conda"))
    fast = _staged_fast(monkeypatch, archive, "headers", tmp_path / "fast.tar")
    import conda_envkit.archive_check as archive_check

    monkeypatch.setattr(archive_check, "plain_headers", lambda *args: None)
    slow = stage_package_archive(archive, "headers", tmp_path / "slow.tar")
    assert fast.members == slow.members
    assert fast.paths_json == slow.paths_json
    assert any(m.sha256 for m in fast.members)  # hashed: the content was read by offset


def _as_tar_bz2(conda: Path, out: Path) -> Path:
    """The same package as a `.tar.bz2` (info/ first, then the payload, one tarball), as conda-build writes it."""
    import bz2
    import zipfile

    import zstandard

    merged = io.BytesIO()
    with zipfile.ZipFile(conda) as z, tarfile.open(fileobj=merged, mode="w", format=tarfile.PAX_FORMAT) as dest:
        for prefix in ("info-", "pkg-"):
            name = next(n for n in z.namelist() if n.startswith(prefix))
            inner = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(z.read(name))).read()
            with tarfile.open(fileobj=io.BytesIO(inner), mode="r:") as src:
                for member in src.getmembers():
                    dest.addfile(member, src.extractfile(member) if member.isfile() else None)
    out.write_bytes(bz2.compress(merged.getvalue()))
    return out


def test_staged_tar_bz2_reads_the_same_with_either_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PackageSpec(
        "oldformat",
        files=(PackageFile("bin/tool", b"#!/bin/sh\n", executable=True), PackageFile(LONG, b"print(2)\n")),
        symlinks=(("bin/alias", "tool"),),
    )
    conda = next((build_channel(tmp_path / "channel", [spec]) / "noarch").glob("oldformat-*.conda"))
    archive = _as_tar_bz2(conda, tmp_path / "oldformat-1.0-0.tar.bz2")
    fast = _staged_fast(monkeypatch, archive, "oldformat", tmp_path / "fast.tar")
    import conda_envkit.archive_check as archive_check

    monkeypatch.setattr(archive_check, "plain_headers", lambda *args: None)
    slow = stage_package_archive(archive, "oldformat", tmp_path / "slow.tar")
    assert fast.members == slow.members
    assert fast.paths_json is not None and fast.paths_json == slow.paths_json
    assert {m.path for m in fast.members} >= {"bin/tool", "bin/alias", LONG}


def test_a_pax_header_claiming_gigabytes_is_left_to_tarfile_without_reading_it(tmp_path: Path) -> None:
    """A hostile payload's pax header may claim 8 GiB of records: the reader must not allocate what it claims."""
    import tracemalloc

    data = bytearray(_pax_tar({"path": "lib/a"}))
    assert data[156:157] == b"x"
    data[124:136] = b"77777777777\0"  # the largest size an octal field holds
    data[148:156] = b"%06o\0 " % (256 + sum(data[:148]) + sum(data[156:512]))
    tracemalloc.start()
    try:
        assert _fast(tmp_path, bytes(data)) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
