"""A thread pool whose threads start where a signal cannot cut their start in two (conda_envkit.interrupts)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from conda_envkit.interrupts import signals_held

_T = TypeVar("_T")


class ThreadPool(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose `submit` (and so `map`), which starts its threads, runs with signals held: a
    Ctrl-C or SIGTERM ends the command once the pool has recorded the thread, so that its shutdown waits for it."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        with signals_held():
            return super().submit(fn, *args, **kwargs)
