"""Read environment.yml files (selectors, platforms, pip section, envkit keys) into an `EnvSpec`."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from rattler import MatchSpec

from conda_envkit.errors import EnvkitError
from conda_envkit.inputs import InputText, compose_yaml, read_input
from conda_envkit.platforms import (
    ALL_SELECTOR_NAMES,
    DEFAULT_PLATFORM,
    SELECTOR_NAMES,
    Blas,
    check_platform,
    parse_cuda_driver,
)

# `  - numpy  # [linux64]` -> selector "linux64". The shape conda-build and conda-lock read: the last `[...]` of the
# comment, with any text before it and text without parentheses after it (`# [osx] progress bars`, `# fast [linux]`).
_SELECTOR = re.compile(r"^(?P<body>.*?)\s*#(?P<comment>.*)\[(?P<expr>[^\[\]]+)\][^()]*$")
_BRACKETS_HINT = "; a comment's last [...] is read as a selector (as conda-build and conda-lock do): write a note without brackets"
_TOP_LEVEL_KEYS = {
    "name",
    "channels",
    "dependencies",
    "platforms",
    "prefix",
    "variables",
    "category",
    "pip-repositories",
    "allow-pypi-requests",
    "envkit",
}
_ENVKIT_KEYS = {"cuda", "blas", "variants"}
_VARIANT_KEYS = {"cuda", "blas", "platforms", "dependencies"}
# A variant names its lock file (`conda-lock.<name>.yml`, beside the default one): no dot, no slash.
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# The default variant's name: what its lock records (`envkit.variant: default`) and what `--variant default` selects.
# A variant of that name would write a lock that reads as the default variant's, so none may take it. (The same name
# as lockmodel.DEFAULT_VARIANT, which cannot import this module: this one imports rattler.)
DEFAULT_VARIANT_NAME = "default"


class SpecError(EnvkitError):
    """An environment.yml that cannot be read as a spec."""


@dataclass(frozen=True)
class Dependency:
    """One conda requirement as written, and where: `numpy >=1.26` at `environment.yml:7`.

    `match_spec` is rattler's canonical form (`hello=2.0=0` -> `hello ==2.0 0`), the
    form that is solved, hashed and checked.
    """

    spec: str
    name: str
    source: str
    match_spec: str


@dataclass(frozen=True)
class PipRequirement:
    """One line of a `pip:` section, and where it was written.

    `base_dir` is what a relative path on the line (`--find-links ./wheels`) is relative
    to: the directory of the file it was written in, or the working directory for a spec
    read from a pipe or stdin (which has no directory of its own), as pip does.
    """

    line: str
    source: str
    base_dir: Path = field(default=Path("."), compare=False)


@dataclass(frozen=True)
class Variant:
    """A named way to solve the same spec (e.g. `cpu`, `cuda124`).

    `cuda` is the assumed CUDA driver version, or None for a CPU-only solve (`cuda: none`); a variant that does not
    say (`inherits_cuda`) takes the spec's, as it takes its `blas`; `blas` maps platform -> BLAS (a `*` key applies
    to all platforms). `dependencies` maps platform -> the variant's own conda specs (selectors applied), which
    replace the shared ones package by package (`EnvSpec.dependencies_for`); empty when it writes none.
    """

    name: str
    cuda: str | None = None
    blas: tuple[tuple[str, Blas], ...] = ()
    platforms: tuple[str, ...] = ()
    inherits_cuda: bool = False
    dependencies: dict[str, tuple[Dependency, ...]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class EnvSpec:
    """Everything a lock is made from, after selectors are applied per platform."""

    sources: tuple[Path, ...]  # the files read (a pipe or stdin has no path to record)
    name: str | None
    channels: tuple[str, ...]
    platforms: tuple[str, ...]
    dependencies: dict[str, tuple[Dependency, ...]]
    pip: dict[str, tuple[PipRequirement, ...]] = field(default_factory=dict)
    cuda: str | None = None
    blas: tuple[tuple[str, Blas], ...] = ()
    variants: tuple[Variant, ...] = ()
    base_dir: Path = Path(".")  # what relative channel paths are relative to: the first file's directory
    # False when no -p and no file named platforms (the default was taken).
    platforms_given: bool = True
    # The platforms the files name (under -p too; empty when none does).
    declared_platforms: tuple[str, ...] = ()

    @property
    def files_named(self) -> str:
        """The files read, for messages (`environment.yml, dev.yml`; a spec from a pipe has none)."""
        return ", ".join(str(path) for path in self.sources) or "the environment file"

    def dependencies_for(self, platform: str, variant: Variant | None = None) -> tuple[Dependency, ...]:
        """The conda specs one platform of one variant solves: the shared ones, with the variant's own replacing
        them package by package (as a later -f file's do) and added after them."""
        shared = self.dependencies[platform]
        own = variant.dependencies.get(platform, ()) if variant is not None else ()
        return merge_dependencies(shared, own) if own else shared  # (without own lines: the very same specs)


def merge_dependencies(*lists: tuple[Dependency, ...] | list[Dependency]) -> tuple[Dependency, ...]:
    """Dependency lists merged as conda-lock merges -f files: a later line for a package replaces the earlier one
    where it stood, a new package is added at the end."""
    merged: dict[str, Dependency] = {}
    for deps in lists:
        for dep in deps:
            merged[dep.name] = dep
    return tuple(merged.values())


# -- selectors ---------------------------------------------------------------------


def _eval_selector(expr: str, platform: str, where: str) -> bool:
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise SpecError(
            f"{where}: cannot parse selector [{expr}]",
            hint="use platform names joined by and/or/not, e.g. [linux and not aarch64]" + _BRACKETS_HINT,
        ) from exc
    truth = SELECTOR_NAMES[platform]

    def walk(node: ast.AST) -> bool:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BoolOp):
            values = [walk(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not walk(node.operand)
        if isinstance(node, ast.Name):
            if node.id not in ALL_SELECTOR_NAMES:
                raise SpecError(
                    f"{where}: unknown selector {node.id!r}",
                    hint=f"envkit knows platform selectors only: {', '.join(sorted(ALL_SELECTOR_NAMES))}" + _BRACKETS_HINT,
                )
            return node.id in truth
        raise SpecError(
            f"{where}: unsupported selector [{expr}]",
            hint="only platform names with and/or/not are supported",
        )

    return walk(tree)


def apply_selectors(text: str, platform: str, path: Path | str) -> str:
    """Blank the lines whose selector is false on `platform`, and the lines indented under them (`- pip:  # [linux]`
    drops its whole section: its entries were read as part of the line before), keeping line numbers."""
    out = []
    dropped_at: int | None = None  # the indentation of the line dropped last, while the lines under it follow
    for number, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" "))
        if dropped_at is not None and (not line.strip() or indent > dropped_at):
            out.append("")
            continue
        dropped_at = None
        match = _SELECTOR.match(line)
        if match and not line.lstrip().startswith("#"):
            keep = _eval_selector(match["expr"], platform, f"{path}:{number}")
            out.append(match["body"] if keep else "")
            dropped_at = None if keep else indent
        else:
            out.append(line)
    return "\n".join(out) + "\n"


# -- reading -------------------------------------------------------------------------


def _where(path: Path | str, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(node: yaml.Node | None) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): v for k, v in node.value}


def _scalar_list(node: yaml.Node, path: str, what: str) -> list[tuple[str, str]]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise SpecError(f"{_where(path, node)}: `{what}` must be a list", hint=f"write `{what}:` followed by `- item` lines")
    items = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            raise SpecError(f"{_where(path, item)}: `{what}` entries must be strings", hint="write one `- entry` per line")
        items.append((str(item.value), _where(path, item)))
    return items


def _parse_dependencies(
    node: yaml.Node, path: str, base_dir: Path, variant: str | None = None
) -> tuple[list[Dependency], list[PipRequirement]]:
    """The conda specs and pip lines of a `dependencies:` list: the top-level one, or a variant's (conda specs only)."""
    key = "dependencies" if variant is None else f"envkit.variants.{variant}.dependencies"
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
        return [], []  # (every line dropped by a selector, or none written: "no dependencies for <platform>")
    if not isinstance(node, yaml.SequenceNode):
        raise SpecError(f"{_where(path, node)}: `{key}` must be a list", hint="write `dependencies:` followed by `- package` lines")
    conda: list[Dependency] = []
    pip: list[PipRequirement] = []
    for item in node.value:
        where = _where(path, item)
        if isinstance(item, yaml.ScalarNode):
            text = str(item.value).strip()
            if not item.style and " - " in text:  # plain, not quoted: `- a` then `   - b` (one space too deep) reads as one entry "a - b"
                raise SpecError(
                    f"{where}: dependency {text!r} holds ' - ': is the next `- entry` line indented too far?",
                    hint="give every `- entry` of the list the same indentation",
                )
            try:
                match_spec = MatchSpec(text, strict=False)  # conda's grammar: `pytorch=1.8.1=py3.8_cuda11.1_0`
            except Exception as exc:  # rattler raises its own InvalidMatchSpecError
                raise SpecError(
                    f"{where}: invalid dependency {text!r}: {exc}",
                    hint="write a conda match spec, e.g. `numpy >=1.26`, `pytorch=2.3=*cpu*`, `conda-forge::numpy`",
                ) from exc
            if match_spec.name is None:
                raise SpecError(f"{where}: dependency {text!r} has no package name", hint="name the package")
            conda.append(Dependency(text, match_spec.name.normalized, where, str(match_spec)))
        elif isinstance(item, yaml.MappingNode):
            for section, value in item.value:
                if variant is not None:
                    pip_hint = (
                        "write pip requirements in the `- pip:` section of the top-level `dependencies:` (every variant locks"
                        " it; a selector limits a line to some platforms), and conda specs here"
                    )
                    raise SpecError(
                        f"{_where(path, section)}: `{section.value}:` in `{key}`: a variant's dependencies are conda specs only",
                        hint=(pip_hint if section.value == "pip" else "write conda specs") + " as `- package` lines",
                    )
                if section.value != "pip":
                    raise SpecError(
                        f"{_where(path, section)}: unknown section `{section.value}:` in dependencies",
                        hint="only a `pip:` section may appear inside dependencies",
                    )
                pip.extend(PipRequirement(line, w, base_dir) for line, w in _scalar_list(value, path, "pip"))
        else:
            raise SpecError(f"{where}: unexpected entry in {key}", hint="write one `- package` per line")
    _one_line_per_package(conda)
    return conda, pip


def _one_line_per_package(conda: list[Dependency]) -> None:
    # conda applies every line for a name, a lock keeps one spec per name: refuse
    # rather than drop one silently.
    first_line: dict[str, Dependency] = {}
    for dep in conda:
        first = first_line.setdefault(dep.name, dep)
        if first is not dep:
            raise SpecError(
                f"{dep.source}: `{dep.spec}` names {dep.name} again (first at {first.source}: `{first.spec}`)",
                hint=f"write one line per package, with the constraints combined (e.g. `{dep.name} >=1.2,<2`)",
            )


def _parse_blas(node: yaml.Node, path: str, key: str = "envkit.blas") -> tuple[tuple[str, Blas], ...]:
    if isinstance(node, yaml.ScalarNode):
        return (("*", _blas_value(str(node.value), path, node)),)
    if not isinstance(node, yaml.MappingNode):
        raise SpecError(
            f"{_where(path, node)}: `{key}` must be a BLAS name or a mapping of platform -> BLAS",
            hint='write e.g. `blas: mkl` or `blas: {linux-64: mkl, "*": openblas}`',
        )
    table = []
    for platform, value in _mapping(node).items():
        if platform != "*":
            check_platform(platform, _where(path, value))
        if not isinstance(value, yaml.ScalarNode):
            raise SpecError(f"{_where(path, value)}: `{key}.{platform}` must be a BLAS name", hint="write e.g. `linux-64: mkl`")
        table.append((platform, _blas_value(str(value.value), path, value)))
    return tuple(sorted(table))


def _blas_value(value: str, path: str, node: yaml.Node) -> Blas:
    try:
        return Blas(value)
    except ValueError:
        raise SpecError(
            f"{_where(path, node)}: unknown BLAS {value!r}",
            hint=f"use one of: {', '.join(b.value for b in Blas)}",
        ) from None


def _cuda_value(node: yaml.Node, path: str, key: str = "envkit.cuda") -> str | None:
    """The CUDA *driver* version a solve assumes (`__cuda`), as conda-lock's --with-cuda."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag.endswith(":null") or str(node.value).strip() == "":
            return None
        value: object = str(node.value)
    else:
        kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
        raise SpecError(
            f"{_where(path, node)}: `{key}`: CUDA must be a version like 12.4 or `none`, not a {kind}",
            hint='write e.g. `cuda: "12.4"` (the driver version) or `cuda: none`',
        )
    return parse_cuda_driver(value, f"{_where(path, node)}: `{key}`")


def _known_keys(key: str, known: frozenset[str] | set[str]) -> str:
    """The hint for an unknown key: the closest known one (a typo), then all of them."""
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return (f"did you mean `{close[0]}`? " if close else "") + f"known keys: {', '.join(sorted(known))}"


def _parse_envkit(node: yaml.Node, path: str) -> tuple[str | None, tuple[tuple[str, Blas], ...], tuple[Variant, ...]]:
    keys = _mapping(node)
    for key in keys:
        if key not in _ENVKIT_KEYS:
            raise SpecError(f"{_where(path, keys[key])}: unknown key `envkit.{key}`", hint=_known_keys(key, _ENVKIT_KEYS))
    cuda = _cuda_value(keys["cuda"], path) if "cuda" in keys else None
    blas = _parse_blas(keys["blas"], path) if "blas" in keys else ()
    if "variants" in keys and not isinstance(keys["variants"], yaml.MappingNode):
        raise SpecError(f"{_where(path, keys['variants'])}: `envkit.variants` must be a mapping of name -> settings", hint="see README")
    variants = []
    for name_node, vnode in keys["variants"].value if "variants" in keys else ():
        name = str(name_node.value)
        if not VARIANT_NAME.fullmatch(name):
            raise SpecError(f"{_where(path, name_node)}: invalid variant name {name!r}", hint="use lower-case letters, digits, - and _")
        if name == DEFAULT_VARIANT_NAME:
            raise SpecError(
                f"{_where(path, name_node)}: variant name {name!r} is reserved: it names the default variant",
                hint="the spec's own keys (`dependencies:`, `platforms:`, `envkit.cuda`, `envkit.blas`) are the default variant, "
                "whose lock is the --lockfile itself (conda-lock.yml; `--variant default`): give this variant another name, "
                "e.g. `cpu` or `gpu`",
            )
        vkeys = _mapping(vnode)
        for key in vkeys:
            if key not in _VARIANT_KEYS:
                raise SpecError(
                    f"{_where(path, vkeys[key])}: unknown key `{key}` in variant {name!r}",
                    hint=_known_keys(key, _VARIANT_KEYS),
                )
        platforms = (
            tuple(check_platform(p, w) for p, w in _scalar_list(vkeys["platforms"], path, "platforms")) if "platforms" in vkeys else ()
        )
        variants.append(
            Variant(
                name=name,
                cuda=_cuda_value(vkeys["cuda"], path, f"envkit.variants.{name}.cuda") if "cuda" in vkeys else None,
                blas=_parse_blas(vkeys["blas"], path, f"envkit.variants.{name}.blas") if "blas" in vkeys else blas,
                platforms=platforms,
                inherits_cuda="cuda" not in vkeys,
            )
        )
    return cuda, blas, tuple(variants)


@dataclass(frozen=True)
class _FileSpec:
    path: str  # the file as named in messages
    name: str | None
    channels: tuple[str, ...]
    dependencies: dict[str, tuple[Dependency, ...]]
    pip: dict[str, tuple[PipRequirement, ...]]
    envkit: tuple[str | None, tuple[tuple[str, Blas], ...], tuple[Variant, ...]] | None


def _top_level(source: InputText) -> dict[str, yaml.Node]:
    """The top-level keys of an environment file (composed once; selectors do not apply here)."""
    raw = compose_yaml(source)
    if not isinstance(raw, yaml.MappingNode):
        raise SpecError(
            f"{source.name}: expected a mapping with `channels:` and `dependencies:`",
            hint="e.g. `channels: [conda-forge]` and `dependencies: [python=3.11, numpy]`, one per line",
        )
    top = _mapping(raw)
    for key in top:
        if key not in _TOP_LEVEL_KEYS:
            raise SpecError(f"{_where(source.name, top[key])}: unknown key `{key}`", hint=_known_keys(key, _TOP_LEVEL_KEYS))
    return top


def _declared_platforms(top: dict[str, yaml.Node], path: str) -> tuple[str, ...]:
    return tuple(check_platform(p, w) for p, w in _scalar_list(top["platforms"], path, "platforms")) if "platforms" in top else ()


def _read_one(source: InputText, top: dict[str, yaml.Node], platforms: tuple[str, ...]) -> _FileSpec:
    path, text = source.name, source.text
    channels = tuple(c for c, _ in _scalar_list(top["channels"], path, "channels")) if "channels" in top else ()
    channels = tuple(c for c in channels if c != "nodefaults")

    dependencies: dict[str, tuple[Dependency, ...]] = {}
    pip: dict[str, tuple[PipRequirement, ...]] = {}
    variant_dependencies: dict[str, dict[str, tuple[Dependency, ...]]] = {}  # variant -> platform -> its own specs
    base_dir = source.path.resolve().parent if source.path is not None else Path.cwd()
    # Platforms whose selectors keep the same lines share one parse (a file without selectors is
    # composed and its match specs parsed once, not once per platform).
    parsed: dict[str, tuple[list[Dependency], list[PipRequirement], dict[str, list[Dependency]]]] = {}
    for platform in platforms:
        selected = apply_selectors(text, platform, path)
        if selected not in parsed:
            top_selected = _mapping(compose_yaml(InputText(source.name, selected, source.path)))
            node = top_selected.get("dependencies")
            conda, pip_lines = ([], []) if node is None else _parse_dependencies(node, path, base_dir)
            parsed[selected] = (conda, pip_lines, _variant_dependencies(top_selected, path, base_dir))
        conda, pip_lines, own = parsed[selected]
        dependencies[platform] = tuple(conda)
        pip[platform] = tuple(pip_lines)
        for name, deps in own.items():
            variant_dependencies.setdefault(name, {})[platform] = tuple(deps)
    index_lines = _pip_repositories(top, path)
    if index_lines:
        pip = {platform: (*index_lines, *lines) if lines else lines for platform, lines in pip.items()}
    name_node = top.get("name")
    envkit = _parse_envkit(top["envkit"], path) if "envkit" in top else None
    if envkit is not None:
        cuda, blas, variants = envkit
        envkit = cuda, blas, tuple(replace(v, dependencies=variant_dependencies.get(v.name, {})) for v in variants)
    return _FileSpec(
        path=path,
        name=str(name_node.value) if isinstance(name_node, yaml.ScalarNode) else None,
        channels=channels,
        dependencies=dependencies,
        pip=pip,
        envkit=envkit,
    )


def _variant_dependencies(top: dict[str, yaml.Node], path: str, base_dir: Path) -> dict[str, list[Dependency]]:
    """Each variant's own `dependencies:` in a file whose selectors were applied (variant name -> conda specs)."""
    variants = _mapping(_mapping(top.get("envkit")).get("variants"))
    found = {}
    for name, vnode in variants.items():
        node = _mapping(vnode).get("dependencies")
        if node is not None:  # (the variant's other keys, and its name, are checked by _parse_envkit)
            found[name] = _parse_dependencies(node, path, base_dir, variant=name)[0]
    return found


def _pip_repositories(top: dict[str, yaml.Node], path: str) -> tuple[PipRequirement, ...]:
    """conda-lock's `pip-repositories:` and `allow-pypi-requests:` as pip index lines.

    Repositories are extra indexes next to PyPI; with `allow-pypi-requests: false` the
    first one replaces PyPI (and with none, no index is used at all).
    """
    repos = _scalar_list(top["pip-repositories"], path, "pip-repositories") if "pip-repositories" in top else []
    allow = top.get("allow-pypi-requests")
    allow_pypi = True
    if allow is not None:
        value = str(allow.value).strip().lower() if isinstance(allow, yaml.ScalarNode) else ""
        if value not in ("true", "false"):
            raise SpecError(
                f"{_where(path, allow)}: `allow-pypi-requests` must be true or false", hint="write `allow-pypi-requests: false`"
            )
        allow_pypi = value == "true"
    lines = []
    for index, (url, where) in enumerate(repos):
        option = "--index-url" if index == 0 and not allow_pypi else "--extra-index-url"
        lines.append(PipRequirement(f"{option} {url}", where))
    if not allow_pypi and not repos:
        lines.append(PipRequirement("--no-index", _where(path, allow)))
    return tuple(lines)


def _unify_channels(files: list[_FileSpec]) -> tuple[str, ...]:
    # conda-lock's rule: every file's channel list must be the tail of the longest one,
    # otherwise which channel comes first is ambiguous.
    longest = max((f.channels for f in files), key=len)
    for f in files:
        if f.channels and longest[-len(f.channels) :] != f.channels:
            raise SpecError(
                f"{f.path}: channels {list(f.channels)} conflict with {list(longest)}",
                hint="list the channels in the same order in every file (a file may omit leading ones)",
            )
    return longest


def read_env_spec(paths: list[Path], platforms: list[str] | None = None) -> EnvSpec:
    """Read and merge environment files; `platforms` (from `-p`) overrides the files'."""
    if not paths:
        raise SpecError("no environment file given", hint="pass -f environment.yml")
    requested = tuple(check_platform(p, "-p/--platform") for p in platforms or ())
    requested = tuple(dict.fromkeys(requested))
    # Each file is read once: `-f /dev/stdin` or `-f <(...)` cannot be read twice.
    inputs = [read_input(p, "environment file") for p in paths]
    tops = [_top_level(source) for source in inputs]
    declared = [_declared_platforms(top, source.name) for source, top in zip(inputs, tops, strict=True)]  # checked even under -p
    given = bool(requested)
    if not requested:
        # Platforms named in any file (in order) decide, else the default.
        requested = tuple(dict.fromkeys(p for platforms in declared for p in platforms))
        given = bool(requested)
        requested = requested or (DEFAULT_PLATFORM,)
    files = [_read_one(source, top, requested) for source, top in zip(inputs, tops, strict=True)]

    dependencies: dict[str, tuple[Dependency, ...]] = {}
    pip: dict[str, tuple[PipRequirement, ...]] = {}
    for platform in requested:
        # Later files override earlier ones package by package, as in conda-lock.
        merged = merge_dependencies(*(f.dependencies[platform] for f in files))
        dependencies[platform] = merged
        pip[platform] = tuple(req for f in files for req in f.pip[platform])
        if not merged and not pip[platform]:
            raise SpecError(
                f"{', '.join(source.name for source in inputs)}: no dependencies for {platform}",
                hint="list at least one package under `dependencies:` (check the selectors)",
            )

    cuda: str | None = None
    blas: tuple[tuple[str, Blas], ...] = ()
    variants: dict[str, Variant] = {}
    for f in files:
        if f.envkit is not None:
            f_cuda, f_blas, f_variants = f.envkit
            cuda = f_cuda if f_cuda is not None else cuda
            blas = f_blas or blas
            variants.update({v.name: v for v in f_variants})

    channels = _unify_channels(files)
    if not channels:
        raise SpecError(
            f"{', '.join(source.name for source in inputs)}: no channels listed",
            hint="add `channels: [conda-forge]` (envkit never assumes a default channel)",
        )
    files_read = tuple(source.path for source in inputs if source.path is not None)
    return EnvSpec(
        sources=files_read,
        name=next((f.name for f in files if f.name), None),
        channels=channels,
        platforms=requested,
        dependencies=dependencies,
        pip=pip,
        cuda=cuda,
        blas=blas,
        variants=tuple(variants.values()),
        base_dir=files_read[0].resolve().parent if files_read else Path.cwd(),
        platforms_given=given,
        declared_platforms=tuple(dict.fromkeys(p for platforms in declared for p in platforms)),
    )
