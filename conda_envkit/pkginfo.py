"""What envkit needs to know about a package archive, read once and kept by its sha256.

A conda archive's `info/index.json` (build number, noarch kind, depends: what the lock
does not carry) and its installed size (from `info/paths.json`), or a wheel's unpacked
size, are a function of the archive's sha256. They are read from the verified archive
once and cached at `<cache>/pkginfo/<sha256>.json`, so planning an image's layers and
building rattler's records needs no archive afterwards (a warm bake reads none).
"""

from __future__ import annotations

import base64
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from conda_envkit.cache import CACHE_SETTING, pkginfo_dir
from conda_envkit.cache_seal import user_seal
from conda_envkit.errors import EnvkitError
from conda_envkit.files import read_cache_entry, write_cache_entry

if TYPE_CHECKING:
    import tarfile

    from conda_envkit.tar_members import CountedStream

INFO_FORMAT = "envkit.pkginfo/5"  # 2: a package with empty files can be plain; 3: prefix placeholders too; 4: noarch: python; 5: paths


class PackageInfoError(EnvkitError):
    """An archive whose metadata cannot be read."""


@dataclass(frozen=True)
class PackageInfo:
    """The metadata of one package archive (conda package or wheel), keyed by its sha256."""

    sha256: str
    manager: str  # conda | pip
    name: str
    version: str
    build: str = ""
    build_number: int = 0
    subdir: str = "noarch"
    noarch: str | None = None  # python | generic | None
    arch: str | None = None
    platform: str | None = None
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    license: str | None = None
    license_family: str | None = None
    features: str | None = None
    track_features: tuple[str, ...] = ()
    python_site_packages_path: str | None = None
    installed_size: int = 0
    archive_size: int = 0
    plain: bool = False  # only files and symlinks (prefix placeholders the bake replaces; noarch: python too): bake streams it
    entry_points: tuple[str, ...] = ()  # a noarch: python package's (info/link.json), as `command = module:function`
    paths: tuple[str, ...] = ()  # a conda package's files and symlinks (info/paths.json), as in its archive: clobbers
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        # (shallow: asdict would copy every path, one by one)
        return {"format": INFO_FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}, "paths": _packed_paths(self.paths)}

    @classmethod
    def from_json(cls, data: dict[str, object], where: str, max_paths_bytes: int | None = None) -> PackageInfo:
        """The info a record holds (`max_paths_bytes`: the most its paths may unpack to; MAX_INFO_FILE_BYTES)."""
        if data.get("format") != INFO_FORMAT:
            raise PackageInfoError(f"{where}: not an envkit package record", hint="delete it; envkit reads the archive again")
        values = {k: v for k, v in data.items() if k != "format"}
        try:
            for key in ("depends", "constrains", "track_features", "entry_points"):
                values[key] = tuple(values.get(key) or ())  # type: ignore[arg-type]
            values["paths"] = _unpacked_paths(values.get("paths"), MAX_INFO_FILE_BYTES if max_paths_bytes is None else max_paths_bytes)
            info = cls(**values)  # type: ignore[arg-type]
            _check_types(info)
            return info
        except (TypeError, ValueError, zlib.error) as exc:
            raise PackageInfoError(f"{where}: malformed package record ({exc})", hint="delete it; envkit reads the archive again") from None


_TEXT_FIELDS = ("sha256", "manager", "name", "version", "build", "subdir")
_OPTIONAL_TEXT_FIELDS = ("noarch", "arch", "platform", "license", "license_family", "features", "python_site_packages_path")
_COUNT_FIELDS = ("build_number", "installed_size", "archive_size")
_TEXTS_FIELDS = ("depends", "constrains", "track_features", "entry_points")


def _check_types(info: PackageInfo) -> None:
    """ValueError unless every field has its type: a record read back (the info cache, a registry cache's map) is
    not trusted to (a number where text goes would fail far from here, in the plan or a layer)."""
    bad = [f for f in _TEXT_FIELDS if not isinstance(getattr(info, f), str)]
    bad += [f for f in _OPTIONAL_TEXT_FIELDS if not isinstance(getattr(info, f), str | None)]
    bad += [f for f in _COUNT_FIELDS if type(getattr(info, f)) is not int or getattr(info, f) < 0]
    bad += [f for f in _TEXTS_FIELDS if not all(isinstance(v, str) for v in getattr(info, f))]
    bad += [] if type(info.plain) is bool else ["plain"]
    bad += [] if isinstance(info.extra, dict) and all(isinstance(v, str) for v in (*info.extra, *info.extra.values())) else ["extra"]
    if bad or not re.fullmatch(r"[0-9a-f]{64}", info.sha256):
        raise ValueError(f"fields of the wrong type or value: {', '.join(bad) or 'sha256'}")


# A package's paths are kept packed (NUL-separated, deflated, base64): a 100,000-file environment's take ~7 MB
# as a JSON list and a tenth of that packed, in the info cache and in a registry cache's map.
def _packed_paths(paths: tuple[str, ...]) -> str:
    return base64.b64encode(zlib.compress("\0".join(paths).encode(), 1)).decode() if paths else ""


def _unpacked_paths(packed: object, max_bytes: int) -> tuple[str, ...]:
    if not packed:
        return ()
    if not isinstance(packed, str):
        raise ValueError("paths are not packed")
    inflate = zlib.decompressobj()
    data = inflate.decompress(base64.b64decode(packed, validate=True), max_bytes)
    if inflate.unconsumed_tail or not inflate.eof:
        raise ValueError(f"paths unpack to more than {max_bytes} bytes, or are cut short")
    return tuple(data.decode().split("\0"))


def _noarch(value: object) -> str | None:
    if getattr(value, "python", False):
        return "python"
    if getattr(value, "generic", False):
        return "generic"
    return None


_INFO_FILES = ("info/index.json", "info/paths.json")
# The most an info/index.json or info/paths.json may hold: a package of 100,000 files has a
# paths.json of ~25 MiB; a bigger one is a decompression bomb (it is read into memory whole).
MAX_INFO_FILE_BYTES = 128 << 20
INFO_CAP_HINT = "the package is broken or hostile: re-lock from a channel you trust"


def _placeholder_replaced_by_bake(placeholder: Any) -> bool:
    """Whether a file has no prefix placeholder, or a text or binary one the bake replaces itself (stream_package):
    one with rattler's offsets or shebang length is linked by rattler."""
    if placeholder is None:
        return True
    mode = placeholder.file_mode
    return bool(mode.text or mode.binary) and placeholder.experimental_offsets is None and placeholder.experimental_shebang_length is None


def info_over_cap(archive: Path, name: str, size: int) -> str | None:
    """The error for `name` (info/index.json or info/paths.json) of `archive` if its `size` is over MAX_INFO_FILE_BYTES, else None."""
    if size <= MAX_INFO_FILE_BYTES:
        return None
    return f"{archive.name}: {name} is {size} bytes, over the {MAX_INFO_FILE_BYTES >> 20} MiB that package metadata may hold"


def _info_members(
    members: Iterable[Any], read: Callable[[Any], bytes], archive: Path, wanted: tuple[str, ...] = _INFO_FILES
) -> tuple[str, ...] | None:
    """The `wanted` info files (by default info/index.json and info/paths.json) from a streamed tar's `members`
    (tarfile's or envkit's headers; `read` gives a member's content), once all are read; None if not all are there."""
    found: dict[str, bytes] = {}
    for member in members:  # a .tar.bz2 may have many
        if member.name in wanted and member.name not in found and member.isfile():
            too_big = info_over_cap(archive, member.name, member.size)
            if too_big:
                raise PackageInfoError(too_big, hint=INFO_CAP_HINT)
            found[member.name] = read(member)
            if len(found) == len(wanted):
                return tuple(found[name].decode() for name in wanted)
    return None


def _tarfile_info(tar: tarfile.TarFile, archive: Path, wanted: tuple[str, ...] = _INFO_FILES) -> tuple[str, ...] | None:
    """`_info_members` of a tar read by tarfile."""
    from conda_envkit.tar_members import each_member

    def read(member: tarfile.TarInfo) -> bytes:
        data = tar.extractfile(member)
        return data.read() if data is not None else b""

    return _info_members(each_member(tar), read, archive, wanted)


def _streamed_info(source: CountedStream, archive: Path, wanted: tuple[str, ...] = _INFO_FILES) -> tuple[str, ...] | None:
    """`_info_members` read with envkit's own header reader (NeedsTarfile where tarfile must read it)."""
    from conda_envkit.tar_members import stream_headers

    return _info_members(stream_headers(source), source.content, archive, wanted)


def conda_tarball(names: list[str], kind: str) -> str | None:
    """The name of a `.conda`'s `info` or `pkg` tarball in its zip listing (the first, as conda reads it), if any."""
    return next((n for n in names if n.startswith(f"{kind}-") and n.endswith(".tar.zst")), None)


@contextmanager
def conda_tarball_stream(z: zipfile.ZipFile, name: str) -> Iterator[BinaryIO]:
    """One of a `.conda`'s tarballs (`name` in its zip `z`), decompressed as it is read."""
    import zstandard

    with z.open(name) as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        yield stream


def _conda_info_files(archive: Path, wanted: tuple[str, ...] = _INFO_FILES) -> tuple[str, ...] | None:
    """The `wanted` info files (by default info/index.json and info/paths.json) of a package archive, read by
    envkit; None when they are not all there as plain members (rattler then reads the archive and says what is
    wrong). One over MAX_INFO_FILE_BYTES is an error: rattler's reader would take it into memory whole.

    A `.conda`'s come from its info tarball alone: rattler's own reader scans the whole zip from its start in
    1 KiB reads to find the central directory (a read and a seek per KiB: ~100,000 syscalls for a 50 MB
    archive); zipfile reads it from the end. A `.tar.bz2` is read until both are found (conda-build writes
    info/ first).
    """
    import tarfile

    import zstandard

    from conda_envkit.tar_members import read_either_way

    try:
        if archive.name.endswith(".tar.bz2"):
            with tarfile.open(archive, mode="r|bz2") as tar:
                return _tarfile_info(tar, archive, wanted)
        if not archive.name.endswith(".conda"):
            return None
        with zipfile.ZipFile(archive) as z:
            info = conda_tarball(z.namelist(), "info")
            if info is None:
                return None
            # Read with envkit's header reader (~0.5 ms a package less than tarfile, for every package a
            # plan reads); a tar it does not follow is read again by tarfile.
            return read_either_way(
                lambda: conda_tarball_stream(z, info),
                lambda source: _streamed_info(source, archive, wanted),
                lambda tar: _tarfile_info(tar, archive, wanted),
            )
    except (OSError, EOFError, KeyError, UnicodeDecodeError, zipfile.BadZipFile, tarfile.TarError, zstandard.ZstdError):
        return None


def read_conda_info(archive: Path, sha256: str) -> PackageInfo:
    """The info of a verified conda archive (`.conda` or `.tar.bz2`)."""
    from rattler import IndexJson, PathsJson

    try:
        files = _conda_info_files(archive)
        if files is not None:
            index, paths = IndexJson.from_str(files[0]), PathsJson.from_str(files[1])
        else:
            index = IndexJson.from_package_archive(archive)
            try:
                paths = PathsJson.from_package_archive(archive)
            except Exception as exc:
                if _conda_info_files(archive, ("info/index.json", "info/files")) is None:
                    raise
                raise PackageInfoError(
                    f"{archive.name}: has no info/paths.json, only the older info/files ({exc})",
                    hint="a package built before paths.json (conda-build 2 or older): envkit (py-rattler) installs packages"
                    " that list their files in paths.json; lock another build or version of it",
                ) from None
    except PackageInfoError:
        raise
    except Exception as exc:  # rattler raises its own types for broken archives
        raise PackageInfoError(
            f"{archive.name}: cannot read info/index.json or info/paths.json ({exc})",
            hint="the archive is broken although its sha256 is the lock's: lock it from another channel or build",
        ) from None
    entries = paths.paths
    size = sum(p.size_in_bytes or 0 for p in entries)
    noarch = _noarch(index.noarch)
    entry_points = _noarch_python_entry_points(archive) if noarch == "python" else ()
    plain = entry_points is not None and all(
        _placeholder_replaced_by_bake(p.prefix_placeholder)
        and not p.no_link
        # (an empty file's size reads as None: the stream compares every size with the archive's anyway)
        and ((p.path_type.hardlink and p.sha256 is not None) or (p.path_type.softlink and p.sha256 is None))
        for p in entries
    )
    return PackageInfo(
        sha256=sha256,
        manager="conda",
        name=index.name.normalized,
        version=str(index.version),
        build=str(index.build),
        build_number=int(index.build_number),
        subdir=index.subdir or "noarch",
        noarch=noarch,
        arch=index.arch,
        platform=index.platform,
        depends=tuple(index.depends),
        constrains=tuple(index.constrains),
        license=index.license,
        license_family=index.license_family,
        features=index.features,
        track_features=tuple(index.track_features),
        python_site_packages_path=index.python_site_packages_path,
        installed_size=size,
        archive_size=archive.stat().st_size,
        plain=plain,
        entry_points=entry_points or (),
        paths=_listed_paths(files[1])
        if files is not None
        else tuple(p.relative_path.as_posix() for p in entries if not p.path_type.directory),
    )


def _listed_paths(paths_json: str) -> tuple[str, ...]:
    """The files and symlinks of a paths.json rattler parsed already, as it spells them (as the archive's members
    are named: stream_package matches them by these strings), without a Path object each (~60,000 in a big env)."""
    return tuple(str(entry["_path"]) for entry in json.loads(paths_json)["paths"] if entry.get("path_type") != "directory")


def _noarch_python_entry_points(archive: Path) -> tuple[str, ...] | None:
    """A noarch: python `.conda`'s entry points (info/link.json), if the bake can write them itself; None if not
    (or for a `.tar.bz2`, whose link.json could be anywhere in it): its package is then linked by rattler."""
    from conda_envkit.noarch_python import link_entry_points

    if not archive.name.endswith(".conda"):
        return None
    found = _conda_info_files(archive, ("info/link.json",))
    return link_entry_points(found[0] if found is not None else None)


def read_wheel_info(archive: Path, sha256: str, name: str, version: str) -> PackageInfo:
    """The info of a verified wheel: its unpacked size."""
    try:
        with zipfile.ZipFile(archive) as wheel:
            size = sum(i.file_size for i in wheel.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise PackageInfoError(f"{archive.name}: not a readable wheel ({exc})", hint="re-lock") from None
    return PackageInfo(sha256=sha256, manager="pip", name=name, version=version, installed_size=size, archive_size=archive.stat().st_size)


class PackageInfoCache:
    """`<cache>/pkginfo/<owner>/<sha256>.json`: package info by archive sha256, sealed by its writer.

    Only a record this user sealed (conda_envkit.cache_seal) is used: another one (a restored or shared
    cache) could change what a package's conda-meta record says or how it is baked, so the archive is
    read again.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.seal = user_seal()
        self.root = pkginfo_dir(cache_dir, self.seal.owner)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise PackageInfoError(f"{sha256!r} is not a sha256", hint="re-lock with `envkit lock`")
        return self.root / f"{sha256}.json"

    def get(self, sha256: str) -> PackageInfo | None:
        path = self._path(sha256)
        try:
            data = read_cache_entry(path)
            if data is None:
                return None
            fields = self.seal.unsealed("pkginfo", sha256, json.loads(data))
            if fields is None:
                return None
            info = PackageInfo.from_json(fields, str(path))
        except (OSError, ValueError, AttributeError, PackageInfoError):
            return None
        return info if info.sha256 == sha256 else None

    def put(self, info: PackageInfo) -> None:
        path = self._path(info.sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_cache_entry(path, self.seal.sealed("pkginfo", info.sha256, info.to_json()), "package info cache entry", CACHE_SETTING)
