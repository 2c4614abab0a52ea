"""envkit bake on hostile packages: bake reads plain archives itself (staged and checked while
the layers are written), so it must refuse what install refuses, and keep nothing of a refused
bake for the next one: no layer cache entry, no fragment, no image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.hostile.conftest import HOSTILE_CONDA, Workspace, assert_refused, locked_workspace


def _bake(ws: Workspace) -> tuple[object, Path]:
    image = ws.root / "img"
    return ws.envkit("bake", "-q", "-p", "linux-64", "--oci", image), image


def _kept(ws: Workspace) -> list[str]:
    """Every file under the layer cache and the fragments (a fragment's temporary file too), by path."""
    return sorted(str(p.relative_to(ws.cache)) for sub in ("layers", "fragments") for p in (ws.cache / sub).rglob("*") if not p.is_dir())


@pytest.mark.parametrize("layers", ["groups", "own"])
@pytest.mark.parametrize("name", sorted(HOSTILE_CONDA))
def test_hostile_conda_package_is_refused_by_bake(tmp_path: Path, hostile_channel: Path, name: str, layers: str) -> None:
    # In a group layer the archive is staged; in a layer of its own (--large-package-mb 0) it is read as a stream
    # straight into that layer: both must refuse it, with the same error, and keep nothing.
    _package, message = HOSTILE_CONDA[name]
    ws = locked_workspace(tmp_path / "work", hostile_channel, [name, "honest"])
    image = ws.root / "img"
    result = ws.envkit("bake", "-q", "-p", "linux-64", *(["--large-package-mb", "0"] if layers == "own" else []), "--oci", image)
    assert_refused(result, name, message)  # type: ignore[arg-type]
    assert not image.exists()
    assert _kept(ws) == []
    assert not list((ws.cache / "tmp").glob("bake.*"))  # the staging area is removed


def test_symlink_chain_across_two_streamed_packages_keeps_no_fragment(tmp_path: Path, hostile_channel: Path) -> None:
    # Both packages are plain (symlinks only): they are streamed, and their fragments would be reused by the
    # next bake without reading the archives; the link check across them must come first.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["chain-a", "chain-b", "honest"])
    result, image = _bake(ws)
    assert_refused(result, "chain-b", "lib/upup", "leaves the prefix")  # type: ignore[arg-type]
    assert not image.exists()
    assert _kept(ws) == []
    again, _ = _bake(ws)  # nothing cached lets a second bake through
    assert_refused(again, "chain-b", "lib/upup")  # type: ignore[arg-type]


def test_hostile_package_among_single_package_layers_stops_the_bake(tmp_path: Path, hostile_channel: Path) -> None:
    # With every package in a layer of its own, the stager runs at most two layers ahead of the writer (it waits
    # for the layers before to be written): a refused package first in line must still end the bake, not hang it.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["abs-tar-entry", "chain-a", "honest"])
    image = ws.root / "img"
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--large-package-mb", "0", "--oci", image)
    assert_refused(result, "abs-tar-entry", "leaves its root")  # type: ignore[arg-type]
    assert not image.exists()
    assert _kept(ws) == []
    assert not list((ws.cache / "tmp").glob("bake.*"))
    honest = locked_workspace(tmp_path / "honest", hostile_channel, ["chain-a", "honest"])
    baked = honest.envkit("bake", "-q", "-p", "linux-64", "--large-package-mb", "0", "--oci", honest.root / "img")
    assert baked.returncode == 0, baked.output


def test_a_decompression_bomb_is_refused_before_it_fills_the_disk(tmp_path: Path, hostile_channel: Path) -> None:
    # From a hostile trial: a 129 KB .conda holding 4 GiB of zeros was decompressed whole (install filled the disk
    # while py-rattler unpacked it; bake while it staged it). Its expansion is capped (MAX_EXPANSION times the
    # archive, at least MIN_EXPANSION_CAP) while it is checked, before anything is unpacked or written.
    import asyncio
    import shutil

    from rattler.index import index_fs

    from conda_envkit.archive_check import MIN_EXPANSION_CAP
    from conda_envkit.testing.hostile_packages import HostilePackage, Member, write_hostile_package

    channel = tmp_path / "channel"
    shutil.copytree(hostile_channel, channel)
    zeros = b"\0" * (MIN_EXPANSION_CAP + (1 << 20))
    listed = {"_path": "share/bomb", "path_type": "hardlink", "sha256": hashlib.sha256(zeros).hexdigest(), "size_in_bytes": len(zeros)}
    archive = write_hostile_package(HostilePackage("bomb", (Member("share/bomb", content=zeros),), (listed,)), channel)
    del zeros
    assert archive.stat().st_size < 1 << 20
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    ws = locked_workspace(tmp_path / "work", channel, ["bomb", "honest"])
    said = f"bomb-1.0-0.conda expands to more than {MIN_EXPANSION_CAP >> 20} MiB"
    assert_refused(ws.install(), said)
    for large_mb in ("0", "1000"):  # streamed into a layer of its own, or into its fragment for a group layer
        result = ws.envkit("bake", "-q", "-p", "linux-64", "--large-package-mb", large_mb, "--oci", ws.root / "img")
        assert_refused(result, said)
        assert not (ws.root / "img").exists() and _kept(ws) == []


def _hide_last_zip_entry(path: Path) -> None:
    """Drop the last entry's record from the zip's central directory, leaving its local header and data in place."""
    import io
    import struct
    import zipfile

    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        start, count = z.start_dir, len(z.infolist())  # type: ignore[attr-defined]
    records, pos = [], start
    for _ in range(count):
        name, extra, comment = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        records.append(data[pos : pos + 46 + name + extra + comment])
        pos += 46 + name + extra + comment
    kept = b"".join(records[:-1])
    end = data[pos:]
    path.write_bytes(data[:start] + kept + end[:8] + struct.pack("<HHLL", count - 1, count - 1, len(kept), start) + end[20:])


def test_a_conda_archive_with_an_entry_its_zip_directory_hides_is_refused(tmp_path: Path, hostile_channel: Path) -> None:
    # From a hostile trial: py-rattler reads a .conda front to back by its local headers, Python's zipfile by its
    # directory. A second pkg- tarball left out of the directory was installed (a symlink out, 1 GiB past the
    # expansion cap) while the check read the honest one.
    import asyncio
    import shutil
    import zipfile

    from rattler.index import index_fs

    channel = tmp_path / "channel"
    shutil.copytree(hostile_channel, channel)
    archive = next((channel / "noarch").glob("honest-1.0-0.conda"))
    with zipfile.ZipFile(archive) as z:
        pkg = next(n for n in z.namelist() if n.startswith("pkg-"))
        payload = z.read(pkg)
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr(pkg.replace("pkg-", "pkg-hidden-"), payload)
    _hide_last_zip_entry(archive)
    with zipfile.ZipFile(archive) as z:
        assert pkg in z.namelist() and len(z.namelist()) == 3  # metadata.json, info-, pkg-: the hidden one is not listed
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    ws = locked_workspace(tmp_path / "work", channel, ["honest"])
    said = "honest-1.0-0.conda: its zip holds data its directory does not list"
    assert_refused(ws.install(), said)
    for large_mb in ("0", "1000"):
        assert_refused(ws.envkit("bake", "-q", "-p", "linux-64", "--large-package-mb", large_mb, "--oci", ws.root / "img"), said)


SECRET = "Tok-SeCrEt-42"


def _holding_credentials(ws: Workspace, url: str) -> None:
    """`ws`'s lock as conda-lock writes it without --strip-auth: its channel and package URLs hold a credential."""

    def edit(document: dict) -> None:
        document["metadata"]["channels"] = [{"url": url, "used_env_vars": []}]
        for entry in document["package"]:
            entry["url"] = f"{url}/{entry['url'].rsplit('/', 2)[-2]}/{entry['url'].rsplit('/', 1)[-1]}"

    ws.rewrite(edit)


@pytest.mark.parametrize("url", [f"https://conda.example.com/t/tk-{SECRET}/private", f"https://ci-bot:{SECRET}@conda.example.com/private"])
def test_a_lock_holding_credentials_is_not_baked_into_an_image(tmp_path: Path, hostile_channel: Path, url: str) -> None:
    # The image keeps the lock as it is (conda-meta/envkit/conda-lock.yml): the token went to anyone who could pull
    # it. The archive is in the cache (sha256-checked), so nothing stopped the bake before: it wrote the image.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    first, image = _bake(ws)
    assert first.returncode == 0, first.output  # type: ignore[attr-defined]
    _holding_credentials(ws, url)
    out = ws.root / "img2"
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--oci", out)
    held = "its URLs hold credentials (for conda.example.com)"
    error = assert_refused(result, "conda-lock.yml", held, "/conda-meta/envkit/conda-lock.yml")  # type: ignore[arg-type]
    assert SECRET not in result.output and SECRET not in error  # type: ignore[attr-defined]
    assert not out.exists()
    assert "${VAR}" in result.stderr  # type: ignore[attr-defined]  # (the hint: what to write instead)
    context = ws.root / "context"
    refused = ws.envkit("dockerfile", "--recipe", "cpu-slim", "-p", "linux-64", "-o", context)
    assert_refused(refused, "its URLs hold credentials")  # type: ignore[arg-type]
    assert not context.exists()


def test_a_lock_naming_credentials_as_placeholders_is_baked(tmp_path: Path, hostile_channel: Path) -> None:
    # The happy case beside it: `${VAR}` names a credential without holding it (what envkit lock writes); the
    # archive is in the cache already, so the bake needs no server.
    from conda_envkit.lockmodel import hosts_with_credentials, read_lock

    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    first, _image = _bake(ws)
    assert first.returncode == 0, first.output  # type: ignore[attr-defined]
    _holding_credentials(ws, "https://conda.example.com/t/${CONDA_TOKEN}/private")
    assert hosts_with_credentials(read_lock(ws.lock)) == []
    out = ws.root / "img2"
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--oci", out)
    assert result.returncode == 0, result.output  # type: ignore[attr-defined]
    _holding_credentials(ws, "https://${CONDA_USER}:${CONDA_TOKEN}@conda.example.com/private")
    assert hosts_with_credentials(read_lock(ws.lock)) == []
    _holding_credentials(ws, f"https://conda.example.com/t/{SECRET}/private")
    assert hosts_with_credentials(read_lock(ws.lock)) == ["conda.example.com"]
