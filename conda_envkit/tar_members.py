"""Reading the members of a tar envkit did not write (a package archive, an image layer) in flat memory."""

from __future__ import annotations

import io
import os
import re
import struct
import tarfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeVar


def each_member(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of `tar` in order, each header dropped once read: tarfile keeps every header it
    has read (for extractall), which for an archive or layer we did not write grows without bound."""
    while (member := tar.next()) is not None:
        tar.members.clear()  # type: ignore[attr-defined]  # not in typeshed; reading on appends to it, nothing else
        yield member


# A reader of tar headers for the common case, several times faster than tarfile's: a package's payload
# holds one member per installed file (tens of thousands in a CUDA environment) and the bake reads them all.
# It reads what tarfile reads, field by field, wherever it reads anything: ustar headers, with pax `x`
# headers carrying path, linkpath, size and the fields tarfile ignores here. On anything else (GNU long
# names, sparse files, global or unknown pax records, names that are not UTF-8, a header tarfile would
# stop or fail at) it gives up and the caller reads the whole tar with tarfile, which stays the reference.

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_FILE_TYPES = (b"0", b"\0", b"7")  # tarfile's regular types, GNU sparse ('S') aside
_PLAIN_TYPES = (*_FILE_TYPES, b"1", b"2", b"5")
_PAX_KEEP = frozenset({"path", "linkpath", "size"})
_PAX_IGNORED = frozenset({"mtime", "atime", "ctime", "uid", "gid", "uname", "gname"})
_SIGNED = struct.Struct("148b8x356b")
_MAX_PAX_BYTES = 1 << 20  # a pax header holds a few names; a bigger one is left to tarfile
_ENCODING = tarfile.ENCODING  # what tarfile decodes ustar fields with (pax records are UTF-8)


class _NotPlain(Exception):
    """A header the fast reader leaves to tarfile."""


@dataclass(frozen=True, slots=True)
class TarHeader:
    """One member as tarfile.TarInfo would describe it (the attributes a package check reads)."""

    name: str
    type: bytes
    mode: int
    size: int
    linkname: str
    offset_data: int

    def isfile(self) -> bool:
        return self.type in _FILE_TYPES

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"


def _text(field: bytes, encoding: str = "utf-8") -> str:
    end = field.find(b"\0")
    try:
        return (field if end < 0 else field[:end]).decode(encoding)
    except UnicodeDecodeError:
        raise _NotPlain from None


def _number(field: bytes) -> int:
    if field[0] in (0o200, 0o377):
        raise _NotPlain  # base-256: never needed for a package's file, left to tarfile
    end = field.find(b"\0")
    try:
        return int((field if end < 0 else field[:end]).decode("ascii").strip() or "0", 8)
    except (UnicodeDecodeError, ValueError):
        raise _NotPlain from None


# The numeric fields as tarfile itself writes them (octal digits and a NUL), checked in one match:
# mode, uid, gid, size, mtime, then the checksum; and the two device numbers (zeros or NULs).
_TYPICAL_NUMBERS = re.compile(rb"[0-7]{7}\0[0-7]{7}\0[0-7]{7}\0[0-7]{11}\0[0-7]{11}\0[0-7]{6}\0 ")
_TYPICAL_DEVICES = re.compile(rb"(?:[0-7]{7}\0|\0{8}){2}")


def _ustar(block: bytes) -> tuple[str, bytes, int, int, str]:
    """(name, type, mode, size, linkname) of a header block, as tarfile.TarInfo.frombuf reads it."""
    if _TYPICAL_NUMBERS.match(block, 100) and _TYPICAL_DEVICES.match(block, 329):
        mode, size, checksum = int(block[100:107], 8), int(block[124:135], 8), int(block[148:154], 8)
    else:  # every field read as tarfile's nti reads it
        for start, end in ((108, 116), (116, 124), (136, 148), (329, 337), (337, 345)):  # uid, gid, mtime, devices
            _number(block[start:end])
        mode, size, checksum = _number(block[100:108]), _number(block[124:136]), _number(block[148:156])
    if checksum != 256 + sum(block) - sum(block[148:156]) and checksum != 256 + sum(_SIGNED.unpack(block)):
        raise _NotPlain
    if block.isascii():  # every text field decodes (an empty one is a NUL at its start)
        name = _text(block[0:100], "ascii")
        prefix = _text(block[345:500], "ascii") if block[345] else ""
        linkname = _text(block[157:257], "ascii") if block[157] else ""
    else:
        name, prefix, linkname = _text(block[0:100], _ENCODING), _text(block[345:500], _ENCODING), _text(block[157:257], _ENCODING)
        _text(block[265:297], _ENCODING), _text(block[297:329], _ENCODING)  # owner names: decoded by tarfile
    kind = block[156:157]
    if kind == b"\0" and name.endswith("/"):
        kind = b"5"
    if kind == b"5":
        name = name.rstrip("/")
    if prefix:
        name = prefix + "/" + name
        if kind == b"5":
            name = name.rstrip("/")
    return name, kind, mode, size, linkname


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a pax `x` header, if all are well formed and of the kinds read here."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            raise _NotPlain
        length = data[pos:space]
        if not length.isdigit():
            raise _NotPlain
        end = pos + int(length)
        record = data[space + 1 : end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise _NotPlain
        key, _, value = record[:-1].partition(b"=")
        if b"\0" in record:
            raise _NotPlain
        keyword, text = _text(key), _text(value)
        if keyword not in _PAX_KEEP | _PAX_IGNORED:
            raise _NotPlain
        out[keyword] = text
        pos = end
    if data[pos:].strip(b"\0"):
        raise _NotPlain
    return out


def _padded(size: int) -> int:
    """`size` rounded up to whole tar blocks."""
    return -(-size // _BLOCK) * _BLOCK


def _applied(pax: dict[str, str] | None, name: str, kind: bytes, size: int, linkname: str) -> tuple[str, int, str]:
    """A member's name, size and link target once the pax records read before its header apply; _NotPlain for
    what the fast readers leave to tarfile (a size that is not a number, a member that is not a file, link or
    directory, content on anything but a file)."""
    if pax is not None:
        if "path" in pax:
            name = pax["path"].rstrip("/")
        if "linkpath" in pax:
            linkname = pax["linkpath"]
        if "size" in pax:
            if not pax["size"].isdigit():
                raise _NotPlain
            size = int(pax["size"])
    if kind not in _PLAIN_TYPES or (size and kind not in _FILE_TYPES):
        raise _NotPlain
    return name, size, linkname


def plain_headers(f: BinaryIO, start: int, end: int) -> list[TarHeader] | None:
    """Every member header of the tar at [start, end) of `f`, in order, read as tarfile reads them; None if the
    tar holds anything but ustar headers and plain pax records (then read it with tarfile)."""
    out: list[TarHeader] = []
    fd = f.fileno()
    pos = start
    pax: dict[str, str] | None = None  # the records of a pax header just read, for the header after it
    try:
        while pos < end:
            block = os.pread(fd, _BLOCK, pos)
            if len(block) != _BLOCK or (block == _ZERO_BLOCK and pax is not None):
                return None
            if block == _ZERO_BLOCK:
                return out
            name, kind, mode, size, linkname = _ustar(block)
            pos += _BLOCK
            if kind == b"x":
                # A second pax header in a row, or one too big to be a few names: tarfile's (os.pread would
                # allocate the size a header claims before reading a byte).
                if pax is not None or size > _MAX_PAX_BYTES:
                    return None
                data = os.pread(fd, size, pos)
                if len(data) != size:
                    return None
                pax = _pax_records(data)
                pos += _padded(size)
                continue
            name, size, linkname = _applied(pax, name, kind, size, linkname)
            pax = None
            out.append(TarHeader(name, kind, mode, size, linkname, pos))
            if kind in _FILE_TYPES:
                pos += _padded(size)
                if pos > end:
                    return None
    except _NotPlain:
        return None
    # The data ended right after a member, as tarfile ends; an empty tar, or a pax header with no member
    # after it, is tarfile's error.
    return out if out and pax is None else None


class NeedsTarfile(Exception):
    """A tar the streaming header reader leaves to tarfile (where `plain_headers` would give None)."""


class TarSource(Protocol):
    """What `stream_headers` reads from: exact reads (short only at the end of the data), and a count of
    the bytes read so far (by anyone: the caller reads the files' contents from the same source)."""

    consumed: int

    def read(self, size: int) -> bytes: ...


class CountedStream:
    """A TarSource over a readable binary stream (a zstd stream reader): exact reads, counted."""

    def __init__(self, raw: BinaryIO, buffer_size: int = 1 << 16) -> None:
        self._reader = io.BufferedReader(raw, buffer_size)  # type: ignore[type-var]
        self.consumed = 0

    def read(self, size: int) -> bytes:
        data = self._reader.read(size)
        self.consumed += len(data)
        return data

    def content(self, header: TarHeader) -> bytes:
        """A member's content, right after its header; NeedsTarfile if the tar ends first (tarfile says how)."""
        data = self.read(header.size)
        if len(data) != header.size:
            raise NeedsTarfile
        return data


_Read = TypeVar("_Read")


def read_either_way(
    opened: Callable[[], AbstractContextManager[BinaryIO]],
    with_headers: Callable[[CountedStream], _Read],
    with_tarfile: Callable[[tarfile.TarFile], _Read],
) -> _Read:
    """`with_headers` over envkit's header reader of the tar `opened` gives (read front to back); where that reader
    gives up (NeedsTarfile), `with_tarfile` over tarfile, the tar opened again."""
    try:
        with opened() as stream:
            return with_headers(CountedStream(stream))
    except NeedsTarfile:
        pass
    with opened() as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        return with_tarfile(tar)


def _skip(source: TarSource, size: int) -> None:
    while size > 0:
        chunk = source.read(min(size, 1 << 20))
        if not chunk:
            raise NeedsTarfile
        size -= len(chunk)


def stream_headers(source: TarSource) -> Iterator[TarHeader]:
    """`plain_headers` for a tar read front to back (a package's payload as it is decompressed): its member
    headers in order, each read as tarfile reads it. After a file's header, its content is the caller's to read
    from `source` (all of it, some, or none: the rest is skipped before the next header). NeedsTarfile where
    `plain_headers` would give None; `offset_data` is where the content starts in the stream."""
    pax: dict[str, str] | None = None
    count = 0
    try:
        while True:
            block = source.read(_BLOCK)
            if not block and count and pax is None:
                return  # the data ended right after a member, as tarfile ends
            if len(block) != _BLOCK or (block == _ZERO_BLOCK and pax is not None):
                raise NeedsTarfile
            if block == _ZERO_BLOCK:
                return
            name, kind, mode, size, linkname = _ustar(block)
            if kind == b"x":
                if pax is not None or size > _MAX_PAX_BYTES:
                    raise NeedsTarfile
                data = source.read(_padded(size))
                if len(data) != _padded(size):
                    raise NeedsTarfile
                pax = _pax_records(data[:size])
                continue
            name, size, linkname = _applied(pax, name, kind, size, linkname)
            pax = None
            start = source.consumed
            yield TarHeader(name, kind, mode, size, linkname, start)
            count += 1
            if kind in _FILE_TYPES:
                left = start + _padded(size) - source.consumed
                if left < 0:
                    raise NeedsTarfile  # the caller read past the member: not a tar this reader can follow
                _skip(source, left)
    except _NotPlain:
        raise NeedsTarfile from None
