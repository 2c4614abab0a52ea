"""envkit bake on hostile packages: bake reads plain archives itself (staged and checked while
the layers are written), so it must refuse what install refuses, and keep nothing of a refused
bake for the next one: no layer cache entry, no fragment, no image."""

from __future__ import annotations

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
    assert not list((ws.cache / "tmp").glob("bake-*"))  # the staging area is removed


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
    assert not list((ws.cache / "tmp").glob("bake-*"))
    honest = locked_workspace(tmp_path / "honest", hostile_channel, ["chain-a", "honest"])
    baked = honest.envkit("bake", "-q", "-p", "linux-64", "--large-package-mb", "0", "--oci", honest.root / "img")
    assert baked.returncode == 0, baked.output
