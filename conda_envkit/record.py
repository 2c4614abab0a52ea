"""The bake record: what was built, from what, with which digests (input to `envkit export`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conda_envkit import __version__
from conda_envkit.errors import EnvkitError
from conda_envkit.labels import ImageLabels, label_key
from conda_envkit.lockfile import lock_hash, packages_for, platform_lock_hash, read_lockfile, write_if_changed
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.platforms import default_platform

if TYPE_CHECKING:
    from conda_envkit.oci.blobs import BlobStore

BAKE_RECORD_SCHEMA = "envkit.bake/1"


@dataclass(frozen=True)
class PlatformRecord:
    """One platform's image in a bake record."""

    manifest_digest: str
    config_digest: str
    platform_lock_hash: str
    cuda: str  # as labelled: a driver version, `none`, or `unknown`
    cuda_version: str
    blas: str
    base: dict[str, Any]  # reference, digest, layers (count)
    layers: tuple[dict[str, Any], ...]  # digest, diff_id, size, media_type, packages
    labels: dict[str, str]
    packages: tuple[dict[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"], data["packages"] = [dict(x) for x in self.layers], [dict(p) for p in self.packages]
        data["labels"] = dict(sorted(self.labels.items()))
        return data


@dataclass(frozen=True)
class BakeRecord:
    """What `envkit bake` built, from what, with which digests (schema `envkit.bake/1`, in docs/bake.md)."""

    lockfile: str | None
    lock_hash: str
    image: dict[str, Any]  # digest, media_type, size of the manifest or index
    prefix: str | None
    tags: tuple[str, ...]
    references: tuple[str, ...]
    outputs: dict[str, str]
    platforms: dict[str, dict[str, Any]]  # PlatformRecord.to_json() per platform, as read
    push: dict[str, int] | None = None
    envkit_version: str = __version__
    cache: dict[str, Any] | None = None  # --cache-from / --cache-to: what was read, used, downloaded, written

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": BAKE_RECORD_SCHEMA,
            "envkit_version": self.envkit_version,
            "lockfile": self.lockfile,
            "lock_hash": self.lock_hash,
            "image": self.image,
            "prefix": self.prefix,
            "tags": list(self.tags),
            "references": list(self.references),
            "outputs": self.outputs,
            "platforms": self.platforms,
        }
        if self.push is not None:
            data["push"] = self.push
        if self.cache is not None:
            data["cache"] = self.cache
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> BakeRecord:
        """A bake record read from JSON, checked: an error names `where` and what is wrong."""
        if not isinstance(data, dict) or data.get("schema") != BAKE_RECORD_SCHEMA:
            schema = data.get("schema") if isinstance(data, dict) else None
            raise RecordError(f"{where}: not an envkit bake record (schema {schema!r})", hint=f"expected {BAKE_RECORD_SCHEMA}")
        for key in ("lock_hash", "image", "platforms"):
            if key not in data:
                raise RecordError(f"{where}: missing field {key!r}", hint="re-run `envkit bake` to write a complete record")
        return cls(
            lockfile=data.get("lockfile"),
            lock_hash=data["lock_hash"],
            image=data["image"],
            prefix=data.get("prefix"),
            tags=tuple(data.get("tags") or ()),
            references=tuple(data.get("references") or ()),
            outputs=data.get("outputs") or {},
            platforms=data["platforms"],
            push=data.get("push"),
            envkit_version=data.get("envkit_version", ""),
            cache=data.get("cache"),
        )


def write_record(path: Path, record: BakeRecord) -> None:
    """Write the record atomically (pretty, sorted keys)."""
    write_if_changed(path, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")


def read_bake_record(path: Path) -> BakeRecord:
    """The bake record at `path` (bake.json), checked."""
    from conda_envkit.inputs import read_input

    if not path.exists():
        raise RecordError(f"{path}: bake record not found", hint="run `envkit bake` first, or pass --record")
    try:
        data = json.loads(read_input(path, "bake record").text)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"{path}: invalid JSON ({exc})", hint="re-run `envkit bake` to write it again") from None
    return BakeRecord.from_json(data, str(path))


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvironmentRecord:
        """The record `to_json` wrote (schema `envkit.environment/1`)."""
        if data.get("schema", ENVIRONMENT_SCHEMA) != ENVIRONMENT_SCHEMA:
            raise RecordError(f"not an envkit environment record (schema {data.get('schema')!r})", hint=f"expected {ENVIRONMENT_SCHEMA}")
        fields = {k: v for k, v in data.items() if k != "schema"}
        return cls(**{**fields, "tags": tuple(fields.get("tags") or ()), "packages": tuple(fields.get("packages") or ())})

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


def _lock_fact(lockfile: Lockfile, platform: str, name: str) -> str | None:
    """cuda, cuda_version or blas as the record spells it: the value, `none` if the lock recorded none, None if it recorded nothing."""
    facts = lockfile.envkit.for_platform(platform) if lockfile.envkit else None
    if facts is None:
        return None
    value = {"cuda": facts.cuda_driver, "cuda_version": facts.cuda_version, "blas": facts.blas}[name]
    return value or "none"


def _pick_platform(available: list[str], platform: str | None, where: str) -> str | None:
    """The platform whose details a record carries: `platform`, else the only one, else this machine's (the
    environment a run on this machine uses); None if this machine's is not there (the record of the whole lock)."""
    if platform is not None:
        if platform not in available:
            raise RecordError(
                f"{where}: platform {platform} is not there (it has {', '.join(available)})", hint="pass -p with one of those"
            )
        return platform
    return default_platform(available)


def record_from_lock(path: Path, platform: str | None = None) -> EnvironmentRecord:
    """The record of a lock file (one platform's details if it has one platform or `platform` is given)."""
    lockfile = read_lockfile(path)
    chosen = _pick_platform(sorted(lockfile.metadata.platforms), platform, str(path))
    if chosen is None:
        return EnvironmentRecord(source="lock", lock_hash=str(lock_hash(lockfile)), lockfile=str(path))
    packages = _package_pins(lockfile, chosen)
    return EnvironmentRecord(
        source="lock",
        lock_hash=str(lock_hash(lockfile)),
        platform=chosen,
        platform_lock_hash=str(platform_lock_hash(lockfile, chosen)),
        cuda=_lock_fact(lockfile, chosen, "cuda"),
        cuda_version=_lock_fact(lockfile, chosen, "cuda_version"),
        blas=_lock_fact(lockfile, chosen, "blas"),
        packages=packages,
        lockfile=str(path),
    )


def record_from_labels(labels: dict[str, str], source: str, image_digest: str | None, image: str | None) -> EnvironmentRecord:
    """The record of an image, from its envkit labels."""
    envkit = ImageLabels.from_json(labels)
    if envkit is None or envkit.lock_hash is None:
        raise RecordError(f"{image or 'the image'} has no {label_key('lock-hash')} label", hint="was it baked by envkit?")

    def fact(value: str | None) -> str | None:
        # The record, like the lock, spells a recorded "no CUDA/BLAS" as `none`.
        return value or ("none" if envkit.recorded else None)

    return EnvironmentRecord(
        source=source,
        lock_hash=envkit.lock_hash,
        platform=envkit.platform,
        platform_lock_hash=envkit.platform_lock_hash,
        cuda=fact(envkit.cuda),
        cuda_version=fact(envkit.cuda_version),
        blas=fact(envkit.blas),
        image_digest=image_digest,
        image=image,
    )


def record_from_bake(path: Path, platform: str | None = None) -> EnvironmentRecord:
    """The record of a bake (bake.json): image digest and reference, plus one platform's details."""
    bake = read_bake_record(path)
    chosen = _pick_platform(sorted(bake.platforms), platform, str(path))
    image = bake.references[0] if bake.references else None
    if chosen is None:
        return EnvironmentRecord("bake", bake.lock_hash, image_digest=bake.image["digest"], image=image, tags=bake.tags)
    details = bake.platforms[chosen]
    labels = details.get("labels") or {}
    record = record_from_labels(labels, "bake", bake.image["digest"], image)
    packages = tuple(sorted(_package_pin(p) for p in details.get("packages", [])))
    return EnvironmentRecord(**{**asdict(record), "tags": bake.tags, "packages": packages, "lockfile": bake.lockfile})


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
    reference = f"oci:{path}" + (f":{name}" if name else "")
    record = record_from_labels(labels, "image", top.digest, reference)
    envkit = ImageLabels.from_json(labels)
    layers = document.get("layers")
    if record.platform is None or envkit is None or not envkit.prefix or not isinstance(layers, list):
        return record
    lock = _baked_lock(store, layers, envkit.prefix, reference)
    if lock is None:
        return record
    if str(lock_hash(lock)) != record.lock_hash:  # the labels and the lock copy must tell the same story
        raise RecordError(
            f"{reference}: the lock inside the image does not match its {label_key('lock-hash')} label",
            hint="the image was not baked by envkit, or was tampered with; do not trust its record",
        )
    return EnvironmentRecord(**{**asdict(record), "packages": _package_pins(lock, record.platform)})


def _package_pins(lockfile: Lockfile, platform: str) -> tuple[str, ...]:
    # conda packages as name=version=build, pip packages as name==version (pip's own pin syntax).
    pins = (f"{p.name}=={p.version}" if p.manager == "pip" else f"{p.name}={p.version}={p.build}" for p in packages_for(lockfile, platform))
    return tuple(sorted(pins))


def _baked_lock(store: BlobStore, layers: list[Any], prefix: str, where: str) -> Lockfile | None:
    """The lock copy bake put in the image (`<prefix>/conda-meta/envkit/conda-lock.yml`, in its environment
    metadata layer: the top layer, or the one under a recipe's files). Layers are read as any image's are:
    digests checked, within the entry and size caps; the copy is capped like any input."""
    import posixpath
    import tarfile

    from conda_envkit.inputs import MAX_INPUT_BYTES
    from conda_envkit.installed_state import LOCK_COPY
    from conda_envkit.lockmodel import parse_lock_text
    from conda_envkit.oci.blobs import check_digest
    from conda_envkit.oci.safety import layer_members, open_layer

    target = f"{prefix.strip('/')}/{LOCK_COPY.as_posix()}"
    for layer in reversed(layers[-2:]):
        digest = check_digest(str(layer.get("digest") if isinstance(layer, dict) else ""), where)
        with open_layer(store.verified_path(digest)) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in layer_members(tar, where):
                if posixpath.normpath(member.name.lstrip("./").lstrip("/")) != target or not member.isfile():
                    continue
                if member.size > MAX_INPUT_BYTES:
                    raise RecordError(f"{where}: {target} is {member.size} bytes", hint="the image was not baked by envkit")
                data = tar.extractfile(member)
                text = data.read().decode("utf-8", "replace") if data is not None else ""
                return parse_lock_text(text, Path(f"{where}:/{target}"))
    return None
