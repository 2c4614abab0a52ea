"""Single-package layers of plain `.conda`s written by worker processes, several at once.

One process writes layers no faster than its one writer thread: reading and decompressing the archive, the
tar stream and both sha256s go through it, however many zstd workers compress behind it, and threads of one
process take turns on the GIL between their C calls. A big environment's layers are therefore written in
worker processes (one layer each at a time, biggest first) beside the bake, which writes the other layers and
then takes the smallest layers no worker has started; each writer has its share of the CPUs as zstd workers.
The bytes are those one process writes: zstd's output is the same for any worker count from 1.

Each worker is a fresh interpreter of this installation (`python -c "...serve(n)"`), started by the bake that
needs it, so it has the bake's environment and umask, imports this module's few dependencies only, and shares
no state with the caller (no multiprocessing: no forkserver, no semaphores, nothing run from the caller's
`__main__`). Jobs and answers are pickles on its stdin and stdout. A worker writes its blob into the store as
the bake would, and reports the blob's stamp: the bake trusts a blob it wrote without reading it again.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from conda_envkit.archive_check import NotStreamable, PayloadLinks, payload_links, stream_package_archive
from conda_envkit.errors import EnvkitError
from conda_envkit.files import process_temp_dir
from conda_envkit.interrupts import signals_held
from conda_envkit.lockmodel import LockedPackage
from conda_envkit.noarch_python import PythonTarget
from conda_envkit.oci.blobs import BlobStore
from conda_envkit.oci.layer import Compression, Compressors, Layer, write_layer
from conda_envkit.oci.tarstream import Member
from conda_envkit.pkginfo import PackageInfo
from conda_envkit.stream_package import NotPlain, streamed_members

_Written = TypeVar("_Written")

# Below this many bytes of such layers a bake writes them itself: starting the processes (~0.2 s) would not pay.
MIN_PROCESS_BYTES = 256 << 20
# Each worker holds its interpreter, this module's imports, a zstd stream and its archive's listing (~60-70 MB).
MAX_PROCESSES = 3


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


_compressors: Compressors | None = None  # a worker's, for all the layers it writes


_temp_dir: Path | None = None  # a worker's, for its temp blobs: removed by the bake once the worker ended


def write_streamed_layer(job: StreamedLayerJob) -> StreamedLayer:
    """Run in a worker: the package's layer written into the store (see StreamedLayer)."""
    store = BlobStore(job.store_root, _temp_dir)

    def write(members: Iterable[Member]) -> Layer:
        return write_layer(members, store, job.compression, job.epoch, compressors=_compressors, sort=False)

    try:
        layer, links = stream_conda(job.archive, job.label, job.hashed, job.locked, job.info, job.in_image, write, job.python, job.renamed)
    except (NotStreamable, NotPlain):
        return StreamedLayer(None, None, None)
    return StreamedLayer(layer, links, store.checked_stamp(layer.descriptor.digest))


def process_count(sizes: list[int], cpus: int, jobs: int | None = None) -> int:
    """How many worker processes write layers of these sizes beside the bake itself (0: it writes them alone):
    `jobs` - 1 if given (`jobs` layers at once), else (auto) one per CPU but the bake's own, up to MAX_PROCESSES,
    once the layers are big enough to pay for starting them."""
    if jobs is None and (cpus < 2 or sum(sizes) < MIN_PROCESS_BYTES):
        return 0
    writers = min(cpus, MAX_PROCESSES + 1) if jobs is None else jobs
    return max(0, min(writers - 1, len(sizes)))


# A job or an answer on a worker's pipe: its length (8 bytes, big-endian), then its pickle. Both ends are this
# module, run by the same user from the same installation: nothing from outside travels on these pipes.
_LENGTH = struct.Struct(">Q")
MAX_MESSAGE_BYTES = 1 << 30


def _send(pipe: BinaryIO, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_LENGTH.pack(len(data)) + data)
    pipe.flush()


def _receive(pipe: BinaryIO) -> object | None:
    """The next message, or None at the pipe's end."""
    head = pipe.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    if length > MAX_MESSAGE_BYTES:
        raise ValueError(f"a layer worker message of {length} bytes")
    data = pipe.read(length)
    return pickle.loads(data) if len(data) == length else None


# A worker's first message, once it is ready for jobs: what the bake waits for (at most START_SECONDS) before it
# sends one. A program at sys.executable that is not this module's worker (or hangs) is stopped then.
_READY = ("ready", "envkit-layer-worker/1")
START_SECONDS = 60.0


def serve(zstd_workers: int, temp_dir: str, bake_pid: int | None = None) -> None:
    """A worker's life: write the layers of the jobs read from stdin (temp blobs in `temp_dir`), each answer (("ok",
    StreamedLayer) or ("error", its exception)) to stdout, until stdin ends. Started by LayerProcesses, never by hand."""
    global _compressors, _temp_dir
    # The pipes are the protocol's alone: anything printed goes to stderr, nothing is read from the terminal.
    jobs, answers = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Ctrl-C reaches the whole process group: the bake stops its workers itself (SIGTERM), and a worker unwinds
    # on SIGTERM, so its temp blob is removed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _unwind)
    _compressors, _temp_dir = Compressors(zstd_workers), Path(temp_dir)
    # A bake killed outright (SIGKILL, the out-of-memory killer) cannot stop its workers: each one watches for
    # that itself, and ends at once (it went on writing its layer, then printed a traceback on the closed pipe).
    parent = bake_pid if bake_pid is not None else os.getppid()  # (it may be gone before this line)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="envkit-bake-watch").start()
    try:
        _send(answers, _READY)
        while (job := _receive(jobs)) is not None:
            try:
                answer: tuple[str, object] = ("ok", write_streamed_layer(job))  # type: ignore[arg-type]
            except Exception as exc:
                answer = ("error", exc)
            try:
                _send(answers, answer)
            except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
                _send(answers, ("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
    except BrokenPipeError:
        pass  # the bake is gone: there is no one to answer
    finally:
        if os.getppid() != parent:  # no bake will remove this worker's temp directory, or read what it says
            shutil.rmtree(_temp_dir, ignore_errors=True)
            os._exit(1)  # (not the interpreter's exit: flushing the closed pipe would print an error)


def _watch_parent(parent: int) -> None:
    """Stop this worker (SIGTERM: it unwinds) once the bake that started it is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


PARENT_CHECK_SECONDS = 0.5


def _unwind(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class LayerWorkerError(EnvkitError):
    """A layer worker that ended before answering (killed, out of memory)."""


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self, zstd_workers: int, scratch: Path) -> None:
        # Its temp blobs go to a directory of its own, removed once it ended: a worker stopped at any point (even
        # between creating a temp file and the code that removes it) leaves nothing behind.
        self.temp_dir = process_temp_dir(scratch, ".worker")  # (a killed bake's are removed by the next one)
        # The worker imports this very installation of envkit, whatever the caller's sys.path was.
        package_root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
        code = f"from conda_envkit.layer_processes import serve; serve({zstd_workers}, {str(self.temp_dir)!r}, {os.getpid()})"
        self.ready = False  # (its first message read: _await_ready)
        self.failed: LayerWorkerError | None = None  # why it ended or never started: each job after is failed so
        try:
            self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            raise LayerWorkerError(f"cannot start a layer worker ({sys.executable}): {exc}", hint=_HINT) from None

    def _await_ready(self, job: StreamedLayerJob) -> None:
        """The worker's first message, within START_SECONDS; else it is stopped, and the job fails to start."""
        assert self.process.stdout is not None
        if os.name != "nt" and not select.select([self.process.stdout], [], [], START_SECONDS)[0]:  # (no select on pipes there)
            self.process.kill()
            raise LayerWorkerError(f"the layer worker ({sys.executable}) did not start within {START_SECONDS:g} s", hint=_HINT)
        try:
            hello = _receive(self.process.stdout)  # type: ignore[arg-type]
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            hello = None
        if hello is None:
            raise self._ended(job)
        if hello != _READY:
            self.process.kill()
            raise LayerWorkerError(f"the layer worker ({sys.executable}) did not start: it is not envkit's", hint=_HINT)
        self.ready = True

    def _ended(self, job: StreamedLayerJob) -> LayerWorkerError:
        """The error for a worker whose pipe ended (or spoke no protocol) before its answer: stopped if it still runs."""
        try:
            code: int | None = self.process.wait(timeout=5)  # (its end closed the pipe: it is exiting)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"status {code}" if code is not None else "no answer"
        return LayerWorkerError(
            f"{job.label}: the layer worker writing it ended ({how})",
            hint=f"{_HINT}; a worker killed by signal 9 may have run out of memory",
        )

    def run(self, job: StreamedLayerJob) -> StreamedLayer:
        try:
            return self._run(job)
        except LayerWorkerError as exc:
            self.failed = self.failed or exc
            raise LayerWorkerError(self.failed.message, hint=self.failed.hint) from None

    def _run(self, job: StreamedLayerJob) -> StreamedLayer:
        assert self.process.stdin is not None and self.process.stdout is not None
        if self.failed is not None:
            raise self.failed
        if not self.ready:
            self._await_ready(job)
        try:
            _send(self.process.stdin, job)  # type: ignore[arg-type]
            answer = _receive(self.process.stdout)  # type: ignore[arg-type]
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            answer = None
        if answer is None:
            raise self._ended(job)
        kind, value = cast("tuple[str, Any]", answer)
        if kind == "error":
            raise value
        return cast(StreamedLayer, value)

    def end(self, stop: bool) -> None:
        """Close its job pipe (it ends once its job is done) or, if `stop`, stop it now; wait for it."""
        if stop and self.process.poll() is None:
            self.process.terminate()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


_HINT = "bake again with --jobs 1 (every layer in this process)"


class LayerProcesses:
    """`processes` layer writers, each with `zstd_workers` (and a temp directory in `scratch`, on the blob store's
    filesystem). Jobs are taken in the order given (the bake gives the biggest first), each by the first worker
    free; a job no worker has started can be taken back (its future cancelled): the bake then writes that layer
    itself."""

    def __init__(self, processes: int, zstd_workers: int, scratch: Path) -> None:
        self._queue: queue.SimpleQueue[tuple[StreamedLayerJob, Future[StreamedLayer]] | None] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._feeders: list[threading.Thread] = []
        self._stopping = False
        try:
            with signals_held():  # a worker or feeder started is one recorded, for `stop` (conda_envkit.interrupts)
                for _ in range(processes):
                    worker = _Worker(zstd_workers, scratch)
                    self._workers.append(worker)
                    feeder = threading.Thread(target=self._feed, args=(worker,), name="layer-worker-feeder", daemon=True)
                    feeder.start()
                    self._feeders.append(feeder)
        except BaseException:
            self.stop()
            raise

    def submit(self, job: StreamedLayerJob) -> Future[StreamedLayer]:
        future: Future[StreamedLayer] = Future()
        self._queue.put((job, future))
        return future

    def _feed(self, worker: _Worker) -> None:
        while (item := self._queue.get()) is not None:
            job, future = item
            if not future.set_running_or_notify_cancel():  # (cancelled)
                continue
            if self._stopping:
                future.set_exception(LayerWorkerError("bake stopped", hint=_HINT))
                continue
            try:
                future.set_result(worker.run(job))
            except BaseException as exc:
                future.set_exception(exc)

    def finish(self) -> None:
        """Let the workers end once their jobs are done, and wait for them."""
        self._end(stop=False)

    def stop(self) -> None:
        """Stop the workers now, if they still run (the bake failed): each unwinds, removing its temp blob."""
        self._stopping = True
        self._end(stop=True)

    def _end(self, stop: bool) -> None:
        for _ in self._feeders:
            self._queue.put(None)
        for worker in self._workers:
            worker.end(stop)
        for feeder in self._feeders:
            feeder.join()
        self._workers, self._feeders = [], []
