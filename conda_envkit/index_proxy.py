"""A local HTTP proxy between uv and the remote package indexes of a `pip:` section.

uv has no size limit for what it reads: an index page that never ends grows in its
memory until the deadline. While `envkit lock` resolves, this proxy listens on
127.0.0.1 and is uv's HTTP(S)_PROXY; uv is given `http://envkit-index.invalid/i/<key>/`
instead of each remote index or `--find-links` page (a name that never resolves, so
uv's requests for it reach only the proxy, and URLs that stay the same from one lock to
the next, so uv's cache keeps working). The proxy fetches the real page with envkit's
own limits: the page cap ($ENVKIT_MAX_INDEX_PAGE_BYTES), the network deadline, requests'
redirect rules. Every file link in a page (wheel, `.metadata`) is rewritten to
`/f/<token>/<file name>`, so uv never talks to a remote host itself and never holds a
credential: the proxy sends an index's credentials only to that index's own scheme,
host and port. Any other host uv asks the proxy for is refused and reported, so a link
the rewriting missed fails loudly instead of being fetched uncapped.

A failure the proxy answers with a 403 (a cap, a deadline, a broken transfer) is kept and
reported by the caller in preference to uv's own message; the lock fails even if uv
resolved without that page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from conda_envkit.channels import origin
from conda_envkit.network import (
    DOWNLOAD_CAP_HINT,
    PAGE_CAP_ENV_VAR,
    Deadline,
    NetworkError,
    ResponseTooLarge,
    iter_limited,
    max_download_bytes,
    max_index_page_bytes,
    size_text,
)
from conda_envkit.redact import strip_userinfo

if TYPE_CHECKING:
    import requests

PAGE_CAP_HINT = f"an index page should not be that big: check the index; if the page really is, raise {PAGE_CAP_ENV_VAR}"
# A link longer than this is no file name an index serves; it is dropped from the page.
MAX_LINK_CHARS = 8192
HTML_TYPES = ("text/html", "application/vnd.pypi.simple.v1+html")
JSON_TYPES = ("application/vnd.pypi.simple.v1+json", "application/json")
# Headers of a file response uv may need: its size, type, ranges, and what lets uv's cache keep
# it. A page keeps what lets uv's cache keep it too: the rewritten page is the same bytes for the
# same upstream page (file links name their upstream URL, see `file_url`), so uv may reuse it
# while fresh and revalidate it upstream (a 304 is passed on as it is).
_FILE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Cache-Control", "ETag", "Last-Modified")
_PAGE_HEADERS = ("Cache-Control", "ETag", "Last-Modified", "Expires", "Vary")
# Request headers passed upstream; nothing else of uv's (no Authorization: uv has none).
_PAGE_REQUEST_HEADERS = ("Accept", "User-Agent", "If-None-Match", "If-Modified-Since")
_FILE_REQUEST_HEADERS = ("Accept", "User-Agent", "Range", "If-Range", "If-None-Match", "If-Modified-Since")
_A_TAG = re.compile(rb"<(a|base)\b[^>]*>", re.IGNORECASE)
# An attribute starts after white space, `/` or a quoted value (HTML's tokenizer accepts
# `<a/href=x>` and `<a x="1"href=y>`): a link the pattern missed would reach uv unproxied.
_HREF = re.compile(rb"""([\s/"']href\s*=\s*)("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)


@dataclass(frozen=True)
class Upstream:
    """One remote index or `--find-links` page uv reaches through the proxy.

    `url` has no credentials; `auth` (user, password) goes only to `url`'s own origin.
    """

    url: str
    auth: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        """The proxy path segment standing for this upstream: stable for one URL, no secret in it."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]


def split_credentials(url: str) -> Upstream:
    """`url` (credentials expanded) as an Upstream: `user:password@` moved out of the URL into `auth`."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    if not at:
        return Upstream(bare)
    user, _, password = userinfo.partition(":")
    return Upstream(bare, (unquote(user), unquote(password)))


def resolve_link(href: str, base: str) -> str | None:
    """The absolute http(s) URL `href` names on the page at `base`, or None for anything else.

    `javascript:`, `file:`, `data:` and other schemes, links with credentials and links
    longer than MAX_LINK_CHARS are refused: a remote page may only point at remote files.
    """
    href = href.strip()
    if len(href) > MAX_LINK_CHARS:
        return None
    try:
        from requests.utils import requote_uri

        url = requote_uri(urljoin(base, href))
        parts = urlsplit(url)
    except ValueError:  # an invalid IPv6 host, a bad port
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc or len(url) > MAX_LINK_CHARS:
        return None
    return url


LinkMap = Callable[[str], str]
# What uv is given instead of an index: a host that never resolves (RFC 6761), reached only
# through uv's HTTP proxy setting, which is this proxy. Without a port in them, the URLs are
# the same from one lock to the next, so uv's cache (keyed by URL) keeps working.
PROXY_ORIGIN = "http://envkit-index.invalid"
# What uv gets for a page or file the proxy could not fetch: uv neither retries a 403 (it
# would retry a 502 with seconds of backoff) nor takes it for a missing package.
FAILED = 403


def _proxied_link(href: str, base: str, link: LinkMap) -> str:
    """The proxied form of `href` (its fragment, e.g. `#sha256=...`, kept); "" for a refused link."""
    target = resolve_link(href, base)
    if target is None:
        return ""
    url, _, fragment = target.partition("#")
    return link(url) + (f"#{fragment}" if fragment else "")


def rewrite_html(body: bytes, page_url: str, link: LinkMap) -> bytes:
    """A PEP 503 page with every `<a href>` resolved against the page (or its `<base href>`) and passed through `link`.

    `<base>` tags are emptied, since every link is then absolute; a refused link keeps its
    tag with an empty href (uv skips a link that names no distribution file).
    """
    base = page_url
    for element in _A_TAG.finditer(body):
        if element[1].lower() == b"base":
            found = _HREF.search(element[0])
            if found:
                resolved = resolve_link(html.unescape(found[2].decode("utf-8", "replace").strip("\"'")), page_url)
                base = resolved or page_url
            break

    def tag(match: re.Match[bytes]) -> bytes:
        if match[1].lower() == b"base":
            return b"<base>"

        def href(found: re.Match[bytes]) -> bytes:
            value = html.unescape(found[2].decode("utf-8", "replace").strip("\"'"))
            return found[1] + b'"' + html.escape(_proxied_link(value, base, link), quote=True).encode() + b'"'

        return _HREF.sub(href, match[0])  # every href: parsers differ on which of two counts

    return _A_TAG.sub(tag, body)


def rewrite_json(body: bytes, page_url: str, link: LinkMap) -> bytes:
    """A PEP 691 project page with every `files[].url` resolved against the page and passed through `link`.

    A body that is not a JSON object is returned as it is (uv refuses it itself); a file
    whose `url` is not a string is dropped.
    """
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deep for Python (and for uv)
        return body
    if not isinstance(document, dict) or not isinstance(document.get("files"), list):
        return body
    files = []
    for entry in document["files"]:
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            files.append({**entry, "url": _proxied_link(entry["url"], page_url, link)})
    document["files"] = files
    return json.dumps(document).encode()


def rewrite_page(body: bytes, content_type: str, page_url: str, link: LinkMap) -> bytes:
    """`body` with its file links proxied, by its content type (HTML or PEP 691 JSON); other types unchanged."""
    media = content_type.split(";")[0].strip().lower()
    if media in HTML_TYPES:
        return rewrite_html(body, page_url, link)
    if media in JSON_TYPES:
        return rewrite_json(body, page_url, link)
    return body


class IndexProxy:
    """The running proxy: proxied URLs for uv, upstream URLs back, and the failures it met."""

    def __init__(self, upstreams: tuple[Upstream, ...], session: requests.Session) -> None:
        self.upstreams = {u.key: u for u in upstreams}
        self.session = session
        self.page_cap = max_index_page_bytes()
        self.file_cap = max_download_bytes()
        self.origin = PROXY_ORIGIN
        self.address = ""  # http://envkit:<secret>@127.0.0.1:PORT once serving: what uv's HTTP(S)_PROXY are
        # Another local user could reach 127.0.0.1:PORT while the lock runs: only a client that
        # knows this secret (uv, through its proxy setting) gets pages fetched with the index's credentials.
        self.secret = secrets.token_urlsafe(24)
        self._failed: dict[str, NetworkError] = {}
        self._reading: dict[str, int] = {}
        self._lock = threading.Lock()

    def for_uv(self, url: str) -> str:
        """What uv is given for an index or find-links `url` (credentials expanded): a remote one proxied, a local one as it is."""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return url
        return self.index_url(split_credentials(url))

    def uv_env(self) -> dict[str, str]:
        """Environment for uv that sends any connection to a remote host here, where it is refused and recorded."""
        env = dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"), self.address)
        env |= {name.lower(): value for name, value in env.items()}
        return env | {"NO_PROXY": "", "no_proxy": ""}

    def index_url(self, upstream: Upstream) -> str:
        """What uv is given instead of `upstream.url`."""
        return f"{self.origin}/i/{upstream.key}" + ("/" if upstream.url.endswith("/") else "")

    def file_url(self, url: str) -> str:
        """The proxied URL of a file an index page links to: its upstream URL is in it (base64), so the
        link stays good in a page uv cached in an earlier lock. Only uv (the proxy's secret) can ask for
        one, and `upstream_of` takes back only http(s) URLs without credentials, as `resolve_link` gives."""
        token = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
        name = urlsplit(url).path.rsplit("/", 1)[-1] or "file"
        return f"{self.origin}/f/{token}/{name}"

    def failures(self) -> list[NetworkError]:
        """What the proxy could not fetch, in the order it happened."""
        with self._lock:
            return list(self._failed.values())

    def upstream_text(self, text: str) -> str:
        """`text` (uv's output or message) with every proxied URL replaced by its upstream URL, without credentials."""
        escaped = re.escape(self.origin)

        def back(match: re.Match[str]) -> str:
            return self.upstream_of(match[0]) or match[0]

        return re.sub(escaped + r"/[^\s\"'<>`()]*", back, text)  # uv quotes URLs in `...` or (...)

    def upstream_of(self, proxied: str) -> str | None:
        """The upstream URL a proxied URL stands for (None if it is none of this proxy's)."""
        if not proxied.startswith(self.origin + "/"):
            return None
        proxied, hash_mark, fragment = proxied.partition("#")
        kind, _, rest = proxied[len(self.origin) + 1 :].partition("/")
        key, slash, tail = rest.partition("/")
        if kind == "i" and key in self.upstreams:
            base = self.upstreams[key].url
            return (base.rstrip("/") + "/" + tail if slash else base) + hash_mark + fragment
        if kind != "f":
            return None
        url = _file_of_token(key)
        if url is None:
            return None
        parts = urlsplit(url)
        name = parts.path.rsplit("/", 1)[-1] or "file"
        suffix = tail.removeprefix(name)
        if suffix not in ("", ".metadata") or not tail.startswith(name):  # a wheel, or its PEP 658 metadata
            return None
        return urlunsplit(parts._replace(path=parts.path + suffix)) + hash_mark + fragment

    def reading(self, shown: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """`chunks` of the page at `shown`, counted while they arrive (for `still_reading`)."""
        try:
            for chunk in chunks:
                with self._lock:
                    self._reading[shown] = self._reading.get(shown, 0) + len(chunk)
                yield chunk
        finally:
            with self._lock:
                self._reading.pop(shown, None)

    def still_reading(self) -> dict[str, int]:
        """Pages being read right now (URL without credentials -> bytes so far): what a resolution out of time waited for."""
        with self._lock:
            return dict(self._reading)

    def record(self, url: str, error: NetworkError) -> None:
        with self._lock:
            self._failed.setdefault(url, error)

    def failed(self, url: str) -> NetworkError | None:
        with self._lock:
            return self._failed.get(url)

    def auth_for(self, url: str) -> tuple[str, str] | None:
        """The credentials of the configured upstream with `url`'s origin, if any: never another host's."""
        where = origin(url)
        for upstream in self.upstreams.values():
            if upstream.auth and origin(upstream.url) == where:
                return upstream.auth
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    answering = False  # whether a status line went out: after it, a failure can only end the connection

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_CONNECT(self) -> None:
        if self._authorized():
            self._refuse_direct(f"https://{self.path}")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        proxy = self.server.proxy
        if not self._authorized():
            return
        local = self.path.removeprefix(proxy.origin)  # uv asks its HTTP proxy for absolute URLs
        if not local.startswith("/"):  # another host: uv tried to reach it without the proxy's links
            self._refuse_direct(self.path)
            return
        upstream = proxy.upstream_of(proxy.origin + local)
        if upstream is None:
            self._answer(404, b"not an envkit index proxy path\n", "text/plain")
            return
        page = local.startswith("/i/")
        earlier = proxy.failed(upstream)
        if earlier is not None:  # asked again: the answer would be the same
            self._answer(FAILED, f"{earlier.message}\n".encode(), "text/plain")
            return
        self.answering = False
        try:
            if page:
                self._page(upstream)
            else:
                self._file(upstream)
        except NetworkError as exc:
            proxy.record(upstream, exc)
            if not self.answering:  # nothing of the answer was sent yet
                self._answer(FAILED, f"{exc.message}\n".encode(), "text/plain")
        except OSError:  # uv hung up
            self.close_connection = True

    def _authorized(self) -> bool:
        """Whether the request carries the proxy's secret (as uv's proxy credentials); if not, a 407 went out."""
        expected = "Basic " + base64.b64encode(f"envkit:{self.server.proxy.secret}".encode()).decode()
        if hmac.compare_digest(self.headers.get("Proxy-Authorization", ""), expected):
            return True
        self._answer(407, b"envkit index proxy: not for this client\n", "text/plain", {"Proxy-Authenticate": 'Basic realm="envkit"'})
        return False

    def _refuse_direct(self, target: str) -> None:
        shown = target.split("?")[0]
        error = NetworkError(
            f"uv tried to reach {shown} directly, not through envkit's index proxy",
            hint="please report this: every index page and file should go through the proxy",
        )
        self.server.proxy.record(shown, error)
        self._answer(403, b"envkit: direct connections are refused\n", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _request_headers(self, names: tuple[str, ...]) -> dict[str, str]:
        passed = {key: value for key in names if (value := self.headers.get(key))}
        return passed | {"Via": "1.1 envkit-index-proxy"}  # what HTTP asks of a proxy (RFC 9110, 7.6.3)

    def _page(self, url: str) -> None:
        """Fetch an index page whole (within the page cap and deadline), rewrite its links, answer it."""
        import requests

        proxy = self.server.proxy
        shown = strip_userinfo(url)
        deadline = Deadline(shown)
        try:
            with proxy.session.get(
                url,
                stream=True,
                timeout=deadline.timeouts(),
                auth=proxy.auth_for(url),
                headers=self._request_headers(_PAGE_REQUEST_HEADERS),
            ) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > proxy.page_cap:
                    raise ResponseTooLarge(
                        f"{shown}: {declared} bytes, over the {size_text(proxy.page_cap)} index page limit", hint=PAGE_CAP_HINT
                    )
                body = b"".join(proxy.reading(shown, iter_limited(response, deadline, proxy.page_cap, cap_hint=PAGE_CAP_HINT)))
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                if response.status_code == 200:
                    body = rewrite_page(body, content_type, response.url, proxy.file_url)
                status = response.status_code
                kept = {key: response.headers[key] for key in _PAGE_HEADERS if key in response.headers}
        except requests.TooManyRedirects:
            raise NetworkError(f"{shown}: too many redirects", hint="the index redirects in a loop; check the index URL") from None
        except requests.RequestException as exc:
            raise NetworkError(f"{shown}: request failed ({exc.__class__.__name__})", hint="check the index URL and the network") from None
        self._answer(status, body, content_type, kept)

    def _file(self, url: str) -> None:
        """Stream a file (wheel, `.metadata`) within the download cap and deadline; a `Range` request is passed on."""
        import requests

        proxy = self.server.proxy
        shown = strip_userinfo(url)
        deadline = Deadline(shown)
        headers = {**self._request_headers(_FILE_REQUEST_HEADERS), "Accept-Encoding": "identity"}
        try:
            fetch = proxy.session.head if self.command == "HEAD" else proxy.session.get
            with fetch(
                url, stream=True, timeout=deadline.timeouts(), auth=proxy.auth_for(url), headers=headers, allow_redirects=True
            ) as response:
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > proxy.file_cap and self.command != "HEAD":
                    raise ResponseTooLarge(
                        f"{shown}: {declared} bytes, over the {size_text(proxy.file_cap)} download limit", hint=DOWNLOAD_CAP_HINT
                    )
                encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
                self.answering = True
                self.send_response(response.status_code)
                for key in _FILE_HEADERS:
                    if key in response.headers and not (encoded and key == "Content-Length"):
                        self.send_header(key, response.headers[key])
                if encoded or not declared.isdigit():  # the body's length is unknown: it ends when the connection does
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command == "HEAD":
                    return
                self.close_connection = True  # from here on, a failure can only cut the connection (uv sees a short body)
                sent = 0
                for chunk in iter_limited(response, deadline, proxy.file_cap, cap_hint=DOWNLOAD_CAP_HINT):
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self.close_connection = encoded or not declared.isdigit() or sent != int(declared)
        except requests.TooManyRedirects:
            raise NetworkError(f"{shown}: too many redirects", hint="the server redirects in a loop; check the index") from None
        except requests.RequestException as exc:
            raise NetworkError(f"{shown}: request failed ({exc.__class__.__name__})", hint="check the index and the network") from None


def _file_of_token(token: str) -> str | None:
    """The upstream URL a file token of `IndexProxy.file_url` stands for, if it is one `resolve_link` allows."""
    if len(token) > 2 * MAX_LINK_CHARS:
        return None
    try:
        url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return url if resolve_link(url, url) == url else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: IndexProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy

    def handle_error(self, request: object, client_address: object) -> None:
        """uv closing a kept-alive connection is no error; anything else is a bug, shown as one."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serve_indexes(upstreams: tuple[Upstream, ...]) -> Iterator[IndexProxy]:
    """A proxy for `upstreams` on 127.0.0.1 (an ephemeral port), stopped when the block ends."""
    import requests

    with requests.Session() as session:
        proxy = IndexProxy(upstreams, session)
        server = _Server(proxy)
        proxy.address = f"http://envkit:{proxy.secret}@127.0.0.1:{server.server_address[1]}"
        # shutdown() waits for the loop's next poll: at the default 0.5 s, that was most of what
        # the proxy added to a resolution.
        thread = threading.Thread(target=server.serve_forever, args=(0.005,), name="envkit: index proxy", daemon=True)
        thread.start()
        try:
            yield proxy
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
