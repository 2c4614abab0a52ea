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


STOP_GRACE = 1.0  # seconds the calls running get to end at their next step, once one failed or Ctrl-C came


def run_each(fn: Callable[[_T], _R], items: Sequence[_T], jobs: int, stop: threading.Event | None = None) -> list[_R]:
    """`fn` over `items`, at most `jobs` at once; the results in the items' order.

    On the first failure (or a Ctrl-C) no further item starts and `stop` is set, so that a long call can
    end at its next step (raising Stopped). The calls running get STOP_GRACE seconds to end; one still
    stuck (a read from a server that stopped answering) is left to end at its deadline, or with the
    command (which ends by os._exit): the failure is raised now, not minutes later. Of the calls that
    failed other than by Stopped, the first in the items' order is raised."""
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
    except BaseException as exc:
        halt.set()
        for future in futures:
            future.cancel()
        wait(futures, timeout=STOP_GRACE)
        pool.shutdown(wait=False)
        if not isinstance(exc, _Failed):
            raise
        failed = [e for f in futures if f.done() and not f.cancelled() and (e := f.exception()) is not None]
        failures = [e for e in failed if not isinstance(e, _Skipped)] or [Stopped("stopped before any call started")]
        raise next((e for e in failures if not isinstance(e, Stopped)), failures[0]) from None
    pool.shutdown(wait=True)
    return [future.result() for future in futures]


class _Failed(Exception):
    """run_each's own signal: a call failed."""


class _Skipped(Exception):
    """An item run_each did not start: another had failed."""


class Stopped(Exception):
    """A call of run_each that ended early because its `stop` was set (another one failed)."""
