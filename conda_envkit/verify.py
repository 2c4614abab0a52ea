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
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

from conda_envkit.archive_check import hash_member
from conda_envkit.errors import EnvkitError
from conda_envkit.inputs import MAX_INPUT_BYTES
from conda_envkit.installed_state import IDENTITY_FILE, LOCK_COPY, STATE_FILE
from conda_envkit.labels import label_key
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import packages_for, pip_package_name
from conda_envkit.oci.image import BaseImage
from conda_envkit.oci.safety import layer_members, open_layer
from conda_envkit.pip_install import PIP_RECORDS
from conda_envkit.safepath import unusual_mode

if TYPE_CHECKING:
    from conda_envkit.lockmodel import LockHash


class VerifyError(EnvkitError):
    """A prefix or image that cannot be verified at all."""


@dataclass(frozen=True)
class Finding:
    """One way the installation differs from the lock."""

    kind: str  # missing-package, extra-package, wrong-package, missing-file, modified-file, other-lock, ...
    package: str
    detail: str


class InstalledTree(Protocol):
    """What verification needs to read: conda-meta records, file hashes, symlinks."""

    def records(self) -> list[dict[str, Any]]: ...
    def pip_records(self) -> list[dict[str, Any]]: ...
    def file_sha256(self, path: str) -> str | None: ...
    def is_symlink(self, path: str) -> bool: ...


def _package_record(path: Path, pip: bool) -> dict[str, Any]:
    """One package's record in a prefix (conda-meta/*.json or envkit's pip record), checked before use.

    The prefix being verified is the thing under suspicion: a record that is not a JSON object with a
    name and a list of relative `_path` entries is an error naming it, never a traceback, and a
    record that is /dev/zero is refused, not read.
    """
    from conda_envkit.inputs import read_input

    return _checked_record(read_input(path, "package record").text.encode("utf-8"), str(path), pip)


def _checked_record(data: bytes, path: str, pip: bool) -> dict[str, Any]:
    """A package record's bytes as a JSON object with a name and relative `_path` entries; else an error naming `path`."""
    from conda_envkit.safepath import UnsafePathError, relative_path

    hint = "the prefix or image was modified or is corrupt: reinstall or rebake it"
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise VerifyError(f"{path}: package record is not UTF-8 JSON ({str(exc)[:200]})", hint=hint) from None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise VerifyError(f"{path}: not a package record (a JSON object with a name)", hint=hint)
    holder = record if pip else (record.get("paths_data") or {})
    entries = holder.get("files" if pip else "paths", []) if isinstance(holder, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("_path"), str) for e in entries):
        raise VerifyError(f"{path}: the record's file list is malformed", hint=hint)
    try:
        for entry in entries:
            relative_path(entry["_path"], str(path))
    except UnsafePathError as exc:
        raise VerifyError(exc.message, hint=hint) from None
    return record


class PrefixTree:
    """An installed prefix on disk."""

    def __init__(self, prefix: Path) -> None:
        if not (prefix / "conda-meta").is_dir():
            raise VerifyError(f"{prefix}: not a conda environment (no conda-meta/)", hint="pass the environment's prefix")
        self.prefix = prefix

    def records(self) -> list[dict[str, Any]]:
        return [_package_record(p, pip=False) for p in sorted((self.prefix / "conda-meta").glob("*.json"))]

    def pip_records(self) -> list[dict[str, Any]]:
        return [_package_record(p, pip=True) for p in sorted((self.prefix / PIP_RECORDS).glob("*.json"))]

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

    def __init__(self, base: BaseImage, store_path: Path, prefix: str, base_layers: int = 0) -> None:
        """Apply the layers of `base` (the image read); the first `base_layers` are its base, every one above is envkit's."""
        self.prefix = prefix.strip("/")
        self._where = base.reference  # names the image in errors
        self.files: dict[str, str] = {}  # path in prefix -> sha256
        self.links: set[str] = set()
        self.entries: dict[str, _Entry] = {}  # path in prefix -> type, content hash or target, mode
        self.outside: list[str] = []  # non-directory entries outside the prefix in envkit's layers and above
        self.meta: dict[str, bytes] = {}  # conda-meta/*.json, and the lock copy bake put in conda-meta/envkit/
        self.recipe_files: list[str] = []  # files of bake's recipe-files layer: outside the lock, listed not judged
        self.diff_ids: list[str] = []  # sha256 of each layer's uncompressed tar, as read (not as the config claims)
        recipe_layer = _recipe_files_layer(base.config, len(base.layers))
        for index, layer in enumerate(base.layers):
            self._ours = index >= base_layers
            self._recipe = index == recipe_layer
            self.diff_ids.append(self._apply(store_path / "sha256" / layer.descriptor.digest.partition(":")[2]))

    def _inside(self, name: str) -> str | None:
        name = posixpath.normpath(name.lstrip("./").lstrip("/")) if name not in ("", ".") else ""
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + "/") else None

    def _remove(self, path: str, opaque: bool = False) -> None:
        for table in (self.files, self.meta, self.entries):
            for key in [k for k in table if k == path or k.startswith(path + "/")]:
                if not (opaque and key == path):
                    del table[key]
        self.links = {k for k in self.links if not (k == path or k.startswith(path + "/"))}

    def _apply(self, blob: Path) -> str:
        """Apply one layer blob; return its diff_id (the digest of its uncompressed tar, every byte read)."""
        with _Hashing(open_layer(blob)) as stream, tarfile.open(fileobj=cast("IO[bytes]", stream), mode="r|") as tar:
            for member in layer_members(tar, self._where):
                directory, base = posixpath.split(member.name)
                if base.startswith(".wh."):
                    target = self._inside(posixpath.join(directory, base[4:])) if base != ".wh..wh..opq" else self._inside(directory)
                    if target is not None:
                        self._remove(target, opaque=base == ".wh..wh..opq")
                    continue
                path = self._inside(member.name)
                if path is None and self._ours and not member.isdir():
                    where = "/" + posixpath.normpath(member.name.lstrip("./").lstrip("/"))
                    (self.recipe_files if self._recipe and member.isfile() else self.outside).append(where)
                if path is not None and member.isdir():
                    self.entries[path] = _Entry("directory", "", member.mode)
                if path is None or member.isdir():
                    continue  # a directory entry merges with what lower layers put there
                self._remove(path)
                if member.issym():
                    self.links.add(path)
                    self.entries[path] = _Entry("symlink", member.linkname, member.mode)
                elif member.islnk() and (target := self._inside(member.linkname)) in self.files:
                    # A hard link (a package's files that are one inode): the file it names, as unpacked.
                    self.files[path] = self.files[target]
                    self.entries[path] = _Entry("file", self.files[path], member.mode)
                elif not member.isfile():
                    self.entries[path] = _Entry("other", "", member.mode)
                elif member.isfile():
                    top_level_record = path.endswith(".json") and "/" not in path[len("conda-meta/") :]
                    pip_record = path.endswith(".json") and posixpath.dirname(path) == PIP_RECORDS.as_posix()
                    keep = path.startswith("conda-meta/") and (path == LOCK_COPY.as_posix() or top_level_record or pip_record)
                    if keep and member.size > MAX_INPUT_BYTES:  # read into memory: as capped as any input
                        raise VerifyError(
                            f"{self._where}: {path} is {member.size} bytes, over the {MAX_INPUT_BYTES >> 20} MiB limit for a record",
                            hint="the image was not baked by envkit, or was tampered with",
                        )
                    self.files[path], content = hash_member(tar, member, keep=keep)
                    self.entries[path] = _Entry("file", self.files[path], member.mode)
                    if content is not None:
                        self.meta[path] = content
        return stream.diff_id

    def records(self) -> list[dict[str, Any]]:
        keys = [k for k in sorted(self.meta) if k.endswith(".json") and k.count("/") == 1]
        return [_checked_record(self.meta[k], f"{self._where}: {k}", pip=False) for k in keys]

    def pip_records(self) -> list[dict[str, Any]]:
        pip_dir = PIP_RECORDS.as_posix() + "/"
        return [_checked_record(self.meta[k], f"{self._where}: {k}", pip=True) for k in sorted(self.meta) if k.startswith(pip_dir)]

    def lock_text(self) -> str | None:
        """The lock file baked into the image, if any."""
        data = self.meta.get(LOCK_COPY.as_posix())
        return data.decode() if data is not None else None

    def file_sha256(self, path: str) -> str | None:
        return self.files.get(path)

    def is_symlink(self, path: str) -> bool:
        return path in self.links


class _Hashing:
    """A read-only stream that hashes what is read through it; on exit it reads the rest (a tar's
    end-of-archive blocks count too) and closes `raw`, leaving `diff_id`."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.diff_id = ""

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        self.digest.update(data)
        return data

    def __enter__(self) -> _Hashing:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                while self.read(1 << 20):
                    pass
                self.diff_id = "sha256:" + self.digest.hexdigest()
        finally:
            self.raw.close()


@dataclass(frozen=True)
class VerifyBase:
    """The base image an image is measured against: its layers' diff_ids, and who named it.

    `source` is `--base` (the user named it) or `label` (the image's own
    `org.opencontainers.image.base.*` labels, which whoever pushed the image wrote), or
    `none` (the image names no base: every layer is checked as envkit's).
    """

    reference: str
    digest: str | None
    diff_ids: tuple[str, ...]
    source: str

    def describe(self) -> str:
        return self.reference + (f"@{self.digest}" if self.digest and "@" not in self.reference else "")


BASE_NAME_LABEL = "org.opencontainers.image.base.name"
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"


def load_verify_base(
    given: str | None, labels: dict[str, str], platform: str, store: Any, insecure_registries: tuple[str, ...]
) -> VerifyBase:
    """The base to measure an image against: `given` (verify's `--base`), else the one the image's labels name.

    Loaded by the code bake uses (`load_base`: same size caps, credentials per registry host,
    every blob checked against its digest); only its config's diff_ids are compared. A base
    the labels name in a registry is fetched by the digest they record. A local base
    (`oci:DIR`, `docker-archive:FILE`) the labels name is opened only if it is a directory or a
    regular file: the image does not get to make verify read a FIFO or a device.
    """
    from conda_envkit.oci.base import SCRATCH, load_base, split_ref
    from conda_envkit.oci.blobs import OciError

    if given is not None:
        reference, source, digest = given, "--base", None
    else:
        named = labels.get(BASE_NAME_LABEL)
        if not named:
            return VerifyBase("(none named)", None, (), "none")
        reference, source, digest = named, "label", labels.get(BASE_DIGEST_LABEL) or None
        local = next((named[len(kind) :] for kind in ("oci:", "docker-archive:") if named.startswith(kind)), None)
        if local is not None:
            path = Path(split_ref(local)[0])
            wanted_dir = named.startswith("oci:")
            if not (path.is_dir() if wanted_dir else path.is_file()):
                raise VerifyError(
                    f"the image's label names base {named}, which is not a {'directory' if wanted_dir else 'file'} here",
                    hint="pass --base with the base image it was baked on",
                )
        elif named != SCRATCH and digest and "@" not in named:
            reference = f"{named}@{digest}"
    try:
        loaded = load_base(reference, platform, store, insecure_registries, check_diff_ids=False)  # (findings, not errors)
    except OciError as exc:
        hint = "pass --base with the base image it was baked on" if source == "label" else exc.hint
        who = "named by the image's label" if source == "label" else "--base"
        raise VerifyError(f"base {reference} ({who}): {exc.message}", hint=hint) from None
    diff_ids = tuple(layer.diff_id for layer in loaded.layers)
    return VerifyBase(given if given is not None else str(named), loaded.digest or digest, diff_ids, source)


def base_layers_of(diff_ids: list[str], base: VerifyBase) -> tuple[int, list[Finding]]:
    """How many of the image's first layers (`diff_ids`, as read) are the base's, and a finding if not all are.

    Every layer above that count is checked as envkit's: nothing outside the prefix but a
    recipe's files. A layer the image's history or labels call "base" counts for nothing.
    """
    count = 0
    for have, want in zip(diff_ids, base.diff_ids, strict=False):
        if have != want:
            break
        count += 1
    if count == len(base.diff_ids):
        return count, []
    if count == len(diff_ids):
        detail = f"the image has {len(diff_ids)} layer(s), the base {len(base.diff_ids)}"
    else:
        detail = f"layer {count + 1} of the image is {diff_ids[count][:19]}…, the base's is {base.diff_ids[count][:19]}…"
    return count, [Finding("base-mismatch", f"base {base.describe()} ({base.source})", f"{detail}; checked as envkit's from there up")]


def layer_digest_findings(claimed: list[str], read: list[str]) -> list[Finding]:
    """A finding for each layer whose content is not the diff_id the image's config claims for it."""
    return [
        Finding("layer-mismatch", f"layer {index + 1}", f"its content is {have[:19]}…, the config says {want[:19]}…")
        for index, (want, have) in enumerate(zip(claimed, read, strict=False))
        if want != have
    ]


def _recipe_files_layer(config: dict[str, Any], layer_count: int) -> int:
    """Index of bake's recipe-files layer, if the image was baked from a recipe: the last layer, so named.

    A recipe's extra files (an entrypoint script, a config) live outside the prefix and are not in
    the lock; only that one layer may hold them, and only regular files.
    """
    labels = (config.get("config") or {}).get("Labels") or {}
    created = [h.get("created_by", "") for h in (config.get("history") or []) if not h.get("empty_layer")]
    if labels.get(label_key("recipe")) and len(created) == layer_count and created and created[-1] == "envkit bake: recipe files":
        return layer_count - 1
    return -1


_DANGEROUS_ENV = ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "BASH_ENV", "ENV")


def image_config_findings(
    config: dict[str, Any],
    prefix: str,
    labels: dict[str, str],
    expected_lock_hash: str,
    platform_hash: str,
    recipe_files: tuple[str, ...] = (),
) -> list[Finding]:
    """What the image runs that the lock does not explain: loader/interpreter variables, a lock hash label that lies."""
    findings = []
    cfg = config.get("config") or {}
    for item in cfg.get("Env") or []:
        name, _, value = str(item).partition("=")
        if name in _DANGEROUS_ENV:
            findings.append(Finding("image-config", "config Env", f"{name}={value} changes what every process loads"))
        if name == "PATH" and prefix.rstrip("/") + "/bin" not in value.split(":"):
            findings.append(Finding("image-config", "config Env", f"PATH={value} does not include {prefix}/bin"))
    claimed = labels.get(label_key("lock-hash"))
    if claimed and claimed != expected_lock_hash:
        findings.append(Finding("image-config", "label dev.envkit.lock-hash", f"claims {claimed}, the lock is {expected_lock_hash}"))
    claimed_platform = labels.get("dev.envkit.platform-lock-hash")
    if claimed_platform and claimed_platform != platform_hash:
        findings.append(
            Finding("image-config", "label dev.envkit.platform-lock-hash", f"claims {claimed_platform}, the lock's is {platform_hash}")
        )
    for key in ("Entrypoint", "Cmd"):
        for arg in cfg.get(key) or []:
            allowed = str(arg) in ("/bin/sh", "/bin/bash") or str(arg) in recipe_files
            if str(arg).startswith("/") and not str(arg).startswith(prefix.rstrip("/") + "/") and not allowed:
                findings.append(Finding("image-config", f"config {key}", f"runs {arg}, outside the environment {prefix}"))
                break
    return findings


def verify_image(
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    tree: ImageTree,
    config: dict[str, Any],
    labels: dict[str, str],
    cache_dir: Path | None,
) -> list[Finding]:
    """Findings for an image: its files against a fresh install of the lock, its config, and anything outside the prefix."""
    from conda_envkit.cache import cache_dir_or_default
    from conda_envkit.install import install_packages
    from conda_envkit.lockfile import lock_hash, platform_lock_hash

    prefix = "/" + tree.prefix
    findings = verify_tree(lockfile, platform, tree)
    mentioned = {f.detail.split(" ", 1)[0] for f in findings}
    cache = cache_dir_or_default(cache_dir)
    scratch = scratch_dir(cache)
    try:
        reference = scratch / "env"
        install_packages(lockfile, platform, reference, prefix, cache)
        expected = _scan(reference)
        owners = _owners(reference)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # bake's own records (the lock copy, which verify_tree already read as the image's claim, and the
    # environment description) are data no process loads; they may hold whatever bake wrote.
    for own in (LOCK_COPY.as_posix(), (LOCK_COPY.parent / "environment.json").as_posix(), IDENTITY_FILE.as_posix()):
        if own in tree.entries and tree.entries[own].kind == "file":
            expected[own] = _Entry("file", tree.entries[own].digest, 0o644)
            expected.setdefault(LOCK_COPY.parent.as_posix(), _Entry("directory", "", 0o755))
    # Modes in a tar are what bake chose (normalized); only dangerous bits are compared.
    actual = {k: _Entry(v.kind, v.digest, v.mode if unusual_mode(v.mode) else expected.get(k, v).mode) for k, v in tree.entries.items()}
    for f in compare_with_reference(expected, actual, owners):
        if f.detail.split(" ", 1)[0] not in mentioned and f.kind != "changed-mode":
            findings.append(f)
    for path in tree.outside:
        findings.append(Finding("outside-prefix", "no package", f"{path} is added outside the environment {prefix}"))
    hashes = (str(lock_hash(lockfile)), str(platform_lock_hash(lockfile, platform)))
    findings += image_config_findings(config, prefix, labels, *hashes, tuple(tree.recipe_files))
    return findings


def _package_label(record: dict[str, Any]) -> str:
    return f"{record.get('name')} {record.get('version')} {record.get('build')}"


def _file_findings(record: dict[str, Any], tree: InstalledTree) -> Iterator[Finding]:
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


def scratch_dir(cache: Path) -> Path:
    """A new directory in the cache's tmp/ for a verify's reference install (or an image's blobs); a cache that
    cannot be written (another user's, read-only, full) is an error naming it (a traceback before)."""
    from conda_envkit.cache import CACHE_SETTING, tmp_dir
    from conda_envkit.files import write_error

    try:
        tmp_dir(cache).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="verify.", dir=tmp_dir(cache)))
    except OSError as exc:
        raise write_error(tmp_dir(cache), exc, "cache directory", CACHE_SETTING) from None


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


# What conda itself (or Python at run time) writes into a prefix that no package owns.
# conda-meta/envkit/installed.json: envkit install's record of what it installed (data no process loads).
_ALLOWED_UNOWNED = (
    "conda-meta/history",
    "conda-meta/.nonadmin",
    ".nonadmin",
    STATE_FILE.as_posix(),
    IDENTITY_FILE.as_posix(),
)


@dataclass(frozen=True)
class _Entry:
    kind: str  # file, symlink, directory, other
    digest: str = ""  # sha256 of a file, target of a symlink
    mode: int = 0


def _scan(root: Path) -> dict[str, _Entry]:
    """Every path below `root` (symlinks not followed), with its type, content hash or target, and mode."""
    out: dict[str, _Entry] = {}
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = _Entry("symlink", os.readlink(full), st.st_mode)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = _Entry("directory", "", st.st_mode)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    out[rel] = _Entry("file", hashlib.file_digest(f, "sha256").hexdigest(), st.st_mode)
            else:
                out[rel] = _Entry("other", "", st.st_mode)
    return out


def _owners(reference: Path) -> dict[str, str]:
    """Path -> the package that installs it, from the reference install's records."""
    owners: dict[str, str] = {}
    tree = PrefixTree(reference)
    for record in tree.records():
        for entry in (record.get("paths_data") or {}).get("paths", []):
            owners[entry["_path"]] = _package_label(record)
    for record in tree.pip_records():
        for entry in record.get("files", []):
            owners[entry["_path"]] = f"{record.get('name')} {record.get('version')} (pip)"
    return owners


def _directory_owner(rel: str, owned: list[str], owners: dict[str, str]) -> str:
    """Who a path no record lists is credited to: a directory, to the package of the first file below it
    (`owned` is the sorted list of listed paths); anything else (envkit's own records) to envkit."""
    import bisect

    below = bisect.bisect_left(owned, rel + "/")
    if below < len(owned) and owned[below].startswith(rel + "/"):
        return owners[owned[below]]
    return "envkit"


def _allowed_unowned(rel: str, expected: dict[str, _Entry]) -> bool:
    if rel in _ALLOWED_UNOWNED:
        return True
    # Bytecode Python writes at run time, next to a source a package owns.
    directory, _, name = rel.rpartition("/")
    if directory.endswith("__pycache__") and name.endswith(".pyc"):
        source = directory[: -len("__pycache__")] + name.split(".", 1)[0] + ".py"
        return expected.get(source, _Entry("none")).kind == "file"
    return False


def compare_with_reference(
    expected: dict[str, _Entry], actual: dict[str, _Entry], owners: dict[str, str], reported: frozenset[str] = frozenset()
) -> list[Finding]:
    """Findings for every way `actual` differs from what installing the lock produces (`expected`).

    `reported` are paths already accounted for (an extra package's files): not reported again.
    """
    findings = []
    owned = sorted(owners)
    for rel, want in sorted(expected.items()):
        owner = owners.get(rel) or _directory_owner(rel, owned, owners)
        have = actual.get(rel)
        if have is None:
            findings.append(Finding("missing-file", owner, f"{rel} is missing"))
        elif have.kind != want.kind:
            findings.append(Finding("replaced-path", owner, f"{rel} should be a {want.kind} but is a {have.kind}"))
        elif want.kind == "symlink" and have.digest != want.digest:
            findings.append(Finding("retargeted-symlink", owner, f"{rel} points to {have.digest!r}, installed as {want.digest!r}"))
        elif want.kind == "file" and have.digest != want.digest:
            findings.append(
                Finding("modified-file", owner, f"{rel} was modified (sha256 {have.digest[:12]}…, installed as {want.digest[:12]}…)")
            )
        if have is not None and have.kind == want.kind and want.kind != "symlink":
            unusual = unusual_mode(have.mode)
            if unusual and unusual_mode(want.mode) != unusual:
                findings.append(Finding("unsafe-mode", owner, f"{rel} is {unusual} ({stat.filemode(have.mode)}), which no package ships"))
            elif want.kind == "file" and (have.mode & 0o111) != (want.mode & 0o111):
                findings.append(
                    Finding("changed-mode", owner, f"{rel} mode {stat.filemode(have.mode)}, installed as {stat.filemode(want.mode)}")
                )
    for rel, have in sorted(actual.items()):
        if rel in expected or rel in reported or _allowed_unowned(rel, expected):
            continue
        if have.kind == "directory":
            below = [k for k in actual if k.startswith(rel + "/") and actual[k].kind != "directory"]
            if all(k in reported or _allowed_unowned(k, expected) for k in below) and (below or rel.endswith("__pycache__")):
                continue
        parent = rel.rpartition("/")[0]
        if parent and parent in actual and parent not in expected:
            continue  # reported once, at the top of an unowned tree
        what = f"{rel} ({have.kind})" + (f" -> {have.digest}" if have.kind == "symlink" else "")
        findings.append(Finding("unowned-file", "no package", f"{what} is not installed by any locked package"))
    return findings


def _extra_paths(lockfile: Lockfile, platform: str, tree: PrefixTree) -> frozenset[str]:
    """Files of installed packages the lock does not have (reported as extra-package already)."""
    locked = {(p.manager, p.name) for p in packages_for(lockfile, platform)}
    paths: set[str] = set()
    for record in tree.records():
        if ("conda", record.get("name")) not in locked:
            paths.update(e["_path"] for e in (record.get("paths_data") or {}).get("paths", []))
            paths.add(f"conda-meta/{record.get('name')}-{record.get('version')}-{record.get('build')}.json")
    for record in tree.pip_records():
        if ("pip", record.get("name")) not in locked:
            paths.update(e["_path"] for e in record.get("files", []))
            paths.add(f"{PIP_RECORDS.as_posix()}/{record.get('name')}.json")
    return frozenset(paths)


# The label suffix of a Python distribution in a prefix that no record owns: pip (or another tool) put it there.
OUTSIDE_ENVKIT = "(pip, outside envkit)"
_SITE_PACKAGES = ("lib/python*/site-packages", "Lib/site-packages")


def _small_text(path: Path) -> str | None:
    """A regular file's text (not through a symlink, at most MAX_INPUT_BYTES), else None."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_INPUT_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def foreign_distributions(lockfile: Lockfile, platform: str, prefix: Path, tree: PrefixTree) -> tuple[list[Finding], frozenset[str]]:
    """The Python distributions in `prefix` that no conda or envkit pip record owns (a `pip install` by hand): one
    extra-package finding each, naming it and, if the lock has a pip package of that name, the locked version it was
    installed over; and every path its RECORD lists (prefix-relative), which are that finding and not unowned files."""
    import csv

    owned = {e["_path"] for r in tree.records() for e in (r.get("paths_data") or {}).get("paths", [])}
    owned |= {e["_path"] for r in tree.pip_records() for e in r.get("files", [])}
    owned_dirs = {posixpath.dirname(path) for path in owned}  # (a package's dist-info files sit right in it)
    locked = {pip_package_name(p.name): p for p in packages_for(lockfile, platform) if p.manager == "pip"}
    findings: list[Finding] = []
    paths: set[str] = set()
    for pattern in _SITE_PACKAGES:
        for dist_info in sorted(prefix.glob(f"{pattern}/*.dist-info")):
            rel = dist_info.relative_to(prefix).as_posix()
            if dist_info.is_symlink() or not dist_info.is_dir() or rel in owned_dirs:
                continue
            stem = dist_info.name[: -len(".dist-info")]
            name, _, version = stem.partition("-")
            metadata = _small_text(dist_info / "METADATA") or ""
            name = next((line[5:].strip() for line in metadata.splitlines() if line.startswith("Name:")), name)
            version = next((line[8:].strip() for line in metadata.splitlines() if line.startswith("Version:")), version)
            site = dist_info.parent.relative_to(prefix).as_posix()
            for row in csv.reader((_small_text(dist_info / "RECORD") or "").splitlines()):
                if row and row[0]:
                    path = posixpath.normpath(posixpath.join(site, row[0]))
                    if path.startswith("../") or path == "..":
                        continue
                    paths.add(path)
                    if posixpath.basename(posixpath.dirname(path)) == "__pycache__":  # (pip's bytecode directory)
                        paths.add(posixpath.dirname(path))
            paths.add(rel)
            paths.update(f"{rel}/{child.name}" for child in dist_info.iterdir())
            over = locked.get(pip_package_name(name))
            detail = (
                f"installed over the locked {over.name} {over.version} by pip or another tool ({rel})"
                if over is not None
                else f"installed by pip or another tool, and not in the lock ({rel})"
            )
            findings.append(Finding("extra-package", f"{name} {version} {OUTSIDE_ENVKIT}", detail))
    return findings, frozenset(paths)


def verify_installed_prefix(
    lockfile_path: Path, lockfile: Lockfile, platform: str, prefix: Path, cache_dir: Path | None = None
) -> list[Finding]:
    """The findings of `verify_tree` (by package) and then of `verify_prefix` (by path), each path reported once."""
    tree = PrefixTree(prefix)
    findings = verify_tree(lockfile, platform, tree)
    mentioned = {f.detail.split(" ", 1)[0] for f in findings}
    # A package at another build than the lock's: its files differing from the lock's build's, its record there and
    # the lock's record missing are that one finding (verify_tree checked the installed build's files against its
    # own record).
    # So is a locked package not installed at all: its files and its record, missing, are that one finding.
    replaced = {f.package.split(" ", 1)[0] for f in findings if f.kind in ("wrong-package", "missing-package")}
    foreign, foreign_paths = foreign_distributions(lockfile, platform, prefix, tree)
    findings += foreign
    extra = _extra_paths(lockfile, platform, tree) | foreign_paths
    for f in verify_prefix(lockfile_path, lockfile, platform, prefix, cache_dir, extra):
        path = f.detail.split(" ", 1)[0]
        record_of = path.removeprefix("conda-meta/").rsplit("-", 2)[0] if path.startswith("conda-meta/") and path.count("/") == 1 else None
        of_replaced = f.package.split(" ", 1)[0] in replaced and f.kind in _FILE_KINDS
        if path not in mentioned and not of_replaced and not (record_of in replaced and f.kind in ("missing-file", "unowned-file")):
            findings.append(f)
    return findings


_FILE_KINDS = frozenset({"missing-file", "modified-file", "replaced-path", "retargeted-symlink", "changed-mode"})


def verify_prefix(
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    prefix: Path,
    cache_dir: Path | None = None,
    reported: frozenset[str] = frozenset(),
) -> list[Finding]:
    """Every difference between `prefix` and what installing the lock there would produce.

    The truth is the lock: its packages (fetched by sha256 and checked against their own
    paths.json) are installed afresh into a scratch directory as if at `prefix`, and the two
    trees are compared path by path: content, symlink targets, types, modes, and files that
    no locked package owns. conda-meta and envkit's pip records are compared like any file,
    so rewriting a record to match a changed file does not hide it.
    """
    from conda_envkit.cache import cache_dir_or_default
    from conda_envkit.files import absolute_path
    from conda_envkit.install import install_packages

    prefix = absolute_path(prefix)
    PrefixTree(prefix)  # refuses a directory that is not an environment
    cache = cache_dir_or_default(cache_dir)
    scratch = scratch_dir(cache)
    try:
        reference = scratch / "env"
        install_packages(lockfile, platform, reference, str(prefix), cache)
        expected = _scan(reference)
        owners = _owners(reference)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # As install writes them: the umask's modes (a reference install made now has them too; they were 0644/0755,
    # and a prefix installed under umask 000 failed its own verify for them).
    from conda_envkit.files import dir_mode, file_mode

    expected[LOCK_COPY.as_posix()] = _Entry("file", hashlib.sha256(lockfile_path.read_bytes()).hexdigest(), file_mode())
    for parent in (LOCK_COPY.parent.as_posix(),):
        expected.setdefault(parent, _Entry("directory", "", dir_mode()))
    owners[LOCK_COPY.as_posix()] = "envkit (lock copy)"
    findings = compare_with_reference(expected, _scan(prefix), owners, reported)
    copy = LOCK_COPY.as_posix()
    return [_lock_copy_finding(prefix, lockfile_path, lockfile) if f.detail.startswith(f"{copy} was modified") else f for f in findings]


def _lock_copy_finding(prefix: Path, lockfile_path: Path, lockfile: Lockfile) -> Finding:
    """What a prefix's lock copy that is not the lock's bytes means: the prefix was installed from another lock (the
    usual case: nobody synced it), the same lock written again, or an edited copy. ("was modified ..., installed
    as" the lock's sha256 said a file was edited, and named the wrong lock as the one installed.)"""
    from conda_envkit.lockmodel import lock_hash, read_lock

    label, copy = "envkit (lock copy)", LOCK_COPY.as_posix()
    try:
        installed = lock_hash(read_lock(prefix / LOCK_COPY))
    except EnvkitError:
        return Finding("modified-file", label, f"{copy} was edited: it is no lock envkit reads (the prefix's record of its lock)")
    wanted = lock_hash(lockfile)
    if installed == wanted:
        return Finding("modified-file", label, f"{copy} holds {lockfile_path}'s packages in other bytes (the lock was written again)")
    source = _installed_from(prefix / LOCK_COPY, lockfile_path, lockfile, installed)
    which = f"{source}" if source is not None else "another lock"
    also = f"; `envkit verify --lockfile {source}` checks it against that one" if source is not None else ""
    return Finding(
        "other-lock",
        label,
        f"{copy}: the prefix was installed from {which} (lock hash {installed.short}…), not {lockfile_path} ({wanted.short}…);"
        f" the package findings say how they differ{also}",
    )


def _installed_from(copy: Path, lockfile_path: Path, lockfile: Lockfile, installed: LockHash) -> Path | None:
    """The lock beside `lockfile_path` a prefix's lock copy came from: the same spec's default or variant lock (as the
    copy records its variant) whose lock hash is `installed`; None if there is no such file."""
    from conda_envkit.lockmodel import lock_hash, read_lock
    from conda_envkit.variant_locks import base_lock_path, recorded_variant, variant_path

    try:
        copy_variant = recorded_variant(read_lock(copy))
    except EnvkitError:
        return None
    variant = recorded_variant(lockfile)
    base = base_lock_path(lockfile_path, variant) if variant is not None else lockfile_path
    if base is None:
        return None
    candidate = variant_path(base, copy_variant)
    if candidate == lockfile_path or not candidate.is_file():
        return None
    try:
        return candidate if lock_hash(read_lock(candidate)) == installed else None
    except EnvkitError:
        return None
