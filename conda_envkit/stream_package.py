"""A plain conda package straight from its archive into tar members: no file extracted or linked.

"Plain" (conda_envkit.pkginfo): only files and symlinks, no prefix placeholder, not
noarch: python. Such a package's files are its archive's members as they are: the payload
tar was decompressed once into the bake's scratch area while the archive was checked
(conda_envkit.archive_check.stage_package_archive) and its members' contents are read from it
by offset into the image layer (or a fragment). Its
`conda-meta/<name>-<version>-<build>.json` is the record py-rattler writes when linking it
(repodata fields, sorted files and paths_data, empty requested_specs), normalized like
`envkit install`'s. tests/test_bake_cache.py checks the result against an installed prefix.
Anything unexpected in the archive (a hard link, a path paths.json does not list, one it lists
missing) raises NotPlain, and bake links that package in a staging prefix instead.
"""

from __future__ import annotations

import hashlib
import json

from conda_envkit.archive_check import StagedArchive
from conda_envkit.channels import strip_credentials
from conda_envkit.lockmodel import LockedPackage
from conda_envkit.oci.tarstream import FILE, SYMLINK, Member
from conda_envkit.pkginfo import PackageInfo


class NotPlain(Exception):
    """The archive holds something the streaming path does not reproduce exactly."""


def _listing(staged: StagedArchive) -> list[dict[str, object]]:
    """info/paths.json's entries, as the archive check read them."""
    if staged.paths_json is None:
        raise NotPlain(f"{staged.payload.name}: no info/paths.json")
    try:
        paths = json.loads(staged.paths_json).get("paths") or []
    except (ValueError, AttributeError) as exc:
        raise NotPlain(f"{staged.payload.name}: {exc}") from None
    return list(paths)


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
    """The package's members (content read by offset from its staged payload tar), then its conda-meta record."""
    listed = {}
    for entry in _listing(staged):
        path = str(entry["_path"])
        if entry.get("path_type", "hardlink") == "hardlink" and not entry.get("prefix_placeholder") and not entry.get("no_link"):
            listed[path] = (FILE, int(entry.get("size_in_bytes") or 0), str(entry.get("sha256") or ""))  # type: ignore[call-overload]
        elif entry.get("path_type") == "softlink":
            listed[path] = (SYMLINK, 0, "")
        else:
            raise NotPlain(f"{staged.payload.name}: {path} is not a plain file or symlink")
    seen: dict[str, tuple[str, int, str]] = {}
    out: list[Member] = []
    for member in staged.members:
        name = member.path
        if member.kind == "directory":
            continue
        if name not in listed or name in seen:
            raise NotPlain(f"{staged.payload.name}: {name} is not listed in info/paths.json once")
        kind, size, _digest = listed[name]
        if member.kind == "symlink" and kind == SYMLINK:
            seen[name] = (SYMLINK, 0, hashlib.sha256(member.target.encode()).hexdigest())
            out.append(Member(f"{in_image}/{name}", SYMLINK, 0o777, linkname=member.target))
        elif member.kind == "file" and kind == FILE and member.size == size:
            seen[name] = listed[name]
            mode = 0o755 if member.mode & 0o100 else 0o644
            out.append(Member(f"{in_image}/{name}", FILE, mode, size, source=staged.payload, offset=member.offset))
        else:
            raise NotPlain(f"{staged.payload.name}: {name} is not the file or symlink info/paths.json says")
    if set(seen) != set(listed):
        raise NotPlain(f"{staged.payload.name}: paths.json lists paths the archive lacks")
    data = _record(locked, info, seen)
    out.append(Member(f"{in_image}/conda-meta/{locked.name}-{locked.version}-{locked.build}.json", FILE, 0o644, len(data), data=data))
    return out
