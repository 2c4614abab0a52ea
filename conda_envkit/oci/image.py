"""Image configs, manifests and indexes: pure functions from layers and settings to JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conda_envkit.oci.blobs import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, BlobStore, Descriptor, OciError, canonical_json
from conda_envkit.oci.layer import Layer

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# conda subdir -> OCI platform
OCI_PLATFORMS: dict[str, dict[str, str]] = {
    "linux-64": {"os": "linux", "architecture": "amd64"},
    "linux-aarch64": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    "linux-ppc64le": {"os": "linux", "architecture": "ppc64le"},
}


def oci_platform(platform: str) -> dict[str, str]:
    """The OCI platform of a conda subdir that images can be built for."""
    if platform not in OCI_PLATFORMS:
        raise OciError(
            f"cannot bake an image for {platform}: OCI images run on {', '.join(OCI_PLATFORMS)}",
            hint="bake a linux platform (-p linux-64), or use `envkit install` on that machine",
        )
    return OCI_PLATFORMS[platform]


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class BaseImage:
    """The image to build on: its config, layers (with diff_ids) and where it came from."""

    reference: str
    config: dict[str, Any]
    layers: tuple[Layer, ...] = ()
    digest: str | None = None
    repository: str | None = None  # registry/repo it was pulled from, for cross-repository mounts
    conda_prefixes: tuple[str, ...] = ()  # where its layers hold a conda environment (a conda-meta/): absolute, sorted

    @property
    def is_scratch(self) -> bool:
        return self.digest is None and not self.layers


@dataclass(frozen=True)
class ImageSettings:
    """What an image's config says besides its layers."""

    env: dict[str, str] = field(default_factory=dict)
    path_prepend: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    workdir: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    created: int = 0


_STRING_LISTS = ("Env", "Cmd", "Entrypoint", "Shell", "OnBuild")
_STRINGS = ("WorkingDir", "User", "StopSignal")


def check_base_config(config: object, reference: str) -> dict[str, Any]:
    """A base image's config, if the fields a bake builds on have their types (Env a list of strings, Labels a
    mapping of strings, ...): a string Env was split into characters and an object Entrypoint copied into the
    image; Labels not a mapping was a traceback. An OciError naming the base and the field otherwise."""

    def bad(field: str, what: str) -> OciError:
        return OciError(f"{reference}: its config's {field} is not {what}", hint="the base image is broken; use another base")

    if not isinstance(config, dict):
        raise bad("document", "a JSON object")
    inner = config.get("config")
    if inner is None:
        return config
    if not isinstance(inner, dict):
        raise bad("config", "a JSON object")
    for key in _STRING_LISTS:
        value = inner.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise bad(f"config.{key}", "a list of strings")
    for key in _STRINGS:
        if inner.get(key) is not None and not isinstance(inner[key], str):
            raise bad(f"config.{key}", "a string")
    for key in ("ExposedPorts", "Volumes"):  # (mappings of a port or a path to an empty object)
        if inner.get(key) is not None and not isinstance(inner[key], dict):
            raise bad(f"config.{key}", "a mapping")
    labels = inner.get("Labels")
    if labels is not None and not (isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())):
        raise bad("config.Labels", "a mapping of strings")
    history = config.get("history")
    if history is not None and not (isinstance(history, list) and all(isinstance(h, dict) for h in history)):
        raise bad("history", "a list of objects")
    return config


def _env_list(base_env: list[str], settings: ImageSettings) -> list[str]:
    env: dict[str, str] = {}
    for item in base_env:
        key, _, value = item.partition("=")
        env[key] = value
    path = env.get("PATH") or DEFAULT_PATH
    if settings.path_prepend:
        # First, and once: a base that has the directory on its PATH already (an envkit image) keeps one entry.
        rest = [entry for entry in path.split(":") if entry not in settings.path_prepend]
        path = ":".join([*settings.path_prepend, *rest])
    env["PATH"] = path
    env.update(settings.env)
    return [f"{k}={v}" for k, v in env.items()]


def check_base_platform(base: BaseImage, platform: str) -> None:
    """An OciError unless the base's architecture is the platform's (checked as the base is loaded, before anything is
    fetched or built, and again as the config is made)."""
    target = oci_platform(platform)
    base_arch = base.config.get("architecture")
    if not base.is_scratch and base_arch and base_arch != target["architecture"]:
        raise OciError(
            f"base image {base.reference} is {base.config.get('os')}/{base_arch}, "
            f"but the bake is for {platform} ({target['architecture']})",
            hint="pick the base for that platform (a multi-arch base reference selects it automatically)",
        )


def image_config(base: BaseImage, layers: list[Layer], history: list[str], settings: ImageSettings, platform: str) -> dict[str, Any]:
    """The image config JSON: the base's config with our layers, environment and labels added."""
    check_base_platform(base, platform)
    target = oci_platform(platform)
    base_cfg = dict(base.config.get("config") or {})
    cfg: dict[str, Any] = {k: v for k, v in base_cfg.items() if v not in (None, [], {})}
    cfg["Env"] = _env_list(list(base_cfg.get("Env") or []), settings)
    if settings.entrypoint is not None:
        cfg["Entrypoint"] = list(settings.entrypoint)
        cfg.pop("Cmd", None)
    if settings.cmd is not None:
        cfg["Cmd"] = list(settings.cmd)
    if settings.workdir is not None:
        cfg["WorkingDir"] = settings.workdir
    if settings.user is not None:
        cfg["User"] = settings.user
    cfg["Labels"] = {**(base_cfg.get("Labels") or {}), **settings.labels}
    created = rfc3339(settings.created)
    base_history = list(base.config.get("history") or [])
    ours = [{"created": created, "created_by": line, "comment": "envkit bake"} for line in history]
    config: dict[str, Any] = {
        "created": created,
        "architecture": target["architecture"],
        "os": target["os"],
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in (*base.layers, *layers)]},
        "history": base_history + ours,
    }
    if "variant" in target:
        config["variant"] = target["variant"]
    return config


def put_manifest(
    store: BlobStore,
    config: dict[str, Any],
    layers: list[Layer],
    annotations: dict[str, str],
) -> tuple[Descriptor, Descriptor]:
    """Store the config and an OCI manifest for it; return (manifest, config) descriptors."""
    config_bytes = canonical_json(config)
    config_desc = Descriptor(OCI_CONFIG, store.put_bytes(config_bytes), len(config_bytes))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [layer.descriptor.to_json() for layer in layers],
        "annotations": dict(sorted(annotations.items())),
    }
    data = canonical_json(manifest)
    platform = {"os": config["os"], "architecture": config["architecture"]}
    if "variant" in config:
        platform["variant"] = config["variant"]
    return Descriptor(OCI_MANIFEST, store.put_bytes(data), len(data), platform=platform), config_desc


def put_index(store: BlobStore, manifests: list[Descriptor], annotations: dict[str, str]) -> Descriptor:
    """Store an OCI image index over per-platform manifests."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [m.to_json() for m in manifests],
        "annotations": dict(sorted(annotations.items())),
    }
    data = canonical_json(index)
    return Descriptor(OCI_INDEX, store.put_bytes(data), len(data))
