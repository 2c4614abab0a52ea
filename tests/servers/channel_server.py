"""Serve a directory over HTTP on 127.0.0.1, optionally behind basic auth.

Usage: python channel_server.py DIRECTORY [USER:PASSWORD]
Prints the port it listens on, then serves until killed. Every request path is
appended to DIRECTORY/requests.log so that tests can see what was fetched, and every
Authorization header received to DIRECTORY/authorization.log (path, then the header), and
the path of every request that came through a proxy (a `Via` header) to DIRECTORY/via.log.
A directory with an `index.json` is served as a PEP 691 page
(application/vnd.pypi.simple.v1+json) instead of its index.html.
"""

from __future__ import annotations

import base64
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(SimpleHTTPRequestHandler):
    credentials: str | None = None
    log_path: Path

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if "Authorization" in self.headers:
            with self.log_path.with_name("authorization.log").open("a") as log:
                log.write(f"{self.path} {self.headers['Authorization']}\n")
        if not self._authorized():
            return
        with self.log_path.open("a") as log:
            log.write(self.path + "\n")
        if "Via" in self.headers:
            with self.log_path.with_name("via.log").open("a") as log:
                log.write(self.path + "\n")
        pep691 = Path(self.translate_path(self.path)) / "index.json"
        if self.path.endswith("/") and pep691.is_file():
            body = pep691.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if self._authorized():
            super().do_HEAD()

    def _authorized(self) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
        if self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="channel"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    directory = Path(sys.argv[1])
    Handler.credentials = sys.argv[2] if len(sys.argv) > 2 else None
    Handler.log_path = directory / "requests.log"
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
