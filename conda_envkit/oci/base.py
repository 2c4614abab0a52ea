"""Where a base image comes from: `scratch`, `oci:DIR[:NAME]`, `docker-archive:PATH[:TAG]`, or a registry reference."""

from __future__ import annotations

from pathlib import Path

from conda_envkit.oci.archive import read_docker_archive
from conda_envkit.oci.blobs import DOCKER_LIST, OCI_EQUIVALENT, OCI_INDEX, BlobStore, OciError, file_digest
from conda_envkit.oci.image import BaseImage, oci_platform
from conda_envkit.oci.layout import layout_store, link_or_copy, select_ref
from conda_envkit.oci.reference import parse_image_ref

SCRATCH = "scratch"


def split_ref(value: str) -> tuple[str, str | None]:
    # PATH[:NAME]: a name is what follows the last colon, unless that part looks like a path.
    head, sep, tail = value.rpartition(":")
    if sep and head and "/" not in tail:
        return head, tail
    return value, None


def split_archive_ref(value: str) -> tuple[str, str | None]:
    """PATH[:REFERENCE] of a docker-archive, whose reference (`docker.io/base/busybox:1`) holds colons and slashes
    of its own: the path is the shortest head that is a file (as skopeo reads it), else split as `split_ref` does."""
    cut = value.find(":")
    while cut > 0:
        if Path(value[:cut]).is_file():
            return value[:cut], value[cut + 1 :] or None
        cut = value.find(":", cut + 1)
    return split_ref(value)


def _import_blob(source: BlobStore, store: BlobStore, digest: str, size: int) -> None:
    if store.has_sized(digest, size) and file_digest(store.path(digest)) == digest:
        return  # a cached copy is used only if its bytes still have its name (and its size, before they are read)
    path = source.path(digest)
    if not path.is_file():
        raise OciError(f"{source.root.parent}: blob {digest} is missing", hint="the layout is incomplete")
    tmp = store.temp_path()
    tmp.unlink()
    link_or_copy(path, tmp)
    if file_digest(tmp) != digest:
        tmp.unlink()
        raise OciError(f"{source.root.parent}: blob {digest} does not match its digest", hint="the layout is corrupt")
    store.adopt(tmp, digest)


def base_from_layout(path: Path, name: str | None, platform: str, store: BlobStore, check_diff_ids: bool = True) -> BaseImage:
    """A base image from a local OCI layout (blobs copied into `store`, layers scanned)."""
    source = layout_store(path)
    desc = select_ref(path, name)
    _import_blob(source, store, desc.digest, desc.size)
    store.check_size(desc.digest, desc.size, f"{path}: {desc.digest}")
    document = store.read_json(desc.digest)
    media_type = OCI_EQUIVALENT.get(desc.media_type, desc.media_type)
    if media_type == OCI_INDEX or desc.media_type == DOCKER_LIST:
        from conda_envkit.oci.transfer import select_platform

        desc = select_platform(document, oci_platform(platform), str(path))
        _import_blob(source, store, desc.digest, desc.size)
        store.check_size(desc.digest, desc.size, f"{path}: {desc.digest}")
        document = store.read_json(desc.digest)
    from conda_envkit.oci.transfer import base_from_manifest, manifest_descriptors

    if document.get("manifests") is not None or not isinstance(document.get("config"), dict):
        raise OciError(
            f"{path}: {desc.digest} is not an image manifest (an index inside an index, or no config)",
            hint="name an image manifest, or an index of image manifests, with oci:DIR:NAME",
        )
    config, layers = manifest_descriptors(document, str(path))
    for blob in (config, *layers):
        _import_blob(source, store, blob.digest, blob.size)

    return base_from_manifest(f"oci:{path}" + (f":{name}" if name else ""), document, desc.digest, store, None, check_diff_ids)


def load_base(
    text: str,
    platform: str,
    store: BlobStore,
    insecure_registries: tuple[str, ...] = (),
    check_diff_ids: bool = True,
    push_registry: str | None = None,
) -> BaseImage:
    """Resolve a base image reference for one platform into `store`.

    `check_diff_ids`: each layer's uncompressed bytes must hash to its config's diff_id (a bake's base); `verify`
    reads an image with this off, to report a lying diff_id as a finding instead of failing on it.
    `push_registry`: the host the bake pushes to (named by the user); a base on that very host is read with the
    push target's credentials (ENVKIT_REGISTRY_*), which go to that host anyway, as crane and buildx use one per host."""
    if text == SCRATCH:
        return BaseImage(reference=SCRATCH, config={})
    if text.startswith("oci:"):
        path, name = split_ref(text[4:])
        return base_from_layout(Path(path), name, platform, store, check_diff_ids)
    if text.startswith("docker-archive:"):
        path, tag = split_archive_ref(text[len("docker-archive:") :])
        from dataclasses import replace

        # (the reference as given, REFERENCE too: the record and the image's base label name the image picked)
        return replace(read_docker_archive(Path(path), store, tag), reference=text)
    ref = parse_image_ref(text)
    from conda_envkit.oci.registry import RegistryClient
    from conda_envkit.oci.transfer import pull_base

    client = RegistryClient(ref.registry, insecure=ref.registry in insecure_registries, push_target=ref.registry == push_registry)
    return pull_base(client, ref, oci_platform(platform), store, check_diff_ids)
