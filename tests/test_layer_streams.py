"""Layer compression is a function of the bytes alone: parallel gzip and multi-threaded zstd give the
same output for any thread count and any write sizes, and both are read by the standard tools."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess

import zstandard

from conda_envkit.oci.pgzip import BLOCK_SIZE, ParallelGzipWriter


def _data() -> bytes:
    noise = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(80_000))  # 2.5 MB, incompressible
    return noise + b"import numpy as np\n" * 150_000 + noise[:12345]


def _pgzip(data: bytes, threads: int, step: int) -> bytes:
    out = io.BytesIO()
    writer = ParallelGzipWriter(out, 6, threads)
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
    writer.close()
    return out.getvalue()


def test_parallel_gzip_is_one_gzip_member_independent_of_threads() -> None:
    data = _data()
    assert len(data) > 3 * BLOCK_SIZE
    one, many = _pgzip(data, 1, len(data)), _pgzip(data, 3, 65_537)
    assert one == many
    assert gzip.decompress(one) == data
    assert subprocess.run(["gzip", "-dc"], input=one, capture_output=True, check=True).stdout == data
    assert len(one) < len(gzip.compress(data, 6)) * 1.01  # dictionary priming keeps the serial ratio
    assert gzip.decompress(_pgzip(b"", 2, 1)) == b""


def test_zstd_output_does_not_depend_on_threads_or_writes() -> None:
    data = _data()
    outputs = set()
    for threads, step in ((1, len(data)), (2, 4096), (-1, 100_003)):
        out = io.BytesIO()
        writer = zstandard.ZstdCompressor(level=3, threads=threads, write_checksum=True).stream_writer(out, closefd=False)
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
        writer.close()
        outputs.add(out.getvalue())
    assert len(outputs) == 1
    assert zstandard.ZstdDecompressor().decompressobj().decompress(outputs.pop()) == data
