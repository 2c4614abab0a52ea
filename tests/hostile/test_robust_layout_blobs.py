"""`envkit export --image oci:DIR` and `envkit verify --image oci:DIR` of a layout from elsewhere (a colleague's copy,
an artifact of someone else's CI) whose index or manifest and config blobs are not what a layout holds, and `verify
--image docker-archive:FILE` of a file that is no archive: each is one `error:` line naming the layout and the blob
or the file, exit 2, within a deadline, never a traceback, a wait on a FIFO or a read of /dev/zero without end."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, write_env

MEMORY_CAP = 3 << 30  # a read without end reaches it in seconds (a MemoryError), instead of the machine's memory
DEADLINE = 60  # a healthy export or verify of this image takes about a second


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _envkit(*args: str, cwd: Path) -> Result:
    """The real command, with a memory cap and a deadline (a hang is a failure of the test, not of the suite)."""
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(cwd.parent / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "conda_envkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        preexec_fn=_capped,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory, toy_channel: Path) -> tuple[Path, str]:
    """A lock and its image in an OCI layout (`image`), and the image's name in the layout."""
    work = tmp_path_factory.mktemp("layout") / "work"
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - python=3.11\n")
    assert _envkit("lock", "-q", cwd=work).returncode == 0
    result = _envkit("bake", "-q", "--oci", "image", cwd=work)
    assert result.returncode == 0, result.output
    return work, json.loads((work / "image" / "index.json").read_text())["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]


def _copy(baked: tuple[Path, str], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the lock and the layout to spoil (the blobs are hard links into the bake cache: copied, not linked)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(baked[0] / "conda-lock.yml", work)
    shutil.copytree(baked[0] / "image", work / "image", copy_function=shutil.copyfile)
    return work, work / "image"


def _blob(layout: Path, which: str) -> Path:
    """The manifest's or the config's blob file."""
    manifest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    if which == "config":
        path = layout / "blobs" / "sha256" / manifest.split(":")[1]
        return layout / "blobs" / "sha256" / json.loads(path.read_text())["config"]["digest"].split(":")[1]
    return layout / "blobs" / "sha256" / manifest.split(":")[1]


def _replace(make: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def spoil(blob: Path, elsewhere: Path) -> None:
        blob.unlink()
        make(blob, elsewhere)

    return spoil


SPOILED: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "gone": (_replace(lambda blob, _: None), "is not in"),
    "a directory": (_replace(lambda blob, _: blob.mkdir()), "is not a regular file"),
    "a FIFO nobody writes": (_replace(lambda blob, _: os.mkfifo(blob)), "is not a regular file"),
    "a symlink to /dev/zero": (_replace(lambda blob, _: blob.symlink_to("/dev/zero")), "is a symlink, not a file of the layout's own"),
    # The same bytes, outside the layout: the digest matches, but nothing follows a symlink out (as for layers).
    "a symlink out of the layout": (_replace(lambda blob, elsewhere: blob.symlink_to(elsewhere)), "is a symlink"),
}


def test_a_genuine_layout_exports_and_verifies(baked: tuple[Path, str], tmp_path: Path) -> None:
    work, layout = _copy(baked, tmp_path)
    exported = _envkit("export", "--image", f"oci:image:{baked[1]}", "--to", "json", cwd=work)
    assert exported.returncode == 0 and json.loads(exported.stdout)["platform"] == "linux-64", exported.output
    verified = _envkit("verify", "--image", f"oci:image:{baked[1]}", "--json", cwd=work)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True, verified.output


@pytest.mark.parametrize("which", ["manifest", "config"])
@pytest.mark.parametrize("spoiled", sorted(SPOILED))
def test_a_blob_that_is_not_a_file_of_the_layout_is_an_error_naming_it(
    baked: tuple[Path, str], tmp_path: Path, which: str, spoiled: str
) -> None:
    # Before, export: a FIFO waited for ever, /dev/zero was read until memory ran out (a MemoryError under this test's
    # cap; killed by the OOM killer without), a directory or a missing blob was a traceback, a symlink was followed.
    work, layout = _copy(baked, tmp_path)
    blob = _blob(layout, which)
    elsewhere = tmp_path / "elsewhere"
    shutil.copyfile(blob, elsewhere)
    make, said = SPOILED[spoiled]
    make(blob, elsewhere)
    result = _envkit("export", "--image", f"oci:image:{baked[1]}", "--to", "json", cwd=work)
    assert result.returncode == 2 and result.stdout == "", result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: oci:image:{baked[1]}: "), result.stderr
    assert said in errors[0] and blob.name in errors[0], errors[0]
    verified = _envkit("verify", "--image", f"oci:image:{baked[1]}", "--json", cwd=work)  # (it copies blobs in first)
    assert verified.returncode == 2 and json.loads(verified.stdout)["error"]["exit_code"] == 2, verified.output


def test_a_blob_over_the_manifest_cap_is_not_read_whole(baked: tuple[Path, str], tmp_path: Path) -> None:
    work, layout = _copy(baked, tmp_path)
    blob = _blob(layout, "manifest")
    with blob.open("ab") as f:
        f.truncate(8 << 20)
    result = _envkit("export", "--image", f"oci:image:{baked[1]}", "--to", "json", cwd=work)
    assert result.returncode == 2 and "over the 4 MiB limit for a manifest or config" in result.stderr, result.output


@pytest.mark.parametrize("size", [10, 10**15])
def test_export_refuses_a_descriptor_whose_size_is_not_its_blobs(baked: tuple[Path, str], tmp_path: Path, size: int) -> None:
    # Before: export read the record of an image whose index lied about its manifest's size; verify refused it.
    work, layout = _copy(baked, tmp_path)
    index = json.loads((layout / "index.json").read_text())
    actual = index["manifests"][0]["size"]
    index["manifests"][0]["size"] = size
    (layout / "index.json").write_text(json.dumps(index))
    for args in (("export", "--to", "json"), ("verify", "--json")):
        result = _envkit(args[0], "--image", f"oci:image:{baked[1]}", *args[1:], cwd=work)
        assert result.returncode == 2 and f"is {actual} bytes, its descriptor says {size}" in result.stderr, result.output


@pytest.mark.parametrize(
    "entry, said",
    [
        ({"annotations": ["org.opencontainers.image.ref.name"]}, "malformed descriptor (annotations is not an object)"),
        ("sha256:" + "0" * 64, "malformed descriptor (a JSON str, not an object)"),
    ],
)
def test_an_index_entry_of_the_wrong_shape_is_an_error_naming_index_json(
    baked: tuple[Path, str], tmp_path: Path, entry: object, said: str
) -> None:
    # Before: annotations as a list was AttributeError: 'list' object has no attribute 'items', a traceback.
    work, layout = _copy(baked, tmp_path)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0] = {**index["manifests"][0], **entry} if isinstance(entry, dict) else entry
    (layout / "index.json").write_text(json.dumps(index))
    for args in (("export", "--to", "json"), ("verify", "--json")):
        result = _envkit(args[0], "--image", "oci:image", *args[1:], cwd=work)
        assert result.returncode == 2, result.output
        assert f"error: {layout.relative_to(work)}/index.json: {said}" in result.stderr, result.stderr


def test_a_docker_archive_verifies(baked: tuple[Path, str], tmp_path: Path) -> None:
    work, _layout = _copy(baked, tmp_path)
    assert _envkit("bake", "-q", "--docker-archive", "image.tar", cwd=work).returncode == 0
    result = _envkit("verify", "--image", "docker-archive:image.tar", cwd=work)
    assert result.returncode == 0 and "matches conda-lock.yml (linux-64)" in result.stdout, result.output


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda p: p.symlink_to("/dev/zero"), "the docker archive is not a regular file (a directory, a pipe, a device?)"),
        (lambda p: os.mkfifo(p), "the docker archive is not a regular file (a directory, a pipe, a device?)"),
        (lambda p: p.mkdir(), "the docker archive is not a regular file (a directory, a pipe, a device?)"),
        (lambda p: p.write_bytes(b"not a tar" * 100), "not a tar archive (file could not be opened successfully)"),
    ],
    ids=["dev-zero", "fifo", "directory", "not-a-tar"],
)
def test_a_docker_archive_that_is_no_file_or_no_tar_is_one_error_naming_it(
    baked: tuple[Path, str], tmp_path: Path, make: Callable[[Path], None], said: str
) -> None:
    # Before: /dev/zero and a FIFO nobody writes were waited on without end (past this test's deadline); a file
    # that is no tar printed tarfile's message, a line for each compression it tried.
    work, _layout = _copy(baked, tmp_path)
    make(work / "image.tar")
    result = _envkit("verify", "--image", "docker-archive:image.tar", "--json", cwd=work)
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["exit_code"] == 2, result.output
    assert result.stderr.splitlines()[0] == f"error: image.tar: {said}", result.stderr
    assert len(result.stderr.splitlines()) == 2, result.stderr
