"""Whether a lock may be stale against the environment files it was made from, told from file times alone.

`envkit install` warns of a lock its spec has moved past (conda_envkit.freshness), but that check reads the spec
and loads the solver (~0.2 s), more than an install with nothing to do may take. This is its first look: only an
environment file changed after the lock was written (or one it cannot judge) sends it to the full check. A lock
rewritten after its spec, as `envkit lock` writes it, is not checked again; nor is one whose spec was edited and
then the lock touched, which `envkit lock --check` still finds. Nothing here reads more than the lock's head.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from conda_envkit.files import NotRegularFile, open_regular_file

_HEAD_BYTES = 64 << 10  # metadata comes first in a lock (envkit's and conda-lock's); its sources are in there
# A source as envkit and conda-lock write it: a plain YAML scalar of a relative path. Anything else (quoted, flow
# style) is left to the full check.
_PLAIN_SOURCE = re.compile(r"[\w.][\w ./+-]*")


def sources_newer_than_lock(lock_path: Path) -> bool:
    """Whether an environment file the lock names (`metadata.sources`) was modified after the lock was, or cannot be
    judged from its time (not there, outside the lock's directory, not read from the lock's head as written): then
    the lock is worth checking against its spec. False when every one is older than the lock, and for a lock that is
    no regular file."""
    try:
        with open_regular_file(lock_path) as f:
            head = f.read(_HEAD_BYTES)
            lock_time = os.fstat(f.fileno()).st_mtime_ns
    except NotRegularFile:  # (a pipe, `--lockfile <(git show …)`: no time to judge, no spec beside it, and what is read here
        return False  # would be gone for the install; a FIFO nobody writes is not waited on)
    except OSError:
        return True
    lines = head.decode("utf-8", "replace").split("\n")
    lines = lines[: lines.index("package:")] if "package:" in lines else lines
    sources = _listed_sources(lines)
    if not sources:
        return True
    root = lock_path.resolve().parent
    for source in sources:
        path = (root / source).resolve()
        try:
            if not path.is_relative_to(root) or not path.is_file() or path.stat().st_mtime_ns > lock_time:
                return True
        except OSError:
            return True
    return False


def _listed_sources(lines: list[str]) -> list[str]:
    """The `  sources:` block list of a lock's metadata lines (empty if it is not there as envkit writes it)."""
    try:
        start = lines.index("  sources:")
    except ValueError:
        return []
    sources = []
    for line in lines[start + 1 :]:
        if not line.startswith("  - "):
            break
        value = line[4:].rstrip("\r")
        if not _PLAIN_SOURCE.fullmatch(value):
            return []
        sources.append(value)
    return sources
