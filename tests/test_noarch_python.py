"""What the bake writes itself for a noarch: python package, and what it leaves to rattler (conda_envkit.noarch_python).

The bytes are held to `envkit install`'s tree in tests/test_stream_layers.py; here, the rules for what is plain,
and a hostile link.json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from rattler.index import index_fs

from conda_envkit.noarch_python import EntryPoint, entry_point_script, link_entry_points, parse_entry_point, python_target
from conda_envkit.testing.hostile_packages import HostilePackage, Member, python_package, write_hostile_package
from conda_envkit.testing.local_channel import build_channel
from tests.hostile.conftest import assert_refused, locked_workspace


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jupyter-lab = jupyterlab.labapp:main", EntryPoint("jupyter-lab", "jupyterlab.labapp", "main")),
        ("f2py3.11=numpy.f2py.f2py2e:main", EntryPoint("f2py3.11", "numpy.f2py.f2py2e", "main")),
        ("  pip  =  pip._internal.cli.main : main ", EntryPoint("pip", "pip._internal.cli.main", "main")),
    ],
)
def test_a_plain_entry_point_is_split_as_rattler_splits_it(text: str, expected: EntryPoint) -> None:
    assert parse_entry_point(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "../evil = a:b",  # a path, not a command (rattler refuses it)
        "bin/evil = a:b",
        ".. = a:b",
        "a = b:c.d",  # an attribute path: rattler's template differs
        "a = b:c [extra]",
        "a b = c:d",
        "= a:b",
        "a = :b",
        "a = b:",
        "a = b",
        "a",
        "a = b-c:d",
        "a = b:c\nimport os",
    ],
)
def test_any_other_entry_point_is_left_to_rattler(text: str) -> None:
    assert parse_entry_point(text) is None


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (None, ()),  # no link.json: no entry points
        ({"noarch": {"type": "python"}, "package_metadata_version": 1}, ()),
        ({"noarch": {"type": "python", "entry_points": ["a = b:c"]}, "package_metadata_version": 1}, ("a = b:c",)),
        # What rattler does not read, or reads otherwise: its package is linked.
        ({"noarch": {"type": "python", "entry_points": ["a = b:c"]}}, None),  # no package_metadata_version
        ({"noarch": {"type": "generic"}, "package_metadata_version": 1}, None),
        ({"noarch": {"entry_points": []}, "package_metadata_version": 1}, None),
        ({"noarch": {"type": "python", "entry_points": "a = b:c"}, "package_metadata_version": 1}, None),
        ({"noarch": {"type": "python", "entry_points": [1]}, "package_metadata_version": 1}, None),
        ({"noarch": {"type": "python", "entry_points": ["a = b:c", "a = d:e"]}, "package_metadata_version": 1}, None),
        ({"noarch": {"type": "python"}, "package_metadata_version": True}, None),
        ({"noarch": {"type": "python"}, "package_metadata_version": -1}, None),
        ({"noarch": "python", "package_metadata_version": 1}, None),
        ([], None),
        ("not json", None),
    ],
)
def test_link_json_entry_points(document: object, expected: tuple[str, ...] | None) -> None:
    text = None if document is None else document if document == "not json" else json.dumps(document)
    assert link_entry_points(text) == expected  # type: ignore[arg-type]


def test_where_the_environments_python_puts_a_noarch_package() -> None:
    python = python_target("3.11.9", "linux-aarch64", None)
    assert python is not None
    assert python.relocated("site-packages/a/b.py") == "lib/python3.11/site-packages/a/b.py"
    assert python.relocated("python-scripts/tool") == "bin/tool"
    assert python.relocated("share/site-packages/x") == "share/site-packages/x"
    assert python.relocated("site-packages-extra/x") == "site-packages-extra/x"
    assert python.relocated("site-packages") is None and python.relocated("python-scripts") is None  # rattler's to place
    assert python_target("3.12.0rc1", "osx-arm64", None) == python_target("3.12", "linux-64", None)
    # Left to rattler: Windows' launchers, a python with a site-packages path of its own, a version without major.minor.
    assert python_target("3.11.9", "win-64", None) is None
    assert python_target("3.13.0", "linux-64", "lib/python3.13t/site-packages") is None
    assert python_target("3", "linux-64", None) is None


def test_an_entry_point_script_rattler_would_write_otherwise_is_left_to_it() -> None:
    point, python = EntryPoint("a", "b", "c"), python_target("3.11.9", "linux-64", None)
    assert python is not None
    script = entry_point_script(point, "/opt/env", python)
    assert script is not None and script.startswith(b"#!/opt/env/bin/python3.11\n") and script.endswith(b"\tsys.exit(c())\n")
    assert entry_point_script(point, "/opt/" + "p" * 120, python) is None  # rattler writes a /bin/sh exec line
    assert entry_point_script(point, "/opt/with space", python) is None


def test_a_hostile_entry_point_is_refused_by_the_bake_with_a_clear_error(tmp_path: Path) -> None:
    # An entry point naming a path out of bin/: not streamed (not plain), and rattler refuses to link it. The
    # error names the package and its link.json; nothing is written outside the staging prefix, no image is left.
    channel = tmp_path / "channel"
    build_channel(channel, [python_package()], subdirs=("linux-64",))
    evil = HostilePackage(
        "evil-entry",
        (Member("site-packages/evil/__init__.py", content=b""),),
        noarch="python",
        link={"noarch": {"type": "python", "entry_points": ["../../../../escaped = evil:main"]}, "package_metadata_version": 1},
    )
    write_hostile_package(evil, channel)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    ws = locked_workspace(tmp_path / "ws", channel, ["python", "evil-entry"])
    result = ws.envkit("bake", "-q", "-p", "linux-64", "--oci", ws.root / "image")
    error = assert_refused(result, "evil-entry", "entry point")
    assert "info/link.json" in result.stderr, error
    assert not (ws.root / "image").exists()
    assert not list(tmp_path.rglob("escaped"))
