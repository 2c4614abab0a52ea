"""`--to registry`: the lock file and a CycloneDX SBOM attached to the pushed image as OCI
artifacts (`subject` = the image), and `envkit inspect` reading an image and its artifacts back."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conda_envkit.export.sbom import SBOM_MEDIA_TYPE, render_sbom
from conda_envkit.labels import label_key
from conda_envkit.network import Deadline
from conda_envkit.oci.blobs import DOCKER_LIST, MAX_CONFIG_BYTES, OCI_EQUIVALENT, OCI_INDEX, BlobStore, Descriptor, OciError, json_document
from conda_envkit.oci.image import check_base_config, oci_platform
from conda_envkit.oci.reference import parse_image_ref
from conda_envkit.oci.referrers import Attachment, attach, list_referrers
from conda_envkit.oci.registry import RegistryClient, RegistryError
from conda_envkit.oci.transfer import fetch_into_store, manifest_descriptors, select_platform
from conda_envkit.record import (
    ImageEnvironment,
    RecordError,
    environment_from_layout,
    metadata_layers,
    read_layout_image,
    record_from_labels,
    with_baked_packages,
)

LOCK_MEDIA_TYPE = "application/vnd.conda.lock.v1+yaml"
MAX_REFERRER_SUBJECTS = 65  # the image and at most 64 platform manifests (attestations included)
LOCK_ARTIFACT_TYPE = "application/vnd.envkit.conda-lock.v1"
SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"


@dataclass(frozen=True)
class Attached:
    subject: str
    artifact: Descriptor
    title: str


# bake's environment metadata layer holds conda-meta and the lock: a few MB for hundreds of packages.
MAX_METADATA_LAYER_BYTES = 64 << 20


def _client(registry: str, insecure: tuple[str, ...], push_target: bool = False) -> RegistryClient:
    # The environment's registry credentials are for the image envkit pushed (attach), not for any image it reads.
    return RegistryClient(registry, insecure=registry in insecure, push_target=push_target)


def attach_to_registry(
    record: dict[str, Any], lockfile: Path, insecure: tuple[str, ...] = (), repository: str | None = None
) -> list[Attached]:
    """Attach the lock (to the image) and one SBOM per platform (to that platform's manifest), in `repository`
    (the user's) or the one the record names. The environment's registry credentials go to the user's alone:
    a record may be someone else's, and would otherwise choose where they are sent."""
    target = repository or (record.get("outputs") or {}).get("registry")
    if not target:
        raise RecordError("the bake record has no pushed image", hint="bake with --push REGISTRY/REPO first, or pass --repository")
    if not lockfile.is_file():
        raise RecordError(f"{lockfile}: lock file not found", hint="pass the lock the image was baked from with --lockfile")
    ref = parse_image_ref(target)
    if repository is not None and (ref.tag or ref.digest):
        raise RecordError(
            f"--repository {repository}: names a tag or digest", hint="pass REGISTRY/REPO alone: the record says which image it is"
        )
    client = _client(ref.registry, insecure, push_target=repository is not None)
    try:
        return _attach(client, ref.repository, record, lockfile)
    except RegistryError as exc:
        if repository is None and "authentication required" in exc.message:
            raise RegistryError(
                exc.message,
                hint=f"the record names {target}: to send ENVKIT_REGISTRY_USER/PASSWORD there, name it yourself with --repository {target}"
                " (a record may be someone else's); or log in to it (docker config)",
            ) from None
        raise


def _attach(client: RegistryClient, repository: str, record: dict[str, Any], lockfile: Path) -> list[Attached]:
    image = record["image"]
    top = Descriptor(image["media_type"], image["digest"], image["size"])
    # The image and each platform's manifest are there before anything is attached: a repository that does not
    # hold the record's image (a typo, another team's) gets no artifact and no referrers tag.
    for digest in (top.digest, *(details["manifest_digest"] for details in record["platforms"].values())):
        try:
            client.get_manifest(repository, digest)
        except RegistryError as exc:
            if "not found" not in exc.message:
                raise
            raise RegistryError(
                f"{client.registry}/{repository}@{digest} not found: the record's image is not in that repository",
                hint="--repository must name the repository the image was pushed to (the record's outputs.registry); nothing was attached",
            ) from None
    created = "1970-01-01T00:00:00Z"
    attached = []
    lock = Attachment(
        lockfile.read_bytes(), LOCK_MEDIA_TYPE, LOCK_ARTIFACT_TYPE, "conda-lock.yml", {label_key("lock-hash"): record["lock_hash"]}
    )
    # Every SBOM is made (and validated) before anything is attached: a record that cannot make one attaches nothing.
    sboms = {platform: render_sbom(record, platform).encode() for platform in sorted(record["platforms"])}
    attached.append(Attached(top.digest, attach(client, repository, top, lock, created), lock.title))
    for platform, details in sorted(record["platforms"].items()):
        data, media_type, digest = client.get_manifest(repository, details["manifest_digest"])
        subject = Descriptor(media_type, digest, len(data))
        created = details.get("labels", {}).get("org.opencontainers.image.created", created)
        sbom = Attachment(sboms[platform], SBOM_MEDIA_TYPE, SBOM_ARTIFACT_TYPE, f"sbom-{platform}.cdx.json")
        attached.append(Attached(digest, attach(client, repository, subject, sbom, created), sbom.title))
    return attached


def _inspect_local(reference: str, platform: str | None) -> tuple[dict[str, Any], str | None]:
    """`oci:DIR[:NAME]` or `docker-archive:FILE[:TAG]`: the record from the labels; local images carry no referrers."""
    import tempfile

    from conda_envkit.oci.base import load_base, split_ref
    from conda_envkit.oci.blobs import BlobStore
    from conda_envkit.oci.layout import select_ref

    top_digest: str | None
    manifest_digest: str | None
    if reference.startswith("oci:"):
        path, name = split_ref(reference[4:])
        top_digest = select_ref(Path(path), name).digest
        _store, manifest_digest, _document, config = read_layout_image(Path(path), name, platform, reference)
    else:
        # A docker-archive keeps no manifest, hence no digest: the image is known by its config.
        with tempfile.TemporaryDirectory(prefix="envkit-inspect-") as tmp:
            config = load_base(reference, platform or "linux-64", BlobStore(Path(tmp)), check_diff_ids=False).config
        top_digest = manifest_digest = None
    labels = (config.get("config") or {}).get("Labels") or {}
    image = reference if top_digest is None else f"{reference}@{top_digest}"
    if reference.startswith("oci:"):
        # As `export --image oci:` reads it: with the packages of the lock copy inside (checked against the labels).
        path, name = split_ref(reference[4:])
        baked = environment_from_layout(Path(path), name, platform)
    else:
        baked = ImageEnvironment(record_from_labels(labels, "image", top_digest, image))
    inspected = {
        "reference": reference,
        "digest": top_digest,
        "manifest_digest": manifest_digest,
        "record": baked.record.to_json(),
        "referrers": {},
        "referrers_found_by": "none (a local image has no registry to hold artifacts)",
    }
    return inspected, baked.lock_text


def inspect_image(reference: str, platform: str | None = None, insecure: tuple[str, ...] = ()) -> dict[str, Any]:
    """An image's envkit record (from its labels) and the artifacts attached to it and its platforms.

    `reference` is any form `bake --base` takes: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME],
    docker-archive:FILE[:TAG].
    """
    return inspect_image_and_lock(reference, platform, insecure)[0]


def inspect_image_and_lock(
    reference: str, platform: str | None = None, insecure: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str | None]:
    """`inspect_image`, and the text of bake's lock copy inside the image (its lock hash the labels' one), if any."""
    if reference.startswith(("oci:", "docker-archive:")):
        return _inspect_local(reference, platform)
    ref = parse_image_ref(reference)
    client = _client(ref.registry, insecure)
    where = f"{ref.registry}/{ref.repository}:{ref.reference}"
    data, media_type, top_digest = client.get_manifest(ref.repository, ref.reference)
    document = json_document(data, where)
    referrers: dict[str, list[dict[str, Any]]] = {}
    subjects = [top_digest]
    manifest_digest = top_digest
    if OCI_EQUIVALENT.get(media_type, media_type) == OCI_INDEX or media_type == DOCKER_LIST:
        chosen = select_platform(document, oci_platform(platform or "linux-64"), reference)
        subjects += [m["digest"] for m in document["manifests"]]  # select_platform checked every descriptor
        manifest_digest = chosen.digest
        data, _, _ = client.get_manifest(ref.repository, chosen.digest)
        document = json_document(data, f"{where} ({chosen.digest})")
    config_desc, _layers = manifest_descriptors(document, where)
    # The config as a base image's is read: within MAX_CONFIG_BYTES (as bake takes it), its digest checked.
    if config_desc.size > MAX_CONFIG_BYTES:
        raise OciError(
            f"{where}: its config {config_desc.digest} declares {config_desc.size} bytes, over the {MAX_CONFIG_BYTES >> 20} MiB limit",
            hint="an image config is a few KiB of JSON: the registry or image is broken",
        )
    with tempfile.TemporaryDirectory(prefix="envkit-inspect-") as tmp:
        client.fetch_blob(ref.repository, config_desc.digest, Path(tmp) / "config", config_desc.size)
        data = (Path(tmp) / "config").read_bytes()
    config = check_base_config(json_document(data, f"{where}: config {config_desc.digest}", "image config"), where)
    inner = config.get("config") or {}
    labels = dict(inner.get("Labels") or {})
    found_by = "api"
    subjects = list(dict.fromkeys(subjects))  # an index may list one manifest many times
    if len(subjects) > MAX_REFERRER_SUBJECTS:
        raise OciError(
            f"{where}: its index lists {len(subjects) - 1} manifests; envkit looks up the artifacts of at most {MAX_REFERRER_SUBJECTS - 1}",
            hint="this is not an image's index (a multi-platform image has a few), or it is hostile",
        )
    deadline = Deadline(f"{where}: the artifacts attached to the image and its {len(subjects) - 1} manifests")
    client.until = time.monotonic() + deadline.remaining()  # one deadline for all the lookups, not one each
    for subject in subjects:
        deadline.check()
        items, found_by = list_referrers(client, ref.repository, subject)
        if items:
            referrers[subject] = [
                {
                    "digest": d.digest,
                    "artifact_type": d.artifact_type,
                    "title": d.annotations.get("org.opencontainers.image.title"),
                }
                for d in items
            ]
    image = f"{ref.registry}/{ref.repository}@{top_digest}"
    record = record_from_labels(labels, "image", top_digest, image)
    if ref.tag:  # the tag it was read by
        record = replace(record, tags=(ref.tag,))
    # The packages, from the lock copy in the image's metadata layer (small; fetched within the download cap, its
    # digest checked), as for a local layout: the record had none.
    with tempfile.TemporaryDirectory(prefix="envkit-inspect-") as tmp:
        store = BlobStore(Path(tmp))
        fetched = []
        for layer in metadata_layers(labels, document):
            desc = Descriptor.from_json(layer, where)
            if desc.size > MAX_METADATA_LAYER_BYTES:  # (a recipe's files, say: not worth a download for a record)
                continue
            fetch_into_store(client, ref.repository, desc.digest, desc.size, store)
            fetched.append(layer)
        baked = with_baked_packages(record, labels, fetched, store, image)
    inspected = {
        "reference": reference,
        "digest": top_digest,
        "manifest_digest": manifest_digest,
        "record": baked.record.to_json(),
        "referrers": referrers,
        "referrers_found_by": found_by,
    }
    return inspected, baked.lock_text
