"""Lock + base + settings -> a reproducible OCI image (one manifest per platform, an index for several).

Every byte is decided by the inputs: packages come from the lock (sha256-checked),
layers are deterministic tarballs, JSON is canonical and timestamps come from
SOURCE_DATE_EPOCH (default 0). Same lock + same base + same settings = same digest.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from conda_envkit import __version__
from conda_envkit.archive_check import (
    NotStreamable,
    PayloadLinks,
    check_payload_links,
    payload_links,
    stage_package_archive,
)
from conda_envkit.cache import CACHE_SETTING, cache_dir_or_default, fragments_dir, layers_dir, tmp_dir
from conda_envkit.cache_seal import user_seal
from conda_envkit.channels import ChannelSettings, strip_credentials
from conda_envkit.clobbers import clobbers_text, environment_clobbers, installed_paths, path_order, record_for_clobbers
from conda_envkit.cpus import usable_cpus
from conda_envkit.errors import EnvkitError
from conda_envkit.files import process_temp_dir, remove_orphans, write_error
from conda_envkit.install import (
    FetchedPackage,
    archive_label,
    check_info_is_locked,
    checked_once,
    conda_packages,
    fetch_packages,
    install_packages,
    is_checked,
    lock_hosts,
    mark_checked,
    package_info,
    pip_index_templates,
    pip_packages,
)
from conda_envkit.installed_state import IDENTITY_FILE, LOCK_COPY, identity_bytes
from conda_envkit.labels import LABEL_PREFIX, ImageLabels
from conda_envkit.layer_plan import KeyContext, LayerPolicy, PlannedLayer, PlannedPackage, fragment_key, layer_key, plan_layers
from conda_envkit.layer_processes import (
    LayerProcesses,
    LayerWorkerError,
    StreamedLayer,
    StreamedLayerJob,
    process_count,
    stream_conda,
)
from conda_envkit.lockmodel import LockedPackage as LockedDependency
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import hosts_with_credentials, lock_hash, platform_lock_hash
from conda_envkit.noarch_python import PythonTarget, python_target
from conda_envkit.oci.blobs import BlobStore, Descriptor
from conda_envkit.oci.image import BaseImage, ImageSettings, image_config, oci_platform, put_index, put_manifest, rfc3339
from conda_envkit.oci.layer import (
    CacheEntry,
    Compression,
    Compressors,
    FragmentStore,
    Layer,
    LayerCache,
    PendingFragment,
    write_layer,
    zstd_workers,
)
from conda_envkit.oci.tarstream import Member, hard_linked, member_from_disk
from conda_envkit.pkginfo import PackageInfo, PackageInfoCache
from conda_envkit.progress import SILENT, Progress, counted
from conda_envkit.stream_package import NotPlain, package_members
from conda_envkit.thread_pool import ThreadPool

if TYPE_CHECKING:  # the registry client (requests), jinja2 and pypa's installer load only when a bake uses them
    from conda_envkit.recipes import Recipe
    from conda_envkit.registry_cache import RegistryCache
    from conda_envkit.stream_wheel import WheelPlan

ENVIRONMENT_FILE = LOCK_COPY.parent / "environment.json"
_Written = TypeVar("_Written")


class BakeError(EnvkitError):
    """A bake that cannot be done as asked."""


@dataclass(frozen=True)
class BakeOptions:
    """Everything a bake depends on besides the lock and the base."""

    name: str = "env"
    prefix: str | None = None
    compression: Compression = field(default_factory=Compression)
    policy: LayerPolicy = field(default_factory=LayerPolicy)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    workdir: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    epoch: int = 0
    files: tuple[tuple[str, Path], ...] = ()  # (absolute path in the image, source file): a recipe's extra files
    jobs: int | None = None  # zstd layers written at once: this process and jobs-1 workers (None: auto); in no digest

    @property
    def in_image_prefix(self) -> str:
        return self.prefix or f"/opt/conda/envs/{self.name}"


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH from the environment (reproducible-builds.org), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return int(value)
    except ValueError:
        raise BakeError(f"SOURCE_DATE_EPOCH={value!r} is not an integer", hint="set it to seconds since 1970, or unset it") from None


def _about(locked: LockedDependency, info: PackageInfo) -> dict[str, str]:
    """What the bake record says about a package (name, version, build, subdir, url, sha256, license)."""
    if locked.manager == "pip":
        return {
            "name": locked.name,
            "version": locked.version,
            "url": strip_credentials(locked.locked_url),
            "sha256": info.sha256,
            "manager": "pip",
        }
    about = {
        "name": locked.name,
        "version": locked.version,
        "build": locked.build or "",
        "subdir": info.subdir,
        "url": strip_credentials(locked.locked_url),
        "sha256": info.sha256,
        "license": info.license or "",
    }
    return {k: v for k, v in about.items() if v}


def _plan_name(locked: LockedDependency) -> str:
    return locked.name if locked.manager == "conda" else f"pip:{locked.name}"


def locked_infos(
    lockfile: Lockfile,
    platform: str,
    cache_dir: Path,
    settings: ChannelSettings | None,
    progress: Progress = SILENT,
    remote: RegistryCache | None = None,
) -> tuple[list[tuple[LockedDependency, PackageInfo]], dict[str, FetchedPackage]]:
    """Every package of the platform with its info: from the info cache or a registry cache, else read once from its
    archive; and the packages fetched for that (by plan name, `pip:` before a wheel's: the layers need not fetch them again)."""
    locked = conda_packages(lockfile, platform) + pip_packages(lockfile, platform)
    cache = PackageInfoCache(cache_dir)
    known = remote.packages if remote is not None else {}
    infos = {p.hash.sha256: cache.get((p.hash.sha256 or "").lower()) or known.get((p.hash.sha256 or "").lower()) for p in locked}
    missing = [p for p in locked if infos[p.hash.sha256] is None]
    if missing:
        indexes = pip_index_templates(lockfile, platform)
        hosts = lock_hosts(lockfile, indexes)
        report = fetch_packages(
            missing, cache_dir, settings, pip_indexes=indexes, allowed_hosts=hosts, progress=progress, step=f"download {platform}"
        )
        # Read one after another: a cache entry is written without fsync, so its file's creation waits on the
        # directory's lock and the CPU, not on the disk. Four at once took the same time or more, for ~0.4 s more CPU
        # on the 290 packages of the bench env (docs/bake.md, Measuring).
        read = [package_info(fetched, cache_dir) for fetched in report.packages]
        for fetched, info in zip(report.packages, read, strict=True):
            infos[fetched.locked.hash.sha256] = info
        return [(p, infos[p.hash.sha256]) for p in locked], {_plan_name(f.locked): f for f in report.packages}  # type: ignore[misc]
    return [(p, infos[p.hash.sha256]) for p in locked], {}  # type: ignore[misc]


def plan_packages(
    pairs: list[tuple[LockedDependency, PackageInfo]], clobbers: dict[str, dict[str, str]] | None = None
) -> list[PlannedPackage]:
    """The packages as the layer plan sees them (`clobbers`: the paths each loses to another package's file)."""
    clobbers = clobbers or {}
    out = []
    for locked, info in pairs:
        if locked.manager == "pip":
            label = f"pip:{locked.name}-{locked.version}"
        else:
            label = f"{locked.name}-{locked.version}-{locked.build}"
        bound = locked.manager == "pip" or info.noarch == "python"
        lost = tuple(sorted(clobbers.get(_plan_name(locked), ()), key=path_order))
        url = strip_credentials(locked.locked_url)
        out.append(PlannedPackage(_plan_name(locked), label, info.sha256, url, info.installed_size, bound, lost))
    return out


def staged_paths(prefix: Path, moved: dict[str, dict[str, str]] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Each installed package's paths in a prefix (plan name -> (prefix-relative path, where its file is in `prefix`),
    its record last); `moved`: a conda package's paths whose file is elsewhere in `prefix` (clobbers)."""
    from conda_envkit.pip_install import PIP_RECORDS  # pypa's installer: not loaded by a warm bake

    out: dict[str, list[tuple[str, str]]] = {}
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        elsewhere = (moved or {}).get(record["name"], {})
        paths = [(p, elsewhere.get(p, p)) for p in record.get("files", [])]
        record_path = f"conda-meta/{meta.name}"
        out[record["name"]] = [*((p, at) for p, at in paths if os.path.lexists(prefix / at)), (record_path, record_path)]
    for meta in sorted((prefix / PIP_RECORDS).glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        written = [str(f["_path"]) for f in record.get("files", []) if os.path.lexists(prefix / f["_path"])]
        out[f"pip:{record['name']}"] = [(p, p) for p in [*written, f"{PIP_RECORDS}/{meta.name}"]]
    return out


def _relinked_records(staging: Path, names: list[str], clobbers: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The conda-meta records of `names` linked in `staging` (a part of the environment) rewritten for the whole
    environment's `clobbers` (rattler saw only that part); per package, the paths whose file is elsewhere there."""
    moved: dict[str, dict[str, str]] = {}
    for meta in sorted((staging / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        if record.get("name") in names:
            moved[record["name"]] = record_for_clobbers(record, clobbers.get(record["name"], {}))
            meta.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
    return moved


def metadata_members(in_image: str, lock_bytes: bytes, labels: dict[str, str], platform: str) -> list[Member]:
    """The files of an environment no package owns: conda-meta/history, the lock copy, environment.json, and the
    prefix's identity (platform and path, as `envkit install` writes it: an install into the image's prefix syncs)."""
    about = {"schema": "envkit.image-environment/1", "labels": labels}
    files = {
        "conda-meta/history": b"",
        LOCK_COPY.as_posix(): lock_bytes,
        ENVIRONMENT_FILE.as_posix(): (json.dumps(about, sort_keys=True) + "\n").encode(),
        IDENTITY_FILE.as_posix(): identity_bytes(platform, "/" + in_image),
    }
    return [Member(f"{in_image}/{path}", size=len(data), data=data) for path, data in files.items()]


@dataclass(frozen=True)
class LayerSource:
    """Where a layer of the image came from: `built` by this bake (`read`: the labels of its packages read from
    their archives; the others' files came from the fragment cache), or reused from the `layer-cache` or a
    `registry-cache` (--cache-from)."""

    kind: str
    read: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image: its manifest and config descriptors, layers and metadata."""

    platform: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Layer, ...]
    layer_packages: tuple[tuple[str, ...], ...]
    labels: dict[str, str]
    base: BaseImage
    seconds: float
    reused_layers: int
    packages: tuple[dict[str, str], ...] = ()
    cache_entries: tuple[CacheEntry, ...] = ()  # the package layers by their keys, for --cache-to
    infos: tuple[PackageInfo, ...] = ()
    remote_blobs: dict[str, str] = field(default_factory=dict)  # layer digest -> registry/repo (from --cache-from)
    warnings: tuple[str, ...] = ()  # cache entries that did not match their keys (rebuilt)
    sources: tuple[LayerSource, ...] = ()  # of each layer, as `layers`


def image_env(options: BakeOptions) -> dict[str, str]:
    """The environment variables envkit sets in an image (PATH aside), then the user's."""
    prefix = options.in_image_prefix
    return {
        "CONDA_PREFIX": prefix,
        "CONDA_DEFAULT_ENV": options.name,
        "ENVKIT_LOCK_FILE": f"{prefix}/{LOCK_COPY.as_posix()}",
        **options.env,
    }


def stage_environment(
    lock_copy: bytes,
    lockfile: Lockfile,
    platform: str,
    staging: Path,
    prefix: str,
    labels: dict[str, str],
    cache_dir: Path,
    settings: ChannelSettings | None,
    progress: Progress = SILENT,
) -> None:
    """Install one platform into `staging` for `prefix`, with the lock copy (`lock_copy`: the lock's bytes as they
    were read) and environment.json.

    The environment bytes of an image: `bake` layers them, `dockerfile` copies them.
    """
    install_packages(lockfile, platform, staging, prefix, cache_dir, settings, progress)
    copy = staging / LOCK_COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(lock_copy)
    # What the environment is, readable inside the container (conda_envkit.tracking).
    about = {"schema": "envkit.image-environment/1", "labels": labels}
    (staging / ENVIRONMENT_FILE).write_text(json.dumps(about, sort_keys=True) + "\n", encoding="utf-8")
    (staging / IDENTITY_FILE).write_bytes(identity_bytes(platform, "/" + prefix.strip("/")))  # (as bake's metadata layer)


def image_labels(lockfile: Lockfile, platform: str, options: BakeOptions, base: BaseImage) -> dict[str, str]:
    """Labels and annotations: org.opencontainers.image.* plus envkit's own keys."""
    facts = lockfile.envkit.for_platform(platform) if lockfile.envkit else None
    envkit = ImageLabels(
        lock_hash=str(lock_hash(lockfile)),
        platform_lock_hash=str(platform_lock_hash(lockfile, platform)),
        platform=platform,
        prefix=options.in_image_prefix,
        cuda=facts.cuda_driver if facts else None,
        cuda_version=facts.cuda_version if facts else None,
        blas=facts.blas if facts else None,
        recorded=facts is not None,
        envkit_version=__version__,
    )
    labels = {
        "org.opencontainers.image.created": rfc3339(options.epoch),
        "org.opencontainers.image.title": options.name,
        "org.opencontainers.image.version": platform_lock_hash(lockfile, platform).short,
        "org.opencontainers.image.base.name": base.reference,
        **envkit.to_json(),
    }
    if base.digest:
        labels["org.opencontainers.image.base.digest"] = base.digest
    labels.update(options.labels)
    return labels


def bake_platform(
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    base: BaseImage,
    options: BakeOptions,
    store: BlobStore,
    cache_dir: Path,
    settings: ChannelSettings | None = None,
    progress: Progress = SILENT,
    remote: RegistryCache | None = None,
    lock_copy: bytes | None = None,
) -> PlatformImage:
    """One platform of the lock as an image manifest: plan the layers from the lock, build only those not cached.

    `remote` (from --cache-from) supplies layers by reference: their blobs stay in the registry. `lock_copy`: the
    lock's bytes as they were read (else read again from `lockfile_path`), for the image's copy of it.
    """
    started = time.perf_counter()
    oci_platform(platform)
    prefix = options.in_image_prefix
    if not prefix.startswith("/") or ".." in PurePosixPath(prefix).parts or prefix == "/":
        raise BakeError(f"--prefix {prefix!r} must be an absolute path below /", hint="e.g. /opt/conda/envs/train")
    try:  # the cache must be writable before anything is fetched into it
        (tmp_dir(cache_dir)).mkdir(parents=True, exist_ok=True)
        os.close(tempfile.mkstemp(prefix=".probe.", dir=tmp_dir(cache_dir))[0])
    except OSError as exc:
        raise write_error(tmp_dir(cache_dir), exc, "cache directory", CACHE_SETTING) from None
    for probe in (tmp_dir(cache_dir)).glob(".probe.*"):
        probe.unlink(missing_ok=True)
    labels = image_labels(lockfile, platform, options, base)
    pairs, fetched = locked_infos(lockfile, platform, cache_dir, settings, progress, remote)
    python = next((info for locked, info in pairs if locked.manager == "conda" and locked.name == "python"), None)
    target = python_target(python.version, platform, python.python_site_packages_path) if python else None
    # Paths several packages install: the files of all but one go to __clobbers__, as `envkit install` has them
    # (named after each package as the lock names it: an archive naming another is refused first).
    for locked, info in pairs:
        if locked.manager == "conda":
            check_info_is_locked(info, locked, locked.url.rsplit("/", 1)[-1])
    clobbers = environment_clobbers([info for locked, info in pairs if locked.manager == "conda"], platform)
    plans = plan_layers(plan_packages(pairs, clobbers), options.policy, len(base.layers) + bool(options.files))
    context = KeyContext(prefix, platform, options.compression.key, options.epoch, python.sha256 if python else "")
    keys = [layer_key(plan, context) for plan in plans]
    seal = user_seal()
    layer_cache = LayerCache(layers_dir(cache_dir, seal.owner), seal)
    fragments = FragmentStore(fragments_dir(cache_dir, seal.owner), seal)
    cached = _cached_layers(layer_cache, keys, options.compression, store)
    remote_blobs: dict[str, str] = {}
    for i, key in enumerate(keys):
        found = remote.lookup(key, options.compression.media_type) if remote is not None and cached[i] is None else None
        if found is not None:
            cached[i] = found[0]
            remote_blobs[found[0].descriptor.digest] = found[1]
    todo = [i for i, layer in enumerate(cached) if layer is None]
    by_name = {_plan_name(locked): (locked, info) for locked, info in pairs}
    step = f"layers {platform}"
    progress.start(step, total=len(todo), unit="layers")
    build_warnings: list[str] = []
    read: list[str] = []  # the packages read from their archives
    layers = build_layers(
        lockfile,
        platform,
        [plans[i] for i in todo],
        by_name,
        context,
        options,
        store,
        cache_dir,
        settings,
        fragments,
        progress,
        fetched,
        target,
        clobbers,
        build_warnings,
        read,
    )
    for i, layer in zip(todo, layers, strict=True):
        layer_cache.remember(keys[i], layer, store)
        cached[i] = layer
    warnings = (*_cache_warnings(platform, plans, keys, context, layer_cache, fragments), *build_warnings)
    if clobbers:
        warnings = (*warnings, f"{platform}: {clobbers_text(clobbers)}")
    base_warning = base_environment_warning(base, prefix, platform)
    if base_warning is not None:
        warnings = (*warnings, base_warning)
    foreign = _foreign_entries(cache_dir, seal.owner, [keys[i] for i in todo])
    if foreign and not seal.problem:
        warnings = (
            *warnings,
            f"{platform}: {foreign} of the layers built had an entry in this cache sealed by another secret (a cache restored "
            "from another runner, or a new secret): not trusted, so built again; to share warm layers between runners, "
            "give them the same seal secret ($XDG_STATE_HOME/envkit/cache-seal.key; docs/security.md, Caches)",
        )
    if seal.problem:
        hint = "make $XDG_STATE_HOME (default ~/.local/state) writable, or point XDG_STATE_HOME at a private directory"
        warnings = (*warnings, f"{seal.problem}: layers cached by earlier bakes are not trusted and were built again; {hint}")
    written: list[Layer] = [layer for layer in cached if layer is not None]
    entries = tuple(CacheEntry(key, layer, remote_blobs.get(layer.descriptor.digest)) for key, layer in zip(keys, written, strict=True))
    in_image = prefix.strip("/")
    titles = [plan.title for plan in plans]
    contents = [tuple(p.label for p in plan.packages) for plan in plans]
    lock_bytes = lockfile_path.read_bytes() if lock_copy is None else lock_copy
    written.append(write_layer(metadata_members(in_image, lock_bytes, labels, platform), store, options.compression, options.epoch))
    titles.append("environment metadata (conda-meta, lock)")
    contents.append(())
    if options.files:
        extra = [member_from_disk(dest.strip("/"), source) for dest, source in options.files]
        written.append(write_layer(extra, store, options.compression, options.epoch))
        titles.append("recipe files")
        contents.append(())
    reused = len(plans) - len(todo)
    size = sum(layer.descriptor.size for layer in written)
    sources = _layer_sources(plans, todo, cached, remote_blobs, set(read))
    from_registry = f", {len(remote_blobs)} from a registry cache" if remote_blobs else ""
    built = f"; built: {_built_text(plans, sources)}" if reused and todo else ""
    reused_text = f"{reused - len(remote_blobs)} reused from the layer cache{from_registry}{built}"
    progress.done(step, f"{counted(len(written), 'layer')}, {size / 1e6:.1f} MB ({reused_text})")
    image_settings = ImageSettings(
        env=image_env(options),
        path_prepend=(f"{prefix}/bin",),
        entrypoint=options.entrypoint,
        cmd=options.cmd,
        workdir=options.workdir,
        user=options.user,
        labels=labels,
        created=options.epoch,
    )
    history = [f"envkit bake: {title}" for title in titles]
    config = image_config(base, written, history, image_settings, platform)
    manifest, config_desc = put_manifest(store, config, [*base.layers, *written], labels)
    return PlatformImage(
        platform=platform,
        manifest=manifest,
        config=config_desc,
        layers=tuple(written),
        layer_packages=tuple(contents),
        labels=labels,
        base=base,
        seconds=time.perf_counter() - started,
        reused_layers=reused,
        packages=tuple(_about(locked, info) for locked, info in sorted(pairs, key=lambda pair: _plan_name(pair[0]))),
        cache_entries=entries,
        infos=tuple(info for _, info in pairs),
        remote_blobs=remote_blobs,
        sources=(*sources, *(LayerSource("built") for _ in written[len(plans) :])),
        warnings=warnings,
    )


def _foreign_entries(cache_dir: Path, owner: str, keys: list[str]) -> int:
    """How many of `keys` have a layer entry under another seal's directory of the cache that this user owns (a cache
    restored from another runner, or kept across a new secret; another user's in a team cache is theirs, and not
    counted). The entries are not read: only counted."""
    try:
        others = [
            d
            for d in (cache_dir / "layers").iterdir()
            if d.name != owner and not d.is_symlink() and d.is_dir() and d.stat().st_uid == os.getuid()
        ]
    except OSError:
        return 0
    return sum(1 for key in keys if any(os.path.lexists(d / key) for d in others))


def _cached_layers(layer_cache: LayerCache, keys: list[str], compression: Compression, store: BlobStore) -> list[Layer | None]:
    """Each key's layer from the layer cache, or None. A blob whose stamp moved (the hard links of an output
    directory removed since, a cache restored) is read and hashed again before it is used: on as many threads as
    there are CPUs, biggest first (hashlib and reads let go of the GIL), as a warm bake into a fresh --oci
    directory reads every blob."""
    cpus = usable_cpus()
    stale = {i: size for i, key in enumerate(keys) if (size := layer_cache.stale_size(key, store))} if cpus > 1 else {}
    threads = min(cpus, len(stale))
    if threads < 2:
        return [layer_cache.lookup(key, compression, store) for key in keys]
    with ThreadPool(max_workers=threads) as pool:
        read = {i: pool.submit(layer_cache.lookup, keys[i], compression, store) for i in sorted(stale, key=lambda i: -stale[i])}
        return [read[i].result() if i in read else layer_cache.lookup(key, compression, store) for i, key in enumerate(keys)]


def base_environment_warning(base: BaseImage, prefix: str, platform: str) -> str | None:
    """The warning for a base that holds a conda environment (a conda-meta/) where the lock's goes, or None."""
    if posixpath.normpath("/" + prefix.strip("/")) not in base.conda_prefixes:
        return None
    return (
        f"{platform}: the base {base.reference} already holds a conda environment at {prefix}: this lock's environment is laid "
        "over it, and the base's files and conda-meta records that it does not replace stay in the image (conda list and "
        f"envkit verify --image show them); bake into another --prefix, or use a base without an environment there"
    )


def _cache_warnings(
    platform: str, plans: list[PlannedLayer], keys: list[str], context: KeyContext, layers: LayerCache, fragments: FragmentStore
) -> tuple[str, ...]:
    """One warning per cache entry (not sealed by this user) that named another blob than its key's packages make."""

    def named(packages: list[str]) -> str:
        return ", ".join(packages[:5]) + (f" and {len(packages) - 5} more" if len(packages) > 5 else "")

    out = []
    by_key = dict(zip(keys, plans, strict=True))
    for key, claimed, built in layers.mismatched:
        labels = [p.label for p in by_key[key].packages]
        out.append(
            f"{platform}: the layer cache entry {key[:12]} (packages {named(labels)}) named blob {claimed[:19]}, "
            f"which is not the layer of those packages ({built[:19]}): the layer was built again; someone else can write this cache"
        )
    by_fragment = {fragment_key(p, context): p.label for plan in plans for p in plan.packages} if fragments.mismatched else {}
    for key in fragments.mismatched:
        out.append(
            f"{platform}: the fragment cache entry {key[:12]} (package {by_fragment.get(key, '?')}) did not hold that package's files: "
            "it was read again from its archive; someone else can write this cache"
        )
    return tuple(out)


def _stage_plain(
    fetched: FetchedPackage,
    cache_dir: Path,
    in_image: str,
    payload: Path,
    python: PythonTarget | None = None,
    renamed: dict[str, str] | None = None,
) -> tuple[PayloadLinks, list[Member] | None]:
    """A plain package checked and staged (its archive decompressed once, onto the end of `payload`): its link
    summary for the check across packages, and its members (None if it must be linked). The archive's entry
    list is not kept: a bake holds what this returns for every package until all are read."""
    locked, archive = fetched.locked, fetched.archive
    # The same check as `envkit install`'s (paths inside the prefix, paths.json's hashes and sizes); an
    # archive checked before (as it is now) has its files' hashes checked already: they are not hashed again.
    label = archive_label(locked)
    staged = checked_once(fetched, lambda hashed: stage_package_archive(archive, label, payload, hashed=hashed))
    # Read again from the verified archive (or the local info cache): info from a registry cache only plans.
    info = package_info(fetched, cache_dir)
    links = payload_links(label, staged.checked())
    if not info.plain:
        return links, None
    try:
        return links, package_members(staged, locked, info, in_image, python, renamed)
    except NotPlain:
        return links, None


def _stream_plain(
    fetched: FetchedPackage,
    cache_dir: Path,
    in_image: str,
    write: Callable[[Iterable[Member]], _Written],
    python: PythonTarget | None = None,
    renamed: dict[str, str] | None = None,
) -> tuple[_Written, PayloadLinks]:
    """A plain `.conda`'s members written (`write`: its own layer, or its fragment for a group layer; members in
    archive order) as its archive is read and checked, front to back, with nothing staged on disk; and its link
    summary. NotStreamable or NotPlain if the archive must be staged (or its package linked) instead: `write`
    must then keep nothing of what it was given."""
    locked, archive = fetched.locked, fetched.archive
    label = archive_label(locked)
    info = package_info(fetched, cache_dir)
    if not info.plain:
        raise NotPlain(label)
    # An archive checked before is not hashed again; one whose files this read hashed is marked checked.
    return checked_once(fetched, lambda hashed: stream_conda(archive, label, hashed, locked, info, in_image, write, python, renamed))


def _streamed_layer_job(
    fetched: FetchedPackage,
    cache_dir: Path,
    in_image: str,
    store: BlobStore,
    options: BakeOptions,
    python: PythonTarget | None,
    renamed: dict[str, str] | None,
) -> StreamedLayerJob | None:
    """A plain `.conda`'s own layer as a worker process writes it (None if it is not plain: `_stream_plain` then
    says so). The archive is marked checked by the bake once the worker hashed its files (`_layer_from_worker`)."""
    info = package_info(fetched, cache_dir)
    if not info.plain:
        return None
    label, sha256 = archive_label(fetched.locked), (fetched.locked.hash.sha256 or "").lower()
    hashed = not is_checked(fetched.archive, sha256)
    return StreamedLayerJob(
        fetched.archive, label, hashed, fetched.locked, info, in_image, python, renamed, store.root, options.compression, options.epoch
    )


def _conda_paths(by_name: dict[str, tuple[LockedDependency, PackageInfo]], python: PythonTarget | None) -> dict[str, str]:
    """Every path the environment's conda packages install (their entry points' scripts included): its package's label."""
    taken: dict[str, str] = {}
    for locked, info in by_name.values():
        if locked.manager == "conda":
            files, scripts = installed_paths(info, python)
            taken.update(dict.fromkeys([*files, *scripts], f"{locked.name}-{locked.version}-{locked.build}"))
    return taken


def _refuse_wheel_over_conda(platform: str, wheel: LockedDependency, paths: Iterable[str], conda_paths: dict[str, str]) -> None:
    """A PipInstallError, as `envkit install` gives it, if `wheel` writes (`paths`) a path a conda package installs
    (`conda_paths`: its package's label)."""
    from conda_envkit.pip_install import PipInstallError

    for path in paths:
        if path in conda_paths:
            raise PipInstallError(
                f"{platform}: pip package {wheel.name} {wheel.version} would overwrite {path}, "
                f"which conda package {conda_paths[path]} installed",
                hint="drop one of the two from the lock (the other provides that file) and re-lock",
            )


def _wheel_plans(
    names: list[str],
    by_fetched: dict[str, FetchedPackage],
    in_image: str,
    platform: str,
    python: PythonTarget | None,
    conda_paths: dict[str, str],
) -> dict[str, WheelPlan]:
    """What installer writes for each wheel of `names` (conda_envkit.stream_wheel.plan_wheel), for those the bake
    streams: not one installer would refuse or install otherwise, nor two that write the same path (installed
    together in a staging prefix, the second is refused, as `envkit install` refuses it). A wheel writing a path a
    conda package installs (`conda_paths`) is refused, as `envkit install` refuses it."""
    from conda_envkit.pip_install import WheelToInstall  # pypa's installer: not loaded by a warm bake
    from conda_envkit.stream_wheel import plan_wheel

    if python is None:
        return {}
    plans: dict[str, WheelPlan] = {}
    owners: dict[str, str] = {}
    clashing: set[str] = set()
    for name in names:
        fetched = by_fetched[name]
        locked = fetched.locked
        item = WheelToInstall(locked.name, locked.version, locked.locked_url, locked.hash.sha256 or "", fetched.archive)
        try:
            plans[name] = plan_wheel(item, in_image, platform, python.version)
        except NotPlain:
            continue
        _refuse_wheel_over_conda(platform, locked, (file.path for file in plans[name].files), conda_paths)
        for file in plans[name].files:
            owner = owners.setdefault(file.path, name)
            if owner != name:
                clashing |= {owner, name}
    return {name: plan for name, plan in plans.items() if name not in clashing}


def _stream_wheel(
    fetched: FetchedPackage, plan: WheelPlan, in_image: str, write: Callable[[Iterable[Member]], _Written]
) -> tuple[_Written, PayloadLinks]:
    """A wheel's members written (`write`) as installer installs it (`plan`): its files read from the wheel as they
    are written, nothing extracted. NotPlain if it must be installed in a staging prefix instead (a file that is
    not what its RECORD says): `write` must then keep nothing of what it was given."""
    from conda_envkit.stream_wheel import wheel_members

    return write(wheel_members(plan, fetched.archive, in_image)), payload_links(archive_label(fetched.locked), [])


def _layer_from_worker(job: StreamedLayerJob, pending: Future[StreamedLayer], store: BlobStore) -> tuple[Layer, PayloadLinks]:
    """The layer a worker wrote (its blob trusted as written, its archive marked checked if the worker hashed its
    files: `checked_once` split across the two processes); NotStreamable if the worker left the package to be
    staged or linked."""
    done = pending.result()
    if done.layer is None or done.links is None:
        raise NotStreamable
    if done.stamp is not None:
        store.note_checked(done.layer.descriptor.digest, done.stamp)
    if job.hashed:
        mark_checked(job.archive, (job.locked.hash.sha256 or "").lower())
    return done.layer, done.links


class _SkipStep:
    """A Progress that passes on every step but one."""

    def __init__(self, progress: Progress, *skipped: str) -> None:
        self.progress = progress
        self.skipped = skipped

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        if step not in self.skipped:
            self.progress.start(step, total, unit)

    def advance(self, step: str, amount: int = 1, detail: str = "") -> None:
        if step not in self.skipped:
            self.progress.advance(step, amount, detail)

    def done(self, step: str, summary: str = "") -> None:
        if step not in self.skipped:
            self.progress.done(step, summary)


_STAGED_AHEAD = 2


def _layer_sources(
    plans: list[PlannedLayer], todo: list[int], layers: list[Layer | None], remote_blobs: dict[str, str], read: set[str]
) -> list[LayerSource]:
    """Each planned layer's LayerSource (`read`: the names of the packages read from their archives)."""
    out = []
    for i, (plan, layer) in enumerate(zip(plans, layers, strict=True)):
        if i in todo:
            out.append(LayerSource("built", tuple(p.label for p in plan.packages if p.name in read)))
        else:
            out.append(LayerSource("registry-cache" if layer is not None and layer.descriptor.digest in remote_blobs else "layer-cache"))
    return out


def _built_text(plans: list[PlannedLayer], sources: list[LayerSource], shown: int = 3) -> str:
    """The layers a bake built while others were reused, and what each read from archives (the package that
    changed, on a warm runner; every member, on a fresh one), for the progress line."""
    texts = []
    for plan, source in zip(plans, sources, strict=True):
        if source.kind != "built":
            continue
        if plan.single:
            texts.append(plan.title)
            continue
        labels = ", ".join(source.read) if 0 < len(source.read) <= shown else ""
        texts.append(f"{plan.title}, {len(source.read)} read from their archives" + (f" ({labels})" if labels else ""))
    more = f"; {len(texts) - shown} more" if len(texts) > shown else ""
    return "; ".join(texts[:shown]) + more


def _layer_order(packages: tuple[PlannedPackage, ...]) -> list[PlannedPackage]:
    # Conda records by file name, then pip (clobbered conda paths are already apart: conda_envkit.clobbers).
    return sorted(packages, key=lambda p: (p.name.startswith("pip:"), p.label))


def build_layers(
    lockfile: Lockfile,
    platform: str,
    plans: list[PlannedLayer],
    by_name: dict[str, tuple[LockedDependency, PackageInfo]],
    context: KeyContext,
    options: BakeOptions,
    store: BlobStore,
    cache_dir: Path,
    settings: ChannelSettings | None,
    fragments: FragmentStore,
    progress: Progress = SILENT,
    fetched: dict[str, FetchedPackage] | None = None,
    python: PythonTarget | None = None,
    clobbers: dict[str, dict[str, str]] | None = None,
    warnings: list[str] | None = None,
    read: list[str] | None = None,
) -> list[Layer]:
    """Write the layers of `plans`: group members from their cached fragments where possible; plain packages
    streamed from their archives; the rest from a staging prefix holding only the packages that are needed
    (fetched and linked as in the whole env). New fragments are stored once their archives passed the checks.
    What the user should know of how they were written is added to `warnings`; the packages read from their
    archives (not from fragments) to `read`."""
    if not plans:
        return []
    clobbers = clobbers or {}  # conda name -> {path it loses: its path in __clobbers__}
    conda_paths = functools.cache(lambda: _conda_paths(by_name, python))  # for the wheels, built once if any
    members: dict[str, list[Member]] = {}
    # Built smallest first (the image keeps the plan's order): the first layer is written while the
    # next packages are read, instead of the writer waiting for the biggest package to be read.
    order = sorted(range(len(plans)), key=lambda i: (sum(p.size for p in plans[i].packages), i))
    need: list[str] = []  # in the order the layers are written
    for plan in (plans[i] for i in order):
        for p in plan.packages:
            found = None if plan.single else fragments.get(fragment_key(p, context))
            if found is None:
                need.append(p.name)
            else:
                members[p.name] = found
    if read is not None:
        read.extend(need)
    in_image = context.prefix.strip("/")
    # Staged next to the package cache, so that linking can hard-link from it.
    try:
        (tmp_dir(cache_dir)).mkdir(parents=True, exist_ok=True)
        staging_root = process_temp_dir(tmp_dir(cache_dir), "bake")
        remove_orphans(tmp_dir(cache_dir), "extracted")  # (what a killed install or link left: install.link_packages)
    except OSError as exc:
        raise write_error(tmp_dir(cache_dir), exc, "cache directory", CACHE_SETTING) from None
    # A plain `.conda` in a layer of its own is read front to back straight into its layer by the writer.
    # One thread stages and checks the other plain packages' archives (decompression, hashing and file reads
    # release the GIL) in the order the layers need them, while the layers are written: a layer starts when
    # its packages are ready.
    planned = {p.name: p for plan in plans for p in plan.packages if not plan.single}
    stager = ThreadPool(max_workers=1)
    # The stager runs at most two single-package layers ahead of the writer (.tar.bz2 ones): their payloads
    # (on disk) and members (in memory) are dropped once written, so neither grows with the environment.
    ahead = threading.Semaphore(_STAGED_AHEAD)
    failed = threading.Event()

    pending: dict[str, PendingFragment] = {}  # group packages' fragments, written as they are read, kept once all are checked
    compressors = Compressors()  # one zstd compressor per writing thread, for all the layers of this call

    def stage(fetched: FetchedPackage, payload: Path, single: bool) -> tuple[PayloadLinks, list[Member] | None]:
        while single and not ahead.acquire(timeout=0.2):
            if failed.is_set():
                raise BakeError("bake stopped", hint="see the error above")  # never shown: the bake has failed already
        name = _plan_name(fetched.locked)

        def into_fragment(members: Iterable[Member]) -> PendingFragment:
            """A group package's fragment, written as its members come; kept (commit) once the layers are written
            and every archive passed."""
            return fragments.write(fragment_key(planned[name], context), members, options.epoch, ordered=False)

        if fetched.locked.manager == "pip":
            # A group wheel is written as installer would install it straight into its fragment; or installed in a
            # staging prefix (linked) with the rest.
            try:
                written, links = _stream_wheel(fetched, wheel_plans[name], in_image, into_fragment)
            except NotPlain:
                return payload_links(archive_label(fetched.locked), []), None
            pending[name] = written
            return links, written.members()
        if not single and fetched.archive.name.endswith(".conda"):
            # A group package's `.conda` is read front to back straight into its fragment, which its layer then
            # copies: no payload staged.
            try:
                written, links = _stream_plain(fetched, cache_dir, in_image, into_fragment, python, clobbers.get(name))
            except (NotStreamable, NotPlain):
                pass
            else:
                pending[name] = written
                return links, written.members()
        links, found = _stage_plain(fetched, cache_dir, in_image, payload, python, clobbers.get(name))
        if not single and found is not None:
            pending[name] = into_fragment(found)
        return links, found

    # Every plain package's (link summary, members or None if it must be linked), in the order the layers need
    # them: the stager's, or, for a streamed package, set by the writer (members [] once its layer is written).
    staged: dict[str, Future[tuple[PayloadLinks, list[Member] | None]]] = {}
    streamed: set[str] = set()
    processes: LayerProcesses | None = None
    by_process: dict[str, tuple[StreamedLayerJob, Future[StreamedLayer]]] = {}  # streamed layers a worker writes
    try:
        extract = f"extract {platform}"
        progress.start(extract, total=len(need), unit="packages")
        # Plain conda packages and (with a python to install them for) wheels: read from their archives.
        plain = [n for n in need if (by_name[n][1].plain if by_name[n][0].manager == "conda" else python is not None)]
        payloads: dict[str, Path] = {}
        wheel_plans: dict[str, WheelPlan] = {}  # the wheels streamed, and what installer writes for each
        written: set[str] = set()  # the single-package layers written (their members are dropped)
        if plain:
            # Those whose info the plan read are fetched already (and checked against the lock's sha256).
            by_fetched = {n: fetched[n] for n in plain if fetched and n in fetched and fetched[n].locked == by_name[n][0]}
            missing = [by_name[n][0] for n in plain if n not in by_fetched]
            if missing:
                indexes = pip_index_templates(lockfile, platform)
                hosts = lock_hosts(lockfile, indexes)
                # (with infos from a --cache-from map, the plan fetched none of them: reported here)
                got = fetch_packages(
                    missing, cache_dir, settings, pip_indexes=indexes, allowed_hosts=hosts, progress=progress, step=f"download {platform}"
                ).packages
                by_fetched.update({_plan_name(f.locked): f for f in got})
            wheels = [n for n in plain if by_name[n][0].manager == "pip"]
            wheel_plans.update(_wheel_plans(wheels, by_fetched, in_image, platform, python, conda_paths() if wheels else {}))
            plain = [n for n in plain if by_name[n][0].manager == "conda" or n in wheel_plans]
            scratch = staging_root / "payloads"
            scratch.mkdir()
            # A big package's payload is a file of its own, removed once its layer is written; small ones share one.
            payloads = {n: scratch / ("groups.tar" if n in planned else f"{by_fetched[n].archive.name}.tar") for n in plain}
            streamed = {
                n for n in plain if n not in planned and (by_fetched[n].archive.name.endswith(".conda") or by_name[n][0].manager == "pip")
            }
            for n in plain:
                staged[n] = Future() if n in streamed else stager.submit(stage, by_fetched[n], payloads[n], n not in planned)
            # The streamed `.conda`s' own layers: written by worker processes (--jobs), biggest first, while this
            # process writes the other layers, then those no worker has started, smallest first
            # (conda_envkit.layer_processes).
            own = [p for plan in plans if plan.single for p in plan.packages if p.name in streamed and by_name[p.name][0].manager != "pip"]
            zstd = options.compression.kind == "zstd"
            workers = process_count([p.size for p in own], usable_cpus(), options.jobs) if zstd else 0
            if workers:
                # Each writer (the workers and this process) with its share of the CPUs as zstd workers (the bytes are
                # the same for any share).
                compressors.workers = zstd_workers(workers + 1)
                try:
                    processes = LayerProcesses(workers, compressors.workers, store.temp_dir)
                except LayerWorkerError as exc:
                    if options.jobs is not None:  # asked for: the user learns why not
                        raise
                    # auto: no worker can start here (a process limit, no python at sys.executable), and the bake
                    # writes every layer itself, as with --jobs 1.
                    compressors.workers = None
                    if warnings is not None:
                        warnings.append(f"{platform}: {exc.message}; every layer was written by the bake itself")
            if processes is not None:
                for p in sorted(own, key=lambda p: (-p.size, p.name)):
                    job = _streamed_layer_job(by_fetched[p.name], cache_dir, in_image, store, options, python, clobbers.get(p.name))
                    if job is not None:
                        by_process[p.name] = (job, processes.submit(job))

        def keep_plain() -> None:
            """Check the archives read together (their group members' fragments, written as they were read, are kept
            once the layers are written: a group layer may still be copying a fragment from its temporary file)."""
            read = {n: future.result() for n, future in staged.items()}
            # No symlink chain out of the prefix: checked before anything of these archives is kept for a later bake
            # (the layer cache remembers the layers only once build_layers returns).
            check_payload_links([links for links, _ in read.values()])

        kept = stager.submit(keep_plain)
        linking = threading.Lock()
        linked: list[str] = []  # the packages linked in a staging prefix

        def link(names: list[str], staging: Path) -> None:
            """Link `names` in a staging prefix holding just them; their members come from there."""
            # This is part of the extract step; their archives were fetched (and reported) when the plan read them,
            # unless their infos came from a --cache-from map: then install's download step reports them.
            planned_fetch = all(fetched and name in fetched for name in names)
            inner = _SkipStep(progress, *((f"download {platform}",) if planned_fetch else ()), extract)
            install_packages(lockfile, platform, staging, context.prefix, cache_dir, settings, inner, only=frozenset(names))
            owned = staged_paths(staging, _relinked_records(staging, names, clobbers) if clobbers else None)
            wheels = [name for name in names if name.startswith("pip:") and name in owned]
            for name in wheels:  # (installer refused those over the conda packages linked here; not those streamed)
                _refuse_wheel_over_conda(platform, by_name[name][0], (path for path, _ in owned[name]), conda_paths())
            for name in names:
                if name not in owned:
                    label = next(p.label for plan in plans for p in plan.packages if p.name == name)
                    raise BakeError(f"{platform}: package {label} was not installed", hint="this is a bug in envkit; please report it")
                # A conda package's files keep the modes py-rattler gave them (the archive's); a wheel's were written
                # under this process's umask, so they are normalized as a streamed wheel's are.
                exact = not name.startswith("pip:")
                members[name] = hard_linked([member_from_disk(f"{in_image}/{path}", staging / at, exact) for path, at in owned[name]])
            linked.extend(names)

        def link_the_rest() -> None:
            """Link the packages neither stream nor stager can give, streamed ones aside (`write_streamed`): all those
            known by now in one staging prefix. A package the stager has not read yet is not waited for (a big one
            waits for the writer to write the layers before it: `ahead`); if it must be linked, a later call links it
            in a staging prefix of its own (packages_of asks for it once its layer is next)."""
            with linking:
                ready = {n: staged[n].result()[1] for n in need if n in staged and n not in streamed and staged[n].done()}
                done = set(linked)
                rest = [n for n in need if n not in done and (n not in staged or (n in ready and ready[n] is None))]
                for name, found in ready.items():
                    if name not in written and found is not None:
                        members[name] = found
                if rest:
                    link(rest, Path(tempfile.mkdtemp(prefix="prefix-", dir=staging_root)))

        def packages_of(plan: PlannedLayer) -> list[Member]:
            for p in plan.packages:
                if p.name in members:
                    continue
                found = staged[p.name].result()[1] if p.name in staged else None
                if found is None:
                    link_the_rest()
                else:
                    members[p.name] = found
            return [m for p in _layer_order(plan.packages) for m in members[p.name]]

        def layer_of(layer_members: Iterable[Member], sort: bool = True) -> Layer:
            return write_layer(layer_members, store, options.compression, options.epoch, compressors=compressors, sort=sort)

        worker_ended: list[str] = []  # (a warning once)

        def worker_wrote(name: str) -> bool:
            """Whether a worker wrote the package's layer; with --jobs auto, a worker that ended (killed, out of
            memory) leaves it to this process, with a warning. Asked for (--jobs N), its end is the bake's error."""
            error = by_process[name][1].exception()
            if not isinstance(error, LayerWorkerError) or options.jobs is not None:
                return True  # (its error, if any, is raised by _layer_from_worker)
            if warnings is not None and not worker_ended:
                worker_ended.append(name)
                memory = "; a worker killed by signal 9 may have run out of memory (--jobs 1 starts none)"
                memory = memory if "signal 9" in error.message else ""
                warnings.append(f"{error.message}: the bake wrote that worker's layers itself{memory}")
            return False

        def write_streamed(name: str) -> Layer:
            """A streamed package's layer; if its archive must be staged after all, from there, or linked alone."""
            future = staged[name]
            fetched = by_fetched[name]
            try:
                try:
                    own_layer = lambda streamed_layer: layer_of(streamed_layer, sort=False)  # noqa: E731
                    # A layer no worker has started yet is this thread's (it takes the smallest, they the biggest).
                    if name in by_process and not by_process[name][1].cancel() and worker_wrote(name):
                        layer, links = _layer_from_worker(*by_process[name], store)
                    elif fetched.locked.manager == "pip":
                        layer, links = _stream_wheel(fetched, wheel_plans[name], in_image, own_layer)
                    else:
                        layer, links = _stream_plain(fetched, cache_dir, in_image, own_layer, python, clobbers.get(name))
                    future.set_result((links, []))
                    return layer
                except (NotStreamable, NotPlain):
                    pass
                if fetched.locked.manager == "pip":
                    links, found = payload_links(archive_label(fetched.locked), []), None
                else:
                    links, found = _stage_plain(fetched, cache_dir, in_image, payloads[name], python, clobbers.get(name))
                future.set_result((links, found))
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc)
                raise
            if found is None:
                with linking:
                    link([name], Path(tempfile.mkdtemp(prefix="prefix-", dir=staging_root)))  # (not named after the package)
                return layer_of(members[name])
            return layer_of(found, sort=False)

        def write(plan: PlannedLayer) -> Layer:
            name = plan.packages[0].name
            try:
                if plan.single and name in streamed:
                    layer = write_streamed(name)
                else:
                    layer_members = packages_of(plan)
                    # A plain package's own layer keeps its archive's order, as a streamed one does (a linked one is sorted).
                    in_order = plan.single and name in staged and staged[name].result()[1] is not None
                    layer = layer_of(layer_members, sort=not in_order)
            finally:
                if plan.single and name in staged and name not in streamed:
                    ahead.release()
            progress.advance(f"layers {platform}")
            if plan.single:
                written.add(name)
                if name in staged:
                    # Its payload is read: gone before its pages are ever written back (and the scratch space with it).
                    payloads[name].unlink(missing_ok=True)
                    found = staged[name].result()[1]
                    if found is not None:  # (the future keeps this list: emptied, not dropped, to free its members)
                        found.clear()
                members.pop(name, None)
            return layer

        # Each compressor already uses every core: zstd layers go one at a time (a multi-threaded stream holds
        # ~15-20 MB), gzip ones two at a time (reading and hashing overlap the other's deflate).
        # The layers given to workers come last: this process writes the rest, then takes back (smallest first) those
        # no worker has started, and collects the others' results.
        order.sort(key=lambda i: plans[i].single and plans[i].packages[0].name in by_process)
        with ThreadPool(max_workers=1 if options.compression.kind == "zstd" else 2) as pool:
            try:
                built = dict(zip(order, pool.map(write, [plans[i] for i in order]), strict=True))
            except BaseException:
                # Said before the pool waits for its writers (leaving the block): a stager waiting for a writer
                # (`ahead`) then ends, and so does a writer waiting for it (a Ctrl-C, a failed layer).
                failed.set()
                raise
        layers = [built[i] for i in range(len(plans))]
        if processes is not None:
            processes.finish()
        link_the_rest()
        kept.result()
        # Kept one after another, as info cache entries are written (locked_infos): four at once took as long.
        for fragment in pending.values():
            fragments.commit(fragment)
        pending.clear()
        count = len(linked)
        progress.done(extract, f"{counted(len(need), 'package')} ({len(need) - count} read from their archives, {count} linked)")
        for name in linked:
            if name in planned:
                fragments.put(fragment_key(planned[name], context), members[name], options.epoch)
        return layers
    finally:
        failed.set()
        if processes is not None:
            processes.stop()  # (on success, they have ended already)
        # A streamed package's future, if its layer was never written: the stager (keep_plain) waits for it. The
        # stager's own futures are its to finish (one may be running): pending ones are cancelled below.
        for future in (staged[n] for n in streamed if n in staged):
            if not future.done():
                future.set_exception(BakeError("bake stopped", hint="see the error above"))
        stager.shutdown(wait=True, cancel_futures=True)
        for left in pending.values():
            fragments.discard(left)
        shutil.rmtree(staging_root, ignore_errors=True)


@dataclass(frozen=True)
class BakedImage:
    """The result of a bake: the top descriptor (manifest, or index for several platforms)."""

    top: Descriptor
    platforms: tuple[PlatformImage, ...]
    lock_hash: str
    epoch: int = 0

    def blobs(self) -> list[str]:
        """Every blob the image consists of, top descriptor included."""
        out = [self.top.digest]
        for p in self.platforms:
            out += [p.manifest.digest, p.config.digest]
            out += [layer.descriptor.digest for layer in (*p.base.layers, *p.layers)]
        return list(dict.fromkeys(out))


def with_earlier_builds(baked: BakedImage, earlier: BakedImage) -> BakedImage:
    """`baked` (a bake done again, its cache-from layers that were served wrong now built here) with the sources of
    the layers `earlier` built: this bake built them, though the second pass found them in the layer cache."""
    built = {
        layer.descriptor.digest: source
        for image in earlier.platforms
        for layer, source in zip(image.layers, image.sources, strict=True)
        if source.kind == "built"
    }
    platforms = tuple(
        replace(
            image,
            sources=tuple(
                built.get(layer.descriptor.digest, source) if source.kind == "layer-cache" else source
                for layer, source in zip(image.layers, image.sources, strict=True)
            ),
        )
        for image in baked.platforms
    )
    return replace(baked, platforms=platforms)


def refuse_lock_holding_credentials(lockfile: Lockfile, where: str, prefix: str) -> None:
    """A BakeError if the lock's URLs hold a credential's value (conda-lock without --strip-auth): the image keeps
    the lock as it is (`<prefix>/conda-meta/envkit/conda-lock.yml`), for anyone who can pull it."""
    holding = hosts_with_credentials(lockfile)
    if holding:
        copy = f"{prefix.rstrip('/')}/{LOCK_COPY.as_posix()}"
        raise BakeError(
            f"{where}: its URLs hold credentials (for {', '.join(holding[:3])}): "
            f"the image would publish them in its copy of the lock ({copy})",
            hint="write each credential as ${VAR} in the channel URL (envkit lock and conda-lock keep the placeholder), bound"
            " with ENVKIT_CREDENTIAL_HOSTS (docs/security.md, Secrets); then lock again",
        )


def bake_image(
    lockfile_path: Path,
    lockfile: Lockfile,
    platforms: list[str],
    bases: dict[str, BaseImage],
    options: BakeOptions,
    store: BlobStore,
    cache_dir: Path | None = None,
    settings: ChannelSettings | None = None,
    progress: Progress = SILENT,
    remote: RegistryCache | None = None,
    lock_copy: bytes | None = None,
) -> BakedImage:
    """Bake every platform; several platforms become one image index (`lock_copy`: as bake_platform's)."""
    cache_dir = cache_dir_or_default(cache_dir)
    if not platforms:
        raise BakeError("no platform to bake", hint="pass -p linux-64 (repeat for a multi-arch image)")
    refuse_lock_holding_credentials(lockfile, str(lockfile_path), options.in_image_prefix)
    for platform in platforms:
        oci_platform(platform)
    images = tuple(
        bake_platform(lockfile_path, lockfile, p, bases[p], options, store, cache_dir, settings, progress, remote, lock_copy)
        for p in platforms
    )
    whole = lock_hash(lockfile)
    if len(images) == 1:
        return BakedImage(images[0].manifest, images, str(whole), options.epoch)
    annotations = {
        "org.opencontainers.image.created": rfc3339(options.epoch),
        f"{LABEL_PREFIX}lock-hash": str(whole),
        f"{LABEL_PREFIX}version": __version__,
    }
    index = put_index(store, [i.manifest for i in images], annotations)
    return BakedImage(index, images, str(whole), options.epoch)


def settle_layer_cache(baked: BakedImage, store: BlobStore, cache_dir: Path) -> None:
    """After the outputs are written: keep the layer cache's stamps current for the blobs this bake checked
    (an OCI layout's hard links change their ctime), so that the next warm bake reads none of them."""
    seal = user_seal()
    layer_cache = LayerCache(layers_dir(cache_dir, seal.owner), seal)
    for image in baked.platforms:
        for entry in image.cache_entries:
            if entry.source is None:
                layer_cache.settle(entry.key, store)


def with_recipe(options: BakeOptions, recipe: Recipe, reproducible: bool = False) -> BakeOptions:
    """`options` on top of a recipe: the command line wins, the recipe fills what it left open."""
    return replace(
        options,
        env={**recipe.environment(reproducible), **options.env},
        entrypoint=options.entrypoint if options.entrypoint is not None else recipe.entrypoint,
        cmd=options.cmd if options.cmd is not None else recipe.cmd,
        workdir=options.workdir or recipe.workdir,
        user=options.user or recipe.user,
        labels={**recipe.labels, f"{LABEL_PREFIX}recipe": recipe.name, **options.labels},
        files=options.files + tuple((f.dest, f.source) for f in recipe.files),
    )
