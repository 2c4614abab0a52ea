"""The conda plugin. conda itself cannot be installed here (no conda channel, and PyPI's
`conda` is a stale placeholder), so the test does what conda does: a pluggy plugin manager
for project "conda" with conda's `conda_subcommands` hook spec, loading plugins from the
`conda` entry point group, then runs the registered action."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pluggy
import pytest

from tests.conftest import run_envkit, write_env

spec = pluggy.HookspecMarker("conda")


class CondaSpecs:
    @spec
    def conda_subcommands(self):  # type: ignore[no-untyped-def]
        """conda's hook spec (conda.plugins.hookspec.CondaSpecs.conda_subcommands)."""


def test_entry_point_registers_a_working_subcommand(tmp_path: Path, image_channel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    points = [e for e in importlib.metadata.entry_points(group="conda") if e.name == "envkit"]
    assert [e.value for e in points] == ["conda_envkit.conda_plugin"]

    manager = pluggy.PluginManager("conda")
    manager.add_hookspecs(CondaSpecs)
    assert manager.load_setuptools_entrypoints("conda", name="envkit") == 1
    subcommands = [s for group in manager.hook.conda_subcommands() for s in group]
    assert [s.name for s in subcommands] == ["envkit"]
    envkit = subcommands[0]
    assert "conda-envkit" in envkit.summary and envkit.configure_parser is None

    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    expected = run_envkit("hash", "--short", cwd=work).stdout.strip()
    old = os.getcwd()
    os.chdir(work)
    try:
        capsys.readouterr()
        assert envkit.action(("hash", "--short")) == 0
        assert capsys.readouterr().out.strip() == expected
        assert envkit.action(("hash", "--lockfile", "missing.yml")) == 2
        assert "lock file not found" in capsys.readouterr().err
        assert envkit.action(("no-such-command",)) == 2
    finally:
        os.chdir(old)


def test_ctrl_c_in_conda_envkit_is_130_not_the_stale_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`conda envkit lock --check` interrupted must not exit 1, which means "the lock is stale"."""
    import conda_envkit.commands.lock as lock_commands
    from conda_envkit.conda_plugin import run_envkit

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C arrives in the middle of a command

    monkeypatch.setattr(lock_commands, "hash_output", interrupted)
    assert run_envkit(["hash"]) == 130
    assert "Aborted!" in capsys.readouterr().err
