"""A plain conda package straight from its archive into tar members: no file extracted or linked.

"Plain" (conda_envkit.pkginfo): only files and symlinks, no prefix placeholder, not
noarch: python. Such a package's files are its archive's members as they are: the payload
tar is decompressed once into the bake's scratch area and its members' contents are read
from it by offset into the image layer (or a fragment). Its
`conda-meta/<name>-<version>-<build>.json` is the record py-rattler writes when linking it
(repodata fields, sorted files and paths_data, empty requested_specs), normalized like
`envkit install`'s. tests/test_bake_cache.py checks the result against an installed prefix.
Anything unexpected in the archive (a hard link, a path paths.json does not list, one it lists
missing) raises NotPlain, and bake links that package in a staging prefix instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import zstandard

from conda_envkit.channels import strip_credentials
from conda_envkit.lockmodel import LockedPackage
from conda_envkit.oci.tarstream import FILE, SYMLINK, Member
from conda_envkit.pkginfo import PackageInfo

_BUFFER = 1 << 20


class NotPlain(Exception):
    """The archive holds something the streaming path does not reproduce exactly."""


def _unpacked_tar(archive: Path, scratch: Path) -> Path:
    """The package's payload tar, decompressed into `scratch` (one sequential write; read back by offset)."""
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / f"{archive.name}.tar"
    with target.open("wb") as out:
        if archive.name.endswith(".conda"):
            with zipfile.ZipFile(archive) as outer:
                names = [n for n in outer.namelist() if n.startswith("pkg-") and n.endswith(".tar.zst")]
                if len(names) != 1:
                    raise NotPlain(f"{archive.name}: {len(names)} pkg- tarballs")
                with outer.open(names[0]) as raw:
                    zstandard.ZstdDecompressor().copy_stream(raw, out, read_size=_BUFFER, write_size=_BUFFER)
        else:
            import bz2

            with bz2.open(archive, "rb") as raw:
                while chunk := raw.read(_BUFFER):
                    out.write(chunk)
    return target


def _listing(archive: Path) -> list[dict[str, object]]:
    """info/paths.json's entries: read from a .conda's small info tarball directly, else through py-rattler."""
    if archive.name.endswith(".conda"):
        with zipfile.ZipFile(archive) as outer:
            names = [n for n in outer.namelist() if n.startswith("info-") and n.endswith(".tar.zst")]
            if len(names) != 1:
                raise NotPlain(f"{archive.name}: {len(names)} info- tarballs")
            data = zstandard.ZstdDecompressor().decompressobj().decompress(outer.read(names[0]))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as info:
            member = info.extractfile("info/paths.json")
            if member is None:
                raise NotPlain(f"{archive.name}: no info/paths.json")
            return list(json.loads(member.read()).get("paths", []))
    from rattler import PathsJson

    return [
        {
            "_path": PurePosixPath(e.relative_path).as_posix(),
            "path_type": "hardlink" if e.path_type.hardlink else "softlink",
            "sha256": (e.sha256 or b"").hex(),
            "size_in_bytes": e.size_in_bytes,
        }
        for e in PathsJson.from_package_archive(archive).paths
    ]


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


def package_members(archive: Path, locked: LockedPackage, info: PackageInfo, in_image: str, scratch: Path) -> list[Member]:
    """The package's members (content read from its payload tar, decompressed into `scratch`), then its conda-meta record."""
    listed = {}
    for entry in _listing(archive):
        path = str(entry["_path"])
        if entry.get("path_type", "hardlink") == "hardlink" and not entry.get("prefix_placeholder") and not entry.get("no_link"):
            listed[path] = (FILE, int(entry.get("size_in_bytes") or 0), str(entry.get("sha256") or ""))  # type: ignore[call-overload]
        elif entry.get("path_type") == "softlink":
            listed[path] = (SYMLINK, 0, "")
        else:
            raise NotPlain(f"{archive.name}: {path} is not a plain file or symlink")
    seen: dict[str, tuple[str, int, str]] = {}
    out: list[Member] = []
    try:
        payload = _unpacked_tar(archive, scratch)
        with tarfile.open(payload, mode="r:") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if member.isdir() or (name.startswith("info/") and name not in listed):
                    continue
                if name not in listed or name in seen:
                    raise NotPlain(f"{archive.name}: {name} is not listed in info/paths.json once")
                kind, size, _digest = listed[name]
                if member.issym() and kind == SYMLINK:
                    seen[name] = (SYMLINK, 0, hashlib.sha256(member.linkname.encode()).hexdigest())
                    out.append(Member(f"{in_image}/{name}", SYMLINK, 0o777, linkname=member.linkname))
                elif member.isreg() and kind == FILE and member.size == size:
                    seen[name] = listed[name]
                    mode = 0o755 if member.mode & 0o100 else 0o644
                    out.append(Member(f"{in_image}/{name}", FILE, mode, size, source=payload, offset=member.offset_data))
                else:
                    raise NotPlain(f"{archive.name}: {name} is not the file or symlink info/paths.json says")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, zstandard.ZstdError, EOFError) as exc:
        raise NotPlain(f"{archive.name}: {exc}") from None
    if set(seen) != set(listed):
        raise NotPlain(f"{archive.name}: paths.json lists paths the archive lacks")
    data = _record(locked, info, seen)
    out.append(Member(f"{in_image}/conda-meta/{locked.name}-{locked.version}-{locked.build}.json", FILE, 0o644, len(data), data=data))
    return out
