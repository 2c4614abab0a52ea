"""Lock + base + settings -> a reproducible OCI image (one manifest per platform, an index for several).

Every byte is decided by the inputs: packages come from the lock (sha256-checked),
layers are deterministic tarballs, JSON is canonical and timestamps come from
SOURCE_DATE_EPOCH (default 0). Same lock + same base + same settings = same digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from conda_envkit import __version__
from conda_envkit.channels import ChannelSettings
from conda_envkit.errors import EnvkitError
from conda_envkit.files import write_error
from conda_envkit.install import CACHE_ENV_VAR, LOCK_COPY, default_cache_dir, install_packages
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import lock_hash, platform_lock_hash
from conda_envkit.oci.blobs import BlobStore, Descriptor
from conda_envkit.oci.image import BaseImage, ImageSettings, image_config, oci_platform, put_index, put_manifest, rfc3339
from conda_envkit.oci.layer import Compression, Layer, LayerCache, LayerFile, write_layer
from conda_envkit.pip_install import PIP_RECORDS
from conda_envkit.progress import SILENT, Progress
from conda_envkit.recipes import Recipe

MiB = 1 << 20
ENVIRONMENT_FILE = LOCK_COPY.parent / "environment.json"
# Runtimes cap the layers of one image (overlayfs: ~128 lower dirs; docker: 125).
MAX_LAYERS = 120
LABEL_PREFIX = "dev.envkit."


class BakeError(EnvkitError):
    """A bake that cannot be done as asked."""


@dataclass(frozen=True)
class LayerPolicy:
    """How the environment is split: big packages alone, small ones in stable groups."""

    own_layer_bytes: int = 32 * MiB
    small_groups: int = 4
    max_layers: int = MAX_LAYERS


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


@dataclass(frozen=True)
class PackageFiles:
    """The files one installed package owns in the staging prefix."""

    name: str
    label: str  # name-version-build
    paths: tuple[str, ...]
    size: int
    sha256: dict[str, str] = field(default_factory=dict)  # path -> content sha256 as installed
    about: dict[str, str] = field(default_factory=dict)  # name, version, build, subdir, url, sha256, license


@dataclass(frozen=True)
class LayerPlan:
    """Which files go into which layer, and what the layer is called in the image history."""

    title: str
    packages: tuple[str, ...]
    paths: tuple[str, ...]


def installed_packages(prefix: Path) -> list[PackageFiles]:
    """Every package's files (with its conda-meta record) in an installed prefix."""
    out = []
    claimed: set[str] = set()
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        # A path two packages install (a clobber) goes to the first by file name.
        paths = [p for p in record.get("files", []) if p not in claimed and os.path.lexists(prefix / p)]
        claimed.update(paths)
        paths.append(f"conda-meta/{meta.name}")
        size = sum((prefix / p).lstat().st_size for p in paths)
        # rattler records each file's hash as installed (sha256_in_prefix after prefix rewriting).
        hashes = {}
        for entry in (record.get("paths_data") or {}).get("paths", []):
            value = entry.get("sha256_in_prefix") or entry.get("sha256")
            if value and entry.get("path_type", "hardlink") == "hardlink":
                hashes[entry["_path"]] = value
        about = {k: str(record[k]) for k in ("name", "version", "build", "subdir", "url", "sha256", "license") if record.get(k)}
        out.append(PackageFiles(record["name"], meta.name[: -len(".json")], tuple(paths), size, hashes, about))
    # pip packages (pip_install.py records), layered like conda packages of the same size.
    for meta in sorted((prefix / PIP_RECORDS).glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        hashes = {f["_path"]: f["sha256"] for f in record.get("files", []) if f["_path"] not in claimed}
        claimed.update(hashes)
        paths = [*hashes, f"{PIP_RECORDS}/{meta.name}"]
        size = sum((prefix / p).lstat().st_size for p in paths if os.path.lexists(prefix / p))
        about = {k: str(record[k]) for k in ("name", "version", "url", "sha256", "manager")}
        label = f"pip:{record['name']}-{record['version']}"
        out.append(PackageFiles(f"pip:{record['name']}", label, tuple(paths), size, hashes, about))
    return out


def _group_of(name: str, groups: int) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % groups


def plan_layers(packages: list[PackageFiles], rest: list[str], policy: LayerPolicy, base_layers: int) -> list[LayerPlan]:
    """Split the environment into layers.

    Packages at least `own_layer_bytes` big get a layer each (so images sharing that
    package build share the layer); the others go into `small_groups` groups chosen
    by a hash of the package name, so that changing one small package changes one
    group. Paths owned by no package (conda-meta/history, the lock copy) form the
    last layer. If that would exceed `max_layers`, the smallest big packages join
    the groups.
    """
    budget = policy.max_layers - base_layers - policy.small_groups - 1
    if budget < 0:
        raise BakeError(
            f"the base image already has {base_layers} layers; with envkit's layers the image would exceed {policy.max_layers}",
            hint="use a base image with fewer layers (squash it), or fewer small-package groups",
        )
    big = sorted((p for p in packages if p.size >= policy.own_layer_bytes), key=lambda p: (-p.size, p.name))[:budget]
    big_names = {p.name for p in big}
    plans = [LayerPlan(f"package {p.label}", (p.label,), p.paths) for p in sorted(big, key=lambda p: p.name)]
    groups: dict[int, list[PackageFiles]] = {}
    for p in packages:
        if p.name not in big_names:
            groups.setdefault(_group_of(p.name, policy.small_groups), []).append(p)
    for index in sorted(groups):
        members = sorted(groups[index], key=lambda p: p.name)
        paths = tuple(path for m in members for path in m.paths)
        plans.append(
            LayerPlan(
                f"packages group {index + 1}/{policy.small_groups}: {len(members)} small packages", tuple(m.label for m in members), paths
            )
        )
    if rest:
        plans.append(LayerPlan("environment metadata (conda-meta, lock)", (), tuple(sorted(rest))))
    return plans


def unowned_paths(prefix: Path, packages: list[PackageFiles]) -> list[str]:
    """Files and symlinks in the prefix that no package owns."""
    owned = {path for p in packages for path in p.paths}
    rest = []
    for root, dirs, files in os.walk(prefix):
        dirs.sort()
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), prefix)
            if rel not in owned:
                rest.append(PurePosixPath(*Path(rel).parts).as_posix())
    return sorted(rest)


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
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    staging: Path,
    prefix: str,
    labels: dict[str, str],
    cache_dir: Path,
    settings: ChannelSettings | None,
    progress: Progress = SILENT,
) -> None:
    """Install one platform into `staging` for `prefix`, with the lock copy and environment.json.

    The environment bytes of an image: `bake` layers them, `dockerfile` copies them.
    """
    install_packages(lockfile, platform, staging, prefix, cache_dir, settings, progress)
    copy = staging / LOCK_COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lockfile_path, copy)
    # What the environment is, readable inside the container (conda_envkit.tracking).
    about = {"schema": "envkit.image-environment/1", "labels": labels}
    (staging / ENVIRONMENT_FILE).write_text(json.dumps(about, sort_keys=True) + "\n", encoding="utf-8")


def image_labels(lockfile: Lockfile, platform: str, options: BakeOptions, base: BaseImage) -> dict[str, str]:
    """Labels and annotations: org.opencontainers.image.* plus envkit's own keys."""
    custom = lockfile.metadata.custom_metadata or {}
    labels = {
        "org.opencontainers.image.created": rfc3339(options.epoch),
        "org.opencontainers.image.title": options.name,
        "org.opencontainers.image.version": platform_lock_hash(lockfile, platform).short,
        "org.opencontainers.image.base.name": base.reference,
        f"{LABEL_PREFIX}lock-hash": str(lock_hash(lockfile)),
        f"{LABEL_PREFIX}platform-lock-hash": str(platform_lock_hash(lockfile, platform)),
        f"{LABEL_PREFIX}platform": platform,
        f"{LABEL_PREFIX}prefix": options.in_image_prefix,
        f"{LABEL_PREFIX}cuda": custom.get(f"envkit.{platform}.cuda", "unknown"),
        f"{LABEL_PREFIX}cuda-version": custom.get(f"envkit.{platform}.cuda-version", "unknown"),
        f"{LABEL_PREFIX}blas": custom.get(f"envkit.{platform}.blas", "unknown"),
        f"{LABEL_PREFIX}version": __version__,
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
) -> PlatformImage:
    """Install one platform of the lock into a staging prefix and turn it into an image manifest."""
    started = time.perf_counter()
    oci_platform(platform)
    prefix = options.in_image_prefix
    if not prefix.startswith("/") or ".." in PurePosixPath(prefix).parts or prefix == "/":
        raise BakeError(f"--prefix {prefix!r} must be an absolute path below /", hint="e.g. /opt/conda/envs/train")
    # Staged next to the package cache, so that linking can hard-link from it.
    try:
        (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        staging_root = Path(tempfile.mkdtemp(prefix="bake-", dir=cache_dir / "tmp"))
    except OSError as exc:
        raise write_error(cache_dir / "tmp", exc, "cache directory", f"--cache-dir or ${CACHE_ENV_VAR}") from None
    labels = image_labels(lockfile, platform, options, base)
    try:
        staging = staging_root / "prefix"
        stage_environment(lockfile_path, lockfile, platform, staging, prefix, labels, cache_dir, settings, progress)
        packages = installed_packages(staging)
        plans = plan_layers(packages, unowned_paths(staging, packages), options.policy, len(base.layers) + bool(options.files))
        in_image = prefix.strip("/")
        layer_cache = LayerCache(cache_dir / "layers")
        known = {path: digest for p in packages for path, digest in p.sha256.items()}

        step = f"layers {platform}"

        def write(plan: LayerPlan) -> Layer:
            files = [LayerFile(f"{in_image}/{p}", staging / p, known.get(p)) for p in plan.paths]
            layer = write_layer(files, store, options.compression, options.epoch, layer_cache)
            progress.advance(step)
            return layer

        progress.start(step, total=len(plans) + bool(options.files), unit="layers")

        # Layers are independent; hashing, compression and file reads release the GIL.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            layers = list(pool.map(write, plans))
        if options.files:
            extra = [LayerFile(dest.strip("/"), source) for dest, source in options.files]
            layers.append(write_layer(extra, store, options.compression, options.epoch, layer_cache))
            plans.append(LayerPlan("recipe files", (), tuple(dest for dest, _ in options.files)))
        reused = sum(1 for layer in layers if layer.reused)
        size = sum(layer.descriptor.size for layer in layers)
        progress.done(step, f"{len(layers)} layers, {size / 1e6:.1f} MB ({reused} reused from the layer cache)")
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
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
    history = [f"envkit bake: {plan.title}" for plan in plans]
    config = image_config(base, layers, history, image_settings, platform)
    manifest, config_desc = put_manifest(store, config, [*base.layers, *layers], labels)
    return PlatformImage(
        platform=platform,
        manifest=manifest,
        config=config_desc,
        layers=tuple(layers),
        layer_packages=tuple(plan.packages for plan in plans),
        labels=labels,
        base=base,
        seconds=time.perf_counter() - started,
        reused_layers=reused,
        packages=tuple(p.about for p in sorted(packages, key=lambda p: p.name)),
    )


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
) -> BakedImage:
    """Bake every platform; several platforms become one image index."""
    cache_dir = cache_dir or default_cache_dir()
    if not platforms:
        raise BakeError("no platform to bake", hint="pass -p linux-64 (repeat for a multi-arch image)")
    for platform in platforms:
        oci_platform(platform)
    images = tuple(bake_platform(lockfile_path, lockfile, p, bases[p], options, store, cache_dir, settings, progress) for p in platforms)
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
