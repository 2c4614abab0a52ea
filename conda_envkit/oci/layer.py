"""Deterministic layer tarballs: same files in, same bytes (and digest) out.

Entries are sorted, parents are written before children, every mtime is the
given epoch, owners are 0:0 with no names, modes are normalized (0755 for
directories and executables, 0644 otherwise), and compression settings are
fixed. Before writing, a layer's content key is computed from its entries (path,
type, mode, size, and each file's sha256, taken from the package metadata when the
caller knows it, else read from the file); when the layer cache holds a blob for
that key, it is reused without reading or compressing the files again.
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

from conda_envkit.oci.blobs import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, BlobStore, Descriptor, OciError, file_digest

GZIP_LEVEL = 6
ZSTD_LEVEL = 3
LAYER_FORMAT = "envkit-layer/2"
_BUFFER = 1 << 20


@dataclass(frozen=True)
class LayerFile:
    """A path in the image (relative, posix) and the file, symlink or directory that supplies it."""

    path: str
    source: Path
    sha256: str | None = None  # of the file's content, when already known (conda-meta paths_data)


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

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _checked(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or path != pure.as_posix():
        raise OciError(f"layer path {path!r} is not a clean relative path", hint="this is a bug in envkit; please report it")
    return path


def _with_parents(files: Iterable[LayerFile]) -> list[LayerFile | str]:
    """The files plus every parent directory (as a bare path), sorted by path bytes."""
    entries: dict[str, LayerFile | str] = {}
    for f in files:
        _checked(f.path)
        entries[f.path] = f
        for parent in PurePosixPath(f.path).parents:
            if str(parent) != ".":
                entries.setdefault(str(parent), str(parent))
    return [entries[k] for k in sorted(entries, key=lambda k: k.encode())]


def _tar_info(entry: LayerFile | str, mtime: int) -> tuple[tarfile.TarInfo, Path | None]:
    info = tarfile.TarInfo(entry if isinstance(entry, str) else entry.path)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if isinstance(entry, str):
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        return info, None
    source = entry.source
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


def write_tar(entries: list[LayerFile | str], out: BinaryIO, mtime: int) -> None:
    """Write the sorted entries as one deterministic tar stream."""
    # Random-access mode ("w"), not stream mode ("w|"): the latter re-buffers every block in Python.
    # copybufsize is accepted by TarFile (3.8+) but missing from typeshed's tarfile.open overloads.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", copybufsize=_BUFFER) as tar:  # type: ignore[call-overload]
        for entry in entries:
            info, content = _tar_info(entry, mtime)
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


def content_key(entries: list[LayerFile | str], compression: Compression, mtime: int) -> str:
    """A digest of everything that decides a layer's bytes, computed without writing it."""
    h = hashlib.sha256(f"{LAYER_FORMAT}\0{compression.key}\0{mtime}\0".encode())
    for entry in entries:
        info, content = _tar_info(entry, mtime)
        h.update(f"{info.name}\0{info.type.decode()}\0{info.mode:o}\0{info.size}\0{info.linkname}\0".encode())
        if content is not None:
            known = entry.sha256 if isinstance(entry, LayerFile) else None
            h.update((known or file_digest(content).partition(":")[2]).encode() + b"\n")
    return h.hexdigest()


class LayerCache:
    """Remembers the blob (digest, size, diff_id) written for a layer content key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def lookup(self, key: str, compression: Compression, store: BlobStore) -> tuple[Descriptor, str] | None:
        try:
            data = json.loads((self.root / key).read_text())
        except (OSError, ValueError):
            return None
        path = store.path(data["digest"])
        if not path.is_file() or path.stat().st_size != data["size"]:
            return None
        return Descriptor(compression.media_type, data["digest"], data["size"]), data["diff_id"]

    def remember(self, key: str, layer: Layer) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.tmp"
        tmp.write_text(json.dumps({"digest": layer.descriptor.digest, "size": layer.descriptor.size, "diff_id": layer.diff_id}))
        os.replace(tmp, self.root / key)


def write_layer(
    files: Iterable[LayerFile],
    store: BlobStore,
    compression: Compression,
    mtime: int,
    cache: LayerCache | None = None,
    annotations: dict[str, str] | None = None,
) -> Layer:
    """Write one layer of `files` (plus their parent directories) into `store`, or reuse a cached one."""
    entries = _with_parents(files)
    key = content_key(entries, compression, mtime) if cache is not None else ""
    if cache is not None:
        known = cache.lookup(key, compression, store)
        if known is not None:
            descriptor, diff_id = known
            return Layer(Descriptor(descriptor.media_type, descriptor.digest, descriptor.size, dict(annotations or {})), diff_id, True)
    tmp = store.temp_path()
    try:
        with tmp.open("wb") as raw:
            compressed = _Sink(raw)
            compressor = _compressed_writer(compression.kind, compressed)  # type: ignore[arg-type]
            plain = _Sink(compressor)
            write_tar(entries, plain, mtime)  # type: ignore[arg-type]
            compressor.close()
        descriptor = Descriptor(compression.media_type, compressed.digest, compressed.size, dict(annotations or {}))
        store.adopt(tmp, compressed.digest)
    finally:
        tmp.unlink(missing_ok=True)
    layer = Layer(descriptor, plain.digest)
    if cache is not None:
        cache.remember(key, layer)
    return layer
