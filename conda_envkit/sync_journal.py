"""The paths a sync is about to make in a prefix, kept until it ends, so that the next sync can remove what an
interrupted one made and no record names.

py-rattler links a package's files before it writes the package's record, and a wheel's files come before its
record too: a sync killed (SIGKILL, the OOM killer, a CI timeout) or stopped by Ctrl-C in between leaves files
that no record lists. The next sync of that prefix finds them here. The journal is written before the prefix
changes (the paths of the conda packages to link) and grows as wheels write their files; it is removed once the
sync has written its installed record. Only the paths it names, that no record owns, that are files or symlinks
(never followed) inside the prefix, are removed: a user's file is never named (paths that exist before the sync
are left out).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

JOURNAL = PurePosixPath("conda-meta/envkit/sync-journal")
_SEPARATOR = b"\0"  # (a path may hold a newline)
_MAX_JOURNAL_BYTES = 256 << 20


def _encoded(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape") + _SEPARATOR


def start_journal(prefix: Path, paths: Iterable[str]) -> None:
    """The journal of a sync that is about to change `prefix`: `paths` (prefix-relative) it will make, but those that
    exist already (their owner's: a record's, or the user's)."""
    from conda_envkit.files import replace_with

    new = sorted({p for p in paths if not os.path.lexists(prefix / p)})
    target = prefix / JOURNAL
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_with(target, b"".join(_encoded(p) for p in new))


class JournalWriter:
    """Appends the files a sync makes as it makes them (a wheel's), each before it is written to."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.path = prefix / JOURNAL

    def note(self, made: Path) -> None:
        with contextlib.suppress(ValueError):  # (a path outside the prefix is refused by the writer itself)
            rel = made.relative_to(self.prefix).as_posix()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                os.write(fd, _encoded(rel))
            finally:
                os.close(fd)


def end_journal(prefix: Path) -> None:
    """The sync ended (its installed record is written), or never changed the prefix: nothing to remove later."""
    with contextlib.suppress(FileNotFoundError):
        (prefix / JOURNAL).unlink()


def journaled_paths(prefix: Path) -> list[str]:
    """The paths the journal names, each a plain relative path (anything else in it is skipped, never followed)."""
    from conda_envkit.files import read_cache_entry

    data = read_cache_entry(prefix / JOURNAL, _MAX_JOURNAL_BYTES) or b""
    out = []
    for raw in data.split(_SEPARATOR):
        path = raw.decode("utf-8", "surrogateescape")
        parts = path.split("/")
        if path and not path.startswith("/") and ".." not in parts and "" not in parts and "." not in parts:
            out.append(path)
    return out


def remove_leftovers(prefix: Path, owned: set[str]) -> int:
    """Remove the files and symlinks the journal names that no record owns (`owned`: every recorded path) and that lie
    inside the prefix (their directory resolved in it); how many."""
    root = os.path.realpath(prefix)
    removed = 0
    for path in journaled_paths(prefix):
        if path in owned or path.startswith("conda-meta/"):
            continue
        target = prefix / path
        parent = os.path.realpath(target.parent)
        if parent != root and not parent.startswith(root + os.sep):
            continue
        with contextlib.suppress(OSError):
            if target.is_symlink() or target.is_file():
                target.unlink()
                removed += 1
    return removed
