"""Moving images between a registry and a local blob store: pull a base, push a result."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conda_envkit.cache import CACHE_SETTING
from conda_envkit.cache_seal import user_seal
from conda_envkit.files import read_cache_entry, write_cache_entry
from conda_envkit.network import NetworkError
from conda_envkit.oci.blobs import (
    DOCKER_LIST,
    MAX_CONFIG_BYTES,
    OCI_EQUIVALENT,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    BlobStore,
    Descriptor,
    OciError,
    file_digest,
    json_document,
)
from conda_envkit.oci.image import BaseImage, check_base_config
from conda_envkit.oci.layer import Layer
from conda_envkit.oci.reference import ImageRef
from conda_envkit.oci.registry import BlobMismatch, PushStats, RegistryClient, RegistryError
from conda_envkit.oci.safety import check_layer, in_root
from conda_envkit.progress import SILENT, Progress
from conda_envkit.thread_pool import run_each

LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD)


def _matches(platform: dict[str, str], wanted: dict[str, str]) -> bool:
    if platform.get("os") != wanted["os"] or platform.get("architecture") != wanted["architecture"]:
        return False
    return "variant" not in platform or "variant" not in wanted or platform["variant"] == wanted["variant"]


def select_platform(index: dict[str, Any], wanted: dict[str, str], where: str) -> Descriptor:
    """The manifest for `wanted` (os/architecture[/variant]) in an image index."""
    items = index.get("manifests", [])
    if not isinstance(items, list):
        raise OciError(f"{where}: image index's `manifests` is not a list", hint="the registry or image is broken")
    descriptors = [Descriptor.from_json(item, where) for item in items]
    for desc in descriptors:
        if desc.platform and _matches(desc.platform, wanted):
            return desc
    have = sorted(f"{d.platform.get('os')}/{d.platform.get('architecture')}" for d in descriptors if d.platform)
    raise OciError(
        f"{where} has no image for {wanted['os']}/{wanted['architecture']} (it has {', '.join(have) or 'none'})",
        hint="pick a base image that is built for this platform",
    )


def manifest_descriptors(manifest: dict[str, Any], where: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest, checked: an error names `where`."""
    if not isinstance(manifest.get("config"), dict):
        raise OciError(f"{where}: image manifest has no config", hint="the registry or image is broken, or this is not an image")
    layers = manifest.get("layers", [])
    if not isinstance(layers, list):
        raise OciError(f"{where}: image manifest's `layers` is not a list", hint="the registry or image is broken")
    return Descriptor.from_json(manifest["config"], where), [Descriptor.from_json(d, where) for d in layers]


def base_from_manifest(
    reference: str, manifest: dict[str, Any], manifest_digest: str, store: BlobStore, repository: str | None, check_diff_ids: bool = True
) -> BaseImage:
    """A BaseImage from a manifest whose config and layers are already in `store`; layers are scanned."""
    config_desc, layer_descs = manifest_descriptors(manifest, reference)
    # Every blob is what its descriptor says (as umoci checks): the sizes go into the manifest envkit writes on top.
    for desc, what in [(config_desc, "config"), *((d, "layer") for d in layer_descs)]:
        store.check_size(desc.digest, desc.size, f"{reference}: {what} {desc.digest}")
    if config_desc.size > MAX_CONFIG_BYTES:
        raise OciError(
            f"{reference}: its config {config_desc.digest} is {config_desc.size} bytes, over the {MAX_CONFIG_BYTES >> 20} MiB limit",
            hint="an image config is a few KiB of JSON: the image is broken",
        )
    config = check_base_config(store.read_json(config_desc.digest, f"{reference}: config {config_desc.digest}", "image config"), reference)
    rootfs = config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids or [], list) or not all(isinstance(d, str) for d in diff_ids or []):
        raise OciError(f"{reference}: config's rootfs.diff_ids is not a list of digests", hint="the base image is corrupt")
    diff_ids = list(diff_ids or [])
    if len(diff_ids) != len(layer_descs):
        raise OciError(
            f"{reference}: config lists {len(diff_ids)} diff_ids for {len(layer_descs)} layers", hint="the base image is corrupt"
        )
    layers = []
    links: dict[str, str] = {}  # symlinks of the layers scanned so far: a chain across layers is resolved too
    conda_prefixes: set[str] = set()  # where the layers scanned so far hold a conda environment
    chain = hashlib.sha256()
    for desc, diff_id in zip(layer_descs, diff_ids, strict=True):
        # (a layer scanned for one diff_id is not taken for another; nor one scanned without the check for one with it)
        chain.update(f"{desc.digest} {diff_id if check_diff_ids else ''}".encode())
        media_type = OCI_EQUIVALENT.get(desc.media_type, desc.media_type)
        if media_type not in LAYER_TYPES:
            raise OciError(
                f"{reference}: layer {desc.digest} has unsupported media type {desc.media_type}", hint="use a base with plain tar layers"
            )
        _check_compression(store, desc.digest, media_type, reference)
        where = f"{reference} layer {desc.digest}"
        _scan_once(store, desc.digest, chain.hexdigest(), where, links, conda_prefixes, diff_id if check_diff_ids else None)
        layers.append(Layer(Descriptor(media_type, desc.digest, desc.size), diff_id))
    return BaseImage(
        reference=reference,
        config=config,
        layers=tuple(layers),
        digest=manifest_digest,
        repository=repository,
        conda_prefixes=in_root(conda_prefixes),
    )


def _check_compression(store: BlobStore, digest: str, media_type: str, reference: str) -> None:
    """A layer's bytes are compressed as its media type says (it is copied into the image with that type, and a
    runtime decompresses by the type, not by the bytes)."""
    from conda_envkit.oci.safety import GZIP_MAGIC, ZSTD_MAGIC

    with store.path(digest).open("rb") as f:
        magic = f.read(4)
    found = OCI_LAYER_GZIP if magic.startswith(GZIP_MAGIC) else OCI_LAYER_ZSTD if magic == ZSTD_MAGIC else OCI_LAYER
    if found != media_type:
        raise OciError(
            f"{reference}: layer {digest} is {found.rpartition('.')[2]} data, its media type says {media_type}",
            hint="the base image is corrupt; do not use it",
        )


# The form of a scan marker; a marker of another form (an older scan's, which let an opaque whiteout keep a lower
# layer's link) is not read: the layer is scanned again.
_SCAN_KIND = "base-scan/2"


def _scan_once(
    store: BlobStore, digest: str, chain_key: str, where: str, links: dict[str, str], conda_prefixes: set[str], diff_id: str | None = None
) -> None:
    # A layer is scanned once per store and per stack of layers below it (`chain_key`): the
    # marker keeps the symlinks and conda prefixes seen up to it, which the next layer's scan
    # goes on from. It is sealed (cache_seal) and per owner: one planted by whoever else writes
    # the cache is not this user's word that the layer was scanned, and is scanned again.
    seal = user_seal()
    marker = store.root / "scans" / f"{chain_key}.{seal.owner}"
    data = read_cache_entry(marker)
    try:
        saved = seal.unsealed(_SCAN_KIND, chain_key, json.loads(data)) if data is not None else None
    except ValueError:
        saved = None
    saved_links, saved_prefixes = (saved.get("links"), saved.get("conda_prefixes")) if saved is not None else (None, None)
    if isinstance(saved_links, dict) and isinstance(saved_prefixes, list):
        links.clear()
        links.update({str(k): str(v) for k, v in saved_links.items()})
        conda_prefixes.clear()
        conda_prefixes.update(str(p) for p in saved_prefixes)
        return
    check_layer(store.path(digest), where, links, diff_id, conda_prefixes)
    marker.parent.mkdir(parents=True, exist_ok=True)
    fields: dict[str, object] = {"links": dict(links), "conda_prefixes": sorted(conda_prefixes)}
    write_cache_entry(marker, seal.sealed(_SCAN_KIND, chain_key, fields), "base layer scan", CACHE_SETTING)


def fetch_into_store(client: RegistryClient, repository: str, digest: str, size: int, store: BlobStore) -> None:
    """The blob `digest` of `repository` in `store`: exactly `size` bytes (its descriptor's), digest-checked as it
    arrives, through a temp file that no failure leaves. A cached copy is used only if its bytes still have its
    name (and its size, before they are read)."""
    if store.has_sized(digest, size) and file_digest(store.path(digest)) == digest:
        return
    tmp = store.temp_path()
    try:
        client.fetch_blob(repository, digest, tmp, size)
        store.adopt(tmp, digest)
    finally:
        tmp.unlink(missing_ok=True)


def pull_base(client: RegistryClient, ref: ImageRef, wanted: dict[str, str], store: BlobStore, check_diff_ids: bool = True) -> BaseImage:
    """Fetch a base image for one platform (index -> manifest -> config + layers) into `store`."""
    data, media_type, digest = client.get_manifest(ref.repository, ref.reference)
    document = json_document(data, str(ref))
    if OCI_EQUIVALENT.get(media_type, media_type) == OCI_INDEX or media_type == DOCKER_LIST:
        chosen = select_platform(document, wanted, str(ref))
        data, media_type, digest = client.get_manifest(ref.repository, chosen.digest)
        document = json_document(data, f"{ref} ({chosen.digest})")
    config_desc, layer_descs = manifest_descriptors(document, str(ref))
    if config_desc.size > MAX_CONFIG_BYTES:
        raise OciError(
            f"{ref}: its config {config_desc.digest} declares {config_desc.size} bytes, over the {MAX_CONFIG_BYTES >> 20} MiB limit",
            hint="an image config is a few KiB of JSON: the registry or image is broken",
        )
    fetch_into_store(client, ref.repository, config_desc.digest, config_desc.size, store)
    for desc in layer_descs:
        if desc.media_type.endswith("foreign.diff.tar.gzip") or "nondistributable" in desc.media_type:
            raise OciError(f"{ref}: layer {desc.digest} is non-distributable", hint="use a base image without foreign layers")
        fetch_into_store(client, ref.repository, desc.digest, desc.size, store)
    return base_from_manifest(str(ref), document, digest, store, f"{ref.registry}/{ref.repository}", check_diff_ids)


@dataclass(frozen=True)
class ImageToPush:
    """What to push: the top descriptor, the per-platform manifests under it, and their blobs."""

    top: Descriptor
    manifests: tuple[Descriptor, ...]
    blobs: tuple[str, ...]  # configs and layers
    mount_from: dict[str, str]  # blob digest -> registry/repository it came from


PUSH_JOBS = 4  # blobs sent at once (crane sends 4, docker 5): a registry far away answers each request late


class CorruptRegistryBlob(RegistryError):
    """A blob the registry serves with other bytes even once uploaded again: its store is corrupt."""


def send_blob(
    client: RegistryClient,
    repository: str,
    digest: str,
    source: str | None,
    path: Callable[[], Path],
    stop: threading.Event,
    suspect: Callable[[], Path] | None = None,
) -> tuple[str, int]:
    """Send one blob unless the repository has it: mounted from `source` (registry/repository) when that is on this
    registry, else uploaded from `path()`. ("present" | "mounted" | "uploaded", bytes uploaded).

    A suspect blob (this registry served it with other bytes in this bake: `suspect` gives a temp file to read it
    back into) is uploaded whatever the registry says it has, then read back: a registry whose store keeps the wrong
    bytes is CorruptRegistryBlob (an image or cache naming it there would not pull), not a push that says it worked."""
    if suspect is not None:
        local = path()
        sent = client.upload_blob(repository, local, digest, stop)
        check = suspect()
        try:
            client.fetch_blob(repository, digest, check, local.stat().st_size)
        except BlobMismatch:
            raise CorruptRegistryBlob(
                f"{client.registry}/{repository}: serves blob {digest} with other bytes, even uploaded again: its store"
                " is corrupt, and an image naming that blob there would not pull",
                hint=f"ask the registry's admin to delete that blob (DELETE /v2/{repository}/blobs/{digest}) and collect"
                " garbage; or push to another registry",
            ) from None
        finally:
            check.unlink(missing_ok=True)
        return "uploaded", sent
    if client.has_blob(repository, digest):
        return "present", 0
    if source and source.startswith(client.registry + "/"):
        source_repo = source[len(client.registry) + 1 :]
        if source_repo != repository and client.mount_blob(repository, digest, source_repo):
            return "mounted", 0
    return "uploaded", client.upload_blob(repository, path(), digest, stop)


def push_image(
    client: RegistryClient,
    repository: str,
    image: ImageToPush,
    store: BlobStore,
    tags: list[str],
    progress: Progress = SILENT,
    suspect: frozenset[str] = frozenset(),
) -> PushStats:
    """Push blobs (PUSH_JOBS at once, skipping those present, mounting base layers), then manifests, then tags last.
    `suspect`: blobs this registry served with other bytes (send_blob uploads them again and reads them back).

    Tags are written only after everything they point to is in the registry, so an
    interrupted push never leaves a tag on an incomplete image.
    """
    stats = PushStats()
    step = f"push {client.registry}/{repository}"
    progress.start(step, total=len(image.blobs), unit="blobs")
    stop = threading.Event()  # a failed or interrupted push: the other uploads end at their next chunk

    def send(digest: str) -> tuple[str, int]:
        source = image.mount_from.get(digest)
        read_back = store.temp_path if digest in suspect else None
        sent = send_blob(client, repository, digest, source, lambda: store.verified_path(digest), stop, read_back)
        progress.advance(step)
        return sent

    for digest, (how, size) in zip(image.blobs, run_each(send, image.blobs, PUSH_JOBS, stop), strict=True):
        {"present": stats.skipped, "mounted": stats.mounted, "uploaded": stats.uploaded}[how].append(digest)
        stats.bytes_uploaded += size
    documents = [*image.manifests, image.top] if image.top not in image.manifests else list(image.manifests)
    for desc in documents:
        client.put_manifest(repository, desc.digest, store.verified_path(desc.digest).read_bytes(), desc.media_type)
    for tag in tags:
        try:
            before = client.tag_digest(repository, tag)
        except (RegistryError, NetworkError) as exc:
            # Asked only to warn of a tag moving: a registry that will not say (a login that may push but not read
            # manifests, a proxy refusing HEAD, a server error) still gets the tag, and the bake says it was not asked.
            stats.unchecked[tag] = exc.message
            before = None
        if before is not None and before != image.top.digest:
            stats.moved[tag] = before
        client.put_manifest(repository, tag, store.verified_path(image.top.digest).read_bytes(), image.top.media_type)
    sent = f"{len(stats.uploaded)} blobs uploaded ({stats.bytes_uploaded / 1e6:.1f} MB)"
    progress.done(step, f"{sent}, {len(stats.skipped)} already there, {len(stats.mounted)} mounted, tags {', '.join(tags)}")
    return stats


def resolve_digest(client: RegistryClient, ref: ImageRef, wanted: dict[str, str]) -> str:
    """The digest of the platform's manifest behind a reference (what `pull_base` would record)."""
    data, media_type, digest = client.get_manifest(ref.repository, ref.reference)
    if OCI_EQUIVALENT.get(media_type, media_type) == OCI_INDEX or media_type == DOCKER_LIST:
        return select_platform(json_document(data, str(ref)), wanted, str(ref)).digest
    return digest
