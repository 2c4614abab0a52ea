"""`envkit bake`, `dockerfile` and `inspect`: image flags -> BakeOptions and bases -> images -> records."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conda_envkit.commands import BadFlag, Output
from conda_envkit.errors import EnvkitError
from conda_envkit.labels import label_key

if TYPE_CHECKING:
    from conda_envkit.bake import BakeOptions
    from conda_envkit.lockmodel import LockFile
    from conda_envkit.oci.image import BaseImage
    from conda_envkit.recipes import Recipe
    from conda_envkit.record import BakeRecord
    from conda_envkit.registry_cache import CacheRef, RegistryClients

Say = Callable[[str], None]


@dataclass(frozen=True)
class ImageFlags:
    """The flags `bake` and `dockerfile` share: what goes into the image besides the environment."""

    base: str | None = None
    recipe: str | None = None
    recipe_dir: Path | None = None
    reproducible: bool = False
    name: str = "env"
    prefix: str | None = None
    env: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    entrypoint: str | None = None
    cmd: str | None = None
    workdir: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class BakeRequest:
    """`envkit bake`'s flags, as given."""

    lockfile: Path
    platforms: tuple[str, ...]
    image: ImageFlags
    oci_dir: Path | None
    docker_archive: Path | None
    push_repo: str | None
    tags: tuple[str, ...]
    insecure: bool
    compression: str
    large_package_mb: int
    record_path: Path
    jobs: int | None
    cache_dir: Path | None
    mirrors: tuple[str, ...]
    config: Path | None
    cache_to: str | None = None
    cache_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class BakeResult:
    """A finished bake: the record written to `record_path` and the references that name the image."""

    record: BakeRecord
    references: list[str]
    record_path: Path
    warnings: tuple[str, ...] = ()  # printed even with -q: cache entries that did not match their keys


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise BadFlag(f"expected KEY=VALUE, got {value!r}", option, hint=f"e.g. {option} KEY=VALUE (repeat it for more)")
        out[key] = val
    return out


def _command_line(value: str | None, option: str) -> tuple[str, ...] | None:
    """A JSON array (exec form) or a plain string split like a shell would."""
    if value is None:
        return None
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError as exc:
            raise BadFlag(f"invalid JSON array: {exc}", option) from None
        return tuple(str(i) for i in items)
    return tuple(shlex.split(value))


def image_options(lf: LockFile, platforms: list[str], flags: ImageFlags) -> tuple[BakeOptions, dict[str, str], Recipe | None]:
    """BakeOptions from the command line (over a recipe), the base reference per platform, and the recipe (or None)."""
    from conda_envkit.bake import BakeOptions, source_date_epoch, with_recipe

    if not flags.name or "/" in flags.name or flags.name in (".", "..") or not flags.name.isprintable():
        raise BadFlag(f"{flags.name!r} is not an environment name (one path component)", "--name", hint="e.g. --name train")
    options = BakeOptions(
        name=flags.name,
        prefix=flags.prefix,
        env=_pairs(flags.env, "--env"),
        entrypoint=_command_line(flags.entrypoint, "--entrypoint"),
        cmd=_command_line(flags.cmd, "--cmd"),
        workdir=flags.workdir,
        user=flags.user,
        labels=_pairs(flags.labels, "--label"),
        epoch=source_date_epoch(),
    )
    if flags.recipe is None:  # recipes (jinja2's sandbox, rattler's versions) load only for a recipe
        if flags.reproducible:
            from conda_envkit.recipes import RecipeError

            raise RecipeError("--reproducible needs --recipe", hint="the settings come from the recipe's `reproducibility:`")
        return options, dict.fromkeys(platforms, flags.base or "scratch"), None
    from conda_envkit.lockmodel import cuda_driver_assumption
    from conda_envkit.recipes import load_recipe

    recipe = load_recipe(flags.recipe, flags.recipe_dir)
    bases = {p: flags.base or recipe.base_for(cuda_driver_assumption(lf, p)) for p in platforms}
    return with_recipe(options, recipe, flags.reproducible), bases, recipe


def is_registry_ref(reference: str) -> bool:
    """Whether an image reference names a registry (not scratch, an OCI layout or a docker-archive)."""
    return reference != "scratch" and not reference.startswith(("oci:", "docker-archive:"))


def insecure_for(references: list[str], insecure: bool) -> tuple[str, ...]:
    """The registries of `references` that may be spoken to over plain HTTP (`--insecure`: loopback only)."""
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.publish import insecure_hosts

    return insecure_hosts([parse_image_ref(r).registry for r in references if is_registry_ref(r)], insecure)


def bake_platforms(lf: LockFile, platforms: tuple[str, ...], lockfile: Path | None = None) -> list[str]:
    """The platforms to bake: as given (each known, in the lock and an image platform: checked before any
    work), else linux-64, else the lock's first linux platform."""
    from conda_envkit.oci.image import oci_platform
    from conda_envkit.platforms import PlatformError, check_platform

    locked = list(lf.metadata.platforms)
    for platform in platforms:
        check_platform(platform, "-p")
        oci_platform(platform)  # an image platform at all, before whether the lock has it
        if platform not in locked:
            has = ", ".join(locked)
            message = f"{lockfile or 'lock'}: platform {platform} is not in the lock (it has {has})"
            raise PlatformError(message, hint="pass -p with one of those")
    linux = [p for p in locked if p.startswith("linux-")]
    return list(platforms) or (["linux-64"] if "linux-64" in linux or not linux else linux[:1])


def run_bake(request: BakeRequest, quiet: bool, say: Say) -> BakeResult:
    """Bake the lock into an image, write/push it, and write the bake record."""
    from conda_envkit.bake import (
        bake_image,
        base_environment_warning,
        refuse_lock_holding_credentials,
        settle_layer_cache,
        with_earlier_builds,
    )
    from conda_envkit.cache import blobs_dir, cache_dir_or_default
    from conda_envkit.channels import load_settings
    from conda_envkit.files import check_output_file
    from conda_envkit.freshness import stale_lock_warning
    from conda_envkit.layer_plan import LayerPolicy
    from conda_envkit.locking import LockOptions
    from conda_envkit.lockmodel import read_lock_source
    from conda_envkit.oci.base import load_base
    from conda_envkit.oci.blobs import BlobStore
    from conda_envkit.oci.image import check_base_platform
    from conda_envkit.oci.layer import Compression
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.progress import progress_for
    from conda_envkit.publish import BakeTargets, bake_record, check_push_target, check_targets, insecure_hosts, publish_image
    from conda_envkit.record import write_record

    lf, lock_copy = read_lock_source(request.lockfile)  # (once: a lock piped in cannot be read again for its copy)
    chosen = bake_platforms(lf, request.platforms, request.lockfile)
    options, base_refs, _recipe = image_options(lf, chosen, request.image)
    refuse_lock_holding_credentials(lf, str(request.lockfile), options.in_image_prefix)  # (before any base is pulled)
    policy = LayerPolicy(own_layer_bytes=request.large_package_mb << 20)
    options = replace(options, compression=Compression(request.compression), policy=policy, jobs=request.jobs)
    cache = cache_dir_or_default(request.cache_dir)
    store = BlobStore(blobs_dir(cache))
    clients: RegistryClients | None = None
    cache_refs: list[CacheRef] = []
    cache_to_ref: CacheRef | None = None
    if request.cache_from or request.cache_to:  # the registry client (requests) loads only for a registry cache
        from conda_envkit.registry_cache import TRANSFER_FAILED, RegistryClients, parse_cache_ref

        def cache_ref(option: str, text: str) -> CacheRef:
            try:
                return parse_cache_ref(text)
            except EnvkitError as exc:  # (which option gave it)
                raise EnvkitError(f"{option} {text}: {exc.message}", hint=exc.hint) from None

        cache_refs = [cache_ref("--cache-from", r) for r in request.cache_from]
        cache_to_ref = cache_ref("--cache-to", request.cache_to) if request.cache_to else None
    named = [*([request.push_repo] if request.push_repo else []), *set(base_refs.values())]
    registries = [parse_image_ref(r).registry for r in named if is_registry_ref(r)]
    registries += [r.registry for r in cache_refs] + ([cache_to_ref.registry] if cache_to_ref else [])
    insecure_list = insecure_hosts(registries, request.insecure)
    targets = BakeTargets(
        oci_layout=request.oci_dir,
        docker_archive=request.docker_archive,
        push=request.push_repo,
        tags=request.tags,
        insecure=insecure_list,
        cache_to=request.cache_to,
    )
    check_targets(targets, len(chosen))  # before anything is fetched or built
    check_output_file(request.record_path, "--record")  # (written last: after the image was written or pushed)
    if cache_refs or cache_to_ref:
        # The environment's credentials (ENVKIT_REGISTRY_*) belong to the registry the bake writes to: the push
        # target's (or, a cache-warming bake, the --cache-to one's). A cache there is read and written with them.
        target = parse_image_ref(request.push_repo).registry if request.push_repo else cache_to_ref.registry if cache_to_ref else None
        clients = RegistryClients(insecure_list, target)
    if cache_to_ref is not None and request.push_repo and cache_to_ref.tag in request.tags:
        push_ref = parse_image_ref(request.push_repo)
        if (push_ref.registry, push_ref.repository) == (cache_to_ref.registry, cache_to_ref.repository):
            raise BadFlag(
                f"--tag {cache_to_ref.tag} would put the image where --cache-to {request.cache_to} keeps the cache",
                "--tag",
                hint="give the cache a tag of its own (--cache-to REPO:TAG) or put it in another repository",
            )
    if request.push_repo:  # (after the checks of the flags alone)
        check_push_target(request.push_repo, insecure_list)
    if clients is not None and cache_to_ref is not None:
        try:  # reachable, and not a tag holding an image: before anything is built
            clients.check_target(cache_to_ref)
        except EnvkitError as exc:
            raise EnvkitError(f"--cache-to {request.cache_to}: {exc.message}", hint=exc.hint) from None
    cache_warnings: list[str] = []
    remote = None
    if clients is not None and cache_refs:
        try:
            remote = clients.load(cache_refs, say, cache_warnings.append)
        except EnvkitError as exc:  # (a tag holding an image: which option named it)
            raise EnvkitError(f"--cache-from {exc.message}", hint=exc.hint) from None
    bases: dict[str, BaseImage] = {}
    said_early: list[str] = []  # warnings shown before anything is built or pushed (not again at the end)
    for platform in chosen:
        say(f"base {base_refs[platform]} for {platform} ...")
        push_registry = parse_image_ref(request.push_repo).registry if request.push_repo else None
        bases[platform] = load_base(base_refs[platform], platform, store, insecure_list, push_registry=push_registry)
        check_base_platform(bases[platform], platform)  # before anything is fetched or built
        base_warning = base_environment_warning(bases[platform], options.in_image_prefix, platform)
        if base_warning is not None and not quiet:  # (with -q, among the warnings at the end)
            say(f"warning: {base_warning}")
            said_early.append(base_warning)
    settings = load_settings(request.config, None, list(request.mirrors))
    stale = stale_lock_warning(request.lockfile, lf, chosen, LockOptions(settings=settings))
    if stale is not None and not quiet:  # (with -q, among the warnings at the end)
        say(f"warning: {stale}")
    progress = progress_for(quiet)
    baked = bake_image(request.lockfile, lf, chosen, bases, options, store, cache, settings, progress, remote, lock_copy)
    pushed = [parse_image_ref(request.push_repo).registry] if request.push_repo else []
    pushed += [cache_to_ref.registry] if cache_to_ref else []
    downloaded = 0
    suspect: dict[str, set[str]] = {}  # registry -> the blobs it served with other bytes (pushes there check them)
    while clients is not None:
        local = bool(request.oci_dir or request.docker_archive)
        more, served_wrong = clients.fetch_needed(baked, store, local=local, pushed_to=pushed, progress=progress)
        downloaded += more
        if not served_wrong or remote is None:
            break
        # A cached layer whose bytes are not its digest's is built here, as a lost one is (its packages are fetched):
        # the plan is the same, the other cached layers stay where they are.
        for digest, problem in served_wrong.items():
            location = next(image.remote_blobs[digest] for image in baked.platforms if digest in image.remote_blobs)
            cache_warnings.append(f"cache {location}: layer blob {digest} {problem}: that layer was built here")
            if problem != TRANSFER_FAILED:  # (a transfer cut short says nothing of the registry's bytes)
                suspect.setdefault(location.partition("/")[0], set()).add(digest)
            remote.drop(digest)
        again = bake_image(request.lockfile, lf, chosen, bases, options, store, cache, settings, progress, remote, lock_copy)
        baked = with_earlier_builds(again, baked)
    result = publish_image(baked, store, targets, progress, suspect)
    settle_layer_cache(baked, store, cache)
    record = bake_record(baked, request.lockfile, options, result.references, result.tags, result.outputs, result.push)
    if clients is not None:
        from_registry = sum(len(image.remote_blobs) for image in baked.platforms)
        cache_record: dict[str, Any] = {"from": [str(r) for r in cache_refs], "layers_from_registry": from_registry}
        record = replace(record, cache={**cache_record, "layers_downloaded": downloaded, "warnings": cache_warnings})
    if clients is not None and cache_to_ref is not None:
        # The image is written: the record says so before the cache is written, in case that fails or is interrupted.
        write_record(request.record_path, record)
        pushed_repo = result.outputs.get("registry")  # its blobs are mounted into the cache's repository, not uploaded
        try:
            wrote = clients.store_cache(cache_to_ref, baked, store, pushed_repo, frozenset(suspect.get(cache_to_ref.registry, ())))
        except EnvkitError as exc:  # say where the image is before failing
            where = f"the image is at {', '.join(result.references)}; " if result.references else ""
            raise EnvkitError(
                f"cache {cache_to_ref}: not written: {exc.message} ({where}record {request.record_path})", hint=exc.hint
            ) from None
        if wrote.skipped:
            if not result.references:  # the cache was the only output: nothing was written anywhere
                raise EnvkitError(f"{wrote.skipped}: not replaced, and nothing was written", hint="upgrade envkit, or use another tag")
            cache_warnings.append(f"{wrote.skipped}: not replaced; this bake's layers were not written to it")
        else:
            dropped = f"; dropped {wrote.dropped_layers} layer(s) no write used for longest" if wrote.dropped_layers else ""
            counts = f"{wrote.uploaded} layer(s) uploaded, {wrote.mounted} mounted, {wrote.present} already there"
            say(f"cache {cache_to_ref}: {counts}, {wrote.layers} kept{dropped}")
        if wrote.replaced:
            cache_warnings.append(f"{wrote.replaced}: replaced by this bake's cache")
        for digest in wrote.corrupt:
            cache_warnings.append(
                f"cache {cache_to_ref}: the registry serves layer blob {digest} with other bytes, even uploaded again: left out"
                " of the cache (its store is corrupt: ask its admin to delete that blob,"
                f" DELETE /v2/{cache_to_ref.repository}/blobs/{digest})"
            )
        cache_to_record = {
            "ref": str(cache_to_ref),
            "written": not wrote.skipped,
            "uploaded_layers": wrote.uploaded,
            "mounted_layers": wrote.mounted,
            "present_layers": wrote.present,
            "kept_layers": wrote.layers,
            "dropped_layers": wrote.dropped_layers,
            "dropped_packages": wrote.dropped_packages,
        }
        record = replace(record, cache={**(record.cache or {}), "to": cache_to_record})
    write_record(request.record_path, record)
    warnings = tuple(  # (once each: a layer several platforms share gives each the same warning)
        dict.fromkeys(
            [
                *([stale] if stale is not None and quiet else []),
                *cache_warnings,
                *(w for image in baked.platforms for w in image.warnings if w not in said_early),
            ]
        )
    )
    moved = result.push.moved.get(result.tags[0]) if result.push is not None and result.tags else None
    if moved is not None:  # (the lock-hash tag names one image of the lock: the last pushed)
        warnings += (
            f"{request.push_repo}:{result.tags[0]} named {moved}, another image of this lock; it now names {baked.top.digest}"
            " (another base, --cmd, --env, --large-package-mb or SOURCE_DATE_EPOCH makes another image of one lock: give each its own -t)",
        )
    unasked = result.push.unchecked.get(result.tags[0]) if result.push is not None and result.tags else None
    if unasked is not None:
        warnings += (f"{request.push_repo}:{result.tags[0]}: not known whether it named another image before this push ({unasked})",)
    # Measured: gzip's parallel deflate keeps every CPU busy already (auto, the default, means this process then).
    if request.jobs not in (None, 1) and request.compression != "zstd":
        warnings += ("--jobs applies to zstd layers (--compression zstd); gzip layers were written by this process",)
    return BakeResult(record, result.references, request.record_path, warnings)


def load_image(image: str, platform: str | None, insecure: bool, cache_dir: Path | None = None) -> tuple[BaseImage, Path, dict[str, str]]:
    """An image's layers in the blob cache: (BaseImage, blob store root, labels)."""
    from conda_envkit.cache import blobs_dir, cache_dir_or_default
    from conda_envkit.oci.base import load_base
    from conda_envkit.oci.blobs import BlobStore

    store = BlobStore(blobs_dir(cache_dir_or_default(cache_dir)))
    loaded = load_base(image, platform or "linux-64", store, insecure_for([image], insecure), check_diff_ids=False)
    return loaded, store.root, (loaded.config.get("config") or {}).get("Labels") or {}


def inspect_output(image: str, platform: str | None, insecure: bool) -> Output:
    """`envkit inspect`: an image's envkit record and the artifacts attached to it, as JSON."""
    from conda_envkit.export.registry import inspect_image

    output = Output()
    output.out(json.dumps(inspect_image(image, platform, insecure_for([image], insecure)), indent=2, sort_keys=True))
    return output


@dataclass(frozen=True)
class DockerfileRequest:
    """`envkit dockerfile`'s flags, as given."""

    lockfile: Path
    output: Path
    platform: str
    image: ImageFlags
    backend: str | None
    tag: str | None
    insecure: bool
    cache_dir: Path | None
    pin_base_digest: bool


def run_dockerfile(request: DockerfileRequest, quiet: bool, say: Say) -> None:
    """Write a Docker build context from a recipe (and build it with `backend` if given); `say` gets stdout lines."""
    from conda_envkit.bake import refuse_lock_holding_credentials
    from conda_envkit.cache import cache_dir_or_default
    from conda_envkit.dockerfile import build_with, write_build_context
    from conda_envkit.lockmodel import read_lock_source
    from conda_envkit.oci.image import oci_platform
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.oci.registry import RegistryClient
    from conda_envkit.oci.transfer import resolve_digest
    from conda_envkit.progress import progress_for

    platform = request.platform
    lf, lock_copy = read_lock_source(request.lockfile)
    options, bases, the_recipe = image_options(lf, [platform], request.image)
    assert the_recipe is not None  # --recipe is required
    refuse_lock_holding_credentials(lf, str(request.lockfile), options.in_image_prefix)  # (before a base digest is asked for)
    base_ref = bases[platform]
    digest = None
    in_registry = is_registry_ref(base_ref)
    if in_registry and request.pin_base_digest:
        ref = parse_image_ref(base_ref)
        hosts = insecure_for([base_ref], request.insecure)
        client = RegistryClient(ref.registry, insecure=ref.registry in hosts)
        digest = resolve_digest(client, ref, oci_platform(platform))
    cache = cache_dir_or_default(request.cache_dir)
    progress = progress_for(quiet)
    context = write_build_context(lock_copy, lf, platform, the_recipe, options, base_ref, digest, request.output, cache, None, progress)
    pinned = f", pinned to {digest}" if digest else ", digest not pinned: --pin-base-digest asks its registry" if in_registry else ""
    say(f"wrote {context.directory}/Dockerfile (base {base_ref}{pinned})")
    if request.backend:
        image_tag = request.tag or f"envkit/{request.image.name}:{context.labels[label_key('lock-hash')][7:19]}-{platform}"
        extra = ["--tls-verify=false"] if request.insecure and request.backend in ("buildah", "podman") else []
        build_with(request.backend, context.directory, image_tag, extra)
        say(f"built {image_tag} with {request.backend}")
