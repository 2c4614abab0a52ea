"""A plain conda package straight from its archive into tar members: no file extracted or linked.

"Plain" (conda_envkit.pkginfo): only files and symlinks (prefix placeholders envkit replaces itself
included), not noarch: python. Such a package's files are its archive's members, in the archive's
order. A `.conda` is read once, front to back, straight into its layer or (a group package) its
fragment (conda_envkit.archive_check.stream_package_archive: `streamed_members`); a `.tar.bz2`'s
payload tar is decompressed once into the bake's scratch area while it is checked
(stage_package_archive) and its members' contents are read from there by offset
(`package_members`). Both give the same members. Its
`conda-meta/<name>-<version>-<build>.json` is the record py-rattler writes when linking it
(repodata fields, sorted files and paths_data, empty requested_specs), normalized like
`envkit install`'s; a path another package of the environment wins goes to `__clobbers__/<name>/`, recorded
with its `original_path`, as rattler moves it (conda_envkit.clobbers). tests/test_bake_cache.py and
tests/test_clobbers.py check the result against an installed prefix.
Anything unexpected in the archive (a hard link, a path paths.json does not list, one it lists
missing) raises NotPlain, and bake links that package in a staging prefix instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from conda_envkit.archive_check import ArchiveEntry, StagedArchive, StreamedArchive
from conda_envkit.channels import strip_credentials
from conda_envkit.lockmodel import LockedPackage
from conda_envkit.noarch_python import SHEBANG_STREAMED, PythonTarget, entry_point_script, parse_entry_point
from conda_envkit.oci.tarstream import FILE, SYMLINK, Member
from conda_envkit.pkginfo import PackageInfo

ENTRY_POINT_MODE = 0o775  # what py-rattler gives a noarch: python entry point's script, whatever the umask


class NotPlain(Exception):
    """The archive holds something the streaming path does not reproduce exactly."""


# A prefix placeholder's file is read whole to replace it (as rattler does): one bigger than this is linked,
# and so is a package whose replaced files come to more than MAX_REPLACED_PACKAGE_BYTES (a staged package's
# members, replaced contents included, are held until its layer is written). A bigger file with a binary
# placeholder read from a streamed archive is replaced as it is read instead (`_ReplacingStream`: its size
# does not change), holding at most one unterminated string (up to MAX_HELD_STRING_BYTES: a longer one holding
# the placeholder, its package is linked).
MAX_REPLACED_BYTES = 16 << 20
MAX_REPLACED_PACKAGE_BYTES = 64 << 20
MAX_HELD_STRING_BYTES = 16 << 20
_REPLACING_CHUNK = 1 << 20
# What a file with a placeholder may say in paths.json: anything else (rattler's offsets, a shebang length)
# is rattler's to apply, so its package is linked.
_PLACEHOLDER_KEYS = frozenset({"_path", "path_type", "sha256", "size_in_bytes", "prefix_placeholder", "file_mode"})


@dataclass(frozen=True)
class _Listed:
    """One file or symlink info/paths.json lists (`placeholder`: a prefix placeholder to replace, in `mode` text
    or binary)."""

    kind: str
    size: int
    sha256: str
    placeholder: str = ""
    mode: str = ""


@dataclass(frozen=True)
class _Seen:
    """One file or symlink as installed: its conda-meta paths_data entry."""

    kind: str
    size: int  # in the prefix (after replacement)
    sha256: str  # the archive's (a symlink: of its target)
    placeholder: str = ""
    mode: str = ""
    sha256_in_prefix: str = ""  # only where the replacement changed the file (as rattler records it)
    entry_point: bool = False  # a noarch: python entry point's script (sha256: its own)


def _listed(name: str, paths_json: bytes | None) -> dict[str, _Listed]:
    """info/paths.json's entries by path, if every one is a plain file (or one with a prefix placeholder) or a
    symlink."""
    if paths_json is None:
        raise NotPlain(f"{name}: no info/paths.json")
    try:
        paths = json.loads(paths_json).get("paths") or []
    except (ValueError, AttributeError) as exc:
        raise NotPlain(f"{name}: {exc}") from None
    listed = {}
    try:  # (a malformed paths.json is the archive check's to report)
        for entry in paths:
            path = str(entry["_path"])
            placeholder = entry.get("prefix_placeholder")
            mode = entry.get("file_mode") if placeholder is not None else ""
            if placeholder is not None and (
                not isinstance(placeholder, str) or not placeholder or mode not in ("text", "binary") or set(entry) - _PLACEHOLDER_KEYS
            ):
                raise NotPlain(f"{name}: {path} has a prefix placeholder rattler replaces itself")
            if entry.get("path_type", "hardlink") == "hardlink" and not entry.get("no_link"):
                size, digest = int(entry.get("size_in_bytes") or 0), str(entry.get("sha256") or "")
                listed[path] = _Listed(FILE, size, digest, placeholder or "", mode)
            elif entry.get("path_type") == "softlink":
                listed[path] = _Listed(SYMLINK, 0, "")
            else:
                raise NotPlain(f"{name}: {path} is not a plain file or symlink")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NotPlain(f"{name}: info/paths.json is malformed ({exc})") from None
    return listed


def _read_whole(size: int, stream: Any = None, source: Path | None = None, offset: int = 0) -> bytes:
    """A member's `size` bytes: from an archive being read (`stream`, a readinto reader), or a staged payload."""
    data = bytearray(size)
    view, got = memoryview(data), 0
    if stream is not None:
        while got < size and (n := stream.readinto(view[got:])):
            got += n
    elif source is not None:
        with source.open("rb") as f:
            f.seek(offset)
            got = f.readinto(data)
    if got != size:
        raise NotPlain(f"{source or 'archive'}: a member is cut short")
    return bytes(data)


def _cstrings_replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    """A binary placeholder replaced as rattler does: in each NUL-terminated string holding it (from the
    placeholder to the NUL, or to the end of the file), every occurrence replaced, and the string padded with
    NULs to its length. The file keeps its size."""
    out, pos = bytearray(), 0
    while (start := data.find(old, pos)) >= 0:
        end = data.find(b"\0", start)
        end = len(data) if end < 0 else end
        string = data[start:end]
        replaced = string.replace(old, new)
        out += data[pos:start] + replaced + b"\0" * (len(string) - len(replaced))
        pos = end
    return bytes(out + data[pos:])


def _binary_placeholder(name: str, path: str, placeholder: str, prefix: str) -> tuple[bytes, bytes]:
    """A binary placeholder and the prefix replacing it, as bytes; NotPlain where rattler refuses (a placeholder
    shorter than the prefix) or what it does is not plain (a placeholder holding a NUL ends every string in it)."""
    old, new = placeholder.encode(), prefix.encode()
    if len(new) > len(old):
        raise NotPlain(f"{name}: {path}'s binary placeholder is shorter than the prefix (rattler says so)")
    if b"\0" in old:
        raise NotPlain(f"{name}: {path}'s binary placeholder holds a NUL byte")
    return old, new


def _script_marked_binary(name: str, path: str, data: bytes) -> None:
    if data.startswith(b"#!"):  # a script marked binary: whatever rattler makes of its shebang is its own
        raise NotPlain(f"{name}: {path} is a script with a binary placeholder")


class _ReplacingStream:
    """A file with a binary placeholder, too big to read whole, replaced as the layer writer reads it: the same
    bytes as `_cstrings_replaced` of the whole file (a replaced string never reaches past its NUL, so the file
    is replaced up to its last NUL read so far, and bytes no occurrence can reach are passed on as they are),
    and the same size. NotPlain where the whole-file rules say so, and for an unterminated string holding the
    placeholder that grows past MAX_HELD_STRING_BYTES. `sha256_in_prefix` once it was read to its end."""

    def __init__(self, name: str, path: str, source: Any, size: int, old: bytes, new: bytes, chunk: int = 0) -> None:
        self.name, self.path, self.source, self.left, self.chunk = name, path, source, size, chunk or _REPLACING_CHUNK
        self.old, self.new = old, new
        self.pending = bytearray()  # read, not replaced yet: the unterminated string it ends with
        self.ready = memoryview(b"")  # replaced, not given yet
        self.hash = hashlib.sha256()
        self.changed = False
        self.started = False

    def readinto(self, buffer: memoryview) -> int:
        while not self.ready:
            if not self.left and not self.pending:
                return 0
            self._fill()
        given = min(len(buffer), len(self.ready))
        buffer[:given] = self.ready[:given]
        self.ready = self.ready[given:]
        return given

    def _fill(self) -> None:
        if self.left:
            chunk = bytearray(min(self.left, self.chunk))
            view, got = memoryview(chunk), 0
            while got < len(chunk) and (n := self.source.readinto(view[got:])):
                got += n
            if got != len(chunk):
                raise NotPlain(f"{self.name}: {self.path} is cut short")
            self.left -= got
            if not self.started:  # (the first chunk is the file's start)
                _script_marked_binary(self.name, self.path, bytes(chunk[:2]))
                self.started = True
            self.pending += chunk
        if not self.left:
            done, self.pending = bytes(self.pending), bytearray()
        else:
            cut = self.pending.rfind(b"\0") + 1
            if not cut:  # one unterminated string so far
                if self.old in self.pending:
                    if len(self.pending) > MAX_HELD_STRING_BYTES:
                        raise NotPlain(f"{self.name}: {self.path} has a string too long to replace its placeholder in")
                    return  # held until its NUL (or the end of the file)
                cut = len(self.pending) - len(self.old) + 1  # before this no occurrence can start
                if cut <= 0:
                    return
            done = bytes(self.pending[:cut])
            del self.pending[:cut]
        out = _cstrings_replaced(done, self.old, self.new) if self.old in done else done
        self.changed = self.changed or out != done
        self.hash.update(out)
        self.ready = memoryview(out)

    def sha256_in_prefix(self) -> str:
        """The sha256 of the replaced file if it changed (as rattler records it), once it was read to its end."""
        if self.left or self.pending or self.ready:
            raise NotPlain(f"{self.name}: {self.path} was not read to its end")
        return self.hash.hexdigest() if self.changed else ""


def _replaced(name: str, path: str, data: bytes, placeholder: str, prefix: str, mode: str) -> bytes:
    """`data` with every `placeholder` replaced by `prefix` as rattler replaces it in `mode`; NotPlain where rattler
    does more or refuses (a text file's shebang it rewrites: too long, or naming a path with a space; a binary
    placeholder shorter than the prefix)."""
    if mode == "binary":
        old, new = _binary_placeholder(name, path, placeholder, prefix)
        _script_marked_binary(name, path, data)
        return _cstrings_replaced(data, old, new)
    old, new = placeholder.encode(), prefix.encode()
    if len(data) + data.count(old) * (len(new) - len(old)) > 2 * MAX_REPLACED_BYTES:  # (a one-byte placeholder...)
        raise NotPlain(f"{name}: {path} would grow too big once its prefix placeholder is replaced")
    out = data.replace(old, new)
    if out.startswith(b"#!"):
        first = out.split(b"\n", 1)[0]
        if len(first) > SHEBANG_STREAMED or (new in first and any(c.isspace() for c in prefix)) or not _is_utf8(first):
            # (rattler also reads a shebang as UTF-8, and writes what does not read as U+FFFD)
            raise NotPlain(f"{name}: {path}'s shebang is rattler's to rewrite")
    return out


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _PlainPayload:
    """The entries of a plain package's payload in archive order, turned into layer members: each must be a file
    or symlink paths.json lists (once, as that kind and size), and no path may be both a file and a directory.
    A noarch: python package's (`python`: the environment's) go where rattler links them, and its entry points'
    scripts come after them (`entry_point_members`)."""

    def __init__(
        self,
        name: str,
        paths_json: bytes | None,
        in_image: str,
        python: PythonTarget | None = None,
        entry_points: tuple[str, ...] = (),
        renamed: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.in_image, self.python = name, in_image, python
        # The paths (in the prefix) another package's file wins (conda_envkit.clobbers): where this one's go instead.
        self.renamed = renamed or {}
        self.originals: dict[str, str] = {}  # path in the prefix -> the path it would have had, where renamed
        self.prefix = "/" + in_image  # what rattler writes for a placeholder when it links into the image's prefix
        self.listed = _listed(name, paths_json)
        self.seen: dict[str, _Seen] = {}  # by path in the archive
        self.targets: dict[str, str] = {}  # path in the archive -> in the prefix, where they differ (noarch: python, clobbers)
        self.replaced = 0  # bytes of replaced contents so far
        self.replacing: dict[str, _ReplacingStream] = {}  # big binary-placeholder files, replaced as they are read
        self.claimed: set[str] = set()  # the paths in the prefix written so far
        self.parents: set[str] = set()  # the directories the entries so far are written through
        self.scripts = [self._script(text) for text in entry_points]  # (path in the prefix, content)

    def _script(self, text: str) -> tuple[str, bytes]:
        point = parse_entry_point(text)
        script = entry_point_script(point, self.prefix, self.python) if point is not None and self.python is not None else None
        if point is None or script is None:
            raise NotPlain(f"{self.name}: its entry point {text!r} is rattler's to write")
        return f"bin/{point.command}", script  # (no other package has it: conda_envkit.clobbers)

    def _final(self, path: str) -> str:
        """Where the file for `path` (in the prefix) goes: there, or into `__clobbers__` if another package's wins."""
        final = self.renamed.get(path, path)
        if final != path:
            self.originals[final] = path
        return final

    def _claim(self, path: str) -> None:
        """Take `path` (in the prefix) for an entry, once, and never both as a file and a directory."""
        if path in self.claimed or path in self.parents:
            raise NotPlain(f"{self.name}: {path} is not listed in info/paths.json once")
        cut = path.rfind("/")
        while cut > 0 and path[:cut] not in self.parents:
            if path[:cut] in self.claimed:
                raise NotPlain(f"{self.name}: {path[:cut]} is both a file and a directory")
            self.parents.add(path[:cut])
            cut = path.rfind("/", 0, cut)
        self.claimed.add(path)

    def member(self, entry: ArchiveEntry, **content: Any) -> Member | None:
        """The layer member of a payload entry (None for a directory: the layer makes its own)."""
        name = entry.path
        if entry.kind == "directory":
            return None
        if name not in self.listed or name in self.seen:
            raise NotPlain(f"{self.name}: {name} is not listed in info/paths.json once")
        target = self.python.relocated(name) if self.python is not None else name
        if target is None:
            raise NotPlain(f"{self.name}: {name} is where rattler puts a noarch: python directory")
        target = self._final(target)
        self._claim(target)
        if target != name:
            self.targets[name] = target
        listed = self.listed[name]
        if entry.kind == "symlink" and listed.kind == SYMLINK:
            self.seen[name] = _Seen(SYMLINK, 0, hashlib.sha256(entry.target.encode()).hexdigest())
            return Member(f"{self.in_image}/{target}", SYMLINK, 0o777, linkname=entry.target)
        if entry.kind == "file" and listed.kind == FILE and entry.size == listed.size:
            mode = entry.mode & 0o777  # the archive's permission bits, as py-rattler links them (set-id bits dropped)
            if not listed.placeholder:
                self.seen[name] = _Seen(FILE, listed.size, listed.sha256)
                return Member(f"{self.in_image}/{target}", FILE, mode, listed.size, **content)
            if listed.size > MAX_REPLACED_BYTES:
                if listed.mode != "binary" or "stream" not in content:
                    raise NotPlain(f"{self.name}: {name} is too big to read whole for its prefix placeholder")
                old, new = _binary_placeholder(self.name, name, listed.placeholder, self.prefix)
                stream = self.replacing[name] = _ReplacingStream(self.name, name, content["stream"], listed.size, old, new)
                self.seen[name] = _Seen(FILE, listed.size, listed.sha256, listed.placeholder, listed.mode)
                return Member(f"{self.in_image}/{target}", FILE, mode, listed.size, stream=stream)  # type: ignore[arg-type]
            original = _read_whole(listed.size, **content)
            data = _replaced(self.name, name, original, listed.placeholder, self.prefix, listed.mode)
            self.replaced += len(data)
            if self.replaced > MAX_REPLACED_PACKAGE_BYTES:
                raise NotPlain(f"{self.name}: its files with prefix placeholders are too big to hold")
            in_prefix = hashlib.sha256(data).hexdigest() if data != original else ""
            self.seen[name] = _Seen(FILE, len(data), listed.sha256, listed.placeholder, listed.mode, in_prefix)
            return Member(f"{self.in_image}/{target}", FILE, mode, len(data), data=data)
        raise NotPlain(f"{self.name}: {name} is not the file or symlink info/paths.json says")

    def entry_point_members(self) -> list[Member]:
        """The scripts of a noarch: python package's entry points (rattler writes them once its files are linked)."""
        out = []
        for path, script in self.scripts:
            self._claim(path)
            out.append(Member(f"{self.in_image}/{path}", FILE, ENTRY_POINT_MODE, len(script), data=script))
        return out

    def record(self, locked: LockedPackage, info: PackageInfo) -> Member:
        """The package's conda-meta record, once every entry (and entry point) was read."""
        if set(self.seen) != set(self.listed):
            raise NotPlain(f"{self.name}: paths.json lists paths the archive lacks")
        for path, stream in self.replacing.items():
            self.seen[path] = replace(self.seen[path], sha256_in_prefix=stream.sha256_in_prefix())
        installed = {self.targets.get(path, path): seen for path, seen in self.seen.items()}
        for path, script in self.scripts:
            installed[path] = _Seen(FILE, len(script), hashlib.sha256(script).hexdigest(), entry_point=True)
        data = _record(locked, info, installed, self.originals)
        return Member(f"{self.in_image}/conda-meta/{locked.name}-{locked.version}-{locked.build}.json", FILE, 0o644, len(data), data=data)


def _record(locked: LockedPackage, info: PackageInfo, paths: dict[str, _Seen], originals: Mapping[str, str]) -> bytes:
    from conda_envkit.install import _channel_of, record_from_info

    file_name = locked.url.rsplit("/", 1)[-1]
    record = json.loads(record_from_info(info, locked, file_name, strip_credentials(locked.url)).to_json())
    record["url"] = strip_credentials(locked.locked_url)
    record["channel"] = _channel_of(locked.locked_url)
    entries = []
    # rattler orders them as paths, component by component ("a/b" before "a-1/c", which a string sort reverses).
    in_order = sorted(paths, key=lambda path: path.split("/"))
    for path in in_order:
        seen = paths[path]
        if seen.kind == SYMLINK:
            entries.append({"_path": path, "path_type": "softlink", "sha256_in_prefix": seen.sha256, "size_in_bytes": 0})
        elif seen.entry_point:
            entries.append({"_path": path, "path_type": "unix_python_entry_point", "sha256": seen.sha256, "size_in_bytes": seen.size})
        elif seen.placeholder:
            entry: dict[str, object] = {"_path": path, "file_mode": seen.mode, "path_type": "hardlink"}
            entry |= {"prefix_placeholder": seen.placeholder, "sha256": seen.sha256, "size_in_bytes": seen.size}
            if seen.sha256_in_prefix:
                entry["sha256_in_prefix"] = seen.sha256_in_prefix
            entries.append(entry)
        else:
            entries.append({"_path": path, "path_type": "hardlink", "sha256": seen.sha256, "size_in_bytes": seen.size})
        if path in originals:  # a clobbered file, in `__clobbers__`
            entries[-1]["original_path"] = originals[path]
    record["files"] = in_order
    record["paths_data"] = {"paths": entries, "paths_version": 1}
    record["requested_specs"] = []
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def _payload(
    name: str, paths_json: bytes | None, info: PackageInfo, in_image: str, python: PythonTarget | None, renamed: Mapping[str, str] | None
) -> _PlainPayload:
    if info.noarch != "python":
        return _PlainPayload(name, paths_json, in_image, renamed=renamed)
    if python is None:
        raise NotPlain(f"{name}: noarch: python, and rattler links it for this environment's python")
    return _PlainPayload(name, paths_json, in_image, python, info.entry_points, renamed)


def package_members(
    staged: StagedArchive,
    locked: LockedPackage,
    info: PackageInfo,
    in_image: str,
    python: PythonTarget | None = None,
    renamed: Mapping[str, str] | None = None,
) -> list[Member]:
    """The package's members in archive order (content read by offset from its staged payload tar), its entry
    points' scripts, then its conda-meta record (`python`: the environment's, for a noarch: python package;
    `renamed`: its clobbered paths, conda_envkit.clobbers)."""
    payload = _payload(staged.payload.name, staged.paths_json, info, in_image, python, renamed)
    out = []
    for entry in staged.members:
        member = payload.member(entry, source=staged.payload, offset=entry.offset)
        if member is not None:
            out.append(member)
    out += payload.entry_point_members()
    out.append(payload.record(locked, info))
    return out


def streamed_members(
    streamed: StreamedArchive,
    locked: LockedPackage,
    info: PackageInfo,
    in_image: str,
    python: PythonTarget | None = None,
    renamed: Mapping[str, str] | None = None,
) -> Iterator[Member]:
    """`package_members` of an archive being read (stream_package_archive): each file's content is read from the
    archive as the layer writer copies it. NotPlain as soon as an entry is not what a plain package holds."""
    payload = _payload(streamed.archive.name, streamed.paths_json, info, in_image, python, renamed)
    for entry, content in streamed.payload():
        if entry.path.split("/")[0] == "info":  # as a staged payload leaves them out
            continue
        member = payload.member(entry, stream=content)
        if member is not None:
            yield member
    yield from payload.entry_point_members()
    yield payload.record(locked, info)
