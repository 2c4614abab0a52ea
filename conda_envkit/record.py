"""The bake record: what was built, from what, with which digests (input to `envkit export`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conda_envkit import __version__
from conda_envkit.lockfile import write_if_changed
from conda_envkit.oci.registry import PushStats

BAKE_RECORD_SCHEMA = "envkit.bake/1"


def bake_record(
    baked: Any,
    lockfile_path: Path,
    options: Any,
    references: list[str],
    tags: list[str],
    outputs: dict[str, str],
    push: PushStats | None,
) -> dict[str, Any]:
    """The record as a JSON-ready dict (schema `envkit.bake/1`, documented in docs/bake.md)."""
    platforms = {}
    for image in baked.platforms:
        platforms[image.platform] = {
            "manifest_digest": image.manifest.digest,
            "config_digest": image.config.digest,
            "platform_lock_hash": image.labels["dev.envkit.platform-lock-hash"],
            "cuda": image.labels["dev.envkit.cuda"],
            "cuda_version": image.labels["dev.envkit.cuda-version"],
            "blas": image.labels["dev.envkit.blas"],
            "base": {"reference": image.base.reference, "digest": image.base.digest, "layers": len(image.base.layers)},
            "layers": [
                {
                    "digest": layer.descriptor.digest,
                    "diff_id": layer.diff_id,
                    "size": layer.descriptor.size,
                    "media_type": layer.descriptor.media_type,
                    "packages": list(packages),
                }
                for layer, packages in zip(image.layers, image.layer_packages, strict=True)
            ],
            "labels": dict(sorted(image.labels.items())),
        }
    record: dict[str, Any] = {
        "schema": BAKE_RECORD_SCHEMA,
        "envkit_version": __version__,
        "lockfile": str(lockfile_path),
        "lock_hash": baked.lock_hash,
        "image": {"digest": baked.top.digest, "media_type": baked.top.media_type, "size": baked.top.size},
        "prefix": options.in_image_prefix,
        "tags": tags,
        "references": references,
        "outputs": outputs,
        "platforms": platforms,
    }
    if push is not None:
        record["push"] = {
            "uploaded_blobs": len(push.uploaded),
            "skipped_blobs": len(push.skipped),
            "mounted_blobs": len(push.mounted),
            "bytes_uploaded": push.bytes_uploaded,
        }
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write the record atomically (pretty, sorted keys)."""
    write_if_changed(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
