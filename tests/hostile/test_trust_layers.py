"""Base-image layers and the blob cache (issue 14 items 4 and 11): symlink chains are resolved
inside the rootfs, across layers; a blob is checked against its digest whenever it leaves the
cache, so a poisoned cache never reaches an output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conda_envkit.testing.hostile_images import Entry, directory, new_file, symlink, write_base_layout
from tests.hostile.conftest import Workspace, assert_refused, locked_workspace

BASES: dict[str, tuple[list[list[Entry]], str]] = {
    "chain-in-one-layer": ([[directory("d"), symlink("d/up", ".."), symlink("d/up/esc", "..")]], "d/up/esc"),
    "chain-across-layers": ([[directory("d"), symlink("d/up", "..")], [symlink("d/up/esc", "..")]], "d/up/esc"),
    "through-sibling-link": ([[directory("lib"), symlink("lib/a", ".."), symlink("lib/b", "a/..")]], "lib/b"),
    "through-lower-sibling": ([[directory("lib"), symlink("lib/a", "..")], [symlink("lib/b", "a/../etc")]], "lib/b"),
    "dotdot-name": ([[new_file("../escape", b"x")]], "../escape"),
    "climbing-link": ([[directory("usr"), symlink("usr/up", "../../etc")]], "usr/up"),
}


@pytest.fixture
def ws(tmp_path: Path, hostile_channel: Path) -> Workspace:
    return locked_workspace(tmp_path / "work", hostile_channel, ["honest"])


@pytest.mark.parametrize("case", sorted(BASES))
def test_base_layer_leading_out_of_the_rootfs_is_refused(ws: Workspace, case: str) -> None:
    layers, entry = BASES[case]
    write_base_layout(ws.root / "base", layers)
    result = ws.envkit("bake", "-q", "--base", "oci:base:base", "--oci", "out", "-p", "linux-64")
    assert_refused(result, entry)
    assert not (ws.root / "out").exists()


def test_absolute_links_stay_allowed(ws: Workspace) -> None:
    # Runtimes resolve absolute targets inside the container's root: usrmerge bases need them.
    write_base_layout(ws.root / "base", [[directory("usr"), directory("usr/bin"), symlink("bin", "/usr/bin"), symlink("sbin", "usr/bin")]])
    result = ws.envkit("bake", "-q", "--base", "oci:base:base", "--oci", "out", "-p", "linux-64")
    assert result.returncode == 0, result.output


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()  # a new file: a blob hard-linked elsewhere (the base layout) keeps its bytes
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("output", ["--oci", "--docker-archive"])
def test_corrupt_cached_blob_never_reaches_an_output(ws: Workspace, output: str) -> None:
    first = ws.envkit("bake", "-q", "--oci", "first", "-p", "linux-64")
    assert first.returncode == 0, first.output
    record = json.loads((ws.root / "bake.json").read_text())
    layer = record["platforms"]["linux-64"]["layers"][0]
    digest = layer["digest"] if isinstance(layer, dict) else layer
    blob = ws.cache / "blobs" / "sha256" / digest.partition(":")[2]
    _flip_a_byte(blob)  # same size: a cache entry's size check does not see it
    target = "second" if output == "--oci" else "second.tar"
    result = ws.envkit("bake", "-q", output, target, "-p", "linux-64")
    # The layer cache re-hashes a blob whose file changed, drops it and builds the layer again:
    # the corrupt bytes never reach the output, and the image is the same.
    assert result.returncode == 0, result.output
    assert json.loads((ws.root / "bake.json").read_text())["image"]["digest"] == record["image"]["digest"]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest.partition(":")[2]
    if output == "--oci":
        written = ws.root / target / "blobs" / "sha256" / digest.partition(":")[2]
        assert hashlib.sha256(written.read_bytes()).hexdigest() == digest.partition(":")[2]


def test_poisoned_base_blob_in_the_cache_is_fetched_again(ws: Workspace) -> None:
    write_base_layout(ws.root / "base", [[directory("etc"), new_file("etc/motd", b"genuine\n")]])
    assert ws.envkit("bake", "-q", "--base", "oci:base:base", "--oci", "one", "-p", "linux-64").returncode == 0
    base_layer = next((ws.root / "base" / "blobs" / "sha256").iterdir())
    for blob in (ws.cache / "blobs" / "sha256").iterdir():
        if blob.read_bytes()[:2] == b"\x1f\x8b" and blob.stat().st_size == base_layer.stat().st_size:
            _flip_a_byte(blob)
    again = ws.envkit("bake", "-q", "--base", "oci:base:base", "--oci", "two", "-p", "linux-64")
    assert again.returncode == 0, again.output
    verify = ws.envkit("verify", "--image", f"oci:two:{json.loads((ws.root / 'bake.json').read_text())['tags'][0]}")
    assert verify.returncode == 0, verify.output


def _gzip_layer(path: Path, entries: int, size: int = 0) -> Path:
    import gzip
    import io
    import tarfile

    with gzip.open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(entries):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(b"\0" * size))
    return path


@pytest.mark.parametrize(("entries", "size"), [(50, 0), (2, 3 << 20)])
def test_a_layer_that_expands_past_its_caps_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: int, size: int) -> None:
    # A decompression bomb: few compressed bytes, endless entries or bytes. The caps are lowered
    # here so the bomb stays small (real ones: 4,000,000 entries, 64 GiB).
    from conda_envkit.oci import safety

    monkeypatch.setattr(safety, "MAX_LAYER_ENTRIES", 20)
    monkeypatch.setattr(safety, "MAX_LAYER_BYTES", 1 << 20)
    layer = _gzip_layer(tmp_path / "layer.tar.gz", entries, size)
    assert layer.stat().st_size < 64 << 10
    with pytest.raises(safety.OciError) as refused:
        safety.check_layer(layer, "base layer sha256:abc")
    assert refused.value.message == "base layer sha256:abc: the layer expands to more than 20 entries or 1 MiB", refused.value.message
    assert "decompression bomb" in refused.value.hint


def test_scanning_a_layer_keeps_no_header_it_has_passed(tmp_path: Path) -> None:
    import tarfile

    from conda_envkit.oci.safety import layer_members, open_layer

    layer = _gzip_layer(tmp_path / "layer.tar.gz", 300)
    with open_layer(layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        held = [len(tar.members) for _ in layer_members(tar, "layer")]  # type: ignore[attr-defined]
    assert len(held) == 300 and max(held) <= 1


def _spoiled(layout: Path, spoil: str) -> None:
    """Edit the one image of `layout` (its manifest, config or index) as a hostile or broken layout would have it."""

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    index = json.loads((layout / "index.json").read_text())
    top = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / top["digest"].split(":")[1]).read_bytes())
    config_path = layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    config = json.loads(config_path.read_bytes())
    if spoil == "layer-size":
        manifest["layers"][0]["size"] = 5
    elif spoil == "diff-id":
        config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    elif spoil == "env-string":  # (was split into one variable per character)
        config["config"]["Env"] = "PATH=/x"
    elif spoil == "labels-list":  # (was a traceback)
        config["config"]["Labels"] = ["a"]
    elif spoil == "media-type":
        manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    if spoil in ("diff-id", "env-string", "labels-list"):
        manifest["config"]["digest"], manifest["config"]["size"] = put(json.dumps(config).encode())
    top["digest"], top["size"] = put(json.dumps(manifest).encode())
    if spoil == "manifest-size":
        top["size"] = 10
    if spoil == "nested-index":  # index.json -> index -> index -> manifest, each entry for linux/amd64
        top = {**top, "platform": {"os": "linux", "architecture": "amd64"}}
        for _ in range(2):
            inner = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [dict(top)]}
            digest, size = put(json.dumps(inner).encode())
            top = {**top, "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": size}
    index["manifests"][0] = top
    (layout / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        ("layer-size", "bytes, its descriptor says 5"),
        ("manifest-size", "its descriptor says 10"),
        ("diff-id", "the image config says sha256:0000"),
        ("media-type", "its media type says application/vnd.oci.image.layer.v1.tar+zstd"),
        ("nested-index", "is not an image manifest (an index inside an index"),
        ("env-string", "its config's config.Env is not a list of strings"),
        ("labels-list", "its config's config.Labels is not a mapping of strings"),
    ],
)
def test_a_base_layout_that_contradicts_itself_is_refused(ws: Workspace, spoil: str, said: str) -> None:
    # From a hostile trial: each of these baked an image (exit 0) that copied the lie into its own manifest (umoci
    # refuses them all), or was a traceback (the nested index).
    write_base_layout(ws.root / "base", [[directory("etc"), new_file("etc/motd", b"genuine\n")]])
    _spoiled(ws.root / "base", spoil)
    assert_refused(ws.envkit("bake", "-q", "-p", "linux-64", "--base", "oci:base:base", "--oci", ws.root / "image"), said)
    assert not (ws.root / "image").exists()


def test_a_cached_base_blob_of_the_wrong_size_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From a hostile trial: a 64 GiB sparse file put in the blob cache under a base layer's digest was hashed in full
    # (minutes) before it was found wrong. Its size is compared with the descriptor's first; the layout's copy is taken.
    from conda_envkit.oci import base as base_module
    from conda_envkit.oci.blobs import BlobStore

    layout = tmp_path / "base"
    write_base_layout(layout, [[directory("etc"), new_file("etc/motd", b"genuine\n")]])
    store = BlobStore(tmp_path / "cache" / "blobs")
    first = base_module.load_base(f"oci:{layout}:base", "linux-64", store)
    digest = first.layers[0].descriptor.digest
    path = store.path(digest)
    path.unlink()
    with path.open("wb") as f:
        f.truncate(8 << 30)  # sparse: no disk used
    assert not store.has_sized(digest, first.layers[0].descriptor.size)
    real = base_module.file_digest

    def only_small(p: Path) -> str:
        assert p.stat().st_size < 1 << 30, f"{p} was read"
        return real(p)

    monkeypatch.setattr(base_module, "file_digest", only_small)
    again = base_module.load_base(f"oci:{layout}:base", "linux-64", store)
    assert again.layers == first.layers and path.stat().st_size == first.layers[0].descriptor.size


def _layer(path: Path, entries: list[tuple[str, str | None]]) -> Path:
    """A plain tar layer: (name, None) a file, (name, target) a symlink."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, target in entries:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info, io.BytesIO(b""))
    return path


@pytest.mark.parametrize(
    ("upper", "refused"),
    [
        # x/ is a directory of this layer: x/up -> ../.. climbs out from x.
        ([("x/", None), ("x/up", "../..")], True),
        # The same with an opaque whiteout making x a directory (x -> a/b/c was kept, and x/up judged from a/b/c).
        ([("x/.wh..wh..opq", None), ("x/up", "../..")], True),
        # Under a plain whiteout of x, the same.
        ([(".wh.x", None), ("x/up", "../..")], True),
        # No entry for x at all: an extractor may write x/up as it is or through x -> a/b/c; out either way is refused.
        ([("x/up", "../..")], True),
        # Through the link, from a/b/c: ../.. stays inside, and so does it from x.
        ([("x/up", "..")], False),
    ],
)
def test_a_link_is_judged_from_where_any_extractor_puts_it(tmp_path: Path, upper: list[tuple[str, str | None]], refused: bool) -> None:
    from conda_envkit.oci import safety

    links: dict[str, str] = {}
    safety.check_layer(_layer(tmp_path / "lower.tar", [("a/b/c/", None), ("x", "a/b/c")]), "base layer 1", links)
    upper_layer = _layer(tmp_path / "upper.tar", upper)
    if not refused:
        safety.check_layer(upper_layer, "base layer 2", links)
        return
    with pytest.raises(safety.OciError) as error:
        safety.check_layer(upper_layer, "base layer 2", links)
    assert "base layer 2: symlink 'x/up' -> '../..' points above the image root" in error.value.message


def _docker_archive(path: Path, files: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _layer_bytes(gzipped: bool) -> bytes:
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return gzip.compress(raw.getvalue(), mtime=0) if gzipped else raw.getvalue()


_CONFIG = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"manifest.json": b'{"x": 1}'}, "manifest.json is not a list of images"),
        ({"manifest.json": b"5"}, "manifest.json is not a list of images"),
        ({"manifest.json": b'[{"Layers": []}]'}, "has no `Config` file name or `Layers` list"),
        ({"manifest.json": b'[{"Config": "c.json", "Layers": [5]}]', "c.json": b"{}"}, "has no `Config` file name or `Layers` list"),
        ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]', "c.json": b"not json"}, "'c.json' is not JSON"),
        ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]', "c.json": b"[]"}, "config's document is not a JSON object"),
        ({"manifest.json": b'[{"Config": "c.json", "Layers": []}]', "c.json": b'{"rootfs": {"diff_ids": "x"}}'}, "rootfs.diff_ids"),
        # A gzip layer whose uncompressed bytes are not the config's diff_id (only a plain layer was checked).
        (
            {
                "manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar.gz"]}]',
                "c.json": json.dumps(_CONFIG).encode(),
                "l.tar.gz": _layer_bytes(gzipped=True),
            },
            "the image config says sha256:" + "0" * 64,
        ),
    ],
)
def test_a_malformed_docker_archive_is_refused_by_name(tmp_path: Path, files: dict[str, bytes], words: str) -> None:
    from conda_envkit.oci.archive import read_docker_archive
    from conda_envkit.oci.blobs import BlobStore, OciError

    archive = _docker_archive(tmp_path / "base.tar", files)
    store = BlobStore(tmp_path / "store")
    with pytest.raises(OciError) as refused:
        read_docker_archive(archive, store)
    assert str(archive) in refused.value.message and words in refused.value.message, refused.value.message
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []  # no temp file left
