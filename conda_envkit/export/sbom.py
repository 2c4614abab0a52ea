"""A CycloneDX SBOM (JSON, spec 1.6) of a baked platform: conda packages as `pkg:conda/...` purls.

Built with cyclonedx-python-lib from the bake record, whose package list comes from the
installed prefix (`conda-meta`: url, sha256, license). Deterministic: the serial number
is derived from the image digest and the timestamp is the image's creation time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from conda_envkit.record import RecordError, extra_hint

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"


def _purl(package: dict[str, str]):  # type: ignore[no-untyped-def]
    from packageurl import PackageURL

    if package.get("manager") == "pip":
        return PackageURL(type="pypi", name=package["name"], version=package.get("version"))
    qualifiers = {"build": package.get("build", ""), "subdir": package.get("subdir", ""), "type": "conda"}
    url = package.get("url", "")
    if url.count("/") >= 2:
        qualifiers["channel"] = url.rsplit("/", 2)[0]
    return PackageURL(
        type="conda", name=package["name"], version=package.get("version"), qualifiers={k: v for k, v in qualifiers.items() if v}
    )


def render_sbom(record: dict[str, Any], platform: str) -> str:
    """The SBOM of one platform of a bake record, as CycloneDX 1.6 JSON text (validated)."""
    try:
        try:
            from cyclonedx.contrib.license.factories import LicenseFactory
        except ImportError:  # cyclonedx-python-lib before the contrib package
            from cyclonedx.factory.license import LicenseFactory
        from cyclonedx.model import HashAlgorithm, HashType, Property
        from cyclonedx.model.bom import Bom
        from cyclonedx.model.component import Component, ComponentType
        from cyclonedx.output.json import JsonV1Dot6
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError:
        raise RecordError("cyclonedx-python-lib is not installed", hint=extra_hint("sbom")) from None
    details = record["platforms"].get(platform)
    if details is None:
        raise RecordError(f"the bake record has no platform {platform}", hint=f"it has {', '.join(record['platforms'])}")
    if not details.get("packages"):
        raise RecordError("the bake record lists no packages", hint="re-bake with this envkit version to record them")
    licenses = LicenseFactory()
    components = []
    for package in details["packages"]:
        purl = _purl(package)
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=package["name"],
                version=package.get("version"),
                bom_ref=purl.to_string(),
                purl=purl,
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=package["sha256"])] if package.get("sha256") else None,
                licenses=[licenses.make_from_string(package["license"])] if package.get("license") else None,
                properties=[Property(name="conda:build", value=package["build"])] if package.get("build") else None,
            )
        )
    digest = details["manifest_digest"]
    created = details.get("labels", {}).get("org.opencontainers.image.created", "1970-01-01T00:00:00Z")
    bom = Bom(components=components, serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"envkit:{digest}"))
    bom.metadata.timestamp = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    bom.metadata.component = Component(
        type=ComponentType.CONTAINER,
        name=details.get("labels", {}).get("org.opencontainers.image.title", "image"),
        version=digest,
        bom_ref=digest,
        properties=[Property(name="envkit:lock-hash", value=record["lock_hash"]), Property(name="envkit:platform", value=platform)],
    )
    bom.register_dependency(bom.metadata.component, components)  # the image holds every package: a complete graph
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    from cyclonedx.exception import MissingOptionalDependencyException

    try:
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    except MissingOptionalDependencyException:  # cyclonedx-python-lib without its [json-validation] extra
        raise RecordError(
            "cyclonedx-python-lib cannot validate the SBOM: its json-validation extra is not installed",
            hint="pip install 'conda-envkit[sbom]' (which asks for cyclonedx-python-lib[json-validation])",
        ) from None
    if error is not None:
        raise RecordError(f"the SBOM does not validate against CycloneDX 1.6: {error}", hint="this is a bug in envkit; please report it")
    return text
