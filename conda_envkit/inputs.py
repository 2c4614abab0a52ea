"""Input files read once, as UTF-8 within a size cap, and YAML loaded strictly.

Every file a user hands envkit (environment.yml, --config, recipe.yml,
virtual-packages.yml, lock files) goes through `read_input` then `load_yaml` or
`compose_yaml`, so each is read exactly once (a pipe or `<(...)` has no second
read), decoded as UTF-8 whatever the locale, and refused cleanly when it is a
device, too big, not UTF-8, ambiguous (a key written twice), too deeply nested or
an alias bomb.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from conda_envkit.errors import EnvkitError

# A conda-lock file of five platforms and a few thousand packages is a few MiB.
MAX_INPUT_BYTES = 32 * 1024 * 1024
# Real inputs nest 5-6 levels deep; the limit keeps the composer's recursion bounded
# (libyaml's own composer overflows the C stack on deep input and kills the process).
MAX_YAML_DEPTH = 100
# A pipe or FIFO that neither sends nor closes for this long is stuck (a writer that never
# finishes, a FIFO nobody writes to): an error, not a hang. A slow writer that keeps sending is fine.
PIPE_IDLE_SECONDS = 60.0
# Nodes reached through aliases (`*name`), counted expanded: a billion-laughs file
# of a few hundred bytes expands to billions of nodes.
MAX_YAML_ALIAS_NODES = 100_000

_STDIN_NAMES = {"-", "/dev/stdin"}
_MERGE_TAG = "tag:yaml.org,2002:merge"


class InputError(EnvkitError):
    """An input file that cannot be read as text or as YAML."""


class UnreadableInput(InputError):
    """A file that is missing, unreadable, or not a regular file or a pipe."""


class InputTooLarge(InputError):
    """A file over the size cap."""


class NotUtf8(InputError):
    """A file whose bytes are not UTF-8."""


class InvalidYaml(InputError):
    """A file that is not valid YAML (syntax, duplicate keys, depth or alias limits)."""


class DuplicateKey(InvalidYaml):
    """A mapping that names one key twice: the second would silently replace the first."""


class YamlLimitExceeded(InvalidYaml):
    """YAML nested deeper, or expanding through aliases further, than envkit accepts."""


@dataclass(frozen=True)
class InputText:
    """The text of one input, and how to name it.

    `name` is the path as given (or `<stdin>`), used in messages as `name:line`;
    `path` is the file when it is a regular file, None for a pipe or stdin, which
    have no path worth recording or resolving relative paths against.
    """

    name: str
    text: str
    path: Path | None
    data: bytes = b""  # the bytes read (a lock's copy is the file as it was read, once)


def _not_found_hint(path: Path, what: str) -> str:
    """What to pass instead of a missing `path`: its `.yml`/`.yaml` twin if that is there (`environment.yaml`)."""
    twin = {".yml": ".yaml", ".yaml": ".yml"}.get(path.suffix)
    if twin is not None and path.with_suffix(twin).is_file():
        return f"{path.with_suffix(twin)} is there: pass that file instead (-f for an environment file), or rename it"
    return f"pass an existing {what}"


def read_input(path: Path, what: str = "file", max_bytes: int = MAX_INPUT_BYTES) -> InputText:
    """Read `path` once, as UTF-8, refusing devices, directories and files over `max_bytes`.

    `-` and `/dev/stdin` read standard input. `what` names the kind of file in messages
    ("environment file", "config", ...).
    """
    given = str(path)
    name = "<stdin>" if given == "-" else given
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to would block forever (reads wait in poll below).
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.dup(0) if given == "-" else os.open(path, flags)
    except FileNotFoundError:
        raise UnreadableInput(f"{name}: file not found", hint=_not_found_hint(path, what)) from None
    except IsADirectoryError:
        raise UnreadableInput(f"{name}: {what} is a directory", hint="pass the file itself") from None
    except OSError as exc:
        raise UnreadableInput(f"{name}: cannot read {what} ({exc.strerror})", hint="check the file's permissions") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UnreadableInput(f"{name}: {what} is a directory", hint="pass the file itself")
        regular = stat.S_ISREG(mode)
        if not (regular or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise UnreadableInput(
                f"{name}: {what} is not a regular file or a pipe (a device?)",
                hint="pass a regular file, or pipe the content in",
            )
        data = _read_capped(fd, name, what, max_bytes, wait=not regular)
    finally:
        os.close(fd)
    text = decode_utf8(data, name)
    record = Path(path) if regular and given not in _STDIN_NAMES and not _is_fd_path(given) else None
    return InputText(name=name, text=text, path=record, data=data)


def _is_fd_path(given: str) -> bool:
    # `<(...)` hands the command /dev/fd/63 or /proc/self/fd/63: a path that means
    # nothing after this process ends.
    return given.startswith("/dev/fd/") or (given.startswith("/proc/") and "/fd/" in given)


def _read_capped(fd: int, name: str, what: str, max_bytes: int, wait: bool = False) -> bytes:
    """At most `max_bytes` of `fd`; with `wait` (a pipe), each read waits in poll at most PIPE_IDLE_SECONDS."""
    import select

    chunks: list[bytes] = []
    total = 0
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        if wait and not poller.poll(int(PIPE_IDLE_SECONDS * 1000)):
            raise UnreadableInput(
                f"{name}: the pipe sent nothing for {PIPE_IDLE_SECONDS:g} s and did not close",
                hint="the program writing it is stuck, or nothing writes to this FIFO; pass a file",
            )
        try:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
        except BlockingIOError:
            continue  # poll said readable, another reader of the same pipe was first
        except OSError as exc:
            raise UnreadableInput(f"{name}: cannot read {what} ({exc.strerror})", hint="check the file") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise InputTooLarge(
                f"{name}: {what} is larger than the {_size(max_bytes)} limit for input files",
                hint="pass the right file; envkit reads inputs up to that size",
            )


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 and n % (1024 * 1024) == 0 else f"{n} bytes"


def decode_utf8(data: bytes, name: str) -> str:
    """`data` decoded as UTF-8 (a leading BOM dropped); an error names the line and byte offset."""
    # The BOM is dropped here: the "utf-8-sig" codec is a module that every command would import.
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise NotUtf8(
            f"{name}:{line}: not UTF-8 (byte 0x{data[offset]:02x} at offset {offset})",
            hint="save the file as UTF-8",
        ) from None


# -- strict YAML --------------------------------------------------------------------


def location(name: str, node: Node) -> str:
    """`name:line` of a YAML node."""
    return f"{name}:{node.start_mark.line + 1}"


try:
    from yaml.cyaml import CParser as _CParser

    _ParserBases: tuple[type, ...] = (_CParser,)
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    _CParser = None
    _ParserBases = (Reader, Scanner, Parser)


class _StrictLoader(Composer, *_ParserBases, SafeConstructor, Resolver):  # type: ignore[misc]
    """libyaml's parser (fast, iterative) under PyYAML's composer, which can count.

    The composer is PyYAML's Python one, not libyaml's: it tracks depth, alias
    expansion and duplicate keys as it builds the node graph.
    """

    def __init__(self, text: str, name: str) -> None:
        if _CParser is not None:
            _CParser.__init__(self, text)
        else:  # pragma: no cover - PyYAML without libyaml
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self.input_name = name
        self._depth = 0
        self._expanded = 0  # nodes composed so far, aliases counted expanded
        self._aliased = 0  # of which reached through aliases
        self._anchor_sizes: dict[str, int] = {}

    def compose_node(self, parent: Node | None, index: object) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            size = self._anchor_sizes.get(event.anchor, 1)
            self._expanded += size
            self._aliased += size
            if self._aliased > MAX_YAML_ALIAS_NODES:
                raise YamlLimitExceeded(
                    f"{self.input_name}:{event.start_mark.line + 1}: aliases expand to more than {MAX_YAML_ALIAS_NODES:,} nodes",
                    hint="write the content out instead of repeating it through `*aliases`",
                )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YamlLimitExceeded(
                f"{self.input_name}:{event.start_mark.line + 1}: YAML nested deeper than {MAX_YAML_DEPTH} levels",
                hint="flatten the file; no envkit input nests that deep",
            )
        before = self._expanded
        self._expanded += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._anchor_sizes[anchor] = self._expanded - before
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], Node] = {}
        for key, _value in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            first = seen.setdefault((key.tag, key.value), key)
            if first is not key:
                raise DuplicateKey(
                    f"{location(self.input_name, key)}: duplicate key `{key.value}` (first at line {first.start_mark.line + 1})",
                    hint="write each key once; the second would silently replace the first",
                )
        return node


def yaml_error_line(text: str, line: int) -> tuple[int, str]:
    """The 1-based line a YAML error mark (0-based `line`) names, and a note when the parser only noticed the
    problem at the end of the file (its mark is then past the last line: the last line is named instead)."""
    last = max(1, len(text.splitlines()))
    return (line + 1, "") if line + 1 <= last else (last, " (noticed at the end of the file)")


def _yaml_error(name: str, text: str, exc: yaml.YAMLError) -> InvalidYaml:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    at_end = ""
    if mark is not None:
        line, at_end = yaml_error_line(text, mark.line)
        where = f"{name}:{line}"
    elif isinstance(exc, ReaderError):
        where = f"{name}:{text.count(chr(10), 0, exc.position) + 1}"
        return InvalidYaml(f"{where}: invalid YAML: character U+{exc.character:04X} is not allowed", hint="remove the control character")
    else:
        where = name
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{context}, {problem}" if context and problem else problem
    return InvalidYaml(f"{where}: invalid YAML: {detail}{at_end}", hint=yaml_syntax_hint(text, mark.line if mark is not None else None))


def yaml_syntax_hint(text: str, line: int | None, hint: str = "fix the YAML syntax at that line") -> str:
    """`hint`, or, when the line a YAML error names (0-based) is indented with a tab, what to do about that."""
    lines = text.splitlines()
    if line is not None and 0 <= line < len(lines) and "\t" in lines[line][: len(lines[line]) - len(lines[line].lstrip())]:
        return "YAML does not allow tabs for indentation: indent that line with spaces"
    return hint


def compose_yaml(source: InputText) -> Node | None:
    """The YAML node graph of `source` (None when empty), checked strictly.

    Refused, naming the file and line: syntax errors, a key written twice in one
    mapping, nesting deeper than MAX_YAML_DEPTH, aliases expanding past
    MAX_YAML_ALIAS_NODES, more than one document.
    """
    try:
        loader = _StrictLoader(source.text, source.name)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(source.name, source.text, exc) from None


def load_yaml(source: InputText) -> object:
    """The YAML document of `source` as Python data (None when empty), checked as by `compose_yaml`."""
    try:
        loader = _StrictLoader(source.text, source.name)
        try:
            node = loader.get_single_node()
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(source.name, source.text, exc) from None
