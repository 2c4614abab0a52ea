"""Deterministic layer tarballs, the layer cache and per-package fragments.

Entries are sorted by path bytes (a plain package's own layer keeps its archive's order
instead), parents are written before children, every mtime is
the given epoch, owners are 0:0 with no names, modes are normalized (0755 for
directories and executables, 0644 otherwise) and compression settings are fixed. The
uncompressed stream (diff_id) and the compressed blob are hashed in the same pass.

The layer cache maps a key (computed by the caller from the lock, conda_envkit.layer_plan)
to the blob written for it; an entry is used only if this user sealed it (conda_envkit.cache_seal),
and its blob is checked against its digest when it is reused (once, then trusted while its
size, mtime, ctime and inode are unchanged). A *fragment* is one
package's tar members, stored uncompressed with an index and its own sha256, so that a
group layer can be re-assembled when one member changes without the others' archives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from conda_envkit.cache import CACHE_SETTING
from conda_envkit.cache_seal import CacheSeal
from conda_envkit.cpus import usable_cpus
from conda_envkit.files import GuardedFile, owned_temp_file, read_cache_entry, remove_orphans, write_cache_entry
from conda_envkit.oci.blobs import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, BlobStore, Descriptor, OciError, file_digest, file_stamp
from conda_envkit.oci.pgzip import BLOCK_SIZE, ParallelGzipWriter
from conda_envkit.oci.tarstream import Member, TarWriter, directory

GZIP_LEVEL = 6
ZSTD_LEVEL = 3
# zstd's multi-threaded jobs: 2 MiB of input each, with 1 MiB of the one before as their window's start (overlap
# log 8 of the 2 MiB window). zstd's own defaults (8 MiB jobs, 256 KiB overlap) hold ~45 MB per writer for one
# worker and ~65 MB for two; these hold ~15 and ~20 MB, for blobs 0.03 % bigger and ~5 % more of zstd's CPU
# (docs/bake.md). The bytes depend on both values (not on the worker count): they are part of the layer key.
ZSTD_JOB_SIZE = 2 << 20
ZSTD_OVERLAP_LOG = 8
FRAGMENT_FORMAT = "envkit.fragment/1"


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


@dataclass(frozen=True)
class CacheEntry:
    """One layer to record in a registry cache: its key, the layer, and where its blob can be found."""

    key: str
    layer: Layer
    source: str | None = None  # registry/repository holding the blob, if it is not in the local store


def checked_path(path: str) -> str:
    """`path` if it is a clean relative posix path (no `..`, not absolute), else an error."""
    # What PurePosixPath would leave unchanged, without its per-call cost (a layer has many members).
    if not path or path[0] == "/" or any(part in ("", ".", "..") for part in path.split("/")):
        raise OciError(f"layer path {path!r} is not a clean relative path", hint="this is a bug in envkit; please report it")
    return path


def with_parents(members: Iterable[Member]) -> list[Member]:
    """The members plus every missing parent directory, sorted by path bytes; the first member of a path wins."""
    entries: dict[str, Member] = {}
    for m in members:
        checked_path(m.path)
        entries.setdefault(m.path, m)
    for path in list(entries):
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in entries:  # a parent already there has its own parents
            entries[path[:cut]] = directory(path[:cut])
            cut = path.rfind("/", 0, cut)
    return [entries[k] for k in sorted(entries, key=lambda k: k.encode())]


def in_given_order(members: Iterable[Member]) -> Iterator[Member]:
    """The members as they come, each after its parent directories not given yet (a package's layer of its own, in
    its archive's order: written as the archive is read, never held whole). A path given twice is a bug."""
    given: set[str] = set()
    for m in members:
        path = checked_path(m.path)
        if path in given:
            raise OciError(f"layer path {path!r} is given twice", hint="this is a bug in envkit; please report it")
        missing = []
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in given:
            missing.append(path[:cut])
            cut = path.rfind("/", 0, cut)
        for parent in reversed(missing):
            given.add(parent)
            yield directory(parent)
        given.add(path)
        yield m


@dataclass(frozen=True)
class Compression:
    """How layers are compressed: `gzip` (default, every runtime) or `zstd`."""

    kind: str = "gzip"

    @property
    def media_type(self) -> str:
        return OCI_LAYER_ZSTD if self.kind == "zstd" else OCI_LAYER_GZIP

    @property
    def key(self) -> str:
        if self.kind == "zstd":
            return f"zstd-{ZSTD_LEVEL}-job{ZSTD_JOB_SIZE}-overlap{ZSTD_OVERLAP_LOG}"
        return f"pgzip-{GZIP_LEVEL}-{BLOCK_SIZE}"


class Compressors:
    """The zstd compressors of the layers one bake writes, one per writing thread: its workers and buffers are
    made once instead of once a layer (fresh buffers cost a page fault for every 4 KiB they hold: 200,000 of
    them in a 2 GB bake). They are dropped with this object; the bytes written do not depend on reuse."""

    def __init__(self, workers: int | None = None) -> None:
        self._per_thread = threading.local()
        self.workers = workers

    def zstd(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._per_thread, "zstd", None)
        if compressor is None:
            compressor = self._per_thread.zstd = _zstd(self.workers)
        return compressor


# Each zstd worker holds ~4 MB (its job's input and output, ZSTD_JOB_SIZE). One thread feeds the layer's tar
# stream to them, which a few workers keep up with: more would only raise a many-core runner's memory.
ZSTD_MAX_WORKERS = 8


def zstd_workers(writers: int = 1) -> int:
    """The zstd workers of a layer, when `writers` layers are written at once: each writer's share of the usable
    CPUs, at most ZSTD_MAX_WORKERS."""
    return max(1, min(usable_cpus() // writers, ZSTD_MAX_WORKERS))


def _zstd(workers: int | None = None) -> zstandard.ZstdCompressor:
    # Multi-threaded zstd output is the same for any worker count >= 1 (tests/test_layer_streams.py).
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, threads=workers or zstd_workers(), job_size=ZSTD_JOB_SIZE, overlap_log=ZSTD_OVERLAP_LOG, write_checksum=True
    )
    return zstandard.ZstdCompressor(compression_params=params)


def _compressed_writer(kind: str, out: BinaryIO, compressors: Compressors | None) -> BinaryIO:
    if kind == "zstd":
        return (compressors.zstd() if compressors else _zstd()).stream_writer(out, closefd=False)
    if kind == "gzip":
        # pigz-style: 1 MiB blocks deflated in parallel into one gzip member; bytes independent of the thread count.
        return ParallelGzipWriter(out, GZIP_LEVEL)  # type: ignore[return-value]
    raise OciError(f"unknown compression {kind!r}", hint="use gzip or zstd")


def write_layer(
    members: Iterable[Member],
    store: BlobStore,
    compression: Compression,
    mtime: int,
    annotations: dict[str, str] | None = None,
    compressors: Compressors | None = None,
    sort: bool = True,
) -> Layer:
    """Write one layer of `members` (plus their parent directories) into `store` (with `compressors`' zstd
    compressor for this thread, when a caller writes many layers): sorted by path, or, if not `sort`, in the
    order given (`in_given_order`: members may be read as they are written)."""
    entries = with_parents(members) if sort else in_given_order(members)
    tmp = store.temp_path()
    try:
        with GuardedFile(tmp, "layer blob", CACHE_SETTING) as raw:  # a full disk is the cache's error, not a traceback
            compressed = _Sink(raw)  # type: ignore[arg-type]
            compressor = _compressed_writer(compression.kind, compressed, compressors)  # type: ignore[arg-type]
            plain = _Sink(compressor)
            tar = TarWriter(plain, mtime)  # type: ignore[arg-type]
            try:
                for entry in entries:
                    tar.add(entry)
                tar.close()
            finally:
                tar.release()
            compressor.close()
        descriptor = Descriptor(compression.media_type, compressed.digest, compressed.size, dict(annotations or {}))
        store.adopt(tmp, compressed.digest)
    finally:
        tmp.unlink(missing_ok=True)
    return Layer(descriptor, plain.digest)


class LayerCache:
    """`<cache>/layers/<key>`: the blob (digest, size, diff_id) written for a layer key, sealed by its writer.

    Only an entry this user sealed (conda_envkit.cache_seal) is used: another one (a restored or shared
    cache, a forged or older entry) may name any blob, so its layer is built again; `remember` then notes
    the keys whose old entry named another blob than the one built (`mismatched`).
    """

    def __init__(self, root: Path, seal: CacheSeal) -> None:
        self.root = root
        self.seal = seal
        self._claims: dict[str, str] = {}  # key -> digest named by an entry not sealed by this user
        self.mismatched: list[tuple[str, str, str]] = []  # (key, digest the entry named, digest built)

    def _entry(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise OciError(f"{key!r} is not a layer key", hint="this is a bug in envkit; please report it")
        return self.root / key

    def read(self, key: str) -> dict[str, object] | None:
        """The raw entry for `key` (digest, size, diff_id, stamp, seal), unchecked."""
        try:
            data = json.loads(read_cache_entry(self._entry(key)) or b"null")
            str(data["digest"]), int(data["size"]), str(data["diff_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return data  # type: ignore[no-any-return]

    def _sealed(self, key: str, data: dict[str, object]) -> bool:
        return self.seal.unsealed("layer", key, data) is not None

    def stale_size(self, key: str, store: BlobStore) -> int:
        """The size of the blob `lookup` would read again for `key` (its stamp moved), or 0."""
        data = self.read(key)
        try:
            return int(data["size"]) if data is not None and data.get("stamp") != file_stamp(store.path(str(data["digest"]))) else 0  # type: ignore[call-overload]
        except (OSError, OciError):
            return 0

    def lookup(self, key: str, compression: Compression, store: BlobStore) -> Layer | None:
        """The cached layer for `key`, if this user sealed its entry and its blob is in `store` and matches its digest."""
        data = self.read(key)
        if data is None:
            return None
        digest = str(data["digest"])
        if not self._sealed(key, data):
            self._claims[key] = digest
            return None
        try:
            path = store.path(digest)
            stamp = file_stamp(path)
        except (OSError, OciError):
            return None
        if stamp[0] != data["size"]:
            return None
        if data.get("stamp") != stamp:
            if file_digest(path) != digest:
                path.unlink(missing_ok=True)
                return None
            self._write(key, {**data, "stamp": stamp})
        store.note_checked(digest, stamp)
        return Layer(Descriptor(compression.media_type, digest, int(data["size"])), str(data["diff_id"]), True)

    def remember(self, key: str, layer: Layer, store: BlobStore) -> None:
        """Seal `layer` as the layer for `key` (noting it if an unsealed entry had named another blob)."""
        claimed = self._claims.pop(key, None)
        if claimed is not None and claimed != layer.descriptor.digest:
            self.mismatched.append((key, claimed, layer.descriptor.digest))
        data = {"digest": layer.descriptor.digest, "size": layer.descriptor.size, "diff_id": layer.diff_id}
        self._write(key, {**data, "stamp": store.stamp(layer.descriptor.digest)})

    def settle(self, key: str, store: BlobStore) -> None:
        """Seal the blob's new stamp if only its ctime moved since this process checked it (the hard
        links an OCI layout output adds and removes change it), so the next bake need not hash it again.

        Only for a blob of this user's that no one else may write: anyone else must replace it to change
        it, which changes its inode (or, reusing the inode, its owner).
        """
        data = self.read(key)
        if data is None or not self._sealed(key, data):
            return
        digest = str(data["digest"])
        try:
            path = store.path(digest)
            st = path.stat()
        except (OSError, OciError):
            return
        stamp = file_stamp(path)
        checked = store.checked_stamp(digest)
        if stamp == data.get("stamp") or checked is None or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return
        if [stamp[0], stamp[1], stamp[3]] == [checked[0], checked[1], checked[3]]:
            self._write(key, {**data, "stamp": stamp})
            store.note_checked(digest, stamp)

    def _write(self, key: str, data: dict[str, object]) -> None:
        fields = {k: data.get(k) for k in ("digest", "size", "diff_id", "stamp")}
        self.root.mkdir(parents=True, exist_ok=True)
        write_cache_entry(self._entry(key), self.seal.sealed("layer", key, fields), "layer cache entry", CACHE_SETTING)


@dataclass(frozen=True)
class PendingFragment:
    """A fragment written to a temporary file and not kept yet (FragmentStore.write, then commit or discard)."""

    key: str
    tmp: Path
    size: int
    sha256: str
    index: tuple[tuple[str, str, int, int], ...]  # (path, kind, offset, length) of each member

    def members(self) -> list[Member]:
        """Its members as byte ranges of the temporary file (to be read before it is kept or dropped)."""
        return _block_members(self.tmp, self.index)


def _block_members(tar: Path, index: Iterable[Any]) -> list[Member]:
    """(path, kind, offset, length) entries of a fragment file as members."""
    return [Member(path, kind, block=(tar, offset, length)) for path, kind, offset, length in index]


_FRAGMENT_BUFFER = 256 << 10  # most group packages are smaller than a layer's 1 MiB buffer
_fragment_buffers = threading.local()  # one per thread writing fragments, reused by its writers one after another


def _fragment_buffer() -> memoryview:
    buffer: memoryview | None = getattr(_fragment_buffers, "buffer", None)
    if buffer is None:
        buffer = _fragment_buffers.buffer = memoryview(bytearray(_FRAGMENT_BUFFER))
    return buffer


class FragmentStore:
    """`<cache>/fragments/<key>.tar` (+ `.json` index): one package's tar members, ready to copy into a layer.

    As in the layer cache, only an index this user sealed is used; another one's package is read again
    from its archive, and `put` notes the keys whose old fragment differed from the new one (`mismatched`).
    """

    def __init__(self, root: Path, seal: CacheSeal) -> None:
        self.root = root
        self.seal = seal
        self._claims: dict[str, str] = {}  # key -> sha256 named by an index not sealed by this user
        self.mismatched: list[str] = []

    def get(self, key: str) -> list[Member] | None:
        """The fragment's members (each a byte range of the fragment file), if this user sealed it and it is intact."""
        tar, index = self.root / f"{key}.tar", self.root / f"{key}.json"
        try:
            raw = read_cache_entry(index)
            data = json.loads(raw) if raw is not None else None
            if not isinstance(data, dict) or data.get("format") != FRAGMENT_FORMAT:
                return None
            if self.seal.unsealed("fragment", key, data) is None:
                self._claims[key] = str(data.get("sha256"))
                return None
            if tar.stat().st_size != data["size"]:
                return None
            if data.get("stamp") != file_stamp(tar):
                if file_digest(tar) != data["sha256"]:
                    return None
                self._write_index(key, {**data, "stamp": file_stamp(tar)})
            return _block_members(tar, data["members"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_index(self, key: str, document: dict[str, object]) -> None:
        fields = {k: v for k, v in document.items() if k != "seal"}  # a stamp update passes the old entry back
        write_cache_entry(self.root / f"{key}.json", self.seal.sealed("fragment", key, fields), "fragment index", CACHE_SETTING)

    def put(self, key: str, members: Iterable[Member], mtime: int, ordered: bool = True) -> list[Member]:
        """Write `members` (sorted by path, unless `ordered` is False: then as they come, e.g. from an archive
        being read) as a fragment; return them as fragment byte ranges."""
        return self.commit(self.write(key, members, mtime, ordered))

    def write(self, key: str, members: Iterable[Member], mtime: int, ordered: bool = True) -> PendingFragment:
        """Write a fragment into a temporary file, to be kept by `commit` (or dropped by `discard`): a bake
        writes a package's fragment as soon as the package is read and keeps it once all packages passed
        their checks together."""
        self.root.mkdir(parents=True, exist_ok=True)
        remove_orphans(self.root, ".")  # what killed bakes left of any fragment (once per process)
        fd, tmp = owned_temp_file(self.root, f".{key}.", ".tar")
        index: list[tuple[str, str, int, int]] = []
        try:
            with GuardedFile(tmp, "package fragment", CACHE_SETTING, file=os.fdopen(fd, "wb")) as raw:
                sink = _Sink(raw)  # type: ignore[arg-type]
                writer = TarWriter(sink, mtime, buffer=_fragment_buffer())  # type: ignore[arg-type]
                try:
                    for m in sorted(members, key=lambda m: m.path.encode()) if ordered else members:
                        start = writer.written
                        writer.add(m)
                        index.append((checked_path(m.path), m.kind, start, writer.written - start))
                    writer.flush()
                finally:
                    writer.release()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return PendingFragment(key, tmp, sink.size, sink.digest, tuple(index))

    def commit(self, pending: PendingFragment) -> list[Member]:
        """Keep a fragment `write` wrote; its members as fragment byte ranges."""
        tar = self.root / f"{pending.key}.tar"
        try:
            try:
                os.replace(pending.tmp, tar)
            except FileNotFoundError:  # the cache was cleaned while the bake ran: a fragment is only a shortcut
                return []
            document = {
                "format": FRAGMENT_FORMAT,
                "size": pending.size,
                "sha256": pending.sha256,
                "members": [list(m) for m in pending.index],
                "stamp": file_stamp(tar),
            }
            self._write_index(pending.key, document)
            claimed = self._claims.pop(pending.key, None)
            if claimed is not None and claimed != pending.sha256:
                self.mismatched.append(pending.key)
        finally:
            pending.tmp.unlink(missing_ok=True)
        return _block_members(tar, pending.index)

    @staticmethod
    def discard(pending: PendingFragment) -> None:
        """Drop a fragment `write` wrote and no one kept."""
        pending.tmp.unlink(missing_ok=True)
