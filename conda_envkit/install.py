"""Lock + platform -> a conda prefix on disk, every package checked against the lock's sha256.

Packages are downloaded (in parallel) into a persistent, content-addressed cache
(`<cache>/pkgs/<sha256>/<file>`) and re-hashed before every use, so a corrupted or
tampered cache entry is caught as surely as a bad download. Each archive's own
`info/index.json` supplies what the lock format does not carry (build number,
noarch kind), and py-rattler links the verified archives into the prefix, for any
target platform, writing `target_prefix` into files even when the prefix is staged
elsewhere (an image's `/opt/conda/envs/<name>`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit

from conda_envkit.archive_check import ArchiveEntry, check_links_together, check_package_archive

# CACHE_ENV_VAR and default_cache_dir are imported from here by older callers: cache.py owns them.
from conda_envkit.cache import CACHE_ENV_VAR as CACHE_ENV_VAR
from conda_envkit.cache import CACHE_SETTING as _CACHE_SETTING
from conda_envkit.cache import cache_dir_or_default, package_path, packages_dir, refuse_symlinked_dir, tmp_dir
from conda_envkit.cache import default_cache_dir as default_cache_dir
from conda_envkit.cache_seal import user_seal
from conda_envkit.channels import (
    ENV_VAR,
    ChannelSettings,
    check_credential_host,
    expand_credentials,
    expand_env_vars,
    missing_env_vars,
    origin,
    strip_credentials,
    url_host,
)
from conda_envkit.clobbers import clobbers_text, environment_clobbers, remove_empty_clobber_dirs, sort_record_paths
from conda_envkit.errors import EnvkitError
from conda_envkit.files import (
    NotRegularFile,
    absolute_path,
    directory_lock,
    file_mode,
    open_regular_file,
    owned_temp_file,
    process_temp_dir,
    read_cache_entry,
    replace_entry,
    replace_with,
    signals_deferred,
    staging_dir,
    write_error,
    write_private_file,
)
from conda_envkit.installed_state import LOCK_COPY, file_sha256, state_from_prefix, write_state
from conda_envkit.lockmodel import LockedPackage as LockedDependency
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.lockmodel import packages_for
from conda_envkit.network import (
    DOWNLOAD_CAP_HINT,
    Deadline,
    DeadlineExceeded,
    NetworkError,
    ResponseTooLarge,
    connection_failure,
    iter_limited,
    max_download_bytes,
    size_text,
)
from conda_envkit.pkginfo import PackageInfo, PackageInfoCache, read_conda_info, read_wheel_info
from conda_envkit.progress import counted
from conda_envkit.safepath import child
from conda_envkit.thread_pool import Stopped, ThreadPool, run_each

if TYPE_CHECKING:  # not imported at CLI start-up (locking imports this module), nor by a warm bake (no download, no link)
    import requests
    from rattler import PrefixRecord, RepoDataRecord

    from conda_envkit.progress import Progress

_CHUNK = 1 << 20
_T = TypeVar("_T")


class InstallError(EnvkitError):
    """A package that cannot be fetched, verified or installed."""


class PrefixTaken(InstallError):
    """The prefix a fresh install was to create exists now (another install made it meanwhile): to be synced instead."""


@dataclass(frozen=True)
class FetchedPackage:
    """A locked conda package whose archive is in the cache and matches the lock's sha256."""

    locked: LockedDependency
    archive: Path

    @property
    def file_name(self) -> str:
        return self.archive.name


@dataclass(frozen=True)
class FetchReport:
    """What fetching did: how many archives came from the cache and how many bytes were downloaded."""

    packages: tuple[FetchedPackage, ...]
    cached: int
    downloaded_bytes: int


def conda_packages(lockfile: Lockfile, platform: str) -> list[LockedDependency]:
    """The conda packages of one platform, each with the sha256 it must match."""
    packages = [p for p in packages_for(lockfile, platform) if p.manager == "conda"]
    for p in packages:
        if not p.hash.sha256:
            raise InstallError(f"{platform}: package {p.name} {p.version} has no sha256 in the lock", hint="re-lock with `envkit lock`")
    return packages


def pip_packages(lockfile: Lockfile, platform: str) -> list[LockedDependency]:
    """The pip packages of one platform: wheels with a sha256, refusing anything else."""
    packages = [p for p in packages_for(lockfile, platform) if p.manager == "pip"]
    for p in packages:
        if not urlsplit(p.url).path.endswith(".whl"):
            raise InstallError(
                f"{platform}: pip package {p.name} {p.version} is locked as a source distribution ({strip_credentials(p.url)})",
                hint="envkit installs wheels only, for any target platform: lock with `envkit lock`, which picks wheels",
            )
        if not p.hash.sha256:
            raise InstallError(f"{platform}: pip package {p.name} {p.version} has no sha256 in the lock", hint="re-lock with `envkit lock`")
    return packages


def pip_index_auth(url: str, index_templates: tuple[str, ...]) -> tuple[str, str] | None:
    """Credentials for a wheel URL: from the lock's `${VAR}` index templates of the same origin (scheme, host
    and port: as the lock's pip proxy sends them, conda_envkit.index_proxy).

    None means no template matches; requests then falls back to ~/.netrc.
    """
    where = origin(url)
    for template in index_templates:
        userinfo, at, _host = urlsplit(template).netloc.rpartition("@")
        if not at or origin(template) != where:
            continue
        user, _, password = userinfo.partition(":")
        for piece in (user, password):
            if "$" in piece and not ENV_VAR.fullmatch(piece):
                raise InstallError(
                    f"pip index {strip_credentials(template)}: a credential must be a literal or a single ${{VAR}}",
                    hint="fix the lock's pip index",
                )
        missing = missing_env_vars(userinfo)
        if missing:
            raise InstallError(
                f"{strip_credentials(url)} needs environment variable(s) {', '.join(missing)} (index {strip_credentials(template)})",
                hint="export the index credentials before installing; they are never stored",
            )
        try:
            check_credential_host(ENV_VAR.findall(userinfo), template, f"pip index {strip_credentials(template)}")
        except EnvkitError as exc:
            raise InstallError(exc.message, hint=exc.hint) from None
        return expand_env_vars(user), expand_env_vars(password)
    return None


def pip_index_templates(lockfile: Lockfile, platform: str) -> tuple[str, ...]:
    """The lock's pip index templates for `platform` (the credentials of its wheel URLs come from them)."""
    facts = lockfile.envkit.for_platform(platform) if lockfile.envkit else None
    return facts.pip_indexes if facts else ()


def lock_hosts(lockfile: Lockfile, index_templates: tuple[str, ...] = ()) -> frozenset[str]:
    """The hosts the lock names as channels or pip indexes: the only ones credentials may go to."""
    urls = [str(getattr(c, "url", c)) for c in (lockfile.metadata.channels or [])] + list(index_templates)
    return frozenset(url_host(u) for u in urls if "://" in u)


def fetch_url(public_url: str, settings: ChannelSettings, allowed_hosts: frozenset[str] = frozenset(), what: str = "package") -> str:
    """The URL to download a locked package from: credentials expanded (for the lock's own hosts), mirrors applied."""
    try:
        url = expand_credentials(public_url, allowed_hosts, what)
    except EnvkitError as exc:
        raise InstallError(exc.message, hint=exc.hint) from None
    for source, targets in settings.mirrors.items():
        base = source if "://" in source else settings.channel_alias + source
        base = base.rstrip("/") + "/"
        if url.startswith(base) and targets:
            return targets[0].rstrip("/") + "/" + url[len(base) :]
    return url


def _file_name(url: str, manager: str = "conda") -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    suffixes = (".whl",) if manager == "pip" else (".conda", ".tar.bz2")
    if not name.endswith(suffixes) or "/" in name or name.startswith("."):
        raise InstallError(
            f"{strip_credentials(url)}: not a {manager} package URL", hint=f"the lock's url must end in {' or '.join(suffixes)}"
        )
    return name


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(path: Path, sha256: str) -> str:
    st = path.stat()
    # ctime too: no user process can set it, so an edit in place that puts the old mtime
    # back still changes the stamp (and the archive is hashed again).
    return f"{sha256} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}\n"


# Markers beside an archive say what this user found it to be, as it is now (its stat): one per user
# (cache seal) and sealed with the user's secret, since someone who can write a shared cache could
# otherwise swap the archive and write a marker with the new file's stat (conda_envkit.cache_seal).
# `verified`: it matched its sha256. `checked`: it passed the archive check, file hashes included.
@dataclass(frozen=True)
class _Marker:
    name: str  # the file: `<name>.<owner>`
    kind: str  # what the seal signs it as
    header: str = ""  # before the stamp: a format, bumped when what the marker vouches for changes


_VERIFIED = _Marker("verified", "archive")
_CHECKED = _Marker("checked", "archive-check", "envkit-archive-check/1 ")


def _marker_path(path: Path, marker: _Marker) -> Path:
    return path.parent / f"{marker.name}.{user_seal().owner}"


def _marker_text(path: Path, sha256: str, marker: _Marker) -> str:
    stamp = marker.header + _stamp(path, sha256)
    return stamp + user_seal().sign(marker.kind, sha256, stamp) + "\n"


def _write_marker(path: Path, sha256: str, marker: _Marker) -> None:
    text = _marker_text(path, sha256, marker)
    write_private_file(_marker_path(path, marker), text.encode("utf-8"), "package cache marker", _CACHE_SETTING)


def _has_marker(path: Path, sha256: str, marker: _Marker) -> bool:
    try:
        expected = _marker_text(path, sha256, marker).encode("utf-8")
    except OSError:
        return False
    return read_cache_entry(_marker_path(path, marker)) == expected  # (a FIFO, a symlink, bytes not UTF-8: not marked)


def mark_verified(path: Path, sha256: str) -> None:
    """Remember that `path` (as it is now: size, mtime, ctime, inode) was hashed and matched `sha256`."""
    _write_marker(path, sha256, _VERIFIED)


def mark_checked(path: Path, sha256: str) -> None:
    """Remember that `path` (as it is now, and verified as `sha256`) passed the archive check, file hashes included."""
    _write_marker(path, sha256, _CHECKED)


def is_checked(path: Path, sha256: str) -> bool:
    """Whether the archive, as it is now, already passed the archive check with its files hashed (this user's
    sealed marker says so): then its files need not be hashed again (the rest of the check is cheap and always done)."""
    return _has_marker(path, sha256, _CHECKED)


def archive_label(locked: LockedDependency) -> str:
    """How errors about a package's archive name it."""
    return f"{locked.platform}: package {locked.name} {locked.version} {locked.build}"


def checked_once(fetched: FetchedPackage, check: Callable[[bool], _T]) -> _T:
    """`check(hashed)` of the package's archive, hashing its files only if this user has not checked the
    archive as it is now; a check that hashed them is remembered (`mark_checked`)."""
    sha256 = (fetched.locked.hash.sha256 or "").lower()
    hashed = not is_checked(fetched.archive, sha256)
    result = check(hashed)
    if hashed:
        mark_checked(fetched.archive, sha256)
    return result


def is_verified(path: Path, sha256: str) -> bool:
    """Whether the cached archive matches `sha256`: hashed once, then trusted while its stat is unchanged
    and the marker carries this user's seal."""
    if not path.is_file():
        return False
    if path.stat().st_size > max_download_bytes():  # (no download was ever that big: not hashed, fetched again)
        return False
    if _has_marker(path, sha256, _VERIFIED):
        return True
    if _sha256_of(path) != sha256:
        return False
    mark_verified(path, sha256)
    return True


def _download(
    url: str,
    dest: Path,
    session: Callable[[], requests.Session],
    attempts: int = 3,
    auth: tuple[str, str] | None = None,
    stop: threading.Event | None = None,
) -> tuple[str, int]:
    """Stream `url` to `dest`; return (sha256, bytes). Retries transient failures with backoff; gives up at `stop`."""
    import requests

    parts = urlsplit(url)
    cap = max_download_bytes()
    if parts.scheme == "file":
        source = Path(unquote(parts.path))
        try:
            # A FIFO (a symlink a pull request committed can name one) would wait for a writer forever.
            reader = open_regular_file(source)
        except OSError as exc:
            raise InstallError(
                f"{source}: cannot read package ({exc.strerror})", hint="check that the local channel still exists"
            ) from None
        except NotRegularFile:  # /dev/zero, a FIFO, a directory: never a package
            raise InstallError(f"{source}: not a regular file", hint="a lock's file:// URL must name a package archive") from None
        with reader:
            st = os.fstat(reader.fileno())
            if st.st_size > cap:
                raise InstallError(f"{source}: larger than the {size_text(cap)} download limit", hint=DOWNLOAD_CAP_HINT)
            with dest.open("wb") as out:  # an OSError writing is the cache's disk: the caller names it
                while True:
                    try:
                        chunk = reader.read(_CHUNK)
                    except OSError as exc:  # reading is the channel's side (an unreadable /proc file, a failing disk)
                        raise InstallError(f"{source}: cannot read package ({exc.strerror})", hint="check the local channel") from None
                    if not chunk:
                        break
                    out.write(chunk)
        return _sha256_of(dest), dest.stat().st_size
    last = ""
    tried = 0
    shown = strip_credentials(url)
    deadline = Deadline(shown)  # for all attempts together; each byte received extends it
    for attempt in range(attempts):
        tried = attempt + 1
        try:
            with session().get(url, stream=True, timeout=deadline.timeouts(), auth=auth) as response:
                if response.status_code in (401, 403):
                    raise InstallError(
                        f"{strip_credentials(url)}: HTTP {response.status_code} (not authorized)",
                        hint="export the variables the lock's ${VAR} placeholders name (channel or pip index), or add the host to ~/.netrc",
                    )
                if response.status_code == 404:
                    # (a wheel, with its index's credentials, comes from an index or --find-links, not a channel)
                    wheel = auth is not None or urlsplit(url).path.endswith(".whl")
                    gone = "the wheel is gone from its index (or --find-links)" if wheel else "the package is gone from its channel"
                    raise InstallError(f"{strip_credentials(url)}: HTTP 404", hint=f"{gone}; re-lock")
                response.raise_for_status()
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:  # refused before a byte of it is written
                    raise ResponseTooLarge(f"{shown}: {declared} bytes, over the {size_text(cap)} download limit", hint=DOWNLOAD_CAP_HINT)
                digest = hashlib.sha256()
                size = 0
                with dest.open("wb") as out:
                    for chunk in iter_limited(response, deadline, cap, _CHUNK, DOWNLOAD_CAP_HINT):
                        if stop is not None and stop.is_set():
                            raise Stopped(shown)  # the fetch as a whole is ending: Ctrl-C, SIGTERM, or another package failed
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                return digest.hexdigest(), size
        except requests.TooManyRedirects:
            raise InstallError(
                f"{shown}: too many redirects", hint="the server redirects in a loop; check the channel or mirror URL"
            ) from None
        except (requests.RequestException, NetworkError) as exc:
            if isinstance(exc, (DeadlineExceeded, ResponseTooLarge)):  # another attempt would be the same
                raise
            last = _failure(exc, shown)
            if not deadline.can_wait(0.5 * 2**attempt) or (stop is not None and stop.is_set()):
                break
            time.sleep(0.5 * 2**attempt)
    raise InstallError(f"{shown}: download failed after {tried} attempt(s) ({last})", hint="check the network or mirror")


def _failure(exc: requests.RequestException | NetworkError, shown: str) -> str:
    """A short reason for a failed download attempt (requests' own text repeats the URL)."""
    import requests

    if isinstance(exc, NetworkError):
        return exc.message.removeprefix(f"{shown}: ")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return connection_failure(exc)


def _or_silent(progress: Progress | None) -> Progress:
    from conda_envkit.progress import SILENT

    return progress or SILENT


def fetch_packages(
    packages: list[LockedDependency],
    cache_dir: Path,
    settings: ChannelSettings | None = None,
    jobs: int = 8,
    pip_indexes: tuple[str, ...] = (),
    allowed_hosts: frozenset[str] = frozenset(),
    progress: Progress | None = None,
    step: str = "download",
) -> FetchReport:
    """Put every package's archive (conda package or wheel) in the cache, verified against the lock's sha256.

    `pip_indexes` are the lock's index templates, for the credentials of wheel URLs;
    `progress` hears of each package as it is in the cache (step `step`).
    """
    settings = settings or ChannelSettings()
    store = packages_dir(cache_dir)
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(store, exc, "package cache", _CACHE_SETTING) from None
    sessions: list[requests.Session] = []
    session_lock = threading.Lock()
    stop = threading.Event()
    in_flight: set[Path] = set()  # temp files of downloads under way
    in_flight_lock = threading.Lock()  # a temp file is made and noted, or all are removed: never between

    def session() -> requests.Session:
        """One HTTP session for this fetch, made on first use: a local channel needs none (nor requests)."""
        with session_lock:
            if not sessions:
                import requests

                sessions.append(requests.Session())
            return sessions[0]

    def fetch(p: LockedDependency) -> tuple[FetchedPackage, bool, int]:
        expected = (p.hash.sha256 or "").lower()
        name = _file_name(p.url, p.manager)
        what = f"{p.platform}: package {p.name}"
        target = child(child(store, expected, f"{what}: sha256"), name, f"{what}: url")
        refuse_symlinked_dir(target.parent)  # (pkgs/ itself is checked with the cache's other directories)
        if is_verified(target, expected):
            return FetchedPackage(p, target), True, 0
        auth = None
        label = f"{p.platform}: {'pip ' if p.manager == 'pip' else ''}package {p.name} {p.version}"
        url = fetch_url(p.url, settings, allowed_hosts, label)
        if p.manager == "pip":
            auth = pip_index_auth(p.url, pip_indexes)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with in_flight_lock:
                if stop.is_set():  # the fetch is ending: no new temp file the cleanup could miss
                    raise Stopped(label)
                fd, tmp = owned_temp_file(target.parent, f".{name}.", ".part")  # (a killed fetch's partial one: removed)
                os.close(fd)
                in_flight.add(tmp)
        except OSError as exc:
            raise write_error(target, exc, "package cache", _CACHE_SETTING) from None
        try:
            try:
                actual, size = _download(url, tmp, session, auth=auth, stop=stop)
            except OSError as exc:  # the cache's disk, not the network (requests errors are handled inside)
                raise write_error(target, exc, "package cache", _CACHE_SETTING) from None
            if actual != expected:
                what = f"pip package {p.name} {p.version}" if p.manager == "pip" else f"package {p.name} {p.version} {p.build}"
                raise InstallError(
                    f"{p.platform}: {what}: sha256 mismatch (lock {expected}, downloaded {actual}) from {strip_credentials(url)}",
                    hint="the file changed on its channel or index after locking: re-lock, or find out who replaced it",
                )
            try:
                # The umask's mode, not mkstemp's 0600: a cache a group shares (setgid, umask 002) is read by the others.
                tmp.chmod(file_mode())
                replace_entry(tmp, target)  # (a directory at its name, made by whoever else writes the cache, is replaced)
            except OSError as exc:
                raise write_error(target, exc, "package cache", _CACHE_SETTING) from None
            mark_verified(target, expected)
        finally:
            with in_flight_lock:
                tmp.unlink(missing_ok=True)
                in_flight.discard(tmp)
        return FetchedPackage(p, target), False, size

    progress = _or_silent(progress)

    def fetch_and_report(p: LockedDependency) -> tuple[FetchedPackage, bool, int]:
        result = fetch(p)
        progress.advance(step)
        return result

    progress.start(step, total=len(packages), unit="packages")
    try:
        results = run_each(fetch_and_report, packages, max(1, jobs), stop)
    except BaseException:
        # Ctrl-C, SIGTERM or one failed package: run_each set `stop`, so the other downloads ended at their
        # next chunk, not at their deadline (minutes for a trickling server). One still stuck in a read has
        # had its moment; its temp file is removed here, and its thread ends with the process.
        stop.set()
        with in_flight_lock:  # `stop` is set: no download makes a temp file after this
            for tmp in in_flight:
                tmp.unlink(missing_ok=True)
        raise
    report = FetchReport(
        packages=tuple(r[0] for r in results),
        cached=sum(1 for r in results if r[1]),
        downloaded_bytes=sum(r[2] for r in results),
    )
    progress.done(step, f"{counted(len(packages), 'package')} ({report.cached} cached, {report.downloaded_bytes / 1e6:.1f} MB downloaded)")
    return report


def _channel_of(url: str) -> str:
    # .../<channel>/<subdir>/<file>: the channel is what precedes the subdir.
    return strip_credentials(url.rsplit("/", 2)[0])


def package_info(fetched: FetchedPackage, cache_dir: Path) -> PackageInfo:
    """The archive's info (index.json, installed size), from the info cache or read once from the archive."""
    cache = PackageInfoCache(cache_dir)
    locked = fetched.locked
    sha256 = (locked.hash.sha256 or "").lower()
    info = cache.get(sha256)
    if info is None:
        if locked.manager == "pip":
            info = read_wheel_info(fetched.archive, sha256, locked.name, locked.version)
        else:
            info = read_conda_info(fetched.archive, sha256)
        cache.put(info)
    return info


def check_info_is_locked(info: PackageInfo, locked: LockedDependency, file_name: str) -> None:
    """An InstallError if the archive's index.json names another package than the lock does."""
    if info.name != locked.name or info.version != locked.version or info.build != locked.build:
        raise InstallError(
            f"{locked.platform}: {file_name} holds {info.name} {info.version} {info.build}, "
            f"but the lock says {locked.name} {locked.version} {locked.build}",
            hint="the lock was edited by hand or the channel is broken; re-lock",
        )


def record_from_info(info: PackageInfo, locked: LockedDependency, file_name: str, url: str) -> RepoDataRecord:
    """A record for rattler built from the archive's own index.json (as cached by sha256)."""
    from rattler import BuildString, NoArchType, PackageRecord, RepoDataRecord

    check_info_is_locked(info, locked, file_name)
    record = PackageRecord(
        name=info.name,
        version=info.version,
        build=BuildString(info.build),
        build_number=info.build_number,
        subdir=info.subdir,
        arch=info.arch,
        platform=info.platform,
        noarch=NoArchType(info.noarch),  # type: ignore[arg-type]
        depends=list(info.depends),
        constrains=list(info.constrains),
        sha256=bytes.fromhex(locked.hash.sha256 or ""),
        md5=bytes.fromhex(locked.hash.md5) if locked.hash.md5 else None,
        size=info.archive_size,
        license=info.license,
        license_family=info.license_family,
        features=info.features,  # type: ignore[arg-type]  # rattler takes conda's string form too; the stub says list
        python_site_packages_path=info.python_site_packages_path,
    )
    record.track_features = list(info.track_features)
    return RepoDataRecord(record, file_name, url, _channel_of(locked.url))


def repodata_record(fetched: FetchedPackage, info: PackageInfo) -> RepoDataRecord:
    """A record for rattler for a verified archive in the cache, from its info (`package_info`)."""
    return record_from_info(info, fetched.locked, fetched.file_name, fetched.archive.as_uri())


def _make_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_contents(fetched: FetchedPackage) -> tuple[str, list[ArchiveEntry]]:
    label = archive_label(fetched.locked)
    return label, checked_once(fetched, lambda hashed: check_package_archive(fetched.archive, label, hashed=hashed))


def check_archives(fetched: list[FetchedPackage]) -> None:
    """Check every archive against itself (paths, links, paths.json hashes) and the set for
    symlink chains between packages, before anything is linked."""
    with ThreadPool(max_workers=4) as pool:
        payloads = dict(pool.map(_check_contents, fetched))
    check_links_together(payloads)


def link_packages(
    records: list[RepoDataRecord],
    prefix: Path,
    cache_dir: Path,
    platform: str,
    installed: list[PrefixRecord] | None = None,
    ignored: set[str] | None = None,
    target_prefix: str | None = None,
) -> None:
    """Link `records` into `prefix` with py-rattler (unlinking what `installed` holds and the
    records replace), from an extraction directory of this run only.

    A shared extraction directory would let an edit in one environment (its files are hard
    links into it) poison every later install; this one is removed afterwards.
    """
    try:
        # Named for this process: one a killed install left (SIGKILL, or rattler still extracting after a Ctrl-C
        # unwound past its removal) is removed by the next command (files.remove_orphans).
        extracted = process_temp_dir(_make_dir(tmp_dir(cache_dir)), "extracted")
    except OSError as exc:
        raise write_error(tmp_dir(cache_dir) / "extracted", exc, "package cache", _CACHE_SETTING) from None
    import asyncio

    from rattler import Platform, install

    try:
        asyncio.run(
            install(
                records,
                target_prefix=prefix,
                cache_dir=extracted,
                installed_packages=installed or [],
                ignored_packages=ignored or None,
                platform=Platform(platform),
                execute_link_scripts=False,
                show_progress=False,
                alternative_target_prefix=target_prefix,
            )
        )
    except Exception as exc:  # rattler raises its own exception types for link failures
        # rattler's text is a chain of "Caused by:" lines: the first and the root cause say it.
        lines = [line.removeprefix("Caused by:").strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = lines[0] + (f" ({lines[-1]})" if len(lines) > 1 else "")
        hint = "check free disk space and permissions"
        if any(why in reason for why in ("Permission denied", "Read-only file system", "Operation not permitted")):
            hint = f"make {prefix} writable (a read-only mount, an immutable file, another user's files?), or install elsewhere"
        elif any(why in reason for why in ("No space left", "Disk quota exceeded", "File too large")):
            # Extracting writes the cache, linking the prefix: the one that is full (or both, if neither looks it).
            full = [where for where in (prefix, tmp_dir(cache_dir)) if _nearly_full(where)] or [prefix, tmp_dir(cache_dir)]
            hint = "free space (or raise the quota) on the filesystem of " + " and of ".join(map(str, full))
        elif "Too many open files" in reason:
            hint = "raise the limit of open files (`ulimit -n 4096`), or install fewer packages at once"
        elif "Cannot allocate memory" in reason or "out of memory" in reason.lower():
            hint = "the machine (or a ulimit -v / cgroup limit) has too little memory for the install: raise it"
        elif "longer than the placeholder prefix" in reason:  # a binary placeholder: the prefix must fit in its place
            hint = f"a package was built for prefixes no longer than its placeholder; use a shorter prefix than {target_prefix or prefix}"
        elif "entry point" in reason:  # info/link.json's entry points: what the package itself says
            hint = "the package's info/link.json is broken or hostile: re-lock from a channel you trust"
        # (named as the user knows it: the prefix it is for, not a staging directory beside it or in the cache)
        raise InstallError(f"{platform}: installing into {target_prefix or prefix} failed: {reason}", hint=hint) from None
    except BaseException as exc:
        # A Rust panic inside py-rattler surfaces as pyo3's PanicException (a BaseException).
        if type(exc).__name__ != "PanicException":
            raise
        raise InstallError(
            f"{platform}: py-rattler crashed installing into {prefix}: {str(exc).splitlines()[0] if str(exc) else 'panic'}",
            hint="a package archive is malformed although its sha256 matches the lock: re-lock, or report it to its channel",
        ) from None
    finally:
        shutil.rmtree(extracted, ignore_errors=True)


def waiting_for_another_install(progress: Progress, prefix: Path, locked: Path) -> Callable[[], None]:
    """What an install of `prefix` says while another holds `locked` (it said nothing, and looked hung)."""
    return lambda: progress.advance(f"install {prefix.name}", 0, f"waiting for another install in {locked}")


def _nearly_full(path: Path) -> bool:
    """Whether the filesystem of `path` (or of its nearest existing parent) has less than 1 MiB left."""
    for where in (path, *path.parents):
        try:
            st = os.statvfs(where)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize < 1 << 20
    return False


# Keys of conda-meta/*.json that hold paths of the machine that installed the prefix.
_HOST_KEYS = ("extracted_package_dir", "package_tarball_full_path", "link")


def normalize_conda_meta(prefix: Path, packages: list[LockedDependency]) -> None:
    """Make conda-meta a function of the lock (`packages`: its conda packages): lock URLs, no host paths, fixed modes."""
    by_file = {_file_name(p.url): p for p in packages}
    meta = prefix / "conda-meta"
    for path in sorted(meta.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        locked = by_file.get(data.get("fn", ""))
        if locked is not None:
            # The URL as the lock writes it: a relative channel stays relative, so no host path
            # (where the project was checked out) gets into an environment or image.
            data["url"] = strip_credentials(locked.locked_url)
            data["channel"] = _channel_of(locked.locked_url)
        for key in _HOST_KEYS:
            data.pop(key, None)
        sort_record_paths(data)  # (a clobbered entry renamed after linking keeps its place: linking order)
        # Compact: json's C encoder only runs without indent, and large envs have ~100k paths. Written beside it and
        # renamed over it: the record is replaced, never written (or chmod-ed) through a symlink.
        replace_with(path, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"), 0o644)
    (prefix / "CACHEDIR.TAG").unlink(missing_ok=True)
    remove_empty_clobber_dirs(prefix)


@dataclass(frozen=True)
class InstallReport:
    """What `install_packages` did."""

    prefix: Path
    target_prefix: str
    platform: str
    fetch: FetchReport
    seconds: float
    clobbers: str = ""  # what a warning says of paths several packages install (conda_envkit.clobbers), if any


def install_packages(
    lockfile: Lockfile,
    platform: str,
    prefix: Path,
    target_prefix: str | None = None,
    cache_dir: Path | None = None,
    settings: ChannelSettings | None = None,
    progress: Progress | None = None,
    only: frozenset[str] | None = None,
) -> InstallReport:
    """Materialize one platform of the lock into `prefix` (created empty; must not hold files).

    `target_prefix` is where the environment will live (written into files that
    carry a prefix placeholder); it defaults to `prefix` itself. With `only` (conda
    names, `pip:<name>` for wheels), just those packages are fetched and linked, as
    they would be in the whole environment (bake builds the layers it lacks this way).
    """
    started = time.perf_counter()
    cache_dir = cache_dir_or_default(cache_dir).absolute()  # archives are handed to rattler as file:// URLs
    packages = conda_packages(lockfile, platform)
    wheels = pip_packages(lockfile, platform)
    python = next((p.version for p in packages if p.name == "python"), None)
    if wheels and python is None:
        raise InstallError(f"{platform}: the lock has pip packages but no python", hint="re-lock with python in the conda dependencies")
    indexes = pip_index_templates(lockfile, platform)
    progress = _or_silent(progress)
    wanted = [p for p in packages + wheels if only is None or (p.name if p.manager == "conda" else f"pip:{p.name}") in only]
    hosts = lock_hosts(lockfile, indexes)
    report = fetch_packages(
        wanted, cache_dir, settings, pip_indexes=indexes, allowed_hosts=hosts, progress=progress, step=f"download {platform}"
    )
    progress.start(f"extract {platform}", total=None, unit="packages")
    conda_fetched = [f for f in report.packages if f.locked.manager == "conda"]
    if prefix.exists() and any(prefix.iterdir()):
        raise InstallError(f"{prefix}: directory is not empty", hint="install into a new directory, or remove it first")
    with ThreadPool(max_workers=4) as pool:
        infos = list(pool.map(lambda f: package_info(f, cache_dir), conda_fetched))
    records = [repodata_record(f, info) for f, info in zip(conda_fetched, infos, strict=True)]
    clobbers = ""
    if only is None:  # (bake links parts of an environment, and checks the whole itself)
        clobbers = clobbers_text(environment_clobbers(infos, platform))
    check_archives(conda_fetched)
    ignored = {p.name for p in packages} - {f.locked.name for f in conda_fetched}
    records += _ignored_records([p for p in packages if p.name in ignored], cache_dir)
    link_packages(
        records,
        prefix,
        cache_dir,
        platform,
        ignored=ignored,
        target_prefix=target_prefix if target_prefix and target_prefix != str(prefix) else None,
    )
    normalize_conda_meta(prefix, [f.locked for f in conda_fetched])
    if wheels:
        from conda_envkit.pip_install import WheelToInstall, install_wheels

        to_install = [
            WheelToInstall(f.locked.name, f.locked.version, f.locked.locked_url, f.locked.hash.sha256 or "", f.archive)
            for f in report.packages
            if f.locked.manager == "pip"
        ]
        install_wheels(to_install, prefix, target_prefix or str(prefix), platform, python or "")
    wheel_text = f" and {counted(len(wheels), 'wheel')}" if wheels else ""
    progress.done(f"extract {platform}", f"{counted(len(packages), 'package')}{wheel_text} into {target_prefix or prefix}")
    return InstallReport(prefix, target_prefix or str(prefix), platform, report, time.perf_counter() - started, clobbers)


def _ignored_records(packages: list[LockedDependency], cache_dir: Path) -> list[RepoDataRecord]:
    """Records (from cached info) for packages left out of a partial install: rattler sees the whole
    environment (python's version for noarch packages) but links none of them."""
    infos = PackageInfoCache(cache_dir)
    out = []
    for p in packages:
        info = infos.get((p.hash.sha256 or "").lower())
        if info is not None:
            name = _file_name(p.url)
            out.append(record_from_info(info, p, name, package_path(cache_dir, info.sha256, name).as_uri()))
    return out


def check_prefix_path(prefix: Path) -> None:
    """An InstallError, before anything is fetched, for a prefix whose path is not UTF-8: packages have it written
    into their files (prefix replacement, entry points), and py-rattler refuses to link there after the downloads."""
    try:
        str(prefix).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(prefix).decode("utf-8", "backslashreplace")  # (the byte as it is: pre\xe9fix)
        raise InstallError(
            f"{shown}: the prefix path is not UTF-8",
            hint="choose a prefix whose path is UTF-8 (it is written into the environment's files)",
        ) from None


def install_environment(
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    prefix: Path,
    cache_dir: Path | None = None,
    settings: ChannelSettings | None = None,
    progress: Progress | None = None,
) -> InstallReport:
    """Install into a temporary sibling of `prefix`, then rename it into place.

    An interrupted or failed install leaves no half-made environment at `prefix`;
    a copy of the lock goes to `<prefix>/conda-meta/envkit/conda-lock.yml`.
    """
    prefix = absolute_path(prefix)
    check_prefix_path(prefix)
    if prefix.exists():  # (PrefixTaken: a caller that found no prefix lost a race to another install, and compares)
        raise PrefixTaken(f"{prefix} already exists", hint="choose a new prefix, or remove the old environment first")
    reporter = _or_silent(progress)
    staging: Path | None = None
    try:
        # A signal is held while the directory is made and recorded here, so the cleanup
        # below always knows about it.
        with signals_deferred():
            staging = staging_dir(prefix, ".envkit-staging", "--prefix")
        # One install per parent directory at a time: a second one into the same
        # prefix waits, then finds it taken instead of losing the race to rename.
        with directory_lock(prefix.parent, waiting_for_another_install(reporter, prefix, prefix.parent)):
            if prefix.exists():
                raise PrefixTaken(f"{prefix} was created by another install", hint="choose a new prefix, or remove it first")
            report = install_packages(lockfile, platform, staging, str(prefix), cache_dir, settings, progress)
            copy = staging / LOCK_COPY
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lockfile_path, copy)
            write_state(staging, state_from_prefix(staging, platform, str(prefix), file_sha256(copy)))
            os.rename(staging, prefix)
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise write_error(prefix, exc, "environment", "--prefix") from None
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return InstallReport(prefix, str(prefix), platform, report.fetch, report.seconds, report.clobbers)
