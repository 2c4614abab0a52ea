"""The base of every error a user can hit: what happened, and what to do about it."""

from __future__ import annotations


class EnvkitError(Exception):
    """An error caused by input or environment, not by a bug in envkit.

    `message` says what happened (naming the file, line, platform or package);
    `hint` says what to do. The CLI prints both and exits with `exit_code`.
    Both are redacted on the way in (conda_envkit.redact): an error may quote a URL
    or a server's answer, and neither may carry a credential to the terminal or a log.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        from conda_envkit.redact import redact  # only when an error happens: start-up stays minimal

        message, hint = redact(message), redact(hint)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message
