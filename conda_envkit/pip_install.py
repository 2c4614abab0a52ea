"""Verified wheels -> files in a conda prefix, for the prefix's platform (pypa's `installer`).

Runs after the conda packages are linked, into the same (possibly staged) prefix:
site-packages of the locked CPython, console scripts with the prefix's own
interpreter (as it will be at its final place) in their shebang or Windows launcher.
Nothing is compiled to bytecode, so the result depends on the wheels alone.

Each installed wheel gets a record, `conda-meta/envkit/pip/<name>.json`, naming the
locked URL and sha256 and every file it put in the prefix with its content hash:
the pip counterpart of `conda-meta/<package>.json`, read by bake (layers) and verify.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.records import Hash, RecordEntry
from installer.sources import WheelFile
from installer.utils import copyfileobj_with_hashing, make_file_executable, parse_metadata_file
from packaging.utils import canonicalize_name

from conda_envkit.errors import EnvkitError
from conda_envkit.files import signals_deferred
from conda_envkit.safepath import UnsafePathError, check_not_records, child, is_within, open_new_file, relative_path

PIP_RECORDS = PurePosixPath("conda-meta/envkit/pip")
INSTALLER_NAME = b"envkit\n"


class PipInstallError(EnvkitError):
    """A wheel that cannot be installed into the prefix."""


@dataclass(frozen=True)
class WheelToInstall:
    """A verified wheel in the cache and the lock entry it was fetched for."""

    name: str
    version: str
    url: str
    sha256: str
    wheel: Path


def site_packages(platform: str, python_version: str) -> str:
    """Prefix-relative site-packages of a conda CPython on `platform`."""
    if platform.startswith("win"):
        return "Lib/site-packages"
    minor = ".".join(python_version.split(".")[:2])
    return f"lib/python{minor}/site-packages"


def scheme_dict(prefix: Path, platform: str, python_version: str, name: str) -> dict[str, str]:
    """Where installer puts each part of a wheel (its schemes) in the prefix."""
    site = str(prefix / site_packages(platform, python_version))
    if platform.startswith("win"):
        return {
            "purelib": site,
            "platlib": site,
            "headers": str(prefix / "Include" / name),
            "scripts": str(prefix / "Scripts"),
            "data": str(prefix),
        }
    minor = ".".join(python_version.split(".")[:2])
    return {
        "purelib": site,
        "platlib": site,
        "headers": str(prefix / "include" / f"python{minor}" / name),
        "scripts": str(prefix / "bin"),
        "data": str(prefix),
    }


class PrefixDestination(SchemeDictionaryDestination):
    """installer's destination, but every file lands inside the prefix and no write follows a symlink.

    installer checks paths lexically; a symlink a conda package (or an earlier wheel) put in
    the prefix could still carry a write out of it. Here every parent is resolved and must
    stay inside the prefix, and the file is created with O_EXCL|O_NOFOLLOW.
    """

    def __init__(self, prefix: Path, what: str, *args, written: MadePaths | None = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._prefix = prefix
        self._what = what
        self.written = MadePaths() if written is None else written  # every file made: the caller removes them if the install fails

    def write_to_fs(self, scheme, path, stream, is_executable):  # type: ignore[no-untyped-def]
        target = self._path_with_destdir(scheme, path)
        try:
            rel = target.relative_to(self._prefix).as_posix()
        except ValueError:
            raise UnsafePathError(f"{self._what}: {path} would be installed outside the prefix", hint="the wheel is hostile") from None
        check_not_records(rel, self._what)
        if target.exists() or target.is_symlink():
            raise FileExistsError(f"File already exists: {rel}")
        self.written.expect(target)
        with signals_deferred():  # made and noted as one step: a Ctrl-C between left a file the cleanup missed
            fd = open_new_file(self._prefix, rel, f"{self._what}: {path}")
            self.written.append(target)
        with open(fd, "wb") as f:
            hash_, size = copyfileobj_with_hashing(stream, f, self.hash_algorithm)
        if is_executable:
            make_file_executable(target)
        return RecordEntry(path, Hash(self.hash_algorithm, hash_), size)


def interpreter(platform: str, target_prefix: str) -> tuple[str, Literal["posix", "win-amd64", "win-arm64"]]:
    if platform.startswith("win"):
        return target_prefix.rstrip("\\/") + "\\python.exe", "win-arm64" if platform.endswith("arm64") else "win-amd64"
    return target_prefix.rstrip("/") + "/bin/python", "posix"


def record_rows(record: str) -> Iterator[tuple[str, str, str]]:
    """A wheel RECORD's rows (path, hash, size), blank lines skipped."""
    for line in record.splitlines():
        if line.strip():
            # path,hash,size: the path may itself hold commas, the last two fields never do.
            path, hash_field, size = line.rsplit(",", 2)
            yield path.strip('"'), hash_field, size


def sha256_from_record(value: str) -> bytes | None:
    """The digest a RECORD hash field (`sha256=<urlsafe base64>`) gives, if it is a sha256 one."""
    algorithm, _, encoded = value.partition("=")
    if algorithm != "sha256" or not encoded:
        return None
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def record_files(record: str, site: str, dist_info: str, digest_of: Callable[[str], str]) -> list[dict[str, str]]:
    """Every file an installed wheel's RECORD (the one installer wrote) names, prefix-relative, with sha256
    (`digest_of` a prefix-relative path, for an entry without a hash: the RECORD itself)."""
    files = []
    for path, hash_field, _size in record_rows(record):
        rel = relative_path(posixpath.normpath(posixpath.join(site, path)), f"{dist_info}/RECORD")
        digest = sha256_from_record(hash_field)
        files.append({"_path": rel, "sha256": digest.hex() if digest is not None else digest_of(rel)})
    return sorted(files, key=lambda f: f["_path"])


def _installed_files(prefix: Path, site: str, dist_info: str) -> list[dict[str, str]]:
    """Every file the wheel put in the prefix (from its RECORD), prefix-relative, with sha256."""
    record = prefix / site / dist_info / "RECORD"
    if not is_within(prefix, record):
        raise UnsafePathError(f"{dist_info}/RECORD is outside the prefix", hint="the wheel is hostile")

    def digest_of(rel: str) -> str:
        if not is_within(prefix, prefix / rel):
            raise UnsafePathError(f"{dist_info}/RECORD: {rel} resolves outside the prefix", hint="the wheel is hostile")
        with (prefix / rel).open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    return record_files(record.read_text(encoding="utf-8"), site, dist_info, digest_of)


def pip_record(item: WheelToInstall, site: str, dist_info: str, files: list[dict[str, str]]) -> bytes:
    """`conda-meta/envkit/pip/<name>.json`: the installed wheel's lock entry and files."""
    entry = {
        "name": item.name,
        "version": item.version,
        "manager": "pip",
        "url": item.url,
        "sha256": item.sha256,
        "dist_info": posixpath.join(site, dist_info),
        "files": files,
    }
    return (json.dumps(entry, sort_keys=True) + "\n").encode()


def _member_twice(wheel: Path) -> str | None:
    """A zip member name the wheel holds more than once (installer writes the second over the first), if any."""
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    seen: set[str] = set()
    return next((name for name in names if name in seen or seen.add(name)), None)  # type: ignore[func-returns-value]


def _owner_of(prefix: Path, rel: str) -> str:
    """Which installed package's record lists `rel` (said on a refused overwrite, so the user knows what clashes)."""
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(meta.read_text(encoding="utf-8"))
            if rel in (data.get("files") or []):
                return f"which conda package {data.get('name')}-{data.get('version')}-{data.get('build')} installed"
    for meta in sorted((prefix / PIP_RECORDS).glob("*.json")):
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(meta.read_text(encoding="utf-8"))
            if any(isinstance(f, dict) and f.get("_path") == rel for f in data.get("files") or []):
                return f"which pip package {data.get('name')} {data.get('version')} installed"
    return "which is in the prefix but in no package's record (left by an earlier install?)"


class MadePaths(list[Path]):
    """The files a wheel's install made (the cleanup removes them if it fails), each handed to `noted` (a sync's
    journal) before it is made: a sync killed outright (SIGKILL) in between finds it there."""

    def __init__(self, noted: Callable[[Path], None] | None = None) -> None:
        super().__init__()
        self.noted = noted

    def expect(self, path: Path) -> None:
        if self.noted is not None:
            self.noted(path)


def install_wheels(
    wheels: list[WheelToInstall],
    prefix: Path,
    target_prefix: str,
    platform: str,
    python_version: str,
    noted: Callable[[Path], None] | None = None,
) -> None:
    """Install `wheels` (already verified) into `prefix`, as if it lived at `target_prefix`; `noted` hears of each
    file before it is written (conda_envkit.sync_journal)."""
    python, kind = interpreter(platform, target_prefix)
    site = site_packages(platform, python_version)
    records = prefix / PIP_RECORDS
    records.mkdir(parents=True, exist_ok=True)
    for item in sorted(wheels, key=lambda w: w.name):
        written = MadePaths(noted)
        try:
            _install_wheel(item, prefix, platform, python_version, (python, kind), site, records, written)
        except BaseException:  # (Ctrl-C too) what this wheel wrote goes again: no file without its record is left
            for path in reversed(written):
                path.unlink(missing_ok=True)
            raise


def _install_wheel(
    item: WheelToInstall,
    prefix: Path,
    platform: str,
    python_version: str,
    interpreter_kind: tuple[str, Literal["posix", "win-amd64", "win-arm64"]],
    site: str,
    records: Path,
    written: MadePaths,
) -> None:
    """One wheel of `install_wheels`, each file it writes noted in `written` (its record last)."""
    python, kind = interpreter_kind
    what = f"{platform}: pip package {item.name} {item.version}"
    record_path = child(records, f"{item.name}.json", f"{what}: name")
    try:
        with WheelFile.open(item.wheel) as source:
            metadata = parse_metadata_file(source.read_dist_info("METADATA"))
            if canonicalize_name(str(metadata.get("Name", ""))) != canonicalize_name(item.name):
                raise PipInstallError(
                    f"{what}: {item.wheel.name} holds {metadata.get('Name')!r}, not {item.name}",
                    hint="the lock was edited by hand or the index is broken; re-lock",
                )
            destination = PrefixDestination(
                prefix,
                what,
                scheme_dict(prefix, platform, python_version, item.name),
                python,
                kind,
                bytecode_optimization_levels=(),
                written=written,
            )
            install(source, destination, {"INSTALLER": INSTALLER_NAME})
            dist_info = source.dist_info_dir
    except EnvkitError:
        raise
    except FileExistsError as exc:
        # (installer's own check says "File already exists: <path>", with no filename)
        taken = Path(str(exc.filename or exc).removeprefix("File already exists: ")).as_posix()
        twice = _member_twice(item.wheel)
        if twice is not None:
            raise PipInstallError(
                f"{platform}: pip package {item.name} {item.version}: {item.wheel.name} holds {twice} more than once",
                hint="the wheel is malformed or hostile; re-lock, or report it to the package's authors",
            ) from None
        raise PipInstallError(
            f"{platform}: pip package {item.name} {item.version} would overwrite {taken}, " + _owner_of(prefix, taken),
            hint="drop one of the two from the lock's pip: section (the other provides that file) and re-lock;"
            " a file no record lists was left by an earlier install: remove it",
        ) from None
    except Exception as exc:  # installer raises plain exceptions for malformed wheels
        raise PipInstallError(
            f"{platform}: cannot install pip package {item.name} {item.version} from {item.wheel.name}: {str(exc) or repr(exc)}",
            hint="the wheel is malformed or not for this platform; re-lock, or report it to the package's authors",
        ) from None
    if str(metadata.get("Version", item.version)) != item.version:
        raise PipInstallError(
            f"{platform}: {item.wheel.name} holds version {metadata.get('Version')}, the lock says {item.name} {item.version}",
            hint="the lock was edited by hand or the index is broken; re-lock",
        )
    data = pip_record(item, site, dist_info, _installed_files(prefix, site, dist_info))
    with signals_deferred():
        fd = open_new_file(prefix, record_path.relative_to(prefix).as_posix(), f"{what}: record")
        written.append(record_path)
    with open(fd, "wb") as out:
        out.write(data)
