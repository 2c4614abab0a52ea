"""The index proxy's URL rewriting, on its own: what a hostile index page can and cannot make uv fetch.

The proxy end to end (caps, deadlines, credentials, PEP 691) is in tests/hostile/test_robust_index_proxy.py.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from conda_envkit.index_proxy import IndexProxy, Upstream, resolve_link, rewrite_html, rewrite_json, serve_indexes, split_credentials
from conda_envkit.testing.local_index import served_in_thread
from tests.conftest import ChannelServer, run_envkit, write_env

PAGE = "https://pypi.example/simple/numpy/"


def _link(url: str) -> str:
    return "PROXY<" + url + ">"


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("../../files/numpy-2.0-py3-none-any.whl", "https://pypi.example/files/numpy-2.0-py3-none-any.whl"),
        ("numpy-2.0-py3-none-any.whl#sha256=ab", "https://pypi.example/simple/numpy/numpy-2.0-py3-none-any.whl#sha256=ab"),
        ("/../../../etc/numpy.whl", "https://pypi.example/etc/numpy.whl"),  # `..` stops at the host's root
        ("/files/a b+c.whl", "https://pypi.example/files/a%20b+c.whl"),
        ("https://files.example/packages/x.whl", "https://files.example/packages/x.whl"),
        ("  //cdn.example/x.whl ", "https://cdn.example/x.whl"),
        ("javascript:alert(1)", None),
        ("file:///etc/passwd", None),
        ("data:text/plain,x", None),
        ("ftp://files.example/x.whl", None),
        ("https://user:secret@files.example/x.whl", None),
        ("http://[::1/x.whl", None),
        ("/" + "x" * 9000 + ".whl", None),
    ],
)
def test_resolve_link_allows_only_remote_http_files(href: str, expected: str | None) -> None:
    assert resolve_link(href, PAGE) == expected


def test_rewrite_html_proxies_every_link_and_keeps_the_rest() -> None:
    page = (
        b"<!DOCTYPE html><html><body>\n"
        b'<a href="../../files/numpy-2.0-py3-none-any.whl#sha256=abc" data-dist-info-metadata="sha256=def">numpy-2.0</a>\n'
        b"<A HREF='numpy-1.0.whl?x=1&amp;y=2' data-requires-python=\"&gt;=3.9\">numpy-1.0</A>\n"
        b"<a href=javascript:alert(1)>evil</a>\n"
        b'<a/href="file:///etc/passwd">slash</a><a x="1"href="data:,x">quote</a><a href="ok.whl" href="file:///x">twice</a>\n'
        b"<a name=anchor>no link</a> caf\xe9\n"
        b"</body></html>"
    )
    out = rewrite_html(page, PAGE, _link)
    assert b'href="PROXY&lt;https://pypi.example/files/numpy-2.0-py3-none-any.whl&gt;#sha256=abc"' in out
    assert b'data-dist-info-metadata="sha256=def"' in out  # uv asks for <proxied wheel URL>.metadata
    assert b'HREF="PROXY&lt;https://pypi.example/simple/numpy/numpy-1.0.whl?x=1&amp;y=2&gt;"' in out
    assert b'data-requires-python="&gt;=3.9"' in out
    assert b'<a href="">evil</a>' in out
    assert b'<a/href="">slash</a><a x="1"href="">quote</a>' in out
    assert b'<a href="PROXY&lt;https://pypi.example/simple/numpy/ok.whl&gt;" href="">twice</a>' in out
    assert b"<a name=anchor>no link</a> caf\xe9" in out  # bytes that are not UTF-8 pass untouched
    assert b"pypi.example/files" not in out.replace(b"PROXY&lt;https://pypi.example/files", b"")


def test_rewrite_html_resolves_against_a_base_tag_and_removes_it() -> None:
    page = b'<html><head><base href="https://mirror.example/pkgs/"></head><body><a href="x-1.0-py3-none-any.whl">x</a></body></html>'
    out = rewrite_html(page, PAGE, _link)
    assert b'href="PROXY&lt;https://mirror.example/pkgs/x-1.0-py3-none-any.whl&gt;"' in out
    assert b"<base>" in out and b'mirror.example/pkgs/"' not in out


def test_rewrite_html_ignores_a_base_tag_with_a_hostile_href() -> None:
    page = b'<base href="file:///etc/"><a href="x.whl">x</a>'
    assert b"PROXY&lt;https://pypi.example/simple/numpy/x.whl&gt;" in rewrite_html(page, PAGE, _link)


def test_rewrite_json_proxies_file_urls_and_keeps_hashes() -> None:
    document = {
        "meta": {"api-version": "1.1"},
        "name": "numpy",
        "files": [
            {"filename": "numpy-2.0.whl", "url": "../../files/numpy-2.0.whl", "hashes": {"sha256": "ab"}, "core-metadata": True},
            {"filename": "evil.whl", "url": "file:///etc/passwd", "hashes": {}},
            {"filename": "odd.whl", "url": 7, "hashes": {}},
            "not an object",
        ],
    }
    out = json.loads(rewrite_json(json.dumps(document).encode(), PAGE, _link))
    assert out["files"] == [
        {
            "filename": "numpy-2.0.whl",
            "url": "PROXY<https://pypi.example/files/numpy-2.0.whl>",
            "hashes": {"sha256": "ab"},
            "core-metadata": True,
        },
        {"filename": "evil.whl", "url": "", "hashes": {}},
    ]
    assert out["meta"] == {"api-version": "1.1"}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"files": "no"}', b"\xff\xfe", b"[" * 100_000])
def test_rewrite_json_leaves_what_it_cannot_read_to_uv(body: bytes) -> None:
    assert rewrite_json(body, PAGE, _link) == body


def test_split_credentials_moves_userinfo_out_of_the_url() -> None:
    assert split_credentials("https://us%40er:p%3Ass@idx.example:8443/simple/") == Upstream(
        "https://idx.example:8443/simple/", ("us@er", "p:ss")
    )
    assert split_credentials("https://idx.example/simple") == Upstream("https://idx.example/simple")


def _proxy(*upstreams: Upstream) -> IndexProxy:
    proxy = IndexProxy(upstreams, requests.Session())
    return proxy


def test_proxied_urls_map_back_to_their_upstream() -> None:
    index = Upstream("https://idx.example/simple", ("u", "p"))
    links = Upstream("https://idx.example/links.html")
    proxy = _proxy(index, links)
    base = proxy.index_url(index)
    assert "idx.example" not in base and "u" not in base.rsplit("/", 1)[1]
    assert proxy.upstream_of(base + "/numpy/") == "https://idx.example/simple/numpy/"
    assert proxy.upstream_of(proxy.index_url(links)) == "https://idx.example/links.html"
    wheel = proxy.file_url("https://files.example/p/numpy-2.0-py3-none-any.whl?sig=1")
    assert wheel.endswith("/numpy-2.0-py3-none-any.whl") and "files.example" not in wheel
    assert proxy.upstream_of(wheel) == "https://files.example/p/numpy-2.0-py3-none-any.whl?sig=1"
    assert proxy.upstream_of(wheel + ".metadata") == "https://files.example/p/numpy-2.0-py3-none-any.whl.metadata?sig=1"
    assert proxy.upstream_of(wheel + "#sha256=ab") == "https://files.example/p/numpy-2.0-py3-none-any.whl?sig=1#sha256=ab"
    assert proxy.upstream_of(wheel + ".evil") is None
    assert proxy.upstream_of("http://envkit-index.invalid/f/0000/numpy.whl") is None
    assert proxy.upstream_of("http://envkit-index.invalid/i/unknown/numpy/") is None
    assert proxy.upstream_text(f"error: `{wheel}` and ({base}/numpy/) failed") == (
        "error: `https://files.example/p/numpy-2.0-py3-none-any.whl?sig=1` and (https://idx.example/simple/numpy/) failed"
    )


def test_credentials_go_only_to_their_own_origin() -> None:
    proxy = _proxy(Upstream("https://idx.example/simple", ("u", "p")))
    assert proxy.auth_for("https://idx.example/files/x.whl") == ("u", "p")
    assert proxy.auth_for("https://IDX.example:443/files/x.whl") == ("u", "p")
    assert proxy.auth_for("http://idx.example/files/x.whl") is None  # not over plain HTTP
    assert proxy.auth_for("https://idx.example:8443/files/x.whl") is None
    assert proxy.auth_for("https://files.example/x.whl") is None


def test_a_direct_connection_through_the_proxy_is_refused_and_recorded() -> None:
    # uv's HTTP(S)_PROXY point at the proxy: a link the rewriting missed is refused, not fetched uncapped.
    with serve_indexes((Upstream("http://127.0.0.1:9/simple"),)) as proxy:
        proxies = {"http": proxy.address}
        answer = requests.get("http://files.example/x.whl", proxies=proxies, timeout=10)
        unknown = requests.get(proxy.origin + "/f/unknown/x.whl", proxies=proxies, timeout=10)
    assert answer.status_code == 403 and unknown.status_code == 404
    refused = "uv tried to reach http://files.example/x.whl directly, not through envkit's index proxy"
    assert [f.message for f in proxy.failures()] == [refused]


def test_only_the_client_with_the_proxys_secret_is_served(pip_index_server: ChannelServer) -> None:
    # Another local user can reach 127.0.0.1 too: without uv's proxy credentials, nothing is fetched.
    with serve_indexes((Upstream(f"{pip_index_server.url}/simple"),)) as proxy:
        page = f"{proxy.origin}/i/{Upstream(f'{pip_index_server.url}/simple').key}/tiny-tokenizer/"
        anonymous = proxy.address.replace(f"envkit:{proxy.secret}@", "")
        stranger = requests.get(page, proxies={"http": anonymous}, timeout=10)
        guesser = requests.get(page, proxies={"http": anonymous.replace("://", "://envkit:guess@")}, timeout=10)
        uv = requests.get(page, proxies={"http": proxy.address}, timeout=10)
    assert stranger.status_code == guesser.status_code == 407
    assert uv.status_code == 200 and f"{proxy.origin}/f/" in uv.text and pip_index_server.url not in uv.text
    assert pip_index_server.requests() == ["/simple/tiny-tokenizer/"]
    assert proxy.failures() == []


def test_a_page_uv_cached_stays_good_in_a_later_lock(pip_index_server: ChannelServer) -> None:
    # uv keeps a rewritten page while it is fresh and revalidates it upstream: the page keeps its
    # validators, a 304 passes through, and its file links still work through the next lock's proxy.
    upstream = Upstream(f"{pip_index_server.url}/simple")
    with serve_indexes((upstream,)) as proxy:
        page = f"{proxy.origin}/i/{upstream.key}/tiny-tokenizer/"
        first = requests.get(page, proxies={"http": proxy.address}, timeout=10)
        since = {"If-Modified-Since": first.headers.get("Last-Modified", "")}
        again = requests.get(page, proxies={"http": proxy.address}, headers=since, timeout=10)
    assert first.status_code == 200 and first.headers.get("Last-Modified"), first.headers
    assert again.status_code == 304 and again.content == b""
    link = re.search(r'href="([^"#]+)', first.text)
    assert link is not None and link[1].startswith(f"{proxy.origin}/f/")
    with serve_indexes((upstream,)) as later:  # another lock: nothing registered, the link names its file
        wheel = requests.get(link[1], proxies={"http": later.address}, timeout=10)
        forged = requests.get(
            f"{later.origin}/f/{base64.urlsafe_b64encode(b'file:///etc/passwd').decode()}/passwd",
            proxies={"http": later.address},
            timeout=10,
        )
    assert wheel.status_code == 200 and wheel.content[:2] == b"PK"
    assert forged.status_code == 404  # a token only ever stands for an http(s) URL without credentials


class _RangeFiles(BaseHTTPRequestHandler):
    """Serves BODY at any path, honouring `Range: bytes=a-b` with a 206 (http.server's own handler has no ranges)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        start, end = (int(wanted[1]), int(wanted[2])) if wanted else (0, len(BODY) - 1)
        part = BODY[start : end + 1]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(BODY)}")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(part)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()


BODY = bytes(range(256)) * 64


@pytest.fixture
def range_server() -> Iterator[str]:
    with served_in_thread(_RangeFiles) as url:
        yield url


def test_range_requests_pass_through_the_proxy(range_server: str) -> None:
    # uv reads a wheel's metadata from its end with Range requests when the index has no .metadata file.
    with serve_indexes((Upstream(f"{range_server}/simple"),)) as proxy:
        wheel = proxy.file_url(f"{range_server}/files/x-1.0-py3-none-any.whl")
        proxies = {"http": proxy.address}
        head = requests.head(wheel, proxies=proxies, timeout=10)
        tail = requests.get(wheel, headers={"Range": "bytes=16000-16383"}, proxies=proxies, timeout=10)
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["Content-Length"] == str(len(BODY))
    assert tail.status_code == 206 and tail.content == BODY[16000:]
    assert tail.headers["Content-Range"] == f"bytes 16000-16383/{len(BODY)}"


def test_a_second_lock_reads_no_wheel_again(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    # The proxy's URLs are the same from one lock to the next, so uv's cache answers for the wheels it read.
    write_env(
        tmp_path,
        f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - python=3.11\n"
        f"  - pip:\n      - --index-url {pip_index_server.url}/simple\n      - hello-ml\n",
    )
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    assert run_envkit("lock", cwd=tmp_path, env=env).returncode == 0
    first = [path for path in pip_index_server.requests() if path.startswith("/files/")]
    (tmp_path / "conda-lock.yml").unlink()
    assert run_envkit("lock", cwd=tmp_path, env=env).returncode == 0
    assert first and [path for path in pip_index_server.requests() if path.startswith("/files/")] == first
