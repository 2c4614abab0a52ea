"""envkit install on hostile packages and wheels (issue 14 items 1, 2, 3, 11, 15): each crafted
archive is refused with one line naming the package, before anything is linked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conda_envkit.errors import EnvkitError
from conda_envkit.pip_install import WheelToInstall, install_wheels
from conda_envkit.testing.hostile_packages import RawWheel, write_raw_wheel
from tests.hostile.conftest import (
    CANARY,
    HOSTILE_CONDA,
    assert_nothing_left,
    assert_refused,
    locked_workspace,
    real_locked_workspace,
    with_package,
)


@pytest.mark.parametrize("name", sorted(HOSTILE_CONDA))
def test_hostile_conda_package_is_refused_before_linking(tmp_path: Path, hostile_channel: Path, name: str) -> None:
    _package, message = HOSTILE_CONDA[name]
    ws = locked_workspace(tmp_path / "work", hostile_channel, [name])
    result = ws.install()
    assert_refused(result, name, message)
    assert_nothing_left(ws.root)
    assert not any(Path(p).exists() for p in (CANARY + "-abs", CANARY + "-tar"))
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_symlink_chain_across_two_packages_is_refused(tmp_path: Path, hostile_channel: Path) -> None:
    # Each package alone stays inside lexically; lib/upup -> up/.. climbs out once lib/up -> .. exists.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["chain-a", "chain-b"])
    assert_refused(ws.install(), "chain-b", "lib/upup", "leaves the prefix")
    assert_nothing_left(ws.root)


def test_honest_package_installs_with_no_hard_link_into_the_cache(tmp_path: Path, hostile_channel: Path) -> None:
    ws = real_locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    assert ws.install().returncode == 0
    tool = ws.root / "env" / "bin" / "honest"
    # An edit in this environment must not reach the cache, nor any later install.
    assert os.stat(tool).st_nlink == 1
    tool.write_text("#!/bin/sh\necho pwned\n")
    assert ws.install("env2").returncode == 0
    assert (ws.root / "env2" / "bin" / "honest").read_text() == "#!/bin/sh\necho honest\n"


WHEELS = {
    "metadata-name": (RawWheel("wheelname", "1.0", (("wheelname/__init__.py", b""),), metadata_name="otherdist"), "holds 'otherdist'"),
    "record-dotdot": (RawWheel("recdot", "1.0", (("../../../../recdot-escape.py", b"x"),)), "recdot"),
    "data-escape": (RawWheel("dataesc", "1.0", (("dataesc-1.0.data/data/../../dataesc-escape", b"x"),)), "dataesc"),
    # A record planted or overwritten in conda-meta/ (a sync then takes it for an installed package); bake used to
    # keep it in the image while its pip record claimed it.
    "data-conda-meta": (
        RawWheel("datacm", "1.0", (("datacm-1.0.data/data/conda-meta/evil-1.0-0.json", b"{}"),)),
        "conda-meta/evil-1.0-0.json is in conda-meta/, which no package may install",
    ),
    "dup-member": (
        RawWheel("dupw", "1.0", (("dupw/__init__.py", b"a = 1\n"), ("dupw/__init__.py", b"a = 2\n"))),
        "holds dupw/__init__.py more than once",
    ),
    "data-conda-record": (
        RawWheel("datacr", "1.0", (("datacr-1.0.data/data/conda-meta/python-3.11.9-h0_0.json", b"{}"),)),
        "in conda-meta/, which no package may install",
    ),
}


@pytest.mark.parametrize("command", ["install", "bake"])
@pytest.mark.parametrize("case", sorted(WHEELS))
def test_hostile_wheel_is_refused(tmp_path: Path, hostile_channel: Path, case: str, command: str) -> None:
    # bake reads a wheel straight into its layer as installer would install it; one installer would refuse is
    # installed in a staging prefix instead, where it is refused as install refuses it.
    wheel_spec, message = WHEELS[case]
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["python"])
    wheel = write_raw_wheel(wheel_spec, tmp_path / "wheels")
    ws.add_wheel(wheel, wheel_spec.name, wheel_spec.version)
    if command == "install":
        assert_refused(ws.install(), wheel_spec.name, message)
        assert_nothing_left(ws.root)
    else:
        assert_refused(ws.envkit("bake", "-q", "-p", "linux-64", "--oci", ws.root / "image"), wheel_spec.name, message)
        assert not (ws.root / "image").exists()
    assert not list(tmp_path.rglob("*-escape*"))


def _prefix_with_python(root: Path) -> Path:
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    return root


def test_wheel_never_writes_through_a_symlink_that_leaves_the_prefix(tmp_path: Path) -> None:
    # Bypasses install's package checks: a prefix that already holds a dangling symlink out.
    outside = tmp_path / "host"
    prefix = _prefix_with_python(tmp_path / "prefix")
    (prefix / "lib" / "python3.11" / "site-packages" / "evilpkg").symlink_to(outside)
    wheel = write_raw_wheel(RawWheel("evilpkg", "1.0", (("evilpkg/__init__.py", b"owned = True\n"),)), tmp_path / "wheels")
    item = WheelToInstall("evilpkg", "1.0", wheel.as_uri(), "0" * 64, wheel)
    with pytest.raises(EnvkitError) as info:
        install_wheels([item], prefix, str(prefix), "linux-64", "3.11.9")
    assert "symlink" in str(info.value) and "evilpkg" in str(info.value)
    assert not outside.exists()


def test_a_wheel_install_stopped_half_way_leaves_no_file_without_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From a new-user trial: Ctrl-C while a sync installed a wheel left its files (one of them empty) and no record,
    # and every later install refused: "would overwrite bin/wb, which is in the prefix but in no package's record".
    from conda_envkit import pip_install

    prefix = _prefix_with_python(tmp_path / "prefix")
    files = tuple((f"halfway/m{i}.py", b"x = %d\n" % i) for i in range(5))
    wheel = write_raw_wheel(RawWheel("halfway", "1.0", files), tmp_path / "wheels")
    real = pip_install.PrefixDestination.write_to_fs
    calls = []

    def interrupted(self, scheme, path, stream, is_executable):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, scheme, path, stream, is_executable)

    monkeypatch.setattr(pip_install.PrefixDestination, "write_to_fs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        install_wheels([WheelToInstall("halfway", "1.0", wheel.as_uri(), "0" * 64, wheel)], prefix, str(prefix), "linux-64", "3.11.9")
    assert len(calls) == 3
    assert [p for p in prefix.rglob("*") if p.is_file()] == []  # the two files written are gone again
    monkeypatch.undo()
    install_wheels([WheelToInstall("halfway", "1.0", wheel.as_uri(), "0" * 64, wheel)], prefix, str(prefix), "linux-64", "3.11.9")
    assert (prefix / "conda-meta" / "envkit" / "pip" / "halfway.json").is_file()


@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", "x\n"])
def test_pip_record_name_is_one_plain_component(tmp_path: Path, name: str) -> None:
    # What the lock parser refuses, the record writer refuses again (defence in depth).
    prefix = _prefix_with_python(tmp_path / "prefix")
    wheel = write_raw_wheel(RawWheel("plain", "1.0", (("plain/__init__.py", b""),)), tmp_path / "wheels")
    with pytest.raises(EnvkitError) as info:
        install_wheels([WheelToInstall(name, "1.0", wheel.as_uri(), "0" * 64, wheel)], prefix, str(prefix), "linux-64", "3.11.9")
    assert "not a plain file name" in str(info.value)
    assert not list(tmp_path.rglob("x.json"))


@pytest.mark.parametrize("field,value", [("sha256", "../../../sha-escape"), ("url", "https://example.invalid/..%2F..%2Fx.conda")])
def test_cache_paths_from_the_lock_are_single_components(tmp_path: Path, hostile_channel: Path, field: str, value: str) -> None:
    from conda_envkit.install import fetch_packages
    from conda_envkit.lockfile import read_lockfile

    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    lock = with_package(read_lockfile(ws.lock), "honest", **{field: value})
    package = next(p for p in lock.package if p.name == "honest")
    with pytest.raises(EnvkitError):
        fetch_packages([package], tmp_path / "cache" / "envkit")
    assert not (tmp_path / "sha-escape").exists()
    assert not list((tmp_path / "cache").rglob("*.conda"))


def _tree(prefix: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(prefix)): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir")
        for p in sorted(prefix.rglob("*"))
    }


@pytest.mark.parametrize("name", ["abs-tar-entry", "dotdot-path", "symlink-climb", "sha-mismatch"])
def test_sync_into_an_existing_prefix_checks_new_archives_first(tmp_path: Path, hostile_channel: Path, name: str) -> None:
    # A lock from a pull request adds a hostile package to an environment envkit already made:
    # the sync path must refuse it like a fresh install does, before the prefix changes.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    assert ws.install().returncode == 0
    before = _tree(ws.root / "env")
    ws.lock.write_text(locked_workspace(tmp_path / "work", hostile_channel, ["honest", name]).lock.read_text())
    _package, message = HOSTILE_CONDA[name]
    assert_refused(ws.install(), name, message)
    assert _tree(ws.root / "env") == before
    assert not any(Path(p).exists() for p in (CANARY + "-abs", CANARY + "-tar"))
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_sync_links_no_file_from_a_shared_cache(tmp_path: Path, hostile_channel: Path) -> None:
    # Files a sync links are not hard links into the cache: an edit in one environment
    # reaches no later install or sync.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["python"])
    assert ws.install().returncode == 0
    ws.lock.write_text(locked_workspace(tmp_path / "work", hostile_channel, ["python", "honest"]).lock.read_text())
    assert ws.install().returncode == 0  # a sync: honest is added
    tool = ws.root / "env" / "bin" / "honest"
    assert os.stat(tool).st_nlink == 1
    tool.write_text("#!/bin/sh\necho pwned\n")
    assert ws.install("env2").returncode == 0
    assert (ws.root / "env2" / "bin" / "honest").read_text() == "#!/bin/sh\necho honest\n"


def test_a_cached_archive_edited_in_place_with_its_mtime_put_back_is_hashed_again(tmp_path: Path) -> None:
    # The "verified once" marker must not outlive an edit that keeps size, inode and mtime.
    import hashlib

    from conda_envkit.install import is_verified, mark_verified

    archive = tmp_path / "pkgs" / ("a" * 64) / "pkg-1.0-0.conda"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"honest bytes")
    sha = hashlib.sha256(b"honest bytes").hexdigest()
    mark_verified(archive, sha)
    assert is_verified(archive, sha)
    before = archive.stat()
    with archive.open("r+b") as f:  # same size, same inode
        f.write(b"hostile")
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert archive.stat().st_mtime_ns == before.st_mtime_ns and archive.stat().st_ino == before.st_ino
    assert not is_verified(archive, sha)


@pytest.mark.parametrize("command", ["install", "bake"])
def test_a_wheel_with_a_corrupt_member_is_refused(tmp_path: Path, hostile_channel: Path, command: str) -> None:
    # A deflated member whose bytes were changed after the wheel was written (the lock pins the changed wheel):
    # zipfile finds it out as it reads it, in installer's install and in bake's stream alike.
    import zipfile

    wheel = write_raw_wheel(RawWheel("crcbad", "1.0", (("crcbad/__init__.py", b"x = 1\n" * 2000),)), tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info, data in members:
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    raw = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo("crcbad/__init__.py")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    wheel.write_bytes(bytes(raw))
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["python"])
    ws.add_wheel(wheel, "crcbad", "1.0")
    if command == "install":
        assert_refused(ws.install(), "crcbad")
    else:
        assert_refused(ws.envkit("bake", "-q", "-p", "linux-64", "--oci", ws.root / "image"), "crcbad")
        assert not (ws.root / "image").exists()


@pytest.mark.parametrize("command", ["install", "bake"])
def test_two_wheels_that_write_the_same_file_are_refused(tmp_path: Path, hostile_channel: Path, command: str) -> None:
    # install puts every wheel in one prefix, where the second is refused. bake streams each into a layer of its
    # own; two that write the same path are installed together in a staging prefix instead, and refused the same.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["python"])
    for name in ("clash-a", "clash-b"):
        wheel = write_raw_wheel(RawWheel(name, "1.0", (("shared/__init__.py", name.encode()),)), tmp_path / "wheels")
        ws.add_wheel(wheel, name, "1.0")
    if command == "install":
        assert_refused(ws.install(), "clash-b", "would overwrite", "shared/__init__.py")
    else:
        assert_refused(ws.envkit("bake", "-q", "-p", "linux-64", "--oci", ws.root / "image"), "would overwrite", "shared/__init__.py")
        assert not (ws.root / "image").exists()
