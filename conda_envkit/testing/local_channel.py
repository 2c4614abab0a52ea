"""Build real local conda channels: `.conda` packages written from scratch and indexed
with py-rattler.

Used by the test suite, the benchmarks and the offline demo, which cannot reach
conda-forge. The packages are real (the `.conda` v2 format: a stored zip holding
zstd-compressed `info-` and `pkg-` tarballs) so that solving, downloading, hash
checks and installing all exercise the same code paths as with a public channel.

Every byte is decided by the package specs: two builds give identical `.conda` files and
repodata.json (fixed tar and zip timestamps, from SOURCE_DATE_EPOCH when it is set; fixed
member order; single-threaded zstd; no indexing time in repodata.json), so a lock of the
channel, and its hash, are the same on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

PREFIX_PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
# zip cannot store a time before 1980-01-01 (its DOS date starts there).
_ZIP_EPOCH = 315532800


def source_date_epoch() -> int:
    """The time every archive member carries: SOURCE_DATE_EPOCH when set (reproducible-builds.org), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, not {value!r}")
    return int(value)


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


def _tar_zst(members: list[tuple[str, bytes, int]], symlinks: tuple[tuple[str, str], ...] = (), mtime: int = 0) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(content))
        for name, target in sorted(symlinks):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, mtime
            tar.addfile(info)
    # One-shot, single-threaded compression of the whole tar: the frame depends only on its bytes.
    compressor = zstandard.ZstdCompressor(level=3, threads=0, write_checksum=False, write_content_size=True)
    return compressor.compress(raw.getvalue())


def _zip_member(name: str, data: bytes, epoch: int) -> tuple[zipfile.ZipInfo, bytes]:
    """A stored zip member with a fixed time, mode and creator system (zipfile would use the clock and the host OS)."""
    info = zipfile.ZipInfo(name, date_time=time.gmtime(max(epoch, _ZIP_EPOCH))[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix
    info.external_attr = 0o100644 << 16
    return info, data


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
    epoch = source_date_epoch()
    members = [
        _zip_member("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode(), epoch),
        _zip_member(f"info-{stem}.tar.zst", _tar_zst(info_members, mtime=epoch), epoch),
        _zip_member(f"pkg-{stem}.tar.zst", _tar_zst(pkg_members, spec.symlinks, mtime=epoch), epoch),
    ]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return out


# py-rattler resolves its coroutines from tokio worker threads; a worker that is still
# handing the result over when the interpreter finalizes is killed mid-way and the process
# dies with SIGSEGV or SIGABRT (about one exit in three right after `asyncio.run`). So the
# indexing runs in a child that leaves with os._exit once index_fs has written everything,
# and the caller's interpreter never starts a rattler runtime.
_INDEX_SCRIPT = """
import asyncio, os, sys, traceback
try:
    from rattler.index import index_fs
    asyncio.run(index_fs(sys.argv[1], write_zst=False, write_shards=False, force=True))
    code = 0
except BaseException:
    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def index_channel(channel_dir: Path) -> None:
    """Index `channel_dir` with py-rattler's index_fs (in a child process), then drop the indexing time from repodata.json."""
    proc = subprocess.run([sys.executable, "-c", _INDEX_SCRIPT, str(channel_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"indexing {channel_dir} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    for repodata in sorted(channel_dir.glob("*/repodata.json")):
        data = json.loads(repodata.read_text(encoding="utf-8"))
        for key in ("packages", "packages.conda"):
            for record in data.get(key, {}).values():
                record.pop("indexed_timestamp", None)
        repodata.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")), encoding="utf-8")


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
    index_channel(channel_dir)
    for subdir in ("noarch", *subdirs):
        repodata = channel_dir / subdir / "repodata.json"
        if not repodata.exists():
            empty = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
            repodata.write_text(json.dumps(empty, sort_keys=True, separators=(",", ":")), encoding="utf-8")
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
