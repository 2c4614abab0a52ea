"""A read-only proxy in front of a real registry that sends more of a layer than its descriptor says (issue 15).

Usage: python blob_proxy.py UPSTREAM_HOST:PORT
Prints its OS-assigned port, then serves until killed (the tests stop it by PID).
The first repository segment picks the behaviour and is stripped before forwarding,
so `/v2/long/team/app/...` is upstream's `/v2/team/app/...`:

  pass     forward as is
  long     a layer blob (one a manifest seen by this proxy lists under `layers`) is
           followed by 1 MiB of zeros; Content-Length counts them
  endless  a layer blob is followed by zeros that never end (no Content-Length,
           1 MiB every 1/16 s, at most LIMIT seconds)

Configs, manifests and HEAD requests pass unchanged, so only the layer download is hostile.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMIT = 60.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LAYERS: set[str] = set()  # digests listed as layers by the manifests forwarded so far


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._forward()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._forward()

    def _forward(self) -> None:
        parts = self.path.split("/")  # ['', 'v2', mode, ...]
        mode, path = "pass", self.path
        if len(parts) > 3 and parts[1] == "v2" and parts[2] in ("pass", "long", "endless"):
            mode, path = parts[2], "/".join(parts[:2] + parts[3:])
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization", "range")}
        request = urllib.request.Request(f"http://{self.upstream}{path}", headers=headers, method=self.command)
        try:
            response = _DIRECT.open(request, timeout=30)
        except urllib.error.HTTPError as exc:
            response = exc
        body = response.read()
        status = response.status if hasattr(response, "status") else response.code
        if "/manifests/" in path and status == 200:
            with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
                _LAYERS.update(str(layer["digest"]) for layer in json.loads(body).get("layers", []))
        digest = path.rsplit("/", 1)[-1]
        hostile = self.command == "GET" and "/blobs/" in path and digest in _LAYERS and status == 200 and mode in ("long", "endless")
        self.send_response(status)
        for key, value in response.headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(key, value)
        if hostile and mode == "endless":
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._endless(body)
            return
        extra = b"\0" * (1 << 20) if hostile else b""
        # A HEAD has no body here: its length is upstream's (a blob's size, which envkit checks).
        length = response.headers.get("Content-Length", "0") if self.command == "HEAD" else str(len(body) + len(extra))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body + extra)

    def _endless(self, body: bytes) -> None:
        chunk = b"\0" * (1 << 20)
        started = time.monotonic()
        try:
            self.wfile.write(body)
            while time.monotonic() - started < LIMIT:
                self.wfile.write(chunk)
                time.sleep(1 / 16)
        except OSError:
            return


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main() -> None:
    Handler.upstream = sys.argv[1]
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
