"""Reading layer tarballs we did not write: no entry may point outside the image root."""

from __future__ import annotations

import gzip
import hashlib
import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from conda_envkit.network import size_text
from conda_envkit.oci.blobs import OciError
from conda_envkit.safepath import UnsafePathError, climbs_out, resolve_in_root
from conda_envkit.tar_members import each_member

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What a layer we did not write may expand to: a few MiB of gzip can stand for terabytes of
# tar, or for hundreds of millions of tiny entries. Real layers (a CUDA base's biggest is
# ~4 GB and ~100,000 entries) stay far below both.
MAX_LAYER_BYTES = 64 << 30
MAX_LAYER_ENTRIES = 4_000_000


def open_layer(path: Path) -> BinaryIO:
    """The uncompressed tar stream of a layer blob (plain, gzip or zstd, by magic bytes)."""
    raw = path.open("rb")
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
    return raw


def layer_members(tar: tarfile.TarFile, where: str) -> Iterator[tarfile.TarInfo]:
    """The members of a streamed layer tar, within MAX_LAYER_ENTRIES and MAX_LAYER_BYTES.

    Each header is dropped once read (`each_member`), so memory stays flat however many
    entries the layer has.
    """
    for count, member in enumerate(each_member(tar), 1):
        if count > MAX_LAYER_ENTRIES or member.offset_data + member.size > MAX_LAYER_BYTES:
            raise OciError(
                f"{where}: the layer expands to more than {MAX_LAYER_ENTRIES:,} entries or {size_text(MAX_LAYER_BYTES)}",
                hint="no image layer is that big: this is a decompression bomb or a corrupt layer; do not use it",
            )
        yield member


def _inside(name: str) -> str | None:
    """The normalized path of an entry name inside the root, or None if it leaves it."""
    normalized = posixpath.normpath("/" + name.lstrip("/"))
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return normalized


class _Hashing:
    """A read-only stream that hashes what is read through it (a layer's uncompressed bytes: its diff_id)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.digest = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def rest(self) -> None:
        while self.read(1 << 20):
            pass


def check_layer(
    path: Path, where: str, links: dict[str, str] | None = None, diff_id: str | None = None, conda_prefixes: set[str] | None = None
) -> int:
    """Scan a layer for entries escaping the root; return the number of entries.

    Rejected: names with `..`, hard links whose target leaves the root, and symlinks whose
    target climbs above the root from where the link really stands. Where it stands is
    resolved inside the rootfs like securejoin does: through the symlinks of this layer and
    of the layers below it (`links`, root-relative path -> target, updated with this
    layer's), so a chain of individually harmless links cannot lead out. Absolute targets
    are resolved inside the container's root by runtimes and are allowed.

    `conda_prefixes` (root-relative directories holding a `conda-meta/`, as the layers below
    leave them) is updated with this layer's: what it adds, less what its whiteouts hide.
    """
    links = {} if links is None else links
    conda_prefixes = set() if conda_prefixes is None else conda_prefixes
    try:
        with open_layer(path) as raw:
            stream = _Hashing(raw)
            count = _scan(stream, where, links, conda_prefixes)
            stream.rest()  # the end-of-archive blocks: the diff_id is of the whole uncompressed stream
    except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
        raise OciError(f"{where}: not a readable layer tarball ({exc})", hint="the base image is corrupt or not an image") from None
    except UnsafePathError as exc:
        raise OciError(f"{where}: {exc.message}", hint="this base layer is unsafe; do not use it") from None
    actual = f"sha256:{stream.digest.hexdigest()}"
    if diff_id is not None and actual != diff_id:
        raise OciError(
            f"{where}: its uncompressed bytes are {actual}, the image config says {diff_id}",
            hint="the base image is corrupt or was tampered with; do not use it",
        )
    return count


def _scan(stream: _Hashing, where: str, links: dict[str, str], conda_prefixes: set[str]) -> int:
    """check_layer's walk over the entries; returns how many there were."""
    count = 0
    added: set[str] = set()  # this layer's conda prefixes: its own whiteouts hide only the layers below
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for member in layer_members(tar, where):
            count += 1
            entry = _inside(member.name)
            if entry is None:
                raise OciError(f"{where}: entry {member.name!r} escapes the image root", hint="this base layer is unsafe; do not use it")
            rel = entry.lstrip("/")
            directory, base = posixpath.split(rel)
            if base.startswith(".wh."):
                # An opaque whiteout makes its directory a directory of this layer, empty below: a lower layer's link
                # at that path or under it is gone (it was kept, and resolved this layer's links from its target).
                gone = directory if base == ".wh..wh..opq" else posixpath.join(directory, base[4:])
                for key in [k for k in links if k == gone or k.startswith(gone + "/") or not gone]:
                    del links[key]
                conda_prefixes.difference_update(_hidden_prefixes(conda_prefixes, directory, base))
                continue
            if "conda-meta" in rel:
                parts = rel.split("/")
                if "conda-meta" in parts[:-1] or (parts[-1] == "conda-meta" and member.isdir()):
                    added.add("/".join(parts[: parts.index("conda-meta")]))
            if member.islnk() and _inside(member.linkname) is None:
                raise OciError(
                    f"{where}: hard link {member.name!r} -> {member.linkname!r} escapes the image root", hint="this base layer is unsafe"
                )
            if member.issym():
                # From where the link lies: whether an extractor follows a lower layer's link on the way there
                # (resolved) or writes the path as it is (literal), it must stay inside the root.
                start = resolve_in_root(links, directory) if directory else ""
                relative = not member.linkname.startswith("/")
                resolved = posixpath.join(start, member.linkname) if start else member.linkname
                literal = posixpath.normpath(posixpath.join(directory, member.linkname))
                if relative and (climbs_out(links, resolved) or literal == ".." or literal.startswith("../") or climbs_out(links, literal)):
                    raise OciError(
                        f"{where}: symlink {member.name!r} -> {member.linkname!r} points above the image root",
                        hint="this base layer is unsafe; do not use it",
                    )
                links[rel] = member.linkname
            elif rel in links:
                del links[rel]  # a file or directory replaces a lower layer's link
    conda_prefixes.update(added)
    return count


def in_root(conda_prefixes: set[str]) -> tuple[str, ...]:
    """Root-relative conda prefixes (as a scan keeps them) as the image's absolute paths, sorted."""
    return tuple(sorted("/" + p for p in conda_prefixes))


def _hidden_prefixes(prefixes: set[str], directory: str, whiteout: str) -> set[str]:
    """The conda prefixes a whiteout in `directory` hides: an opaque one everything below the directory, a
    plain one its path and what lies below it (a prefix's `conda-meta` included)."""
    if whiteout == ".wh..wh..opq":
        return {p for p in prefixes if p == directory or p.startswith(directory + "/") or not directory}
    gone = posixpath.join(directory, whiteout[4:])
    return {p for p in prefixes if p == gone or p.startswith(gone + "/") or posixpath.join(p, "conda-meta") == gone}
