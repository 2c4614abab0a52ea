"""Paths built from outside data (locks, packages, wheels, layers) stay inside their root.

Every cache path, conda-meta path and prefix path that takes a name or a path from
something envkit did not write goes through here, like securejoin/umoci: a name is
one plain component; a package path is relative, with no `..`; a symlink a package
ships may not point out of the prefix; a file is never written through a symlink
that leaves its root.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from conda_envkit.errors import EnvkitError

_MAX_LINKS = 255


class UnsafePathError(EnvkitError):
    """A name or path from outside that would reach outside its root."""


def _printable(value: str) -> bool:
    return value.isprintable()


def plain_component(value: str, what: str) -> str:
    """`value` if it is one plain path component (no separator, not `.`/`..`, no control characters)."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\x00" in value or not _printable(value):
        raise UnsafePathError(f"{what}: {value!r} is not a plain file name", hint="the lock or package is malformed or hostile; re-lock")
    return value


def child(root: Path, name: str, what: str) -> Path:
    """`root / name`, where `name` must be one plain component."""
    return root / plain_component(name, what)


def check_not_records(rel: str, what: str) -> str:
    """`rel` (prefix-relative) unless it lies in `conda-meta/`, the prefix's package records, which no package may write:
    a wheel's `.data/data/conda-meta/x.json` would plant a record a sync then takes for an installed package."""
    if rel.split("/", 1)[0] == "conda-meta":
        raise UnsafePathError(f"{what}: {rel} is in conda-meta/, which no package may install", hint="the wheel is hostile; do not use it")
    return rel


def relative_path(path: str, what: str) -> str:
    """`path` (from a package's paths.json, RECORD or tar) if it is relative and stays below its root.

    Returns the normalized POSIX form; refuses absolute paths, drive letters, `..`, NUL and control characters.
    """
    text = path.replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if "\x00" in text or not _printable(text):
        raise UnsafePathError(f"{what}: path {path!r} holds a control character", hint="the package is malformed or hostile; do not use it")
    if not parts or text.startswith("/") or (len(text) > 1 and text[1] == ":") or ".." in parts:
        raise UnsafePathError(f"{what}: path {path!r} leaves its root", hint="the package is malformed or hostile; do not use it")
    return "/".join(parts)


def symlink_target_inside(link: str, target: str) -> bool:
    """Whether a symlink at root-relative `link` pointing at `target` stays inside the root (lexically)."""
    if not target or target.startswith("/") or "\x00" in target:
        return False
    depth = len([p for p in posixpath.dirname(link).split("/") if p not in ("", ".")])
    for part in target.split("/"):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            return False
    return True


def is_within(root: Path, path: Path) -> bool:
    """Whether the real location of `path` (all symlinks resolved) is `root` or below it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_parents(root: Path, rel: str, what: str) -> Path:
    """`root / rel` after checking that no existing parent directory resolves outside `root`
    and that the path itself is not a symlink (a write must not follow one)."""
    rel = relative_path(rel, what)
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        if os.path.islink(current) and not is_within(root, current):
            raise UnsafePathError(
                f"{what}: {rel} would be written through symlink {current.relative_to(root)} -> {os.readlink(current)}, "
                "which leaves the prefix",
                hint="a package shipped a symlink out of the environment; do not use it",
            )
    target = root / rel
    if os.path.islink(target):
        raise UnsafePathError(
            f"{what}: {rel} is a symlink ({os.readlink(target)}); refusing to write through it",
            hint="another package already put a symlink there; the packages conflict or one is hostile",
        )
    return target


def open_new_file(root: Path, rel: str, what: str, mode: int = 0o644) -> int:
    """A file descriptor for a new file `rel` under `root`: parents checked, never through a symlink."""
    target = check_parents(root, rel, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not is_within(root, target.parent):
        raise UnsafePathError(f"{what}: {rel} leaves the prefix", hint="a package shipped a symlink out of the environment")
    return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)


def climbs_out(links: dict[str, str], path: str) -> bool:
    """Whether resolving root-relative `path` through `links` climbs above the root at some step.

    Absolute targets restart at the root (container runtimes resolve them there); a `..` at
    the root is an escape for any tool that extracts the rootfs onto a host.
    """
    try:
        resolve_in_root(links, path, strict=True, allow_absolute=True)
    except UnsafePathError:
        return True
    return False


def resolve_in_root(links: dict[str, str], path: str, strict: bool = False, allow_absolute: bool = False) -> str:
    """`path` with every symlink (from `links`: root-relative path -> target) resolved inside the root.

    Like securejoin: an absolute target restarts at the root, `..` never climbs above it,
    so the result is always a root-relative path. Used on images, where nothing is on disk.
    With `strict`, climbing above the root or an absolute target raises instead (a prefix,
    which lives at an unknown place, must not rely on either).
    """
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    followed = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            elif strict:
                raise UnsafePathError(f"{path}: resolves above the root", hint="a symlink chain leaves the prefix")
            continue
        candidate = "/".join([*done, part])
        target = links.get(candidate)
        if target is None:
            done.append(part)
            continue
        followed += 1
        if followed > _MAX_LINKS:
            raise UnsafePathError(f"{path}: too many levels of symbolic links", hint="the image is malformed or hostile")
        if target.startswith("/"):
            if strict and not allow_absolute:
                raise UnsafePathError(f"{path}: goes through {candidate} -> {target}", hint="an absolute symlink leaves the prefix")
            done = []
        todo = [p for p in target.split("/") if p not in ("", ".")] + todo
    return "/".join(done)


def unusual_mode(mode: int) -> str | None:
    """What is dangerous about a file mode (setuid, setgid, world-writable), if anything."""
    problems = []
    if mode & stat.S_ISUID:
        problems.append("setuid")
    if mode & stat.S_ISGID:
        problems.append("setgid")
    if mode & stat.S_IWOTH and not stat.S_ISLNK(mode):
        problems.append("world-writable")
    return ", ".join(problems) or None
