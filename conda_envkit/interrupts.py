"""How a command ends on Ctrl-C (SIGINT) or SIGTERM: by unwinding, but never in the middle of starting a thread.

The signal's handler raises SystemExit(128 + its number) in the main thread, wherever that thread is: staging
directories and temp files are removed on the way out, and the shell sees 130 or 143. Raised inside
`Thread.start()`, which waits until the new thread runs, it would leave a thread running that its executor never
recorded: the executor's shutdown would not wait for it, and the command would end (`os._exit`) in the middle of
what that thread writes, its temp file left behind. So threads are started with the signals held
(`signals_held`, conda_envkit.thread_pool): a signal that comes meanwhile is raised as the start is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_held = 0  # how deep the main thread is in signals_held
_pending: list[int] = []  # the signals that came meanwhile


class Interrupted(SystemExit):
    """The command was ended by SIGINT or SIGTERM: exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def message(self) -> str:
        """The line the command ends with (on stderr): which signal stopped it."""
        import signal

        name = signal.Signals(self.signum).name
        return f"envkit: stopped by {name}" + (" (Ctrl-C)" if self.signum == signal.SIGINT else "")


def _leave(signum: int, _frame: object) -> None:
    if _held:
        _pending.append(signum)
        return
    raise Interrupted(signum)


def unwind_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM end a command by unwinding it (staging directories and temp files are removed
    on the way out) with the shell's status for a signal, 128 + its number: 130 and 143. A SIGINT the parent
    ignores (a background job) stays ignored."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _leave)
    signal.signal(signal.SIGTERM, _leave)


@contextmanager
def signals_held() -> Iterator[None]:
    """A SIGINT or SIGTERM that comes meanwhile ends the command as it leaves this block, not inside it. (Python
    runs signal handlers in the main thread only: in any other thread, this holds nothing and needs to.)"""
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Interrupted(signum)
