"""A size cap on the repodata a lock reads, enforced from outside py-rattler.

py-rattler's client has a per-request timeout but no size limit. A channel that sends
without end fills the disk (a plain `repodata.json` streams into a temporary file in the
repodata cache) or memory (a sharded channel's index and its shards are read into
memory) until the deadline, which is minutes. `RepodataGuard` watches both while the
repodata is read and the solves run, and stops the lock as soon as either passes
`$ENVKIT_MAX_REPODATA_BYTES`:

- a temporary download file in the repodata cache bigger than the cap (the decompressed
  size of one subdirectory's `repodata.json`: conda-forge's biggest is a few hundred MiB);
- the process's anonymous memory grown by more than the cap since the lock began (the
  repodata held in memory plus what the solver builds from it). Linux only: elsewhere
  only the files are watched and memory is bounded by the deadline.

Python cannot interrupt py-rattler's native work, so the guard samples from a thread and
cancels the asyncio task that awaits it; cancelling drops the downloads.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from conda_envkit.network import size_from_env, size_text

T = TypeVar("T")
REPODATA_CAP_ENV_VAR = "ENVKIT_MAX_REPODATA_BYTES"
DEFAULT_REPODATA_CAP = 4 << 30
_STATUS = Path("/proc/self/status")


def max_repodata_bytes() -> int:
    """$ENVKIT_MAX_REPODATA_BYTES (bytes, or K/M/G/T; default 4G); an invalid value is an error naming it."""
    return size_from_env(REPODATA_CAP_ENV_VAR, DEFAULT_REPODATA_CAP)


@dataclass(frozen=True)
class Overrun:
    """What passed the cap: `what` is a phrase for the error ("a repodata download grew to 5 GiB")."""

    what: str


def anonymous_memory() -> int | None:
    """The bytes of this process's anonymous resident memory (`RssAnon`), or None where unknown."""
    try:
        with _STATUS.open("rb") as status:
            for line in status:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def partial_downloads(cache_dir: Path) -> dict[Path, os.stat_result]:
    """py-rattler's temporary download files (`.tmp*`) in the repodata cache, with their own (not a link's target's) stat."""
    found = {}
    try:
        with os.scandir(cache_dir) as entries:
            for entry in entries:
                if entry.name.startswith(".tmp"):
                    try:
                        found[Path(entry.path)] = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
    except OSError:
        pass
    return found


def partial_download_sizes(cache_dir: Path) -> list[int]:
    """The sizes of py-rattler's temporary download files in the repodata cache."""
    return [st.st_size for st in partial_downloads(cache_dir).values()]


def overrun(cache_dir: Path, max_bytes: int, memory_at_start: int | None) -> Overrun | None:
    """One sample: the first limit passed, if any."""
    biggest = max(partial_download_sizes(cache_dir), default=0)
    if biggest > max_bytes:
        return Overrun(f"a repodata download grew past {size_text(max_bytes)}")
    if memory_at_start is not None:
        now = anonymous_memory()
        if now is not None and now - memory_at_start > max_bytes:
            return Overrun(f"reading repodata and solving took more than {size_text(max_bytes)} of memory")
    return None


@dataclass(frozen=True)
class RepodataGuard:
    """Watch a repodata cache directory and this process's memory while a lock reads repodata."""

    cache_dir: Path
    max_bytes: int
    interval: float = 0.05

    async def run(self, work: Awaitable[T]) -> tuple[T | None, Overrun | None]:
        """Await `work`; if a limit is passed first, cancel it and return what was passed."""
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        found: list[Overrun] = []
        memory_at_start = anonymous_memory()

        def sample() -> None:
            while not stop.wait(self.interval):
                hit = overrun(self.cache_dir, self.max_bytes, memory_at_start)
                if hit is not None:
                    found.append(hit)
                    loop.call_soon_threadsafe(task.cancel)
                    return

        watcher = threading.Thread(target=sample, name="envkit-repodata-guard", daemon=True)
        watcher.start()
        try:
            result = await task
        except asyncio.CancelledError:
            if not found:
                raise  # cancelled from outside (Ctrl-C), not by the guard
            return None, found[0]
        finally:
            stop.set()
            watcher.join()
        return result, None
