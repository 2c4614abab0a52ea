"""docker-archive tarballs (`docker save` / `docker load`), written deterministically and read safely.

What envkit writes is what docker 25+ saves: an OCI layout (oci-layout, index.json,
blobs/sha256/...) plus docker's manifest.json, in one tar, so both `docker load`
and OCI tools read it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO

from conda_envkit.files import NotRegularFile, file_mode, is_stream_target, open_regular_file, open_stream, owned_temp_file, write_error
from conda_envkit.oci.blobs import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    BlobStore,
    Descriptor,
    OciError,
    canonical_json,
)
from conda_envkit.oci.image import BaseImage, check_base_config
from conda_envkit.oci.layer import Layer
from conda_envkit.oci.layout import REF_NAME
from conda_envkit.oci.safety import GZIP_MAGIC, ZSTD_MAGIC, check_layer, in_root


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, source: Path | None = None, mtime: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = mtime, 0, 0, "", "", 0o644
    if data is None and source is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    if source is not None:
        info.size = source.stat().st_size
        with source.open("rb") as f:
            tar.addfile(info, f)
    else:
        info.size = len(data or b"")
        tar.addfile(info, io.BytesIO(data or b""))


def write_docker_archive(path: Path, store: BlobStore, manifest: Descriptor, repo_tags: list[str], mtime: int = 0) -> None:
    """Write one image (a single-platform manifest) as a docker-archive, atomically."""
    document = store.read_json(manifest.digest)
    config = document["config"]["digest"]
    layers = [layer["digest"] for layer in document["layers"]]

    def blob_name(digest: str) -> str:
        return f"blobs/sha256/{digest.partition(':')[2]}"

    docker_manifest = [{"Config": blob_name(config), "RepoTags": repo_tags, "Layers": [blob_name(d) for d in layers]}]
    index_entries = []
    tags: list[str | None] = list(repo_tags) or [None]
    for tag in tags:
        annotations = {REF_NAME: tag, "io.containerd.image.name": tag} if tag else {}
        index_entries.append(Descriptor(manifest.media_type, manifest.digest, manifest.size, annotations).to_json())

    def fill(tar: tarfile.TarFile) -> None:
        _add(tar, "blobs", mtime=mtime)
        _add(tar, "blobs/sha256", mtime=mtime)
        for digest in sorted({manifest.digest, config, *layers}):
            _add(tar, blob_name(digest), source=store.verified_path(digest), mtime=mtime)
        _add(tar, "index.json", canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries}), mtime=mtime)
        _add(tar, "manifest.json", canonical_json(docker_manifest), mtime=mtime)
        _add(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}), mtime=mtime)

    path = path.absolute()
    if is_stream_target(path, "docker archive"):
        # `--docker-archive /dev/stdout | docker load`: written through; a rename would replace the device (as root).
        try:
            with (
                open_stream(path, "docker archive", "--docker-archive") as raw,
                tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                fill(tar)
        except OSError as exc:
            raise write_error(path, exc, "docker archive", "--docker-archive") from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_path = owned_temp_file(path.parent, f".{path.name}.", ".tmp")  # (a killed bake's: removed by the next)
        tmp = str(tmp_path)
    except OSError as exc:
        raise write_error(path, exc, "docker archive", "--docker-archive") from None
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would be the archive's mode
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            fill(tar)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc, "docker archive", "--docker-archive") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _member(tar: tarfile.TarFile, name: str, where: str) -> tarfile.TarInfo:
    clean = posixpath.normpath(name)
    if clean.startswith(("/", "..")) or ".." in clean.split("/"):
        raise OciError(f"{where}: manifest.json names {name!r}, outside the archive", hint="the archive is unsafe; do not use it")
    try:
        member = tar.getmember(clean)
    except KeyError:
        raise OciError(f"{where}: {name!r} is missing from the archive", hint="the archive is incomplete") from None
    if not member.isfile():
        raise OciError(f"{where}: {name!r} is not a regular file", hint="the archive is unsafe or corrupt")
    return member


def _json_member(tar: tarfile.TarFile, name: str, where: str, cap: int) -> object:
    """A JSON file of the archive (manifest.json, an image config), at most `cap` bytes."""
    member = _member(tar, name, where)
    if member.size > cap:
        raise OciError(f"{where}: {name!r} is {member.size} bytes, over the {cap >> 20} MiB limit", hint="the archive is corrupt")
    try:
        return json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
    except ValueError as exc:  # (UnicodeDecodeError too)
        raise OciError(f"{where}: {name!r} is not JSON ({exc})", hint="the archive is corrupt") from None


def _strings(value: object) -> list[str]:
    """The strings of a JSON list (RepoTags), none for anything else."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _same_reference(given: str, repo_tag: str) -> bool:
    """Whether a reference names an archive's RepoTags entry: the same text, or the same image once docker's
    defaults are filled in (`busybox:1` is `docker.io/library/busybox:1`)."""
    if given == repo_tag:
        return True
    from conda_envkit.oci.reference import parse_image_ref

    try:
        a, b = parse_image_ref(given), parse_image_ref(repo_tag)
    except OciError:
        return False
    return (a.registry, a.repository, a.tag or "latest", a.digest) == (b.registry, b.repository, b.tag or "latest", b.digest)


def _open_archive(path: Path) -> BinaryIO:
    """The docker-archive at `path`, opened for reading if it is a regular file: a FIFO (`<(docker save …)`) is read
    out of order, which a pipe cannot do, and a device (/dev/zero) has no end; each is refused, not waited on."""
    try:
        return open_regular_file(path)
    except FileNotFoundError:
        raise OciError(f"{path}: no such docker archive", hint="check the path given to docker-archive:PATH") from None
    except OSError as exc:
        raise OciError(f"{path}: cannot read the docker archive ({exc.strerror})", hint="check the file's permissions") from None
    except NotRegularFile:
        raise OciError(
            f"{path}: the docker archive is not a regular file (a directory, a pipe, a device?)",
            hint="save the image to a file first (docker save -o image.tar …) and pass that",
        ) from None


def read_docker_archive(path: Path, store: BlobStore, tag: str | None = None) -> BaseImage:
    """Load one image of a docker-archive into `store` as a base image (layers scanned for safety)."""
    where = str(path)
    raw = _open_archive(path)
    try:
        tar = tarfile.open(fileobj=raw, mode="r:*")  # noqa: SIM115 - closed by the `with tar:` below, after the errors here
    except (tarfile.TarError, OSError) as exc:
        raw.close()
        said = str(exc).splitlines()[0].rstrip(":")  # (tarfile lists each compression it tried, a line each)
        raise OciError(
            f"{path}: not a tar archive ({said})", hint="pass a file written by `docker save` or `envkit bake --docker-archive`"
        ) from None
    with raw, tar:
        entries = _json_member(tar, "manifest.json", where, MAX_MANIFEST_BYTES)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise OciError(f"{where}: manifest.json is not a list of images", hint="pass a file written by `docker save`")
        named = sorted(str(t) for e in entries for t in _strings(e.get("RepoTags")))
        if tag is not None:
            entries = [e for e in entries if any(_same_reference(tag, t) for t in _strings(e.get("RepoTags")))]
        if len(entries) != 1:
            hint = f"name one with docker-archive:PATH:REFERENCE: {', '.join(named[:10])}" if named else "the archive names no image"
            raise OciError(f"{where}: holds {len(entries)} matching images" + (f" for {tag!r}" if tag else ""), hint=hint)
        entry = entries[0]
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
            raise OciError(f"{where}: manifest.json's image has no `Config` file name or `Layers` list", hint="the archive is corrupt")
        config = check_base_config(_json_member(tar, config_name, where, MAX_CONFIG_BYTES), where)
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise OciError(f"{where}: its config's rootfs.diff_ids is not a list of digests", hint="the archive is corrupt")
        if len(diff_ids) != len(layer_names):
            raise OciError(f"{where}: {len(layer_names)} layers for {len(diff_ids)} diff_ids", hint="the archive is corrupt")
        layers = []
        links: dict[str, str] = {}  # symlinks of the layers below: chains across layers are resolved
        conda_prefixes: set[str] = set()  # where the layers below hold a conda environment
        for name, diff_id in zip(layer_names, diff_ids, strict=True):
            source = tar.extractfile(_member(tar, name, where))
            tmp = store.temp_path()
            try:
                h = hashlib.sha256()
                with tmp.open("wb") as out:
                    while chunk := source.read(1 << 20):  # type: ignore[union-attr]
                        h.update(chunk)
                        out.write(chunk)
                digest = "sha256:" + h.hexdigest()
                with tmp.open("rb") as head:
                    magic = head.read(4)
                media_type = OCI_LAYER_GZIP if magic.startswith(GZIP_MAGIC) else OCI_LAYER_ZSTD if magic == ZSTD_MAGIC else OCI_LAYER
                # The uncompressed bytes must be the config's diff_id, compressed or not (a gzip layer was not checked).
                check_layer(tmp, f"{where} layer {name}", links, diff_id, conda_prefixes)
                size = tmp.stat().st_size
                store.adopt(tmp, digest)
            finally:
                tmp.unlink(missing_ok=True)
            layers.append(Layer(Descriptor(media_type, digest, size), diff_id))
    # A docker-archive has no registry manifest, so there is no base digest to record.
    return BaseImage(reference=f"docker-archive:{path}", config=config, layers=tuple(layers), conda_prefixes=in_root(conda_prefixes))
