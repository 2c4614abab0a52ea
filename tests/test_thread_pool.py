"""A Ctrl-C or SIGTERM that comes while a pool starts a thread: the pool still knows the thread and waits for it."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from conda_envkit.interrupts import signals_held, unwind_on_signals
from conda_envkit.thread_pool import ThreadPool

ARMED: list[bool] = []


@pytest.fixture
def envkits_handlers() -> Iterator[None]:
    """envkit's SIGINT and SIGTERM handlers (a command's: they raise SystemExit), the test's own put back after. (As
    in a terminal: a run in the background, whose SIGINT is ignored, keeps it ignored under unwind_on_signals.)"""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    unwind_on_signals()
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.fixture
def sigterm_while_starting(envkits_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM to this process as soon as the next thread has started (once ARMED): in the middle of the
    executor's bookkeeping, as a Ctrl-C can come."""
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        real_start(self)
        if ARMED:
            ARMED.clear()
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(threading.Thread, "start", start)


def _submit_and_shut_down(pool: ThreadPoolExecutor) -> bool:
    """Whether `shutdown(wait=True)` waited for the job submitted as the signal came (which ends the command)."""
    release, done = threading.Event(), threading.Event()

    def job() -> None:
        release.wait(10)
        done.set()

    ARMED.append(True)
    with pytest.raises(SystemExit) as ended:
        pool.submit(job)
    assert ended.value.code == 128 + signal.SIGTERM
    threading.Timer(0.2, release.set).start()
    pool.shutdown(wait=True)
    waited = done.is_set()
    release.set()
    done.wait(10)
    return waited


@pytest.mark.usefixtures("sigterm_while_starting")
def test_a_signal_while_a_thread_starts_leaves_no_thread_unknown_to_the_pool() -> None:
    # The hazard, as Python's own executor has it: the thread runs on, and shutting down does not wait for it.
    assert _submit_and_shut_down(ThreadPoolExecutor(max_workers=1)) is False
    # A ThreadPool ends the command once the thread is recorded: it is waited for.
    assert _submit_and_shut_down(ThreadPool(max_workers=1)) is True


@pytest.mark.usefixtures("envkits_handlers")
def test_signals_held_ends_the_command_on_leaving_the_outermost_hold() -> None:
    seen = []
    with pytest.raises(SystemExit) as ended, signals_held():
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes: give it plenty
                seen.append(1)
        seen.append(2)  # still held by the outer block
    assert ended.value.code == 128 + signal.SIGINT
    assert seen[-1] == 2 and len(seen) == 1001
    with pytest.raises(SystemExit) as ended:  # not held: at once
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            seen.append(3)
    assert ended.value.code == 128 + signal.SIGTERM
    assert len(seen) < 2001


def test_run_each_keeps_the_items_order_and_runs_them_at_once() -> None:
    from conda_envkit.thread_pool import run_each

    together = threading.Barrier(3, timeout=10)  # three calls must be running at once to pass it

    def call(n: int) -> int:
        if n < 3:
            together.wait()
        return n * 10

    assert run_each(call, [0, 1, 2, 3, 4], jobs=3) == [0, 10, 20, 30, 40]


def test_run_each_starts_nothing_after_a_failure_and_raises_the_failure_not_a_stopped_call() -> None:
    # Item 0 runs until `stop` is set, then ends as Stopped (an upload at its next chunk); item 1 fails. The
    # failure is what is raised, though item 0 comes first; items 2.. never start.
    from conda_envkit.thread_pool import Stopped, run_each

    stop, started = threading.Event(), []

    def call(n: int) -> None:
        started.append(n)
        if n == 0:
            if not stop.wait(10):
                raise AssertionError("stop was never set")
            raise Stopped("upload of item 0")
        if n == 1:
            raise ValueError("item 1 is broken")

    with pytest.raises(ValueError, match="item 1 is broken"):
        run_each(call, list(range(8)), jobs=2, stop=stop)
    assert sorted(started) == [0, 1] and stop.is_set()


def test_run_each_does_not_wait_for_a_call_stuck_in_a_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # An upload to a registry that stopped answering: once another call fails (or Ctrl-C comes), the failure is
    # raised after STOP_GRACE, not when the stuck call's deadline ends (minutes); that call is left to end alone.
    import time

    from conda_envkit import thread_pool

    monkeypatch.setattr(thread_pool, "STOP_GRACE", 0.2)
    stuck = threading.Event()

    def call(n: int) -> None:
        if n == 0:
            stuck.wait(30)  # a socket read that does not see `stop`
        else:
            time.sleep(0.1)
            raise ValueError("upload 1 was refused")

    started = time.monotonic()
    try:
        with pytest.raises(ValueError, match="upload 1 was refused"):
            thread_pool.run_each(call, [0, 1], jobs=2)
        assert time.monotonic() - started < 5
    finally:
        stuck.set()
