"""`envkit install` syncs where a prefix holds more than its packages put there: what python compiled, a user's
directory at a package's path, a relative `--prefix`, envkit's own record damaged; and records written by hand
or by a hostile tool. Each case from a trial of the sync (tests/test_install_sync.py has the plain ones)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conda_envkit.testing.hostile_packages import HostilePackage, Member, write_hostile_package
from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel, index_channel
from tests.conftest import Result, run_envkit, write_env


def _channel(root: Path) -> Path:
    """python 3.11, a noarch: python module `six`, and `t` 1.0 / 2.0 (one file each)."""
    channel = root / "channel"
    python = PackageSpec(
        "python",
        "3.11.9",
        "h0",
        subdir="linux-64",
        files=(PackageFile("lib/python3.11/os.py", b"#\n"), PackageFile("lib/python3.11/site-packages/README.txt", b"site\n")),
    )
    t = [PackageSpec("t", v, "0", subdir="linux-64", files=(PackageFile("share/t/a.txt", v.encode()),)) for v in ("1.0", "2.0")]
    build_channel(channel, [python, *t], subdirs=("linux-64",))
    link = {"noarch": {"type": "python"}, "package_metadata_version": 1}
    six = HostilePackage("six", (Member("site-packages/six.py", content=b"x = 1\n"),), depends=("python",), noarch="python", link=link)
    write_hostile_package(six, channel)
    index_channel(channel)
    return channel


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _channel(tmp_path_factory.mktemp("sync-edges"))


def _lock(work: Path, channel: Path, *deps: str) -> None:
    write_env(work, f"channels: [{channel}]\nplatforms: [linux-64]\ndependencies: [{', '.join(deps)}]\n")
    result = run_envkit("lock", "-q", cwd=work)
    assert result.returncode == 0, result.output


def _install(work: Path, prefix: Path | str, *extra: str) -> Result:
    return run_envkit(
        "install", "--prefix", prefix, "-p", "linux-64", *extra, cwd=work, env={"ENVKIT_CACHE_DIR": str(work.parent / "cache")}
    )


def _verify(work: Path, prefix: Path) -> Result:
    return run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)


def _installed(tmp_path: Path, channel: Path, *deps: str) -> tuple[Path, Path]:
    """A lock of `deps` in `work`, installed into `env`: (work, env)."""
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, *deps)
    assert _install(work, prefix).returncode == 0
    return work, prefix


def test_removing_a_noarch_module_removes_what_python_compiled_from_it(tmp_path: Path, channel: Path) -> None:
    work, prefix = _installed(tmp_path, channel, "python =3.11", "six")
    cache = prefix / "lib" / "python3.11" / "site-packages" / "__pycache__"
    cache.mkdir()
    (cache / "six.cpython-311.pyc").write_bytes(b"compiled")  # as `import six` leaves it
    assert _verify(work, prefix).returncode == 0
    _lock(work, channel, "python =3.11")
    result = _install(work, prefix)
    assert result.returncode == 0 and "1 removed" in result.stdout, result.output
    assert not cache.exists()
    assert _verify(work, prefix).returncode == 0


def test_a_relative_prefix_is_written_as_its_absolute_path_without_dots(tmp_path: Path, channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, channel, "t =1.0")
    assert _install(work, "../env").returncode == 0
    prefix = tmp_path / "env"
    identity = json.loads((prefix / "conda-meta" / "envkit" / "prefix.json").read_text())
    assert identity["target_prefix"] == str(prefix)
    # The same prefix by its absolute path is the same environment: up to date, and verified.
    again = _install(work, prefix)
    assert again.returncode == 0 and again.stdout.strip() == f"{prefix} is up to date", again.output
    assert _verify(work, prefix).returncode == 0


def test_a_users_directory_at_a_packages_file_is_refused_before_anything_changes(tmp_path: Path, channel: Path) -> None:
    work, prefix = _installed(tmp_path, channel, "t =1.0")
    mine = prefix / "share" / "t" / "a.txt"
    mine.unlink()
    mine.mkdir()
    (mine / "notes").write_text("mine")
    state = prefix / "conda-meta" / "envkit" / "installed.json"
    before = state.read_bytes()
    _lock(work, channel, "t =2.0")
    result = _install(work, prefix)
    assert result.returncode == 2, result.output
    assert f"error: {mine} is a directory, where t installed a file" in result.stderr and "disk space" not in result.stderr
    assert state.read_bytes() == before and not (prefix / "CACHEDIR.TAG").exists()  # nothing changed
    assert (mine / "notes").read_text() == "mine"
    # Moved away, the sync goes through.
    (mine / "notes").unlink()
    mine.rmdir()
    assert _install(work, prefix).returncode == 0 and _verify(work, prefix).returncode == 0


def test_a_record_whose_original_path_leaves_the_prefix_is_refused_before_anything_changes(tmp_path: Path, channel: Path) -> None:
    work, prefix = _installed(tmp_path, channel, "t =1.0", "six", "python =3.11")
    record_path = next((prefix / "conda-meta").glob("t-1.0-0.json"))
    record = json.loads(record_path.read_text())
    for original in (str(tmp_path / "outside" / "planted"), "../outside/planted"):
        record["paths_data"]["paths"][0]["original_path"] = original
        record_path.write_text(json.dumps(record))
        _lock(work, channel, "t =1.0", "python =3.11")  # six goes: a sync that links and unlinks
        result = _install(work, prefix)
        assert result.returncode == 2 and "panicked" not in result.output, result.output
        assert f"error: {record_path}: names {original!r} as a file's original path, outside the prefix" in result.stderr
        assert (prefix / "conda-meta" / "envkit" / "installed.json").is_file()  # nothing changed
        assert not (tmp_path / "outside").exists()


def test_an_installed_record_that_is_a_directory_is_replaced(tmp_path: Path, channel: Path) -> None:
    work, prefix = _installed(tmp_path, channel, "t =1.0")
    state = prefix / "conda-meta" / "envkit" / "installed.json"
    state.unlink()
    (state / "junk").mkdir(parents=True)
    _lock(work, channel, "t =2.0")
    result = _install(work, prefix)
    assert result.returncode == 0, result.output
    assert state.is_file() and _verify(work, prefix).returncode == 0
    assert not any(p.name.startswith(".installed") for p in state.parent.iterdir()), os.listdir(state.parent)


def test_forcing_a_prefix_another_tool_made_gives_the_records_an_install_writes(tmp_path: Path, channel: Path) -> None:
    """A prefix py-rattler itself made (as pixi and micromamba make them), with the locked package: `install --force`
    brings it to the lock, and then verify passes (the other tool's records were kept, and verify failed for ever)."""
    import asyncio

    from rattler import Platform, install, solve

    async def other_tool() -> None:
        records = await solve(sources=[str(channel)], specs=["t ==1.0"], platforms=[Platform("linux-64"), Platform("noarch")])
        await install(records, target_prefix=tmp_path / "env", cache_dir=tmp_path / "other-cache", show_progress=False)

    asyncio.run(other_tool())
    work, prefix = tmp_path / "work", tmp_path / "env"
    assert "timestamp" in next((prefix / "conda-meta").glob("t-*.json")).read_text()  # the other tool's record
    _lock(work, channel, "t =1.0")
    assert _install(work, prefix).returncode == 2  # not envkit's: refused without --force
    forced = _install(work, prefix, "--force")
    assert forced.returncode == 0, forced.output
    assert _verify(work, prefix).returncode == 0
    again = _install(work, prefix)
    assert again.returncode == 0 and again.stdout.strip() == f"{prefix} is up to date"


def test_a_users_file_where_a_new_package_installs_one_is_refused_not_overwritten(tmp_path: Path, channel: Path) -> None:
    work, prefix = _installed(tmp_path, channel, "python =3.11")
    mine = prefix / "share" / "t" / "a.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own notes")
    _lock(work, channel, "python =3.11", "t =1.0")
    result = _install(work, prefix)
    assert result.returncode == 2, result.output
    assert f"error: {mine} is in the prefix but in no package's record: installing t would overwrite it" in result.stderr
    assert mine.read_text() == "my own notes" and (prefix / "conda-meta" / "envkit" / "installed.json").is_file()
    mine.unlink()
    assert _install(work, prefix).returncode == 0 and _verify(work, prefix).returncode == 0
