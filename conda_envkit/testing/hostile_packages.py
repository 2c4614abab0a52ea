"""Crafted hostile conda packages and wheels, for the hostile-input test suite.

`local_channel` writes well-formed packages; here every byte of the tarballs and of
`info/paths.json` is the caller's: absolute and `..` entries, symlinks out of the
prefix, device files, files that contradict their paths.json. The archives are real
`.conda` files that py-rattler indexes, so a lock can name them like any other.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from conda_envkit.testing.local_channel import PackageFile, PackageSpec, _index_json


@dataclass(frozen=True)
class Member:
    """One raw tar entry: `kind` is file, symlink, hardlink, dir, fifo or chardev."""

    name: str
    kind: str = "file"
    content: bytes = b""
    target: str = ""
    mode: int = 0o644


@dataclass(frozen=True)
class HostilePackage:
    """A package whose payload tar and paths.json are given verbatim (paths None: derived from members)."""

    name: str
    members: tuple[Member, ...]
    paths: tuple[dict[str, Any], ...] | None = None
    version: str = "1.0"
    build: str = "0"
    subdir: str = "noarch"
    depends: tuple[str, ...] = ()
    tar_format: int = tarfile.PAX_FORMAT  # of the payload tar (GNU: long names as GNU records)
    noarch: str = ""  # index.json's noarch (a noarch subdir's default: generic)
    link: dict[str, Any] | None = None  # info/link.json (a noarch: python package's entry points), if any

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.conda"


_KINDS = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}
_KINDS |= {"fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}


def _raw_tar_zst(members: tuple[Member, ...], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as tar:
        for m in members:
            info = tarfile.TarInfo("x")
            info.name = m.name  # set after construction: TarInfo keeps absolute and `..` names as given
            info.type, info.mode, info.mtime = _KINDS[m.kind], m.mode, 0
            info.linkname = m.target
            info.size = len(m.content) if m.kind == "file" else 0
            tar.addfile(info, io.BytesIO(m.content) if m.kind == "file" else None)
    return zstandard.ZstdCompressor(level=3).compress(raw.getvalue())


def _derived_paths(members: tuple[Member, ...]) -> list[dict[str, Any]]:
    paths = []
    for m in members:
        if m.kind == "file":
            paths.append(
                {"_path": m.name, "path_type": "hardlink", "sha256": hashlib.sha256(m.content).hexdigest(), "size_in_bytes": len(m.content)}
            )
        elif m.kind == "symlink":
            paths.append({"_path": m.name, "path_type": "softlink", "size_in_bytes": 0})
    return paths


def write_hostile_package(package: HostilePackage, channel_dir: Path) -> Path:
    """Write `package` as a `.conda` into `channel_dir/<subdir>/` (index the channel afterwards)."""
    spec = PackageSpec(package.name, package.version, package.build, subdir=package.subdir, depends=package.depends)
    paths = list(package.paths) if package.paths is not None else _derived_paths(package.members)
    index = _index_json(spec) | ({"noarch": package.noarch} if package.noarch else {})
    info: tuple[Member, ...] = (
        Member("info/index.json", content=json.dumps(index).encode()),
        Member("info/paths.json", content=json.dumps({"paths": paths, "paths_version": 1}).encode()),
    )
    if package.link is not None:
        info += (Member("info/link.json", content=json.dumps(package.link).encode()),)
    stem = package.file_name[: -len(".conda")]
    out = channel_dir / package.subdir / package.file_name
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"info-{stem}.tar.zst", _raw_tar_zst(info))
        archive.writestr(f"pkg-{stem}.tar.zst", _raw_tar_zst(package.members, package.tar_format))
    return out


def python_package(subdir: str = "linux-64") -> PackageSpec:
    """A stand-in conda `python` 3.11 (a site-packages directory), so wheels have somewhere to go."""
    return PackageSpec(
        "python", "3.11.9", "h0_0", subdir=subdir, files=(PackageFile("lib/python3.11/site-packages/README.txt", b"site\n"),)
    )


@dataclass(frozen=True)
class RawWheel:
    """A wheel whose files (and RECORD, when given) are the caller's verbatim."""

    name: str
    version: str
    files: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)
    metadata_name: str | None = None
    record: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


def _b64(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_raw_wheel(wheel: RawWheel, directory: Path) -> Path:
    """Write `wheel` into `directory` and return its path."""
    dist = f"{wheel.name.replace('-', '_')}-{wheel.version}.dist-info"
    files = list(wheel.files) + [
        (f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {wheel.metadata_name or wheel.name}\nVersion: {wheel.version}\n".encode()),
        (f"{dist}/WHEEL", b"Wheel-Version: 1.0\nGenerator: envkit-hostile\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = wheel.record
    if record is None:
        record = "".join(f"{p},{_b64(d)},{len(d)}\n" for p, d in files) + f"{dist}/RECORD,,\n"
    out = directory / wheel.file_name
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files:
            z.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
        z.writestr(zipfile.ZipInfo(f"{dist}/RECORD", (1980, 1, 1, 0, 0, 0)), record)
    return out
