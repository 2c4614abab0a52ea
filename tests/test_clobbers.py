"""Paths several conda packages install (clobbers): rattler gives each to the package last in its topological
order and moves the others' files to `__clobbers__/<name>/`; `envkit install` gives the same tree every run, and
a baked image holds that tree, whichever way each package reaches its layer (streamed, staged or linked)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rattler.index import index_fs

from conda_envkit.clobbers import PathConflict, link_order, record_for_clobbers, resolve_clobbers
from conda_envkit.testing.hostile_packages import HostilePackage, Member, python_package, write_hostile_package
from conda_envkit.testing.local_channel import build_channel
from tests.hostile.conftest import Workspace, _listed, assert_nothing_left, assert_refused, locked_workspace
from tests.test_bake_cache import _tree
from tests.test_tar_headers import _as_tar_bz2


def _file(path: str, data: bytes) -> Member:
    return Member(path, content=data)


def _package(
    name: str, *members: Member, depends: tuple[str, ...] = (), paths: tuple[dict, ...] | None = None, **kw: object
) -> HostilePackage:
    return HostilePackage(name, members, paths, depends=depends, **kw)  # type: ignore[arg-type]


# Four packages with one path, no order between them (rattler: reverse name order, so `aaa` wins); a dependency
# chain deciding against the name order (`zed` depends on `mid`, which depends on `abc`: `zed` wins `share/chain.txt`);
# a symlink losing to a file; a package linked by rattler (a `no_link` file) losing, and one winning, against
# streamed ones; a `.tar.bz2` (staged) losing; and a noarch: python package whose relocated file loses to an arch
# package's.
_NO_LINK = b"copied, not linked\n"
PACKAGES = [
    *(_package(n, _file("share/same.txt", n.encode()), _file(f"share/{n}.txt", n.encode())) for n in ("aaa", "bbb", "mmm", "zzz")),
    _package("abc", _file("share/chain.txt", b"abc"), _file("a/first.txt", b"abc")),
    _package("mid", _file("zz/mid.txt", b"mid"), depends=("abc",)),
    _package("zed", _file("share/chain.txt", b"zed"), depends=("mid",)),
    _package("tool-real", _file("bin/real", b"real"), Member("bin/tool", kind="symlink", target="real")),
    _package("tool-file", _file("bin/tool", b"#!/bin/sh\necho file\n")),
    # Linked by rattler (its no_link file), in a part of the environment: it loses `share/linked.txt` to `alpha-plain`
    # (reverse name order) and wins `share/other.txt` from `lmn-plain`.
    _package(
        "linked",
        _file("share/linked.txt", b"linked"),
        _file("share/other.txt", b"linked wins"),
        _file("share/nolink.txt", _NO_LINK),
        paths=(
            _listed("share/linked.txt", b"linked"),
            _listed("share/other.txt", b"linked wins"),
            {**_listed("share/nolink.txt", _NO_LINK), "no_link": True},
        ),
    ),
    _package("alpha-plain", _file("share/linked.txt", b"alpha wins")),
    _package("lmn-plain", _file("share/other.txt", b"lmn")),
    # Staged (a .tar.bz2): loses to `bz-winner` (which depends on it).
    _package("bz-loser", _file("lib/bz.txt", b"bz loser"), _file("lib/bz-own.txt", b"own")),
    _package("bz-winner", _file("lib/bz.txt", b"bz winner"), depends=("bz-loser",)),
    # A noarch: python package's site-packages file (relocated to lib/python3.11/) against an arch package's (which
    # depends on it, so wins); its entry point's script clashes with nothing.
    _package(
        "pyclob",
        _file("site-packages/pyclob/__init__.py", b"noarch"),
        _file("site-packages/pyclob/own.py", b"own"),
        noarch="python",
        link={"noarch": {"type": "python", "entry_points": ["pyclob-run = pyclob:main"]}, "package_metadata_version": 1},
    ),
    _package(
        "archclob",
        _file("lib/python3.11/site-packages/pyclob/__init__.py", b"arch"),
        depends=("pyclob",),
        subdir="linux-64",
    ),
]
NAMES = [p.name for p in PACKAGES]
CLOBBERED = 7  # same.txt, chain.txt, bin/tool, linked.txt, other.txt, lib/bz.txt, pyclob/__init__.py


@pytest.fixture(scope="module")
def clobber_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    channel = tmp_path_factory.mktemp("channels") / "clobbers"
    build_channel(channel, [python_package()], subdirs=("linux-64",))
    for package in PACKAGES:
        conda = write_hostile_package(package, channel)
        if package.name == "bz-loser":
            _as_tar_bz2(conda, conda.with_name("bz-loser-1.0-0.tar.bz2"))
            conda.unlink()
    # A file in one package where another has a directory: rattler cannot link them together. An entry point's
    # script where another package has a file: rattler writes one over the other, in no fixed order.
    write_hostile_package(_package("as-file", _file("share/thing", b"a file")), channel)
    write_hostile_package(_package("as-dir", _file("share/thing/inside.txt", b"under")), channel)
    script = {"noarch": {"type": "python", "entry_points": ["thing = m:main"]}, "package_metadata_version": 1}
    write_hostile_package(_package("as-script", _file("site-packages/m.py", b"def main(): pass\n"), noarch="python", link=script), channel)
    write_hostile_package(_package("has-thing", _file("bin/thing", b"#!/bin/sh\n")), channel)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))
    return channel


def _workspace(root: Path, channel: Path, names: list[str]) -> Workspace:
    from conda_envkit.testing.crafted_lock import lock_entry

    ws = locked_workspace(root, channel, [n for n in names if n not in ("bz-loser", "archclob")])

    def edit(document: dict) -> None:
        if "bz-loser" in names:
            document["package"].append(lock_entry(channel / "noarch" / "bz-loser-1.0-0.tar.bz2", "bz-loser"))
        if "archclob" in names:
            document["package"].append(lock_entry(channel / "linux-64" / "archclob-1.0-0.conda", "archclob"))

    ws.rewrite(edit)
    return ws


def _installed(ws: Workspace, prefix: Path) -> dict:
    result = ws.envkit("install", "-q", "--prefix", prefix, "-p", "linux-64")
    assert result.returncode == 0, result.output
    tree = _tree(prefix)
    tree.pop("conda-meta/envkit/installed.json")
    tree.pop("conda-meta/envkit/prefix.json")  # (names the prefix it was installed for)
    return tree


def test_the_winner_is_the_package_last_in_rattlers_order() -> None:
    assert link_order([("zzz", ()), ("aaa", ()), ("mmm", ())]) == ["zzz", "mmm", "aaa"]  # no order: reverse names
    assert link_order([("abc", ()), ("zed", ("mid",)), ("mid", ("abc >=1",))]) == ["abc", "mid", "zed"]
    renamed = resolve_clobbers({"aaa": ["x", "a/b"], "zzz": ["x", "y"], "mmm": ["x"]}, lambda: ["zzz", "mmm", "aaa"])
    assert renamed == {"zzz": {"x": "__clobbers__/zzz/x"}, "mmm": {"x": "__clobbers__/mmm/x"}}
    renamed = resolve_clobbers({"aaa": ["x"], "zzz": ["x"]}, lambda: ["aaa", "zzz"])  # the order decides, not the names
    assert renamed == {"aaa": {"x": "__clobbers__/aaa/x"}}

    def unasked() -> list[str]:
        raise AssertionError("the order is asked for only when a path is clobbered")

    assert resolve_clobbers({"one": ["a/b", "a/c"], "two": ["a/d"]}, unasked) == {}  # a shared directory is no clobber


@pytest.mark.parametrize(
    ("paths", "named"),
    [
        ({"f": ["share/thing"], "d": ["share/thing/in.txt"]}, "f installs share/thing as a file or symlink, and d installs files under it"),
        (
            {"d": ["share/thing/deep/in.txt"], "f": ["share/thing"]},
            "f installs share/thing as a file or symlink, and d installs files under it",
        ),
        ({"f": ["x"], "g": ["x"], "d": ["x/y"]}, "f installs x as a file or symlink, and d installs files under it"),
        ({"both": ["x", "x/y"], "other": ["x"]}, "other installs x as a file or symlink, and both installs files under it"),
    ],
)
def test_a_path_that_is_a_file_and_a_directory_is_refused(paths: dict, named: str) -> None:
    with pytest.raises(PathConflict, match=named) as caught:
        resolve_clobbers(paths, lambda: sorted(paths), "linux-64")
    assert caught.value.message.startswith("linux-64: ") and "re-lock" in caught.value.hint


def test_a_packages_own_file_and_directory_are_its_archive_checks_to_refuse() -> None:
    assert resolve_clobbers({"both": ["x", "x/y"], "other": ["z"]}, lambda: ["both", "other"]) == {}


def test_a_partly_linked_record_is_rewritten_for_the_whole_environment() -> None:
    # rattler, linking a part of the environment, kept `a` (its rival was not there) and moved `b` (its rival was).
    record = {
        "files": ["__clobbers__/p/b", "a", "c"],
        "paths_data": {
            "paths": [
                {"_path": "__clobbers__/p/b", "original_path": "b", "sha256": "1"},
                {"_path": "a", "sha256": "2"},
                {"_path": "c", "sha256": "3"},
            ]
        },
    }
    moved = record_for_clobbers(record, {"a": "__clobbers__/p/a"})  # the whole environment: `a` lost, `b` won
    assert moved == {"__clobbers__/p/a": "a", "b": "__clobbers__/p/b"}
    assert record["files"] == ["__clobbers__/p/a", "b", "c"]
    assert record["paths_data"]["paths"] == [
        {"_path": "__clobbers__/p/a", "original_path": "a", "sha256": "2"},
        {"_path": "b", "sha256": "1"},
        {"_path": "c", "sha256": "3"},
    ]


def test_install_gives_the_same_tree_every_time(tmp_path: Path, clobber_channel: Path) -> None:
    # rattler moves clobbered files as it happens to link the packages: the empty directories it leaves and the
    # order of a record's paths varied from run to run before install normalized them.
    ws = _workspace(tmp_path / "ws", clobber_channel, ["python", *NAMES])
    trees = []
    for _ in range(4):
        trees.append(_installed(ws, tmp_path / "envs" / "env"))
        shutil.rmtree(tmp_path / "envs" / "env")
    assert all(tree == trees[0] for tree in trees[1:])  # conda-meta records included
    said = ws.envkit("install", "-q", "--prefix", tmp_path / "envs" / "said", "-p", "linux-64").stderr
    assert f"warning: linux-64: {CLOBBERED} path(s) are installed by more than one package: " in said
    assert "bin/tool (also in tool-real); lib/bz.txt (also in bz-loser); " in said and "; and 4 more. " in said
    tree = trees[0]
    assert tree["share/same.txt"] == ("file 644", b"aaa")
    assert {k: v for k, v in tree.items() if k.endswith("/share/same.txt")} == {
        f"__clobbers__/{n}/share/same.txt": ("file 644", n.encode()) for n in ("bbb", "mmm", "zzz")
    }
    assert "__clobbers__/aaa" not in tree  # (rattler may have moved aaa's file there and back)
    assert tree["share/chain.txt"] == ("file 644", b"zed") and tree["__clobbers__/abc/share/chain.txt"] == ("file 644", b"abc")
    assert tree["bin/tool"] == ("file 644", b"#!/bin/sh\necho file\n")
    assert tree["__clobbers__/tool-real/bin/tool"] == ("link", "real")
    assert tree["share/linked.txt"] == ("file 644", b"alpha wins") and tree["share/other.txt"] == ("file 644", b"linked wins")
    assert tree["__clobbers__/linked/share/linked.txt"] == ("file 644", b"linked")
    assert tree["__clobbers__/lmn-plain/share/other.txt"][1] == b"lmn"
    assert tree["lib/bz.txt"] == ("file 644", b"bz winner") and tree["__clobbers__/bz-loser/lib/bz.txt"] == ("file 644", b"bz loser")
    assert tree["lib/python3.11/site-packages/pyclob/__init__.py"] == ("file 644", b"arch")
    assert tree["__clobbers__/pyclob/lib/python3.11/site-packages/pyclob/__init__.py"] == ("file 644", b"noarch")
    assert tree["bin/pyclob-run"][0] == "file 775"  # an entry point, as py-rattler writes it
    record = json.loads(tree["conda-meta/zzz-1.0-0.json"][1])
    assert record["files"] == ["__clobbers__/zzz/share/same.txt", "share/zzz.txt"]
    assert record["paths_data"]["paths"][0]["original_path"] == "share/same.txt"


@pytest.mark.parametrize("large_mb", ["0", "1000"], ids=["own-layers", "group-layers"])
def test_the_baked_tree_is_the_installed_tree(tmp_path: Path, clobber_channel: Path, large_mb: str) -> None:
    installed = tmp_path / "envs" / "clob"
    ws = _workspace(tmp_path / "ws", clobber_channel, ["python", *NAMES])
    on_disk = _installed(ws, installed)
    image, record = ws.root / "image", ws.root / "bake.json"
    result = ws.envkit(
        "bake", "-p", "linux-64", "--large-package-mb", large_mb, "--record", record, "--oci", image, "--prefix", str(installed)
    )
    assert "17 packages (16 read from their archives, 1 linked)" in result.stderr  # (the linked one in a part of the env)
    assert f"warning: linux-64: {CLOBBERED} path(s) are installed by more than one package: bin/tool (also in tool-real)" in result.stderr
    assert result.returncode == 0, result.output
    baked = json.loads((ws.root / "bake.json").read_text())
    bundle = ws.root / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{ws.root / 'image'}:{baked['tags'][0]}", str(bundle)],
        check=True,
        capture_output=True,
    )
    in_image = _tree(bundle / "rootfs" / str(installed).strip("/"))
    in_image.pop("conda-meta/envkit/environment.json")
    assert json.loads(in_image.pop("conda-meta/envkit/prefix.json")[1]) == {
        "schema": "envkit.prefix/1",
        "platform": "linux-64",
        "target_prefix": str(installed),
    }  # (as install writes it: _installed leaves it out)
    assert in_image == on_disk
    # And each is what `envkit verify` expects of the lock.
    for target in (["--prefix", installed], ["--image", f"oci:{image}"]):
        verified = ws.envkit("verify", *target, "-p", "linux-64")
        assert verified.returncode == 0 and "matches conda-lock.yml" in verified.stdout, verified.output


def test_a_package_that_comes_to_win_a_path_rebuilds_the_losers_layer(tmp_path: Path, clobber_channel: Path) -> None:
    # abc baked alone keeps share/chain.txt; once zed (which wins it) is in the lock, abc's own layer (cached from
    # the first bake) must not be reused: the second bake is the cold bake of the second lock.
    first = _workspace(tmp_path / "first", clobber_channel, ["abc", "mid"])
    second = _workspace(tmp_path / "second", clobber_channel, ["abc", "mid", "zed"])
    cold = _workspace(tmp_path / "cold", clobber_channel, ["abc", "mid", "zed"])

    def bake(ws: Workspace, cache: Workspace) -> str:
        env = {"ENVKIT_CACHE_DIR": str(cache.cache)}
        out = ws.envkit(
            "bake",
            "-q",
            "-p",
            "linux-64",
            "--large-package-mb",
            "0",
            "--record",
            ws.root / "bake.json",
            "--oci",
            ws.root / "image",
            env=env,
        )
        assert out.returncode == 0, out.output
        return json.loads((ws.root / "bake.json").read_text())["image"]["digest"]

    bake(first, first)
    assert bake(second, first) == bake(cold, cold)


@pytest.mark.parametrize("command", ["install", "bake"])
@pytest.mark.parametrize(
    ("names", "said"),
    [
        (["as-file", "as-dir"], ("as-file installs share/thing as a file", "as-dir installs files under it")),
        (["python", "as-script", "has-thing"], ("bin/thing is written by as-script as an entry point's script", "installed by has-thing")),
    ],
    ids=["file-and-directory", "script-and-file"],
)
def test_a_path_rattler_cannot_settle_is_refused(
    tmp_path: Path, clobber_channel: Path, command: str, names: list[str], said: tuple
) -> None:
    ws = locked_workspace(tmp_path / "ws", clobber_channel, names)
    args = ["--prefix", tmp_path / "envs" / "env"] if command == "install" else ["--oci", ws.root / "image"]
    result = ws.envkit(command, "-q", "-p", "linux-64", *args)
    assert_refused(result, "linux-64", *said)
    if command == "install":
        assert_nothing_left(tmp_path / "envs")
    assert not (ws.root / "image").exists()


@pytest.mark.parametrize("command", ["install", "bake"])
def test_an_archive_naming_another_package_is_refused_before_its_paths_are_used(
    tmp_path: Path, clobber_channel: Path, command: str
) -> None:
    # The clobbers are named after each package (`__clobbers__/<name>/`): the name an archive gives must be the lock's.
    import yaml

    from conda_envkit.testing.crafted_lock import lock_document, lock_entry

    channel = tmp_path / "channel"
    (channel / "noarch").mkdir(parents=True)
    shutil.copy(clobber_channel / "noarch" / "aaa-1.0-0.conda", channel / "noarch")
    shutil.copy(clobber_channel / "noarch" / "bbb-1.0-0.conda", channel / "noarch" / "other-1.0-0.conda")  # bbb inside
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.root.mkdir()
    entries = [lock_entry(channel / "noarch" / "aaa-1.0-0.conda", "aaa"), lock_entry(channel / "noarch" / "other-1.0-0.conda", "other")]
    ws.lock.write_text(yaml.safe_dump(lock_document(channel, entries), sort_keys=False))
    args = ["--prefix", tmp_path / "envs" / "env"] if command == "install" else ["--oci", ws.root / "image"]
    result = ws.envkit(command, "-q", "-p", "linux-64", *args)
    assert_refused(result, "linux-64: other-1.0-0.conda holds bbb 1.0 0, but the lock says other 1.0 0")
    assert not (ws.root / "image").exists()


@pytest.mark.parametrize("command", ["install", "bake"])
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed-wheel", "staged-wheel"])
def test_a_wheel_that_would_overwrite_a_conda_packages_file_is_refused(
    tmp_path: Path, clobber_channel: Path, command: str, streamed: bool
) -> None:
    # Streamed, the bake plans the wheel's paths; staged (its RECORD gives no hash for a file, which installer
    # accepts and the stream does not: installed in a staging prefix holding none of the streamed conda packages),
    # its pip record says them.
    import zipfile

    from conda_envkit.testing.hostile_packages import RawWheel, write_raw_wheel

    wheel = write_raw_wheel(RawWheel("clash", "1.0", (("clash.py", b"real\n"), ("README.txt", b"mine\n"))), tmp_path / "wheels")
    if not streamed:
        with zipfile.ZipFile(wheel) as z:
            members = [(info, z.read(info)) for info in z.infolist()]
        with zipfile.ZipFile(wheel, "w") as z:
            for info, data in members:
                if info.filename.endswith("/RECORD"):
                    data = b"".join(b"clash.py,,\n" if row.startswith(b"clash.py,") else row for row in data.splitlines(keepends=True))
                z.writestr(info, data)
    ws = locked_workspace(tmp_path / "ws", clobber_channel, ["python", "aaa"])
    ws.add_wheel(wheel, "clash", "1.0")
    args = ["--prefix", tmp_path / "envs" / "env"] if command == "install" else ["--oci", ws.root / "image"]
    result = ws.envkit(command, "-q", "-p", "linux-64", *args)
    said = "which conda package python-3.11.9-h0_0 installed"  # install reads it from the record, bake from the plan
    assert_refused(result, "linux-64: pip package clash 1.0 would overwrite lib/python3.11/site-packages/README.txt, " + said)
    assert not (ws.root / "image").exists()


def test_a_synced_prefix_is_the_fresh_install_as_a_winner_comes_and_goes(tmp_path: Path, clobber_channel: Path) -> None:
    # zed wins share/chain.txt from abc: syncing it in moves abc's file to __clobbers__, syncing it out moves it back.
    without = _workspace(tmp_path / "without", clobber_channel, ["abc", "mid"])
    with_zed = _workspace(tmp_path / "with", clobber_channel, ["abc", "mid", "zed"])
    fresh = {ws.root.name: _installed(ws, tmp_path / "envs" / ws.root.name) for ws in (without, with_zed)}
    prefix = tmp_path / "envs" / "synced"
    assert without.envkit("install", "-q", "--prefix", prefix, "-p", "linux-64").returncode == 0
    for ws in (with_zed, without, with_zed):
        synced = ws.envkit("install", "-q", "--prefix", prefix, "-p", "linux-64")
        assert synced.returncode == 0 and "synced" in synced.stdout, synced.output
        tree = _tree(prefix)
        tree.pop("conda-meta/envkit/installed.json")
        tree.pop("conda-meta/envkit/prefix.json")  # (names the prefix it was installed for)
        assert tree == fresh[ws.root.name]
        verified = ws.envkit("verify", "--prefix", prefix, "-p", "linux-64")
        assert verified.returncode == 0, verified.output
