"""A plain conda package straight from its archive into tar members: no file extracted or linked.

"Plain" (conda_envkit.pkginfo): only files and symlinks, no prefix placeholder, not
noarch: python. Such a package's files are its archive's members as they are, in the archive's
order. A package in a layer of its own is read once, front to back, straight into its layer
(conda_envkit.archive_check.stream_package_archive: `streamed_members`); the others' payload tars
are decompressed once into the bake's scratch area while the archives are checked
(stage_package_archive) and their members' contents are read from there by offset into a group
layer's fragment (`package_members`). Both give the same members. Its
`conda-meta/<name>-<version>-<build>.json` is the record py-rattler writes when linking it
(repodata fields, sorted files and paths_data, empty requested_specs), normalized like
`envkit install`'s. tests/test_bake_cache.py checks the result against an installed prefix.
Anything unexpected in the archive (a hard link, a path paths.json does not list, one it lists
missing) raises NotPlain, and bake links that package in a staging prefix instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from conda_envkit.archive_check import ArchiveEntry, StagedArchive, StreamedArchive
from conda_envkit.channels import strip_credentials
from conda_envkit.lockmodel import LockedPackage
from conda_envkit.oci.tarstream import FILE, SYMLINK, Member
from conda_envkit.pkginfo import PackageInfo


class NotPlain(Exception):
    """The archive holds something the streaming path does not reproduce exactly."""


def _listed(name: str, paths_json: bytes | None) -> dict[str, tuple[str, int, str]]:
    """info/paths.json's entries (path -> kind, size, sha256), if every one is a plain file or symlink."""
    if paths_json is None:
        raise NotPlain(f"{name}: no info/paths.json")
    try:
        paths = json.loads(paths_json).get("paths") or []
    except (ValueError, AttributeError) as exc:
        raise NotPlain(f"{name}: {exc}") from None
    listed = {}
    try:  # (a malformed paths.json is the archive check's to report)
        for entry in paths:
            path = str(entry["_path"])
            if entry.get("path_type", "hardlink") == "hardlink" and not entry.get("prefix_placeholder") and not entry.get("no_link"):
                listed[path] = (FILE, int(entry.get("size_in_bytes") or 0), str(entry.get("sha256") or ""))
            elif entry.get("path_type") == "softlink":
                listed[path] = (SYMLINK, 0, "")
            else:
                raise NotPlain(f"{name}: {path} is not a plain file or symlink")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NotPlain(f"{name}: info/paths.json is malformed ({exc})") from None
    return listed


class _PlainPayload:
    """The entries of a plain package's payload in archive order, turned into layer members: each must be a file
    or symlink paths.json lists (once, as that kind and size), and no path may be both a file and a directory."""

    def __init__(self, name: str, paths_json: bytes | None, in_image: str) -> None:
        self.name, self.in_image = name, in_image
        self.listed = _listed(name, paths_json)
        self.seen: dict[str, tuple[str, int, str]] = {}
        self.parents: set[str] = set()  # the directories the entries so far are written through

    def _claim(self, path: str) -> None:
        if path in self.seen or path in self.parents:
            raise NotPlain(f"{self.name}: {path} is not listed in info/paths.json once")
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in self.parents:
            if path[:cut] in self.seen:
                raise NotPlain(f"{self.name}: {path[:cut]} is both a file and a directory")
            self.parents.add(path[:cut])
            cut = path.rfind("/", 0, cut)

    def member(self, entry: ArchiveEntry, **content: Any) -> Member | None:
        """The layer member of a payload entry (None for a directory: the layer makes its own)."""
        name = entry.path
        if entry.kind == "directory":
            return None
        if name not in self.listed:
            raise NotPlain(f"{self.name}: {name} is not listed in info/paths.json once")
        self._claim(name)
        kind, size, _digest = self.listed[name]
        if entry.kind == "symlink" and kind == SYMLINK:
            self.seen[name] = (SYMLINK, 0, hashlib.sha256(entry.target.encode()).hexdigest())
            return Member(f"{self.in_image}/{name}", SYMLINK, 0o777, linkname=entry.target)
        if entry.kind == "file" and kind == FILE and entry.size == size:
            self.seen[name] = self.listed[name]
            mode = 0o755 if entry.mode & 0o100 else 0o644
            return Member(f"{self.in_image}/{name}", FILE, mode, size, **content)
        raise NotPlain(f"{self.name}: {name} is not the file or symlink info/paths.json says")

    def record(self, locked: LockedPackage, info: PackageInfo) -> Member:
        """The package's conda-meta record, once every entry was read."""
        if set(self.seen) != set(self.listed):
            raise NotPlain(f"{self.name}: paths.json lists paths the archive lacks")
        data = _record(locked, info, self.seen)
        return Member(f"{self.in_image}/conda-meta/{locked.name}-{locked.version}-{locked.build}.json", FILE, 0o644, len(data), data=data)


def _record(locked: LockedPackage, info: PackageInfo, paths: dict[str, tuple[str, int, str]]) -> bytes:
    from conda_envkit.install import _channel_of, record_from_info

    file_name = locked.url.rsplit("/", 1)[-1]
    record = json.loads(record_from_info(info, locked, file_name, strip_credentials(locked.url)).to_json())
    record["url"] = strip_credentials(locked.locked_url)
    record["channel"] = _channel_of(locked.locked_url)
    entries = []
    for path in sorted(paths):
        kind, size, digest = paths[path]
        if kind == SYMLINK:
            entries.append({"_path": path, "path_type": "softlink", "sha256_in_prefix": digest, "size_in_bytes": 0})
        else:
            entries.append({"_path": path, "path_type": "hardlink", "sha256": digest, "size_in_bytes": size})
    record["files"] = sorted(paths)
    record["paths_data"] = {"paths": entries, "paths_version": 1}
    record["requested_specs"] = []
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def package_members(staged: StagedArchive, locked: LockedPackage, info: PackageInfo, in_image: str) -> list[Member]:
    """The package's members in archive order (content read by offset from its staged payload tar), then its
    conda-meta record."""
    payload = _PlainPayload(staged.payload.name, staged.paths_json, in_image)
    out = []
    for entry in staged.members:
        member = payload.member(entry, source=staged.payload, offset=entry.offset)
        if member is not None:
            out.append(member)
    out.append(payload.record(locked, info))
    return out


def streamed_members(streamed: StreamedArchive, locked: LockedPackage, info: PackageInfo, in_image: str) -> Iterator[Member]:
    """`package_members` of an archive being read (stream_package_archive): each file's content is read from the
    archive as the layer writer copies it. NotPlain as soon as an entry is not what a plain package holds."""
    payload = _PlainPayload(streamed.archive.name, streamed.paths_json, in_image)
    for entry, content in streamed.payload():
        if entry.path.split("/")[0] == "info":  # as a staged payload leaves them out
            continue
        member = payload.member(entry, stream=content)
        if member is not None:
            yield member
    yield payload.record(locked, info)
