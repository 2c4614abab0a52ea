"""Progress of long steps (solve, download, extract, layers, push), reported to whoever asks.

The library takes a `Progress` as an argument (never global state) and calls `start`,
`advance` and `done` on it; the CLI picks the reporter: `RichProgress` (bars, only when
stderr is a terminal; rich is imported then, not at start-up), `LineProgress` (one line
per step, for logs and CI) or `SILENT`. Nothing here writes to stdout.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    """Step-by-step progress. `step` names the step ("download linux-64"); calls may come from worker threads."""

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        """A step begins; `total` units of work (packages, bytes, layers) if known."""

    def advance(self, step: str, amount: int = 1, detail: str = "") -> None:
        """`amount` more units of the step are done; `detail` says what (shown as a line when given)."""

    def done(self, step: str, summary: str = "") -> None:
        """The step is finished; `summary` says what it did."""


class SilentProgress:
    """Reports nothing (`-q`, and library callers that pass no reporter)."""

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        pass

    def advance(self, step: str, amount: int = 1, detail: str = "") -> None:
        pass

    def done(self, step: str, summary: str = "") -> None:
        pass


SILENT = SilentProgress()


class LineProgress:
    """One line per finished step (plus one per `advance` that carries a detail), with its duration."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(text + "\n")
            stream.flush()

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            self._started[step] = time.perf_counter()

    def advance(self, step: str, amount: int = 1, detail: str = "") -> None:
        if detail:
            self._write(f"{step}: {detail}")

    def done(self, step: str, summary: str = "") -> None:
        with self._lock:
            began = self._started.pop(step, None)
        took = f" ({time.perf_counter() - began:.1f}s)" if began is not None else ""
        self._write(f"{step}: {summary or 'done'}{took}")


class RichProgress:
    """Live bars on a terminal (rich), a line per finished step left behind."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._console = Console(file=stream or sys.stderr)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._bars = Progress(*columns, console=self._console, transient=True)
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, step: str, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            if not self._tasks:
                self._bars.start()
            self._started[step] = time.perf_counter()
            self._tasks[step] = self._bars.add_task(f"{step} {unit}".strip(), total=total)

    def advance(self, step: str, amount: int = 1, detail: str = "") -> None:
        with self._lock:
            task = self._tasks.get(step)
            if task is not None:
                self._bars.advance(task, amount)
        if detail:
            self._console.print(f"{step}: {detail}", highlight=False)

    def done(self, step: str, summary: str = "") -> None:
        with self._lock:
            task = self._tasks.pop(step, None)
            began = self._started.pop(step, None)
            if task is not None:
                self._bars.remove_task(task)
            if not self._tasks:
                self._bars.stop()
        took = f" ({time.perf_counter() - began:.1f}s)" if began is not None else ""
        self._console.print(f"{step}: {summary or 'done'}{took}", highlight=False)


def counted(n: int, noun: str) -> str:
    """`n noun`, the noun plural unless n is 1 (`1 package`, `3 packages`, `1 problem`)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def progress_for(quiet: bool, stream: TextIO | None = None) -> Progress:
    """The reporter for a command: none with -q, bars on a terminal, else one line per step."""
    if quiet:
        return SILENT
    stream = stream or sys.stderr
    if stream.isatty():
        try:
            return RichProgress(stream)
        except ImportError:  # rich is a dependency, but a trimmed install still reports, in lines
            pass
    return LineProgress(stream)
