"""The `envkit` console entry point: a plain `envkit lock` runs without loading click.

A small lock takes about a fifth of a second, and loading click and envkit's command table
(`conda_envkit.cli`) is some 14 ms of it, most of what `envkit lock` adds to a bare rattler
solve. So `run` reads `envkit lock`'s arguments itself when they are plain: known options,
each given as `--name value`, `--name=value` or `-x value`, and values that do not start with
`-`. Any other command line (another command, --help, the group's options, anything this
reader would have to guess about), and flags the lock command refuses, go to the click CLI,
which stays the reference: tests/test_startup.py checks that both read every lock option alike
and print alike.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from conda_envkit.commands.lock import LockRequest

# `envkit lock`'s options (as declared in cli._lock_command): option -> (parameter, kind).
# Kinds: "flag", "value", "path", and "values"/"paths" for repeatable options.
LOCK_OPTIONS: dict[str, tuple[str, str]] = {
    "-f": ("files", "paths"),
    "--file": ("files", "paths"),
    "-p": ("platforms", "values"),
    "--platform": ("platforms", "values"),
    "--lockfile": ("lockfile", "path"),
    "--cuda": ("cuda", "value"),
    "--no-cuda": ("no_cuda", "flag"),
    "--blas": ("blas", "values"),
    "--virtual-package-spec": ("virtual_package_spec", "path"),
    "--channel-alias": ("channel_alias", "value"),
    "--mirror": ("mirrors", "values"),
    "--config": ("config", "path"),
    "--check": ("check", "flag"),
    "--update": ("update", "values"),
    "--variant": ("variants", "values"),
    "--json": ("as_json", "flag"),
    "-q": ("quiet", "flag"),
    "--quiet": ("quiet", "flag"),
}
LOCKFILE_DEFAULT = Path("conda-lock.yml")


def lock_arguments(args: list[str]) -> dict[str, Any] | None:
    """The parameters click would pass `envkit lock` for `args`, or None to leave `args` to click."""
    if not args or args[0] != "lock":
        return None
    params: dict[str, Any] = {dest: {"flag": False, "values": (), "paths": ()}.get(kind) for dest, kind in LOCK_OPTIONS.values()}
    params["lockfile"] = LOCKFILE_DEFAULT
    rest = iter(args[1:])
    for arg in rest:
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name not in LOCK_OPTIONS:
            return None
        dest, kind = LOCK_OPTIONS[name]
        if kind == "flag":
            if eq:
                return None
            params[dest] = True
            continue
        if not eq:
            value = next(rest, "")
        if not value or value.startswith("-") or "\x1b" in value:
            return None  # missing, option-like or with escape codes: click judges
        converted = Path(value) if kind in ("path", "paths") else value
        params[dest] = (*params[dest], converted) if kind in ("values", "paths") else converted
    return params


def _plain_streams() -> bool:
    """Whether click.echo would write to stdout and stderr as they are.

    click wraps an ASCII stream (to replace what it cannot encode) and the Windows console.
    """
    streams = (sys.stdout, sys.stderr)
    return sys.platform != "win32" and all(s is not None and codecs.lookup(s.encoding or "ascii").name != "ascii" for s in streams)


def _echo(text: str, to_stderr: bool = False, nl: bool = True) -> None:
    """Print as click.echo does: flushed, escape codes removed when the stream is not a terminal; stderr's notes and
    warnings redacted, as cli._note does (one may quote a lock's channel URL with its credentials)."""
    stream = sys.stderr if to_stderr else sys.stdout
    if to_stderr:
        from conda_envkit.redact import redact

        text = redact(text)
    if "\x1b" in text and not stream.isatty():
        import re

        text = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", text)
    stream.write(text + "\n" if nl else text)
    stream.flush()


def _leave(code: int) -> NoReturn:
    """Exit with `code` without interpreter teardown, as `cli.run` does (which says why)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


def run() -> NoReturn:
    """Console entry point (`envkit`, `python -m conda_envkit`): run the command and leave.

    `envkit lock` with plain arguments runs here; every other command line through click (`cli.run`).
    A Ctrl-C before the command's own handler is in place (while click and the command's modules load: the
    first tens of milliseconds) ends it as that handler would: exit 130 and one line, not a traceback.
    """
    try:
        _run()
    except KeyboardInterrupt:
        _echo("envkit: stopped by SIGINT (Ctrl-C)", to_stderr=True)
        _leave(130)


def _run() -> NoReturn:
    params = lock_arguments(sys.argv[1:]) if _plain_streams() else None
    if params is None:
        _click()
    from conda_envkit.commands.lock import LockRequest, check_flags
    from conda_envkit.errors import EnvkitError
    from conda_envkit.interrupts import unwind_on_signals

    as_json, quiet = params.pop("as_json"), params.pop("quiet")
    request = LockRequest(**params)
    try:
        check_flags(request)  # reads no file: click can take over and say it as it says every bad flag
        refused = False
    except EnvkitError:
        refused = True
    if refused:
        _click()
    unwind_on_signals()
    _leave(_lock(request, as_json, quiet))


def _click() -> NoReturn:
    """Run the command line through the click CLI, which leaves the process."""
    from conda_envkit.cli import run as run_click

    run_click()


def _lock(request: LockRequest, as_json: bool, quiet: bool) -> int:
    """Run `envkit lock` as cli's lock command does (output, errors, exit status); return the status."""
    from conda_envkit.commands.lock import lock_command
    from conda_envkit.error_report import error_report, prepare_json_reports

    if as_json:
        prepare_json_reports()
    try:
        output = lock_command(request, as_json, quiet, lambda text: _echo(text, to_stderr=True))
        for to_stderr, text, nl in output.items:
            _echo(text, to_stderr, nl)
        return output.status
    except EOFError:
        _echo("\nAborted!", to_stderr=True)  # as click's main
        return 1
    except BrokenPipeError:
        return 1  # as click's main
    except Exception as exc:  # an EnvkitError, or the machine's state or limits, as cli._reports_errors reports them
        report = error_report(exc)
        if report is None:
            raise
    except SystemExit as exc:  # Ctrl-C or SIGTERM (unwind_on_signals)
        from conda_envkit.interrupts import Interrupted

        if isinstance(exc, Interrupted):
            _echo(exc.message(), to_stderr=True)
        return exc.code if isinstance(exc.code, int) else 1
    # Outside the except block: the exception's frames must not outlive it (see cli._reports_errors).
    for line in report.lines():
        _echo(line, to_stderr=True)
    if as_json:
        _echo(report.json_document())
    return report.exit_code
