"""A misbehaving HTTP server on 127.0.0.1, for the robustness tests (issue 15).

Usage: python hostile_http.py
Prints its OS-assigned port, then serves until killed (the tests stop it by PID).
The first path segment picks the behaviour, so one server covers every case:
registry paths `/v2/<mode>/...`, anything else `/<mode>/...`. Every loop is
bounded: nothing here runs longer than LIMIT seconds per request.

Modes
  trickle        headers, then one byte every 0.2 s of a long body
  never-answer   reads the request, never answers
  redirect-loop  302 to itself, forever
  redirect-to    /redirect-to/<port>/<path>: 302 to http://127.0.0.1:<port>/<path> (another server)
  garbage        200 with bytes that are neither JSON nor UTF-8
  html           200 text/html (a login page or proxy error)
  short-body     Content-Length 1000, 10 bytes, then close
  huge           a JSON manifest of 64 MiB (spaces), sent quickly
  big-page       simple-index pages that declare Content-Length 64 MiB (HTML, sent quickly)
  big-file       wheels that declare Content-Length 64 MiB (sent quickly)
  huge-repodata  404 except repodata.json, which is 64 MiB of unfinished JSON
  endless        404 except repodata.json, simple-index pages and package archives, which never end: no
                 Content-Length, 1 MiB every 1/16 s (16 MiB/s) of an unfinished document
  endless-shards 404 except a sharded channel's index (repodata_shards.msgpack.zst), which never
                 ends (as `endless`): py-rattler reads it into memory
  empty          200 with an empty body
  not-object     a JSON array instead of an object
  non-utf8       a manifest with bytes that are not UTF-8
  no-config      an image manifest without `config`
  bad-config     a manifest whose config blob is not JSON (digest matches)
  bad-layers     a manifest whose `layers` is a string
  huge-config    a manifest whose config descriptor says 64 MiB; the config blob is 64 MiB (spaces)
  endless-layer  a manifest whose one layer says 1 TiB; the layer blob never ends (as `endless`)
  token-garbage  401 Bearer challenge; the token endpoint answers garbage
  token-html     401 Bearer challenge; the token endpoint answers an HTML page
  token-no-token 401 Bearer challenge; the token endpoint answers {}
  token-trickle  401 Bearer challenge; the token endpoint trickles
  server-error   HTTP 500 every time
  no-location    a registry without blobs that starts every upload (POST 202) without saying where it goes on
  slow-referrers an index of 12 manifests whose artifacts (the referrers API, the tag-schema fallback) are each
                 answered (404) after 3.5 s: within a request's deadline of 4 s, past it all together
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LIMIT = 60.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BAD_CONFIG = b"this is not json \xff\xfe"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(config: dict | None, layers: object = ()) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "layers": list(layers) if isinstance(layers, tuple) else layers,
    }
    if config is not None:
        document["config"] = config
    return json.dumps(document).encode()


_CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
_CONFIG_DESC = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(_CONFIG), "size": len(_CONFIG)}
_PLATFORMS = ["amd64", "arm64", "ppc64le", "s390x", "riscv64", "386", "mips64le", "loong64", "arm", "mips", "mipsle", "wasm"]


def _platform_manifest(arch: str) -> bytes:
    return json.dumps({**json.loads(_manifest(_CONFIG_DESC)), "annotations": {"n": arch}}).encode()


def _index_entry(body: bytes) -> dict[str, object]:
    arch = json.loads(body)["annotations"]["n"]
    return {"mediaType": OCI_MANIFEST, "digest": _digest(body), "size": len(body), "platform": {"os": "linux", "architecture": arch}}


_SLOW_MANIFESTS = {_digest(body): body for body in map(_platform_manifest, _PLATFORMS)}
_SLOW_INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [_index_entry(b) for b in _SLOW_MANIFESTS.values()],
    }
).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass

    def _mode(self) -> tuple[str, list[str]]:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts and parts[0] == "v2":
            parts = parts[1:]
        return (parts[0] if parts else ""), parts

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        started = time.monotonic()
        while time.monotonic() - started < LIMIT:
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def _huge(self) -> None:
        size = 64 << 20
        self.send_response(200)
        self.send_header("Content-Type", OCI_MANIFEST)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b" " * (1 << 20)
        try:
            for _ in range(size >> 20):
                self.wfile.write(chunk)
        except OSError:
            return

    def _endless(self) -> None:
        # Fast enough that no per-read timeout fires, slow enough that a test's few seconds
        # cost tens of MiB of disk or memory, not gigabytes.
        plain = self._mode()[0] == "endless"  # else endless-shards: only the shard index never ends
        if self.path.endswith("/repodata.json") and plain:
            head, content_type = b'{"info": {"subdir": "linux-64"}, "packages": {', "application/json"
        elif self.path.endswith("/repodata_shards.msgpack.zst") and not plain:
            head, content_type = b"", "application/octet-stream"
        elif "/simple/" in self.path and plain:
            head, content_type = b"<!DOCTYPE html><html><body>", "text/html"
        elif (self.path.endswith((".conda", ".tar.bz2", ".whl")) and plain) or "/blobs/" in self.path:
            head, content_type = b"PK", "application/octet-stream"
        else:
            self._send(404, b"{}")
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b" " * (1 << 20)
        started = time.monotonic()
        try:
            self.wfile.write(head)
            while time.monotonic() - started < LIMIT:
                self.wfile.write(chunk)
                time.sleep(1 / 16)
        except OSError:
            return

    def _endless_error(self) -> None:
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = b'{"errors": [' + b" " * (1 << 20)
        started = time.monotonic()
        try:
            while time.monotonic() - started < LIMIT:
                self.wfile.write(chunk)
                time.sleep(1 / 16)
        except OSError:
            return

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        mode, _parts = self._mode()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(202 if mode == "no-location" else 405, b"")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        mode, parts = self._mode()
        if self.path.split("?")[0] == "/v2/":  # the API root, as any registry answers it (a push checks it first)
            self._send(200, b"{}")
            return
        if mode == "token":
            self._token(parts[1] if len(parts) > 1 else "")
            return
        if mode.startswith("token-"):
            if "Bearer" not in self.headers.get("Authorization", ""):
                realm = f"http://127.0.0.1:{self.server.server_address[1]}/token/{mode[len('token-') :]}"
                self._send(401, b"{}", headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile"'})
                return
            self._send(200, _manifest({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(b"{}"), "size": 2}))
            return
        blob = "blobs" in parts
        if mode == "trickle":
            self._trickle()
        elif mode == "never-answer":
            time.sleep(LIMIT)
        elif mode == "redirect-loop":
            self._send(302, b"", headers={"Location": self.path})
        elif mode == "redirect-to" and len(parts) > 1 and parts[1].isdigit():
            rest = self.path.split("/", 3)[3] if self.path.count("/") >= 3 else ""
            self._send(302, b"", headers={"Location": f"http://127.0.0.1:{parts[1]}/{rest}"})
        elif mode == "garbage":
            self._send(200, b"\x00\xff garbage \xfe" * 10, "application/octet-stream")
        elif mode == "html":
            self._send(200, b"<html><body>Please log in</body></html>", "text/html")
        elif mode == "short-body":
            self.send_response(200)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"schemaV')
            self.wfile.flush()
            self.close_connection = True
        elif mode == "huge":
            self._huge()
        elif mode in ("big-page", "big-file"):
            if ("/simple/" in self.path) != (mode == "big-page"):
                self._send(404, b"{}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if mode == "big-page" else "application/octet-stream")
            self.send_header("Content-Length", str(64 << 20))
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b" " * (1 << 20))
            except OSError:
                return
        elif mode == "huge-repodata":
            # Only repodata.json exists, and it is 64 MiB of an unfinished JSON document.
            if not self.path.endswith("/repodata.json"):
                self._send(404, b"{}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(64 << 20))
            self.end_headers()
            head = b'{"packages": {'
            try:
                self.wfile.write(head + b" " * ((1 << 20) - len(head)))
                for _ in range(63):
                    self.wfile.write(b" " * (1 << 20))
            except OSError:
                return
        elif mode in ("endless", "endless-shards"):
            self._endless()
        elif mode == "empty":
            self._send(200, b"", OCI_MANIFEST)
        elif mode == "not-object":
            self._send(200, b"[1, 2, 3]", OCI_MANIFEST)
        elif mode == "non-utf8":
            self._send(200, b'{"schemaVersion": 2, "mediaType": "\xff\xfe"}', OCI_MANIFEST)
        elif mode == "no-config":
            self._send(200, _manifest(None), OCI_MANIFEST)
        elif mode == "bad-config":
            if blob:
                self._send(200, BAD_CONFIG, "application/octet-stream")
            else:
                config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(BAD_CONFIG), "size": len(BAD_CONFIG)}
                self._send(200, _manifest(config), OCI_MANIFEST)
        elif mode == "bad-layers":
            config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(b"{}"), "size": 2}
            self._send(200, b"{}" if blob else _manifest(config, "not a list"), OCI_MANIFEST)
        elif mode == "huge-config":
            if blob:
                self._huge()
            else:
                config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(b"huge"), "size": 64 << 20}
                self._send(200, _manifest(config), OCI_MANIFEST)
        elif mode == "endless-layer":
            if blob and parts[-1] == _digest(b"{}"):
                self._send(200, b"{}", "application/octet-stream")
            elif blob:
                self._endless()
            else:
                config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(b"{}"), "size": 2}
                layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(b"layer"), "size": 1 << 40}
                self._send(200, _manifest(config, (layer,)), OCI_MANIFEST)
        elif mode == "server-error":
            self._send(500, b"internal error", "text/plain")
        elif mode == "endless-error":  # an error whose body never ends
            self._endless_error()
        elif mode == "odd-errors":  # an error document of the wrong shapes, with an escape sequence and a long message
            errors = [1, {"code": "DENIED\x1b[2J", "message": 5}, {"message": "m" * 1000}]
            self._send(400, json.dumps({"errors": errors}).encode())
        elif mode == "slow-referrers":
            self._slow_referrers(parts)
        else:
            self._send(404, b"{}")

    def _slow_referrers(self, parts: list[str]) -> None:
        name = parts[-1]
        if "referrers" in parts or name.startswith("sha256-"):
            time.sleep(3.5)
            self._send(404, b"{}")
        elif "blobs" in parts and name == _CONFIG_DESC["digest"]:
            self._send(200, _CONFIG, "application/octet-stream")
        elif "manifests" in parts and name in _SLOW_MANIFESTS:
            self._send(200, _SLOW_MANIFESTS[name], OCI_MANIFEST)
        elif "manifests" in parts:
            self._send(200, _SLOW_INDEX, "application/vnd.oci.image.index.v1+json")
        else:
            self._send(404, b"{}")

    def _token(self, kind: str) -> None:
        if kind == "garbage":
            self._send(200, b"\xff\xfe not json")
        elif kind == "html":
            self._send(200, b"<html>sign in</html>", "text/html")
        elif kind == "no-token":
            self._send(200, b"{}")
        elif kind == "trickle":
            self._trickle()
        else:
            self._send(404, b"{}")


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main() -> None:
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
