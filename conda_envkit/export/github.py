"""`--to github`: step outputs appended to $GITHUB_OUTPUT (`lock_hash=…`, `image_digest=…`)."""

from __future__ import annotations

import os
from pathlib import Path

from conda_envkit.files import open_stream, write_error
from conda_envkit.output_safety import github_output
from conda_envkit.record import EnvironmentRecord, RecordError


def output_lines(record: EnvironmentRecord) -> str:
    """The record as step outputs; a value that spans lines uses the delimiter form, so it cannot add an output."""
    return "".join(github_output(k.removeprefix("envkit."), str(v)) for k, v in record.flat().items())


def write_github_output(record: EnvironmentRecord, path: Path | None = None) -> Path:
    """Append the outputs to `path` (default $GITHUB_OUTPUT) and return it."""
    target = path or (Path(os.environ["GITHUB_OUTPUT"]) if os.environ.get("GITHUB_OUTPUT") else None)
    if target is None:
        raise RecordError("GITHUB_OUTPUT is not set (not running in GitHub Actions?)", hint="use --to env, or set GITHUB_OUTPUT")
    # A path that is a directory, under a file or a missing directory (a stale variable on a self-hosted runner),
    # or a FIFO nobody reads: an error naming it (it was a traceback, or a hang).
    _append(target, output_lines(record), "step outputs file", "$GITHUB_OUTPUT" if path is None else "")
    return target


def _append(target: Path, text: str, what: str, setting: str) -> None:
    """`text` appended to one of the runner's files, as UTF-8 (as GitHub reads it, whatever the locale); a failure is
    an error naming the file (the write, or the flush as the file closes: a full disk says so there)."""
    try:
        with open_stream(target, what, setting, create=True) as f:
            f.write(text.encode("utf-8"))
    except OSError as exc:
        raise write_error(target, exc, what, setting) from None


def summary_markdown(record: EnvironmentRecord) -> str:
    """The record as a table for the job's summary page: one row per value, each in a code span."""
    rows = "".join(f"| {key.removeprefix('envkit.')} | {_code(value)} |\n" for key, value in record.flat().items())
    return f"### envkit environment\n\n| | |\n|---|---|\n{rows}\n"


def _code(value: str) -> str:
    """`value` as one code span: no pipe ends its cell, no backtick ends the span, no markup is read from it."""
    text = value.replace("|", "\\|").replace("`", "'")
    return f"`{text}`"


def write_step_summary(record: EnvironmentRecord) -> Path | None:
    """Append the record to $GITHUB_STEP_SUMMARY (the job's summary page), if the runner sets it; the path, or None."""
    if not os.environ.get("GITHUB_STEP_SUMMARY"):
        return None
    target = Path(os.environ["GITHUB_STEP_SUMMARY"])
    _append(target, summary_markdown(record), "step summary", "$GITHUB_STEP_SUMMARY")
    return target
