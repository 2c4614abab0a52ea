"""Repack an OCI layout into a trojaned but internally consistent image, for the hostile suite.

`repack_layout` rewrites layers and config the way an attacker with push rights would:
every digest, size and diff_id recomputed, so the image is valid and its embedded
records agree with its (changed) files. Only a check against the lock can tell.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Entry:
    """One tar entry of a layer: its header and, for a regular file, its bytes."""

    info: tarfile.TarInfo
    data: bytes = b""


Layers = list[list[Entry]]


def _read_layer(blob: bytes) -> list[Entry]:
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    entries = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            entries.append(Entry(info, data))
    return entries


def _write_layer(entries: list[Entry]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            e.info.size = len(e.data) if e.info.isfile() else 0
            tar.addfile(e.info, io.BytesIO(e.data) if e.info.isfile() else None)
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def _put(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.partition(":")[2]).read_bytes()


def manifest_of(layout: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index entry, manifest) of `tag` in `layout`."""
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag)
    return entry, json.loads(_blob(layout, entry["digest"]))


def _put_layers(layout: Path, layers: Layers) -> tuple[list[dict[str, Any]], list[str]]:
    """Write each layer (entries verbatim, gzip) as a blob of `layout`: (descriptors, diff_ids)."""
    descriptors, diff_ids = [], []
    for entries in layers:
        blob, diff_id = _write_layer(entries)
        digest, size = _put(layout, blob)
        descriptors.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size})
        diff_ids.append(diff_id)
    return descriptors, diff_ids


def repack_layout(layout: Path, tag: str, edit: Callable[[Layers, dict[str, Any]], None]) -> None:
    """Apply `edit(layers, config)` to image `tag` of `layout` and store the result under the same tag."""
    index = json.loads((layout / "index.json").read_text())
    entry, manifest = manifest_of(layout, tag)
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    layers = [_read_layer(_blob(layout, d["digest"])) for d in manifest["layers"]]
    edit(layers, config)
    descriptors, diff_ids = _put_layers(layout, layers)
    config["rootfs"]["diff_ids"] = diff_ids
    config["history"] = (config.get("history") or [])[: len(layers)] + [
        {"created_by": "envkit bake: extra", "comment": "envkit bake"} for _ in range(len(layers) - len(config.get("history") or []))
    ]
    config_digest, config_size = _put(layout, json.dumps(config).encode())
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": config_size}
    manifest["layers"] = descriptors
    digest, size = _put(layout, json.dumps(manifest).encode())
    for m in index["manifests"]:
        if m is not None and m.get("digest") == entry["digest"]:
            m["digest"], m["size"] = digest, size
    (layout / "index.json").write_text(json.dumps(index))


def rewrite_config(layout: Path, tag: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply `edit(config)` to image `tag` of `layout`, layers untouched: a config that may lie about them."""
    index = json.loads((layout / "index.json").read_text())
    entry, manifest = manifest_of(layout, tag)
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    edit(config)
    config_digest, config_size = _put(layout, json.dumps(config).encode())
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": config_size}
    digest, size = _put(layout, json.dumps(manifest).encode())
    for m in index["manifests"]:
        if m is not None and m.get("digest") == entry["digest"]:
            m["digest"], m["size"] = digest, size
    (layout / "index.json").write_text(json.dumps(index))


def new_file(name: str, data: bytes, mode: int = 0o644) -> Entry:
    """A regular-file entry for a layer."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = mode, 0
    return Entry(info, data)


def find(layers: Layers, suffix: str) -> Entry:
    """The last entry whose name ends with `suffix`."""
    return [e for layer in layers for e in layer if e.info.name.endswith(suffix)][-1]


def symlink(name: str, target: str) -> Entry:
    """A symlink entry for a layer."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
    return Entry(info)


def directory(name: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    return Entry(info)


def write_base_layout(layout: Path, layers: Layers, tag: str = "base") -> None:
    """An OCI layout holding one linux/amd64 image made of `layers` (entries written verbatim)."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors, diff_ids = _put_layers(layout, layers)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "hostile base"} for _ in layers],
    }
    config_digest, config_size = _put(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }
    digest, size = _put(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": manifest["mediaType"],
                "digest": digest,
                "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
