"""Build real local conda channels: `.conda` packages written from scratch and indexed
with py-rattler.

Used by the test suite, the benchmarks and the offline demo, which cannot reach
conda-forge. The packages are real (the `.conda` v2 format: a stored zip holding
zstd-compressed `info-` and `pkg-` tarballs) so that solving, downloading, hash
checks and installing all exercise the same code paths as with a public channel.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from rattler.index import index_fs

PREFIX_PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"


@dataclass(frozen=True)
class PackageFile:
    """One file a package installs, relative to the prefix."""

    path: str
    content: bytes
    executable: bool = False
    # When set, the file holds PREFIX_PLACEHOLDER and is rewritten at install time.
    has_prefix: bool = False


@dataclass(frozen=True)
class PackageSpec:
    """What to put in one `.conda` package."""

    name: str
    version: str = "1.0"
    build: str = "0"
    build_number: int = 0
    subdir: str = "noarch"
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    track_features: str = ""
    license: str = "MIT"
    files: tuple[PackageFile, ...] = field(default_factory=tuple)
    # (path, target) symlinks the package installs, e.g. ("bin/sh", "busybox").
    symlinks: tuple[tuple[str, str], ...] = ()

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.conda"


def _tar_zst(members: list[tuple[str, bytes, int]], symlinks: tuple[tuple[str, str], ...] = ()) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
        for name, target in sorted(symlinks):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            tar.addfile(info)
    return zstandard.ZstdCompressor(level=3).compress(raw.getvalue())


def _index_json(spec: PackageSpec) -> dict[str, object]:
    index: dict[str, object] = {
        "name": spec.name,
        "version": spec.version,
        "build": spec.build,
        "build_number": spec.build_number,
        "depends": list(spec.depends),
        "constrains": list(spec.constrains),
        "license": spec.license,
        "subdir": spec.subdir,
        "timestamp": 1700000000000,
    }
    if spec.subdir == "noarch":
        index["noarch"] = "generic"
    else:
        index["platform"], _, arch = spec.subdir.partition("-")
        index["arch"] = {"64": "x86_64"}.get(arch, arch)
    if spec.track_features:
        index["track_features"] = spec.track_features
    return index


def write_package(spec: PackageSpec, channel_dir: Path) -> Path:
    """Write `spec` as a `.conda` file into `channel_dir/<subdir>/` and return its path."""
    paths = []
    pkg_members = []
    has_prefix_lines = []
    for f in spec.files:
        mode = 0o755 if f.executable else 0o644
        pkg_members.append((f.path, f.content, mode))
        entry: dict[str, object] = {
            "_path": f.path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(f.content).hexdigest(),
            "size_in_bytes": len(f.content),
        }
        if f.has_prefix:
            entry["prefix_placeholder"] = PREFIX_PLACEHOLDER
            entry["file_mode"] = "text"
            has_prefix_lines.append(f"{PREFIX_PLACEHOLDER} text {f.path}\n")
        paths.append(entry)
    for link, _target in spec.symlinks:
        paths.append({"_path": link, "path_type": "softlink", "size_in_bytes": 0})
    info_members = [
        ("info/index.json", json.dumps(_index_json(spec), indent=2).encode(), 0o644),
        ("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}).encode(), 0o644),
        ("info/about.json", json.dumps({"license": spec.license}).encode(), 0o644),
    ]
    if has_prefix_lines:
        info_members.append(("info/has_prefix", "".join(has_prefix_lines).encode(), 0o644))

    stem = spec.file_name[: -len(".conda")]
    out = channel_dir / spec.subdir / spec.file_name
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"info-{stem}.tar.zst", _tar_zst(info_members))
        archive.writestr(f"pkg-{stem}.tar.zst", _tar_zst(pkg_members, spec.symlinks))
    return out


def build_channel(channel_dir: Path, packages: list[PackageSpec], subdirs: tuple[str, ...] = ()) -> Path:
    """Write `packages` into `channel_dir`, index it, and return the channel directory.

    Every subdir in `subdirs` gets a repodata.json even when it holds no package, as
    on a real channel, so that a solve for that platform finds an empty subdir.
    """
    channel_dir.mkdir(parents=True, exist_ok=True)
    for subdir in ("noarch", *subdirs):
        (channel_dir / subdir).mkdir(exist_ok=True)
    for spec in packages:
        write_package(spec, channel_dir)
    asyncio.run(index_fs(channel_dir, write_zst=False, write_shards=False, force=True))
    for subdir in ("noarch", *subdirs):
        repodata = channel_dir / subdir / "repodata.json"
        if not repodata.exists():
            empty = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
            repodata.write_text(json.dumps(empty), encoding="utf-8")
    return channel_dir


def script_package(name: str, version: str, text: str, **kwargs: object) -> PackageSpec:
    """A package with one shell script `bin/<name>` that prints `text`."""
    script = f"#!/bin/sh\necho '{text}'\n".encode()
    return PackageSpec(
        name=name,
        version=version,
        files=(PackageFile(f"bin/{name}", script, executable=True),),
        **kwargs,  # type: ignore[arg-type]
    )
