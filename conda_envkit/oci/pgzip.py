"""gzip compressed on every core, as one ordinary gzip member (pigz's method).

The input is cut into fixed 1 MiB blocks; each block is deflated on its own (primed
with the previous block's last 32 KiB as dictionary, so the ratio stays that of a
serial deflate) and ends with a sync flush, the last one with the final block. The
compressed blocks are written in order behind a gzip header (mtime 0, no name), and the
CRC-32 and length of the whole input follow. The bytes depend on the input, the level
and the block size only: never on the number of threads.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import Future
from typing import BinaryIO

from conda_envkit.cpus import usable_cpus
from conda_envkit.thread_pool import ThreadPool

BLOCK_SIZE = 1 << 20
_WINDOW = 32 << 10
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, OS unknown (as Python's gzip)


def _deflate(block: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    compressor = (
        zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
        if dictionary
        else (zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY))
    )
    return compressor.compress(block) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter:
    """A write-only stream that gzips into `out` using `threads` threads; `close` finishes the member."""

    def __init__(self, out: BinaryIO, level: int = 6, threads: int | None = None) -> None:
        self.out = out
        self.level = level
        self.pool = ThreadPool(max_workers=max(1, threads or usable_cpus()))
        self.inflight: deque[Future[bytes]] = deque()
        self.limit = 2 * self.pool._max_workers + 1
        self.buffer = bytearray()
        self.tail = b""
        self.crc = 0
        self.size = 0
        self.closed = False
        out.write(_HEADER)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.buffer += data
        while len(self.buffer) > BLOCK_SIZE:  # keep at least one byte back: the last block is written by close()
            block = bytes(self.buffer[:BLOCK_SIZE])
            del self.buffer[:BLOCK_SIZE]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block: bytes, last: bool) -> None:
        self.inflight.append(self.pool.submit(_deflate, block, self.tail, self.level, last))
        self.tail = block[-_WINDOW:]
        while len(self.inflight) >= self.limit:
            self.out.write(self.inflight.popleft().result())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._submit(bytes(self.buffer), last=True)
            self.buffer.clear()
            while self.inflight:
                self.out.write(self.inflight.popleft().result())
            self.out.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF))
        finally:
            self.pool.shutdown(wait=True)
