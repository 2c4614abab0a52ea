"""How a failed command says so: `error:` and `hint:` lines on stderr and, with --json, one JSON document on stdout.

Both come from one `ErrorReport`, redacted here once more: an error's hint may be set after it was made (several
platforms' errors merged into one), and nothing a command prints may carry a credential, on either stream.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from conda_envkit.errors import EXIT_ERROR, BadFlag, EnvkitError
from conda_envkit.failures import machine_failure

# Loaded with the command, as failures is: with no file descriptor or memory left, an import would fail when the error
# is reported.
from conda_envkit.redact import redact


@dataclass(frozen=True)
class ErrorReport:
    """A failure a user can hit: `kind` (the error's class name), what happened, what to do, the exit status."""

    kind: str
    message: str
    hint: str
    exit_code: int = EXIT_ERROR

    def lines(self) -> list[str]:
        """The lines for stderr: `error: MESSAGE` and, if there is one, `  hint: HINT`."""
        return [f"error: {self.message}", *([f"  hint: {self.hint}"] if self.hint else [])]

    def json_document(self) -> str:
        """`{"error": {"kind", "message", "hint", "exit_code"}}`, as --json prints it on stdout (docs/errors.md)."""
        import json  # (loaded by prepare_json_reports before the command ran; commands without --json never load it)

        error = {"kind": self.kind, "message": self.message, "hint": self.hint or None, "exit_code": self.exit_code}
        return json.dumps({"error": error}, indent=2)


def prepare_json_reports() -> None:
    """Load the json module before a command that was asked for JSON runs, not when its error is reported (then the
    machine may have no file descriptor or memory left to import it); commands without --json never load it."""
    importlib.import_module("json")


def error_report(exc: BaseException) -> ErrorReport | None:
    """The report of `exc` if a user can hit it (an EnvkitError, a refused flag, the machine's limits); None for a bug."""
    if isinstance(exc, BadFlag):  # a flag's value the library refused: said like any other input, naming the flag
        message = f"{exc.option}: {exc.message}" if exc.option else exc.message
        hint = exc.hint or "see the command's --help for its options"
    elif isinstance(exc, EnvkitError):
        message, hint = exc.message, exc.hint
    else:  # the machine's state or limits (a full disk, open files, memory), met anywhere
        described = machine_failure(exc)
        if described is None:
            return None
        message, hint = described
    return ErrorReport(kind=type(exc).__name__, message=redact(message), hint=redact(hint))
