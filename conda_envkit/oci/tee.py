"""One stream of chunks given to several consumers at once, each consumer in its own thread.

A layer's bytes are hashed (diff_id) and compressed (then hashed again and written): done one
after the other in the thread that writes the tar, those steps made it the bake's bottleneck,
while each of them (sha256, zstd, deflate, write) releases the GIL. Here the tar writer fills
buffers from a small pool and hands each one over; every consumer sees every chunk in order,
and a buffer goes back to the pool once all consumers are done with it. The bytes each
consumer sees are exactly those written, so nothing about the output changes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

_END = object()
_WRITES_IN_FLIGHT = 64  # chunks given by `write` (a compressor's output: 128 KiB each from zstd) on their way at once


class _Chunk:
    """A chunk on its way to the consumers; a pooled buffer returns to the pool when the last one is done."""

    __slots__ = ("buffer", "data", "left", "lock")

    def __init__(self, data: bytes | memoryview, buffer: memoryview | None, consumers: int) -> None:
        self.data = data
        self.buffer = buffer
        self.left = consumers
        self.lock = threading.Lock()


class ParallelTee:
    """A write-only stream: each chunk goes to every consumer, in order, each consumer in its own thread.

    `take` lends a buffer of `size` bytes from a pool of `depth`; `give(buffer, n)` passes its first `n`
    bytes on and the writer must not touch it again (the writer blocks in `take` while all buffers are out).
    `write` passes bytes on (copied unless immutable). A consumer's error is raised by the next call and
    by `close`; after one, the consumers only drain. `close` waits for the consumers to finish every chunk.
    """

    def __init__(self, consumers: Sequence[Callable[[bytes | memoryview], object]], size: int = 1 << 20, depth: int = 4) -> None:
        self.size = size
        self.written = 0  # bytes passed on
        self._depth = depth
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()  # the pool, filled on the first `take`
        self._lent = 0
        self._room = threading.BoundedSemaphore(_WRITES_IN_FLIGHT)  # `write` chunks not yet done with
        self._queues: list[queue.SimpleQueue[object]] = [queue.SimpleQueue() for _ in consumers]
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._consume, args=(consume, q), name=f"tee-{i}", daemon=True)
            for i, (consume, q) in enumerate(zip(consumers, self._queues, strict=True))
        ]
        for thread in self._threads:
            thread.start()

    def _consume(self, consume: Callable[[bytes | memoryview], object], chunks: queue.SimpleQueue[object]) -> None:
        while (chunk := chunks.get()) is not _END:
            assert isinstance(chunk, _Chunk)
            try:
                if not self._failed.is_set():
                    consume(chunk.data)
            except BaseException as exc:  # handed to the writer's thread, raised there
                if self._error is None:
                    self._error = exc
                self._failed.set()
            finally:
                with chunk.lock:
                    chunk.left -= 1
                    last = chunk.left == 0
                if last:
                    if chunk.buffer is not None:
                        self._free.put(chunk.buffer)
                    else:
                        self._room.release()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _send(self, data: bytes | memoryview, buffer: memoryview | None) -> None:
        chunk = _Chunk(data, buffer, len(self._queues))
        for q in self._queues:
            q.put(chunk)

    def take(self) -> memoryview:
        """A free buffer (waiting for one while the consumers are behind)."""
        if self._lent < self._depth:
            self._lent += 1
            return memoryview(bytearray(self.size))
        while True:
            self._check()
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                continue

    def give(self, buffer: memoryview, length: int) -> None:
        """Pass on the first `length` bytes of a buffer from `take` (or return it to the pool if 0)."""
        self._check()
        if length:
            self.written += length
            self._send(buffer[:length], buffer)
        else:
            self._free.put(buffer)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Pass on `data` (at most a fixed number of these are on their way at once: then this waits)."""
        self._check()
        if data:
            while not self._room.acquire(timeout=0.5):
                self._check()
            self.written += len(data)
            self._send(data if isinstance(data, bytes) else bytes(data), None)
        return len(data)

    def close(self) -> None:
        """Wait until every consumer has had every chunk; raise the first consumer error."""
        if not self._closed:
            self._closed = True
            for q in self._queues:
                q.put(_END)
            for thread in self._threads:
                thread.join()
        self._check()

    def abort(self) -> None:
        """Stop after an error on the writer's side: the consumers drop what is queued and end."""
        self._failed.set()
        if not self._closed:
            self._closed = True
            for q in self._queues:
                q.put(_END)
            for thread in self._threads:
                thread.join()
