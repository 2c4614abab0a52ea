"""Deterministic layer tarballs: same files in, same bytes (and digest) out.

Entries are sorted, parents are written before children, every mtime is the
given epoch, owners are 0:0 with no names, modes are normalized (0755 for
directories and executables, 0644 otherwise), and compression settings are
fixed. A layer is first streamed uncompressed only to learn its diff_id; when
the layer cache already holds a compressed blob for that diff_id (same
compression), it is reused instead of compressed again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from conda_envkit.oci.blobs import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, BlobStore, Descriptor, OciError

GZIP_LEVEL = 6
ZSTD_LEVEL = 3
LAYER_FORMAT = "envkit-layer/1"
_BUFFER = 1 << 20


@dataclass(frozen=True)
class LayerFile:
    """A path in the image (relative, posix) and the file, symlink or directory that supplies it."""

    path: str
    source: Path


@dataclass(frozen=True)
class Layer:
    """A written layer: its descriptor (compressed blob) and diff_id (uncompressed tar digest)."""

    descriptor: Descriptor
    diff_id: str
    reused: bool = False


class _Sink(io.RawIOBase):
    """A write-only stream that hashes and counts what passes, then forwards it (or not)."""

    def __init__(self, out: BinaryIO | None = None) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _checked(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or path != pure.as_posix():
        raise OciError(f"layer path {path!r} is not a clean relative path", hint="this is a bug in envkit; please report it")
    return path


def _with_parents(files: Iterable[LayerFile]) -> list[tuple[str, Path | None]]:
    entries: dict[str, Path | None] = {}
    for f in files:
        _checked(f.path)
        entries[f.path] = f.source
        for parent in PurePosixPath(f.path).parents:
            if str(parent) != ".":
                entries.setdefault(str(parent), None)
    return sorted(entries.items(), key=lambda item: item[0].encode())


def _tar_info(path: str, source: Path | None, mtime: int) -> tuple[tarfile.TarInfo, Path | None]:
    info = tarfile.TarInfo(path)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if source is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return info, None
    st = source.lstat()
    if stat.S_ISLNK(st.st_mode):
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, os.readlink(source)
        return info, None
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return info, None
    if not stat.S_ISREG(st.st_mode):
        raise OciError(f"{source}: not a file, directory or symlink", hint="remove special files from the environment")
    info.type = tarfile.REGTYPE
    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    info.size = st.st_size
    return info, source


def write_tar(files: list[tuple[str, Path | None]], out: BinaryIO, mtime: int) -> None:
    """Write the sorted entries as one deterministic tar stream."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_BUFFER, encoding="utf-8") as tar:
        for path, source in files:
            info, content = _tar_info(path, source, mtime)
            if content is None:
                tar.addfile(info)
            else:
                with content.open("rb") as f:
                    tar.addfile(info, f)


@dataclass(frozen=True)
class Compression:
    """How layers are compressed: `gzip` (default, every runtime) or `zstd`."""

    kind: str = "gzip"

    @property
    def media_type(self) -> str:
        return OCI_LAYER_ZSTD if self.kind == "zstd" else OCI_LAYER_GZIP

    @property
    def key(self) -> str:
        return f"zstd-{ZSTD_LEVEL}" if self.kind == "zstd" else f"gzip-{GZIP_LEVEL}"


def _compressed_writer(kind: str, out: BinaryIO) -> BinaryIO:
    if kind == "zstd":
        # Multi-threaded zstd output is the same for any worker count >= 1.
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True).stream_writer(out, closefd=False)
    if kind == "gzip":
        return gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=out, mtime=0)  # type: ignore[return-value]
    raise OciError(f"unknown compression {kind!r}", hint="use gzip or zstd")


class LayerCache:
    """Remembers which compressed blob belongs to which diff_id, per compression setting."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry(self, compression: Compression, diff_id: str) -> Path:
        return self.root / compression.key / diff_id.partition(":")[2]

    def lookup(self, compression: Compression, diff_id: str, store: BlobStore) -> Descriptor | None:
        try:
            data = json.loads(self._entry(compression, diff_id).read_text())
        except (OSError, ValueError):
            return None
        path = store.path(data["digest"])
        if not path.is_file() or path.stat().st_size != data["size"]:
            return None
        return Descriptor(compression.media_type, data["digest"], data["size"])

    def remember(self, compression: Compression, diff_id: str, descriptor: Descriptor) -> None:
        entry = self._entry(compression, diff_id)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(".tmp")
        tmp.write_text(json.dumps({"digest": descriptor.digest, "size": descriptor.size}))
        os.replace(tmp, entry)


def write_layer(
    files: Iterable[LayerFile],
    store: BlobStore,
    compression: Compression,
    mtime: int,
    cache: LayerCache | None = None,
    annotations: dict[str, str] | None = None,
) -> Layer:
    """Write one layer of `files` (plus their parent directories) into `store`."""
    entries = _with_parents(files)
    plain = _Sink()
    write_tar(entries, plain, mtime)  # type: ignore[arg-type]
    diff_id = plain.digest
    if cache is not None:
        known = cache.lookup(compression, diff_id, store)
        if known is not None:
            return Layer(Descriptor(known.media_type, known.digest, known.size, dict(annotations or {})), diff_id, reused=True)
    tmp = store.temp_path()
    try:
        with tmp.open("wb") as raw:
            sink = _Sink(raw)
            compressor = _compressed_writer(compression.kind, sink)  # type: ignore[arg-type]
            write_tar(entries, compressor, mtime)
            compressor.close()
        descriptor = Descriptor(compression.media_type, sink.digest, sink.size, dict(annotations or {}))
        store.adopt(tmp, sink.digest)
    finally:
        tmp.unlink(missing_ok=True)
    if cache is not None:
        cache.remember(compression, diff_id, descriptor)
    return Layer(descriptor, diff_id)
