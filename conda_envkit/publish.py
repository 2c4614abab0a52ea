"""A baked image -> where it goes: an OCI layout, a docker-archive, a registry (tags last)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from conda_envkit.bake import BakedImage, BakeError, BakeOptions
from conda_envkit.labels import label_key
from conda_envkit.network import is_loopback as is_loopback
from conda_envkit.oci.archive import write_docker_archive
from conda_envkit.oci.blobs import BlobStore, Descriptor
from conda_envkit.oci.layout import REF_NAME, check_layout_target, write_layout
from conda_envkit.oci.reference import check_tag, parse_image_ref
from conda_envkit.progress import SILENT, Progress
from conda_envkit.record import BakeRecord, PlatformRecord

if TYPE_CHECKING:  # the registry client (requests) loads only for --push
    from conda_envkit.oci.registry import PushStats


def insecure_hosts(registries: list[str], insecure: bool) -> tuple[str, ...]:
    """The registries to reach over plain HTTP: with --insecure, the loopback ones; every other one keeps TLS
    (a base on Docker Hub beside a push to a registry on localhost). Refused when no registry is on loopback:
    then --insecure could only have been meant for a remote one."""
    if not insecure:
        return ()
    local = tuple(r for r in registries if is_loopback(r))
    remote = [r for r in registries if not is_loopback(r)]
    if remote and not local:
        raise BakeError(
            f"--insecure refused for {', '.join(remote)}: plain HTTP is only allowed for registries on localhost",
            hint="give the registry a TLS certificate (TLS is always verified)",
        )
    return local


@dataclass(frozen=True)
class BakeTargets:
    """Where to write the image."""

    oci_layout: Path | None = None
    docker_archive: Path | None = None
    push: str | None = None  # registry/repository
    tags: tuple[str, ...] = ()
    insecure: tuple[str, ...] = ()  # registries reached over plain HTTP
    cache_to: str | None = None  # a registry cache written by the bake command (a target of its own: a cache-warming bake)


@dataclass(frozen=True)
class PublishResult:
    references: list[str]
    outputs: dict[str, str]
    push: PushStats | None = None
    tags: list[str] = field(default_factory=list)


def default_tags(baked: BakedImage, extra: tuple[str, ...]) -> list[str]:
    """The lock hash (plus the platform for a single-platform image), then the user's tags."""
    short = baked.lock_hash.partition(":")[2][:12]
    first = short if len(baked.platforms) > 1 else f"{short}-{baked.platforms[0].platform}"
    return list(dict.fromkeys([first, *(check_tag(t) for t in extra)]))


def check_targets(targets: BakeTargets, platforms: int) -> None:
    """Refuse targets that cannot take an image of `platforms` platforms, before anything is fetched or built:
    no target at all, an --oci path that is not a layout (it would be replaced), a --docker-archive that is a
    directory or for several platforms, a --push with a tag or digest."""
    if not (targets.oci_layout or targets.docker_archive or targets.push or targets.cache_to):
        raise BakeError(
            "nothing to write", hint="pass --oci DIR, --docker-archive FILE, --push REGISTRY/REPO and/or --cache-to REGISTRY/REPO"
        )
    if targets.oci_layout is not None:
        check_layout_target(targets.oci_layout)
    if targets.docker_archive is not None:
        if platforms != 1:
            raise BakeError("a docker-archive holds one platform", hint="bake one -p for --docker-archive, or use --oci/--push for several")
        if targets.docker_archive.is_dir():
            raise BakeError(f"--docker-archive {targets.docker_archive} is a directory", hint="pass a file name (e.g. image.tar)")
    if targets.push is not None:
        ref = parse_image_ref(targets.push)
        if ref.tag or ref.digest:
            raise BakeError(f"--push {targets.push}: give the repository without tag or digest", hint="tags come from --tag")


def check_push_target(push: str, insecure: tuple[str, ...]) -> None:
    """Refuse a --push registry that does not answer or does not take the credentials, before anything is fetched or
    built (a cold bake of a CUDA environment is minutes of a runner's time): as --cache-to is checked."""
    from conda_envkit.errors import EnvkitError
    from conda_envkit.oci.registry import RegistryClient

    ref = parse_image_ref(push)
    try:
        RegistryClient(ref.registry, insecure=ref.registry in insecure, push_target=True).check_push(ref.repository)
    except EnvkitError as exc:
        raise BakeError(f"--push {push}: {exc.message}", hint=exc.hint) from None


def publish_image(
    baked: BakedImage, store: BlobStore, targets: BakeTargets, progress: Progress = SILENT, suspect: dict[str, set[str]] | None = None
) -> PublishResult:
    """Write the layout and archive, push, and return the references that now name the image. `suspect`: by
    registry, the blobs it served with other bytes in this bake (a push there uploads them again and reads them back)."""
    check_targets(targets, len(baked.platforms))
    tags = default_tags(baked, targets.tags)
    references: list[str] = []
    outputs: dict[str, str] = {}
    stats = None
    if targets.oci_layout is not None:
        named = [Descriptor(baked.top.media_type, baked.top.digest, baked.top.size, {REF_NAME: t}) for t in tags]
        write_layout(targets.oci_layout, store, baked.blobs(), named)
        outputs["oci"] = str(targets.oci_layout)
        references.append(f"oci:{targets.oci_layout}:{tags[0]}")
    if targets.docker_archive is not None:
        name = targets.push or f"envkit/{baked.platforms[0].labels['org.opencontainers.image.title']}"
        write_docker_archive(targets.docker_archive, store, baked.top, [f"{name}:{t}" for t in tags], baked.epoch)
        outputs["docker-archive"] = str(targets.docker_archive)
        references.append(f"docker-archive:{targets.docker_archive}")
    if targets.push is not None:
        ref = parse_image_ref(targets.push)
        from conda_envkit.oci.registry import RegistryClient
        from conda_envkit.oci.transfer import ImageToPush, push_image

        client = RegistryClient(ref.registry, insecure=ref.registry in targets.insecure, push_target=True)
        mount_from = {}
        blobs = []
        for image in baked.platforms:
            for layer in image.base.layers:
                if image.base.repository:
                    mount_from[layer.descriptor.digest] = image.base.repository
            mount_from.update(image.remote_blobs)  # layers found in a --cache-from cache
            blobs += [image.config.digest, *(layer.descriptor.digest for layer in (*image.base.layers, *image.layers))]
        to_push = ImageToPush(
            top=baked.top,
            manifests=tuple(image.manifest for image in baked.platforms),
            blobs=tuple(dict.fromkeys(blobs)),
            mount_from=mount_from,
        )
        stats = push_image(client, ref.repository, to_push, store, tags, progress, frozenset((suspect or {}).get(ref.registry, ())))
        outputs["registry"] = f"{ref.registry}/{ref.repository}"
        references.insert(0, f"{ref.registry}/{ref.repository}@{baked.top.digest}")
    return PublishResult(references, outputs, stats, tags)


def bake_record(
    baked: BakedImage,
    lockfile_path: Path,
    options: BakeOptions,
    references: list[str],
    tags: list[str],
    outputs: dict[str, str],
    push: PushStats | None,
) -> BakeRecord:
    """The record of a bake and where it went (schema `envkit.bake/1`, documented in docs/bake.md)."""
    platforms = {}
    for image in baked.platforms:
        platforms[image.platform] = PlatformRecord(
            manifest_digest=image.manifest.digest,
            config_digest=image.config.digest,
            platform_lock_hash=image.labels[label_key("platform-lock-hash")],
            cuda=image.labels[label_key("cuda")],
            cuda_version=image.labels[label_key("cuda-version")],
            blas=image.labels[label_key("blas")],
            base={"reference": image.base.reference, "digest": image.base.digest, "layers": len(image.base.layers)},
            layers=tuple(
                {
                    "digest": layer.descriptor.digest,
                    "diff_id": layer.diff_id,
                    "size": layer.descriptor.size,
                    "media_type": layer.descriptor.media_type,
                    "packages": list(packages),
                    "source": source.kind,
                    "read_from_archives": list(source.read),
                }
                for layer, packages, source in zip(image.layers, image.layer_packages, image.sources, strict=True)
            ),
            labels=image.labels,
            packages=tuple(image.packages),
        ).to_json()
    pushed = None
    if push is not None:
        pushed = {
            "uploaded_blobs": len(push.uploaded),
            "skipped_blobs": len(push.skipped),
            "mounted_blobs": len(push.mounted),
            "bytes_uploaded": push.bytes_uploaded,
        }
    return BakeRecord(
        lockfile=str(lockfile_path),
        lock_hash=baked.lock_hash,
        image={"digest": baked.top.digest, "media_type": baked.top.media_type, "size": baked.top.size},
        prefix=options.in_image_prefix,
        tags=tuple(tags),
        references=tuple(references),
        outputs=outputs,
        platforms=platforms,
        push=pushed,
    )
