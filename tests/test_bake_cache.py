"""The lock-keyed layer plan and cache: a warm bake reads no package archive, a changed lock
rebuilds only its layers from what the cache holds, and the result is the digest of a cold bake."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from conda_envkit.layer_plan import _group_of
from tests.conftest import run_envkit
from tests.test_bake import _bake, _lock


def _drop_archives(cache: Path, keep: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Remove every package archive (and rattler's extracted copies) from a cache, but those named in `keep`."""
    for archive_dir in (cache / "pkgs").iterdir():
        if not any(f.name.startswith(tuple(keep)) for f in archive_dir.iterdir()):
            shutil.rmtree(archive_dir)
    shutil.rmtree(cache / "extracted", ignore_errors=True)


def test_warm_bake_needs_no_package_archive(tmp_path: Path, image_channel: Path) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    work, cache = tmp_path / "work", tmp_path / "cache"
    _lock(work, channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    cold, _ = _bake(work, cache, "--oci", "image")
    shutil.rmtree(channel)
    _drop_archives(cache)
    warm = run_envkit("bake", "--large-package-mb", "1", "--oci", "image2", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert warm.returncode == 0, warm.output
    layers = cold["platforms"]["linux-64"]["layers"]
    assert f"({len(layers) - 1} reused from the layer cache)" in warm.stderr  # metadata is always written
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == cold["image"]["digest"]
    assert not any((cache / "pkgs").iterdir())


def test_one_added_package_rebakes_from_the_cache_to_the_cold_digest(tmp_path: Path, image_channel: Path) -> None:
    # greet and smalldata hash into the same small-package group: adding smalldata rebuilds that
    # group, whose other member (greet) must come from the cache, its archive being gone.
    assert _group_of("greet", 4) == _group_of("smalldata", 4)
    channel = tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    a, b = tmp_path / "a", tmp_path / "b"
    _lock(a, channel, ["greet=1.0", "bigmodel=1.0"])
    _lock(b, channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    cold_b, _ = _bake(b, tmp_path / "cold-cache", "--oci", "image")

    cache = tmp_path / "cache"
    _bake(a, cache, "--oci", "image")
    _drop_archives(cache)
    for archive in channel.rglob("*.conda"):
        if not archive.name.startswith("smalldata-"):
            archive.unlink()
    again = run_envkit("bake", "--large-package-mb", "1", "--oci", "image", cwd=b, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert again.returncode == 0, again.output
    again_b = json.loads((b / "bake.json").read_text())
    assert again_b["image"]["digest"] == cold_b["image"]["digest"]
    # The log and the record say which layer was built, and what it read from an archive: smalldata, the package
    # added (greet came from its fragment).
    group = _group_of("greet", 4) + 1
    assert f"; built: packages group {group}/4: 2 small packages, 1 read from their archives (smalldata-" in again.stderr, again.stderr
    sources = {
        ",".join(layer["packages"]): (layer["source"], layer["read_from_archives"]) for layer in again_b["platforms"]["linux-64"]["layers"]
    }
    smalldata = next(p for p in cold_b["platforms"]["linux-64"]["packages"] if p["name"] == "smalldata")
    assert sources.pop("") == ("built", [])  # the metadata layer
    built = {k: v for k, v in sources.items() if v[0] == "built"}
    assert list(built.values()) == [("built", [f"smalldata-{smalldata['version']}-{smalldata['build']}"])], sources
    assert [v for k, v in sources.items() if k not in built] == [("layer-cache", [])] * (len(sources) - 1)
    cold_sources = {layer["source"] for layer in cold_b["platforms"]["linux-64"]["layers"]}
    assert cold_sources == {"built"}
    # Only smalldata was fetched.
    assert [d.name for d in (cache / "pkgs").iterdir()] == [
        p["sha256"] for p in cold_b["platforms"]["linux-64"]["packages"] if p["name"] == "smalldata"
    ]


def _tree(root: Path) -> dict[str, tuple[str, str | bytes]]:
    out: dict[str, tuple[str, str | bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "")
            else:
                out[rel] = (f"file {st.st_mode & 0o777:o}", path.read_bytes())  # every permission bit, as install wrote it
    return out


def test_image_tree_is_the_installed_tree(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    prefix = tmp_path / "envs" / "train"
    installed = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env=cache)
    assert installed.returncode == 0, installed.output
    record, _ = _bake(work, tmp_path / "cache", "--oci", "image", "--prefix", str(prefix))
    bundle = tmp_path / "bundle"
    tag = record["tags"][0]
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{work / 'image'}:{tag}", str(bundle)], check=True, capture_output=True)
    in_image = _tree(bundle / "rootfs" / str(prefix).lstrip("/"))
    on_disk = _tree(prefix)
    assert on_disk.pop("conda-meta/envkit/installed.json")[0].startswith("file")  # envkit install's record of what it installed
    # The image adds environment.json (labels); everything else is byte for byte what install wrote.
    assert in_image.pop("conda-meta/envkit/environment.json")[0].startswith("file")
    assert in_image == on_disk


def test_tar_writer_matches_tarfile_pax(tmp_path: Path) -> None:
    from conda_envkit.oci.tarstream import DIRECTORY, FILE, SYMLINK, Member, TarWriter

    members = [
        Member("a", DIRECTORY, 0o755),
        Member("a/b.txt", FILE, 0o644, 5, data=b"hello"),
        Member("a/" + "x" * 120, FILE, 0o755, 3, data=b"abc"),
        Member("a/\u00e9", FILE, 0o644, 0, data=b""),
        Member("a/l", SYMLINK, 0o777, linkname="../" + "y" * 130),
        Member("d" * 99, DIRECTORY, 0o755),
        Member("a/\u00fc" * 40, SYMLINK, 0o777, linkname="\u00f6"),
    ]
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for m in members:
            info = tarfile.TarInfo(m.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 1234567, 0, 0, "", ""
            info.type, info.mode, info.linkname = m.kind.encode(), m.mode, m.linkname
            info.size = m.size
            tar.addfile(info, io.BytesIO(m.data or b"") if m.kind == FILE else None)
    ours = io.BytesIO()
    writer = TarWriter(ours, 1234567)
    for m in members:
        writer.add(m)
    writer.close()
    assert ours.getvalue() == expected.getvalue()


def test_corrupt_cache_entries_are_rebuilt_not_trusted(tmp_path: Path, image_channel: Path) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    first, _ = _bake(work, cache, "--oci", "image")
    for layer in first["platforms"]["linux-64"]["layers"]:
        blob = cache / "blobs" / "sha256" / layer["digest"].split(":")[1]
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes
        blob.write_bytes(bytes(data))
    fragments = list((cache / "fragments").glob("*/*.tar"))
    assert fragments
    for fragment in fragments:
        data = bytearray(fragment.read_bytes())
        data[-1] ^= 0xFF
        fragment.write_bytes(bytes(data))
    again = run_envkit("bake", "--large-package-mb", "1", "--oci", "image2", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert again.returncode == 0, again.output
    assert "(0 reused from the layer cache)" in again.stderr
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == first["image"]["digest"]


def test_cache_entries_that_are_fifos_or_not_utf8_are_misses_and_cache_symlinks_are_refused(tmp_path: Path, image_channel: Path) -> None:
    # From a hostile trial: a FIFO in place of a cache entry made bake and install wait forever, a marker that was not
    # UTF-8 was a traceback, and a cache directory replaced by a symlink carried envkit's writes out of the cache.
    work, cache = tmp_path / "work", tmp_path / "cache"
    _lock(work, image_channel, ["greet=1.0", "smalldata"])
    first, _ = _bake(work, cache, "--oci", "image")
    shutil.rmtree(cache / "layers")  # the next bake reads package infos and fragments again
    for entry in [*cache.glob("pkginfo/*/*.json"), *cache.glob("fragments/*/*.json")]:
        entry.unlink()
        os.mkfifo(entry)
    for marker in cache.glob("pkgs/*/verified.*"):
        marker.write_bytes(b"\xff")
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    again = run_envkit("bake", "-q", "--large-package-mb", "1", "--oci", "image2", cwd=work, env=env)
    assert again.returncode == 0, again.output
    assert json.loads((work / "bake.json").read_text())["image"]["digest"] == first["image"]["digest"]
    installed = run_envkit("install", "-q", "-p", "linux-64", "--prefix", tmp_path / "env", cwd=work, env=env)
    assert installed.returncode == 0, installed.output
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(cache / "blobs")
    (cache / "blobs").symlink_to(outside)
    for command in (("bake", "--oci", "image3"), ("install", "-p", "linux-64", "--prefix", tmp_path / "env2")):
        refused = run_envkit(*command, cwd=work, env=env)
        assert refused.returncode == 2 and f"{cache / 'blobs'}: a directory of envkit's cache is a symlink" in refused.stderr
    assert list(outside.iterdir()) == []


def test_an_oci_output_leaves_the_layer_cache_current(tmp_path: Path, image_channel: Path) -> None:
    # An OCI layout hard-links the cached blobs (and the next one unlinks them again), which moves
    # their ctime; the layer cache's stamps follow, so the next warm bake hashes no blob again.
    from conda_envkit.oci.blobs import file_stamp

    work, cache = tmp_path / "work", tmp_path / "cache"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    _bake(work, cache, "--oci", "image")
    warm = run_envkit("bake", "--large-package-mb", "1", "--oci", "image", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert warm.returncode == 0, warm.output
    entries = [json.loads(p.read_text()) for p in (cache / "layers").glob("*/*")]
    assert entries
    for entry in entries:
        assert entry["stamp"] == file_stamp(cache / "blobs" / "sha256" / entry["digest"].partition(":")[2])
