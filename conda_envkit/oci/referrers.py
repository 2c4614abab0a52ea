"""Artifacts attached to an image (OCI 1.1 `subject`), with the referrers tag-schema fallback.

Registries with the referrers API index an artifact manifest by its `subject` and
answer `GET /v2/<repo>/referrers/<digest>`. Older registries (distribution 2.8, for
one) do not: for them, an image index tagged `sha256-<subject hex>` lists the
referrers, as the OCI distribution spec 1.1 prescribes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conda_envkit.oci.blobs import OCI_INDEX, OCI_MANIFEST, Descriptor, OciError, canonical_json, json_document, sha256_digest
from conda_envkit.oci.registry import RegistryClient, RegistryError, repository_scope

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Attachment:
    """A file to attach to an image: its bytes, media type, artifact type and title."""

    data: bytes
    media_type: str
    artifact_type: str
    title: str
    annotations: dict[str, str] | None = None


def fallback_tag(subject: str) -> str:
    return subject.replace(":", "-")


def _ensure_blob(client: RegistryClient, repository: str, data: bytes) -> Descriptor:
    digest = sha256_digest(data)
    if not client.has_blob(repository, digest):
        client.put_blob(repository, data, digest)
    return Descriptor("", digest, len(data))


def list_referrers(client: RegistryClient, repository: str, subject: str) -> tuple[list[Descriptor], str]:
    """The referrers of `subject` and how they were found ("api" or "tag-schema")."""
    response = client.request(
        "GET",
        f"/v2/{repository}/referrers/{subject}",
        repository_scope(repository, "pull"),
        (200, 404),
        {"Accept": OCI_INDEX},
        what="referrers",
    )
    if response.status_code == 200 and response.headers.get("Content-Type", "").startswith(OCI_INDEX):
        where = f"{client.registry}/{repository}: referrers of {subject}"
        return _descriptors(json_document(response.content, where), where), "api"
    try:
        data, _, _ = client.get_manifest(repository, fallback_tag(subject))
    except RegistryError as exc:
        if "not found" in exc.message:
            return [], "tag-schema"
        raise
    where = f"{client.registry}/{repository}: referrers index of {subject}"
    return _descriptors(json_document(data, where), where), "tag-schema"


def _descriptors(index: dict[str, Any], where: str) -> list[Descriptor]:
    items = index.get("manifests", [])
    if not isinstance(items, list):
        raise OciError(f"{where}: `manifests` is not a list", hint="the registry is broken")
    return [Descriptor.from_json(m, where) for m in items]


def attach(client: RegistryClient, repository: str, subject: Descriptor, item: Attachment, created: str) -> Descriptor:
    """Push `item` as an artifact manifest whose subject is the image; keep the fallback index current."""
    layer = _ensure_blob(client, repository, item.data)
    config = _ensure_blob(client, repository, EMPTY_JSON)
    annotations = {TITLE: item.title, "org.opencontainers.image.created": created, **(item.annotations or {})}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": item.artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": item.media_type, "digest": layer.digest, "size": layer.size, "annotations": {TITLE: item.title}}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": dict(sorted(annotations.items())),
    }
    data = canonical_json(manifest)
    digest = sha256_digest(data)
    response = client.request(
        "PUT",
        f"/v2/{repository}/manifests/{digest}",
        repository_scope(repository, "pull,push"),
        (201,),
        {"Content-Type": OCI_MANIFEST},
        data,
    )
    descriptor = Descriptor(OCI_MANIFEST, digest, len(data), dict(sorted(annotations.items())), artifact_type=item.artifact_type)
    if not response.headers.get("OCI-Subject"):
        _add_to_fallback_index(client, repository, subject.digest, descriptor)
    return descriptor


def _add_to_fallback_index(client: RegistryClient, repository: str, subject: str, descriptor: Descriptor) -> None:
    existing, _ = list_referrers(client, repository, subject)
    entries = [d.to_json() for d in existing if d.digest != descriptor.digest] + [descriptor.to_json()]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    client.put_manifest(repository, fallback_tag(subject), canonical_json(index), OCI_INDEX)
