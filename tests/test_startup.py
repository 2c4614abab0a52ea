"""What `envkit --help`, `envkit hash` and `envkit lock` import: no conda_lock, uv, httpx, jinja2 or mlflow
(and for --help and hash, no solver); which commands they build.

Start-up time itself is measured in bench/startup_bench.py (as ratios, never asserted here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_envkit, write_env

HEAVY = ("rattler", "conda_lock", "uv", "httpx", "requests", "jinja2", "mlflow", "wandb", "pydantic", "packaging", "cyclonedx")
PROBE = """\
import json, os, sys
from conda_envkit import cli
try:
    cli.main(sys.argv[1:], prog_name="envkit")
except SystemExit:
    pass
print(json.dumps({"modules": sorted(sys.modules), "built": sorted(cli.main.commands)}), file=sys.stderr, flush=True)
os._exit(0)  # as envkit's entry point leaves: py-rattler's threads may abort a finalizing interpreter
"""


def _probe(args: list[str], cwd: Path) -> dict[str, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    result: dict[str, list[str]] = json.loads(proc.stderr.strip().splitlines()[-1])
    return result


def _imported(args: list[str], cwd: Path) -> tuple[set[str], set[str]]:
    modules = _probe(args, cwd)["modules"]
    return {m.split(".")[0] for m in modules}, {m for m in modules if m.startswith("conda_envkit")}


def test_help_imports_only_click_and_the_cli(tmp_path: Path) -> None:
    top, ours = _imported(["--help"], tmp_path)
    assert not top & set(HEAVY), top & set(HEAVY)
    assert "yaml" not in top
    # (failures, error_report and redact: loaded before any command, since with no file descriptor or memory left they
    # could not be loaded when an error is reported)
    assert ours == {
        "conda_envkit",
        "conda_envkit.cli",
        "conda_envkit.error_report",
        "conda_envkit.errors",
        "conda_envkit.failures",
        "conda_envkit.interrupts",
        "conda_envkit.redact",
    }


def test_hash_imports_the_lock_model_only(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\ndependencies: [numpy]\n")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    top, ours = _imported(["hash"], tmp_path)
    assert not top & set(HEAVY), top & set(HEAVY)
    assert ours == {
        "conda_envkit",
        "conda_envkit.cli",
        "conda_envkit.commands",
        "conda_envkit.commands.lock",
        "conda_envkit.error_report",
        "conda_envkit.errors",
        "conda_envkit.failures",
        "conda_envkit.files",
        "conda_envkit.inputs",
        "conda_envkit.interrupts",
        "conda_envkit.lockfile",
        "conda_envkit.lockmodel",
        "conda_envkit.lock_yaml",
        "conda_envkit.redact",
        "conda_envkit.strict_yaml",
    }


def test_reading_a_lock_never_imports_the_solver() -> None:
    probe = "import sys; import conda_envkit.lockfile, conda_envkit.lockmodel; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert not {m.strip("'").split(".")[0] for m in out.strip("[]\n").split(", ")} & set(HEAVY)


def test_lock_without_pip_imports_no_pip_or_tracker_tooling(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64, osx-arm64]\ndependencies: [numpy]\n")
    probe = _probe(["lock", "-q"], tmp_path)
    assert (tmp_path / "conda-lock.yml").is_file()
    top = {m.split(".")[0] for m in probe["modules"]}
    assert "rattler" in top  # the probe really locked
    heavy = set(HEAVY) - {"rattler"}
    assert not top & heavy, top & heavy
    # Nor the parts of envkit for pip sections, images, installs or tracking, nor the lock reader.
    ours = {m for m in probe["modules"] if m.startswith("conda_envkit")}
    for module in ("pip_lock", "wheel_targets", "lockfile", "bake", "install", "verify", "tracking", "export", "oci"):
        assert f"conda_envkit.{module}" not in ours, ours
    assert probe["built"] == ["lock"]


def test_help_builds_no_command_and_lists_every_one(tmp_path: Path) -> None:
    probe = _probe(["--help"], tmp_path)
    assert probe["built"] == []
    listed = run_envkit("--help", cwd=tmp_path).stdout.split("Commands:\n", 1)[1]
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    from conda_envkit.cli import main

    assert names == sorted(main.lazy) and len(names) == 12


def test_every_command_builds_with_its_listed_short_help() -> None:
    import click

    from conda_envkit.cli import main

    for name, (short_help, _build) in main.lazy.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.name == name
        # One line of an 80-column `envkit --help` (click leaves 80 - 6 - the longest name), and a full help of its own.
        assert len(short_help) <= 80 - 6 - max(map(len, main.lazy)) and short_help.endswith("."), (name, short_help)
        assert command.get_short_help_str() == short_help
        assert command.help and command.help.strip(), name


def test_a_mistyped_command_gets_a_suggestion(tmp_path: Path) -> None:
    result = run_envkit("lokc", cwd=tmp_path)
    assert result.returncode == 2
    assert "No such command 'lokc'" in result.stderr
    import click

    if hasattr(click.exceptions, "NoSuchCommand"):  # click >= 8.4 suggests close names
        assert "Did you mean 'lock'?" in result.stderr


def test_the_lock_writer_loads_while_rattler_solves(tmp_path: Path, toy_channel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # solve_targets' meanwhile() (the lock writer's imports) must run while rattler solves: before
    # the solves are handed to rattler, it would delay them by its time.
    import asyncio

    import rattler

    from conda_envkit.channels import ChannelSettings, make_gateway
    from conda_envkit.locking import LockOptions, plan_locks
    from conda_envkit.solve import solve_targets
    from conda_envkit.spec import read_env_spec

    events: list[str] = []
    fetch, solve = rattler.Gateway.query, rattler.solve

    async def query(self: rattler.Gateway, *args: object, **kwargs: object) -> object:
        events.append("fetch")
        return await fetch(self, *args, **kwargs)

    async def solving(*args: object, **kwargs: object) -> object:
        events.append("solve")
        return await solve(*args, **kwargs)

    monkeypatch.setattr(rattler.Gateway, "query", query)
    monkeypatch.setattr(rattler, "solve", solving)
    env = write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64, osx-arm64]\ndependencies: [numpy]\n")
    spec = read_env_spec([env])
    channels, plans = plan_locks(spec, LockOptions(lock_path=tmp_path / "conda-lock.yml"))
    targets = [t for plan in plans for t in plan.targets]
    solved = asyncio.run(
        solve_targets(targets, channels, make_gateway(ChannelSettings(), tmp_path / "cache"), meanwhile=lambda: events.append("meanwhile"))
    )
    assert [s.target.platform for s in solved] == ["linux-64", "osx-arm64"]
    # Two platforms, each solving and (for the deadline) loading its subdir and noarch alongside;
    # the writer loads once both solves are in rattler's hands.
    assert sorted(e for e in events if e != "meanwhile") == ["fetch"] * 4 + ["solve"] * 2, events
    assert events.count("meanwhile") == 1 and events.index("meanwhile") > max(i for i, e in enumerate(events) if e == "solve"), events


# `envkit lock` with plain arguments runs without click (conda_envkit.entry); click stays the reference.
SAMPLES = [
    ["lock"],
    ["lock", "-q", "--lockfile", "x.yml"],
    ["lock", "--json", "-q", "--lockfile=x.yml", "-q"],
    ["lock", "-f", "a.yml", "--file", "b.yml", "-p", "linux-64", "--platform=osx-arm64", "--cuda", "12.4", "--no-cuda"],
    ["lock", "--blas", "mkl", "--blas=osx-arm64=accelerate", "--virtual-package-spec", "vp.yml", "--channel-alias", "https://a/"],
    ["lock", "--mirror", "conda-forge=https://m/", "--config", "c.yml", "--check", "--update", "numpy,scipy", "--update", "pandas"],
    ["lock", "--check", "--variant", "gpu", "--variant=default"],
]
LEFT_TO_CLICK = [
    [],
    ["hash"],
    ["--timeout", "5", "lock"],
    ["lock", "-h"],
    ["lock", "--help"],
    ["lock", "--nope"],
    ["lock", "extra"],
    ["lock", "--lockfile"],
    ["lock", "--platform="],
    ["lock", "-p=linux-64"],
    ["lock", "-qf", "a.yml"],
    ["lock", "--check=yes"],
    ["lock", "-f", "-"],
    ["lock", "--lockfile", "\x1b[31mred.yml"],
    ["lock", "--", "-q"],
]


def _click_lock_params(args: list[str]) -> dict[str, object]:
    import click

    from conda_envkit.cli import main

    command = main.get_command(click.Context(main), "lock")
    assert command is not None
    return dict(command.make_context("lock", args[1:]).params)


def test_the_plain_lock_reader_knows_every_lock_option_as_click_declares_it() -> None:
    import click

    from conda_envkit.cli import main
    from conda_envkit.entry import LOCK_OPTIONS

    command = main.get_command(click.Context(main), "lock")
    assert command is not None
    declared = {}
    for param in command.params:
        assert isinstance(param, click.Option) and not param.secondary_opts, param.name
        if param.is_flag:
            kind = "flag"
        else:
            kind = "path" if isinstance(param.type, click.Path) else "value"
            kind += "s" if param.multiple else ""
        declared.update({opt: (param.name, kind) for opt in param.opts})
    assert declared == LOCK_OPTIONS


@pytest.mark.parametrize("args", SAMPLES)
def test_plain_lock_arguments_are_read_as_click_reads_them(args: list[str]) -> None:
    from conda_envkit.entry import lock_arguments

    assert lock_arguments(args) == _click_lock_params(args)


@pytest.mark.parametrize("args", LEFT_TO_CLICK)
def test_other_command_lines_are_left_to_click(args: list[str]) -> None:
    from conda_envkit.entry import lock_arguments

    assert lock_arguments(args) is None


def test_a_plain_lock_does_not_load_click(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64, osx-arm64]\ndependencies: [numpy]\n")
    probe = (
        "import json, os, sys\n"
        "leave = os._exit\n"
        "def report(code):\n"
        "    print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr, flush=True)\n"
        "    leave(code)\n"
        "os._exit = report\n"
        "sys.argv = ['envkit', 'lock', '-q']\n"
        "from conda_envkit.entry import run\n"
        "run()\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["code"] == 0 and (tmp_path / "conda-lock.yml").is_file(), proc.stderr
    top = {m.split(".")[0] for m in result["modules"]}
    assert "rattler" in top and "click" not in top, sorted(top)
    assert "conda_envkit.cli" not in result["modules"]


@pytest.mark.parametrize(
    "args",
    [
        ["lock", "-q"],
        ["lock", "--check"],
        ["lock", "-q", "-p", "linux-99"],
        ["lock", "-f", "missing.yml"],
        ["lock", "--cuda", "12.4", "--no-cuda"],
        ["lock", "--blas", "linux-99=mkl"],
        ["lock", "--blas", "nope"],
        ["lock", "--update", "no-such-package", "-q"],
        ["lock", "--json", "-f", "missing.yml"],
        ["lock", "--json", "--blas", "nope"],
        ["lock", "--json", "-q", "-p", "linux-99"],
    ],
)
def test_a_plain_lock_prints_and_exits_as_through_click(tmp_path: Path, toy_channel: Path, args: list[str]) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64, osx-arm64]\ndependencies: [numpy]\n")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    plain = run_envkit(*args, cwd=tmp_path)
    through_click = run_envkit("--timeout", "300", *args, cwd=tmp_path)  # a group option: click reads this one
    assert (plain.returncode, plain.stdout, plain.stderr) == (through_click.returncode, through_click.stdout, through_click.stderr)
