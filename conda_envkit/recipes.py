"""Recipes: what an image looks like besides the environment (data in recipe.yml, a jinja2 Dockerfile).

Built-in recipes live in the repository's `recipes/`, which the package reaches (and a wheel
ships) as `conda_envkit/builtin_recipes` ($ENVKIT_RECIPES overrides);
`--recipe-dir DIR` adds a directory searched first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rattler import Version

from conda_envkit.errors import EnvkitError
from conda_envkit.inputs import load_yaml, read_input

RECIPES_ENV_VAR = "ENVKIT_RECIPES"
BUILTIN_RECIPES = Path(__file__).parent / "builtin_recipes"
_KEYS = {"description", "base", "env", "reproducibility", "user", "workdir", "entrypoint", "cmd", "labels", "files"}


class RecipeError(EnvkitError):
    """A recipe that cannot be found, read or applied."""


@dataclass(frozen=True)
class RecipeFile:
    """An extra file: its source in the recipe directory and its absolute path in the image."""

    source: Path
    dest: str


@dataclass(frozen=True)
class Recipe:
    """One recipe, read from `<dir>/recipe.yml`."""

    name: str
    directory: Path
    description: str = ""
    base_cuda: dict[str, str] = field(default_factory=dict)
    base_cpu: str = "scratch"
    env: dict[str, str] = field(default_factory=dict)
    reproducibility: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    files: tuple[RecipeFile, ...] = ()

    def base_for(self, cuda_driver: str | None) -> str:
        """The base image for a lock solved for the CUDA driver `cuda_driver` (None: no CUDA).

        The newest CUDA base not newer than the lock's driver assumption: a base's
        NVIDIA_REQUIRE_CUDA must not demand a newer driver than the lock was solved for
        (the lock's toolkit may be newer, through minor-version compatibility).
        """
        cuda_version = cuda_driver
        if cuda_version in (None, "", "none", "unknown") or not self.base_cuda:
            return self.base_cpu
        wanted = Version(cuda_version)
        fitting = [v for v in self.base_cuda if Version(v) <= wanted]
        if not fitting:
            raise RecipeError(
                f"recipe {self.name}: no base for CUDA {cuda_version} (its bases: {', '.join(sorted(self.base_cuda))})",
                hint="lock for a newer CUDA driver (--cuda), or add a base for this CUDA to the recipe",
            )
        return self.base_cuda[max(fitting, key=Version)]

    def environment(self, reproducible: bool) -> dict[str, str]:
        return {**self.env, **(self.reproducibility if reproducible else {})}


def recipe_dirs(extra: Path | None = None) -> list[Path]:
    builtin = Path(os.environ[RECIPES_ENV_VAR]) if os.environ.get(RECIPES_ENV_VAR) else BUILTIN_RECIPES
    return [d for d in (extra, builtin) if d is not None]


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: expected a mapping", hint="write KEY: value lines")
    return {str(k): str(v) for k, v in value.items()}


def _command(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RecipeError(f"{where}: expected a list (exec form)", hint='e.g. cmd: ["python"]')
    return tuple(str(v) for v in value)


def read_recipe(directory: Path) -> Recipe:
    """Read `<directory>/recipe.yml`, checking every key and file it names."""
    path = directory / "recipe.yml"
    data = load_yaml(read_input(path, "recipe")) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping", hint="see recipes/README.md for the keys")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown keys {unknown}", hint=f"known keys: {', '.join(sorted(_KEYS))}")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise RecipeError(f"{path}: `base` must map `cuda` and `cpu`", hint="e.g. base: {cpu: debian:bookworm-slim}")
    files = []
    for item in data.get("files") or []:
        if not isinstance(item, dict) or not item.get("src") or not str(item.get("dest", "")).startswith("/"):
            raise RecipeError(
                f"{path}: each of `files` needs src and an absolute dest", hint="e.g. {src: run.sh, dest: /usr/local/bin/run}"
            )
        source = (directory / str(item["src"])).resolve()
        if directory.resolve() not in source.parents or not source.is_file():
            raise RecipeError(f"{path}: file {item['src']!r} is not a file inside the recipe directory", hint="put it next to recipe.yml")
        dest = str(item["dest"])
        if ".." in PurePosixPath(dest).parts:
            raise RecipeError(f"{path}: dest {dest!r} climbs with ..", hint="use a plain absolute path")
        files.append(RecipeFile(source, dest))
    return Recipe(
        name=directory.name,
        directory=directory,
        description=str(data.get("description") or ""),
        base_cuda=_strings(base.get("cuda"), f"{path}: base.cuda"),
        base_cpu=str(base.get("cpu") or "scratch"),
        env=_strings(data.get("env"), f"{path}: env"),
        reproducibility=_strings(data.get("reproducibility"), f"{path}: reproducibility"),
        user=str(data["user"]) if data.get("user") is not None else None,
        workdir=str(data["workdir"]) if data.get("workdir") is not None else None,
        entrypoint=_command(data.get("entrypoint"), f"{path}: entrypoint"),
        cmd=_command(data.get("cmd"), f"{path}: cmd"),
        labels=_strings(data.get("labels"), f"{path}: labels"),
        files=tuple(files),
    )


def list_recipes(extra: Path | None = None) -> list[Recipe]:
    """Every recipe, the extra directory's first (a name there hides a built-in one)."""
    found: dict[str, Recipe] = {}
    for directory in recipe_dirs(extra):
        if directory.is_dir():
            for sub in sorted(directory.iterdir()):
                if (sub / "recipe.yml").exists() and sub.name not in found:
                    found[sub.name] = read_recipe(sub)
    return [found[name] for name in sorted(found)]


def load_recipe(name: str, extra: Path | None = None) -> Recipe:
    for directory in recipe_dirs(extra):
        if (directory / name / "recipe.yml").exists():
            return read_recipe(directory / name)
    names = ", ".join(r.name for r in list_recipes(extra)) or "none"
    raise RecipeError(f"unknown recipe {name!r} (available: {names})", hint="see `envkit recipes`, or pass --recipe-dir")


def recipe_data(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data for a template: strings, lists and dicts, no objects to reach through."""
    return {
        "name": recipe.name,
        "description": recipe.description,
        "base_cpu": recipe.base_cpu,
        "base_cuda": dict(recipe.base_cuda),
        "env": dict(recipe.env),
        "reproducibility": dict(recipe.reproducibility),
        "user": recipe.user,
        "workdir": recipe.workdir,
        "entrypoint": list(recipe.entrypoint) if recipe.entrypoint is not None else None,
        "cmd": list(recipe.cmd) if recipe.cmd is not None else None,
        "labels": dict(recipe.labels),
        "files": [f.dest for f in recipe.files],
    }


def _one_line_values(value: Any, where: str) -> None:
    """Refuse a newline or control character in any value a Dockerfile line is built from."""
    if isinstance(value, str):
        if any(c in value for c in "\n\r\x00") or not all(c.isprintable() or c == "\t" for c in value):
            raise RecipeError(f"{where}: {value[:60]!r} holds a newline or control character", hint="a Dockerfile value must be one line")
    elif isinstance(value, dict):
        for k, v in value.items():
            _one_line_values(str(k), f"{where} key")
            _one_line_values(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _one_line_values(v, f"{where}[{i}]")


def render_dockerfile(recipe: Recipe, context: dict[str, Any]) -> str:
    """The Dockerfile for a build context: the recipe's own Dockerfile.j2, else the shared one.

    A recipe from a repository is code from someone else: the template runs in jinja2's
    sandbox, in a child process with memory, CPU and output limits (template_sandbox), may
    include only files of its own directory, and sees plain data only.
    """
    from conda_envkit.template_sandbox import render_untrusted

    own = recipe.directory / "Dockerfile.j2"
    shared = BUILTIN_RECIPES / "Dockerfile.j2"
    template_path = own if own.is_file() else shared
    data = {"recipe": recipe_data(recipe), **context}
    for key, value in data.items():
        _one_line_values(value, f"recipe {recipe.name}: {key}")
    rendered = render_untrusted(template_path.parent, template_path.name, data)
    if rendered.text is None:
        raise RecipeError(f"{template_path}: {rendered.error}", hint="fix the template")
    return rendered.text
