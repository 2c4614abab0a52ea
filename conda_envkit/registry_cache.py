"""The registry as the shared layer cache (`--cache-to` / `--cache-from`, like docker buildx).

A cache lives in a repository under a tag (`envkit-cache` unless one is given) as an OCI
manifest whose config is a JSON map from layer keys (conda_envkit.layer_plan) to layer
descriptors and diff_ids, plus the package info of the packages those layers hold (so a
runner with an empty local cache can plan without any archive). The manifest's layers
are those blobs, so the registry keeps them. `--cache-to` merges into what is there.

A layer found in a `--cache-from` cache is used by reference: pushed to the same registry
it is mounted (or already there), never downloaded; it is downloaded, and checked
against its digest, only when an output needs its bytes (`--oci`, `--docker-archive`,
another registry). Using a cache means trusting who can write to its repository, as
with buildx: its map says which blob is the layer for a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from conda_envkit.errors import EnvkitError
from conda_envkit.network import Deadline, read_limited
from conda_envkit.oci.blobs import OCI_MANIFEST, BlobStore, Descriptor, OciError, canonical_json, check_digest, sha256_digest
from conda_envkit.oci.layer import CacheEntry, Layer
from conda_envkit.oci.reference import parse_image_ref
from conda_envkit.oci.registry import RegistryClient, RegistryError
from conda_envkit.pkginfo import PackageInfo, PackageInfoError

CACHE_SCHEMA = "envkit.bake-cache/1"
CACHE_CONFIG = "application/vnd.envkit.bake-cache.config.v1+json"
CACHE_ARTIFACT = "application/vnd.envkit.bake-cache.v1"
DEFAULT_TAG = "envkit-cache"
# The cache map (layer keys, and the package infos a plan needs, each package's paths packed) is read whole; a
# registry's answer is hostile until checked: at most this much, and the paths of its infos unpack to at most
# MAX_MAP_PATHS_BYTES together (an info past that is left out: its package is fetched to read it).
MAX_MAP_BYTES = 64 << 20
MAX_MAP_PATHS_BYTES = 512 << 20


class CacheError(EnvkitError):
    """A registry cache that cannot be read or written."""


@dataclass(frozen=True)
class CacheRef:
    """Where a cache lives: registry, repository, tag."""

    registry: str
    repository: str
    tag: str

    @property
    def location(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return f"{self.location}:{self.tag}"


def parse_cache_ref(text: str) -> CacheRef:
    """REGISTRY/REPO[:TAG] -> a CacheRef (tag `envkit-cache` by default)."""
    ref = parse_image_ref(text)
    if ref.digest:
        raise CacheError(f"cache {text}: give a repository and optionally a tag, not a digest", hint="e.g. registry.example.com/team/cache")
    return CacheRef(ref.registry, ref.repository, ref.tag or DEFAULT_TAG)


@dataclass
class RegistryCache:
    """The layer map of one or more caches, and where each layer's blob lives."""

    layers: dict[str, tuple[Layer, str]] = field(default_factory=dict)  # key -> (layer, registry/repository)
    packages: dict[str, PackageInfo] = field(default_factory=dict)  # sha256 -> info

    def lookup(self, key: str) -> tuple[Layer, str] | None:
        return self.layers.get(key)


def _parse_document(data: object, where: str) -> tuple[dict[str, tuple[Descriptor, str]], dict[str, PackageInfo]]:
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA:
        raise CacheError(f"{where}: not an envkit bake cache", hint="point --cache-from at a repository written by --cache-to")
    layers = {}
    for key, entry in (data.get("layers") or {}).items():
        try:
            desc = Descriptor(str(entry["media_type"]), check_digest(str(entry["digest"]), where), int(entry["size"]))
            if desc.size < 0:
                raise ValueError(desc.size)
            layers[str(key)] = (desc, check_digest(str(entry["diff_id"]), where))
        except (KeyError, TypeError, ValueError, OciError):
            raise CacheError(f"{where}: malformed entry for layer key {key}", hint="write the cache again with --cache-to") from None
    packages = {}
    budget = MAX_MAP_PATHS_BYTES
    for sha, info in (data.get("packages") or {}).items():
        try:
            parsed = PackageInfo.from_json(info, where, budget)
        except PackageInfoError:
            continue
        budget -= sum(len(path) + 1 for path in parsed.paths)
        if parsed.sha256 == sha:
            packages[sha] = parsed
    return layers, packages


def _read(client: RegistryClient, ref: CacheRef) -> tuple[dict[str, Any], list[Descriptor]] | None:
    """The cache document and the manifest's layer list, or None if the tag does not exist."""
    try:
        data, _media_type, _digest = client.get_manifest(ref.repository, ref.tag)
    except RegistryError as exc:
        if "not found" in exc.message:
            return None
        raise
    try:
        manifest = json.loads(data)
        config = Descriptor.from_json(manifest["config"], str(ref))
        listed = [Descriptor.from_json(d, str(ref)) for d in manifest.get("layers", [])]
    except (ValueError, KeyError, TypeError):
        raise CacheError(f"{ref}: not an envkit bake cache manifest", hint="use another tag for the cache") from None
    if config.media_type != CACHE_CONFIG:
        raise CacheError(f"{ref}: holds an image, not an envkit bake cache", hint="use another tag for the cache")
    what = f"cache {ref}"
    response = client.request(
        "GET", f"/v2/{ref.repository}/blobs/{config.digest}", f"repository:{ref.repository}:pull", (200,), stream=True, what=what
    )
    try:
        body = read_limited(response, Deadline(f"{client.registry}: {what}"), MAX_MAP_BYTES)
    finally:
        response.close()
    if sha256_digest(body) != config.digest:
        raise CacheError(f"{ref}: the cache map does not match its digest", hint="write the cache again with --cache-to")
    return json.loads(body), listed


def load_caches(refs: Iterable[CacheRef], client_for: Callable[[str], RegistryClient], say: Callable[[str], None]) -> RegistryCache:
    """Read every `--cache-from` cache (a missing one is an empty cache); the first to name a key wins."""
    cache = RegistryCache()
    for ref in refs:
        found = _read(client_for(ref.registry), ref)
        if found is None:
            say(f"cache {ref}: empty (no such tag yet)")
            continue
        layers, packages = _parse_document(found[0], str(ref))
        for key, (desc, diff_id) in layers.items():
            cache.layers.setdefault(key, (Layer(desc, diff_id, reused=True), ref.location))
        for sha, info in packages.items():
            cache.packages.setdefault(sha, info)
        say(f"cache {ref}: {len(layers)} layers")
    return cache


def write_cache(
    client: RegistryClient,
    ref: CacheRef,
    entries: list[CacheEntry],
    packages: list[PackageInfo],
    store: BlobStore,
) -> tuple[int, int]:
    """Merge `entries` into the cache at `ref`; upload only missing blobs; tag last. Returns (uploaded, mounted)."""
    existing = _read(client, ref)
    document: dict[str, Any] = {"schema": CACHE_SCHEMA, "layers": {}, "packages": {}}
    listed: dict[str, Descriptor] = {}
    if existing is not None:
        old_layers, old_packages = _parse_document(existing[0], str(ref))
        for key, (desc, diff_id) in old_layers.items():
            document["layers"][key] = {"digest": desc.digest, "size": desc.size, "diff_id": diff_id, "media_type": desc.media_type}
            listed[desc.digest] = desc
        document["packages"] = {sha: info.to_json() for sha, info in old_packages.items()}
    uploaded = mounted = 0
    for entry in entries:
        desc = entry.layer.descriptor
        if desc.digest not in listed and not client.has_blob(ref.repository, desc.digest):
            source = entry.source
            if (
                source
                and source.startswith(client.registry + "/")
                and client.mount_blob(ref.repository, desc.digest, source.split("/", 1)[1])
            ):
                mounted += 1
            else:
                path = store.path(desc.digest)
                if not path.is_file():
                    raise CacheError(f"layer {desc.digest} is neither in the local cache nor mountable", hint="bake with --oci to fetch it")
                client.upload_blob(ref.repository, path, desc.digest)
                uploaded += 1
        document["layers"][entry.key] = {
            "digest": desc.digest,
            "size": desc.size,
            "diff_id": entry.layer.diff_id,
            "media_type": desc.media_type,
        }
        listed[desc.digest] = Descriptor(desc.media_type, desc.digest, desc.size)
    for info in packages:
        document["packages"][info.sha256] = info.to_json()
    body = canonical_json(document)
    config_digest = client.put_blob(ref.repository, body)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CACHE_ARTIFACT,
        "config": {"mediaType": CACHE_CONFIG, "digest": config_digest, "size": len(body)},
        "layers": [d.to_json() for d in sorted(listed.values(), key=lambda d: d.digest)],
    }
    client.put_manifest(ref.repository, ref.tag, canonical_json(manifest), OCI_MANIFEST)
    return uploaded, mounted


def fetch_layers(blobs: dict[str, str], sizes: dict[str, int], store: BlobStore, client_for: Callable[[str], RegistryClient]) -> int:
    """Download (digest-checked, no bigger than its descriptor says) every cache-only layer blob an output needs
    into `store`; return how many."""
    count = 0
    for digest, source in blobs.items():
        if store.has(digest):
            continue
        registry, _, repository = source.partition("/")
        tmp = store.temp_path()
        try:
            client_for(registry).fetch_blob(repository, digest, tmp, sizes[digest])
            store.adopt(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        count += 1
    return count


class RegistryClients:
    """One RegistryClient per registry for a bake, and the cache steps the bake command runs."""

    def __init__(self, insecure: tuple[str, ...]) -> None:
        self.insecure = insecure
        self.clients: dict[str, RegistryClient] = {}

    def client(self, registry: str) -> RegistryClient:
        if registry not in self.clients:
            self.clients[registry] = RegistryClient(registry, insecure=registry in self.insecure)
        return self.clients[registry]

    def load(self, refs: list[CacheRef], say: Callable[[str], None]) -> RegistryCache:
        return load_caches(refs, self.client, say)

    def fetch_needed(self, baked: object, store: BlobStore, local: bool, pushed_to: list[str]) -> int:
        """Download the cache-only layers an output needs: all of them for --oci/--docker-archive, else those
        that cannot be mounted because the push goes to another registry."""
        remote: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for image in baked.platforms:  # type: ignore[attr-defined]
            remote.update(image.remote_blobs)
            sizes.update({layer.descriptor.digest: layer.descriptor.size for layer in image.layers})
        needed = {d: s for d, s in remote.items() if local or any(not s.startswith(r + "/") for r in pushed_to)}
        return fetch_layers(needed, sizes, store, self.client)

    def store_cache(self, ref: CacheRef, baked: object, store: BlobStore) -> tuple[int, int]:
        entries = [e for image in baked.platforms for e in image.cache_entries]  # type: ignore[attr-defined]
        infos = list({i.sha256: i for image in baked.platforms for i in image.infos}.values())  # type: ignore[attr-defined]
        return write_cache(self.client(ref.registry), ref, entries, infos, store)
