"""Layer compression is a function of the bytes alone: parallel gzip and multi-threaded zstd give the
same output for any thread count and any write sizes, and both are read by the standard tools."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from conda_envkit.oci.blobs import BlobStore, OciError
from conda_envkit.oci.layer import ZSTD_MAX_WORKERS, Compression, Compressors, write_layer, zstd_workers
from conda_envkit.oci.pgzip import BLOCK_SIZE, ParallelGzipWriter
from conda_envkit.oci.tarstream import FILE, Member


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


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_layer_digests_are_those_of_the_bytes(tmp_path: Path, kind: str) -> None:
    """diff_id and digest, computed while the layer is written, are the sha256 of the tar and of the blob."""
    source = tmp_path / "data.bin"
    source.write_bytes(random.Random(3).randbytes(3_000_000) + b"text " * 400_000)
    members = [Member(f"opt/env/lib/{i}.bin", FILE, 0o644, source.stat().st_size, source=source) for i in range(3)]
    store = BlobStore(tmp_path / "blobs")
    layer = write_layer(members, store, Compression(kind), 0)
    blob = store.path(layer.descriptor.digest).read_bytes()
    assert layer.descriptor.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.descriptor.size == len(blob)
    plain = gzip.decompress(blob) if kind == "gzip" else zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()
    assert layer.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()


def test_a_member_that_shrinks_while_its_layer_is_written_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"a" * 100_000)
    members = [Member("opt/env/lib/big.bin", FILE, 0o644, 3_000_000, source=source)]  # says 3 MB: only 100 kB are there
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(OciError, match="shrank"):
        write_layer(members, store, Compression("zstd"), 0)
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


def test_reused_compressors_write_the_bytes_of_fresh_ones_even_after_a_failed_layer(tmp_path: Path) -> None:
    """A bake's layers share one zstd compressor per thread (`Compressors`): each layer's blob is the one a
    fresh compressor writes, also after a layer that failed halfway left the shared one mid-frame."""
    data, broken = tmp_path / "data.bin", tmp_path / "broken.bin"
    data.write_bytes(random.Random(5).randbytes(2_000_000) + b"import numpy as np\n" * 300_000)
    broken.write_bytes(b"b" * 3_000_000)
    layers = [
        [Member("opt/env/lib/a.bin", FILE, 0o644, data.stat().st_size, source=data)],
        [Member("opt/env/lib/b.bin", FILE, 0o755, 1_000_000, source=data)],
    ]
    fresh = [write_layer(members, BlobStore(tmp_path / "fresh"), Compression("zstd"), 0) for members in layers]

    store, shared = BlobStore(tmp_path / "shared"), Compressors()
    # Says 6 MB, has 3: the layer fails after the compressor has taken 3 MB (more than a zstd job).
    with pytest.raises(OciError, match="shrank"):
        write_layer([Member("opt/env/lib/c.bin", FILE, 0o644, 6_000_000, source=broken)], store, Compression("zstd"), 0, compressors=shared)
    again = [write_layer(members, store, Compression("zstd"), 0, compressors=shared) for members in layers]
    assert again == fresh
    with ThreadPoolExecutor(2) as pool:  # one compressor per thread: two layers at once do not share one
        assert list(pool.map(lambda m: write_layer(m, store, Compression("zstd"), 0, compressors=shared), layers * 2)) == fresh * 2
    for layer in again:
        blob = store.path(layer.descriptor.digest).read_bytes()
        assert layer.diff_id == "sha256:" + hashlib.sha256(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()).hexdigest()


def test_layer_bytes_do_not_depend_on_the_zstd_workers_which_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer's zstd workers follow the CPUs the process may use, up to ZSTD_MAX_WORKERS (each holds ~10 MB:
    a 64-core runner would otherwise hold ~650 MB); the bytes are the same for any number."""
    data = tmp_path / "data.bin"
    data.write_bytes(random.Random(6).randbytes(3_000_000) + b"import numpy as np\n" * 400_000)
    members = [Member("opt/env/lib/a.bin", FILE, 0o644, data.stat().st_size, source=data)]
    one = write_layer(members, BlobStore(tmp_path / "one"), Compression("zstd"), 0, compressors=Compressors(workers=1))
    five = write_layer(members, BlobStore(tmp_path / "five"), Compression("zstd"), 0, compressors=Compressors(workers=5))
    assert one == five
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)), raising=False)
    assert zstd_workers() == ZSTD_MAX_WORKERS
    assert zstd_workers(4) == ZSTD_MAX_WORKERS  # four layers at once (bake --jobs): each writer capped too
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(12)), raising=False)
    assert zstd_workers(4) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert zstd_workers(3) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3}, raising=False)
    assert zstd_workers() == 1
