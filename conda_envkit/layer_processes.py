"""Single-package layers of plain `.conda`s written by worker processes, several at once.

One process writes layers no faster than its one writer thread: reading and decompressing the archive, the
tar stream and both sha256s go through it, however many zstd workers compress behind it, and threads of one
process take turns on the GIL between their C calls. A big environment's layers are therefore written in
`processes` worker processes (one layer each at a time, biggest first), each with its share of the zstd
workers. The bytes are those one process writes: zstd's output is the same for any worker count from 1.

The workers are forked from a `forkserver` that loads this module only (not the caller's `__main__`), so they
start small and single-threaded. A worker writes its blob into the store as the bake would, and reports the
blob's stamp (the bake trusts a blob it wrote without re-reading it) and its peak memory.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from conda_envkit.archive_check import NotStreamable, PayloadLinks, payload_links, stream_package_archive
from conda_envkit.files import umask
from conda_envkit.lockmodel import LockedPackage
from conda_envkit.noarch_python import PythonTarget
from conda_envkit.oci.blobs import BlobStore
from conda_envkit.oci.layer import ZSTD_MAX_WORKERS, Compression, Compressors, Layer, write_layer
from conda_envkit.oci.tarstream import Member
from conda_envkit.pkginfo import PackageInfo
from conda_envkit.stream_package import NotPlain, streamed_members

if TYPE_CHECKING:  # multiprocessing loads only when a bake starts workers
    from multiprocessing.pool import AsyncResult, Pool

_Written = TypeVar("_Written")

# Below this many bytes of such layers a bake writes them itself: starting the processes (~0.2 s) would not pay.
MIN_PROCESS_BYTES = 256 << 20
# Each process holds its interpreter, this module's imports and a zstd stream (~60 MB in all).
MAX_PROCESSES = 4


def stream_conda(
    archive: Path,
    label: str,
    hashed: bool,
    locked: LockedPackage,
    info: PackageInfo,
    in_image: str,
    write: Callable[[Iterable[Member]], _Written],
    python: PythonTarget | None = None,
    renamed: dict[str, str] | None = None,
) -> tuple[_Written, PayloadLinks]:
    """A plain `.conda`'s members written (`write`) as its archive is read and checked front to back (its files
    hashed against paths.json if `hashed`), and its link summary. NotStreamable or NotPlain if it must be staged
    or linked instead: `write` must then keep nothing of what it was given."""
    with stream_package_archive(archive, label, hashed) as streamed:
        written = write(streamed_members(streamed, locked, info, in_image, python, renamed))
    return written, payload_links(label, streamed.checked())


@dataclass(frozen=True)
class StreamedLayerJob:
    """One package's own layer, for a worker: everything `stream_conda` and `write_layer` need."""

    archive: Path
    label: str
    hashed: bool
    locked: LockedPackage
    info: PackageInfo
    in_image: str
    python: PythonTarget | None
    renamed: dict[str, str] | None
    store_root: Path
    compression: Compression
    epoch: int


@dataclass(frozen=True)
class StreamedLayer:
    """A worker's answer: the layer, its link summary and its blob's stamp; or no layer, if the package must be
    staged or linked (NotStreamable, NotPlain) by the bake itself."""

    layer: Layer | None
    links: PayloadLinks | None
    stamp: list[int] | None


_compressors: Compressors | None = None  # the worker's, for all the layers it writes


def _start_worker(mask: int, zstd_workers: int) -> None:
    global _compressors
    os.umask(mask)  # the bake's, whenever the forkserver was started
    _compressors = Compressors(zstd_workers)
    # Ctrl-C reaches the whole process group: the bake stops its workers itself (terminate: SIGTERM), and a
    # worker unwinds on SIGTERM, so its temp blob is removed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _unwind)


def _unwind(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def write_streamed_layer(job: StreamedLayerJob) -> StreamedLayer:
    """Run in a worker: the package's layer written into the store (see StreamedLayer)."""
    store = BlobStore(job.store_root)

    def write(members: Iterable[Member]) -> Layer:
        return write_layer(members, store, job.compression, job.epoch, compressors=_compressors, sort=False)

    try:
        layer, links = stream_conda(job.archive, job.label, job.hashed, job.locked, job.info, job.in_image, write, job.python, job.renamed)
    except (NotStreamable, NotPlain):
        return StreamedLayer(None, None, None)
    return StreamedLayer(layer, links, store.checked_stamp(layer.descriptor.digest))


def process_count(sizes: list[int], cpus: int, jobs: int | None = None) -> int:
    """How many worker processes write layers of these sizes (0: the bake writes them itself): `jobs` if given
    (1: none), else (auto) one per CPU, up to MAX_PROCESSES, once they are big enough to pay for starting them."""
    if jobs is None and (cpus < 2 or sum(sizes) < MIN_PROCESS_BYTES):
        return 0
    wanted = min(cpus, MAX_PROCESSES) if jobs is None else jobs
    return 0 if wanted < 2 or len(sizes) < 2 or not can_fork_workers() else min(wanted, len(sizes))


def can_fork_workers() -> bool:
    import multiprocessing

    return "forkserver" in multiprocessing.get_all_start_methods()


class LayerProcesses:
    """A pool of `processes` layer writers, each with its share of the `cpus` as zstd workers."""

    def __init__(self, processes: int, cpus: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        # The server imports this module, not the caller's __main__ (a script that bakes need not guard it). It is
        # started once per process: a caller's own forkserver, if it started first, keeps its own preload.
        context.set_forkserver_preload([__name__])
        zstd_workers = max(1, min(ZSTD_MAX_WORKERS, cpus // processes))
        self._pool: Pool = context.Pool(processes, initializer=_start_worker, initargs=(umask(), zstd_workers))
        self._running = True

    def submit(self, job: StreamedLayerJob) -> AsyncResult[StreamedLayer]:
        return self._pool.apply_async(write_streamed_layer, (job,))

    def finish(self) -> None:
        """Let the workers end once their jobs are done, and wait for them."""
        if self._running:
            self._pool.close()
            self._pool.join()
            self._running = False

    def stop(self) -> None:
        """Stop the workers now, if they still run (the bake failed): each unwinds, removing its temp blob."""
        if self._running:
            self._pool.terminate()
            self._pool.join()
            self._running = False
