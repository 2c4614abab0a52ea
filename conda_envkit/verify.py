"""Does what is installed match the lock? For a prefix on disk or an image (layout or registry).

Every locked conda package (and pip package) must be installed with the locked version, build and sha256;
no other package may be installed; every file a package installed must still have the
hash recorded for it (`paths_data`: the package's paths.json, with `sha256_in_prefix`
for files whose prefix was rewritten) and every symlink must still exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conda_envkit.errors import EnvkitError
from conda_envkit.install import LOCK_COPY
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import packages_for
from conda_envkit.oci.image import BaseImage
from conda_envkit.oci.safety import open_layer
from conda_envkit.pip_install import PIP_RECORDS


class VerifyError(EnvkitError):
    """A prefix or image that cannot be verified at all."""


@dataclass(frozen=True)
class Finding:
    """One way the installation differs from the lock."""

    kind: str  # missing-package, extra-package, wrong-package, missing-file, modified-file
    package: str
    detail: str


class InstalledTree(Protocol):
    """What verification needs to read: conda-meta records, file hashes, symlinks."""

    def records(self) -> list[dict]: ...
    def pip_records(self) -> list[dict]: ...
    def file_sha256(self, path: str) -> str | None: ...
    def is_symlink(self, path: str) -> bool: ...


class PrefixTree:
    """An installed prefix on disk."""

    def __init__(self, prefix: Path) -> None:
        if not (prefix / "conda-meta").is_dir():
            raise VerifyError(f"{prefix}: not a conda environment (no conda-meta/)", hint="pass the environment's prefix")
        self.prefix = prefix

    def records(self) -> list[dict]:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((self.prefix / "conda-meta").glob("*.json"))]

    def pip_records(self) -> list[dict]:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((self.prefix / PIP_RECORDS).glob("*.json"))]

    def file_sha256(self, path: str) -> str | None:
        full = self.prefix / path
        if not full.is_file() or full.is_symlink():
            return None
        with full.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def is_symlink(self, path: str) -> bool:
        return os.path.islink(self.prefix / path)


class ImageTree:
    """The environment inside an image: its layers applied in order (whiteouts honoured)."""

    def __init__(self, base: BaseImage, store_path: Path, prefix: str) -> None:
        self.prefix = prefix.strip("/")
        self.files: dict[str, str] = {}  # path in prefix -> sha256
        self.links: set[str] = set()
        self.meta: dict[str, bytes] = {}  # conda-meta/*.json, and the lock copy bake put in conda-meta/envkit/
        for layer in base.layers:
            self._apply(store_path / "sha256" / layer.descriptor.digest.partition(":")[2])

    def _inside(self, name: str) -> str | None:
        name = posixpath.normpath(name.lstrip("./").lstrip("/")) if name not in ("", ".") else ""
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + "/") else None

    def _remove(self, path: str, opaque: bool = False) -> None:
        for table in (self.files, self.meta):
            for key in [k for k in table if k == path or k.startswith(path + "/")]:
                if not (opaque and key == path):
                    del table[key]
        self.links = {k for k in self.links if not (k == path or k.startswith(path + "/"))}

    def _apply(self, blob: Path) -> None:
        with open_layer(blob) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                directory, base = posixpath.split(member.name)
                if base.startswith(".wh."):
                    target = self._inside(posixpath.join(directory, base[4:])) if base != ".wh..wh..opq" else self._inside(directory)
                    if target is not None:
                        self._remove(target, opaque=base == ".wh..wh..opq")
                    continue
                path = self._inside(member.name)
                if path is None or member.isdir():
                    continue  # a directory entry merges with what lower layers put there
                self._remove(path)
                if member.issym():
                    self.links.add(path)
                elif member.isfile():
                    data = tar.extractfile(member)
                    digest = hashlib.sha256()
                    chunks = []
                    while chunk := data.read(1 << 20):  # type: ignore[union-attr]
                        digest.update(chunk)
                        if path.startswith("conda-meta/"):
                            chunks.append(chunk)
                    self.files[path] = digest.hexdigest()
                    top_level_record = path.endswith(".json") and "/" not in path[len("conda-meta/") :]
                    pip_record = path.endswith(".json") and posixpath.dirname(path) == PIP_RECORDS.as_posix()
                    if path.startswith("conda-meta/") and (path == LOCK_COPY.as_posix() or top_level_record or pip_record):
                        self.meta[path] = b"".join(chunks)

    def records(self) -> list[dict]:
        return [json.loads(self.meta[k]) for k in sorted(self.meta) if k.endswith(".json") and k.count("/") == 1]

    def pip_records(self) -> list[dict]:
        pip_dir = PIP_RECORDS.as_posix() + "/"
        return [json.loads(self.meta[k]) for k in sorted(self.meta) if k.startswith(pip_dir)]

    def lock_text(self) -> str | None:
        """The lock file baked into the image, if any."""
        data = self.meta.get(LOCK_COPY.as_posix())
        return data.decode() if data is not None else None

    def file_sha256(self, path: str) -> str | None:
        return self.files.get(path)

    def is_symlink(self, path: str) -> bool:
        return path in self.links


def _package_label(record: dict) -> str:
    return f"{record.get('name')} {record.get('version')} {record.get('build')}"


def _file_findings(record: dict, tree: InstalledTree) -> Iterator[Finding]:
    label = _package_label(record)
    for entry in (record.get("paths_data") or {}).get("paths", []):
        path = entry["_path"]
        if entry.get("path_type") == "softlink":
            if not tree.is_symlink(path):
                yield Finding("missing-file", label, f"{path} (symlink) is missing")
            continue
        if entry.get("path_type") == "directory":
            continue
        expected = entry.get("sha256_in_prefix") or entry.get("sha256")
        actual = tree.file_sha256(path)
        if actual is None:
            yield Finding("missing-file", label, f"{path} is missing")
        elif expected and actual != expected:
            yield Finding("modified-file", label, f"{path} was modified (sha256 {actual[:12]}…, installed as {expected[:12]}…)")


def verify_tree(lockfile: Lockfile, platform: str, tree: InstalledTree) -> list[Finding]:
    """Every difference between the lock's conda packages for `platform` and the installed tree."""
    locked = {p.name: p for p in packages_for(lockfile, platform) if p.manager == "conda"}
    installed = {r["name"]: r for r in tree.records()}
    findings = []
    for name, p in sorted(locked.items()):
        record = installed.get(name)
        if record is None:
            findings.append(Finding("missing-package", f"{name} {p.version} {p.build}", "locked but not installed"))
            continue
        if (record.get("version"), record.get("build"), record.get("sha256")) != (p.version, p.build, p.hash.sha256):
            findings.append(
                Finding("wrong-package", _package_label(record), f"lock has {p.version} {p.build} (sha256 {(p.hash.sha256 or '')[:12]}…)")
            )
        findings.extend(_file_findings(record, tree))
    for name, record in sorted(installed.items()):
        if name not in locked:
            findings.append(Finding("extra-package", _package_label(record), "installed but not in the lock"))
    return findings + _pip_findings(lockfile, platform, tree)


def _pip_findings(lockfile: Lockfile, platform: str, tree: InstalledTree) -> list[Finding]:
    """The same checks for pip packages, against envkit's pip records (pip_install.py)."""
    locked = {p.name: p for p in packages_for(lockfile, platform) if p.manager == "pip"}
    installed = {r["name"]: r for r in tree.pip_records()}
    findings = []
    for name, p in sorted(locked.items()):
        record = installed.get(name)
        label = f"{name} {p.version} (pip)"
        if record is None:
            findings.append(Finding("missing-package", label, "locked but not installed"))
            continue
        if (record.get("version"), record.get("sha256")) != (p.version, p.hash.sha256):
            findings.append(
                Finding(
                    "wrong-package",
                    f"{name} {record.get('version')} (pip)",
                    f"lock has {p.version} (wheel sha256 {(p.hash.sha256 or '')[:12]}…)",
                )
            )
        for entry in record.get("files", []):
            actual = tree.file_sha256(entry["_path"])
            if actual is None:
                findings.append(Finding("missing-file", label, f"{entry['_path']} is missing"))
            elif actual != entry["sha256"]:
                findings.append(
                    Finding(
                        "modified-file",
                        label,
                        f"{entry['_path']} was modified (sha256 {actual[:12]}…, installed as {entry['sha256'][:12]}…)",
                    )
                )
    for name, record in sorted(installed.items()):
        if name not in locked:
            findings.append(Finding("extra-package", f"{name} {record.get('version')} (pip)", "installed but not in the lock"))
    return findings
