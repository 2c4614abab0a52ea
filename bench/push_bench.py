"""Push benchmark: one image's blobs sent one at a time (the baseline) and PUSH_JOBS at once, to a real
registry (Debian's docker-registry on 127.0.0.1), through a proxy that makes it a registry far away.

The proxy (in this script) holds each chunk for --delay-ms in each direction (a round trip of twice that) and
lets each connection through at --mbps at most, as a registry across a WAN does: what concurrency pays for is
the requests' round trips and one TCP stream's limited rate, not this machine's CPU. Both sides push the
same blobs into a fresh repository, alternated over --rounds; a second push (every blob already there: one
HEAD each) is timed too.

Usage: python bench/push_bench.py [--layers 12] [--layer-mb 24] [--delay-ms 40] [--mbps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bake_bench import start_registry  # noqa: E402
from conda_envkit.oci import transfer  # noqa: E402
from conda_envkit.oci.blobs import OCI_LAYER_ZSTD, BlobStore, Descriptor  # noqa: E402
from conda_envkit.oci.image import put_manifest  # noqa: E402
from conda_envkit.oci.layer import Layer  # noqa: E402
from conda_envkit.oci.registry import RegistryClient  # noqa: E402


class DelayLine:
    """One direction of a proxied connection: each chunk leaves `delay` s after it arrived, at `rate` bytes/s."""

    def __init__(self, source: socket.socket, sink: socket.socket, delay: float, rate: float) -> None:
        self.source, self.sink, self.delay, self.rate = source, sink, delay, rate
        self.chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.source.recv(1 << 16)
            except OSError:
                data = b""
            self.chunks.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def _write(self) -> None:
        free_at = 0.0  # when the line is free again at `rate`
        while True:
            due, data = self.chunks.get()
            if not data:
                with contextlib.suppress(OSError):
                    self.sink.shutdown(socket.SHUT_WR)
                return
            free_at = max(free_at, due) + len(data) / self.rate
            time.sleep(max(0.0, free_at - time.monotonic()))
            try:
                self.sink.sendall(data)
            except OSError:
                return


def start_proxy(target: str, delay: float, rate: float) -> str:
    host, port = target.rsplit(":", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection((host, int(port)))
            DelayLine(client, upstream, delay, rate)
            DelayLine(upstream, client, delay, rate)

    threading.Thread(target=accept, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}"


def image(store: BlobStore, layers: int, layer_bytes: int) -> transfer.ImageToPush:
    written = []
    for i in range(layers):
        data = os.urandom(layer_bytes // (i % 3 + 1))  # sizes as a real image's vary
        digest = store.put_bytes(data)
        written.append(Layer(Descriptor(OCI_LAYER_ZSTD, digest, len(data)), digest))
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [w.diff_id for w in written]}}
    manifest, config_desc = put_manifest(store, config, written, {})
    return transfer.ImageToPush(manifest, (manifest,), (config_desc.digest, *(w.descriptor.digest for w in written)), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--layer-mb", type=float, default=24)
    parser.add_argument("--delay-ms", type=float, default=40, help="one way: a round trip takes twice this")
    parser.add_argument("--mbps", type=float, default=200, help="megabits per second per connection")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jobs = transfer.PUSH_JOBS
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        registry, address = start_registry(tmp / "registry")
        try:
            proxy = start_proxy(address, args.delay_ms / 1000, args.mbps * 1e6 / 8)
            store = BlobStore(tmp / "store")
            to_push = image(store, args.layers, int(args.layer_mb * (1 << 20)))
            total = sum(store.path(d).stat().st_size for d in to_push.blobs)
            times: dict[str, list[float]] = {"first_1": [], f"first_{jobs}": [], "again_1": [], f"again_{jobs}": []}
            for round_ in range(args.rounds):
                for n in (1, jobs):  # alternated, each into a repository of its own
                    transfer.PUSH_JOBS = n
                    client = RegistryClient(proxy, insecure=True)
                    repository = f"bench/r{round_}j{n}"
                    for key in ("first", "again"):
                        started = time.perf_counter()
                        stats = transfer.push_image(client, repository, to_push, store, ["t"])
                        times[f"{key}_{n}"].append(time.perf_counter() - started)
                    assert len(stats.skipped) == len(to_push.blobs), stats
        finally:
            registry.terminate()
            registry.wait()
    median = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        ("image", f"{len(to_push.blobs)} blobs, {total / 1e6:.0f} MB"),
        ("link", f"{args.delay_ms:.0f} ms each way, {args.mbps:.0f} Mbit/s per connection"),
        ("push, one blob at a time", f"{median['first_1']:.2f} s"),
        (f"push, {jobs} at once (default)", f"{median[f'first_{jobs}']:.2f} s  ({median[f'first_{jobs}'] / median['first_1']:.2f}x)"),
        ("push again (all there), one at a time", f"{median['again_1']:.2f} s"),
        (f"push again, {jobs} at once", f"{median[f'again_{jobs}']:.2f} s  ({median[f'again_{jobs}'] / median['again_1']:.2f}x)"),
    ]
    for name, value in rows:
        print(f"{name:40s}{value}")
    print(json.dumps({"rounds_s": {k: [round(x, 2) for x in v] for k, v in times.items()}, "total_bytes": total}, indent=2))


if __name__ == "__main__":
    main()
