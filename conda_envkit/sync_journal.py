"""The paths a sync is about to make or unlink in a prefix, kept until it ends, so that the next sync can remove what
an interrupted one made and no record names.

py-rattler links a package's files before it writes the package's record (and removes a package's record before
its directories), and a wheel's files come before its record too: a sync killed (SIGKILL, the OOM killer, a CI
timeout) or stopped by Ctrl-C in between leaves files that no record lists, and emptied directories. The next
sync of that prefix finds them here. The journal is written before the prefix changes (the paths of the conda
packages to link, and those of the packages to unlink) and grows as wheels write their files; it is removed once
the sync has written its installed record.

What is removed after an interruption is only what that sync made: a file or symlink the journal names as made,
that no record owns, inside the prefix (never through a link), whose inode changed since the journal began (a
link or a copy made then; a user's older file at that path is kept); and the empty directories on the way to a
path the journal names.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from conda_envkit.files import read_cache_entry, remove_path, replace_with

JOURNAL = PurePosixPath("conda-meta/envkit/sync-journal")
_HEADER = "envkit.sync-journal/2"
_SEPARATOR = b"\0"  # (a path may hold a newline)
_MAX_JOURNAL_BYTES = 256 << 20
MADE, UNLINKED = "+", "-"


def _encoded(kind: str, path: str) -> bytes:
    return f"{kind}{path}".encode("utf-8", "surrogateescape") + _SEPARATOR


def start_journal(prefix: Path, made: Iterable[str], unlinked: Iterable[str] = ()) -> None:
    """The journal of a sync that is about to change `prefix`: the paths (prefix-relative) it will make, but those that
    exist already (their owner's: a record's, or the user's), and those it will unlink."""
    new = sorted({p for p in made if not os.path.lexists(prefix / p)})
    target = prefix / JOURNAL
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_path(target)  # (a directory there, whoever made it, is no journal)
    header = f"{_HEADER} {time.time_ns()}".encode() + _SEPARATOR
    entries = [_encoded(MADE, p) for p in new] + [_encoded(UNLINKED, p) for p in sorted(set(unlinked))]
    replace_with(target, header + b"".join(entries))


class JournalWriter:
    """Appends the files a sync makes as it makes them (a wheel's), each before it is written to."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.path = prefix / JOURNAL

    def note(self, made: Path) -> None:
        with contextlib.suppress(ValueError, FileNotFoundError):  # (outside the prefix: the writer refuses it)
            rel = made.relative_to(self.prefix).as_posix()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
            try:
                os.write(fd, _encoded(MADE, rel))
            finally:
                os.close(fd)


def end_journal(prefix: Path) -> None:
    """The sync ended (its installed record is written), or never changed the prefix: nothing to remove later."""
    remove_path(prefix / JOURNAL)


def read_journal(prefix: Path) -> tuple[int, list[tuple[str, str]]] | None:
    """(when the journal began, in ns; its (kind, path) entries), each path plain and relative (anything else in it is
    skipped, never followed); None without a journal, or with one that does not read as one."""
    data = read_cache_entry(prefix / JOURNAL, _MAX_JOURNAL_BYTES)
    if not data:
        return None
    header, _, rest = data.partition(_SEPARATOR)
    name, _, began = header.decode("utf-8", "replace").partition(" ")
    if name != _HEADER or not began.isdigit():
        return None
    entries = []
    for raw in rest.split(_SEPARATOR):
        entry = raw.decode("utf-8", "surrogateescape")
        kind, path = entry[:1], entry[1:]
        parts = path.split("/")
        if kind in (MADE, UNLINKED) and path and not path.startswith("/") and not {"..", "", "."} & set(parts):
            entries.append((kind, path))
    return int(began), entries


def remove_leftovers(prefix: Path, owned: set[str]) -> set[str] | None:
    """Remove what an interrupted sync made that no record owns (`owned`: every recorded path), as the module says;
    return the paths the journal names as made (None without a journal: a sync from before journals)."""
    journal = read_journal(prefix)
    if journal is None:
        return None
    began, entries = journal
    root = os.path.realpath(prefix)
    for kind, path in entries:
        if kind != MADE or path in owned or path.startswith("conda-meta/"):
            continue
        target = prefix / path
        parent = os.path.realpath(target.parent)
        if parent != root and not parent.startswith(root + os.sep):
            continue
        with contextlib.suppress(OSError):
            st = target.lstat()
            if st.st_ctime_ns >= began and (target.is_symlink() or target.is_file()):
                target.unlink()
    _remove_emptied_directories(prefix, {path for _, path in entries})
    return {path for kind, path in entries if kind == MADE}


def _remove_emptied_directories(prefix: Path, paths: set[str]) -> None:
    """Remove the empty directories on the way to `paths` (deepest first): a sync's unlinking leaves them (py-rattler
    removes a record before its directories), so does a link cut short; a user's empty directory elsewhere stays."""
    directories = {str(PurePosixPath(p).parent) for p in paths}
    directories = {str(parent) for d in directories for parent in [PurePosixPath(d), *PurePosixPath(d).parents]} - {"."}
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        here = prefix / directory
        if here.is_symlink() or directory.split("/")[0] == "conda-meta":
            continue
        with contextlib.suppress(OSError):  # rmdir removes only an empty directory
            here.rmdir()
