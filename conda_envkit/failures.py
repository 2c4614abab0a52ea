"""Failures that are the machine's state, not bad input and not a bug: a full disk, too many open files, too little
memory, a file name that is not UTF-8. Met anywhere (in envkit, py-rattler, a library), each is one `error:` line and
a hint, exit 2, like an EnvkitError; anything else stays a traceback (a bug to report).

Imported before a command runs: with no file descriptor or memory left, importing it then would fail too.
"""

from __future__ import annotations

import errno
from pathlib import Path

# A full disk, an exhausted quota, a file size limit, a read-only filesystem.
STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_PLACES = "the cache (--cache-dir, $ENVKIT_CACHE_DIR) and outputs"
# Too many open files, too little memory: limits of the machine or of `ulimit`.
_RESOURCE_HINTS = {
    errno.EMFILE: "raise the limit of open files (`ulimit -n 4096`), or lower --jobs",
    errno.ENFILE: "the system's table of open files is full: close other programs, or raise fs.file-max",
    errno.ENOMEM: "the machine (or a `ulimit -v`, or a container's memory limit) has too little memory: raise it, or lower --jobs",
}
_OWN_FILES = str(Path(__file__).resolve().parent)


def machine_failure(exc: BaseException) -> tuple[str, str] | None:
    """(message, hint) for a failure of the machine's state or limits; None for anything else."""
    if isinstance(exc, OSError):
        # A module envkit was importing when the limit hit is no file of the user's: not named.
        where = f"{exc.filename}: " if exc.filename and not str(exc.filename).startswith(_OWN_FILES) else ""
        if exc.errno in _RESOURCE_HINTS:
            return f"{where}{exc.strerror}", _RESOURCE_HINTS[exc.errno]
        if exc.errno in STORAGE_ERRORS:
            # A write envkit does not name itself (most do: conda_envkit.files.write_error): still the disk's error.
            if exc.errno == errno.EROFS:
                return f"{where}cannot write ({exc.strerror})", f"that filesystem is mounted read-only: write {_PLACES} elsewhere"
            return f"{where}cannot write ({exc.strerror})", f"free space (or raise the quota or file size limit) where {_PLACES} are"
        return None
    if isinstance(exc, MemoryError):
        return "out of memory", _RESOURCE_HINTS[errno.ENOMEM]
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return "cannot start a thread (a process or memory limit)", _RESOURCE_HINTS[errno.ENOMEM]
    if isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        # A name with bytes that are not UTF-8, as Python keeps them (surrogate escapes).
        around = exc.object[max(0, exc.start - 40) : exc.end + 40]
        shown = around.encode("utf-8", "backslashreplace").decode()
        return (
            f"a path or name is not valid UTF-8: …{shown}…",
            "envkit and py-rattler need UTF-8 file names: rename or move it (the project directory, a channel or prefix path)",
        )
    return None
