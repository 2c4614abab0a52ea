"""Serve a directory over HTTP on 127.0.0.1, optionally behind basic auth.

Usage: python channel_server.py DIRECTORY [USER:PASSWORD]
Prints the port it listens on, then serves until killed. Every request path is
appended to DIRECTORY/requests.log so that tests can see what was fetched.
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
        if not self._authorized():
            return
        with self.log_path.open("a") as log:
            log.write(self.path + "\n")
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
