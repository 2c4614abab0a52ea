"""The registry as the shared layer cache (`--cache-to` / `--cache-from`, like docker buildx).

A cache lives in a repository under a tag (`envkit-cache` unless one is given) as an OCI
manifest whose config is a JSON map from layer keys (conda_envkit.layer_plan) to layer
descriptors and diff_ids, plus the package info of the packages those layers hold (so a
runner with an empty local cache can plan without any archive). The manifest's layers
are those blobs, so the registry keeps them. `--cache-to` merges into what is there, within
bounds (`bounded_map`): each write is a generation, and when the map would hold more than
MAX_CACHE_LAYERS layers or MAP_BUDGET_BYTES, the entries no write has used for longest are
dropped (never this write's), so the registry can collect their blobs. A map that is there
but cannot be read (cut short, too big, not matching its digest, malformed) is skipped by
`--cache-from` with a warning and replaced by `--cache-to`, as buildx does with a cache it
cannot import.

A layer found in a `--cache-from` cache is used by reference: pushed to the same registry
it is mounted (or already there), never downloaded; it is downloaded, and checked
against its digest, only when an output needs its bytes (`--oci`, `--docker-archive`,
another registry). Using a cache means trusting who can write to its repository, as
with buildx: its map says which blob is the layer for a key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conda_envkit.errors import EnvkitError
from conda_envkit.network import Deadline, NetworkError, ResponseTooLarge, max_download_bytes, read_limited, size_text
from conda_envkit.oci.blobs import OCI_MANIFEST, BlobStore, Descriptor, OciError, canonical_json, check_digest, sha256_digest
from conda_envkit.oci.layer import CacheEntry, Layer
from conda_envkit.oci.reference import names_registry, parse_image_ref
from conda_envkit.oci.registry import BlobMismatch, BlobUnknown, RegistryClient, RegistryError
from conda_envkit.oci.transfer import PUSH_JOBS, CorruptRegistryBlob, fetch_into_store, send_blob
from conda_envkit.pkginfo import PackageInfo, PackageInfoError
from conda_envkit.progress import SILENT, Progress, counted
from conda_envkit.thread_pool import run_each

CACHE_SCHEMA = "envkit.bake-cache/1"
CACHE_CONFIG = "application/vnd.envkit.bake-cache.config.v1+json"
CACHE_ARTIFACT = "application/vnd.envkit.bake-cache.v1"
DEFAULT_TAG = "envkit-cache"
# The cache map (layer keys, and the package infos a plan needs, each package's paths packed) is read whole; a
# registry's answer is hostile until checked: at most this much, and the paths of its infos unpack to at most
# MAX_MAP_PATHS_BYTES together (an info past that is left out: its package is fetched to read it).
MAX_MAP_BYTES = 64 << 20
MAX_MAP_PATHS_BYTES = 512 << 20
# What `--cache-to` keeps: every runner with `--cache-from` reads the map whole, and registries cap a manifest's size
# (distribution: 4 MiB; a layer's descriptor takes ~170 bytes of it). A bake of 5 platforms writes at most 600 layers.
MAX_CACHE_LAYERS = 2000
MAP_BUDGET_BYTES = 16 << 20


class CacheError(EnvkitError):
    """A registry cache that cannot be read or written."""


class UnusableCache(CacheError):
    """An envkit bake cache that is there but cannot be read: cut short, too big, not its digest, malformed."""


class NewerCache(UnusableCache):
    """A bake cache a newer envkit wrote (a later schema): read by neither, and not replaced by this one's --cache-to,
    so that runners of two versions writing one cache do not throw each other's entries away in turn."""


def _schema_version(schema: object) -> int | None:
    prefix = CACHE_SCHEMA.rsplit("/", 1)[0] + "/"
    if isinstance(schema, str) and schema.startswith(prefix) and schema[len(prefix) :].isdigit():
        return int(schema[len(prefix) :])
    return None


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
    """REGISTRY/REPO[:TAG] -> a CacheRef (tag `envkit-cache` by default). The registry must be named: `host:5000`
    alone would read as an image `host` of Docker Hub."""
    first = text.split("/", 1)[0]
    registry = names_registry(first)
    if "/" not in text or not registry:
        what = "a registry but no repository" if registry else "no registry"
        hint = "give REGISTRY/REPO[:TAG], e.g. ghcr.io/team/cache or localhost:5000/team/cache"
        raise CacheError(f"cache {text!r} names {what}", hint=hint)
    ref = parse_image_ref(text)
    if ref.digest:
        raise CacheError(f"cache {text}: give a repository and optionally a tag, not a digest", hint="e.g. registry.example.com/team/cache")
    return CacheRef(ref.registry, ref.repository, ref.tag or DEFAULT_TAG)


@dataclass
class RegistryCache:
    """The layer map of one or more caches, and where each layer's blob lives.

    With `present` (registry/repository, digest -> the blob's size there, or None), a layer is used only once its
    blob was found where the map says, of the size it says: a blob the repository lost, or a size the map gets wrong
    (it would go into the image's manifest), is a miss (and `warn` hears of it).
    """

    layers: dict[str, tuple[Layer, str]] = field(default_factory=dict)  # key -> (layer, registry/repository)
    packages: dict[str, PackageInfo] = field(default_factory=dict)  # sha256 -> info
    present: Callable[[str, str], int | None] | None = None
    warn: Callable[[str], None] | None = None

    def lookup(self, key: str, media_type: str | None = None) -> tuple[Layer, str] | None:
        """The layer for `key` (of `media_type`, if given) and where its blob is, if the cache has it."""
        found = self.layers.get(key)
        if found is not None and media_type is not None and found[0].descriptor.media_type != media_type:
            return None
        if found is None or self.present is None:
            return found
        layer, location = found
        try:
            size = self.present(location, layer.descriptor.digest)
            problem = "is not there" if size is None else f"is {size} bytes, the cache map says {layer.descriptor.size}"
        except (RegistryError, NetworkError) as exc:
            size, problem = None, f"cannot be checked ({exc.message})"
        if size is None or size != layer.descriptor.size:
            del self.layers[key]
            if self.warn is not None:
                self.warn(f"cache {location}: layer blob {layer.descriptor.digest} {problem}: that layer was built here")
            return None
        return found

    def drop(self, digest: str) -> None:
        """Forget every layer whose blob is `digest` (its registry served other bytes): a bake builds them."""
        for key in [key for key, (layer, _) in self.layers.items() if layer.descriptor.digest == digest]:
            del self.layers[key]


@dataclass
class CacheMap:
    """A cache map, checked: its layer entries and package infos, each with the generation (the `--cache-to`
    write, counted from 1) that last wrote it; a map written before generations were counted reads as 0."""

    layers: dict[str, tuple[Descriptor, str, int]] = field(default_factory=dict)  # key -> (blob, diff_id, generation)
    packages: dict[str, tuple[PackageInfo, int]] = field(default_factory=dict)  # sha256 -> (info, generation)

    @property
    def generation(self) -> int:
        return max([g for *_, g in self.layers.values()] + [g for _, g in self.packages.values()], default=0)


@dataclass(frozen=True)
class CacheWrite:
    """What `--cache-to` did: blobs uploaded and mounted, entries kept and dropped, and why an old map was replaced."""

    uploaded: int
    mounted: int
    layers: int
    dropped_layers: int = 0
    dropped_packages: int = 0
    replaced: str = ""  # why the map that was there could not be read (it was replaced), or ""
    skipped: str = ""  # why nothing was written (a newer envkit's cache is there), or ""
    present: int = 0  # this bake's layers whose blob the cache's repository had already
    corrupt: tuple[str, ...] = ()  # blobs the registry serves with other bytes even uploaded again: left out of the map


def _generation(value: object) -> int:
    # (a number JSON and every reader handle exactly; anything else reads as a write before generations were counted)
    return value if type(value) is int and 0 <= value < 1 << 53 else 0


def _parse_document(data: object, where: str) -> CacheMap:
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        version = _schema_version(schema)
        if version is not None and version > (_schema_version(CACHE_SCHEMA) or 0):
            raise NewerCache(f"{where}: a newer envkit's bake cache ({schema})", hint="upgrade envkit, or use another tag")
        raise UnusableCache(f"{where}: not a bake cache this envkit reads", hint="write the cache again with --cache-to")
    parsed = CacheMap()
    entries = data.get("layers") or {}
    if not isinstance(entries, dict):
        raise UnusableCache(f"{where}: malformed layer map", hint="write the cache again with --cache-to")
    for key, entry in entries.items():
        try:
            desc = Descriptor(str(entry["media_type"]), check_digest(str(entry["digest"]), where), int(entry["size"]))
            if desc.size < 0:
                raise ValueError(desc.size)
            parsed.layers[str(key)] = (desc, check_digest(str(entry["diff_id"]), where), _generation(entry.get("generation")))
        except (KeyError, TypeError, ValueError, AttributeError, OciError):
            raise UnusableCache(f"{where}: malformed entry for layer key {key}", hint="write the cache again with --cache-to") from None
    generations = data.get("package_generations")
    generations = generations if isinstance(generations, dict) else {}
    budget = MAX_MAP_PATHS_BYTES
    packages = data.get("packages") or {}
    for sha, info in packages.items() if isinstance(packages, dict) else ():
        try:
            package = PackageInfo.from_json(info, where, budget)
        except (PackageInfoError, AttributeError):
            continue
        budget -= sum(len(path) + 1 for path in package.paths)
        if package.sha256 == sha:
            parsed.packages[sha] = (package, _generation(generations.get(sha)))
    return parsed


def bounded_map(
    old: CacheMap, layers: dict[str, tuple[Descriptor, str]], packages: list[PackageInfo], max_layers: int, max_bytes: int
) -> tuple[dict[str, Any], CacheWrite]:
    """The document `--cache-to` writes: `old` plus this write's `layers` and `packages` as its newest generation.

    The newest generations are kept while the map stays within `max_layers` and `max_bytes`; the first one
    that does not fit and every older one are dropped. This write's layers are always kept, and its package
    infos while they fit, smallest first (a runner without an info reads its package's archive).
    Returns the document and the counts (uploads left at 0).
    """
    generation = min(old.generation + 1, (1 << 53) - 1)
    merged_layers = dict(old.layers)
    merged_layers.update({key: (desc, diff_id, generation) for key, (desc, diff_id) in layers.items()})
    merged_packages = dict(old.packages)
    merged_packages.update({info.sha256: (info, generation) for info in packages})

    def layer_json(desc: Descriptor, diff_id: str, g: int) -> dict[str, Any]:
        return {"digest": desc.digest, "size": desc.size, "diff_id": diff_id, "media_type": desc.media_type, "generation": g}

    layer_docs = {key: layer_json(*value) for key, value in merged_layers.items()}
    package_docs = {sha: info.to_json() for sha, (info, _g) in merged_packages.items()}
    cost: dict[int, list[int]] = {}  # generation -> [layers, bytes]
    sizes = {}
    for key, doc in layer_docs.items():
        entry = cost.setdefault(merged_layers[key][2], [0, 0])
        entry[0] += 1
        entry[1] += len(key) + len(canonical_json(doc)) + 4
    for sha, doc in package_docs.items():
        sizes[sha] = len(sha) * 2 + len(canonical_json(doc)) + 8  # the info and its generation
        cost.setdefault(merged_packages[sha][1], [0, 0])[1] += sizes[sha]
    current = cost.get(generation, [0, 0])
    written = {i.sha256 for i in packages}
    kept_layers = current[0]
    room = max_bytes - (current[1] - sum(sizes[sha] for sha in written))  # what this write's infos may take
    kept_packages: set[str] = set()
    for sha in sorted(written, key=lambda sha: (sizes[sha], sha)):
        if sizes[sha] <= room:
            kept_packages.add(sha)
            room -= sizes[sha]
    kept = {generation}
    for g in sorted(cost, reverse=True):
        if g == generation:
            continue
        if kept_layers + cost[g][0] > max_layers or cost[g][1] > room:
            break
        kept.add(g)
        kept_layers += cost[g][0]
        room -= cost[g][1]
    kept_packages |= {sha for sha, (_info, g) in merged_packages.items() if g in kept and g != generation}
    document: dict[str, Any] = {
        "schema": CACHE_SCHEMA,
        "layers": {key: doc for key, doc in layer_docs.items() if merged_layers[key][2] in kept},
        "packages": {sha: package_docs[sha] for sha in sorted(kept_packages)},
        "package_generations": {sha: merged_packages[sha][1] for sha in sorted(kept_packages)},
    }
    counts = CacheWrite(
        uploaded=0,
        mounted=0,
        layers=len(document["layers"]),
        dropped_layers=len(layer_docs) - len(document["layers"]),
        dropped_packages=len(package_docs) - len(kept_packages),
    )
    return document, counts


def cache_manifest(client: RegistryClient, ref: CacheRef) -> tuple[Descriptor, list[Descriptor]] | None:
    """The cache manifest's config and layers, or None if the tag does not exist; CacheError if the tag holds
    anything but an envkit bake cache (an image, another artifact)."""
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
    except (ValueError, KeyError, TypeError, AttributeError, OciError):
        raise CacheError(f"{ref}: not an envkit bake cache manifest", hint="use another tag for the cache") from None
    if config.media_type != CACHE_CONFIG:
        raise CacheError(
            f"{ref}: holds an image or another artifact ({config.media_type}), not an envkit bake cache",
            hint="use another tag for the cache",
        )
    return config, listed


def _read(client: RegistryClient, ref: CacheRef) -> tuple[dict[str, Any], list[Descriptor]] | None:
    """The cache document and the manifest's layer list, or None if the tag does not exist.

    A tag that holds something else than a bake cache is CacheError; a bake cache that cannot be read, UnusableCache.
    """
    found = cache_manifest(client, ref)
    if found is None:
        return None
    config, listed = found
    what = f"cache {ref}"
    response = client.request(
        "GET", f"/v2/{ref.repository}/blobs/{config.digest}", f"repository:{ref.repository}:pull", (200, 404), stream=True, what=what
    )
    if response.status_code == 404:  # (the tag is there, its map's blob is not: deleted, or collected)
        response.close()
        raise UnusableCache(f"{ref}: the cache map's blob {config.digest} is gone", hint="write the cache again with --cache-to")
    try:
        body = read_limited(response, Deadline(f"{client.registry}: {what}"), MAX_MAP_BYTES)
    except ResponseTooLarge:
        too_big = f"{ref}: the cache map is larger than {size_text(MAX_MAP_BYTES)}"
        raise UnusableCache(too_big, hint="write the cache again with --cache-to") from None
    except NetworkError as exc:  # cut short, or too slow: checked against its digest, it could not be used either
        raise UnusableCache(
            f"{ref}: the cache map did not arrive whole ({exc.message})", hint="write the cache again with --cache-to"
        ) from None
    finally:
        response.close()
    if sha256_digest(body) != config.digest:
        raise UnusableCache(f"{ref}: the cache map does not match its digest", hint="write the cache again with --cache-to")
    try:
        return json.loads(body), listed
    except (ValueError, RecursionError):
        raise UnusableCache(f"{ref}: the cache map is not JSON", hint="write the cache again with --cache-to") from None


def load_caches(
    refs: Iterable[CacheRef], client_for: Callable[[str], RegistryClient], say: Callable[[str], None], warn: Callable[[str], None]
) -> RegistryCache:
    """Read every `--cache-from` cache (a missing one is an empty cache); the first to name a key wins.

    One that cannot be read (unreachable, refused, cut short, malformed) is skipped with a warning: the bake goes on
    without it. A tag that holds an image or another artifact is an error (the reference is wrong).
    """
    cache = RegistryCache(warn=warn)
    for ref in refs:
        try:
            found = _read(client_for(ref.registry), ref)
            parsed = _parse_document(found[0], str(ref)) if found is not None else None
        except UnusableCache as exc:
            warn(f"{exc.message}: baked without it; {exc.hint}")
            continue
        except (RegistryError, NetworkError) as exc:  # unreachable, refused: a cache is a speed-up, as for buildx
            warn(f"cache {ref}: cannot be read ({exc.message}): baked without it")
            continue
        if parsed is None:
            say(f"cache {ref}: empty (no such tag yet)")
            continue
        for key, (desc, diff_id, _g) in parsed.layers.items():
            cache.layers.setdefault(key, (Layer(desc, diff_id, reused=True), ref.location))
        for sha, (info, _g) in parsed.packages.items():
            cache.packages.setdefault(sha, info)
        say(f"cache {ref}: {len(parsed.layers)} layers")
    return cache


def write_cache(
    client: RegistryClient,
    ref: CacheRef,
    entries: list[CacheEntry],
    packages: list[PackageInfo],
    store: BlobStore,
    pushed_to: str | None = None,
    suspect: frozenset[str] = frozenset(),
) -> CacheWrite:
    """Merge `entries` into the cache at `ref` (bounded: `bounded_map`); upload only missing blobs; tag last.
    `suspect`: blobs this registry served with other bytes (uploaded again and read back; left out if still wrong).

    A blob is mounted where it is already in the same registry: in the `--cache-from` repository it came from, or in
    `pushed_to` (registry/repository the image was just pushed to). A cache there that cannot be read is replaced
    (`CacheWrite.replaced` says why); a tag holding anything else is refused.
    """
    replaced = ""
    try:
        existing = _read(client, ref)
        old = _parse_document(existing[0], str(ref)) if existing is not None else CacheMap()
    except NewerCache as exc:
        return CacheWrite(0, 0, 0, skipped=exc.message)
    except UnusableCache as exc:
        old, replaced = CacheMap(), exc.message
    # Each blob is asked for (HEAD), not taken from the old manifest's list: a blob the repository lost is put back.
    # PUSH_JOBS at once, as a push sends them.
    unique = list({entry.layer.descriptor.digest: entry for entry in entries}.values())
    there = {entry.layer.descriptor.digest for entry in unique}
    stop = threading.Event()

    def local(digest: str) -> Path:
        path = store.path(digest)
        if not path.is_file():
            raise CacheError(f"layer {digest} is neither in the local cache nor mountable", hint="bake with --oci to fetch it")
        return path

    def send(entry: CacheEntry) -> str:
        digest = entry.layer.descriptor.digest
        read_back = store.temp_path if digest in suspect else None
        try:
            return send_blob(client, ref.repository, digest, entry.source or pushed_to, lambda: local(digest), stop, read_back)[0]
        except CorruptRegistryBlob:
            return "corrupt"

    sent = run_each(send, unique, PUSH_JOBS, stop)
    uploaded, mounted, present = sent.count("uploaded"), sent.count("mounted"), sent.count("present")
    corrupt = tuple(entry.layer.descriptor.digest for entry, how in zip(unique, sent, strict=True) if how == "corrupt")
    layers = {entry.key: (entry.layer.descriptor, entry.layer.diff_id) for entry in entries if entry.layer.descriptor.digest not in corrupt}
    document, counts = bounded_map(old, layers, packages, MAX_CACHE_LAYERS, MAP_BUDGET_BYTES)
    # (an older generation's entry for such a blob goes too: no runner is sent to it again)
    if corrupt:
        document["layers"] = {key: entry for key, entry in document["layers"].items() if entry["digest"] not in corrupt}
        counts = replace(counts, layers=len(document["layers"]))
    try:
        _put_map(client, ref, document)
    except RegistryError as exc:
        # A blob an older entry names is gone (the registry refuses a manifest listing it): those entries are
        # dropped, once, after asking for each older entry's blob; not before, where it would cost every write.
        if "BLOB_UNKNOWN" not in exc.message:
            raise
        older = {entry["digest"] for entry in document["layers"].values()} - there
        lost = {digest for digest in older if not client.has_blob(ref.repository, digest)}
        if not lost:
            raise
        kept = {key: entry for key, entry in document["layers"].items() if entry["digest"] not in lost}
        counts = replace(counts, layers=len(kept), dropped_layers=counts.dropped_layers + len(document["layers"]) - len(kept))
        document["layers"] = kept
        _put_map(client, ref, document)
    return replace(counts, uploaded=uploaded, mounted=mounted, present=present, replaced=replaced, corrupt=corrupt)


def _put_map(client: RegistryClient, ref: CacheRef, document: dict[str, Any]) -> None:
    """The map as the config of a manifest listing its layers' blobs (so registry GC keeps them), tagged last."""
    body = canonical_json(document)
    config_digest = client.put_blob(ref.repository, body)
    listed = {entry["digest"]: Descriptor(entry["media_type"], entry["digest"], entry["size"]) for entry in document["layers"].values()}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CACHE_ARTIFACT,
        "config": {"mediaType": CACHE_CONFIG, "digest": config_digest, "size": len(body)},
        "layers": [d.to_json() for d in sorted(listed.values(), key=lambda d: d.digest)],
    }
    client.put_manifest(ref.repository, ref.tag, canonical_json(manifest), OCI_MANIFEST)


TRANSFER_FAILED = "did not arrive whole (cut short, or too slow)"  # (fetch_layers: says nothing of the registry's bytes)


def fetch_layers(
    blobs: dict[str, str],
    sizes: dict[str, int],
    store: BlobStore,
    client_for: Callable[[str], RegistryClient],
    progress: Progress = SILENT,
) -> tuple[int, dict[str, str]]:
    """Download (digest-checked, no bigger than its descriptor says) every cache-only layer blob an output needs
    into `store` (step "download cached layers"): how many, and those the registry served with other bytes
    (digest -> what was wrong), which are not kept: the bake builds those layers itself."""
    wanted = {digest: source for digest, source in blobs.items() if not store.has_sized(digest, sizes[digest])}
    if not wanted:
        return 0, {}
    step = "download cached layers"
    progress.start(step, total=len(wanted), unit="layers")
    served_wrong: dict[str, str] = {}
    for digest, source in wanted.items():
        registry, _, repository = source.partition("/")
        try:
            fetch_into_store(client_for(registry), repository, digest, sizes[digest], store)
        except BlobMismatch:
            served_wrong[digest] = "arrived with another digest"
        except ResponseTooLarge:
            if sizes[digest] > max_download_bytes():  # (a blob over the download cap: refused, not built here)
                raise
            served_wrong[digest] = "arrived bigger than the cache map says"
        except BlobUnknown:  # (its HEAD may still say it is there: the map and the blobs are the registry's word)
            served_wrong[digest] = "is no longer in the registry"
        except NetworkError:  # cut short, too slow: built here, as a cache is a speed-up
            served_wrong[digest] = TRANSFER_FAILED
        progress.advance(step)
    got = [digest for digest in wanted if digest not in served_wrong]
    total = sum(sizes[digest] for digest in got)
    progress.done(step, f"{counted(len(got), 'layer')}, {total / 1e6:.1f} MB from the registry cache (an output needs their bytes)")
    return len(got), served_wrong


class RegistryClients:
    """One RegistryClient per registry for a bake, and the cache steps the bake command runs."""

    def __init__(self, insecure: tuple[str, ...], push_target: str | None = None) -> None:
        self.insecure = insecure
        self.push_target = push_target  # the registry the environment's credentials are for (RegistryClient)
        self.clients: dict[str, RegistryClient] = {}

    def client(self, registry: str) -> RegistryClient:
        if registry not in self.clients:
            on_target = registry == self.push_target
            self.clients[registry] = RegistryClient(registry, insecure=registry in self.insecure, push_target=on_target)
        return self.clients[registry]

    def load(self, refs: list[CacheRef], say: Callable[[str], None], warn: Callable[[str], None]) -> RegistryCache:
        cache = load_caches(refs, self.client, say, warn)
        cache.present = self.blob_size
        return cache

    def blob_size(self, location: str, digest: str) -> int | None:
        registry, _, repository = location.partition("/")
        return self.client(registry).blob_size(repository, digest)

    def check_target(self, ref: CacheRef) -> None:
        """Refuse a `--cache-to` that cannot be written, before anything is built: an unreachable registry, a tag
        that holds an image or another artifact."""
        cache_manifest(self.client(ref.registry), ref)

    def fetch_needed(
        self, baked: object, store: BlobStore, local: bool, pushed_to: list[str], progress: Progress = SILENT
    ) -> tuple[int, dict[str, str]]:
        """Download the cache-only layers an output needs: all of them for --oci/--docker-archive, else those
        that cannot be mounted because the push goes to another registry (`fetch_layers`)."""
        remote: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for image in baked.platforms:  # type: ignore[attr-defined]
            remote.update(image.remote_blobs)
            sizes.update({layer.descriptor.digest: layer.descriptor.size for layer in image.layers})
        needed = {d: s for d, s in remote.items() if local or any(not s.startswith(r + "/") for r in pushed_to)}
        return fetch_layers(needed, sizes, store, self.client, progress)

    def store_cache(
        self, ref: CacheRef, baked: object, store: BlobStore, pushed_to: str | None = None, suspect: frozenset[str] = frozenset()
    ) -> CacheWrite:
        entries = [e for image in baked.platforms for e in image.cache_entries]  # type: ignore[attr-defined]
        infos = list({i.sha256: i for image in baked.platforms for i in image.infos}.values())  # type: ignore[attr-defined]
        return write_cache(self.client(ref.registry), ref, entries, infos, store, pushed_to, suspect)
