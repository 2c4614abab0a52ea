"""Which package's file a path holds when several conda packages install it (a clobber), as rattler decides.

rattler links every package of an environment, then gives each path several packages install to the one last
in `PackageRecord.sort_topologically` (a package comes after its dependencies; packages with no order between
them come in reverse name order). The others' files go to `__clobbers__/<name>/<path>`, and their conda-meta
records name them there, with the path they would have had as `original_path`. A path one package installs as
a file (or symlink) and another as a directory is refused before anything is linked: rattler cannot link such
an environment (it fails half-way, in an order that varies from run to run). So is a noarch: python entry point's
script at a path another package installs: rattler writes it after linking, over the file, and records no clobber.

`envkit install` leaves that to rattler and then removes the empty directories rattler's moves leave in
`__clobbers__` (which depend on the order it happened to link the packages in); bake writes each loser's files
at their `__clobbers__` path itself. Both give the same tree (tests/test_clobbers.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conda_envkit.errors import EnvkitError
from conda_envkit.noarch_python import PythonTarget, parse_entry_point, python_target
from conda_envkit.pkginfo import PackageInfo

CLOBBERS_DIR = "__clobbers__"


class PathConflict(EnvkitError):
    """Two packages of an environment that install one path in ways rattler cannot settle: as a file and as a
    directory, or as a file and an entry point's script."""


def clobber_path(name: str, path: str) -> str:
    """Where the file of `name` (a conda package's normalized name) at `path` goes when another package's wins."""
    return f"{CLOBBERS_DIR}/{name}/{path}"


def path_order(path: str) -> list[str]:
    """The sort key rattler orders a record's paths by: component by component ("a/b" before "a-1/c")."""
    return path.split("/")


def installed_paths(info: PackageInfo, python: PythonTarget | None) -> tuple[list[str], list[str]]:
    """The paths of a conda package's files and symlinks in the prefix (a noarch: python package's where rattler
    links them for the environment's `python`), and those of its entry points' scripts (noarch: python)."""
    if info.noarch != "python" or python is None:
        return list(info.paths), []
    files = [target for path in info.paths if (target := python.relocated(path)) is not None]
    return files, [f"bin/{point.command}" for text in info.entry_points if (point := parse_entry_point(text)) is not None]


def link_order(packages: Iterable[tuple[str, Iterable[str]]]) -> list[str]:
    """The names of `packages` (name, its dependency specs) in rattler's order of priority (the last one wins)."""
    from rattler import BuildString, PackageRecord

    records = [
        PackageRecord(name=name, version="0", build=BuildString("0"), build_number=0, subdir="noarch", depends=list(depends))
        for name, depends in sorted(packages)
    ]
    return [record.name.normalized for record in PackageRecord.sort_topologically(records)]


def resolve_clobbers(
    packages: Mapping[str, Sequence[str]], order: Callable[[], Sequence[str]], where: str = ""
) -> dict[str, dict[str, str]]:
    """For each package that loses a clobbered path, {path: its path in `__clobbers__`}. `packages`: each package's
    files and symlinks (paths in the prefix); `order()`: their names in rattler's order of priority (`link_order`,
    asked only if some path is clobbered). A path that is a file in one package and a directory in another is a
    PathConflict (`where`: the platform, for the message)."""
    latest: dict[str, str] = {}  # path -> the package seen last to install it
    owners: dict[str, list[str]] = {}  # clobbered path -> every package installing it
    for name, paths in packages.items():
        for path in latest.keys() & paths:  # (set operations: ~100,000 paths an environment)
            owners.setdefault(path, [latest[path]]).append(name)
        latest.update(dict.fromkeys(paths, name))
    _refuse_files_over_directories(packages, latest, owners, where)
    if not owners:
        return {}
    rank = {name: i for i, name in enumerate(order())}
    renamed: dict[str, dict[str, str]] = {}
    for path, names in owners.items():
        for loser in sorted(set(names), key=rank.__getitem__)[:-1]:
            renamed.setdefault(loser, {})[path] = clobber_path(loser, path)
    return renamed


def _refuse_files_over_directories(
    packages: Mapping[str, Sequence[str]], latest: dict[str, str], owners: dict[str, list[str]], where: str
) -> None:
    """A PathConflict for a path one package installs as a file and another as a directory."""
    parents: set[str] = set()
    for directory in {path.rpartition("/")[0] for path in latest}:
        while directory and directory not in parents:  # a parent seen already has had its own parents added
            parents.add(directory)
            directory = directory.rpartition("/")[0]
    both = parents.intersection(latest)
    if not both:
        return
    under: dict[str, set[str]] = {path: set() for path in both}  # (rare: the paths are walked again to name them)
    for name, paths in packages.items():
        for path in paths:
            directory = path.rpartition("/")[0]
            while directory:
                if directory in under:
                    under[directory].add(name)
                directory = directory.rpartition("/")[0]
    # One package's own file and directory at a path is its archive check's to refuse.
    for path in sorted(both, key=path_order):
        files = owners.get(path, [latest[path]])
        clash = next(((f, d) for f in files for d in sorted(under[path]) if f != d), None)
        if clash is not None:
            place = f"{where}: " if where else ""
            raise PathConflict(
                f"{place}{clash[0]} installs {path} as a file or symlink, and {clash[1]} installs files under it as a directory",
                hint="rattler cannot link both into one environment: re-lock without one of them, or with other builds",
            )


def environment_clobbers(infos: Sequence[PackageInfo], platform: str) -> dict[str, dict[str, str]]:
    """`resolve_clobbers` for an environment's conda packages on `platform` (its python's noarch: python packages'
    paths where rattler links them). An entry point's script that another package also installs is a PathConflict:
    rattler writes the script after linking, over whatever is there, and records no clobber."""
    found = next((info for info in infos if info.name == "python"), None)
    python = python_target(found.version, platform, found.python_site_packages_path) if found is not None else None
    paths = {info.name: installed_paths(info, python) for info in infos}
    scripts: dict[str, str] = {}
    for name, (_, written) in paths.items():
        for script in written:
            if script in scripts:
                _script_clash(script, scripts[script], name, platform)
            scripts[script] = name
    if scripts:
        for name, (files, _) in paths.items():
            for path in scripts.keys() & files:
                _script_clash(path, scripts[path], name, platform)
    return resolve_clobbers(
        {name: files for name, (files, _) in paths.items()}, lambda: link_order((i.name, i.depends) for i in infos), platform
    )


def _script_clash(path: str, owner: str, name: str, where: str) -> None:
    place = f"{where}: " if where else ""
    raise PathConflict(
        f"{place}{path} is written by {owner} as an entry point's script and installed by {name} too",
        hint="rattler writes the script over the file in no fixed order: re-lock without one of them, or with other builds",
    )


def clobbers_text(renamed: Mapping[str, Mapping[str, str]], shown: int = 3) -> str:
    """What a warning says of an environment's clobbers ("" if none): how many paths, the first few and whose files
    went to `__clobbers__`."""
    losers: dict[str, list[str]] = {}
    for name, paths in renamed.items():
        for path in paths:
            losers.setdefault(path, []).append(name)
    if not losers:
        return ""
    first = sorted(losers, key=path_order)[:shown]
    listed = "; ".join(f"{path} (also in {', '.join(sorted(losers[path]))})" for path in first)
    more = f"; and {len(losers) - shown} more" if len(losers) > shown else ""
    return (
        f"{len(losers)} path(s) are installed by more than one package: {listed}{more}. As rattler links them, one package's "
        f"file is kept there and the others' are in {CLOBBERS_DIR}/<package>/"
    )


def record_for_clobbers(record: dict[str, Any], renamed: Mapping[str, str]) -> dict[str, str]:
    """Rewrite a conda-meta record rattler wrote when it linked part of an environment for the whole
    environment's clobbers (`renamed`: this package's, by original path): every entry at its path in `renamed`
    or back at its original path, sorted as rattler sorts them. Returns {path in the record now: the path
    rattler put the file at} for the entries that moved."""
    moved: dict[str, str] = {}
    entries = record.get("paths_data", {}).get("paths", [])
    for entry in entries:
        where = str(entry["_path"])
        original = str(entry.pop("original_path", None) or where)
        final = renamed.get(original, original)
        entry["_path"] = final
        if final != original:
            entry["original_path"] = original
        if final != where:
            moved[final] = where
    entries.sort(key=lambda entry: path_order(entry["_path"]))
    now = {where: final for final, where in moved.items()}
    record["files"] = sorted((now.get(path, path) for path in record.get("files", [])), key=path_order)
    return moved


def sort_record_paths(record: dict[str, Any]) -> None:
    """A record's files and paths_data in rattler's order (where rattler renamed an entry for a clobber after
    linking, it keeps its place, so the order depends on the order rattler linked the packages in)."""
    record["files"] = sorted(record.get("files", []), key=path_order)
    entries = record.get("paths_data", {}).get("paths")
    if isinstance(entries, list):
        entries.sort(key=lambda entry: path_order(str(entry.get("_path", ""))))


def remove_empty_clobber_dirs(prefix: Path) -> None:
    """Remove the empty directories rattler's clobber moves leave in `prefix/__clobbers__` (and it, if empty).
    Which ones it leaves depends on the order it linked the packages in; the files are all kept."""
    top = prefix / CLOBBERS_DIR
    if not top.is_dir() or top.is_symlink():
        return
    for dirpath, _dirs, files in os.walk(top, topdown=False):
        if not files:
            with contextlib.suppress(OSError):  # (not empty: a directory or a symlink below it is kept)
                os.rmdir(dirpath)
