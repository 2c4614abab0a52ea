"""Write lock-file data as block YAML, byte-identical to PyYAML's `safe_dump`, faster.

A lock of a few hundred packages per platform spends most of its non-solve time in
PyYAML's Python representer. Lock data is plain (dicts, lists, str, bool, int), so a
small emitter does the same job; each distinct scalar's text is still decided by
PyYAML itself (cached), so quoting rules are PyYAML's, not ours. A test checks the
output equals `yaml.dump` on real locks.
"""

from __future__ import annotations

import functools
import re

import yaml

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Letters first, then only characters that never need quoting: PyYAML writes these
# plain unless they spell a YAML 1.1 bool or null.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/+=@]*(:[A-Za-z0-9_.\-/+=@]+)*(://[A-Za-z0-9_.\-/+=@%~:${}]*)?")
_SPECIAL_WORDS = frozenset("yes Yes YES no No NO true True TRUE false False FALSE on On ON off Off OFF null Null NULL y Y n N".split())


@functools.lru_cache(maxsize=65536)
def _pyyaml_scalar(value: str) -> str:
    quick = _quoted_like_pyyaml(value)
    if quick is not None:
        return quick
    text: str = yaml.dump(value, Dumper=_Dumper, width=1000, allow_unicode=False)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.rstrip("\n")


# PyYAML's own scalar analysis and resolver, without a whole dump per value (dependency specs
# like `>=1.2,<2` and versions like `3.11` are most of a lock's non-plain scalars).
_ANALYZER = yaml.emitter.Emitter.__new__(yaml.emitter.Emitter)
_ANALYZER.allow_unicode = False
_RESOLVER = yaml.resolver.Resolver()
_SHORT_PRINTABLE = re.compile(r"[ -~]{1,200}")
_STR_TAG = "tag:yaml.org,2002:str"


# Most of a lock's other scalars, decided without PyYAML's (pure-Python, per-character) analysis:
# a digit first and no character that is ever an indicator inside a word (versions, md5s, build
# strings): plain, unless the resolver reads it as a number or a date; and a `>` first (a
# dependency spec such as `>=1.2,<2`) with no space, quote or `#`: single-quoted, as `>` starts
# a folded block.
_DIGIT_WORD = re.compile(r"[0-9][0-9A-Za-z_.+\-]{0,199}")
_FOLDED_WORD = re.compile(r">[0-9A-Za-z_.,<>=!*+|\-]{0,199}")


def _quoted_like_pyyaml(value: str) -> str | None:
    """The plain or single-quoted text PyYAML's emitter would choose for a short ASCII line, else None."""
    if _DIGIT_WORD.fullmatch(value):
        return value if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG else f"'{value}'"
    if _FOLDED_WORD.fullmatch(value):
        return f"'{value}'"
    if not _SHORT_PRINTABLE.fullmatch(value):
        return None
    analysis = _ANALYZER.analyze_scalar(value)
    if analysis.multiline:
        return None
    if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG and analysis.allow_block_plain:
        return value
    if analysis.allow_single_quoted:
        return "'" + value.replace("'", "''") + "'"
    return None


def scalar(value: object) -> str:
    """The YAML text of one scalar, as PyYAML would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text not in _SPECIAL_WORDS:
        return text
    return _pyyaml_scalar(text)


def _emit(value: object, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            _emit_entry(f"{pad}{scalar(key)}:", item, indent, out, list_indent=indent)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                first = True
                for key, sub in item.items():
                    prefix = f"{pad}- " if first else f"{pad}  "
                    _emit_entry(f"{prefix}{scalar(key)}:", sub, indent + 2, out, list_indent=indent + 2)
                    first = False
            elif isinstance(item, list) and item:
                raise TypeError("nested lists are not lock data")
            else:
                out.append(f"{pad}- {_inline(item)}")


def _emit_entry(head: str, item: object, indent: int, out: list[str], list_indent: int) -> None:
    if isinstance(item, dict) and item:
        out.append(head)
        _emit(item, indent + 2, out)
    elif isinstance(item, list) and item:
        out.append(head)
        _emit(item, list_indent, out)  # PyYAML does not indent a list under its key
    else:
        out.append(f"{head} {_inline(item)}")


def _inline(value: object) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return scalar(value)


def dump_block_yaml(data: dict[str, object] | list[object]) -> str:
    """`data` as block-style YAML, keys in insertion order (== yaml.safe_dump(sort_keys=False))."""
    out: list[str] = []
    _emit(data, 0, out)
    return "\n".join(out) + "\n"
