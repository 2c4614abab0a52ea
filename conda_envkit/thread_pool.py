"""A thread pool whose threads start where a signal cannot cut their start in two (conda_envkit.interrupts)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from conda_envkit.interrupts import signals_held

_T = TypeVar("_T")


class ThreadPool(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose `submit` (and so `map`), which starts its threads, runs with signals held: a
    Ctrl-C or SIGTERM ends the command once the pool has recorded the thread, so that its shutdown waits for it."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        with signals_held():
            return super().submit(fn, *args, **kwargs)


_R = TypeVar("_R")


def run_each(fn: Callable[[_T], _R], items: Sequence[_T], jobs: int, stop: threading.Event | None = None) -> list[_R]:
    """`fn` over `items`, at most `jobs` at once; the results in the items' order.

    On the first failure (or a Ctrl-C) no further item starts and `stop` is set, so that a long call can
    end at its next step (raising Stopped); the calls running end first, then the failure is raised (of
    those that failed other than by Stopped, the first in the items' order)."""
    if jobs <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    halt = stop if stop is not None else threading.Event()

    def call(item: _T) -> _R:
        if halt.is_set():  # checked by the thread itself: it may take the next item before the caller wakes
            raise _Skipped
        try:
            return fn(item)
        except BaseException:
            halt.set()
            raise

    pool = ThreadPool(max_workers=min(jobs, len(items)))
    futures: list[Future[_R]] = []
    try:
        for item in items:  # inside the try: Ctrl-C may come while submitting
            futures.append(pool.submit(call, item))
        wait(futures, return_when=FIRST_EXCEPTION)
        if halt.is_set():
            raise _Failed
        return [future.result() for future in futures]
    except BaseException as exc:
        halt.set()
        for future in futures:
            future.cancel()
        pool.shutdown(wait=True)
        if not isinstance(exc, _Failed):
            raise
        failures = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None and not isinstance(e, _Skipped)]
        raise next((e for e in failures if not isinstance(e, Stopped)), failures[0]) from None
    finally:
        pool.shutdown(wait=True)


class _Failed(Exception):
    """run_each's own signal: a call failed."""


class _Skipped(Exception):
    """An item run_each did not start: another had failed."""


class Stopped(Exception):
    """A call of run_each that ended early because its `stop` was set (another one failed)."""
