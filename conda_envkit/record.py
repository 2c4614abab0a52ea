"""The bake record: what was built, from what, with which digests (input to `envkit export`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conda_envkit import __version__
from conda_envkit.errors import EnvkitError
from conda_envkit.lockfile import lock_hash, packages_for, platform_lock_hash, read_lockfile, write_if_changed
from conda_envkit.lockmodel import LockFile as Lockfile

if TYPE_CHECKING:
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
            "packages": [dict(p) for p in image.packages],
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


ENVIRONMENT_SCHEMA = "envkit.environment/1"


class RecordError(EnvkitError):
    """A record that cannot be read or lacks what an export needs."""


@dataclass(frozen=True)
class EnvironmentRecord:
    """What an ML run needs to know about its environment (schema `envkit.environment/1`).

    Built from a lock, a bake record, an image's labels, or the running environment.
    Fields the source cannot know (an image digest from a bare lock) are None.
    """

    source: str
    lock_hash: str
    platform: str | None = None
    platform_lock_hash: str | None = None
    cuda: str | None = None
    cuda_version: str | None = None
    blas: str | None = None
    image_digest: str | None = None
    image: str | None = None
    tags: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # name=version=build, sorted
    lockfile: str | None = None
    envkit_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"], data["packages"] = list(self.tags), list(self.packages)
        return {"schema": ENVIRONMENT_SCHEMA, **data}

    def flat(self) -> dict[str, str]:
        """`envkit.*` keys with string values, for run tags, configs and CI outputs (unknowns left out)."""
        values = {
            "lock_hash": self.lock_hash,
            "platform": self.platform,
            "platform_lock_hash": self.platform_lock_hash,
            "cuda": self.cuda,
            "cuda_version": self.cuda_version,
            "blas": self.blas,
            "image_digest": self.image_digest,
            "image": self.image,
            "packages": str(len(self.packages)) if self.packages else None,
            # `envkit.version`, so that `--to env` gives ENVKIT_VERSION (not ENVKIT_ENVKIT_VERSION).
            "version": self.envkit_version,
        }
        return {f"envkit.{k}": v for k, v in values.items() if v}


def _custom(lockfile: Lockfile, platform: str, key: str) -> str | None:
    value = (lockfile.metadata.custom_metadata or {}).get(f"envkit.{platform}.{key}")
    return value if value not in (None, "") else None


def _pick_platform(available: list[str], platform: str | None, where: str) -> str | None:
    if platform is not None:
        if platform not in available:
            raise RecordError(
                f"{where}: platform {platform} is not there (it has {', '.join(available)})", hint="pass -p with one of those"
            )
        return platform
    return available[0] if len(available) == 1 else None


def record_from_lock(path: Path, platform: str | None = None) -> EnvironmentRecord:
    """The record of a lock file (one platform's details if it has one platform or `platform` is given)."""
    lockfile = read_lockfile(path)
    chosen = _pick_platform(sorted(lockfile.metadata.platforms), platform, str(path))
    if chosen is None:
        return EnvironmentRecord(source="lock", lock_hash=str(lock_hash(lockfile)), lockfile=str(path))
    # conda packages as name=version=build, pip packages as name==version (pip's own pin syntax).
    packages = tuple(
        sorted(
            f"{p.name}=={p.version}" if p.manager == "pip" else f"{p.name}={p.version}={p.build}" for p in packages_for(lockfile, chosen)
        )
    )
    return EnvironmentRecord(
        source="lock",
        lock_hash=str(lock_hash(lockfile)),
        platform=chosen,
        platform_lock_hash=str(platform_lock_hash(lockfile, chosen)),
        cuda=_custom(lockfile, chosen, "cuda"),
        cuda_version=_custom(lockfile, chosen, "cuda-version"),
        blas=_custom(lockfile, chosen, "blas"),
        packages=packages,
        lockfile=str(path),
    )


def _label(labels: dict[str, str], key: str) -> str | None:
    value = labels.get(f"dev.envkit.{key}")
    return value if value not in (None, "", "unknown") else None


def record_from_labels(labels: dict[str, str], source: str, image_digest: str | None, image: str | None) -> EnvironmentRecord:
    """The record of an image, from its envkit labels."""
    if "dev.envkit.lock-hash" not in labels:
        raise RecordError(f"{image or 'the image'} has no dev.envkit.lock-hash label", hint="was it baked by envkit?")
    return EnvironmentRecord(
        source=source,
        lock_hash=labels["dev.envkit.lock-hash"],
        platform=_label(labels, "platform"),
        platform_lock_hash=_label(labels, "platform-lock-hash"),
        cuda=_label(labels, "cuda"),
        cuda_version=_label(labels, "cuda-version"),
        blas=_label(labels, "blas"),
        image_digest=image_digest,
        image=image,
    )


def record_from_bake(path: Path, platform: str | None = None) -> EnvironmentRecord:
    """The record of a bake (bake.json): image digest and reference, plus one platform's details."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: bake record not found", hint="run `envkit bake` first, or pass --record") from None
    except ValueError as exc:
        raise RecordError(f"{path}: invalid JSON ({exc})", hint="re-run `envkit bake` to write it again") from None
    if data.get("schema") != BAKE_RECORD_SCHEMA:
        raise RecordError(f"{path}: not an envkit bake record (schema {data.get('schema')!r})", hint=f"expected {BAKE_RECORD_SCHEMA}")
    for key in ("lock_hash", "image", "platforms"):
        if key not in data:
            raise RecordError(f"{path}: missing field {key!r}", hint="re-run `envkit bake` to write a complete record")
    chosen = _pick_platform(sorted(data["platforms"]), platform, str(path))
    references = data.get("references") or []
    image = references[0] if references else None
    if chosen is None:
        return EnvironmentRecord(
            "bake", data["lock_hash"], image_digest=data["image"]["digest"], image=image, tags=tuple(data.get("tags", []))
        )
    details = data["platforms"][chosen]
    labels = details.get("labels") or {}
    record = record_from_labels(labels, "bake", data["image"]["digest"], image)
    packages = tuple(sorted(_package_pin(p) for p in details.get("packages", [])))
    return EnvironmentRecord(
        **{**asdict(record), "tags": tuple(data.get("tags", [])), "packages": packages, "lockfile": data.get("lockfile")}
    )


def _package_pin(package: dict[str, str]) -> str:
    """A bake record's package as name=version=build (conda) or name==version (pip, which has no build)."""
    if package.get("manager") == "pip":
        return f"{package['name']}=={package['version']}"
    return f"{package['name']}={package['version']}={package['build']}"


def record_from_layout(path: Path, name: str | None = None, platform: str | None = None) -> EnvironmentRecord:
    """The record of an image in a local OCI layout, from its labels."""
    from conda_envkit.oci.blobs import OCI_INDEX
    from conda_envkit.oci.image import oci_platform
    from conda_envkit.oci.layout import layout_store, select_ref
    from conda_envkit.oci.transfer import select_platform

    store = layout_store(path)
    top = select_ref(path, name)
    document = store.read_json(top.digest)
    if top.media_type == OCI_INDEX:
        document = store.read_json(select_platform(document, oci_platform(platform or "linux-64"), str(path)).digest)
    labels = (store.read_json(document["config"]["digest"]).get("config") or {}).get("Labels") or {}
    return record_from_labels(labels, "image", top.digest, f"oci:{path}" + (f":{name}" if name else ""))
