"""ParallelTee: a layer's tar stream hashed and compressed side by side, each in its own thread.

Every consumer sees every byte in order, however slow it is and however the writer reuses the
pool's buffers; a consumer's failure reaches the writer instead of hanging it.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from conda_envkit.oci.blobs import BlobStore, OciError
from conda_envkit.oci.layer import Compression, write_layer
from conda_envkit.oci.tarstream import FILE, Member
from conda_envkit.oci.tee import ParallelTee


def _in_thread(work: object, seconds: float = 30) -> None:
    """Run `work` and fail (instead of hanging the suite) if it does not end."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the tee hung"
    if errors:
        raise errors[0]


def test_every_consumer_sees_every_byte_in_order_with_reused_buffers() -> None:
    rng = random.Random(5)
    expected = hashlib.sha256()
    seen = [hashlib.sha256(), hashlib.sha256()]

    def slow(index: int):  # type: ignore[no-untyped-def]
        def consume(chunk: bytes | memoryview) -> None:
            if rng.random() < 0.05:
                time.sleep(0.002)
            seen[index].update(chunk)

        return consume

    def work() -> None:
        tee = ParallelTee([slow(0), slow(1)], size=4096, depth=2)
        for i in range(600):
            if i % 7 == 0:
                data = rng.randbytes(rng.randrange(1, 9000))
                tee.write(data)
                expected.update(data)
                continue
            buffer = tee.take()
            n = rng.randrange(0, len(buffer) + 1)
            buffer[:n] = rng.randbytes(n)
            expected.update(buffer[:n])
            tee.give(buffer, n)
        tee.close()
        assert tee.written > 0

    _in_thread(work)
    assert seen[0].hexdigest() == seen[1].hexdigest() == expected.hexdigest()


@pytest.mark.parametrize("when", ["write", "give"])
def test_a_failing_consumer_stops_the_writer_with_its_error(when: str) -> None:
    def broken(chunk: bytes | memoryview) -> None:
        raise OSError(28, "No space left on device")

    def work() -> None:
        tee = ParallelTee([hashlib.sha256().update, broken], size=1024, depth=2)
        with pytest.raises(OSError, match="No space left"):
            for _ in range(10_000):  # more than the pool and the write budget: the writer must learn of the error
                if when == "write":
                    tee.write(b"x" * 100)
                else:
                    tee.give(tee.take(), 1024)
            tee.close()
        with pytest.raises(OSError, match="No space left"):
            tee.close()

    _in_thread(work)


def test_abort_ends_the_consumers_without_waiting_for_the_queue() -> None:
    consumed = []

    def slow(chunk: bytes | memoryview) -> None:
        time.sleep(0.01)
        consumed.append(len(chunk))

    def work() -> None:
        tee = ParallelTee([slow], size=1024, depth=8)
        for _ in range(8):
            tee.give(tee.take(), 1024)
        tee.abort()
        assert len(consumed) < 8

    _in_thread(work)


def test_a_member_that_shrinks_while_its_layer_is_written_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"a" * 100_000)
    members = [Member("opt/env/lib/big.bin", FILE, 0o644, 3_000_000, source=source)]  # says 3 MB: only 100 kB are there
    store = BlobStore(tmp_path / "blobs")

    def work() -> None:
        with pytest.raises(OciError, match="shrank"):
            write_layer(members, store, Compression("zstd"), 0)

    _in_thread(work)
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_layer_digests_are_those_of_the_bytes(tmp_path: Path, kind: str) -> None:
    """diff_id and digest, computed in the tee's threads, are the sha256 of the tar and of the blob."""
    import gzip
    import io

    import zstandard

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
