"""Reading layer tarballs we did not write: no entry may point outside the image root."""

from __future__ import annotations

import gzip
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO

import zstandard

from conda_envkit.oci.blobs import OciError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


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


def _inside(name: str) -> str | None:
    """The normalized path of an entry name inside the root, or None if it leaves it."""
    normalized = posixpath.normpath("/" + name.lstrip("/"))
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return normalized


def check_layer(path: Path, where: str) -> int:
    """Scan a layer for entries escaping the root; return the number of entries.

    Rejected: names with `..`, hard links whose target leaves the root, relative
    symlinks that climb above the root from where they stand. Absolute symlink
    targets are resolved inside the container's root by runtimes and are allowed.
    """
    count = 0
    try:
        with open_layer(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                count += 1
                entry = _inside(member.name)
                if entry is None:
                    raise OciError(
                        f"{where}: entry {member.name!r} escapes the image root", hint="this base layer is unsafe; do not use it"
                    )
                if member.islnk() and _inside(member.linkname) is None:
                    raise OciError(
                        f"{where}: hard link {member.name!r} -> {member.linkname!r} escapes the image root",
                        hint="this base layer is unsafe",
                    )
                if member.issym() and not member.linkname.startswith("/"):
                    depth = len([p for p in posixpath.dirname(entry).split("/") if p])
                    for part in member.linkname.split("/"):
                        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
                        if depth < 0:
                            raise OciError(
                                f"{where}: symlink {member.name!r} -> {member.linkname!r} points above the image root",
                                hint="this base layer is unsafe; do not use it",
                            )
    except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError) as exc:
        raise OciError(f"{where}: not a readable layer tarball ({exc})", hint="the base image is corrupt or not an image") from None
    return count
