"""A noarch: python package's files as rattler links them: where they go and the entry points it writes.

rattler (py-rattler, when `envkit install` links) puts a noarch: python package's `site-packages/` in
the environment's python's site-packages (`lib/pythonX.Y/site-packages`) and its `python-scripts/` in
`bin/`, and writes, for each entry point of its `info/link.json`, a script `bin/<command>` that runs
`<module>:<function>` with the environment's python (mode 0755, recorded as a
`unix_python_entry_point`). No bytecode is compiled. The bake streams such a package (stream_package)
with the same bytes; what this module does not reproduce exactly (an entry point that is not a plain
`command = module:function`, a python with its own site-packages path, Windows' launchers, a shebang
rattler rewrites) is left to rattler, which links the package. tests/test_stream_layers.py holds the
result to `envkit install`'s tree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_COMMAND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# rattler writes a `/bin/sh` exec line instead of a shebang longer than 127 bytes (an entry point's, or a script's
# once its placeholder is replaced): one that comes near that is left to rattler (its package linked), as a path
# with white space in it is.
SHEBANG_STREAMED = 120


@dataclass(frozen=True)
class EntryPoint:
    """`command = module:function`: a script `bin/<command>` calling `function` of `module`."""

    command: str
    module: str
    function: str


def parse_entry_point(text: str) -> EntryPoint | None:
    """The entry point `text` names, if it is a plain `command = module:function` (as rattler splits it: at the
    first `=`, then the first `:`, white space trimmed); None for anything else (rattler's to link or refuse)."""
    command, equals, target = text.partition("=")
    module, colon, function = target.partition(":")
    point = EntryPoint(command.strip(), module.strip(), function.strip())
    if not (equals and colon) or point.command in (".", ".."):
        return None
    if not (_COMMAND.fullmatch(point.command) and _MODULE.fullmatch(point.module) and _FUNCTION.fullmatch(point.function)):
        return None
    return point


def link_entry_points(link_json: str | None) -> tuple[str, ...] | None:
    """The entry points of a noarch: python package's info/link.json (none without one); None if there is one
    the bake does not write itself: not what rattler reads (`noarch` of type python, a `package_metadata_version`),
    an entry point that is not plain, a command given twice."""
    if link_json is None:
        return ()
    try:
        document = json.loads(link_json)
        noarch, version = document["noarch"], document["package_metadata_version"]
        points = noarch.get("entry_points", [])
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    if noarch.get("type") != "python" or type(version) is not int or version < 0:
        return None
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        return None
    parsed = [parse_entry_point(p) for p in points]
    commands = [p.command for p in parsed if p is not None]
    if len(commands) != len(points) or len(set(commands)) != len(commands):
        return None
    return tuple(points)


@dataclass(frozen=True)
class PythonTarget:
    """The environment's python as rattler sees it when it links a noarch: python package (unix): `version` is
    its major.minor."""

    version: str

    @property
    def site_packages(self) -> str:
        return f"lib/python{self.version}/site-packages"

    @property
    def executable(self) -> str:
        return f"bin/python{self.version}"

    def relocated(self, path: str) -> str | None:
        """Where a path of a noarch: python package's archive goes in the prefix; None for a file named like one
        of the two directories (rattler would put it in the directory's place)."""
        if path in ("site-packages", "python-scripts"):
            return None
        if path.startswith("site-packages/"):
            return f"{self.site_packages}/{path[len('site-packages/') :]}"
        if path.startswith("python-scripts/"):
            return f"bin/{path[len('python-scripts/') :]}"
        return path


def python_target(version: str, platform: str, site_packages_path: str | None) -> PythonTarget | None:
    """The target of the environment's python `version` on `platform`; None where rattler does what the bake does
    not reproduce (Windows, a python naming its own site-packages path, a version without major.minor)."""
    parts = version.split(".")
    if platform.startswith("win-") or site_packages_path or len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return None
    return PythonTarget(f"{int(parts[0])}.{int(parts[1])}")


def entry_point_script(point: EntryPoint, prefix: str, python: PythonTarget) -> bytes | None:
    """The script rattler writes for `point` in an environment at `prefix`; None if rattler would write another
    shebang (too long, or a path with white space)."""
    shebang = f"#!{prefix}/{python.executable}"
    if len(shebang) > SHEBANG_STREAMED or any(c.isspace() for c in prefix):
        return None
    return (
        f"{shebang}\n"
        "# -*- coding: utf-8 -*-\n"
        "import re\n"
        "import sys\n\n"
        f"from {point.module} import {point.function}\n\n"
        "if __name__ == '__main__':\n"
        "\tsys.argv[0] = re.sub(r'(-script\\.pyw?|\\.exe)?$', '', sys.argv[0])\n"
        f"\tsys.exit({point.function}())\n"
    ).encode()
