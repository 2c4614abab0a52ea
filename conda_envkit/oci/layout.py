"""OCI image layouts on disk: written whole (temp directory, then rename), read with checks."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conda_envkit.files import replace_directory, staging_dir, write_error
from conda_envkit.oci.blobs import OCI_INDEX, BlobStore, Descriptor, OciError, canonical_json, json_document

REF_NAME = "org.opencontainers.image.ref.name"


def link_or_copy(source: Path, target: Path) -> None:
    """A blob of the cache into an output: hard-linked if it is this user's regular file, else copied. Never a
    symlink, nor a link to a file someone else may change under the output (the cache is shared)."""
    st = os.lstat(source)
    if not stat.S_ISREG(st.st_mode):
        raise OciError(f"{source} is not a regular file", hint=f"delete {source} (or the whole cache) and bake again")
    if st.st_uid == os.geteuid():
        try:
            os.link(source, target, follow_symlinks=False)
            return
        except OSError:
            pass
    shutil.copyfile(source, target, follow_symlinks=False)


_LAYOUT_ENTRIES = frozenset({"oci-layout", "index.json", "blobs"})


def check_layout_target(path: Path, setting: str = "--oci") -> Path:
    """`path` (absolute) if an image layout may be written there: nothing there yet, an empty directory, or an
    OCI image layout (which is replaced whole). Anything else is refused before any work, never deleted: a
    directory of other files, a regular file, a symlink, or the current directory or one above it."""
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        raise OciError(f"{setting} {path} is a symbolic link", hint="pass the directory it points to, or a new directory")
    here, real = Path.cwd().resolve(), path.resolve()
    if real == here or real in here.parents:
        raise OciError(f"{setting} {path} is the current directory or holds it", hint="pass a new directory for the image layout")
    if not os.path.lexists(path):
        return path
    if not path.is_dir():
        raise OciError(f"{setting} {path} exists and is not a directory", hint="pass a new directory for the image layout")
    names = {entry.name for entry in path.iterdir()}
    if names and not {"oci-layout", "index.json"} <= names:  # a layout (envkit's, skopeo's, umoci's, buildx's)
        shown = ", ".join(sorted(names - _LAYOUT_ENTRIES)[:3]) or "no oci-layout or index.json"
        raise OciError(
            f"{setting} {path} exists and is not an OCI image layout ({shown})",
            hint="pass a new or empty directory; an existing image layout is replaced, anything else is left alone",
        )
    return path


def write_layout(path: Path, store: BlobStore, blobs: Iterable[str], manifests: list[Descriptor]) -> None:
    """Write an OCI layout at `path` holding `blobs` and an index of `manifests`.

    The layout is assembled in a sibling temp directory and renamed into place, so
    `path` holds either the previous layout or the complete new one, never a mix. Only a
    layout is ever replaced (check_layout_target).
    """
    path = check_layout_target(path)
    staging = staging_dir(path, ".tmp", "--oci")
    try:
        (staging / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        blob_dir = staging / "blobs" / "sha256"
        blob_dir.mkdir(parents=True)
        for digest in sorted(set(blobs)):
            link_or_copy(store.verified_path(digest), blob_dir / digest.partition(":")[2])
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [m.to_json() for m in manifests]}
        (staging / "index.json").write_bytes(canonical_json(index))
        replace_directory(staging, path)  # the old layout or the new one at every moment, even if killed
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(path, exc, "image layout", "--oci") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_index(path: Path) -> dict[str, Any]:
    """The index.json of an OCI layout, with errors that name the layout.

    A layout from elsewhere (`--base oci:DIR`) is read like any input: each file UTF-8, capped,
    a regular file, and a JSON object.
    """
    from conda_envkit.inputs import read_input

    documents = []
    for name in ("oci-layout", "index.json"):
        file = path / name
        if not os.path.lexists(file):
            raise OciError(
                f"{path}: not an OCI image layout (no oci-layout or index.json)",
                hint="pass a directory written by envkit, skopeo or buildah",
            )
        documents.append(json_document(read_input(file, "OCI layout file").text.encode("utf-8"), str(file), name))
    layout, index = documents
    if layout.get("imageLayoutVersion") != "1.0.0":
        raise OciError(f"{path}: unsupported layout version {layout.get('imageLayoutVersion')!r}", hint="expected 1.0.0")
    return index


def select_ref(path: Path, ref: str | None) -> Descriptor:
    """The descriptor in a layout's index named `ref` (or the only one when `ref` is None)."""
    manifests = [Descriptor.from_json(m, f"{path}/index.json") for m in read_index(path).get("manifests", [])]
    if ref is not None:
        named = [m for m in manifests if m.annotations.get(REF_NAME) == ref]
        if not named:
            names = sorted(m.annotations.get(REF_NAME, "?") for m in manifests)
            raise OciError(
                f"{path}: no image named {ref!r} (its names: {', '.join(repr(n) for n in names) or 'none'})",
                hint="pass oci:DIR:NAME with one of those",
            )
        return named[0]
    if len(manifests) != 1:
        raise OciError(f"{path}: holds {len(manifests)} images", hint="name one with oci:DIR:NAME")
    return manifests[0]


def layout_store(path: Path) -> BlobStore:
    """The blobs of a layout, as a read-only store."""
    return BlobStore(path / "blobs")
