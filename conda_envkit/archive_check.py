"""A conda package archive checked against itself before anything of it is linked.

The lock's sha256 says the archive is the one that was locked, not that it is sane: a
package may be hostile. Before install links it, every entry of its tarballs must stay
inside the prefix (no absolute path, no `..`, no symlink pointing out, nothing but files,
directories and links), and every file its `info/paths.json` lists must be in the archive
with the sha256 and size paths.json gives (conda's own invariant, which verify relies on).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from conda_envkit.errors import EnvkitError
from conda_envkit.safepath import UnsafePathError, relative_path, resolve_in_root, symlink_target_inside

_HEX64 = re.compile(r"[0-9a-f]{64}")


class PackageContentError(EnvkitError):
    """A package archive whose contents are unsafe or contradict its own metadata."""


@dataclass(frozen=True)
class ArchiveEntry:
    """One file or symlink of a package's payload, as found in the archive."""

    path: str
    kind: str  # file, symlink, directory
    sha256: str = ""
    size: int = 0
    target: str = ""
    mode: int = 0o644


@contextmanager
def _tar_streams(archive: Path) -> Iterator[list[tuple[str, tarfile.TarFile]]]:
    """(kind, tar) for the info and pkg tarballs of a `.conda`, or the single tarball of a `.tar.bz2`."""
    if archive.name.endswith(".conda"):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            info = next((n for n in names if n.startswith("info-") and n.endswith(".tar.zst")), None)
            pkg = next((n for n in names if n.startswith("pkg-") and n.endswith(".tar.zst")), None)
            if info is None or pkg is None:
                raise PackageContentError(f"{archive.name}: not a .conda package (no info-/pkg- tarballs)", hint="the package is corrupt")
            opened: list[IO[bytes]] = []
            try:
                tars = []
                for kind, name in (("info", info), ("pkg", pkg)):
                    raw = z.open(name)
                    opened.append(raw)
                    stream = zstandard.ZstdDecompressor().stream_reader(raw)
                    opened.append(stream)
                    tars.append((kind, tarfile.open(fileobj=stream, mode="r|")))  # noqa: SIM115 - its stream is closed in the finally below
                yield tars
            finally:
                for f in opened:
                    f.close()
    else:
        with tarfile.open(archive, mode="r|bz2") as tar:
            yield [("both", tar)]


def _read_members(archive: Path) -> tuple[dict[str, ArchiveEntry], bytes | None]:
    entries: dict[str, ArchiveEntry] = {}
    paths_json = None
    with _tar_streams(archive) as tars:
        for kind, tar in tars:
            for member in tar:
                name = relative_path(member.name, f"{archive.name}: tar entry")
                in_info = name == "info" or name.startswith("info/")
                if kind == "info" and not in_info:
                    raise PackageContentError(
                        f"{archive.name}: info tarball holds {name!r}", hint="the package is malformed or hostile; do not use it"
                    )
                if member.issym() or member.islnk():
                    target = member.linkname
                    ok = symlink_target_inside(name, target) if member.issym() else _hardlink_ok(target)
                    if not ok:
                        raise UnsafePathError(
                            f"{archive.name}: link {name} -> {target} points outside the prefix",
                            hint="the package is malformed or hostile; do not use it",
                        )
                    entries[name] = ArchiveEntry(name, "symlink" if member.issym() else "hardlink", target=target)
                elif member.isdir():
                    entries[name] = ArchiveEntry(name, "directory", mode=member.mode)
                elif member.isfile():
                    sha256, content = hash_member(tar, member, keep=name == "info/paths.json")
                    if content is not None:
                        paths_json = content
                    entries[name] = ArchiveEntry(name, "file", sha256, member.size, mode=member.mode)
                else:
                    raise PackageContentError(
                        f"{archive.name}: entry {name} is a device, FIFO or other special file",
                        hint="conda packages hold files, directories and links only; do not use it",
                    )
    return entries, paths_json


def hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo, keep: bool = False) -> tuple[str, bytes | None]:
    """The sha256 (hex) of a regular file in `tar`, read once in chunks; its bytes too when `keep`."""
    data = tar.extractfile(member)
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    while chunk := data.read(1 << 20):  # type: ignore[union-attr]
        digest.update(chunk)
        if keep:
            chunks.append(chunk)
    return digest.hexdigest(), b"".join(chunks) if keep else None


def _hardlink_ok(target: str) -> bool:
    try:
        relative_path(target, "hard link")
    except UnsafePathError:
        return False
    return True


def check_package_archive(archive: Path, label: str) -> list[ArchiveEntry]:
    """The payload of a conda package archive, after checking it is safe and matches its paths.json.

    `label` names the package in errors (platform, name, version, build).
    """
    try:
        entries, paths_json = _read_members(archive)
    except UnsafePathError as exc:
        raise PackageContentError(f"{label}: {exc.message}", hint=exc.hint) from None
    except (tarfile.TarError, zipfile.BadZipFile, zstandard.ZstdError, EOFError, OSError) as exc:
        raise PackageContentError(f"{label}: {archive.name} is not a readable package ({exc})", hint="the package is corrupt") from None
    if paths_json is None:
        return [e for e in entries.values() if not e.path.startswith("info/")]  # pre-paths.json packages: tar checks only
    try:
        listed = json.loads(paths_json).get("paths") or []
    except (ValueError, AttributeError) as exc:
        raise PackageContentError(f"{label}: info/paths.json is not valid JSON ({exc})", hint="the package is corrupt") from None
    for item in listed:
        if not isinstance(item, dict) or not isinstance(item.get("_path"), str):
            raise PackageContentError(f"{label}: info/paths.json has a malformed entry", hint="the package is corrupt")
        try:
            path = relative_path(item["_path"], f"{label}: info/paths.json")
        except UnsafePathError as exc:
            raise PackageContentError(exc.message, hint=exc.hint) from None
        if path.split("/")[0] in ("info", "conda-meta"):
            raise PackageContentError(
                f"{label}: info/paths.json lists {path}, which no package may install", hint="the package is hostile; do not use it"
            )
        found = entries.get(path)
        kind = item.get("path_type", "hardlink")
        if kind == "directory":
            continue
        if found is None:
            raise PackageContentError(
                f"{label}: info/paths.json lists {path}, which the archive does not hold", hint="the package is corrupt"
            )
        if kind == "softlink":
            if found.kind != "symlink":
                raise PackageContentError(f"{label}: {path} is listed as a symlink but is a {found.kind}", hint="the package is corrupt")
        elif found.kind != "file":
            raise PackageContentError(f"{label}: {path} is listed as a file but is a {found.kind}", hint="the package is corrupt")
        else:
            expected = str(item.get("sha256") or "").lower()
            if expected and (not _HEX64.fullmatch(expected) or expected != found.sha256):
                raise PackageContentError(
                    f"{label}: {path} has sha256 {found.sha256[:12]}…, its paths.json says {expected[:12]}…",
                    hint="the package contradicts its own metadata; do not use it",
                )
            size = item.get("size_in_bytes")
            if isinstance(size, int) and size != found.size:
                raise PackageContentError(
                    f"{label}: {path} is {found.size} bytes, its paths.json says {size}",
                    hint="the package contradicts its own metadata; do not use it",
                )
    return [e for e in entries.values() if e.path.split("/")[0] != "info"]


def check_links_together(payloads: dict[str, list[ArchiveEntry]]) -> None:
    """Check the packages of one install together: no entry goes through another's symlink,
    and no chain of symlinks (across packages) resolves out of the prefix.

    `payloads` maps a package label to its checked payload (`check_package_archive`).
    """
    links: dict[str, str] = {}
    owner: dict[str, str] = {}
    for label, entries in payloads.items():
        for e in entries:
            if e.kind == "symlink":
                links[e.path] = e.target
                owner[e.path] = label
    if not links:
        return
    for label, entries in payloads.items():
        for e in entries:
            parts = e.path.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent in links:
                    raise PackageContentError(
                        f"{label}: {e.path} would be written through the symlink {parent} -> {links[parent]} of {owner[parent]}",
                        hint="packages must not install through symlinks; one of them is malformed or hostile",
                    )
    for path, target in links.items():
        try:
            resolve_in_root(links, f"{path.rpartition('/')[0]}/{target}" if "/" in path else target, strict=True)
        except UnsafePathError:
            raise PackageContentError(
                f"{owner[path]}: symlink {path} -> {target} leaves the prefix through other symlinks",
                hint="the package is malformed or hostile; do not use it",
            ) from None
