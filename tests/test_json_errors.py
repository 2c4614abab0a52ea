"""A command asked for JSON that fails prints one JSON document describing the failure on stdout (a CI script
parsing stdout reads the failure too), the same `error:`/`hint:` lines on stderr, and exits as without --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conda_envkit.errors import EnvkitError
from tests.conftest import Result, run_envkit, write_env
from tests.test_lock import env_text

# Run as typed (`envkit lock` with plain arguments runs without click: conda_envkit.entry), and through click (a group
# option before the command hands the command line to it): both report alike.
WAYS = {"plain": (), "click": ("--timeout", "300")}


def _error_document(result: Result) -> dict[str, object]:
    """The one JSON document on stdout, checked to be an error's, its fields returned."""
    document = json.loads(result.stdout)  # one document, nothing else on stdout
    assert set(document) == {"error"}, document
    error = document["error"]
    assert set(error) == {"kind", "message", "hint", "exit_code"}, error
    assert error["exit_code"] == result.returncode == 2
    # stderr keeps the human lines, with the same text
    assert result.stderr.count("error: ") >= 1 and f"error: {error['message']}" in result.stderr, result.stderr
    if error["hint"]:
        assert f"  hint: {error['hint']}" in result.stderr
    return error


@pytest.mark.parametrize("way", sorted(WAYS))
def test_an_unsatisfiable_lock_prints_its_error_as_json(tmp_path: Path, toy_channel: Path, way: str) -> None:
    write_env(tmp_path, env_text(toy_channel, ["python=3.12", "numpy=1.26.4=py311_0", "hello"]))
    result = run_envkit(*WAYS[way], "lock", "--json", "-q", cwd=tmp_path)
    error = _error_document(result)
    assert error["kind"] == "SolveError"
    message = str(error["message"])
    assert message.startswith("linux-64: the specs cannot be satisfied together\n"), message
    assert "numpy=1.26.4=py311_0 (environment.yml:6)" in message and "python=3.12 (environment.yml:5)" in message
    assert "relax one of the specs named above" in str(error["hint"])
    assert not (tmp_path / "conda-lock.yml").exists()
    # Without --json, stdout stays empty and the exit code is the same.
    plain = run_envkit(*WAYS[way], "lock", "-q", cwd=tmp_path)
    assert (plain.returncode, plain.stdout, plain.stderr) == (2, "", result.stderr)


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_malformed_environment_file_prints_its_error_as_json(tmp_path: Path, toy_channel: Path, way: str) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\ndependencies:\n  - numpy\n  - pandas\n bad: [\n")
    error = _error_document(run_envkit(*WAYS[way], "lock", "--json", cwd=tmp_path))
    assert error["kind"] == "InvalidYaml"
    assert str(error["message"]).startswith("environment.yml:5: invalid YAML"), error


@pytest.mark.parametrize(
    "spec,lock,args,kind,says",
    [
        # a channel that is not there
        ("channels: [./missing-dir]\ndependencies: [numpy]\n", None, (), "ChannelError", "missing-dir"),
        # a lock that does not read (a merge conflict), whose platforms the spec leaves to it
        ("channels: [{channel}]\ndependencies: [numpy]\n", "<<<<<<< HEAD\n", (), "LockFileError", "conda-lock.yml:"),
        # an environment file that is not there
        (None, None, ("-f", "missing.yml"), "UnreadableInput", "missing.yml: file not found"),
        # a flag's value the library refuses
        ("channels: [{channel}]\ndependencies: [numpy]\n", None, ("--blas", "fastblas"), "BadFlag", "--blas: unknown BLAS 'fastblas'"),
    ],
    ids=["missing-channel", "unreadable-lock", "missing-file", "refused-flag"],
)
def test_other_lock_failures_print_their_error_as_json(
    tmp_path: Path, toy_channel: Path, spec: str | None, lock: str | None, args: tuple[str, ...], kind: str, says: str
) -> None:
    if spec is not None:
        write_env(tmp_path, spec.format(channel=toy_channel.as_uri()))
    if lock is not None:
        (tmp_path / "conda-lock.yml").write_text(lock)
    error = _error_document(run_envkit("lock", "--json", *args, cwd=tmp_path))
    assert error["kind"] == kind and says in str(error["message"]), error


def test_lock_check_prints_its_error_as_json(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy"]))
    (tmp_path / "conda-lock.yml").write_text("metadata: [\n")
    error = _error_document(run_envkit("lock", "--check", "--json", cwd=tmp_path))
    assert "conda-lock.yml" in str(error["message"]), error


@pytest.mark.parametrize(
    "args",
    [
        ("hash", "--json"),
        ("verify", "--json", "--prefix", "env"),
        ("doctor", "--json"),
        ("diff", "--format", "json", "old.yml", "conda-lock.yml"),
    ],
    ids=lambda args: args[0],
)
def test_every_command_with_json_output_prints_its_error_as_json(tmp_path: Path, args: tuple[str, ...]) -> None:
    # No lock here: each fails reading it, as a CI step run in the wrong directory would.
    error = _error_document(run_envkit(*args, cwd=tmp_path))
    assert "not found" in str(error["message"]) or "no such" in str(error["message"]).lower(), error


def test_the_json_document_is_redacted_even_for_a_hint_set_after_the_error_was_made() -> None:
    # Several platforms' errors get hints set after they were made (solve._hint_missing_together): the report redacts
    # what it prints, whatever the error holds.
    from conda_envkit.error_report import ErrorReport, error_report

    exc = EnvkitError("linux-64: cannot read https://alice:s3cret-Passw0rd@conda.example/ch")
    exc.hint = "retry https://alice:s3cret-Passw0rd@conda.example/ch with ?token=tk-0123456789"
    report = error_report(exc)
    assert isinstance(report, ErrorReport)
    printed = report.json_document() + "\n".join(report.lines())
    assert "s3cret-Passw0rd" not in printed and "tk-0123456789" not in printed, printed
    assert json.loads(report.json_document())["error"]["hint"] == "retry https://***@conda.example/ch with ?token=***"


def test_a_bug_is_not_reported_as_an_error() -> None:
    from conda_envkit.error_report import error_report

    assert error_report(KeyError("x")) is None  # a traceback: what to report
