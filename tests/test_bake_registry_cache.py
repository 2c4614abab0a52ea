"""--cache-to / --cache-from against a real registry: a runner with an empty cache and no channel
bakes the same image from the registry's layer cache, fetching no package and uploading no layer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Registry, Result, run_envkit
from tests.test_bake import _bake, _lock


def _own_channel(tmp_path: Path, image_channel: Path, deps: list[str]) -> tuple[Path, Path]:
    """A work directory with a lock of `deps` from a copy of the image channel (which the test may remove)."""
    channel = tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    work = tmp_path / "work"
    _lock(work, channel, deps)
    return work, channel


def test_cache_from_an_empty_runner_fetches_no_package_and_uploads_no_layer(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    work, channel = _own_channel(tmp_path, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    host = registry.host
    cache_repo = f"{host}/team/cache"
    first, _ = _bake(work, tmp_path / "runner-1", "--push", f"{host}/team/app", "--cache-to", cache_repo, "--insecure")
    shutil.rmtree(channel)  # from now on, any package fetch fails

    # A fresh runner pushing the same image: every blob is already there.
    again, _ = _bake(work, tmp_path / "runner-2", "--push", f"{host}/team/app", "--cache-from", cache_repo, "--insecure")
    assert again["image"]["digest"] == first["image"]["digest"]
    assert again["push"]["uploaded_blobs"] == 0
    layer_count = len(first["platforms"]["linux-64"]["layers"]) - 1  # all but the metadata layer
    assert again["cache"] == {
        "from": [f"{cache_repo}:envkit-cache"],
        "layers_from_registry": layer_count,
        "layers_downloaded": 0,
        "warnings": [],
    }
    assert not (tmp_path / "runner-2" / "pkgs").exists()
    assert [layer["source"] for layer in again["platforms"]["linux-64"]["layers"]] == ["registry-cache"] * layer_count + ["built"]
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
    packages = registry_cache._parse_document(document, "cache").packages
    assert list(packages) == [a]  # b is past the budget a left; c inflates past what was left
    assert packages[a][0].paths == ("lib/" + "x" * 40,)


def _layer(store, name: str):  # a real (tiny) layer in `store`
    from conda_envkit.oci.layer import Compression, write_layer
    from conda_envkit.oci.tarstream import Member

    return write_layer([Member(name, data=name.encode(), size=len(name))], store, Compression("gzip"), 0)


def test_a_cache_map_keeps_the_writes_that_used_it_last_within_its_bounds() -> None:
    # Each --cache-to write is a generation; what no recent write used goes first, whole generations at a time,
    # so the map (read whole by every runner) and the manifest (registries cap its size) stop growing.
    from conda_envkit.oci.blobs import Descriptor
    from conda_envkit.pkginfo import PackageInfo
    from conda_envkit.registry_cache import CacheMap, bounded_map

    def desc(n: int) -> tuple[Descriptor, str]:
        return Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", f"sha256:{n:064x}", n), f"sha256:{n + 100:064x}"

    def info(c: str, files: int) -> PackageInfo:
        return PackageInfo(sha256=c * 64, manager="conda", name=c, version="1", paths=tuple(f"lib/{c}{i}.so" for i in range(files)))

    old = CacheMap(
        layers={"k0": (*desc(1), 0), "k1": (*desc(2), 1), "k2": (*desc(3), 2), "k3": (*desc(4), 3)},
        packages={"a" * 64: (info("a", 1), 0), "b" * 64: (info("b", 1), 3)},
    )
    assert old.generation == 3
    # This write uses k1 again (it becomes generation 4) and adds k4.
    doc, counts = bounded_map(old, {"k1": desc(2), "k4": desc(5)}, [info("c", 1)], max_layers=3, max_bytes=1 << 20)
    assert doc["layers"].keys() == {"k1", "k3", "k4"}  # generations 4 and 3; 2 does not fit, so 2 and 0 go
    assert doc["layers"]["k4"]["generation"] == doc["layers"]["k1"]["generation"] == 4
    assert doc["packages"].keys() == {"b" * 64, "c" * 64}  # a's generation (0) was dropped
    assert doc["package_generations"] == {"b" * 64: 3, "c" * 64: 4}
    assert (counts.layers, counts.dropped_layers, counts.dropped_packages) == (3, 2, 1)

    # This write's layers stay whatever the bounds; its infos while they fit, the smallest first.
    small, big = info("d", 1), info("e", 5000)
    doc, counts = bounded_map(old, {"k5": desc(6), "k6": desc(7)}, [big, small], max_layers=1, max_bytes=2000)
    assert doc["layers"].keys() == {"k5", "k6"}
    assert doc["packages"].keys() == {"d" * 64}  # e's paths alone are past 2000 bytes: a runner reads its archive
    assert (counts.dropped_layers, counts.dropped_packages) == (4, 3)

    # Within the bounds, nothing is dropped.
    doc, counts = bounded_map(old, {"k4": desc(5)}, [], max_layers=100, max_bytes=1 << 20)
    assert len(doc["layers"]) == 5 and len(doc["packages"]) == 2 and counts.dropped_layers == counts.dropped_packages == 0


def test_cache_to_drops_the_layers_no_write_used_for_longest_from_a_real_registry(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conda_envkit import registry_cache
    from conda_envkit.oci.blobs import BlobStore
    from conda_envkit.oci.layer import CacheEntry
    from conda_envkit.oci.registry import RegistryClient

    monkeypatch.setattr(registry_cache, "MAX_CACHE_LAYERS", 3)
    store = BlobStore(tmp_path / "blobs")
    layers = {name: _layer(store, name) for name in ("a", "b", "c", "d")}
    client = RegistryClient(registry.host, insecure=True)
    ref = registry_cache.parse_cache_ref(f"{registry.host}/team/cache")
    for written in (["a", "b"], ["c"], ["d", "a"]):  # three writes; the third uses a again
        result = registry_cache.write_cache(client, ref, [CacheEntry(f"key-{n}", layers[n]) for n in written], [], store)
    assert (result.layers, result.dropped_layers, result.uploaded) == (3, 1, 1)
    manifest = json.loads(client.get_manifest("team/cache", "envkit-cache")[0])
    listed = {d["digest"] for d in manifest["layers"]}
    assert listed == {layers[n].descriptor.digest for n in ("a", "c", "d")}  # b's blob is no longer referenced
    cache = registry_cache.load_caches([ref], lambda r: client, print, pytest.fail)
    assert set(cache.layers) == {"key-a", "key-c", "key-d"}
    assert cache.layers["key-a"][0].descriptor == layers["a"].descriptor


def _put_cache_map(client, repository: str, tag: str, body: bytes) -> None:
    from conda_envkit.oci.blobs import OCI_MANIFEST, canonical_json
    from conda_envkit.registry_cache import CACHE_ARTIFACT, CACHE_CONFIG

    digest = client.put_blob(repository, body)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CACHE_ARTIFACT,
        "config": {"mediaType": CACHE_CONFIG, "digest": digest, "size": len(body)},
        "layers": [],
    }
    client.put_manifest(repository, tag, canonical_json(manifest), OCI_MANIFEST)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"schema": "envkit.bake-cache/1", "layers": {"k": {"digest": "sha256:../../x"}}}', "malformed entry for layer key k"),
        (b"\xff not json", "the cache map is not JSON"),
        (b'{"schema": "envkit.bake-cache/0"}', "not a bake cache this envkit reads"),
        (b'{"schema": "envkit.bake-cache/x2"}', "not a bake cache this envkit reads"),
        (b'["a list"]', "not a bake cache this envkit reads"),
    ],
)
def test_a_cache_map_that_cannot_be_read_is_skipped_by_cache_from_and_replaced_by_cache_to(
    tmp_path: Path, image_channel: Path, registry: Registry, body: bytes, said: str
) -> None:
    # buildx's behaviour: a cache it cannot import is a warning, not a failed build; --cache-to writes a good one.
    # Before, --cache-to read the broken map first and failed too, so the hint "write the cache again" could not be followed.
    from conda_envkit.oci.registry import RegistryClient

    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    host = registry.host
    client = RegistryClient(host, insecure=True)
    _put_cache_map(client, "team/cache", "broken", body)
    cold = _envkit(work, tmp_path / "c0", "-q", "--oci", "cold")
    assert cold.returncode == 0, cold.output
    cold_digest = json.loads((work / "bake.json").read_text())["image"]["digest"]
    skipped = _envkit(work, tmp_path / "c1", "--oci", "img", "--cache-from", f"{host}/team/cache:broken", "--insecure")
    assert skipped.returncode == 0, skipped.output
    assert f"{host}/team/cache:broken: {said}: baked without it" in skipped.stderr
    assert said in json.loads((work / "bake.json").read_text())["cache"]["warnings"][0]
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == cold_digest

    both = ("--cache-from", f"{host}/team/cache:broken", "--cache-to", f"{host}/team/cache:broken", "--insecure")
    replaced = _envkit(work, tmp_path / "c2", "--oci", "img", *both)
    assert replaced.returncode == 0, replaced.output
    assert f"{said}: replaced by this bake's cache" in replaced.stderr
    again = _envkit(work, tmp_path / "c3", "--oci", "img", *both)
    assert again.returncode == 0 and "baked without it" not in again.stderr and "replaced" not in again.stderr, again.output
    assert not (tmp_path / "c3" / "pkgs").exists()  # the new map is read: no package was fetched


def test_a_cache_map_past_its_cap_is_skipped(tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit import registry_cache
    from conda_envkit.oci.registry import RegistryClient

    client = RegistryClient(registry.host, insecure=True)
    body = json.dumps({"schema": registry_cache.CACHE_SCHEMA, "layers": {}, "packages": {}, "pad": "x" * 4000}).encode()
    _put_cache_map(client, "team/cache", "big", body)
    monkeypatch.setattr(registry_cache, "MAX_MAP_BYTES", 1000)
    warned: list[str] = []
    refs = [registry_cache.parse_cache_ref(f"{registry.host}/team/cache:{tag}") for tag in ("big", "missing")]
    cache = registry_cache.load_caches(refs, lambda r: client, lambda _: None, warned.append)
    assert cache.layers == {} and len(warned) == 1
    assert "team/cache:big: the cache map is larger than 1000 bytes: baked without it" in warned[0]


def _envkit(work: Path, cache: Path, *args: str) -> Result:
    return run_envkit("bake", "--large-package-mb", "1", *args, cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})


def _downloads_said(output: str) -> int:
    return sum(int(m) for m in re.findall(r"download linux-64: (\d+) packages?\b", output))


@pytest.mark.parametrize("target", ["unreachable", "image tag"])
def test_a_cache_to_that_cannot_be_written_is_refused_before_anything_is_built_or_pushed(
    tmp_path: Path, image_channel: Path, registry: Registry, target: str
) -> None:
    from conda_envkit.oci.registry import RegistryClient, RegistryError

    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    host = registry.host
    if target == "image tag":
        first, _ = _bake(work, tmp_path / "c0", "--push", f"{host}/team/app", "--insecure")
        cache_to = f"{host}/team/app:{first['tags'][0]}"
        said = "holds an image or another artifact"
    else:
        cache_to, said = "127.0.0.1:1/team/cache", "127.0.0.1:1"
    (work / "bake.json").unlink(missing_ok=True)
    result = _envkit(work, tmp_path / "c1", "-q", "--push", f"{host}/team/fresh", "--cache-to", cache_to, "--insecure")
    assert result.returncode == 2 and said in result.stderr, result.output
    assert not (work / "bake.json").exists() and not (tmp_path / "c1" / "pkgs").exists()  # nothing fetched
    with pytest.raises(RegistryError, match="not found"):  # nothing pushed
        RegistryClient(host, insecure=True).get_manifest("team/fresh", "latest")
    if target == "image tag":  # read as a cache: an error naming the option too
        read = _envkit(work, tmp_path / "c1", "-q", "--oci", work / "image", "--cache-from", cache_to, "--insecure")
        assert read.returncode == 2 and f"error: --cache-from {cache_to}: {said}" in read.stderr, read.output


def test_a_cache_write_that_fails_after_the_push_says_where_the_image_is(
    tmp_path: Path, image_channel: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry failing between the check and the write is simulated (the write raises); the rest is real.
    from conda_envkit.registry_cache import CacheError, RegistryClients
    from tests.hostile.conftest import run_cli

    def fails(*_: object, **__: object) -> None:
        raise CacheError("the registry went away", hint="retry")

    monkeypatch.setattr(RegistryClients, "store_cache", fails)
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    host = registry.host
    result = run_cli(
        "bake", "-q", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache", "--insecure", cwd=work,
        env={"ENVKIT_CACHE_DIR": str(tmp_path / "c")},
    )  # fmt: skip
    assert result.returncode == 2, result.output
    record = json.loads((work / "bake.json").read_text())
    pushed = f"{host}/team/app@{record['image']['digest']}"
    assert f"cache {host}/team/cache:envkit-cache: not written: the registry went away (the image is at {pushed}" in result.stderr


def test_a_cached_layer_whose_blob_the_registry_lost_is_built_again(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    from conda_envkit.oci.registry import RegistryClient

    work, channel = _own_channel(tmp_path, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    host = registry.host
    first, _ = _bake(work, tmp_path / "runner-1", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache", "--insecure")
    lost = first["platforms"]["linux-64"]["layers"][0]["digest"]
    client = RegistryClient(host, insecure=True)
    client.request("DELETE", f"/v2/team/cache/blobs/{lost}", "repository:team/cache:pull,push", (202,), what="delete blob")
    assert not client.has_blob("team/cache", lost)

    args = ("--push", f"{host}/team/other", "--cache-from", f"{host}/team/cache", "--insecure")
    again = _envkit(work, tmp_path / "runner-2", *args)
    assert again.returncode == 0, again.output
    assert f"cache {host}/team/cache: layer blob {lost} is not there: that layer was built here" in again.stderr
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == first["image"]["digest"]
    assert _downloads_said(again.stderr) == len(list((tmp_path / "runner-2" / "pkgs").iterdir())) > 0  # its packages, said
    # Written back with --cache-to, the lost blob is uploaded again (its old manifest still listed it).
    mended = _envkit(work, tmp_path / "runner-2", "-q", *args, "--cache-to", f"{host}/team/cache")
    assert mended.returncode == 0 and client.has_blob("team/cache", lost), mended.output


def test_a_cached_layer_whose_blob_the_registry_serves_corrupt_is_built_again(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    """A cache registry that answers a layer with other bytes of the same size (a corrupt store, a hostile mirror):
    those bytes are never used, the layer is built here from its packages, and the bake goes on."""
    work, channel = _own_channel(tmp_path, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    host = registry.host
    first, _ = _bake(work, tmp_path / "runner-1", "--oci", "image", "--cache-to", f"{host}/team/cache", "--insecure")
    layers = first["platforms"]["linux-64"]["layers"]
    corrupt = [layers[0]["digest"], layers[1]["digest"]]
    for digest in corrupt:
        hexdigest = digest.split(":")[1]
        data = registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
        data.write_bytes(bytes(len(data.read_bytes())))  # same size, other bytes

    again = _envkit(work, tmp_path / "runner-2", "--oci", "image2", "--cache-from", f"{host}/team/cache", "--insecure")
    assert again.returncode == 0, again.output
    for digest in corrupt:
        assert f"cache {host}/team/cache: layer blob {digest} arrived with another digest: that layer was built here" in again.stderr
    record = json.loads((work / "bake.json").read_text())
    assert record["image"]["digest"] == first["image"]["digest"]
    sources = [layer["source"] for layer in record["platforms"]["linux-64"]["layers"]]
    assert sources[:2] == ["built", "built"] and set(sources[2:-1]) == {"registry-cache"}, sources
    assert len(record["cache"]["warnings"]) == 2
    # The layout holds the layers' real bytes: skopeo reads it whole.
    proc = subprocess.run(
        ["skopeo", "copy", f"oci:{work / 'image2'}:{first['tags'][0]}", f"dir:{tmp_path / 'copy'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # A layer the cache lacks is built in the first pass; the record still says so after the second (for the
    # corrupt blobs), which found it in the layer cache.
    _lock(work, channel, ["greet=1.0", "bigmodel=2.0", "smalldata"])
    third = _envkit(work, tmp_path / "runner-3", "--oci", "image3", "--cache-from", f"{host}/team/cache", "--insecure")
    assert third.returncode == 0, third.output
    layers = {
        ",".join(layer["packages"]): layer for layer in json.loads((work / "bake.json").read_text())["platforms"]["linux-64"]["layers"]
    }
    assert (layers["bigmodel-2.0-0"]["source"], layers["bigmodel-2.0-0"]["read_from_archives"]) == ("built", ["bigmodel-2.0-0"])


def test_a_registry_that_keeps_serving_a_corrupt_blob_fails_the_push_there_and_leaves_the_cache(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    """The registry's store holds other bytes under a layer's digest, and keeps them when the blob is uploaded again
    (docker-registry does): a push there that names the blob fails before any tag, and --cache-to leaves the layer
    out of the map, so later runners build it instead of being sent to it again."""
    from conda_envkit.oci.registry import RegistryClient

    work, _ = _own_channel(tmp_path, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    host = registry.host
    first, _ = _bake(work, tmp_path / "runner-1", "--oci", "image", "--cache-to", f"{host}/team/cache", "--insecure")
    corrupt = first["platforms"]["linux-64"]["layers"][0]["digest"]
    hexdigest = corrupt.split(":")[1]
    data = registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    data.write_bytes(bytes(len(data.read_bytes())))  # same size, other bytes

    cache = ("--cache-from", f"{host}/team/cache", "--insecure")
    pushed = _envkit(work, tmp_path / "runner-2", "-q", "--oci", "image2", "--push", f"{host}/team/app", *cache)
    assert pushed.returncode == 2, pushed.output
    assert f"{host}/team/app: serves blob {corrupt} with other bytes, even uploaded again" in pushed.stderr
    assert f"DELETE /v2/team/app/blobs/{corrupt}" in pushed.stderr
    client = RegistryClient(host, insecure=True)
    assert client.tag_digest("team/app", first["tags"][0]) is None  # no tag names an image that would not pull

    written = _envkit(work, tmp_path / "runner-3", "-q", "--oci", "image3", *cache, "--cache-to", f"{host}/team/cache")
    assert written.returncode == 0, written.output
    assert f"the registry serves layer blob {corrupt} with other bytes, even uploaded again: left out of the cache" in written.stderr
    later = _envkit(work, tmp_path / "runner-4", "--oci", "image4", *cache)
    assert later.returncode == 0 and corrupt not in later.stderr, later.output  # built, not fetched and found wrong again
    record = json.loads((work / "bake.json").read_text())
    assert record["image"]["digest"] == first["image"]["digest"]
    assert [layer["source"] for layer in record["platforms"]["linux-64"]["layers"] if layer["digest"] == corrupt] == ["built"]


def test_cache_to_beside_a_push_mounts_the_pushed_blobs_and_a_cache_warming_bake_needs_no_other_output(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    work, channel = _own_channel(tmp_path, image_channel, ["greet=1.0", "bigmodel=1.0"])
    host = registry.host
    pushed = _envkit(work, tmp_path / "c1", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache", "--insecure")
    assert pushed.returncode == 0, pushed.output
    cached = len(json.loads((work / "bake.json").read_text())["platforms"]["linux-64"]["layers"]) - 1  # not the metadata layer
    # Every layer was just pushed to team/app: the cache's repository mounts them all, uploads none.
    assert f"cache {host}/team/cache:envkit-cache: 0 layer(s) uploaded, {cached} mounted, 0 already there, {cached} kept" in pushed.stderr
    to = json.loads((work / "bake.json").read_text())["cache"]["to"]  # the record keeps it, for a CI run with -q
    assert to == {
        "ref": f"{host}/team/cache:envkit-cache",
        "written": True,
        "uploaded_layers": 0,
        "mounted_layers": cached,
        "present_layers": 0,
        "kept_layers": cached,
        "dropped_layers": 0,
        "dropped_packages": 0,
    }

    # --cache-to alone: a cache-warming bake (buildx allows it); a fresh runner then bakes from it with no package.
    warmed = _envkit(work, tmp_path / "c2", "-q", "--cache-to", f"{host}/team/warm", "--insecure")
    assert warmed.returncode == 0, warmed.output
    digest = json.loads((work / "bake.json").read_text())["image"]["digest"]
    shutil.rmtree(channel)
    fresh = _envkit(work, tmp_path / "c3", "--oci", "img", "--cache-from", f"{host}/team/warm", "--insecure")
    assert fresh.returncode == 0, fresh.output
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == digest
    assert not (tmp_path / "c3" / "pkgs").exists()
    assert re.search(r"download cached layers: \d+ layers, [\d.]+ MB from the registry cache", fresh.stderr), fresh.stderr
    assert f"(0 reused from the layer cache, {cached} from a registry cache)" in fresh.stderr
    assert json.loads((work / "bake.json").read_text())["cache"]["layers_downloaded"] == cached


def test_packages_a_cache_from_bake_fetches_for_its_layers_are_said(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    # The plan reads the infos from the map; a group layer whose key changed needs all its members' archives,
    # fetched while the layers are built: each one is reported, as the plan's are.
    work = tmp_path / "work"
    host = registry.host
    _lock(work, image_channel, ["greet=1.0", "smalldata"])  # one small-package group holds both
    _bake(work, tmp_path / "c1", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache", "--insecure")
    _lock(work, image_channel, ["greet=1.0"])  # that group's key changes; every info is in the map
    result = _envkit(work, tmp_path / "c2", "--oci", "img", "--cache-from", f"{host}/team/cache", "--insecure")
    assert result.returncode == 0, result.output
    assert [p.name for p in (tmp_path / "c2" / "pkgs").iterdir() for p in p.glob("*.conda")] == ["greet-1.0-0.conda"]
    assert _downloads_said(result.stderr) == 1, result.stderr


def test_an_unreachable_cache_from_is_a_warning_and_a_cache_ref_must_name_its_registry(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    result = _envkit(work, tmp_path / "c", "-q", "--oci", "img", "--cache-from", "127.0.0.1:1/team/cache", "--insecure")
    assert result.returncode == 0, result.output
    assert "cache 127.0.0.1:1/team/cache:envkit-cache: cannot be read (" in result.stderr and "baked without it" in result.stderr
    for bare, what in (("127.0.0.1:5000", "a registry but no repository"), ("team/cache", "no registry"), ("cache", "no registry")):
        refused = _envkit(work, tmp_path / "c", "-q", "--oci", "img", "--cache-from", bare)
        assert refused.returncode == 2 and f"--cache-from {bare}: cache {bare!r} names {what}" in refused.stderr, refused.output
    upper = _envkit(work, tmp_path / "c", "-q", "--oci", "img", "--cache-to", "localhost:5000/team/Cache")
    assert upper.returncode == 2 and "--cache-to localhost:5000/team/Cache: " in upper.stderr and "lowercase" in upper.stderr, upper.output


def test_a_plain_http_registry_without_insecure_is_named_as_such(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    result = _envkit(work, tmp_path / "c", "-q", "--push", f"{registry.host}/team/app")
    assert result.returncode == 2, result.output
    assert f"{registry.host}: the registry speaks plain HTTP, not HTTPS" in result.stderr and "pass --insecure" in result.stderr


def test_a_newer_envkits_cache_is_read_by_neither_and_not_replaced(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    # Runners of two envkit versions writing one cache would otherwise throw each other's entries away in turn.
    from conda_envkit.oci.registry import RegistryClient

    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    host = registry.host
    client = RegistryClient(host, insecure=True)
    _put_cache_map(client, "team/cache", "envkit-cache", b'{"schema": "envkit.bake-cache/2", "layers": {}}')
    before = client.get_manifest("team/cache", "envkit-cache")[2]
    both = ("--cache-from", f"{host}/team/cache", "--cache-to", f"{host}/team/cache", "--insecure")
    result = _envkit(work, tmp_path / "c", "-q", "--oci", "img", *both)
    assert result.returncode == 0, result.output
    newer = f"{host}/team/cache:envkit-cache: a newer envkit's bake cache (envkit.bake-cache/2)"
    assert f"{newer}: baked without it; upgrade envkit, or use another tag" in result.stderr
    assert f"{newer}: not replaced; this bake's layers were not written to it" in result.stderr
    assert client.get_manifest("team/cache", "envkit-cache")[2] == before
    # The cache as the only output: nothing was written anywhere, which is an error.
    alone = _envkit(work, tmp_path / "c", "-q", "--cache-to", f"{host}/team/cache", "--insecure")
    assert alone.returncode == 2 and f"{newer}: not replaced, and nothing was written" in alone.stderr, alone.output
    assert client.get_manifest("team/cache", "envkit-cache")[2] == before


def test_a_lost_blob_of_an_older_entry_does_not_stop_later_writes(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    # The registry refuses a manifest listing a blob it lost: the write drops the entries naming it and tags again.
    from conda_envkit.oci.registry import RegistryClient

    work = tmp_path / "work"
    host = registry.host
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0"])
    first, _ = _bake(work, tmp_path / "c", "--oci", "a", "--cache-to", f"{host}/team/cache", "--insecure")
    lost = next(layer["digest"] for layer in first["platforms"]["linux-64"]["layers"] if "bigmodel-1.0-0" in layer["packages"])
    client = RegistryClient(host, insecure=True)
    client.request("DELETE", f"/v2/team/cache/blobs/{lost}", "repository:team/cache:pull,push", (202,), what="delete blob")
    _lock(work, image_channel, ["greet=1.0"])  # this bake does not use bigmodel's layer: only the old entry names it
    again = _envkit(work, tmp_path / "c", "-q", "--oci", "b", "--cache-to", f"{host}/team/cache", "--insecure")
    assert again.returncode == 0, again.output
    record = json.loads((work / "bake.json").read_text())
    assert record["cache"]["to"]["dropped_layers"] == 1
    manifest = json.loads(client.get_manifest("team/cache", "envkit-cache")[0])
    assert lost not in {layer["digest"] for layer in manifest["layers"]}


@pytest.mark.parametrize("change", ["size", "installed_size", "name", "generation"])
def test_a_hostile_cache_map_is_a_miss_or_a_warning_never_a_broken_image_or_a_traceback(
    tmp_path: Path, image_channel: Path, registry: Registry, change: str
) -> None:
    # A map whose layer sizes lie (the size would go into the pushed manifest), whose package infos have the wrong
    # types, or whose generation no reader can hold.
    from conda_envkit.oci.registry import RegistryClient
    from conda_envkit.registry_cache import _read, parse_cache_ref

    work = tmp_path / "work"
    host = registry.host
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0"])
    first, _ = _bake(work, tmp_path / "c1", "--push", f"{host}/team/app", "--cache-to", f"{host}/team/cache", "--insecure")
    client = RegistryClient(host, insecure=True)
    found = _read(client, parse_cache_ref(f"{host}/team/cache"))
    assert found is not None
    document = found[0]
    for entry in document["layers"].values():
        if change == "size":
            entry["size"] = 5
        if change == "generation":
            entry["generation"] = 10**4000
    for info in document["packages"].values():
        if change == "installed_size":
            info["installed_size"] = "x"
        if change == "name":
            info["name"], info["version"] = 5, None
    _put_cache_map(client, "team/cache", "hostile", json.dumps(document).encode())

    args = ("--push", f"{host}/team/other", "--cache-from", f"{host}/team/cache:hostile", "--cache-to", f"{host}/team/cache:hostile")
    result = _envkit(work, tmp_path / "c2", *args, "--insecure")
    assert result.returncode == 0, result.output
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == first["image"]["digest"]
    pushed = json.loads(client.get_manifest("team/other", first["tags"][0])[0])
    for layer in pushed["layers"]:  # every size in the pushed manifest is the blob's
        assert client.blob_size("team/other", layer["digest"]) == layer["size"]
    if change == "size":
        assert "bytes, the cache map says 5: that layer was built here" in result.stderr


def test_a_push_tag_that_is_the_cache_tag_of_the_same_repository_is_refused_first(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    both = ("--push", "localhost:1/team/col", "-t", "envkit-cache", "--cache-to", "localhost:1/team/col", "--insecure")
    result = _envkit(work, tmp_path / "c", "-q", *both)
    assert (
        result.returncode == 2
        and "--tag envkit-cache would put the image where --cache-to localhost:1/team/col keeps the cache" in result.stderr
    )
    assert not (tmp_path / "c" / "pkgs").exists()
