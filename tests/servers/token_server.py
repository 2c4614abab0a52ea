"""A registry token server (the docker token auth spec) on 127.0.0.1, for bearer-auth tests.

Usage: python token_server.py KEY.pem CERT.pem ISSUER SERVICE USER:PASSWORD
Prints its port, then serves GET /token until killed. Requests with the right basic
credentials get a JWT (RS256, signed with `openssl dgst`, the certificate in `x5c`)
granting every requested scope; anonymous requests get pull-only tokens.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    key: Path
    cert_der: bytes
    issuer: str
    service: str
    credentials: str

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = parse_qs(urlsplit(self.path).query)
        authorized = self.headers.get("Authorization") == "Basic " + base64.b64encode(self.credentials.encode()).decode()
        if self.headers.get("Authorization") and not authorized:
            self.send_response(401)
            self.end_headers()
            return
        access = []
        for scope in " ".join(query.get("scope", [])).split():
            kind, name, actions = scope.split(":")
            granted = actions.split(",") if authorized else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": self.credentials.split(":")[0] if authorized else "",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(now),
            "access": access,
        }
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(), capture_output=True, check=True
        ).stdout
        body = json.dumps({"token": f"{signing_input}.{b64url(signature)}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    key, cert, issuer, service, credentials = sys.argv[1:6]
    Handler.key = Path(key)
    Handler.cert_der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True).stdout
    Handler.issuer, Handler.service, Handler.credentials = issuer, service, credentials
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
