"""Writing outputs: atomically, with the umask's modes, and with errors that name the path.

Every file envkit writes for a user (locks, rendered files, records, build contexts,
prefixes, images) is made beside its destination and renamed into place, so a
failure leaves the old content or nothing. Temp files start 0600 and temp
directories 0700; the finished output gets the modes any other tool would give it
(0666 / 0777 minus the umask).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, TypeVar

from conda_envkit.errors import EnvkitError


class WriteError(EnvkitError):
    """An output that cannot be written: read-only directory, full disk, missing parent."""


def umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)  # no reader: set and restore (single-threaded at this point)
    os.umask(current)
    return current


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def check_output_file(path: Path, setting: str) -> None:
    """A WriteError if a file cannot be written at `path` (named by `setting`), found before the work that ends in
    writing it: `path` is a directory, the nearest existing directory above it is a file, or it is not writable.
    (Missing directories below it are created when the file is written.)"""
    if path.is_dir():
        raise WriteError(f"{setting} {path}: is a directory", hint=f"name a file in it, e.g. {setting} {path / path.name}.json")
    above = path.absolute().parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise WriteError(f"{setting} {path}: {above} is a file, not a directory", hint=f"change {setting}")
    if not os.access(above, os.W_OK | os.X_OK):
        raise WriteError(f"{setting} {path}: {above} is not writable", hint=f"make {above} writable, or change {setting}")


def write_error(path: Path, exc: OSError, what: str = "file", setting: str = "") -> WriteError:
    """A WriteError for `exc` raised while writing `path`, saying what to change."""
    reason, code = exc.strerror or str(exc), exc.errno
    shutil = sys.modules.get("shutil")  # not imported here: only a caller that copied trees can have its Error
    if shutil is not None and isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        # copytree collects (source, destination, "[Errno 28] No space left on device: ...") per file: the first says it.
        import re

        why = str(exc.args[0][0][-1])
        found = re.match(r"\[Errno (\d+)\] ([^:]+)", why)
        reason, code = (found[2], int(found[1])) if found else (why[:200], None)
    if code == errno.ENOSPC:
        hint = f"free space on the filesystem of {path.parent}"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"make {path.parent} writable" + (f", or change {setting}" if setting else ", or write elsewhere")
    elif code == errno.EISDIR:
        hint = "it is a directory: name a file" + (f" in {setting}" if setting else " in it, or another path")
    elif code == errno.ENOENT:
        hint = f"create {path.parent}" + (f", or change {setting}" if setting else ", or write elsewhere")
    elif code == errno.ENOTDIR:
        hint = f"a part of {path.parent} is a file, not a directory" + (f": change {setting}" if setting else ": write elsewhere")
    else:
        hint = f"check {path.parent}" + (f", or change {setting}" if setting else "")
    return WriteError(f"{path}: cannot write {what} ({reason})", hint=hint)


_T = TypeVar("_T")


class GuardedFile:
    """A binary file being written whose failures (a full disk, a quota, a file size limit) are `write_error`s
    naming it and what it is: never a traceback, and never blamed on the data being written.

    Opens `path` with `mode`, or wraps `file` (already open on `path`, e.g. from mkstemp)."""

    def __init__(self, path: Path, what: str, setting: str = "", mode: str = "wb", file: IO[bytes] | None = None) -> None:
        self.path, self.what, self.setting = path, what, setting
        self.file: IO[bytes] = file if file is not None else self._guarded(open, path, mode)

    def _guarded(self, call: Callable[..., _T], *args: object) -> _T:
        try:
            return call(*args)
        except OSError as exc:
            raise write_error(self.path, exc, self.what, self.setting) from None

    def write(self, data: bytes) -> int:
        return self._guarded(self.file.write, data)

    def flush(self) -> None:
        self._guarded(self.file.flush)

    def tell(self) -> int:
        return self.file.tell()

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self._guarded(self.file.close)  # the last buffered bytes are written here

    def __enter__(self) -> GuardedFile:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()
        else:  # already failing: that error is the one to report
            with contextlib.suppress(OSError):
                self.file.close()


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new 0600 file `.<name>.<random>.tmp` beside `path`, opened for writing: its descriptor and path.

    What tempfile.mkstemp does, without loading tempfile (and with it shutil, random, bz2 and
    lzma) on the start-up of every command that writes a lock.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _attempt in range(100):
        tmp = path.with_name(f".{path.name}.{owner_token()}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


class NotRegularFile(Exception):
    """A path `open_regular_file` found to be no regular file (a directory, a FIFO, a device)."""


def open_regular_file(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file (through symlinks): opening a FIFO nobody writes would wait
    for ever, and a device (/dev/zero) has no end, so neither is read. OSError if it cannot be opened at all."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


CACHE_ENTRY_CAP = 256 << 20  # no cache entry envkit writes (a sealed index, a marker) comes near this


def read_cache_entry(path: Path, cap: int = CACHE_ENTRY_CAP) -> bytes | None:
    """A cache entry's bytes, or None unless it is a regular file no bigger than `cap`, opened without following a
    symlink and without waiting on a FIFO: whoever else writes the cache cannot make a bake hang or read elsewhere."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def write_cache_entry(path: Path, document: object, what: str, setting: str = "") -> None:
    """`document` as JSON at `path`, a private cache entry (`write_private_file`)."""
    import json

    write_private_file(path, json.dumps(document, sort_keys=True).encode("utf-8"), what, setting)


def replace_entry(tmp: Path, target: Path) -> None:
    """Rename `tmp` over a cache entry: one that is a directory (made by whoever else writes the cache) is removed
    first, not reported as a failed write."""
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target.is_dir() and not target.is_symlink()):
            raise
        import shutil

        shutil.rmtree(target, ignore_errors=True)  # (rmtree follows no symlink out)
        os.replace(tmp, target)


def replace_with(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace the file at `path` with `data` (written beside it as `.NAME.<pid>.tmp`, then renamed over it: never
    written through a symlink), `mode` set if given. Nothing is left beside it if the write fails or a signal ends
    the command; an OSError is the caller's to name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_file(path: Path, data: bytes, what: str, setting: str = "") -> None:
    """`data` at `path`, private to this user (0600: made beside it, then renamed into place): a cache entry
    or marker. A failed write (a full disk) is a `write_error` naming `path`, and leaves no temp file behind."""
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        replace_entry(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc, what, setting) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_temp(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent, f".{path.name}.")  # what a killed write of this file left (its temp file, its backup)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _unchanged(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def write_files(outputs: list[tuple[Path, str | bytes]], what: str = "file", setting: str = "") -> list[bool]:
    """Write every `(path, content)` that changed, all or nothing; return which were written.

    All temp files are written first and renamed only when all exist, so a full disk
    or a read-only directory for the second file leaves the first one untouched; if
    a rename fails, the files already renamed get their old content back.
    """
    pending: list[tuple[Path, Path]] = []
    backups: dict[Path, Path | None] = {}  # None: there was no file to restore
    streams: list[tuple[Path, bytes]] = []
    written = []
    try:
        for path, content in outputs:
            data = content.encode("utf-8") if isinstance(content, str) else content
            if is_stream_target(path, what):
                streams.append((path, data))
                written.append(True)
                continue
            if _unchanged(path, data):
                written.append(False)
                continue
            try:
                pending.append((_write_temp(path, data), path))
            except OSError as exc:
                raise write_error(path, exc, what, setting) from None
            written.append(True)
        with signals_deferred():  # all renamed or none: a Ctrl-C waits the moment the renames take
            for tmp, path in pending:
                try:
                    backups[path] = _backup(path)
                    os.replace(tmp, path)
                except OSError as exc:
                    _restore(backups, path)
                    raise write_error(path, exc, what, setting) from None
        for path, data in streams:  # last: what a stream received cannot be taken back
            try:
                with open_stream(path, what, setting) as stream:
                    stream.write(data)
            except OSError as exc:
                raise write_error(path, exc, what, setting) from None
    finally:
        for tmp, _path in pending:
            tmp.unlink(missing_ok=True)
        for backup in backups.values():
            if backup is not None and backup.name.endswith(".bak"):
                backup.unlink(missing_ok=True)
    return written


def is_stream_target(path: Path, what: str) -> bool:
    """Whether `path` is, or links to, a character device or a FIFO (`-o /dev/stdout`): written through, not replaced.

    A rename onto it would replace the device node or the link with a regular file, which root
    may do to /dev/stdout or /dev/null.
    """
    import stat

    if _names_a_descriptor(path):
        return True  # /dev/stdout into a file (`> out.txt`): the link must stay, the file behind it be written
    try:
        st = path.stat()
    except OSError:
        return False
    mode = st.st_mode
    if stat.S_ISFIFO(mode):
        return True  # (opened by open_stream, which does not wait for a reader that never comes)
    if stat.S_ISCHR(mode):
        # A terminal or the null device (what /dev/stdout is when it is not a pipe), known by its device numbers; any
        # other device (/dev/kmsg, /dev/mem, /dev/zero, named by a symlink a repository holds as bake.json) is not
        # written to.
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if (major, minor) == (1, 3) or major in (4, 5) or 136 <= major <= 143:
            return True
        raise WriteError(
            f"{path}: is a device ({os.path.realpath(path)}), not a place for a {what}", hint="write to a file or to /dev/stdout"
        )
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        raise WriteError(f"{path}: is a device or socket, not a place for a {what}", hint="write to a file or to /dev/stdout")
    return False


def _names_a_descriptor(path: Path) -> bool:
    """Whether `path` is, or links through, an open file descriptor (/dev/stdout -> /proc/self/fd/1, /dev/fd/N):
    whatever that descriptor is (a regular file when the shell redirects), a rename onto the path would replace the
    link itself (as root, /dev/stdout), not write to it."""
    import re

    current, hops = str(path), 0
    while hops < 16:
        if re.match(r"/(proc/(self|\d+)|dev)/fd/\d+$", current):
            return True
        try:
            target = os.readlink(current)
        except OSError:
            return False
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
        hops += 1
    return False


def open_stream(path: Path, what: str, setting: str = "", create: bool = False) -> BinaryIO:
    """`path` (a FIFO, /dev/stdout: is_stream_target) opened to write through, without waiting for a reader: a FIFO
    nobody reads (a symlink a repository holds can name one) is an error, not a command that never ends. With
    `create`, a file appended to (made if missing, as $GITHUB_OUTPUT is written), whatever it is."""
    try:
        # O_APPEND: /dev/stdout redirected to a file (`>`, `>>`) is written after what is there, as the shell's own
        # descriptor would; a FIFO or a terminal does not care.
        flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o666)  # (the umask applies)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise WriteError(f"{path}: a FIFO nobody reads, not a place for a {what}", hint="write to a file, or read the FIFO") from None
        raise write_error(path, exc, what, setting) from None
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)  # then written as any file
    return os.fdopen(fd, "wb")


def _backup(path: Path) -> Path | None:
    # A hard link keeps the old content reachable while the new file replaces it.
    if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
        return path  # nothing to link; restoring means leaving it alone
    if not os.path.lexists(path):
        return None
    backup = path.with_name(f".{path.name}.{owner_token()}.bak")
    backup.unlink(missing_ok=True)
    try:
        os.link(path, backup)
    except OSError:  # a filesystem without hard links: a copy does the same job
        import shutil

        shutil.copy2(path, backup)
    return backup


def _restore(backups: dict[Path, Path | None], failed: Path) -> None:
    """Put back every output renamed before `failed` (best effort: this runs during an error)."""
    for path, backup in backups.items():
        if path == failed:
            continue
        with contextlib.suppress(OSError):
            if backup is None:
                path.unlink()
            elif backup != path:
                os.replace(backup, path)


def write_if_changed(path: Path, text: str | bytes, what: str = "file") -> bool:
    """Write `text` to `path` atomically unless it already holds it; return whether it wrote."""
    return write_files([(path, text)], what)[0]


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (they are delivered right after).

    For making a temporary directory and recording it where the cleanup will see it as
    one step: a signal between the two would leave the directory behind. Held twice: in this
    thread's signal mask, and by envkit's own handler (interrupts.signals_held), since another
    thread (py-rattler's, a pool's) may take the signal and Python then runs the handler here.
    """
    from conda_envkit.interrupts import signals_held

    held = {signal.SIGINT, signal.SIGTERM}
    with signals_held():
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def replace_directory(staging: Path, target: Path) -> None:
    """Put the complete directory `staging` at `target`, replacing the directory there (removed after): `target` is
    the old or the new one at every moment. Linux swaps the two in one step (renameat2 RENAME_EXCHANGE); elsewhere,
    or on a filesystem without it, the old one is moved aside and the new one in, with Ctrl-C and SIGTERM held
    between, and the old one put back if the second rename fails."""
    import shutil
    import tempfile

    if not os.path.lexists(target):
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # (it holds the old directory now)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    with signals_deferred():
        os.rename(target, aside / "old")
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(aside / "old", target)
            raise
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # (a libc without it: glibc < 2.28, musl < 1.2.4)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # the kernel or the filesystem cannot
        return False
    raise OSError(code, os.strerror(code), str(b))


def staging_dir(destination: Path, suffix: str = ".tmp", setting: str = "") -> Path:
    """A new empty directory beside `destination`, to be renamed onto it when complete.

    It gets the umask's directory mode, so the renamed result is not 0700.
    """
    import shutil
    import tempfile

    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(destination.parent, f".{destination.name}.")  # a killed command's staging directory
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.{owner_token()}.", suffix=suffix, dir=destination.parent))
    except OSError as exc:
        raise write_error(destination, exc, "directory", setting) from None
    try:
        staging.chmod(dir_mode())
    except BaseException as exc:
        # Interrupted (SIGINT/SIGTERM) or refused between creating and handing it over:
        # the caller never saw the directory, so it is removed here.
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(destination, exc, "directory", setting) from None
        raise
    return staging


def absolute_path(path: Path) -> Path:
    """`path` made absolute as conda and micromamba make a prefix absolute (os.path.abspath): `..` resolved by name,
    symlinks kept. Path.absolute keeps `..`, and `--prefix ../env` was written into the environment's files."""
    return Path(os.path.abspath(path))


def owner_token() -> str:
    """`<pid>@<host id>`: what a temp file's or directory's name carries, so that the next command can tell one
    whose process no longer runs on this machine (killed outright: SIGKILL, the out-of-memory killer, a CI
    timeout) from one in use, and remove it. The host id keeps a cache shared between machines (a network
    filesystem) or containers from judging another's processes."""
    return f"{os.getpid()}@{_host_id()}"


@functools.cache
def _host_id() -> str:
    """The machine's name and this process's PID namespace (containers sharing a cache and a host name may each
    have their own: a pid is only judged where it means that process)."""
    import zlib

    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{zlib.crc32(f'{os.uname().nodename} {namespace}'.encode('utf-8', 'surrogateescape')):08x}"


_OWNER = re.compile(r"\.(\d+)@([0-9a-f]{8})[.-]")


_SWEPT: dict[str, set[str]] = {}  # directory -> the prefixes it was swept for by this process


def remove_orphans(directory: Path, prefix: str) -> None:
    """Remove the entries of `directory` named `PREFIX...<pid>@<host id>...` (owner_token) whose process no longer runs
    on this machine: what a killed command left (a partial download, a staging directory, a temp file). Once per
    directory and prefix in a process, a prefix swept already covering the longer ones: a bake's thousands of temp
    files do not each list their directory."""
    swept = _SWEPT.setdefault(str(directory), set())
    if any(prefix.startswith(done) for done in swept):
        return
    swept.add(prefix)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        found = _OWNER.search(entry.name) if entry.name.startswith(prefix) else None
        if found is not None and found[2] == _host_id() and not _runs(int(found[1])):
            remove_entry(entry)


def remove_entry(entry: os.DirEntry[str]) -> None:
    """Remove a file, link or directory tree found by scandir (remove_path); a failure is left alone (whoever else's
    it is, it will be met again)."""
    with contextlib.suppress(OSError):
        remove_path(Path(entry.path))


def remove_path(path: Path) -> None:
    """Remove the file, link or directory tree at `path` (a link itself, never what it points to; nothing there is
    fine): what stands at the name of an entry envkit writes (a record, a journal) and is not one."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)  # (follows no symlink out)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def owned_temp_file(directory: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """A new temp file (mkstemp's: 0600, made exclusively) in `directory`, named `PREFIX<owner_token>.XXXX<SUFFIX>`,
    after what killed commands left under `prefix` there is removed (remove_orphans): its descriptor and path."""
    import tempfile

    remove_orphans(directory, prefix)
    fd, name = tempfile.mkstemp(prefix=f"{prefix}{owner_token()}.", suffix=suffix, dir=directory)
    return fd, Path(name)


def _runs(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # (EPERM: it runs, as another user)
    return True


def process_temp_dir(parent: Path, prefix: str) -> Path:
    """A new temp directory in `parent` named for this process (`PREFIX.<pid>@<host id>-XXXX`), made after removing
    the ones of the same prefix whose process no longer runs here (remove_orphans)."""
    import tempfile

    parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}.{owner_token()}-", dir=parent))


@contextlib.contextmanager
def directory_lock(directory: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (flock on the directory itself, no lock file left behind).

    Two installs into one parent take turns: the second sees the first's result
    instead of racing it to the final rename.
    """
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
