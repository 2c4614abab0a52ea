"""A conda package archive checked against itself before anything of it is linked.

The lock's sha256 says the archive is the one that was locked, not that it is sane: a
package may be hostile. Before install links it, every entry of its tarballs must stay
inside the prefix (no absolute path, no `..`, no symlink pointing out, nothing but files,
directories and links), and every file its `info/paths.json` lists must be in the archive
with the sha256 and size paths.json gives (conda's own invariant, which verify relies on).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from conda_envkit.cache import CACHE_SETTING
from conda_envkit.errors import EnvkitError
from conda_envkit.files import GuardedFile
from conda_envkit.pkginfo import INFO_CAP_HINT, conda_tarball, conda_tarball_stream, info_over_cap
from conda_envkit.safepath import UnsafePathError, relative_path, resolve_in_root, symlink_target_inside
from conda_envkit.tar_members import (
    CountedStream,
    NeedsTarfile,
    TarHeader,
    each_member,
    plain_headers,
    read_either_way,
    stream_headers,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME_MAX, _PATH_MAX = 255, 4095  # bytes: one path component, a whole path (Linux's NAME_MAX, PATH_MAX less its NUL)


class PackageContentError(EnvkitError):
    """A package archive whose contents are unsafe or contradict its own metadata."""


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One file or symlink of a package's payload, as found in the archive."""

    path: str
    kind: str  # file, symlink, directory
    sha256: str = ""
    size: int = 0
    target: str = ""
    mode: int = 0o644
    offset: int = 0  # where a file's content starts in the staged payload tar (stage_package_archive)


@dataclass(frozen=True)
class StagedArchive:
    """A checked package archive whose payload tar was decompressed once into `payload`, read back by offset."""

    payload: Path
    members: tuple[ArchiveEntry, ...]  # the payload's entries in archive order (info/ left out), duplicates kept
    paths_json: bytes | None

    def checked(self) -> list[ArchiveEntry]:
        """The payload entries as `check_package_archive` returns them (the last of a path wins)."""
        return list({e.path: e for e in self.members}.values())


_BUFFER = 1 << 20
_HEADER_BUFFER = 64 << 10  # a payload stream's own buffer (_PayloadStream)


# What an archive may expand to: a package whose payload is more than MAX_EXPANSION times its archive (and more than
# MIN_EXPANSION_CAP) is a decompression bomb (a 129 KB .conda of 4 GiB of zeros filled the disk before any check).
# Real packages stay far below: zstd -19 / bzip2 of code, data and binaries is 2-20x.
MAX_EXPANSION = 1000
MIN_EXPANSION_CAP = 256 << 20


def expansion_cap(archive: Path) -> int:
    """How many uncompressed bytes `archive`'s tarballs may hold together."""
    return max(MIN_EXPANSION_CAP, MAX_EXPANSION * archive.stat().st_size)


def _too_big(name: str, cap: int) -> PackageContentError:
    return PackageContentError(
        f"{name} expands to more than {cap >> 20} MiB ({MAX_EXPANSION} times its size, at least {MIN_EXPANSION_CAP >> 20} MiB)",
        hint="a decompression bomb or a broken package: do not use it",
    )


class _Capped(io.RawIOBase):
    """A decompressed stream that refuses to give more than `cap` bytes (`_too_big`, naming the archive)."""

    def __init__(self, raw: IO[bytes], cap: int, name: str) -> None:
        self.raw, self.cap, self.name, self.total = raw, cap, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        got: int = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.total += got
        if self.total > self.cap:
            raise _too_big(self.name, self.cap)
        return got

    def close(self) -> None:
        self.raw.close()
        super().close()


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip local file header: 30 bytes


def check_zip_layout(z: zipfile.ZipFile, name: str) -> None:
    """Refuse a `.conda` whose bytes hold anything its zip directory does not list: every byte before the directory
    must belong to a listed entry (its local header, then its data), in order, each name once. py-rattler reads a
    `.conda` front to back, by local headers: an entry hidden from the directory (which Python's zipfile reads)
    would be installed without being checked."""
    infos = sorted(z.infolist(), key=lambda i: i.header_offset)
    if len({i.filename for i in infos}) != len(infos):
        raise _hidden_data(name)
    fp, position = z.fp, 0
    assert fp is not None
    for info in infos:
        if info.header_offset != position:
            raise _hidden_data(name)
        fp.seek(info.header_offset)
        header = fp.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise _hidden_data(name)
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != b"PK\x03\x04":
            raise _hidden_data(name)
        name_length, extra_length = fields[-2], fields[-1]
        raw_name = fp.read(name_length)
        if raw_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace") != info.orig_filename:
            raise _hidden_data(name)
        position = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
        if info.flag_bits & 0x08:  # a data descriptor follows the data: optional signature, crc, two sizes
            fp.seek(position)
            signed = fp.read(4) == b"PK\x07\x08"
            position += (4 if signed else 0) + (20 if info.file_size >= 0xFFFFFFFF or info.compress_size >= 0xFFFFFFFF else 12)
    if position != getattr(z, "start_dir", position):
        raise _hidden_data(name)


def _hidden_data(name: str) -> PackageContentError:
    return PackageContentError(
        f"{name}: its zip holds data its directory does not list", hint="the package is malformed or hostile; do not use it"
    )


def _decompressed(stream: IO[bytes], zstd: bool) -> IO[bytes]:
    import bz2

    if zstd:
        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=_BUFFER)
    return bz2.open(stream, "rb")


def _decompress_into(
    stream: IO[bytes], payload: Path, zstd: bool, opened: list[IO[bytes]], cap: int, name: str
) -> tuple[tarfile.TarFile, list[TarHeader] | None]:
    """`stream` (zstd or bz2) decompressed onto the end of `payload` in one sequential write (at most `cap` bytes),
    opened for reading by offset (its members' offsets are the file's: several archives can share one payload
    file), with its headers if the fast reader could read them all. The files opened go to `opened`, for the
    caller to close."""
    # A failed write (a full disk) is the cache's error, not the package's.
    with GuardedFile(payload, "staged package payload", CACHE_SETTING, mode="ab") as out:
        start = out.tell()
        with _decompressed(stream, zstd) as raw, _Capped(raw, cap, name) as capped:
            buffer = bytearray(_BUFFER)
            view = memoryview(buffer)
            while got := capped.readinto(buffer):
                out.write(view[:got])  # type: ignore[arg-type]
        out.flush()
    reader = payload.open("rb")
    opened.append(reader)
    reader.seek(start)
    tar = tarfile.open(fileobj=reader, mode="r:")  # noqa: SIM115 - its file is closed by the caller (`opened`)
    return tar, plain_headers(reader, start, os.fstat(reader.fileno()).st_size)


class _FileRange(io.RawIOBase):
    """`size` bytes of an open file from `offset`: a stored zip member, or a member of a staged payload.
    EOFError if the file ends first; closing it closes the file only if it was handed over (`owned`)."""

    def __init__(self, file: IO[bytes], offset: int, size: int, owned: bool = False) -> None:
        self.file, self.pos, self.left, self.owned = file, offset, size, owned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")[: self.left]
        if not view:
            return 0
        self.file.seek(self.pos)
        got: int = self.file.readinto(view)  # type: ignore[attr-defined]
        if not got:
            raise EOFError("the archive ends inside a member")
        self.pos += got
        self.left -= got
        return got

    def close(self) -> None:
        if self.owned:
            self.file.close()
        super().close()


def _stored_member(archive: Path, info: zipfile.ZipInfo) -> _FileRange:
    """The bytes of one stored (uncompressed) zip member, read straight from the archive file.

    zipfile would CRC-32 every byte on the way (2 GB of archives for a 4 GB environment); the archive
    already matched the lock's sha256, and what it holds is checked member by member anyway.
    """
    file = archive.open("rb")
    try:
        file.seek(info.header_offset)
        local = file.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{info.filename}: bad local file header")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        name = file.read(name_length).decode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
        if name != info.orig_filename:
            raise zipfile.BadZipFile(f"{info.filename}: the local file header names {name!r}")
        start = info.header_offset + 30 + name_length + extra_length
        if start + info.compress_size > os.fstat(file.fileno()).st_size:
            raise zipfile.BadZipFile(f"{info.filename}: member runs past the end of the archive")
    except BaseException:
        file.close()
        raise
    return _FileRange(file, start, info.compress_size, owned=True)


def _open_member(z: zipfile.ZipFile, archive: Path, name: str) -> IO[bytes]:
    info = z.getinfo(name)
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        return io.BufferedReader(_stored_member(archive, info), _BUFFER)
    return z.open(name)


@contextmanager
def _tar_streams(archive: Path, payload: Path | None = None) -> Iterator[list[tuple[str, tarfile.TarFile, list[TarHeader] | None]]]:
    """(kind, tar, headers) for the info and pkg tarballs of a `.conda`, or the single tarball of a `.tar.bz2`.

    With `payload`, the pkg tarball (the whole tarball of a `.tar.bz2`) is decompressed onto the end of that
    file first (in one sequential write) and read from there, so that its members can be read again by offset;
    its headers come from the fast reader where it can (`headers`, else None: read them from `tar`).
    """
    cap = expansion_cap(archive)  # (info and pkg tarballs each)
    if archive.name.endswith(".conda"):
        with zipfile.ZipFile(archive) as z:
            check_zip_layout(z, archive.name)
            names = z.namelist()
            info, pkg = conda_tarball(names, "info"), conda_tarball(names, "pkg")
            if info is None or pkg is None:
                raise PackageContentError(f"{archive.name}: not a .conda package (no info-/pkg- tarballs)", hint="the package is corrupt")
            opened: list[IO[bytes]] = []
            try:
                tars = []
                for kind, name in (("info", info), ("pkg", pkg)):
                    raw = _open_member(z, archive, name) if kind == "pkg" else z.open(name)
                    opened.append(raw)
                    headers = None
                    if kind == "pkg" and payload is not None:
                        tar, headers = _decompress_into(raw, payload, zstd=True, opened=opened, cap=cap, name=archive.name)
                    else:
                        stream = _Capped(zstandard.ZstdDecompressor().stream_reader(raw), cap, archive.name)
                        opened.append(stream)  # type: ignore[arg-type]
                        tar = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - its stream is closed in the finally below
                    tars.append((kind, tar, headers))
                yield tars
            finally:
                for f in opened:
                    f.close()
    elif payload is not None:
        files: list[IO[bytes]] = []
        try:
            with archive.open("rb") as raw:
                tar, headers = _decompress_into(raw, payload, zstd=False, opened=files, cap=cap, name=archive.name)
            yield [("both", tar, headers)]
        finally:
            for f in files:
                f.close()
    else:
        import bz2

        with _Capped(bz2.open(archive, "rb"), cap, archive.name) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            yield [("both", tar, None)]


def _entry(archive: Path, kind: str, member: tarfile.TarInfo | TarHeader) -> ArchiveEntry:
    """One tar entry after the checks every entry gets (a path inside the root, a link pointing inside it, only
    files, directories and links; in an info tarball, only info/); a file's sha256 is left for the caller."""
    name = relative_path(member.name, f"{archive.name}: tar entry")
    if len(name.encode()) > _PATH_MAX or any(len(part.encode()) > _NAME_MAX for part in name.split("/")):
        # (install failed "File name too long" with a disk-space hint; bake wrote an image no runtime could unpack)
        raise PackageContentError(
            f"{archive.name}: entry {name[:60]!r}… has a name no Linux filesystem holds ({_NAME_MAX} bytes a part, {_PATH_MAX} in all)",
            hint="the package is malformed or hostile; do not use it",
        )
    if kind == "info" and not (name == "info" or name.startswith("info/")):
        raise PackageContentError(f"{archive.name}: info tarball holds {name!r}", hint="the package is malformed or hostile; do not use it")
    if member.issym() or member.islnk():
        target = member.linkname
        ok = symlink_target_inside(name, target) if member.issym() else _hardlink_ok(target)
        if not ok:
            raise UnsafePathError(
                f"{archive.name}: link {name} -> {target} points outside the prefix",
                hint="the package is malformed or hostile; do not use it",
            )
        return ArchiveEntry(name, "symlink" if member.issym() else "hardlink", target=target)
    if member.isdir():
        return ArchiveEntry(name, "directory", mode=member.mode)
    if member.isfile():
        return ArchiveEntry(name, "file", "", member.size, mode=member.mode, offset=member.offset_data)
    raise PackageContentError(
        f"{archive.name}: entry {name} is a device, FIFO or other special file",
        hint="conda packages hold files, directories and links only; do not use it",
    )


def _paths_json(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo | TarHeader) -> tuple[str, bytes]:
    """info/paths.json's sha256 and bytes (always read: the listing is checked against it), if not over the cap."""
    too_big = info_over_cap(archive, "info/paths.json", member.size)
    if too_big:
        raise PackageContentError(too_big, hint=INFO_CAP_HINT)
    sha256, data = hash_member(tar, member, keep=True)
    return sha256, data or b""


def _read_members(archive: Path, payload: Path | None = None, hashed: bool = True) -> tuple[list[ArchiveEntry], bytes | None]:
    """Every entry of the archive's tarballs in order (files hashed, unless not `hashed`), and info/paths.json's bytes."""
    entries: list[ArchiveEntry] = []
    paths_json = None
    with _tar_streams(archive, payload) as tars:
        for kind, tar, headers in tars:
            for member in headers if headers is not None else each_member(tar):
                entry = _entry(archive, kind, member)
                if entry.kind == "file":
                    if entry.path == "info/paths.json":
                        sha256, paths_json = _paths_json(archive, tar, member)
                    else:
                        sha256 = hash_member(tar, member)[0] if hashed else ""
                    entry = ArchiveEntry(entry.path, "file", sha256, entry.size, mode=entry.mode, offset=entry.offset)
                entries.append(entry)
    return entries, paths_json


class NotStreamable(Exception):
    """An archive the streaming read (`stream_package_archive`) leaves to the staged one: a `.tar.bz2`, a
    header only tarfile reads, or an archive that cannot be read (the staged read reports why)."""


class _PayloadStream(CountedStream):
    """A `.conda`'s pkg tarball decompressed as it is read, with a count of the bytes read (`TarSource`).
    Any failure to read it is NotStreamable, and so is its end inside a member (`readinto` wants bytes)."""

    def __init__(self, raw: IO[bytes], cap: int, name: str) -> None:
        # Its buffer serves the tar headers' small reads. A layer writer reads a file's content in pieces of up to
        # its own 1 MiB buffer: a read longer than this buffer is decompressed straight into the caller's (io's
        # rule), while one within it went through it, one more copy of every byte (1 MiB held it all).
        super().__init__(zstandard.ZstdDecompressor().stream_reader(raw, read_size=_BUFFER), _HEADER_BUFFER)
        self.cap, self.name = cap, name

    def read(self, size: int) -> bytes:
        try:
            data = super().read(size)
        except (zstandard.ZstdError, OSError, EOFError, ValueError):
            raise NotStreamable from None
        if self.consumed > self.cap:
            raise _too_big(self.name, self.cap)
        return data

    def readinto(self, view: memoryview) -> int:
        try:
            got = self._reader.readinto(view)
        except (zstandard.ZstdError, OSError, EOFError, ValueError):
            raise NotStreamable from None
        if not got:
            raise NotStreamable
        self.consumed += got
        if self.consumed > self.cap:
            raise _too_big(self.name, self.cap)
        return got


class _MemberContent:
    """A file's content in a payload stream: `size` bytes, hashed on the way when the archive is checked."""

    def __init__(self, stream: _PayloadStream, size: int, hashed: bool) -> None:
        self.stream, self.left = stream, size
        self.digest = hashlib.sha256() if hashed else None

    def readinto(self, buffer: memoryview) -> int:
        view = buffer[: self.left]
        if not view:
            return 0
        got = self.stream.readinto(view)
        if self.digest is not None:
            self.digest.update(view[:got])
        self.left -= got
        return got

    def finish(self) -> str:
        """Read what the caller left (hashing it); the sha256 (hex) of the whole content, if hashed."""
        if self.left and self.digest is not None:
            buffer = memoryview(bytearray(min(self.left, _BUFFER)))
            while self.left:
                self.readinto(buffer)
        return self.digest.hexdigest() if self.digest is not None else ""


@dataclass
class StreamedArchive:
    """A `.conda` read once, front to back (`stream_package_archive`): its info tarball read and checked, then
    its payload's entries as they come, each checked as `stage_package_archive` checks it."""

    archive: Path
    label: str
    paths_json: bytes | None
    hashed: bool
    stream: _PayloadStream
    entries: list[ArchiveEntry] = field(default_factory=list)  # the payload's entries read so far, in order

    def payload(self) -> Iterator[tuple[ArchiveEntry, _MemberContent | None]]:
        """Each payload entry with a reader of a file's content (`readinto`: its bytes, then 0), to be read before
        the next entry (what is left unread is read and hashed then); after the last one, the listing check."""
        try:
            for header in stream_headers(self.stream):
                entry = _entry(self.archive, "pkg", header)
                content = _MemberContent(self.stream, entry.size, self.hashed) if entry.kind == "file" else None
                yield entry, content
                if content is not None:
                    entry = ArchiveEntry(entry.path, "file", content.finish(), entry.size, mode=entry.mode, offset=entry.offset)
                self.entries.append(entry)
        except NeedsTarfile:
            raise NotStreamable from None
        except UnsafePathError as exc:
            raise PackageContentError(f"{self.label}: {exc.message}", hint=exc.hint) from None
        _check_listing(self.label, self.entries, self.paths_json, self.hashed)

    def checked(self) -> list[ArchiveEntry]:
        """The payload entries as `check_package_archive` returns them, once `payload` was read to its end."""
        return [e for e in {e.path: e for e in self.entries}.values() if e.path.split("/")[0] != "info"]


def _info_paths_json(archive: Path, members: Iterator[tarfile.TarInfo | TarHeader], read: Callable[[Any], bytes]) -> bytes | None:
    """Every entry of an info tarball checked (as the staged read checks it), and its info/paths.json (the last, as
    the staged read takes it), `read` from the tar once its size passed the cap."""
    paths_json = None
    for member in members:
        entry = _entry(archive, "info", member)
        if entry.kind == "file" and entry.path == "info/paths.json":
            too_big = info_over_cap(archive, "info/paths.json", member.size)
            if too_big:
                raise PackageContentError(too_big, hint=INFO_CAP_HINT)
            paths_json = read(member)
    return paths_json


def _streamed_info(archive: Path, z: zipfile.ZipFile, info: str) -> bytes | None:
    """A `.conda`'s info tarball checked entry by entry, and its info/paths.json; read with envkit's header
    reader, or again by tarfile where that reader does not follow the tar."""
    return read_either_way(
        lambda: conda_tarball_stream(z, info),
        lambda source: _info_paths_json(archive, stream_headers(source), source.content),
        lambda tar: _info_paths_json(archive, each_member(tar), lambda member: hash_member(tar, member, keep=True)[1] or b""),
    )


@contextmanager
def stream_package_archive(archive: Path, label: str, hashed: bool = True) -> Iterator[StreamedArchive]:
    """A `.conda` to be read front to back: its info tarball checked as `stage_package_archive` checks it, then its
    payload as a stream (StreamedArchive.payload), with nothing written to disk. NotStreamable for an archive the
    staged read must take (errors about the package itself are that read's to report)."""
    if not archive.name.endswith(".conda"):
        raise NotStreamable
    try:
        with zipfile.ZipFile(archive) as z:
            check_zip_layout(z, archive.name)  # (a PackageContentError: the staged read would refuse it too)
            names = z.namelist()
            info, pkg = conda_tarball(names, "info"), conda_tarball(names, "pkg")
            if info is None or pkg is None:
                raise NotStreamable
            paths_json = _streamed_info(archive, z, info)
            with _open_member(z, archive, pkg) as raw:
                yield StreamedArchive(archive, label, paths_json, hashed, _PayloadStream(raw, expansion_cap(archive), archive.name))
    except UnsafePathError as exc:
        raise PackageContentError(f"{label}: {exc.message}", hint=exc.hint) from None
    except (tarfile.TarError, zipfile.BadZipFile, zstandard.ZstdError, EOFError, OSError):
        raise NotStreamable from None


def hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo | TarHeader, keep: bool = False) -> tuple[str, bytes | None]:
    """The sha256 (hex) of a regular file in `tar`, read once in chunks; its bytes too when `keep`.
    (A TarHeader's content is read by offset from the tar's file: the payload it was read from.)"""
    if isinstance(member, TarHeader):
        data: IO[bytes] | None = _FileRange(tar.fileobj, member.offset_data, member.size)  # type: ignore[arg-type,assignment]
    else:
        data = tar.extractfile(member)
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    while chunk := data.read(1 << 20):  # type: ignore[union-attr]
        digest.update(chunk)
        if keep:
            chunks.append(chunk)
    return digest.hexdigest(), b"".join(chunks) if keep else None


def _hardlink_ok(target: str) -> bool:
    try:
        relative_path(target, "hard link")
    except UnsafePathError:
        return False
    return True


def check_package_archive(archive: Path, label: str, hashed: bool = True) -> list[ArchiveEntry]:
    """The payload of a conda package archive, after checking it is safe and matches its paths.json.

    `label` names the package in errors (platform, name, version, build). `hashed=False` leaves out
    the files' hashes (an archive whose hashes this check already found right: conda_envkit.install's
    `checked` stamp); everything else is checked again.
    """
    ordered, paths_json = _checked_read(archive, label, hashed=hashed)
    return _check_listing(label, ordered, paths_json, hashed)


def stage_package_archive(archive: Path, label: str, payload: Path, hashed: bool = True) -> StagedArchive:
    """The archive checked as `check_package_archive` does, its payload tar decompressed onto the end of `payload`
    on the way (the archive is decompressed once: the check hashes the files from there)."""
    ordered, paths_json = _checked_read(archive, label, payload, hashed)
    _check_listing(label, ordered, paths_json, hashed)
    return StagedArchive(payload, tuple(e for e in ordered if e.path.split("/")[0] != "info"), paths_json)


def _checked_read(archive: Path, label: str, payload: Path | None = None, hashed: bool = True) -> tuple[list[ArchiveEntry], bytes | None]:
    try:
        return _read_members(archive, payload, hashed)
    except UnsafePathError as exc:
        raise PackageContentError(f"{label}: {exc.message}", hint=exc.hint) from None
    except (tarfile.TarError, zipfile.BadZipFile, zstandard.ZstdError, EOFError, OSError) as exc:
        raise PackageContentError(f"{label}: {archive.name} is not a readable package ({exc})", hint="the package is corrupt") from None


def _check_listing(label: str, ordered: list[ArchiveEntry], paths_json: bytes | None, hashed: bool = True) -> list[ArchiveEntry]:
    """The payload entries (last of a path wins, as when extracting), after checking them against paths.json.

    A hard link (what tar writes for a file with several links, e.g. `bin/perl` and `bin/perl5.32`) stands for
    the file it names, an entry before it: it is checked as that file (its sha256 and size)."""
    entries = {e.path: e for e in ordered}
    files = _hardlinked_files(label, ordered)
    if paths_json is None:
        return [e for e in entries.values() if not e.path.startswith("info/")]  # pre-paths.json packages: tar checks only
    try:
        listed = json.loads(paths_json).get("paths") or []
    except (ValueError, AttributeError) as exc:
        raise PackageContentError(f"{label}: info/paths.json is not valid JSON ({exc})", hint="the package is corrupt") from None
    for item in listed:
        if not isinstance(item, dict) or not isinstance(item.get("_path"), str):
            raise PackageContentError(f"{label}: info/paths.json has a malformed entry", hint="the package is corrupt")
        try:
            path = relative_path(item["_path"], f"{label}: info/paths.json")
        except UnsafePathError as exc:
            raise PackageContentError(exc.message, hint=exc.hint) from None
        if path.split("/")[0] in ("info", "conda-meta"):
            raise PackageContentError(
                f"{label}: info/paths.json lists {path}, which no package may install", hint="the package is hostile; do not use it"
            )
        found = entries.get(path)
        kind = item.get("path_type", "hardlink")
        if kind == "directory":  # py-rattler cannot link one: said here, not as a failed copy while linking
            raise PackageContentError(
                f"{label}: info/paths.json lists {path} as a directory (path_type directory), which py-rattler cannot install",
                hint="leave the package out of the environment, or ask its authors to rebuild it without directory entries",
            )
        if found is not None and found.kind == "hardlink":
            found = files.get(path, found)
        if found is None:
            raise PackageContentError(
                f"{label}: info/paths.json lists {path}, which the archive does not hold", hint="the package is corrupt"
            )
        if kind == "softlink":
            if found.kind != "symlink":
                raise PackageContentError(f"{label}: {path} is listed as a symlink but is a {found.kind}", hint="the package is corrupt")
        elif found.kind != "file":
            raise PackageContentError(f"{label}: {path} is listed as a file but is a {found.kind}", hint="the package is corrupt")
        else:
            expected = str(item.get("sha256") or "").lower()
            if expected and (not _HEX64.fullmatch(expected) or (hashed and expected != found.sha256)):
                raise PackageContentError(
                    f"{label}: {path} has sha256 {found.sha256[:12]}…, its paths.json says {expected[:12]}…",
                    hint="the package contradicts its own metadata; do not use it",
                )
            size = item.get("size_in_bytes")
            if isinstance(size, int) and size != found.size:
                raise PackageContentError(
                    f"{label}: {path} is {found.size} bytes, its paths.json says {size}",
                    hint="the package contradicts its own metadata; do not use it",
                )
    return [e for e in entries.values() if e.path.split("/")[0] != "info"]


def _hardlinked_files(label: str, ordered: list[ArchiveEntry]) -> dict[str, ArchiveEntry]:
    """Each hard link's path -> the file it stands for: the entry named by its target, written before it (as tar
    extracts it; a link to a link is followed). A target that is no file before it is an error naming both."""
    before: dict[str, ArchiveEntry] = {}
    files: dict[str, ArchiveEntry] = {}
    for entry in ordered:
        if entry.kind == "hardlink":
            target = before.get(posixpath.normpath(entry.target))
            if target is not None and target.kind == "hardlink":
                target = files.get(target.path)
            if target is None or target.kind != "file":
                raise PackageContentError(
                    f"{label}: hard link {entry.path} -> {entry.target} names no file before it in the archive",
                    hint="the package is corrupt",
                )
            files[entry.path] = target
        before[entry.path] = entry
    return files


@dataclass(frozen=True)
class PayloadLinks:
    """What the cross-package link check needs of one checked payload: its symlinks and the directories its
    entries are written through (each with its first entry), not the entries themselves (a bake holds these
    for every package until all are read: per directory, not per file)."""

    label: str
    symlinks: dict[str, str]  # path -> target
    parents: dict[str, tuple[int, str]]  # directory -> (index of the first entry below it, that entry's path)


def payload_links(label: str, entries: list[ArchiveEntry]) -> PayloadLinks:
    """The link summary of a checked payload (`check_package_archive`'s entries, in its order)."""
    symlinks: dict[str, str] = {}
    parents: dict[str, tuple[int, str]] = {}
    for index, e in enumerate(entries):
        if e.kind == "symlink":
            symlinks[e.path] = e.target
        cut = e.path.find("/")
        while cut > 0:
            parents.setdefault(e.path[:cut], (index, e.path))
            cut = e.path.find("/", cut + 1)
    return PayloadLinks(label, symlinks, parents)


def check_links_together(payloads: dict[str, list[ArchiveEntry]]) -> None:
    """Check the packages of one install together: no entry goes through another's symlink,
    and no chain of symlinks (across packages) resolves out of the prefix.

    `payloads` maps a package label to its checked payload (`check_package_archive`).
    """
    check_payload_links([payload_links(label, entries) for label, entries in payloads.items()])


def check_payload_links(summaries: list[PayloadLinks]) -> None:
    """`check_links_together` on the packages' link summaries (`payload_links`), in install order."""
    links: dict[str, str] = {}
    owner: dict[str, str] = {}
    for summary in summaries:
        for path, target in summary.symlinks.items():
            links[path] = target
            owner[path] = summary.label
    if not links:
        return
    # The first entry (packages in order, entries in order) written through a symlink, as a walk of every
    # entry would meet it; its shortest parent that is a symlink is the one named.
    for summary in summaries:
        hits = [summary.parents[path] for path in links if path in summary.parents]
        if hits:
            _, path = min(hits)
            parts = path.split("/")
            parent = next(p for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p in links)
            raise PackageContentError(
                f"{summary.label}: {path} would be written through the symlink {parent} -> {links[parent]} of {owner[parent]}",
                hint="packages must not install through symlinks; one of them is malformed or hostile",
            )
    for path, target in links.items():
        try:
            resolve_in_root(links, f"{path.rpartition('/')[0]}/{target}" if "/" in path else target, strict=True)
        except UnsafePathError:
            raise PackageContentError(
                f"{owner[path]}: symlink {path} -> {target} leaves the prefix through other symlinks",
                hint="the package is malformed or hostile; do not use it",
            ) from None
