"""The work behind each `envkit` command: flags in, typed results and printable lines out.

`cli` parses the command line, calls one function here and prints what it returns; the
functions here assemble the pipeline from the library's stages and never print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from conda_envkit.errors import EXIT_ERROR, BadFlag

__all__ = ["EXIT_ERROR", "EXIT_STALE", "BadFlag", "Output"]


# Exit statuses besides 0: 1 = the lock/prefix/image does not match (like `git diff --exit-code`),
# 2 = bad input (every EnvkitError: conda_envkit.errors.EXIT_ERROR).
EXIT_STALE = 1


Sink = Callable[[bool, str, bool], None]


@dataclass
class Output:
    """What a command prints, in order: (to stderr?, text, newline?) per item, and its exit status.

    With a `sink`, items go to it as they come (a command that does several things in turn
    shows what it did before a later step fails); without one they are kept in `items`.
    """

    items: list[tuple[bool, str, bool]] = field(default_factory=list)
    status: int = 0
    sink: Sink | None = None

    def _add(self, to_stderr: bool, text: str, nl: bool) -> None:
        if self.sink is not None:
            self.sink(to_stderr, text, nl)
        else:
            self.items.append((to_stderr, text, nl))

    def out(self, text: str, nl: bool = True) -> None:
        self._add(False, text, nl)

    def err(self, text: str, nl: bool = True) -> None:
        self._add(True, text, nl)
