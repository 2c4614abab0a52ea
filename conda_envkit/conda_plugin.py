"""`conda envkit ...`: the envkit commands as a conda subcommand (conda's plugin system).

A thin adapter: conda hands over the arguments after `envkit`, and the same click
command line runs them. Registered through the `conda` entry point group in
pyproject.toml, which is how conda (pluggy project "conda") discovers plugins.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import click

try:
    from conda.plugins import hookimpl
    from conda.plugins.types import CondaSubcommand
except ImportError:  # conda is not installed: keep the hook importable (and testable) without it
    import pluggy

    hookimpl = pluggy.HookimplMarker("conda")

    @dataclass(frozen=True)
    class CondaSubcommand:  # type: ignore[no-redef]
        """The fields of conda.plugins.types.CondaSubcommand that envkit uses."""

        name: str
        summary: str
        action: Callable[..., int | None]
        configure_parser: Callable[[argparse.ArgumentParser], None] | None = None


SUMMARY = "Lock environments for every platform, bake reproducible images, record them (conda-envkit)."


def run_envkit(args: argparse.Namespace | tuple[str, ...] | list[str]) -> int:
    """Run an envkit command line in this process and return its exit code."""
    from conda_envkit.cli import main

    argv = list(getattr(args, "envkit_args", args))
    try:
        main.main(args=argv, prog_name="conda envkit", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort as exc:
        click.echo("Aborted!", err=True)
        # Ctrl-C: the shell's status for SIGINT, as `envkit` gives (1 would read as "stale" or "differs").
        return 130 if isinstance(exc.__context__, KeyboardInterrupt) else 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


@hookimpl  # type: ignore[untyped-decorator]  # pluggy's marker is untyped when conda is absent
def conda_subcommands() -> Iterator[CondaSubcommand]:
    """conda's hook: register `conda envkit`; without configure_parser conda passes the raw argv."""
    yield CondaSubcommand(name="envkit", summary=SUMMARY, action=run_envkit)
