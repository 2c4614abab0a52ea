"""The base of every error a user can hit: what happened, and what to do about it."""

from __future__ import annotations

# The exit status of every error a user can hit (EnvkitError, a refused flag, the machine's limits).
EXIT_ERROR = 2


class EnvkitError(Exception):
    """An error caused by input or environment, not by a bug in envkit.

    `message` says what happened (naming the file, line, platform or package);
    `hint` says what to do. The CLI prints both and exits with status 2.
    Both are redacted on the way in (conda_envkit.redact): an error may quote a URL
    or a server's answer, and neither may carry a credential to the terminal or a log.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        from conda_envkit.redact import redact  # only when an error happens: start-up stays minimal

        message, hint = _shortened(redact(message)), _shortened(redact(hint))
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


# An error quotes values from the input; a 30 MB name in a hostile lock must not become a 30 MB message.
MAX_MESSAGE = 8000


def _shortened(text: str) -> str:
    """`text`, its middle left out if it is longer than MAX_MESSAGE characters (after redaction: no half secret)."""
    if len(text) <= MAX_MESSAGE:
        return text
    half = MAX_MESSAGE // 2
    return f"{text[:half]} …({len(text) - 2 * half} characters left out)… {text[-half:]}"


class BadFlag(EnvkitError):
    """A command-line value the library refuses: the CLI reports it as a usage error (exit 2).

    `option` names the flag ("--blas"); without one, the flags given conflict with each other.
    """

    def __init__(self, message: str, option: str | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.option = option
