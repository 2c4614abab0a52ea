"""Image references (`registry/repository:tag@digest`) and where base images come from."""

from __future__ import annotations

import re
from dataclasses import dataclass

from conda_envkit.oci.blobs import OciError, check_digest

DOCKER_HUB = "registry-1.docker.io"
_REPO = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A host name or [IPv6] address, and an optional port: anything else (`user@host`, `host#x`, a space)
# would make the URL reach another host than the one named, or not be a URL at all.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_REGISTRY = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
# Docker's limit on a repository name.
_MAX_REPO = 255


@dataclass(frozen=True)
class ImageRef:
    """A parsed registry reference."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if given, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def names_registry(component: str) -> bool:
    """Whether a reference's first component is a registry (docker's rule), not a Docker Hub repository's start."""
    return "." in component or ":" in component or component == "localhost"


def split_login(text: str) -> tuple[str, str]:
    """(the `user:password@` login written before a reference's registry, after an optional `scheme://`, or "";
    the reference without it). A login has no place in a reference: it is refused (parse_image_ref), or dropped from
    what is carried out (an exported record's image)."""
    scheme = _SCHEME.match(text)
    head = scheme.group(0) if scheme else ""
    rest = text[len(head) :]
    login, at, _ = rest.partition("/")[0].rpartition("@")
    if not at or "/" not in rest:  # (`name@sha256:...` is a digest, not a login)
        return "", text
    return login, head + rest[len(login) + 1 :]


_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def parse_image_ref(text: str) -> ImageRef:
    """Parse `[registry/]repo[:tag][@sha256:...]` the way docker does (docker.io by default)."""
    value = text.removeprefix("docker://")
    login, _ = split_login(value)
    if login:  # `user:password@registry/repo`: a login where a registry belongs
        shown = text.replace(login + "@", "***@", 1)
        raise OciError(
            f"invalid image reference {shown[:300]!r}: it holds a login before the registry",
            hint="a reference names no credentials: log in (`docker login`, `podman login` or `skopeo login`), or set"
            " ENVKIT_REGISTRY_USER/ENVKIT_REGISTRY_PASSWORD for the push target",
        )
    name, _, digest = value.partition("@")
    if digest:
        check_digest(digest, text)
    first, sep, rest = name.partition("/")
    if sep and names_registry(first):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name
        if "/" not in path:
            path = f"library/{path}"
    repo, colon, tag = path.partition(":")
    if colon and not tag:  # docker: "invalid reference format"
        raise OciError(f"invalid image reference {text!r}: empty tag after ':'", hint=f"name a tag ({repo}:TAG), or leave out the ':'")
    if registry in ("docker.io", "index.docker.io"):
        registry = DOCKER_HUB
    if not _REGISTRY.fullmatch(registry):
        raise OciError(
            f"invalid image reference {text[:300]!r}: bad registry host {registry[:300]!r}",
            hint="a registry is a host name or [IPv6 address] with an optional :port, e.g. registry.example.com:5000",
        )
    if len(repo) > _MAX_REPO:
        raise OciError(
            f"invalid image reference {text[:300]!r}: repository name longer than {_MAX_REPO} characters", hint="check the reference"
        )
    if not _REPO.fullmatch(repo):
        hint = "repository names are lowercase" if _REPO.fullmatch(repo.lower()) else "e.g. registry.example.com/team/train:tag"
        raise OciError(f"invalid image reference {text!r}: bad repository name {repo!r}", hint=hint)
    if tag and not _TAG.fullmatch(tag):
        raise OciError(f"invalid image reference {text!r}: bad tag {tag!r}", hint="tags are [A-Za-z0-9_.-], at most 128 characters")
    return ImageRef(registry, repo, tag or None, digest or None)


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise OciError(f"invalid tag {tag!r}", hint="tags are [A-Za-z0-9_.-], at most 128 characters, not starting with . or -")
    return tag
