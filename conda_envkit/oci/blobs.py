"""Content-addressed blobs, descriptors and media types (OCI image spec)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conda_envkit.errors import EnvkitError
from conda_envkit.files import file_mode, owned_temp_file, read_cache_entry, replace_entry, write_error

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# Docker media types mapped to the OCI type naming the same bytes.
OCI_EQUIVALENT = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER: OCI_LAYER,
}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class OciError(EnvkitError):
    """An image, layout, archive or registry that is not what it should be."""


# The OCI distribution spec suggests registries accept manifests up to 4 MiB; image
# configs are of the same kind (JSON metadata, a few KiB in practice).
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 4 << 20


def json_document(data: bytes, where: str, what: str = "manifest") -> dict[str, Any]:
    """`data` parsed as a JSON object (UTF-8); anything else is an OciError naming `where`."""
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise OciError(f"{where}: {what} is not UTF-8 (byte offset {exc.start})", hint="the registry or image is broken") from None
    except ValueError as exc:
        raise OciError(f"{where}: {what} is not JSON ({exc})", hint="the registry or image is broken, or this is not an image") from None
    except RecursionError:
        raise OciError(f"{where}: {what} nests too deeply", hint="the registry or image is broken") from None
    if not isinstance(document, dict):
        raise OciError(f"{where}: {what} is a JSON {type(document).__name__}, not an object", hint="the registry or image is broken")
    return document


def is_digest(text: str) -> bool:
    """Whether `text` is a well-formed sha256 digest (`sha256:` and 64 lowercase hex digits)."""
    return _DIGEST.fullmatch(text) is not None


def check_digest(digest: str, where: str) -> str:
    """`digest` if it is a well-formed sha256 digest, else an error naming `where`."""
    if not is_digest(digest):
        raise OciError(
            f"{where}: invalid digest {digest!r}", hint="a digest is sha256: and 64 lowercase hex digits; no other algorithm is supported"
        )
    return digest


def canonical_json(data: Any) -> bytes:
    """The bytes envkit writes for a JSON document: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Descriptor:
        try:
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            if not isinstance(data.get("annotations") or {}, dict):
                raise ValueError("annotations is not an object")
            size = data["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"size {size!r} is not a byte count")
            return cls(
                media_type=str(data["mediaType"]),
                digest=check_digest(str(data["digest"]), where),
                size=size,
                annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
                platform=dict(data["platform"]) if data.get("platform") else None,
                artifact_type=str(data["artifactType"]) if data.get("artifactType") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OciError(f"{where}: malformed descriptor ({exc})", hint="the image metadata is corrupt") from None


def file_stamp(path: Path) -> list[int]:
    """What identifies a file's bytes without reading them: size, mtime, ctime, inode.

    ctime too: no user process can set it, so an edit in place that puts the old mtime back still changes it. The
    path's own (lstat): a symlink put in a blob's place never has the stamp of the file it replaced.
    """
    st = path.lstat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class BlobStore:
    """A directory of blobs named by digest (`<root>/sha256/<hex>`), written atomically.

    It remembers, for this process, the stamp (file_stamp) of every blob it wrote or found to match its
    digest, and of every blob a sealed cache entry vouches for (`note_checked`): such a blob leaves the
    store without being read again while its stamp is unchanged.
    """

    def __init__(self, root: Path, temp_dir: Path | None = None) -> None:
        self.root = root
        self.temp_dir = temp_dir or root / "tmp"  # on root's filesystem: `adopt` renames
        self._checked: dict[str, list[int]] = {}

    def note_checked(self, digest: str, stamp: list[int]) -> None:
        """Remember that the blob, as `stamp` describes it, holds `digest` (hashed, written, or vouched for by a sealed entry)."""
        self._checked[digest] = stamp

    def checked_stamp(self, digest: str) -> list[int] | None:
        """The stamp at which this process last knew the blob to match its digest."""
        return self._checked.get(digest)

    def path(self, digest: str) -> Path:
        algorithm, _, hexpart = check_digest(digest, str(self.root)).partition(":")
        return self.root / algorithm / hexpart

    def has(self, digest: str) -> bool:
        """Whether the store holds a regular file for `digest` (a symlink or anything else there is no blob)."""
        return _regular(self.path(digest))

    def check_size(self, digest: str, size: int, what: str) -> None:
        """OciError unless the blob's file is `size` bytes, as its descriptor says (`what` names it in the error)."""
        actual = self.path(digest).stat().st_size
        if actual != size:
            raise OciError(f"{what} is {actual} bytes, its descriptor says {size}", hint="the base image is corrupt")

    def has_sized(self, digest: str, size: int) -> bool:
        """Whether the store holds a regular file for `digest` of `size` bytes (checked before its bytes are hashed:
        a huge file put there by whoever else writes the cache is not read)."""
        try:
            st = self.path(digest).lstat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def verified_path(self, digest: str) -> Path:
        """The blob's path, after checking its bytes still have `digest`: a blob leaving the cache is re-read.

        A cache is writable by whoever shares it, and a blob hard-linked into an output can
        be edited there; a changed blob must never be written into an image or pushed.
        """
        path = self.path(digest)
        if not _regular(path):  # (a symlink there would be hashed through, then linked into an output as it is)
            raise self._gone(digest)
        stamp = file_stamp(path)
        if self._checked.get(digest) == stamp:
            return path
        if file_digest(path) != digest:
            raise OciError(
                f"blob {digest} in {self.root} does not match its digest (the cache was modified)",
                hint=f"delete {path} (or the whole cache) and bake again",
            )
        self._checked[digest] = stamp
        return path

    def stamp(self, digest: str) -> list[int]:
        """The blob's file_stamp; the error verified_path gives if it is gone (the cache cleaned while a bake ran)."""
        try:
            return file_stamp(self.path(digest))
        except OSError:
            raise self._gone(digest) from None

    def _gone(self, digest: str) -> OciError:
        return OciError(f"blob {digest} is not in {self.root}", hint="bake again; the blob cache was cleaned meanwhile")

    def put_bytes(self, data: bytes) -> str:
        """Store `data` (a config, a manifest: bytes in hand) under its digest; return the digest. A file already
        there is kept only if it holds these bytes (read at most their length): one planted by whoever else writes
        the cache (a huge file, a symlink, a directory) is replaced, not hashed on every bake and refused."""
        digest = sha256_digest(data)
        target = self.path(digest)
        if read_cache_entry(target, cap=len(data)) != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_path = owned_temp_file(target.parent, ".blob.")  # (a killed bake's: removed by the next)
            tmp = str(tmp_path)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    os.fchmod(f.fileno(), file_mode())  # blobs are hard-linked into layouts: not 0600
                replace_entry(Path(tmp), target)
            except OSError as exc:  # a full disk: the store's error, naming the blob
                Path(tmp).unlink(missing_ok=True)
                raise write_error(target, exc, "blob") from None
        self._checked[digest] = file_stamp(target)
        return digest

    def adopt(self, tmp: Path, digest: str) -> Path:
        """Move a finished temp file (whose digest the caller computed) into the store."""
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.chmod(file_mode())  # blobs are hard-linked into layouts: not mkstemp's 0600
        replace_entry(tmp, target)
        self._checked[digest] = file_stamp(target)  # every caller computed the digest of these bytes
        return target

    def temp_path(self) -> Path:
        """A fresh temp file inside the store (same filesystem, so `adopt` is a rename)."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = owned_temp_file(self.temp_dir, ".part.")  # (what killed bakes left: removed)
        os.close(fd)
        return name

    def read_json(self, digest: str, where: str | None = None, what: str = "blob") -> Any:
        """The JSON object a manifest, index or config blob holds, checked against `digest`.

        Opened as a cache entry is (`read_cache_entry`): a layout from elsewhere can put a symlink (to /dev/zero,
        out of the layout), a FIFO nobody writes or a directory at a blob's name; each is an error, not a read
        without end or a traceback."""
        path = self.path(digest)
        data = read_cache_entry(path, cap=MAX_MANIFEST_BYTES)
        if data is None:
            reason = _unreadable(path, digest, MAX_MANIFEST_BYTES)
            raise OciError(f"{where}: {reason}" if where else reason, hint=_BROKEN_LAYOUT)
        if sha256_digest(data) != digest:
            raise OciError(f"blob {digest} in {self.root} does not match its digest", hint=f"delete {self.path(digest)} and retry")
        return json_document(data, where or f"blob {digest}", what)


_BROKEN_LAYOUT = "the image layout is incomplete or corrupt: copy or bake it again"


def _unreadable(path: Path, digest: str, cap: int) -> str:
    """Why `read_cache_entry` found no blob at `path`: missing, not a regular file, or over `cap` bytes."""
    try:
        st = path.lstat()
    except OSError:
        return f"blob {digest} is not in {path.parent.parent}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink, not a file of the layout's own"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (a directory, a FIFO, a device?)"
    if st.st_size > cap:
        return f"{path} is {st.st_size} bytes, over the {cap >> 20} MiB limit for a manifest or config"
    return f"{path} cannot be read"


def _regular(path: Path) -> bool:
    """Whether `path` itself is a regular file (not a symlink to one)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def file_digest(path: Path) -> str:
    """sha256 digest of a file's bytes."""
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
