"""Values from a lock (someone else's, in a pull request) written into line- or table-based
outputs: each output format escapes or refuses what would forge a line, a row or a key.

Defence in depth behind the lock parser's validation: these functions are what keeps an
`@EXPLICIT` file, a markdown table posted to a pull request and `$GITHUB_OUTPUT` honest even
when a value reaches them unchecked.
"""

from __future__ import annotations

import html
import re
import secrets

from conda_envkit.errors import EnvkitError

_OUTPUT_KEY = re.compile(r"[A-Za-z0-9_.\-]+")


class UnsafeOutputError(EnvkitError):
    """A value that cannot be written into an output format without changing its structure."""


def one_line(value: str, what: str) -> str:
    """`value` if it holds no whitespace break or control character (one token of a line-based file)."""
    if any(not c.isprintable() or c in " \t" for c in value):
        raise UnsafeOutputError(
            f"{what}: {value[:80]!r} holds a line break, space or control character",
            hint="the lock is malformed or was crafted to forge output lines; re-lock",
        )
    return value


def hex_digest(value: str | None, length: int, what: str) -> str:
    """`value` if it is `length` lower-case hex digits."""
    if value is None or not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
        raise UnsafeOutputError(f"{what}: {str(value)[:80]!r} is not a hex digest", hint="the lock is malformed; re-lock")
    return value


def markdown_cell(text: str) -> str:
    """`text` as inert content of a GitHub markdown table cell: no new row, cell, link, code span or HTML."""
    escaped = html.escape(" ".join(text.split()), quote=False)
    for char, entity in (("|", "&#124;"), ("`", "&#96;"), ("[", "&#91;"), ("]", "&#93;"), ("\\", "&#92;")):
        escaped = escaped.replace(char, entity)
    return escaped


_PLAIN = re.compile(r"[A-Za-z0-9_.+\-=!~:/ ]*")


def code_span(text: str) -> str:
    """`text` as inline code in a markdown table: a plain name in backticks, anything else as escaped <code>."""
    if _PLAIN.fullmatch(text):
        return f"`{text}`"
    return f"<code>{markdown_cell(text)}</code>"


def github_output(key: str, value: str) -> str:
    """One `$GITHUB_OUTPUT` entry: `key=value`, or the `key<<DELIMITER` form when the value spans lines."""
    if not _OUTPUT_KEY.fullmatch(key):
        raise UnsafeOutputError(f"output name {key!r} is not a plain name", hint="the record is malformed")
    if "\n" not in value and "\r" not in value:
        return f"{key}={value}\n"
    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
    return f"{key}<<{delimiter}\n{value}\n{delimiter}\n"
