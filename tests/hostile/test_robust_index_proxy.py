"""Index pages are capped: `envkit lock` resolves a `pip:` section through its own index proxy (issue 15).

uv has no size limit for an index page; envkit's proxy (conda_envkit/index_proxy.py) reads
each page within $ENVKIT_MAX_INDEX_PAGE_BYTES and the network deadline, and hands uv pages
whose file links point back at the proxy, so uv never talks to a remote host or holds a
credential. The cases run the real `envkit lock` against servers on 127.0.0.1, except the
file cap, which is asked of the proxy directly (uv itself gives up early on a broken wheel).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from conda_envkit.index_proxy import Upstream, serve_indexes
from tests.conftest import ChannelServer, _serve, run_envkit, write_env
from tests.hostile.test_robust_network import _error_line, _peak_rss_mib, hostile  # noqa: F401  # the hostile server fixture

serve = contextlib.contextmanager(_serve)
DEADLINE = {"ENVKIT_NETWORK_TIMEOUT": "2"}
SMALL_PAGES = {"ENVKIT_MAX_INDEX_PAGE_BYTES": "4M"}


def _pip_spec(work: Path, channel: Path, pip_lines: list[str]) -> None:
    lines = "".join(f"      - {line}\n" for line in pip_lines)
    write_env(work, f"channels: [{channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - python=3.11\n  - pip:\n{lines}")


def _lock(work: Path, env: dict[str, str]):
    return run_envkit("lock", cwd=work, env={"ENVKIT_CACHE_DIR": str(work / "cache"), **env})


def _all_through_the_proxy(server: ChannelServer) -> bool:
    """Whether every request `server` answered came through envkit's proxy (uv never reached it directly)."""
    via = server.root / "via.log"
    # Sorted: the server's threads append to its two logs in their own order.
    return bool(server.requests()) and via.exists() and sorted(via.read_text().splitlines()) == sorted(server.requests())


def _pip_urls(lock: Path) -> dict[str, str]:
    return {p["name"]: p["url"] for p in yaml.safe_load(lock.read_text())["package"] if p["manager"] == "pip"}


def test_an_endless_index_page_stops_at_the_page_cap(tmp_path: Path, hostile: str, toy_channel: Path) -> None:  # noqa: F811
    # 16 MiB/s without Content-Length: the deadline keeps being earned, only the size cap ends it.
    page = f"http://{hostile}/endless/simple/requests/"
    _pip_spec(tmp_path, toy_channel, [f"--index-url http://{hostile}/endless/simple", "requests"])
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_NETWORK_TIMEOUT": "30", **SMALL_PAGES}
    proc, peak = _peak_rss_mib("lock", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    error = _error_line(proc.stderr)
    assert f"error: linux-64: resolving the pip: section (environment.yml:7): {page}: response larger than the 4 MiB limit" in error
    assert "raise ENVKIT_MAX_INDEX_PAGE_BYTES" in proc.stderr  # the hint names the setting
    # Neither envkit (which holds at most the 4 MiB page) nor uv (which never got it) grows with the stream.
    assert peak < 150, f"peak RSS {peak:.0f} MiB"
    assert not (tmp_path / "conda-lock.yml").exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20] == []


def test_a_declared_page_size_over_the_cap_is_refused_before_the_body(tmp_path: Path, hostile: str, toy_channel: Path) -> None:  # noqa: F811
    _pip_spec(tmp_path, toy_channel, [f"--index-url http://{hostile}/big-page/simple", "requests"])
    result = _lock(tmp_path, {**DEADLINE, **SMALL_PAGES})
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert f"http://{hostile}/big-page/simple/requests/: 67108864 bytes, over the 4 MiB index page limit" in error, error
    assert "ENVKIT_MAX_INDEX_PAGE_BYTES" in result.stderr


def test_an_endless_find_links_page_stops_at_the_page_cap(tmp_path: Path, hostile: str, toy_channel: Path) -> None:  # noqa: F811
    links = f"http://{hostile}/endless/simple/links/"
    _pip_spec(tmp_path, toy_channel, ["--no-index", f"--find-links {links}", "requests"])
    result = _lock(tmp_path, {"ENVKIT_NETWORK_TIMEOUT": "30", **SMALL_PAGES})
    assert result.returncode == 2, result.output
    assert f"{links}: response larger than the 4 MiB limit" in _error_line(result.stderr)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("endless", "response larger than the 4 MiB limit"), ("big-file", "67108864 bytes, over the 4 MiB download limit")],
)
def test_a_linked_file_streams_through_the_proxy_within_the_download_cap(
    hostile: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    expected: str,
) -> None:
    # uv gives up on an endless wheel by itself (its zip reader fails early), so the proxy is asked directly, as uv would.
    monkeypatch.setenv("ENVKIT_MAX_DOWNLOAD_BYTES", "4M")
    monkeypatch.setenv("ENVKIT_NETWORK_TIMEOUT", "30")
    wheel = f"http://{hostile}/{mode}/tiny_tokenizer-9.0-py3-none-any.whl"
    with serve_indexes((Upstream(f"http://{hostile}/{mode}/simple"),)) as proxy:
        proxied = proxy.file_url(wheel)
        with requests.get(proxied, proxies={"http": proxy.address}, stream=True, timeout=60) as response:
            received = sum(len(chunk) for chunk in response.iter_content(1 << 16))
    assert received <= 5 << 20  # the cap and one chunk at most, streamed (the proxy never holds the file)
    assert [f.message for f in proxy.failures()] == [f"{wheel}: {expected}"]
    assert "raise ENVKIT_MAX_DOWNLOAD_BYTES" in proxy.failures()[0].hint


def test_a_trickled_index_page_is_named_at_the_deadline(tmp_path: Path, hostile: str, toy_channel: Path) -> None:  # noqa: F811
    _pip_spec(tmp_path, toy_channel, [f"--index-url http://{hostile}/trickle/simple", "requests"])
    result = _lock(tmp_path, DEADLINE)
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert f"http://{hostile}/trickle/simple/requests/: no complete answer within 2 s" in error, error
    assert "ENVKIT_NETWORK_TIMEOUT (now 2)" in result.stderr


@pytest.mark.parametrize("value", ["big", "0", "-5"])
def test_the_page_cap_must_be_a_size(tmp_path: Path, toy_channel: Path, value: str) -> None:
    _pip_spec(tmp_path, toy_channel, ["--index-url http://127.0.0.1:9/simple", "requests"])
    result = _lock(tmp_path, {"ENVKIT_MAX_INDEX_PAGE_BYTES": value})
    assert result.returncode == 2, result.output
    assert f"ENVKIT_MAX_INDEX_PAGE_BYTES={value!r} is not a size" in _error_line(result.stderr)


def _link_files_to(simple: Path, files_url: str) -> None:
    """Point every file link of a PEP 503 index at `files_url` (another host), hashes kept."""
    for page in simple.glob("*/index.html"):
        page.write_text(page.read_text().replace('href="../../files/', f'href="{files_url}/'))


def test_index_credentials_never_reach_another_host(tmp_path: Path, toy_channel: Path, pip_index: Path) -> None:
    # The index (behind basic auth) links its wheels on another host: only the index sees the credentials.
    shutil.copytree(pip_index / "files", tmp_path / "other" / "files")
    shutil.copytree(pip_index / "simple", tmp_path / "index" / "simple")
    with serve(tmp_path / "other", None) as other:
        _link_files_to(tmp_path / "index" / "simple", f"{other.url}/files")
        with serve(tmp_path / "index", "pipuser:wheel-Pa55") as index:
            host = index.url.removeprefix("http://")
            _pip_spec(tmp_path / "work", toy_channel, ["--index-url http://${PIP_USER}:${PIP_TOKEN}@" + host + "/simple", "hello-ml"])
            result = _lock(
                tmp_path / "work",
                {"PIP_USER": "pipuser", "PIP_TOKEN": "wheel-Pa55", "ENVKIT_CREDENTIAL_HOSTS": f"PIP_USER={host},PIP_TOKEN={host}"},
            )
            assert result.returncode == 0, result.output
            seen_by_index = (index.root / "authorization.log").read_text()
    urls = _pip_urls(tmp_path / "work" / "conda-lock.yml")
    assert urls["hello-ml"] == f"{other.url}/files/hello_ml-0.3.0-py3-none-any.whl"  # the upstream URL, not the proxy's
    assert "/simple/hello-ml/ Basic " + base64.b64encode(b"pipuser:wheel-Pa55").decode() in seen_by_index
    assert _all_through_the_proxy(other) and _all_through_the_proxy(index)  # uv read the other host's wheels via the proxy...
    assert not (other.root / "authorization.log").exists()  # ...which never saw an Authorization header
    assert "wheel-Pa55" not in (tmp_path / "work" / "conda-lock.yml").read_text()


def test_a_redirect_to_another_host_drops_the_credentials(
    tmp_path: Path,
    hostile: str,  # noqa: F811
    toy_channel: Path,
    pip_index_server: ChannelServer,
) -> None:
    # The index answers every page with a redirect to another server: requests' rule (as for every
    # download of envkit) follows it without the Authorization header.
    port = pip_index_server.url.rsplit(":", 1)[1]
    index = f"http://${{PIP_USER}}:${{PIP_TOKEN}}@{hostile}/redirect-to/{port}/simple"
    _pip_spec(tmp_path / "work", toy_channel, [f"--index-url {index}", "tiny-tokenizer"])
    result = _lock(
        tmp_path / "work",
        {"PIP_USER": "pipuser", "PIP_TOKEN": "wheel-Pa55", "ENVKIT_CREDENTIAL_HOSTS": f"PIP_USER={hostile},PIP_TOKEN={hostile}"},
    )
    assert result.returncode == 0, result.output
    assert _pip_urls(tmp_path / "work" / "conda-lock.yml") == {
        "tiny-tokenizer": f"{pip_index_server.url}/files/tiny_tokenizer-1.1.0-py3-none-any.whl"  # relative to where the page was
    }
    assert _all_through_the_proxy(pip_index_server)
    assert not (pip_index_server.root / "authorization.log").exists()


def test_hostile_links_in_an_index_page_are_dropped_and_relative_ones_resolved(tmp_path: Path, toy_channel: Path, pip_index: Path) -> None:
    shutil.copytree(pip_index, tmp_path / "index")
    page = tmp_path / "index" / "simple" / "tiny-tokenizer" / "index.html"
    hostile_links = "".join(
        f'<a href="{html.escape(href)}">tiny_tokenizer-9.0.0-py3-none-any.whl</a>\n'
        for href in ("javascript:alert(1)", "file:///etc/passwd", "data:text/plain,x", "/" + "x" * 20000 + ".whl")
    )
    # The real links as an absolute path and with `..` past the root, beside the hostile ones.
    text = page.read_text().replace('href="../../files/', 'href="/../../files/')
    page.write_text(text.replace("<body>", "<body>\n" + hostile_links))
    with serve(tmp_path / "index", None) as index:
        _pip_spec(tmp_path / "work", toy_channel, [f"--index-url {index.url}/simple", "tiny-tokenizer"])
        result = _lock(tmp_path / "work", {})
        assert _all_through_the_proxy(index)
    assert result.returncode == 0, result.output
    assert _pip_urls(tmp_path / "work" / "conda-lock.yml") == {"tiny-tokenizer": f"{index.url}/files/tiny_tokenizer-1.1.0-py3-none-any.whl"}


def _pep691_pages(simple: Path) -> None:
    """Give every project of a PEP 503 index a PEP 691 JSON page with the same (relative) links."""
    for page in simple.glob("*/index.html"):
        files = [
            {"filename": html.unescape(name), "url": html.unescape(href), "hashes": {"sha256": digest}}
            for href, digest, name in re.findall(r'<a href="([^"#]+)#sha256=([0-9a-f]+)">([^<]+)</a>', page.read_text())
        ]
        document = {"meta": {"api-version": "1.0"}, "name": page.parent.name, "files": files}
        (page.parent / "index.json").write_text(json.dumps(document))


@pytest.fixture
def json_index(tmp_path: Path, pip_index: Path) -> Iterator[ChannelServer]:
    shutil.copytree(pip_index, tmp_path / "json-index")
    _pep691_pages(tmp_path / "json-index" / "simple")
    with serve(tmp_path / "json-index", None) as server:
        yield server


def test_a_pep691_json_index_locks_like_its_html_twin(
    tmp_path: Path, toy_channel: Path, json_index: ChannelServer, pip_index_server: ChannelServer
) -> None:
    locks = {}
    for name, server in (("json", json_index), ("html", pip_index_server)):
        work = tmp_path / name
        _pip_spec(work, toy_channel, [f"--index-url {server.url}/simple", "hello-ml"])
        result = _lock(work, {})
        assert result.returncode == 0, result.output
        assert _all_through_the_proxy(server)
        locks[name] = (work / "conda-lock.yml").read_text().replace(server.url, "INDEX")
    # The same packages, URLs and hashes (the content hashes differ: they cover the index URL).
    assert yaml.safe_load(locks["json"])["package"] == yaml.safe_load(locks["html"])["package"]
    assert "127.0.0.1" not in locks["json"]  # no proxy URL and no index URL left once the index is replaced
    assert "url: INDEX/files/hello_ml-0.3.0-py3-none-any.whl" in locks["json"]
