"""YAML read strictly: one document, bounded nesting, no recursion in C, errors naming file:line.

The lock and environment.yml readers compose through here; a project-wide input reader can
replace this module in one place.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from conda_envkit.errors import EnvkitError
from conda_envkit.inputs import yaml_error_line, yaml_syntax_hint

MAX_DEPTH = 32
# PyYAML's C composer recurses once per nesting level; far below this it is safe.
_SAFE_NESTING = 1000
_HINT = "fix the YAML at that line (or restore the file from version control)"

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_BOOL = frozenset("true True TRUE false False FALSE yes Yes YES no No NO on On ON off Off OFF".split())
_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")  # compiled once: resolve runs for every scalar of a lock
_STR, _NULL_TAG, _BOOL_TAG, _INT_TAG = (f"tag:yaml.org,2002:{t}" for t in ("str", "null", "bool", "int"))


class StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader with a lean resolver: scalars are strings, bools, ints or null.

    Floats stay strings (a version `1.10` must not become 1.1); readers check every value
    against its own grammar, so nothing is lost by resolving less.
    """

    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            tag: str = super().resolve(kind, value, implicit)
            return tag
        if not implicit[0]:
            return _STR
        if value in _NULL:
            return _NULL_TAG
        if value in _BOOL:
            return _BOOL_TAG
        if value is not None and _INT.fullmatch(value):
            return _INT_TAG
        return _STR


def _may_nest_deeply(text: str) -> bool:
    """Whether `text` could nest more than `_SAFE_NESTING` levels.

    In block style each level starts at a greater column than its parent (or the same
    column once, for a sequence under a key), so the depth is at most twice the longest
    line; each flow level needs an opening bracket.
    """
    flow = text.count("[") - text.count("[]") + text.count("{") - text.count("{}")
    longest = max(map(len, text.splitlines()), default=0)
    return flow + 2 * longest + 2 > _SAFE_NESTING


def _syntax_error(exc: yaml.YAMLError, text: str, path: Path, error: type[EnvkitError], what: str) -> EnvkitError:
    mark = getattr(exc, "problem_mark", None)
    line, at_end = yaml_error_line(text, mark.line) if mark is not None else (0, "")
    where = f"{path}:{line}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return error(
        f"{where}: invalid YAML in {what}: {problem}{at_end}", hint=yaml_syntax_hint(text, mark.line if mark is not None else None, _HINT)
    )


def compose_strict(text: str, path: Path, error: type[EnvkitError], what: str, aliases: bool = False) -> yaml.Node | None:
    """The YAML node tree of `text`: one document, at most `MAX_DEPTH` deep.

    Without `aliases`, an alias is refused (or, on the fast path, left as a shared node for
    the reader to refuse).

    A text that could nest deeply is composed from libyaml's events without recursion
    (PyYAML's composer recurses in C and crashes the interpreter on such a document).
    """
    if not _may_nest_deeply(text):
        try:
            node = yaml.compose(text, Loader=StrictLoader)
        except yaml.YAMLError as exc:
            raise _syntax_error(exc, text, path, error, what) from None
        return node  # aliases here become shared nodes: readers that refuse them check for reuse
    return _compose_events(text, path, error, what, aliases)


def _compose_events(text: str, path: Path, error: type[EnvkitError], what: str, aliases: bool) -> yaml.Node | None:
    loader = StrictLoader(text)
    root: yaml.Node | None = None
    anchors: dict[str, yaml.Node] = {}
    stack: list[tuple[yaml.Node, list[yaml.Node]]] = []

    def fail(event: yaml.Event, problem: str) -> EnvkitError:
        return error(f"{path}:{event.start_mark.line + 1}: {problem}", hint=_HINT)

    def add(node: yaml.Node) -> None:
        nonlocal root
        if stack:
            stack[-1][1].append(node)
        elif root is None:
            root = node
        else:
            raise error(f"{path}: more than one YAML document", hint=f"a {what} is one document")

    def anchor(event: yaml.Event, node: yaml.Node) -> None:
        if event.anchor is not None:
            anchors[event.anchor] = node

    try:
        while True:
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                tag = event.tag if event.tag not in (None, "!") else loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                node: yaml.Node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
                anchor(event, node)
                add(node)
            elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
                if len(stack) >= MAX_DEPTH:
                    raise fail(event, f"nested deeper than {MAX_DEPTH} levels")
                node_class = yaml.SequenceNode if kind is yaml.SequenceStartEvent else yaml.MappingNode
                tag = event.tag if event.tag not in (None, "!") else loader.resolve(node_class, None, event.implicit)
                node = node_class(tag, [], event.start_mark, None, flow_style=event.flow_style)
                anchor(event, node)
                add(node)
                stack.append((node, []))
            elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                done, items = stack.pop()
                done.end_mark = event.end_mark
                done.value = items if kind is yaml.SequenceEndEvent else list(zip(items[0::2], items[1::2], strict=True))
            elif kind is yaml.AliasEvent:
                if not aliases:
                    raise fail(event, f"YAML aliases (*ref) are not allowed in a {what}")
                if event.anchor not in anchors:
                    raise fail(event, f"YAML alias *{event.anchor} names no anchor")
                add(anchors[event.anchor])
            elif kind is yaml.StreamEndEvent:
                return root
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, path, error, what) from None
    finally:
        loader.dispose()
