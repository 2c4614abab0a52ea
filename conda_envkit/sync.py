"""`envkit install` into an existing prefix: bring it to the lock by unlinking and linking what changed.

What is installed is read from the prefix (conda-meta records and envkit's pip records,
each naming its archive's sha256) and compared with the lock by package name and
sha256. py-rattler unlinks removed and changed conda packages and links the new ones;
only those are fetched. Wheels are removed and installed the same way (all of them
again when python changes, since their files live in `lib/pythonX.Y`). envkit's
installed record is removed before the first change and written after the last, so an
interrupted sync is noticed (the next one compares record by record).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rattler import PrefixRecord

from conda_envkit.cache import cache_dir_or_default, package_path
from conda_envkit.channels import ChannelSettings
from conda_envkit.clobbers import environment_clobbers
from conda_envkit.files import absolute_path, directory_lock, remove_entry, replace_with, write_error
from conda_envkit.install import (
    FetchedPackage,
    InstallError,
    check_archives,
    check_prefix_path,
    conda_packages,
    fetch_packages,
    link_packages,
    lock_hosts,
    normalize_conda_meta,
    package_info,
    pip_packages,
    record_from_info,
    repodata_record,
    waiting_for_another_install,
)
from conda_envkit.installed_state import LOCK_COPY, clear_state, file_sha256, read_identity, read_state, state_from_prefix, write_state
from conda_envkit.lockmodel import LockedPackage as LockedDependency
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.noarch_python import PythonTarget, parse_entry_point, python_target
from conda_envkit.pip_install import PIP_RECORDS, WheelToInstall, install_wheels
from conda_envkit.pkginfo import PackageInfo, PackageInfoCache
from conda_envkit.progress import SILENT, Progress
from conda_envkit.sync_journal import JournalWriter, end_journal, remove_leftovers, start_journal

_WRITE_ERRORS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True)
class SyncPlan:
    """Package names (pip ones as `pip:<name>`) to add, remove and change."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    change: tuple[str, ...] = ()

    @property
    def nothing(self) -> bool:
        return not (self.add or self.remove or self.change)

    def summary(self) -> str:
        return f"{len(self.add)} added, {len(self.change)} changed, {len(self.remove)} removed"


@dataclass(frozen=True)
class SyncChange:
    """One package a sync adds, removes or changes: `pip:<name>` for a wheel; `before`/`after` are `version build`
    (a wheel's version), None for a package not there before or after."""

    name: str
    before: str | None
    after: str | None

    def line(self) -> str:
        """`+ scipy 1.14.0 py311_0`, `- pandas 2.2.2 py311_0`, `~ numpy 2.0.1 py311_0 -> 1.26.4 py311_0`."""
        name = f"{self.name[4:]} (pip)" if self.name.startswith("pip:") else self.name
        if self.before is None:
            return f"+ {name} {self.after}"
        if self.after is None:
            return f"- {name} {self.before}"
        if self.before == self.after:
            return f"~ {name} {self.after} (linked again)"
        return f"~ {name} {self.before} -> {self.after}"


@dataclass(frozen=True)
class SyncReport:
    """What a sync did."""

    prefix: Path
    platform: str
    plan: SyncPlan
    fetched: int
    seconds: float
    changes: tuple[SyncChange, ...] = ()


def _name(p: LockedDependency) -> str:
    return p.name if p.manager == "conda" else f"pip:{p.name}"


def _own_file(path: Path, what: str) -> None:
    """Refuse a record that is not a plain file of the prefix: a symlink (a sync would rewrite and chmod what it points
    to, perhaps another environment's record), a FIFO (reading it would wait forever), a directory."""
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        return
    kind = f"a symlink to {os.readlink(path)}" if stat.S_ISLNK(st.st_mode) else "not a regular file"
    raise InstallError(f"{path}: the {what} is {kind}", hint="a record must be the prefix's own file: remove it, then install again")


def installed_packages(prefix: Path, interrupted: bool = False) -> dict[str, tuple[str, Path]]:
    """Every package in the prefix: name (pip: `pip:<name>`) -> (archive sha256, record file).

    Every record must be a plain file in a directory of the prefix (not reached through a symlink). After an
    interrupted sync (`interrupted`), a conda-meta record that does not read is that sync's, cut short (py-rattler
    renames its record into place even when the disk filled): it is removed, and its package linked again."""
    for directory in (prefix / "conda-meta", prefix / PIP_RECORDS.parent, prefix / PIP_RECORDS):
        if directory.is_symlink():
            raise InstallError(
                f"{directory} is a symlink (to {os.readlink(directory)})",
                hint="it must be the prefix's own directory: remove it, then install again",
            )
    out: dict[str, tuple[str, Path]] = {}
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        _own_file(meta, "conda-meta record")
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
            out[str(record["name"])] = (str(record.get("sha256") or ""), meta)
        except (OSError, ValueError, KeyError, TypeError):
            if interrupted:
                meta.unlink(missing_ok=True)
                continue
            raise InstallError(
                f"{meta}: unreadable conda-meta record", hint="repair or remove the environment, then install again"
            ) from None
    for meta in sorted((prefix / PIP_RECORDS).glob("*.json")):
        _own_file(meta, "pip record")
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
            out[f"pip:{record['name']}"] = (str(record.get("sha256") or ""), meta)
        except (OSError, ValueError, KeyError, TypeError):
            if interrupted:  # (cut short as it was written: its wheel's files are in the sync's journal)
                meta.unlink(missing_ok=True)
                continue
            raise InstallError(f"{meta}: unreadable pip record", hint="repair or remove the environment, then install again") from None
    return out


# What an install or sync that was killed (SIGKILL, the OOM killer) can leave in a prefix, by the names their writers
# give them: envkit's records written beside their place, and py-rattler's link-time probes and record temp files.
_TEMP_NAMES = (
    ("conda-meta", re.compile(r"\..+\.json\.\d+\.tmp|prefix_record_\w+")),
    ("conda-meta/envkit", re.compile(r"\.conda-lock\.yml\.\d+\.tmp|\.(installed|prefix)\.\w+")),
    (".", re.compile(r"\.refprobe-[\w-]+|symtest_[\w-]+")),
)


def _sweep_temp_files(prefix: Path) -> None:
    """Remove what an install or sync of this prefix that was killed left (no sync runs now: the prefix is locked);
    `verify` called them files no package installs, and no install removed them."""
    for directory, names in _TEMP_NAMES:
        try:
            entries = list(os.scandir(prefix / directory))
        except OSError:
            continue
        for entry in entries:
            if names.fullmatch(entry.name):
                remove_entry(entry)


def plan_sync(wanted: list[LockedDependency], installed: dict[str, tuple[str, Path]]) -> SyncPlan:
    """What to add, remove and change so that `installed` matches `wanted`."""
    want = {_name(p): (p.hash.sha256 or "").lower() for p in wanted}
    add = sorted(n for n in want if n not in installed)
    remove = sorted(n for n in installed if n not in want)
    change = sorted(n for n in want if n in installed and installed[n][0] != want[n])
    return SyncPlan(tuple(add), tuple(remove), tuple(change))


def _installed_version(record_path: Path) -> str:
    """`version build` of a conda-meta record (a pip record's version), or `?` if it does not say."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        return " ".join(str(record[key]) for key in ("version", "build") if record.get(key)) or "?"
    except (OSError, ValueError, TypeError, AttributeError):
        return "?"


def describe_plan(plan: SyncPlan, wanted: list[LockedDependency], installed: dict[str, tuple[str, Path]]) -> tuple[SyncChange, ...]:
    """The packages `plan` adds, changes and removes, by name, with the versions before (from the prefix's records) and
    after (from the lock)."""
    locked = {_name(p): " ".join(filter(None, (p.version, p.build if p.manager == "conda" else ""))) for p in wanted}
    before = {name: _installed_version(installed[name][1]) for name in (*plan.change, *plan.remove)}
    changes = [SyncChange(n, None, locked[n]) for n in plan.add]
    changes += [SyncChange(n, before[n], locked[n]) for n in plan.change]
    changes += [SyncChange(n, before[n], None) for n in plan.remove]
    return tuple(sorted(changes, key=lambda c: (c.name.startswith("pip:"), c.name)))


def _recorded_entries(record_path: Path) -> list[dict[str, str]]:
    """The entries (`_path` relative to the prefix, and `path_type`, `original_path` where the record has them) a
    conda-meta or envkit pip record says its package installed."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        entries = record.get("paths_data", {}).get("paths") or record.get("files") or []
        out = [
            {k: str(v) for k, v in e.items() if k in ("_path", "path_type", "original_path")} if isinstance(e, dict) else {"_path": str(e)}
            for e in entries
        ]
        if not all("_path" in entry for entry in out):
            raise KeyError("_path")
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InstallError(
            f"{record_path}: unreadable package record", hint="repair or remove the environment, then install again"
        ) from None


def _paths(entries: list[dict[str, str]]) -> list[str]:
    """The paths (relative to the prefix) of a record's entries (`_recorded_entries`)."""
    return [entry["_path"] for entry in entries]


def check_original_paths(installed: dict[str, tuple[str, Path]], recorded: dict[str, list[dict[str, str]]]) -> None:
    """InstallError for a conda-meta record whose `original_path` (where a clobbered file belongs, which py-rattler
    moves it back to) is not a plain path inside the prefix: absolute or with `..` (py-rattler panicked on one).
    `recorded`: each installed package's record entries."""
    for name, (_, record_path) in installed.items():
        if name.startswith("pip:"):
            continue
        for entry in recorded[name]:
            original = entry.get("original_path")
            if original is not None and (not original or original.startswith("/") or ".." in original.split("/")):
                raise InstallError(
                    f"{record_path}: names {original!r} as a file's original path, outside the prefix",
                    hint="repair or remove that record (or the environment), then install again; nothing was changed",
                )


def check_files_are_not_directories(prefix: Path, going: dict[str, list[dict[str, str]]]) -> None:
    """InstallError when a file or link a package being unlinked (`going`: its record entries) installed is now a
    directory (a user's): py-rattler would fail in the middle of the sync, every time."""
    for name, entries in going.items():
        for entry in entries:
            path = prefix / entry.get("_path", "")
            if entry.get("path_type") != "directory" and not path.is_symlink() and path.is_dir() and path != prefix:
                raise InstallError(
                    f"{path} is a directory, where {name} installed a file",
                    hint="move it out of the prefix (it is not the package's), then install again; nothing was changed",
                )


def check_nothing_unowned_is_overwritten(
    prefix: Path, linking: dict[str, list[str]], recorded: dict[str, list[dict[str, str]]], exempt: set[str]
) -> None:
    """InstallError when a conda package to link would overwrite a file no installed package's record lists (a
    user's, another tool's; `recorded`: each installed package's record entries): py-rattler overwrites it without a
    word (conda warns; a wheel's install refuses). `exempt`: paths an interrupted sync made (its journal's), which are
    its own."""
    there = {path: name for name, paths in linking.items() for path in paths if path not in exempt and os.path.lexists(prefix / path)}
    if there:
        owned = {entry["_path"] for entries in recorded.values() for entry in entries}
        there = {path: name for path, name in there.items() if path not in owned}
    if not there:
        return
    path, name = min(there.items())
    more = f" (and {len(there) - 1} more)" if len(there) > 1 else ""
    raise InstallError(
        f"{prefix / path} is in the prefix but in no package's record: installing {name} would overwrite it{more}",
        hint="move it out of the prefix (it is yours, or another tool's), then install again; nothing was changed",
    )


def _remove_bytecode(prefix: Path, sources: Iterable[str]) -> None:
    """Remove what python compiled from `sources` (`.py` paths) that are no longer there (their package unlinked or
    moved them), and the `__pycache__` directories that leaves empty: no record names them, and verify called them
    the user's files for ever."""
    emptied = set()
    for source in sources:
        path = prefix / source
        if not source.endswith(".py") or path.exists() or path.is_symlink():
            continue
        cache = path.parent / "__pycache__"
        if cache.is_symlink() or not cache.is_dir():
            continue
        for compiled in cache.glob(f"{path.stem}.*.pyc"):
            compiled.unlink(missing_ok=True)
            emptied.add(cache)
    for directory in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        while directory != prefix and directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent


def check_paths_stay_inside(prefix: Path, paths: Iterable[str]) -> None:
    """InstallError unless every path's directory, resolved, is inside `prefix`: a directory a user replaced by a
    symlink out of the prefix would have a sync delete or write files there."""
    root = os.path.realpath(prefix)
    seen: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        if parent in seen:
            continue
        seen.add(parent)
        real = os.path.realpath(prefix / parent)
        if real != root and not real.startswith(root + os.sep):
            steps = [prefix / Path(*Path(parent).parts[: i + 1]) for i in range(len(Path(parent).parts))]
            link = next((step for step in steps if step.is_symlink()), None)
            hint = "replace it with a directory (or remove the prefix and install again); nothing was changed"
            if link is None:  # a record naming `../` (written by hand or by a hostile tool)
                raise InstallError(
                    f"{prefix}: a package record names {path}, outside the prefix",
                    hint="repair or remove that record (or the environment), then install again; nothing was changed",
                )
            raise InstallError(
                f"{link} is a symlink out of the prefix (to {os.path.realpath(link)}): envkit does not remove or write files through it",
                hint=hint,
            )


def _remove_pip(prefix: Path, record_path: Path) -> None:
    record = json.loads(record_path.read_text(encoding="utf-8"))
    parents = set()
    for entry in record.get("files", []):
        path = prefix / entry["_path"]
        if path.is_symlink() or path.is_file():
            path.unlink()
            parents.add(path.parent)
            if path.suffix == ".py":  # what python compiled from it (it made these; no record names them)
                for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
                    cached.unlink()
                    parents.add(cached.parent)
    record_path.unlink()
    if not any(record_path.parent.iterdir()):  # the last wheel gone: no empty records directory left behind
        record_path.parent.rmdir()
    # Empty directories the wheel left (its dist-info, package dirs), deepest first.
    for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while directory != prefix and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent


def _with_absolute_url(record: object, lock_dir: Path) -> dict[str, object] | None:
    """A conda-meta record that keeps a lock's relative URL, with the absolute one (relative to the lock) py-rattler
    needs; None for any other record."""
    url = record.get("url") if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(url, str) or "://" in url:
        return None
    return {**record, "url": (lock_dir / url).resolve().as_uri()}


def _prefix_record(path: Path, lock_dir: Path) -> PrefixRecord:
    """py-rattler's record of an installed conda package (to unlink it), read before the prefix changes: one with a
    relative URL is read from a copy with the absolute one (`_with_absolute_url`)."""
    try:
        absolute = _with_absolute_url(json.loads(path.read_text(encoding="utf-8")), lock_dir)
        if absolute is not None:
            with tempfile.TemporaryDirectory(prefix="envkit-record-") as scratch:
                copy = Path(scratch) / path.name
                copy.write_text(json.dumps(absolute), encoding="utf-8")
                return PrefixRecord.from_path(copy)
        return PrefixRecord.from_path(path)
    except Exception as exc:  # py-rattler raises its own types for a record it cannot read
        raise InstallError(
            f"{path}: a conda-meta record py-rattler cannot read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
            hint="repair or remove that record (or the environment), then install again",
        ) from None


def _absolute_urls(prefix: Path, lock_dir: Path) -> None:
    """Give conda-meta records that keep a lock's relative URL an absolute one (relative to the lock), as py-rattler
    reads the prefix's records when it links; `normalize_conda_meta` makes them the lock's again afterwards."""
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        absolute = _with_absolute_url(json.loads(path.read_text(encoding="utf-8")), lock_dir)
        if absolute is not None:
            replace_with(path, (json.dumps(absolute, sort_keys=True) + "\n").encode("utf-8"))


def sync_environment(
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    prefix: Path,
    cache_dir: Path | None = None,
    settings: ChannelSettings | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> SyncReport:
    """Bring an existing prefix to the lock; refuse a prefix envkit did not create unless `force`.

    An empty directory (a volume, a directory made for the environment, one whose parent is not
    writable) is installed into in place, keeping its owner and mode: the lock's copy goes in first,
    so an interrupted install is envkit's and the next install finishes it.
    One sync (or install) of a prefix at a time: a second waits for the first, then compares with what it left."""
    prefix = absolute_path(prefix)
    check_prefix_path(prefix)
    with directory_lock(prefix, waiting_for_another_install(progress or SILENT, prefix, prefix)):
        if empty_directory(prefix):
            try:
                _write_lock_copy(lockfile_path, prefix)
            except BaseException as exc:  # (a full disk, a signal) the prefix was empty: it is again, for the next install
                shutil.rmtree(prefix / "conda-meta", ignore_errors=True)
                if isinstance(exc, OSError):
                    raise write_error(prefix / LOCK_COPY, exc, "environment", "--prefix") from None
                raise
        elif not (prefix / LOCK_COPY).is_file() and not force:
            if prefix.is_symlink():
                raise InstallError(
                    f"{prefix} is a symlink (to {os.readlink(prefix)})",
                    hint="install into the directory it points to, or into a new prefix: files carry the path they are installed for",
                )
            raise InstallError(
                f"{prefix} already exists and was not created by envkit (no {LOCK_COPY})",
                hint="choose a new or empty prefix, or pass --force to bring this one to the lock",
            )
        try:
            return _sync(lockfile_path, lockfile, platform, prefix, cache_dir_or_default(cache_dir), settings, progress)
        except OSError as exc:  # the prefix's own writes (a read-only mount, a full disk): named, with what to change
            if exc.errno not in _WRITE_ERRORS or not exc.filename or not Path(exc.filename).is_relative_to(prefix):
                raise
            raise write_error(Path(exc.filename), exc, "environment", "--prefix") from None


def empty_directory(path: Path) -> bool:
    """Whether `path` is a directory (not a symlink to one) with nothing in it."""
    if path.is_symlink() or not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _sync(
    lockfile_path: Path,
    lockfile: Lockfile,
    platform: str,
    prefix: Path,
    cache_dir: Path,
    settings: ChannelSettings | None,
    progress: Progress | None,
) -> SyncReport:
    started = time.perf_counter()
    state = read_state(prefix)
    identity = read_identity(prefix)  # (kept while a sync runs: an interrupted one still knows what the prefix is for)
    if identity is not None and identity.platform != platform:
        raise InstallError(
            f"{prefix} holds an environment for {identity.platform}; this install is for {platform}",
            hint=f"pass -p {identity.platform} to bring it to the lock, or install {platform} into a new prefix",
        )
    if identity is not None and identity.target_prefix != str(prefix):
        raise InstallError(
            f"{prefix} holds an environment made for {identity.target_prefix} (moved or reached through a symlink?)",
            hint=f"install into {identity.target_prefix}, or into a new prefix (files carry the prefix they were installed for)",
        )
    packages = conda_packages(lockfile, platform)
    wheels = pip_packages(lockfile, platform)
    # An envkit prefix without its installed record: a sync was interrupted (not a --force over someone else's).
    interrupted = state is None and identity is not None
    _sweep_temp_files(prefix)
    installed = installed_packages(prefix, interrupted)
    # Each record's entries, read once (what the sync checks, unlinks and notes): now after an interruption, else once
    # there is something to do.
    recorded = {name: _recorded_entries(path) for name, (_, path) in installed.items()} if interrupted else None
    damaged, journaled = _after_interruption(prefix, recorded) if recorded is not None else (set(), None)
    if not interrupted:
        end_journal(prefix)  # (one left by a sync stopped before it changed anything)
    plan = plan_sync(packages + wheels, installed)
    # Not envkit's (--force): its conda packages are linked again as new ones, so that their records are what an install
    # of the lock writes (another tool's records differ: verify compared them, and install said up to date).
    same = {_name(p) for p in packages + wheels if _name(p) in installed and installed[_name(p)][0] == (p.hash.sha256 or "").lower()}
    adopted = {n for n in same if not n.startswith("pip:")} if state is None and identity is None else set()
    # ... and so are the locked ones an interrupted sync left with some of their files gone.
    relinked = adopted | (same & damaged)
    plan = SyncPlan(plan.add, plan.remove, tuple(sorted({*plan.change, *relinked})))
    changes = describe_plan(plan, packages + wheels, installed)  # (read before the records change)
    lock_sha = file_sha256(lockfile_path)
    if plan.nothing:
        if state is None or state.lock_sha256 != lock_sha:
            # A sync was interrupted (or --force): records it linked may not be the lock's yet; or the lock moved its
            # packages (a mirror, a renamed channel or index) with the same sha256s: the records name their new URLs.
            normalize_conda_meta(prefix, packages)
            _relocate_pip_records(prefix, wheels)
        if state is None or state.lock_sha256 != lock_sha:
            _finish(lockfile_path, prefix, platform, lock_sha)
        end_journal(prefix)
        return SyncReport(prefix, platform, plan, 0, time.perf_counter() - started, changes)
    touched = set(plan.add) | set(plan.change)
    conda_touched = [p for p in packages if p.name in touched]
    python_changed = "python" in touched or "python" in plan.remove
    wheel_touched = [w for w in wheels if _name(w) in touched or (python_changed and _name(w) in installed)]
    facts = lockfile.envkit.for_platform(platform) if lockfile.envkit else None
    indexes = facts.pip_indexes if facts else ()
    hosts = lock_hosts(lockfile, indexes)
    report = fetch_packages(
        conda_touched + wheel_touched,
        cache_dir,
        settings,
        pip_indexes=indexes,
        allowed_hosts=hosts,
        progress=progress,
        step=f"download {platform}",
    )
    fetched = {f.locked.name: f for f in report.packages if f.locked.manager == "conda"}
    every = [package_info(f, cache_dir) for f in fetched.values()]  # every conda package's info, for the clobbers
    records = [repodata_record(f, info) for f, info in zip(fetched.values(), every, strict=True)]
    # What is new is checked like a fresh install's archives, before anything in the prefix changes.
    check_archives(list(fetched.values()))
    # Unchanged packages: records from their cached info (fetched only when the info is not cached).
    infos = PackageInfoCache(cache_dir)
    unchanged = [p for p in packages if p.name not in fetched]
    known = {p.name: infos.get((p.hash.sha256 or "").lower()) for p in unchanged}
    lacking = [p for p in unchanged if known[p.name] is None]
    extra: dict[str, FetchedPackage] = (
        {f.locked.name: f for f in fetch_packages(lacking, cache_dir, settings, allowed_hosts=hosts).packages} if lacking else {}
    )
    for p in unchanged:
        info = known[p.name]
        if info is None:
            info = package_info(extra[p.name], cache_dir)
            records.append(repodata_record(extra[p.name], info))
        else:
            file_name = p.url.rsplit("/", 1)[-1]
            records.append(record_from_info(info, p, file_name, package_path(cache_dir, info.sha256, file_name).as_uri()))
        every.append(info)
    # A path one package installs as a file and another as a directory: refused before the prefix changes.
    environment_clobbers(every, platform)
    # No file is removed or written through a directory a user replaced by a symlink out of the prefix.
    going = [n for n in [*plan.remove, *plan.change, *(_name(w) for w in wheel_touched)] if n in installed]  # (unlinked or removed)
    if recorded is None:
        recorded = {name: _recorded_entries(path) for name, (_, path) in installed.items()}
    check_paths_stay_inside(prefix, (path for name in going for path in _paths(recorded[name])))
    check_paths_stay_inside(prefix, (path for info in every if info.name in touched for path in info.paths))
    check_original_paths(installed, recorded)
    check_files_are_not_directories(prefix, {name: recorded[name] for name in going if not name.startswith("pip:")})
    # The sources python may have compiled that this sync may unlink: the packages going, and with a new python every
    # noarch: python package (relinked into the new site-packages).
    unlinked = [name for name in installed if not name.startswith("pip:") and (name in going or python_changed)]
    sources = [path for name in unlinked for path in _paths(recorded[name]) if path.endswith(".py")]
    prefix_records = [
        _prefix_record(path, lockfile_path.parent)
        for name, (_, path) in installed.items()
        if not name.startswith("pip:") and name not in relinked
    ]
    python_info = next((info for info in every if info.name == "python"), None)
    target = python_target(python_info.version, platform, python_info.python_site_packages_path) if python_info else None
    linking = {info.name: _paths_to_link(info, target) for info in every if info.name in touched}
    if not interrupted or journaled is not None:  # (what an interrupted sync made is its own: journaled, or no journal)
        check_nothing_unowned_is_overwritten(prefix, linking, recorded, journaled or set())
    # Everything is fetched and checked: from here on the prefix changes, so the paths it will make are noted, then its
    # record of what is installed goes (an interrupted sync is then redone in full, and what it made removed).
    unlinking = [path for name in going for path in _paths(recorded[name])]
    start_journal(prefix, (path for paths in linking.values() for path in paths), unlinking)
    clear_state(prefix)
    _absolute_urls(prefix, lockfile_path.parent)
    # pip first (its files sit in python's site-packages), then conda.
    for name in going:
        if name.startswith("pip:") and installed[name][1].exists():
            _remove_pip(prefix, installed[name][1])
    link_packages(records, prefix, cache_dir, platform, installed=prefix_records)
    _remove_bytecode(prefix, sources)
    normalize_conda_meta(prefix, packages)
    _relocate_pip_records(prefix, [w for w in wheels if w not in wheel_touched])
    if wheel_touched:
        python = next((p.version for p in packages if p.name == "python"), "")
        cached = {f.locked.name: f for f in report.packages if f.locked.manager == "pip"}
        to_install = [WheelToInstall(w.name, w.version, w.locked_url, w.hash.sha256 or "", cached[w.name].archive) for w in wheel_touched]
        install_wheels(to_install, prefix, str(prefix), platform, python, noted=JournalWriter(prefix).note)
    _finish(lockfile_path, prefix, platform, lock_sha)
    end_journal(prefix)
    return SyncReport(prefix, platform, plan, len(report.packages), time.perf_counter() - started, changes)


def _after_interruption(prefix: Path, recorded: dict[str, list[dict[str, str]]]) -> tuple[set[str], set[str] | None]:
    """After an interrupted sync (`recorded`: each installed package's record entries): what it made that no record
    names is removed (its journal: conda_envkit.sync_journal). The packages whose record outlived some of their files
    (py-rattler and the wheel remover delete the record last), to be linked again; and the paths the journal names as
    made (None without one)."""
    journaled = remove_leftovers(prefix, {path for entries in recorded.values() for path in _paths(entries)})
    return {name for name, entries in recorded.items() if not all(os.path.lexists(prefix / rel) for rel in _paths(entries))}, journaled


def _paths_to_link(info: PackageInfo, target: PythonTarget | None) -> list[str]:
    """Where a conda package puts its files in the prefix (a noarch: python package's relocated for the environment's
    python `target`, with its entry points), as the sync's journal notes them."""
    if info.noarch == "python" and target is not None:
        relocated = [moved for path in info.paths if (moved := target.relocated(path)) is not None]
        return relocated + [f"bin/{point.command}" for text in info.entry_points if (point := parse_entry_point(text)) is not None]
    return list(info.paths)


def _relocate_pip_records(prefix: Path, wheels: list[LockedDependency]) -> None:
    """Give the pip records of `wheels` (installed already: same name and sha256) the URL the lock has for them now."""
    by_name = {w.name: w for w in wheels}
    for path in sorted((prefix / PIP_RECORDS).glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        locked = by_name.get(str(record.get("name")))
        if locked is not None and record.get("sha256") == locked.hash.sha256 and record.get("url") != locked.locked_url:
            data = (json.dumps({**record, "url": locked.locked_url}, sort_keys=True) + "\n").encode("utf-8")
            replace_with(path, data, path.stat().st_mode & 0o777)  # (its mode as the install gave it)


def _finish(lockfile_path: Path, prefix: Path, platform: str, lock_sha: str) -> None:
    with contextlib.suppress(OSError):  # no wheel left (an interrupted wheel install made it): no empty records directory
        (prefix / PIP_RECORDS).rmdir()
    _write_lock_copy(lockfile_path, prefix)
    write_state(prefix, state_from_prefix(prefix, platform, str(prefix), lock_sha))


def _write_lock_copy(lockfile_path: Path, prefix: Path) -> None:
    copy = prefix / LOCK_COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    replace_with(copy, lockfile_path.read_bytes())
