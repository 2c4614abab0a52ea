"""The bake record: what was built, from what, with which digests (input to `envkit export`)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conda_envkit import __version__
from conda_envkit.errors import EnvkitError
from conda_envkit.labels import ImageLabels, label_key
from conda_envkit.lockfile import lock_hash, packages_for, platform_lock_hash, read_lockfile, write_if_changed
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import hosts_with_credentials
from conda_envkit.oci.reference import split_login
from conda_envkit.platforms import KNOWN_PLATFORMS, default_platform

if TYPE_CHECKING:
    from conda_envkit.oci.blobs import BlobStore, Descriptor

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
        """A bake record read from JSON, checked: an error names `where`, the field and what is wrong.

        A record may come from someone else (a pull request): every field has its type, hashes and digests
        their form, no text holds a control character, and each platform's lock-hash label is the record's.
        """
        if not isinstance(data, dict) or data.get("schema") != BAKE_RECORD_SCHEMA:
            schema = data.get("schema") if isinstance(data, dict) else None
            raise RecordError(f"{where}: not an envkit bake record (schema {schema!r})", hint=f"expected {BAKE_RECORD_SCHEMA}")
        for key in ("lock_hash", "image", "platforms"):
            if key not in data:
                raise RecordError(f"{where}: missing field {key!r}", hint="re-run `envkit bake` to write a complete record")
        _check_bake_record(data, where)
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


_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}")  # a CUDA or envkit version, a BLAS, `none`
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._\-]{0,127}")  # the OCI distribution spec's tag
MAX_TEXT = 4096  # a path or an image reference; MLflow takes 8,000 characters per tag
_CREATED = "org.opencontainers.image.created"
_CREATED_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")  # the SBOM's timestamp is read in this form


def _malformed(where: str, field: str, value: object, what: str) -> RecordError:
    return RecordError(
        f"{where}: {field} {str(value)[:80]!r} {what}",
        hint="the record was not written by envkit, or was edited or crafted (to forge outputs); bake again and export that record",
    )


def _check_text(value: object, where: str, field: str) -> None:
    """Every string in `value` (keys too) printable: no line break, control character or unpaired surrogate."""
    if isinstance(value, str):
        if not value.isprintable():
            raise _malformed(where, field, value, "holds a line break, control character or unpaired surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where, f"{field} key")
            _check_text(item, where, f"{field}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, where, f"{field}[{i}]")


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, field: str = "") -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        spelled = {dict: "an object", str: "a string", list: "a list", int: "an integer", type(None): "absent"}
        names = " or ".join(spelled.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _malformed(where, field or key, value, f"is not {names}")
    return value


def _check_bake_record(data: dict[str, Any], where: str) -> None:
    _check_text(data, where, "record")
    if not _HASH.fullmatch(_typed(data, "lock_hash", str, where)):
        raise _malformed(where, "lock_hash", data["lock_hash"], "is not a lock hash (sha256:<64 hex digits>)")
    image = _typed(data, "image", dict, where)
    if not _HASH.fullmatch(_typed(image, "digest", str, where, "image.digest")):
        raise _malformed(where, "image.digest", image["digest"], "is not a sha256 digest")
    _typed(image, "media_type", str, where, "image.media_type")
    if _typed(image, "size", int, where, "image.size") < 0:
        raise _malformed(where, "image.size", image["size"], "is negative")
    for key in ("lockfile", "prefix"):
        _typed(data, key, (str, type(None)), where)
    for key in ("tags", "references"):
        for i, item in enumerate(_typed(data, key, (list, type(None)), where) or []):
            if not isinstance(item, str) or len(item) > MAX_TEXT or (key == "tags" and not _TAG.fullmatch(item)):
                raise _malformed(where, f"{key}[{i}]", item, "is not a tag" if key == "tags" else "is not an image reference")
    for key, value in (_typed(data, "outputs", (dict, type(None)), where) or {}).items():
        if not isinstance(value, str):
            raise _malformed(where, f"outputs.{key}", value, "is not a string")
    for key in ("push", "cache"):
        _typed(data, key, (dict, type(None)), where)
    platforms = _typed(data, "platforms", dict, where)
    if not platforms:
        raise _malformed(where, "platforms", platforms, "names no platform")
    for name, details in platforms.items():
        field = f"platforms.{name}"
        if name not in KNOWN_PLATFORMS:
            raise _malformed(where, "platforms", name, "is not a known platform")
        if not isinstance(details, dict):
            raise _malformed(where, field, details, "is not an object")
        if not _HASH.fullmatch(_typed(details, "manifest_digest", str, where, f"{field}.manifest_digest")):
            raise _malformed(where, f"{field}.manifest_digest", details["manifest_digest"], "is not a sha256 digest")
        labels = _typed(details, "labels", (dict, type(None)), where, f"{field}.labels") or {}
        for key, value in labels.items():
            if not isinstance(value, str):
                raise _malformed(where, f"{field}.labels.{key}", value, "is not a string")
        if labels.get(label_key("lock-hash"), data["lock_hash"]) != data["lock_hash"]:
            raise _malformed(
                where, f"{field}.labels.{label_key('lock-hash')}", labels[label_key("lock-hash")], "is not the record's lock_hash"
            )
        if labels.get(label_key("platform"), name) != name:  # (exported as that platform, with this one's packages)
            raise _malformed(where, f"{field}.labels.{label_key('platform')}", labels[label_key("platform")], f"is not {name}")
        for i, package in enumerate(_typed(details, "packages", (list, type(None)), where, f"{field}.packages") or []):
            at = f"{field}.packages[{i}]"
            if not isinstance(package, dict):
                raise _malformed(where, at, package, "is not an object")
            for key in ("name", "version", *(() if package.get("manager") == "pip" else ("build",))):
                _typed(package, key, str, where, f"{at}.{key}")
            for key in ("manager", "url", "subdir", "license", "sha256"):  # what the SBOM is made of
                _typed(package, key, (str, type(None)), where, f"{at}.{key}")
            if package.get("sha256") and not re.fullmatch(r"[0-9a-fA-F]{64}", package["sha256"]):
                raise _malformed(where, f"{at}.sha256", package["sha256"], "is not 64 hex digits")
        created = labels.get(_CREATED)
        if created is not None and not _CREATED_FORM.fullmatch(created):
            raise _malformed(where, f"{field}.labels.{_CREATED}", created, "is not a time as bake writes it (1970-01-01T00:00:00Z)")
        _typed(details, "layers", (list, type(None)), where, f"{field}.layers")


def check_environment_record(record: EnvironmentRecord, where: str) -> EnvironmentRecord:
    """`record` if every value it carries out (run tags, CI outputs, `--to env` lines, artifact names) has its
    form: hashes and digests, a known platform, plain tokens, one-line text of bounded length. Whatever it
    was read from (a bake record, an image's labels, environment.json) may be someone else's."""
    for field, items in (("tags", record.tags), ("packages", record.packages)):
        if not isinstance(items, tuple | list):
            raise _malformed(where, field, items, "is not a list")
    for field, value, pattern in (
        ("source", record.source, _TOKEN),
        ("lock hash", record.lock_hash, _HASH),
        ("platform lock hash", record.platform_lock_hash, _HASH),
        ("image digest", record.image_digest, _HASH),
        ("cuda", record.cuda, _TOKEN),
        ("cuda-version", record.cuda_version, _TOKEN),
        ("blas", record.blas, _TOKEN),
        ("envkit version", record.envkit_version or None, _TOKEN),
        *(("tag", tag, _TAG) for tag in record.tags),
    ):
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise _malformed(where, field, value, "does not have the form of one")
    if record.platform is not None and record.platform not in KNOWN_PLATFORMS:
        raise _malformed(where, "platform", record.platform, "is not a known platform")
    for field, text in (("image", record.image), ("lockfile", record.lockfile), *(("package", p) for p in record.packages)):
        if text is not None and not (isinstance(text, str) and text.isprintable() and len(text) <= MAX_TEXT):
            raise _malformed(where, field, text, f"is not one printable line of at most {MAX_TEXT} characters")
    if record.image is not None:  # (a launcher's ENVKIT_IMAGE, a record's reference: a login is never carried out)
        login, image = split_login(record.image)
        record = replace(record, image=image) if login else record
    return record


def lock_artifact(path: Path | None, lock_hash_text: str, where: str) -> Path | None:
    """The lock file to attach (to a run, an image) for a record of `lock_hash_text`: `path` if it is that lock,
    None without a path. A path from a record is someone else's choice: whatever it names must parse as a
    lock and have the record's hash, so that no other file (a key, a .env) leaves the machine."""
    if path is None:
        return None
    if not path.is_file():
        raise RecordError(f"{path}: lock file not found ({where})", hint="pass the lock the image was baked from with --lockfile")
    lockfile = read_lockfile(path)
    if str(lock_hash(lockfile)) != lock_hash_text:
        raise RecordError(
            f"{path}: its lock hash is {lock_hash(lockfile)}, not the {lock_hash_text} of {where}",
            hint="pass the lock the image was baked from with --lockfile",
        )
    holding = hosts_with_credentials(lockfile)
    if holding:  # (conda-lock writes them unless --strip-auth; envkit writes `${VAR}`, never a value)
        raise LockHoldsCredentials(
            f"{path}: its URLs hold credentials (for {', '.join(holding[:3])}): the lock file is not sent anywhere",
            hint="lock with envkit (it records ${VAR} placeholders, never their values), or conda-lock --strip-auth",
        )
    return path


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


def extra_hint(extra: str) -> str:
    """How to install one of envkit's optional extras (conda-envkit is installed from its checkout, too)."""
    return f"pip install 'conda-envkit[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


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
        unknown = sorted(set(fields) - {f.name for f in dataclass_fields(cls)})
        if unknown:
            raise RecordError(f"environment record: unknown field(s) {', '.join(unknown)}", hint=f"a {ENVIRONMENT_SCHEMA} record has none")
        for key in ("tags", "packages"):
            if not isinstance(fields.get(key) or [], list | tuple):
                raise RecordError(f"environment record: {key} is not a list", hint=f"a {ENVIRONMENT_SCHEMA} record lists them")
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
        envkit_version=envkit.envkit_version or __version__,  # (the envkit that baked the image, not the one reading it)
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
    lockfile = str(lock_of_record(path, bake.lockfile)) if bake.lockfile else None
    return EnvironmentRecord(**{**asdict(record), "tags": bake.tags, "packages": packages, "lockfile": lockfile})


def lock_of_record(record_path: Path, lockfile: str) -> Path:
    """The lock a bake record names, found from where the record is: a relative path beside the record if it is
    there (`envkit export --record train/bake.json` from the repository's root), else as the bake was given it
    (relative to where it ran). Whatever it names is checked before it is sent (`lock_artifact`)."""
    named = Path(lockfile)
    beside = record_path.parent / named
    return beside if not named.is_absolute() and beside.is_file() else named


def _package_pin(package: dict[str, str]) -> str:
    """A bake record's package as name=version=build (conda) or name==version (pip, which has no build)."""
    if package.get("manager") == "pip":
        return f"{package['name']}=={package['version']}"
    return f"{package['name']}={package['version']}={package['build']}"


def environment_from_layout(path: Path, name: str | None = None, platform: str | None = None) -> ImageEnvironment:
    """The record of an image in a local OCI layout, from its labels, and bake's lock copy inside it."""
    reference = f"oci:{path}" + (f":{name}" if name else "")
    from conda_envkit.oci.layout import select_ref

    store, _digest, document, config = read_layout_image(path, name, platform, reference)
    labels = (config.get("config") or {}).get("Labels") or {}
    record = record_from_labels(labels, "image", select_ref(path, name).digest, reference)
    if name and _TAG.fullmatch(name):  # the name it was read by is its tag (bake names a layout's images by tag)
        record = replace(record, tags=(name,))
    return with_baked_packages(record, labels, metadata_layers(labels, document), store, reference)


def metadata_layers(labels: dict[str, Any], document: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers of an image's manifest that may hold bake's lock copy (the top two: its environment metadata
    layer, or that one under a recipe's files); none if the labels name no envkit prefix."""
    envkit = ImageLabels.from_json(labels)
    layers = document.get("layers")
    if envkit is None or not envkit.prefix or not isinstance(layers, list):
        return []
    return [layer for layer in layers[-2:] if isinstance(layer, dict)]


@dataclass(frozen=True)
class ImageEnvironment:
    """An image's record, and the text of bake's lock copy inside it (None if it holds none), whose lock hash is the
    one its labels claim: the lock a tracker gets as the run's artifact when the image is all there is."""

    record: EnvironmentRecord
    lock_text: str | None = None


def with_baked_packages(
    record: EnvironmentRecord, labels: dict[str, Any], layers: list[dict[str, Any]], store: BlobStore, reference: str
) -> ImageEnvironment:
    """`record` with the packages of the lock copy inside the image (in `layers`, its metadata_layers in `store`),
    checked against the lock hash its labels claim, and that copy; `record` as it is if they hold none."""
    envkit = ImageLabels.from_json(labels)
    if envkit is None or not envkit.prefix or not layers:
        return ImageEnvironment(record)
    found = _baked_lock(store, layers, envkit.prefix, reference)
    if found is None:
        return ImageEnvironment(record)
    lock, text = found
    if str(lock_hash(lock)) != record.lock_hash:  # the labels and the lock copy must tell the same story
        raise RecordError(
            f"{reference}: the lock inside the image does not match its {label_key('lock-hash')} label",
            hint="the image was not baked by envkit, or was tampered with; do not trust its record",
        )
    if record.platform is None:
        return ImageEnvironment(record, text)
    return ImageEnvironment(EnvironmentRecord(**{**asdict(record), "packages": _package_pins(lock, record.platform)}), text)


def read_layout_image(
    path: Path, name: str | None, platform: str | None, reference: str
) -> tuple[BlobStore, str, dict[str, Any], dict[str, Any]]:
    """An image of a local OCI layout (someone else's, maybe): its store, the platform manifest's digest and
    document, and its config, each checked as a base image's is (descriptors, the config's field types)."""
    from conda_envkit.oci.blobs import DOCKER_LIST, OCI_EQUIVALENT, OCI_INDEX
    from conda_envkit.oci.image import check_base_config, oci_platform
    from conda_envkit.oci.layout import layout_store, select_ref
    from conda_envkit.oci.transfer import manifest_descriptors, select_platform

    store = layout_store(path)
    top = select_ref(path, name)
    document = _sized_json(store, top, reference)
    digest = top.digest
    if OCI_EQUIVALENT.get(top.media_type, top.media_type) == OCI_INDEX or top.media_type == DOCKER_LIST:
        chosen = select_platform(document, oci_platform(platform or "linux-64"), reference)
        digest, document = chosen.digest, _sized_json(store, chosen, reference)
    config_desc, _layers = manifest_descriptors(document, reference)
    config = check_base_config(_sized_json(store, config_desc, reference), reference)
    return store, digest, document, config


def _sized_json(store: BlobStore, desc: Descriptor, reference: str) -> Any:
    """The JSON blob `desc` names, read as `BlobStore.read_json` does, and its size the one `desc` says (as `verify
    --image` checks it: skopeo and umoci refuse a descriptor whose size lies too)."""
    document = store.read_json(desc.digest, reference)
    store.check_size(desc.digest, desc.size, f"{reference}: {desc.digest}")
    return document


def _package_pins(lockfile: Lockfile, platform: str) -> tuple[str, ...]:
    # conda packages as name=version=build, pip packages as name==version (pip's own pin syntax).
    pins = (f"{p.name}=={p.version}" if p.manager == "pip" else f"{p.name}={p.version}={p.build}" for p in packages_for(lockfile, platform))
    return tuple(sorted(pins))


def _baked_lock(store: BlobStore, layers: list[Any], prefix: str, where: str) -> tuple[Lockfile, str] | None:
    """The lock copy bake put in the image (`<prefix>/conda-meta/envkit/conda-lock.yml`, in its environment
    metadata layer: the top layer, or the one under a recipe's files). Layers are read as any image's are:
    digests checked, within the entry and size caps; the copy is capped like any input."""
    import posixpath
    import tarfile

    import zstandard

    from conda_envkit.inputs import MAX_INPUT_BYTES
    from conda_envkit.installed_state import LOCK_COPY
    from conda_envkit.lockmodel import parse_lock_text
    from conda_envkit.oci.blobs import check_digest
    from conda_envkit.oci.safety import layer_members, open_layer

    target = f"{prefix.strip('/')}/{LOCK_COPY.as_posix()}"
    for layer in reversed(layers):
        digest = check_digest(str(layer.get("digest") if isinstance(layer, dict) else ""), where)
        found: list[str] = []
        path = store.verified_path(digest)
        try:
            with open_layer(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in layer_members(tar, where):
                    if posixpath.normpath(member.name.lstrip("./").lstrip("/")) != target:
                        continue
                    # What an unpacked image holds at that path is its last entry: a layer with two is not bake's.
                    problem = "is there twice" if found else None if member.isfile() else "is not a file"
                    problem = problem or (f"is {member.size} bytes" if member.size > MAX_INPUT_BYTES else None)
                    if problem is not None:
                        raise RecordError(f"{where}: layer {digest}: {target} {problem}", hint="the image was not baked by envkit")
                    data = tar.extractfile(member)
                    found.append(data.read().decode("utf-8", "replace") if data is not None else "")
        except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
            raise RecordError(
                f"{where}: layer {digest} is not a readable layer tarball ({type(exc).__name__})",
                hint="the image is corrupt or was not baked by envkit",
            ) from None
        if found:
            return parse_lock_text(found[0], Path(f"{where}:/{target}")), found[0]
    return None


class LockHoldsCredentials(RecordError):
    """A lock whose URLs hold credentials' values: never sent to a tracker or a registry."""
