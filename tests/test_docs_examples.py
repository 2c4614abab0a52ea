"""Every fenced example in README.md, docs/ and recipes/README.md is run as far as this
machine allows: environment.yml examples are locked against the real-metadata snapshot (or
read as specs when they name a private index), every `envkit ...` command line is parsed by
the real CLI (unknown options, bad choices and missing arguments fail), Python snippets
compile and their imports resolve, and JSON/YAML documents parse and match the code."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from tests.conftest import SHARED_CHANNELS, run_envkit

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "recipes" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    language: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _examples(language: str) -> list[Example]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                found.append(Example(path, text.count("\n", 0, match.start()) + 1, language, match.group(2)))
    return found


def _params(language: str) -> list[object]:
    return [pytest.param(e, id=e.id) for e in _examples(language)]


def test_the_docs_have_examples_of_each_kind() -> None:
    # Guards the extraction itself: a changed fence syntax must not turn these tests into no-ops.
    assert {lang: len(_examples(lang)) >= 1 for lang in ("bash", "yaml", "python", "json")} == dict.fromkeys(
        ("bash", "yaml", "python", "json"), True
    )
    assert len(_examples("bash")) >= 10


def _command_lines(text: str) -> list[list[str]]:
    """The `envkit ...` invocations of a shell block (comments dropped, `a && b` split)."""
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word == "&&":
                if current and current[0] == "envkit":
                    commands.append(current[1:])
                current = []
            else:
                current.append(word)
    return commands


@pytest.mark.parametrize("example", _params("bash"))
def test_every_envkit_command_line_parses(example: Example) -> None:
    from conda_envkit.cli import main

    for args in _command_lines(example.text):
        name, rest = args[0], args[1:]
        command = main.get_command(click.Context(main), name)
        assert command is not None, f"{example.id}: no command `envkit {name}`"
        try:
            command.make_context(f"envkit {name}", list(rest))
        except click.ClickException as exc:
            pytest.fail(f"{example.id}: `envkit {shlex.join(args)}`: {exc.format_message()}")


def _is_environment(data: object) -> bool:
    return isinstance(data, dict) and "dependencies" in data


@pytest.mark.parametrize("example", _params("yaml"))
def test_every_yaml_example_is_valid(example: Example, tmp_path: Path) -> None:
    from conda_envkit.spec import read_env_spec

    data = yaml.safe_load(example.text)
    if isinstance(data, list):  # a lock file's package entries (conda-lock format version 1, as envkit writes)
        from conda_lock.lockfile.v1.models import LockedDependency

        for entry in data:
            LockedDependency.model_validate(entry)
        return
    assert isinstance(data, dict), example.id
    text = example.text
    if "channels" not in data:
        text = "channels: [conda-forge]\n" + text
    if not _is_environment(data):
        text += "dependencies: [python]\n"
    (tmp_path / "environment.yml").write_text(text, encoding="utf-8")
    read_env_spec([tmp_path / "environment.yml"], [])  # raises SpecError with file:line on a bad key or selector


def _lockable() -> list[object]:
    out = []
    for e in _examples("yaml"):
        data = yaml.safe_load(e.text)
        if _is_environment(data) and "channels" in data and "pip" not in e.text:
            out.append(pytest.param(e, id=e.id))
    return out


@pytest.mark.skipif(not (SHARED_CHANNELS / "conda-forge").is_dir(), reason="needs ../shared/data/channels beside the checkout")
@pytest.mark.parametrize("example", _lockable())
def test_environment_examples_lock_against_the_snapshot(example: Example, tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(example.text, encoding="utf-8")
    alias = SHARED_CHANNELS.as_uri() + "/"
    result = run_envkit("lock", "-q", "--channel-alias", alias, cwd=tmp_path)
    assert result.returncode == 0, f"{example.id}:\n{result.stderr}"
    checked = run_envkit("lock", "--check", "--channel-alias", alias, cwd=tmp_path)
    assert checked.returncode == 0, f"{example.id}:\n{checked.output}"


@pytest.mark.parametrize("example", _params("python"))
def test_python_examples_compile_and_import(example: Example) -> None:
    compile(example.text, example.id, "exec")
    for module, names in re.findall(r"^from (conda_envkit[\w.]*) import ([\w, ]+)$", example.text, re.M):
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(imported, name), f"{example.id}: {module} has no {name}"


def _json_keys(text: str) -> tuple[object, set[str]]:
    data = json.loads(re.sub(r"//[^\n]*", "", text))
    return data, set(data) if isinstance(data, dict) else set()


@pytest.mark.parametrize("example", _params("json"))
def test_json_examples_parse_and_match_the_code(example: Example) -> None:
    from conda_envkit.lockdiff import DIFF_SCHEMA, render_json
    from conda_envkit.record import BAKE_RECORD_SCHEMA, ENVIRONMENT_SCHEMA, EnvironmentRecord

    data, keys = _json_keys(example.text)
    if isinstance(data, dict) and data.get("schema") == ENVIRONMENT_SCHEMA:
        assert keys == set(EnvironmentRecord(source="lock", lock_hash="sha256:0").to_json()), example.id
    if isinstance(data, dict) and data.get("schema") == BAKE_RECORD_SCHEMA:
        assert {"schema", "lock_hash", "image", "platforms", "references", "tags", "outputs", "prefix"} <= keys, example.id
    if isinstance(data, dict) and data.get("schema") == DIFF_SCHEMA:
        assert keys == set(json.loads(render_json([], "old", "new"))), example.id
    if isinstance(data, dict) and "error" in data:  # what a command asked for JSON prints when it fails
        from conda_envkit.error_report import ErrorReport

        printed = json.loads(ErrorReport(kind="SolveError", message="m", hint="h").json_document())
        assert keys == set(printed) and set(data["error"]) == set(printed["error"]), example.id
