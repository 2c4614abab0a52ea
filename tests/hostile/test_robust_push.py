"""A push, a --cache-to and a --cache-from through a registry that answers what real ones (and the proxies and stores
in front of them) do answer: a tag check refused, an upload Location relative, of another scheme, or not HTTP, a cache
map or layer blob gone or cut short. A real registry (docker-registry) on 127.0.0.1, behind a proxy that changes those
answers only (tests/hostile/conftest.py's `forwards_to`); the real `envkit bake`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conda_envkit.oci.registry import RegistryClient
from tests.conftest import Registry
from tests.hostile.conftest import Answer, LoggingServer, Workspace, forwards_to, header, locked_workspace, replace_header

Proxy = Callable[..., LoggingServer]


@pytest.fixture
def proxy(tmp_path: Path, registry: Registry) -> Iterator[Proxy]:
    """Start proxies in front of `registry`: `proxy(before=..., after=...)` (see `forwards_to`); shut down at the end."""
    started: list[LoggingServer] = []

    def start(before: Callable[[Any], bool] | None = None, after: Callable[[Any, Answer], Answer | None] | None = None) -> LoggingServer:
        server = LoggingServer(tmp_path / f"proxy-{len(started)}", responder=forwards_to(registry.host, before, after))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def ws(tmp_path: Path, hostile_channel: Path) -> Workspace:
    return locked_workspace(tmp_path / "work", hostile_channel, ["honest", "linky"])


def _bake(ws: Workspace, *args: str, cache: str = "cache") -> tuple[int, str, dict]:
    """`envkit bake -p linux-64 --insecure ARGS` with a cache of its own: (exit code, stderr, bake.json or {})."""
    (ws.root / "bake.json").unlink(missing_ok=True)
    result = ws.envkit("bake", "-p", "linux-64", "--insecure", *args, env={"ENVKIT_CACHE_DIR": str(ws.root.parent / cache)})
    record = json.loads((ws.root / "bake.json").read_text()) if (ws.root / "bake.json").exists() else {}
    return result.returncode, result.stderr, record


def _error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _answer(handler: Any, status: int, body: bytes, length: int | None = None) -> bool:
    """A proxy's own answer (typed JSON, as a registry's errors are): `body`, said to be `length` bytes long (its own unless given)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
    return True


def _upload_started(handler: Any, answer: Answer) -> bool:
    return handler.command == "POST" and "/blobs/uploads/" in handler.path and answer[0] == 202


def test_a_tag_check_the_registry_refuses_is_a_warning_and_the_tag_is_written(ws: Workspace, registry: Registry, proxy: Proxy) -> None:
    # A push-only login (an ECR role without BatchGetImage), a proxy refusing HEAD: the check whether the tag named
    # another image is only asked to warn. It ended the push (exit 2), every blob and the manifest uploaded, no tag.
    def push_only(handler: Any) -> bool:
        if handler.command in ("HEAD", "GET") and "/manifests/" in handler.path:
            return _answer(handler, 403, b'{"errors":[{"code":"DENIED","message":"not authorized to perform: ecr:BatchGetImage"}]}')
        return False

    server = proxy(before=push_only)
    code, stderr, record = _bake(ws, "--push", f"{server.host}/team/app")
    assert code == 0, stderr
    tag = record["tags"][0]
    assert f"{server.host}/team/app:{tag}: not known whether it named another image before this push (" in stderr, stderr
    assert "HEAD manifest team/app:" in stderr and "access denied (HTTP 403)" in stderr
    digest = RegistryClient(registry.host, insecure=True).get_manifest("team/app", tag)[2]
    assert digest == record["image"]["digest"]


def test_a_cache_whose_map_blob_is_gone_is_replaced_by_cache_to(ws: Workspace, registry: Registry) -> None:
    # The cache's tag still there, its map's blob not (deleted, collected): every later --cache-to failed (exit 2,
    # "not written"), so the hint to write the cache again could not be followed.
    host = registry.host
    args = ("--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache")
    code, stderr, first = _bake(ws, "-q", *args)
    assert code == 0, stderr
    client = RegistryClient(host, insecure=True)
    gone = json.loads(client.get_manifest("team/cache", "envkit-cache")[0])["config"]["digest"]
    client.request("DELETE", f"/v2/team/cache/blobs/{gone}", "repository:team/cache:pull,push", (202,), what="delete blob")

    code, stderr, _ = _bake(ws, *args, cache="cache-2")
    assert code == 0, stderr
    assert f"{host}/team/cache:envkit-cache: the cache map's blob {gone} is gone: replaced by this bake's cache" in stderr, stderr
    # The new map is read back whole: a runner with an empty cache takes every package layer from it.
    code, stderr, again = _bake(ws, "-q", "--oci", "image", "--cache-from", f"{host}/team/cache", cache="cache-3")
    assert code == 0 and again["cache"]["warnings"] == [], stderr
    assert again["image"]["digest"] == first["image"]["digest"]
    assert {layer["source"] for layer in again["platforms"]["linux-64"]["layers"][:-1]} == {"registry-cache"}


@pytest.mark.parametrize("how", ["gone", "cut short"])
def test_a_cached_layer_that_cannot_be_downloaded_is_built_here(ws: Workspace, registry: Registry, proxy: Proxy, how: str) -> None:
    # A layer blob whose HEAD says it is there and whose GET then fails (gone between the check and the download, a
    # store out of step with its index; a transfer cut short) ended the whole bake, where a cache is only a speed-up.
    host = registry.host
    code, stderr, cold = _bake(ws, "-q", "--oci", "cold", "--cache-to", f"{host}/team/cache")
    assert code == 0, stderr
    lost = cold["platforms"]["linux-64"]["layers"][0]["digest"]
    hexdigest = lost.split(":")[1]
    stored = (registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data").read_bytes()

    def fails(handler: Any) -> bool:
        if handler.command != "GET" or not handler.path.endswith(f"/team/cache/blobs/{lost}"):
            return False
        if how == "gone":
            return _answer(handler, 404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}')
        return _answer(handler, 200, stored[: len(stored) // 2], length=len(stored))  # then the connection closes

    server = proxy(before=fails)
    code, stderr, record = _bake(ws, "--oci", "image", "--cache-from", f"{server.host}/team/cache", cache="cache-2")
    assert code == 0, stderr
    said = "is no longer in the registry" if how == "gone" else "did not arrive whole ("
    assert f"cache {server.host}/team/cache: layer blob {lost} {said}" in stderr, stderr
    assert "that layer was built here" in stderr
    assert record["image"]["digest"] == cold["image"]["digest"]
    assert record["platforms"]["linux-64"]["layers"][0]["source"] == "built"


@pytest.mark.parametrize("scheme", ["https", "ftp"])
def test_an_upload_location_of_another_scheme_is_an_error_naming_it(ws: Workspace, proxy: Proxy, scheme: str) -> None:
    # The registry reached with --insecure says its uploads go on at https:// (a misconfigured external URL), or at
    # a URL that is not HTTP: the error blamed the registry ("speaks plain HTTP ... pass --insecure", already given)
    # or was retried five times as a network failure, and never said the Location.
    def elsewhere(handler: Any, answer: Answer) -> Answer | None:
        if not _upload_started(handler, answer):
            return None
        location = header(answer[1], "Location").replace("http://", f"{scheme}://", 1)
        return answer[0], replace_header(answer[1], "Location", location), answer[2]

    server = proxy(after=elsewhere)
    code, stderr, _ = _bake(ws, "-q", "--push", f"{server.host}/team/app")
    assert code == 2, stderr
    error = _error(stderr)
    if scheme == "https":
        assert f"the registry sent it to https://{server.host}, where TLS failed" in error, error
    else:
        assert f"upload Location 'ftp://{server.host}/v2/team/app/blobs/uploads/" in error and "is not an HTTP URL" in error, error
    assert "pass --insecure" not in stderr and "attempt(s)" not in error, stderr


def test_a_relative_upload_location_is_resolved_against_the_request(ws: Workspace, registry: Registry, proxy: Proxy) -> None:
    # RFC 9110: `<uuid>?_state=...` answering POST /v2/team/app/blobs/uploads/ goes on at /v2/team/app/blobs/uploads/<uuid>.
    # It was resolved against the registry's root (/<uuid>): HTTP 404, exit 2.
    def relative(handler: Any, answer: Answer) -> Answer | None:
        if not _upload_started(handler, answer):
            return None
        location = header(answer[1], "Location").split("/blobs/uploads/", 1)[1]
        return answer[0], replace_header(answer[1], "Location", location), answer[2]

    server = proxy(after=relative)
    code, stderr, record = _bake(ws, "-q", "--push", f"{server.host}/team/app")
    assert code == 0, stderr
    assert any(line.startswith("PUT /v2/team/app/blobs/uploads/") for line in server.log)
    digest = RegistryClient(registry.host, insecure=True).get_manifest("team/app", record["tags"][0])[2]
    assert digest == record["image"]["digest"]
