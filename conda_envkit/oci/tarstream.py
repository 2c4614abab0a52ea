"""A deterministic tar writer without tarfile's per-member overhead.

The bytes are those of `tarfile` in PAX format with uid/gid 0, no owner names and a
fixed mtime (tests/test_bake_cache.py and tests/test_stream_staging.py compare them): a ustar header per member, a
PAX `x` header before it only when the path or link target is not ASCII or too long
for ustar, content padded to 512 bytes, two zero blocks and padding to 10240 bytes.
Members can also be copied verbatim from a *fragment*: a file of ready-made member
blocks (one package's entries) written earlier, so a layer can be re-assembled
without the package's archive.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from conda_envkit.oci.blobs import OciError

BLOCK = 512
RECORD = 20 * BLOCK
_COPY = 1 << 20
_OPEN_FILES = 64
FILE, DIRECTORY, SYMLINK, HARDLINK = "0", "5", "2", "1"
_MAGIC = b"ustar\x0000"


@dataclass(frozen=True, slots=True)
class Member:
    """One tar member: a path (relative, posix), its kind and where its bytes come from.

    Exactly one of `source` (a file on disk), `data` (bytes) or `block` (a range of a
    fragment file holding the finished header and content) supplies regular content.
    """

    path: str
    kind: str = FILE
    mode: int = 0o644
    size: int = 0
    linkname: str = ""
    source: Path | None = None
    data: bytes | None = None
    block: tuple[Path, int, int] | None = None  # (fragment file, offset, length)
    stream: BinaryIO | None = None  # read `size` bytes from here (a member of an archive being read)
    offset: int = 0  # where the content starts in `source` (a member of an uncompressed tar)


def member_from_disk(path: str, source: Path, exact_mode: bool = False) -> Member:
    """A member for the file, symlink or directory at `source`: a file 0755 or 0644 by its owner's x bit, or with
    `exact_mode` its own permission bits (a conda package's file as py-rattler linked it: the archive's, whatever
    the umask); directories 0755."""
    st = source.lstat()
    if stat.S_ISLNK(st.st_mode):
        return Member(path, SYMLINK, 0o777, linkname=os.readlink(source))
    if stat.S_ISDIR(st.st_mode):
        return Member(path, DIRECTORY, 0o755)
    if not stat.S_ISREG(st.st_mode):
        raise OciError(f"{source}: not a file, directory or symlink", hint="remove special files from the environment")
    mode = st.st_mode & 0o777 if exact_mode else 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    return Member(path, FILE, mode, st.st_size, source=source)


def hard_linked(members: list[Member]) -> list[Member]:
    """`members` (one package's, from disk) with the files that are one inode (hard links, as its archive has them:
    py-rattler links them so) as one file and hard links to it, as tar writes them: the file is the one first by
    path bytes, which a layer sorted by path holds before its links."""
    inodes: dict[tuple[int, int], list[int]] = {}
    for i, member in enumerate(members):
        if member.kind == FILE and member.source is not None:
            st = member.source.lstat()
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(i)
    out = list(members)
    for same in (group for group in inodes.values() if len(group) > 1):
        first = min(same, key=lambda i: members[i].path.encode())
        for i in same:
            if i != first:
                out[i] = Member(members[i].path, HARDLINK, members[i].mode, linkname=members[first].path)
    return out


def directory(path: str) -> Member:
    return Member(path, DIRECTORY, 0o755)


def _number(value: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, value)


def _text(value: str, length: int) -> bytes:
    raw = value.encode("ascii", "replace")[:length]
    return raw + b"\0" * (length - len(raw))


def _ustar_fields(name: str, kind: str, mode: int, size: int, mtime: int, linkname: str) -> bytes:
    parts = [
        _text(name, 100),
        _number(mode & 0o7777, 8),
        _number(0, 8),
        _number(0, 8),
        _number(size, 12),
        _number(mtime, 12),
        b" " * 8,
        kind.encode(),
        _text(linkname, 100),
        _MAGIC,
        b"\0" * 32,
        b"\0" * 32,
        b"\0" * 8,
        b"\0" * 8,
        b"\0" * 155,
    ]
    header = b"".join(parts)
    header += b"\0" * (BLOCK - len(header))
    checksum = sum(header)
    return header[:148] + b"%06o\0" % checksum + header[155:]


_OWNERS = _number(0, 8) * 2  # uid, gid
_TAIL = _MAGIC + b"\0" * (BLOCK - 257 - len(_MAGIC))  # magic, version, no owner names, device numbers or prefix
_FIXED_SUM = sum(b" " * 8) + sum(_TAIL)  # the checksum field counts as spaces


def _ustar(name: str, kind: str, mode: int, size: int, mtime: int, linkname: str) -> bytes:
    """One ustar header block: `_ustar_fields`' bytes, with the constant fields' part of the checksum added once."""
    head = _text(name, 100) + _number(mode & 0o7777, 8) + _OWNERS + _number(size, 12) + _number(mtime, 12)
    link = kind.encode() + _text(linkname, 100)
    if len(head) != 148 or len(link) != 101:  # a number too large for its field: as the field-by-field writer does
        return _ustar_fields(name, kind, mode, size, mtime, linkname)
    return head + b"%06o\0 " % (sum(head) + sum(link) + _FIXED_SUM) + link + _TAIL


def _pax_record(keyword: str, value: str) -> bytes:
    body = f" {keyword}={value}\n".encode()
    length = len(body)
    total = length + len(str(length))
    while total != length + len(str(total)):
        total = length + len(str(total))
    return str(total).encode() + body


def _needs_pax(value: str, length: int) -> bool:
    return not value.isascii() or len(value) > length


def header(member: Member, mtime: int) -> bytes:
    """The header block(s) of a member (a PAX header first when ustar cannot hold the names)."""
    name = member.path + "/" if member.kind == DIRECTORY else member.path
    size = member.size if member.kind == FILE else 0
    if not 0 <= size < 8**11:
        raise OciError(f"{member.path}: {size} bytes is too large for a layer member", hint="split the file")
    pax = b""
    records = []
    if _needs_pax(name, 100):
        records.append(_pax_record("path", name))
    if _needs_pax(member.linkname, 100):
        records.append(_pax_record("linkpath", member.linkname))
    if records:
        body = b"".join(records)
        pax = _ustar("././@PaxHeader", "x", 0, len(body), 0, "") + body + b"\0" * (-len(body) % BLOCK)
    return pax + _ustar(name, member.kind, member.mode, size, mtime, member.linkname)


class TarWriter:
    """Writes members to a binary stream; `close` ends the archive (it does not close `out`)."""

    def __init__(self, out: BinaryIO, mtime: int, buffer_size: int = _COPY, buffer: memoryview | None = None) -> None:
        self.out = out
        self.mtime = mtime
        self.written = 0
        # Headers and file contents are gathered in one buffer (contents read straight into it), so that hashing
        # and compression see large writes and no byte is copied in Python on the way. (A small package's
        # fragment takes a smaller one: a fresh buffer costs a page fault for every 4 KiB of it; or the caller's
        # `buffer`, reused from one writer to the next in a thread.)
        self._buffer = buffer if buffer is not None else memoryview(bytearray(buffer_size))
        self._size = len(self._buffer)
        self._fill = 0
        # Tars read by offset (staged payloads, fragments) hold many members: each is opened once.
        self._opened: dict[Path, BinaryIO] = {}

    def _emit(self, data: bytes | memoryview) -> None:
        size = len(data)
        self.written += size
        if size >= self._size // 4:
            self.flush()
            self.out.write(data)
            return
        if self._fill + size > self._size:
            self.flush()
        self._buffer[self._fill : self._fill + size] = data
        self._fill += size

    def flush(self) -> None:
        if self._fill:
            # A stream's write must not keep what it is given (io's rule): the buffer is reused afterwards.
            self.out.write(self._buffer[: self._fill])
            self._fill = 0

    def add(self, member: Member) -> None:
        if member.block is not None:
            self._copy_block(*member.block)
            return
        self._emit(header(member, self.mtime))
        if member.kind != FILE or member.size == 0:
            return
        if member.data is not None:
            self._emit(member.data)
        elif member.stream is not None:
            self._copy_stream(member)
        elif member.source is not None:
            self._copy_file(member)
        self._emit(b"\0" * (-member.size % BLOCK))

    def _open(self, path: Path) -> BinaryIO:
        f = self._opened.get(path)
        if f is None:
            if len(self._opened) >= _OPEN_FILES:
                self._opened.pop(next(iter(self._opened))).close()
            f = self._opened[path] = path.open("rb")
        return f

    def _copy_file(self, member: Member) -> None:
        if not member.offset:
            with open(member.source, "rb") as f:  # type: ignore[arg-type]
                self._pump(f, member.size, f"{member.source}: file shrank while it was being written", "retry the bake")
            return
        f = self._open(member.source)  # type: ignore[arg-type]
        f.seek(member.offset)
        self._pump(f, member.size, f"{member.source}: file shrank while it was being written", "retry the bake")

    def _copy_stream(self, member: Member) -> None:
        message = f"{member.path}: archive member is truncated"
        self._pump(member.stream, member.size, message, "delete the package from the cache and retry")  # type: ignore[arg-type]

    def _copy_block(self, path: Path, offset: int, length: int) -> None:
        f = self._open(path)
        f.seek(offset)
        self._pump(f, length, f"{path}: fragment is truncated", "delete the layer cache directory and retry")

    def _pump(self, source: IO[bytes], length: int, short: str, hint: str) -> None:
        """Copy exactly `length` bytes from `source` into the stream; `short` is the error if it ends first."""
        remaining = length
        while remaining:
            if self._fill == self._size:
                self.flush()
            want = min(self._size - self._fill, remaining)
            got = source.readinto(self._buffer[self._fill : self._fill + want])  # type: ignore[attr-defined]
            if not got:
                raise OciError(short, hint=hint)
            self._fill += got
            self.written += got
            remaining -= got

    def release(self) -> None:
        """Close the files the writer keeps open (`close` does it too)."""
        for f in self._opened.values():
            f.close()
        self._opened.clear()

    def close(self) -> None:
        end = self.written + 2 * BLOCK
        self._emit(b"\0" * (2 * BLOCK + (-end % RECORD)))
        self.flush()
        self.release()
