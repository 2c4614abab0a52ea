"""--cache-to / --cache-from against a real registry: a runner with an empty cache and no channel
bakes the same image from the registry's layer cache, fetching no package and uploading no layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Registry, run_envkit
from tests.test_bake import _bake, _lock


def test_cache_from_an_empty_runner_fetches_no_package_and_uploads_no_layer(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    work = tmp_path / "work"
    _lock(work, channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    host = registry.host
    cache_repo = f"{host}/team/cache"
    first, _ = _bake(work, tmp_path / "runner-1", "--push", f"{host}/team/app", "--cache-to", cache_repo, "--insecure")
    shutil.rmtree(channel)  # from now on, any package fetch fails

    # A fresh runner pushing the same image: every blob is already there.
    again, _ = _bake(work, tmp_path / "runner-2", "--push", f"{host}/team/app", "--cache-from", cache_repo, "--insecure")
    assert again["image"]["digest"] == first["image"]["digest"]
    assert again["push"]["uploaded_blobs"] == 0
    assert not (tmp_path / "runner-2" / "pkgs").exists()
    # Package layers were never downloaded either: only the metadata layer, config and manifest are local.
    layers = first["platforms"]["linux-64"]["layers"]
    local = {p.name for p in (tmp_path / "runner-2" / "blobs" / "sha256").iterdir()}
    assert {layer["digest"].split(":")[1] for layer in layers[:-1]}.isdisjoint(local)

    # Another repository in the same registry: the cached layers are mounted, not uploaded.
    other, _ = _bake(work, tmp_path / "runner-3", "--push", f"{host}/team/other", "--cache-from", cache_repo, "--insecure")
    assert other["image"]["digest"] == first["image"]["digest"]
    assert other["push"]["mounted_blobs"] == len(layers) - 1
    assert other["push"]["bytes_uploaded"] < 10_000  # config and metadata layer only

    # An OCI layout needs the bytes: they come from the cache, checked against their digests.
    layout, _ = _bake(
        work, tmp_path / "runner-4", "--oci", "image", "--cache-from", f"{host}/team/nothing-here", "--cache-from", cache_repo, "--insecure"
    )
    assert layout["image"]["digest"] == first["image"]["digest"]
    assert not (tmp_path / "runner-4" / "pkgs").exists()


def test_cache_to_merges_and_a_non_cache_tag_is_refused(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    host = registry.host
    _lock(work, image_channel, ["greet=1.0"])
    _bake(work, tmp_path / "cache", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache:main", "--insecure")
    _lock(work, image_channel, ["bigmodel=1.0"])
    second, _ = _bake(work, tmp_path / "cache", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache:main", "--insecure")
    from conda_envkit.oci.registry import RegistryClient

    client = RegistryClient(host, insecure=True)
    manifest = json.loads(client.get_manifest("team/cache", "main")[0])
    digests = {d["digest"] for d in manifest["layers"]}
    assert {layer["digest"] for layer in second["platforms"]["linux-64"]["layers"][:-1]} <= digests
    assert len(digests) >= 3  # greet's group and busybox's from the first bake are kept
    tag = second["tags"][0]
    refused = run_envkit(
        "bake",
        "--oci",
        "x",
        "--cache-from",
        f"{host}/team/app:{tag}",
        "--insecure",
        cwd=work,
        env={"ENVKIT_CACHE_DIR": str(tmp_path / "c2")},
    )
    assert refused.returncode == 2 and "not an envkit bake cache" in refused.stderr


def test_package_infos_in_a_cache_map_are_unpacked_within_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry's cache map is hostile until checked: the paths its infos hold unpack to a bounded total; an info
    # past it (or one whose paths inflate past the per-info cap) is left out, and its package is read from its archive.
    import base64
    import zlib

    from conda_envkit import registry_cache
    from conda_envkit.pkginfo import PackageInfo

    def info(sha: str, paths: tuple[str, ...]) -> dict:
        return PackageInfo(sha256=sha, manager="conda", name=sha[:3], version="1", paths=paths).to_json()

    a, b, c = "a" * 64, "b" * 64, "c" * 64
    bomb = {**info(c, ()), "paths": base64.b64encode(zlib.compress(b"x" * (4 << 20))).decode()}
    document = {
        "schema": registry_cache.CACHE_SCHEMA,
        "layers": {},
        "packages": {a: info(a, ("lib/" + "x" * 40,)), b: info(b, ("lib/" + "y" * 40,)), c: bomb},
    }
    monkeypatch.setattr(registry_cache, "MAX_MAP_PATHS_BYTES", 60)
    _, packages = registry_cache._parse_document(document, "cache")
    assert list(packages) == [a]  # b is past the budget a left; c inflates past what was left
    assert packages[a].paths == ("lib/" + "x" * 40,)
