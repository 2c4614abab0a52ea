"""`envkit install` into a prefix envkit made brings it to the lock: only what changed is unlinked
and linked, `envkit verify` passes after each step, and an up-to-date prefix is left untouched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import run_envkit
from tests.test_bake import _lock


def _snapshot(prefix: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_mtime_ns for p in [prefix, *prefix.rglob("*")]}


def _install(work: Path, prefix: Path, cache: Path, *extra: str) -> str:
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", *extra, cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.output
    verify = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert verify.returncode == 0, verify.output
    return result.stdout


def test_install_syncs_add_remove_change_and_noop(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "envs" / "train"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0"])
    _install(work, prefix, cache)
    greet = subprocess.run([str(prefix / "bin" / "greet")], capture_output=True, text=True, check=True).stdout
    assert greet.splitlines()[0] == "hello from the image"

    before = _snapshot(prefix)
    out = _install(work, prefix, cache)
    assert out.strip() == f"{prefix} is up to date"
    assert _snapshot(prefix) == before  # nothing touched

    _lock(work, image_channel, ["greet=2.0", "bigmodel=1.0"])
    # Before the sync, verify names the changed package and says install brings it back: envkit's own records
    # (its lock copy, conda-meta) are no reason to remove the prefix, as its hint said.
    stale = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert stale.returncode == 1 and "wrong-package    greet" in stale.stderr, stale.output
    assert "adds, removes and replaces those packages" in stale.stderr and "remove the prefix" not in stale.stderr
    busybox = (prefix / "bin" / "busybox").lstat()
    synced = _install(work, prefix, cache)
    # Which packages, and from what to what, not only how many (the counts alone left a user guessing).
    assert "0 added, 1 changed, 0 removed" in synced and synced.splitlines()[1:] == ["  ~ greet 1.0 0 -> 2.0 0"], synced
    greet = subprocess.run([str(prefix / "bin" / "greet")], capture_output=True, text=True, check=True).stdout
    assert greet.splitlines() == ["hello from greet 2", f"prefix is {prefix}"]
    assert (prefix / "bin" / "busybox").lstat().st_mtime_ns == busybox.st_mtime_ns  # unchanged package not relinked

    _lock(work, image_channel, ["greet=2.0", "bigmodel=1.0", "smalldata"])
    synced = _install(work, prefix, cache)
    assert "1 added, 0 changed, 0 removed" in synced and synced.splitlines()[1:] == ["  + smalldata 1.0 0"], synced
    assert (prefix / "lib" / "smalldata.bin").is_file()

    _lock(work, image_channel, ["greet=2.0", "smalldata"])
    synced = _install(work, prefix, cache)
    assert "0 added, 0 changed, 1 removed" in synced and synced.splitlines()[1:] == ["  - bigmodel 1.0 0"], synced
    assert not (prefix / "lib" / "bigmodel.bin").exists()
    assert not list((prefix / "conda-meta").glob("bigmodel-*.json"))
    assert (prefix / "conda-meta" / "envkit" / "conda-lock.yml").read_text() == (work / "conda-lock.yml").read_text()
    assert _install(work, prefix, cache).strip() == f"{prefix} is up to date"


def test_a_prefix_envkit_did_not_make_is_refused_unless_forced(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "other"
    _lock(work, image_channel, ["greet=1.0"])
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "notes.txt").write_text("someone else's")
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    refused = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env=env)
    assert refused.returncode == 2 and "was not created by envkit" in refused.stderr and "--force" in refused.stderr
    assert sorted(os.listdir(prefix)) == ["conda-meta", "notes.txt"]
    forced = run_envkit("install", "--prefix", prefix, "-p", "linux-64", "--force", cwd=work, env=env)
    assert forced.returncode == 0 and "2 added" in forced.stdout, forced.output
    assert (prefix / "notes.txt").read_text() == "someone else's"  # synced, not wiped
    verify = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert verify.returncode == 1 and "notes.txt" in verify.stderr  # and verify still names the stranger


def _lock_relative(work: Path, image_channel: Path, deps: list[str]) -> None:
    """A lock of `deps` whose channel is `./channel` beside it, as the demo's is."""
    import shutil

    from tests.conftest import write_env

    if not (work / "channel").exists():
        shutil.copytree(image_channel, work / "channel")
    write_env(work, f"channels: [./channel]\ndependencies: [{', '.join(deps)}]\n")
    result = run_envkit("lock", "-q", "-p", "linux-64", cwd=work)
    assert result.returncode == 0, result.output


def test_a_lock_with_a_relative_channel_syncs(tmp_path: Path, image_channel: Path) -> None:
    # Its conda-meta records keep the lock's relative URL; py-rattler reads records with absolute ones only.
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock_relative(work, image_channel, ["greet=1.0"])
    _install(work, prefix, cache)
    _lock_relative(work, image_channel, ["greet=2.0", "smalldata"])
    assert "1 added, 1 changed, 0 removed" in _install(work, prefix, cache)
    _lock_relative(work, image_channel, ["greet=2.0"])
    assert "0 added, 0 changed, 1 removed" in _install(work, prefix, cache)


def test_a_sync_does_not_remove_or_write_through_a_symlink_out_of_the_prefix(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix, outside = tmp_path / "work", tmp_path / "cache", tmp_path / "env", tmp_path / "outside"
    _lock(work, image_channel, ["greet=1.0", "smalldata"])
    _install(work, prefix, cache)
    (prefix / "lib").rename(outside)  # a user moves lib/ elsewhere and leaves a symlink
    (prefix / "lib").symlink_to(outside)
    kept = sorted(p.name for p in outside.iterdir())
    _lock(work, image_channel, ["greet=1.0"])  # smalldata (lib/smalldata.bin) goes
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 2, result.output
    assert f"{prefix / 'lib'} is a symlink out of the prefix (to {outside})" in result.stderr and "nothing was changed" in result.stderr
    assert sorted(p.name for p in outside.iterdir()) == kept  # smalldata.bin is still there
    assert list((prefix / "conda-meta").glob("smalldata-*.json"))


def test_a_sync_interrupted_after_linking_is_mended_by_the_next_install(tmp_path: Path, image_channel: Path) -> None:
    # What an interrupted sync leaves: no installed record, and conda-meta records py-rattler wrote (the cache's URL).
    import json

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0"])
    _install(work, prefix, cache)
    record_path = next((prefix / "conda-meta").glob("greet-*.json"))
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "url": (cache / "pkgs" / "x" / record["fn"]).as_uri()}))
    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    assert "0 added, 0 changed, 0 removed" in _install(work, prefix, cache)  # and verify passes (in _install)
    assert json.loads(record_path.read_text())["url"] == record["url"]


def test_one_sync_of_a_prefix_at_a_time(tmp_path: Path, image_channel: Path) -> None:
    import fcntl
    import sys

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0"])
    _install(work, prefix, cache)
    _lock(work, image_channel, ["greet=1.0", "smalldata"])
    fd = os.open(prefix, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another sync of this prefix holds it
    try:
        args = [sys.executable, "-m", "conda_envkit", "install", "--prefix", str(prefix), "-p", "linux-64"]
        env = {**os.environ, "ENVKIT_CACHE_DIR": str(cache)}
        waiting = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            waiting.wait(timeout=2)
            raise AssertionError("the second sync did not wait")
        except subprocess.TimeoutExpired:
            assert not list((prefix / "conda-meta").glob("smalldata-*.json"))
    finally:
        os.close(fd)
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "1 added" in out
    assert f"waiting for another install in {prefix}" in err, err  # (it said nothing, and looked hung)


def test_what_a_killed_sync_left_is_cleared_by_the_next_install(tmp_path: Path, image_channel: Path) -> None:
    # A sync killed outright (SIGKILL, the OOM killer) leaves temp files by their writers' names, and may leave a
    # record py-rattler renamed into place though its write failed (a full disk). The next install said "synced"
    # and left them (verify then failed for ever), or refused the empty record ("repair or remove the environment").
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0"])
    _install(work, prefix, cache)
    meta = prefix / "conda-meta"
    (meta / "envkit" / "installed.json").unlink()  # the sync had begun
    next(meta.glob("greet-*.json")).write_text("")  # its record, cut short
    planted = [meta / ".greet-1.0-0.json.4242.tmp", meta / "prefix_record_abc123", meta / "envkit" / ".conda-lock.yml.4242.tmp"]
    planted += [meta / "envkit" / ".installed.k3j2h1", prefix / "symtest_0b1c"]
    for path in planted:
        path.write_text("x")
    (prefix / ".refprobe-9f8e").mkdir()
    (prefix / "notes.txt").write_text("mine")  # a user's file is theirs: kept (and reported by verify)
    result = run_envkit("install", "-q", "--prefix", str(prefix), "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.output
    assert [p for p in planted if os.path.lexists(p)] == [] and not (prefix / ".refprobe-9f8e").exists()
    (prefix / "notes.txt").unlink()
    assert run_envkit("verify", "--prefix", str(prefix), "-p", "linux-64", cwd=work).returncode == 0


def _install_with_a_wheel(work: Path, cache: Path, prefix: Path, toy_channel: Path, index_url: str) -> str:
    """Lock python, numpy and the wheel hello-ml (from the test index), install it; the conda part of the spec."""
    from tests.conftest import write_env

    conda = f"channels:\n  - {toy_channel}\ndependencies:\n  - python =3.11\n  - numpy =1.26\n"
    write_env(work, conda + f"  - pip:\n    - --index-url {index_url}/simple\n    - hello-ml\n")
    assert run_envkit("lock", "-q", "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)}).returncode == 0
    _install(work, prefix, cache)
    return conda


def test_removing_a_wheel_removes_what_python_compiled_from_it(tmp_path: Path, toy_channel: Path, pip_index_server) -> None:  # noqa: ANN001
    # Running python once leaves __pycache__/*.pyc beside a wheel's modules; no record names them.
    from tests.conftest import write_env

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    conda = _install_with_a_wheel(work, cache, prefix, toy_channel, pip_index_server.url)
    site = prefix / "lib" / "python3.11" / "site-packages"
    modules = [p for p in site.rglob("*.py") if "dist-info" not in str(p)]
    assert modules
    for module in modules:
        (module.parent / "__pycache__").mkdir(exist_ok=True)
        (module.parent / "__pycache__" / f"{module.stem}.cpython-311.pyc").write_bytes(b"compiled")
    write_env(work, conda)
    assert run_envkit("lock", "-q", "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)}).returncode == 0
    assert "2 removed" in _install(work, prefix, cache)  # and verify passes: nothing of them is left
    assert not list(site.rglob("__pycache__"))


def test_a_foreign_record_py_rattler_cannot_read_is_an_error_before_anything_changes(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "other"
    _lock(work, image_channel, ["greet=1.0"])
    (prefix / "conda-meta").mkdir(parents=True)
    fake = prefix / "conda-meta" / "fake-1.0-0.json"
    fake.write_text('{"name": "fake", "version": "1.0", "build": "0"}')  # no "fn", as some tools write
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", "--force", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 2, result.output
    assert f"{fake}: a conda-meta record py-rattler cannot read" in result.stderr
    assert sorted(os.listdir(prefix / "conda-meta")) == ["fake-1.0-0.json"]  # nothing linked


def test_a_prefix_for_another_platform_says_which(tmp_path: Path, image_channel: Path) -> None:
    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0"], platforms=("linux-64", "linux-aarch64"))
    _install(work, prefix, cache)
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    other = run_envkit("install", "--prefix", prefix, "-p", "linux-aarch64", cwd=work, env=env)
    assert other.returncode == 2, other.output
    assert f"{prefix} holds an environment for linux-64; this install is for linux-aarch64" in other.stderr
    assert "pass -p linux-64" in other.stderr
    # Without -p, an existing prefix is for the platform it was installed for, not this host's.
    arm = tmp_path / "arm"
    assert run_envkit("install", "-q", "--prefix", arm, "-p", "linux-aarch64", cwd=work, env=env).returncode == 0
    again = run_envkit("install", "--prefix", arm, cwd=work, env=env)
    assert again.returncode == 0 and again.stdout.strip() == f"{arm} is up to date", again.output
    verify = run_envkit("verify", "--prefix", arm, cwd=work)
    assert verify.returncode == 0 and f"{arm}: matches conda-lock.yml (linux-aarch64)" in verify.stdout, verify.output


def test_verify_shows_a_few_findings_per_package_and_json_all(tmp_path: Path, image_channel: Path) -> None:
    import json
    import shutil

    from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel

    work, cache, prefix, channel = tmp_path / "work", tmp_path / "cache", tmp_path / "env", tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    many = PackageSpec("many", "1.0", "0", files=tuple(PackageFile(f"share/many/f{i:02}.txt", f"{i}\n".encode()) for i in range(25)))
    build_channel(channel, [many], subdirs=("linux-64",))
    _lock(work, channel, ["greet=1.0", "many"])
    _install(work, prefix, cache)
    shutil.rmtree(prefix / "share" / "many")
    result = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("missing-file     many 1.0 0: ")]
    # 25 files and their directory, share/many (credited to the package whose files it holds)
    assert len(lines) == 11 and "… and 16 more like these (--json lists every one)" in lines[-1], result.stderr
    as_json = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", "--json", cwd=work)
    assert len([f for f in json.loads(as_json.stdout)["findings"] if f["package"] == "many 1.0 0"]) == 26


def test_a_record_naming_a_path_outside_the_prefix_is_refused(tmp_path: Path, image_channel: Path) -> None:
    # A conda-meta record is the prefix's own file: edited by hand or by a hostile tool, it may name `../`.
    import json

    work, cache, prefix, outside = tmp_path / "work", tmp_path / "cache", tmp_path / "env", tmp_path / "outside"
    _lock(work, image_channel, ["greet=1.0", "smalldata"])
    _install(work, prefix, cache)
    outside.mkdir()
    (outside / "victim").write_text("keep me")
    record_path = next((prefix / "conda-meta").glob("smalldata-*.json"))
    record = json.loads(record_path.read_text())
    record["paths_data"]["paths"].append({"_path": "../outside/victim", "path_type": "hardlink"})
    record_path.write_text(json.dumps(record))
    _lock(work, image_channel, ["greet=1.0"])
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 2, result.output
    assert f"{prefix}: a package record names ../outside/victim, outside the prefix" in result.stderr
    assert (outside / "victim").read_text() == "keep me" and record_path.exists()


def _tree(prefix: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path under `prefix` with its mode and content (a link's target); envkit's own records aside."""
    tree: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(prefix.rglob("*")):
        rel = path.relative_to(prefix).as_posix()
        if rel.startswith("conda-meta/envkit"):
            continue
        st = path.lstat()
        content: bytes | str = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else b""
        tree[rel] = (st.st_mode if rel else 0, content)
    return tree


def test_an_empty_directory_is_installed_into_in_place(tmp_path: Path, image_channel: Path) -> None:
    # A CI volume or a directory made for the environment (its parent perhaps not writable): no --force needed,
    # its mode is kept, and what lands in it is what a fresh install at the same path makes.
    import shutil

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0", "smalldata"])
    _install(work, prefix, cache)
    fresh = _tree(prefix)
    shutil.rmtree(prefix)
    prefix.mkdir()
    prefix.chmod(0o750)
    out = _install(work, prefix, cache)
    assert f"installed 3 packages into {prefix} (an empty directory, in place)" in out, out  # greet, busybox, smalldata
    assert prefix.stat().st_mode & 0o777 == 0o750
    assert _tree(prefix) == fresh
    assert _install(work, prefix, cache).strip() == f"{prefix} is up to date"


def test_an_interrupted_install_into_an_empty_directory_is_finished_without_force(tmp_path: Path, image_channel: Path) -> None:
    import shutil

    work, cache, volume = tmp_path / "work", tmp_path / "cache", tmp_path / "volume"
    channel = tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    _lock(work, channel, ["greet=1.0", "smalldata"])
    volume.mkdir()
    greet = next((channel / "noarch").glob("greet-1.0-*"))
    greet.rename(greet.with_name("gone"))  # the install fails half-way: one archive cannot be fetched
    failed = run_envkit("install", "--prefix", volume, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert failed.returncode == 2 and "greet" in failed.stderr, failed.output
    assert (volume / "conda-meta" / "envkit" / "conda-lock.yml").is_file()  # envkit's, so the next install may finish it
    greet.with_name("gone").rename(greet)
    assert "3 added" in _install(work, volume, cache)


def test_a_wheels_files_left_without_its_record_are_named(tmp_path: Path, toy_channel: Path, pip_index_server) -> None:  # noqa: ANN001
    # The pip records were deleted by hand: the sync installs the wheels again and meets their files, which no
    # record lists. It says so (it used to blame "another package"), and the prefix stays envkit's to sync.
    import shutil

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _install_with_a_wheel(work, cache, prefix, toy_channel, pip_index_server.url)
    shutil.rmtree(prefix / "conda-meta" / "envkit" / "pip")
    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 2, result.output
    assert "which is in the prefix but in no package's record (left by an earlier install?)" in result.stderr, result.stderr
    assert "remove it" in result.stderr


def test_a_record_that_is_a_symlink_or_fifo_is_refused_and_nothing_outside_changes(tmp_path: Path, image_channel: Path) -> None:
    # From a hostile trial: a record replaced by a symlink to another environment's record was rewritten and chmod-ed
    # through the link by the next sync; a FIFO made it wait forever.
    import shutil

    work, cache, prefix, other = tmp_path / "work", tmp_path / "cache", tmp_path / "env", tmp_path / "other"
    _lock(work, image_channel, ["greet=1.0"])
    _install(work, prefix, cache)
    _install(work, other, cache)
    victim = next((other / "conda-meta").glob("greet-*.json"))
    victim.chmod(0o600)
    before = victim.read_bytes()
    record = next((prefix / "conda-meta").glob("greet-*.json"))
    record.unlink()
    record.symlink_to(victim)
    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env=env)
    assert result.returncode == 2 and f"{record}: the conda-meta record is a symlink to {victim}" in result.stderr, result.output
    assert victim.read_bytes() == before and victim.stat().st_mode & 0o777 == 0o600
    record.unlink()
    os.mkfifo(record)
    fifo = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env=env)
    assert fifo.returncode == 2 and "is not a regular file" in fifo.stderr, fifo.output
    record.unlink()
    shutil.rmtree(prefix / "conda-meta" / "envkit" / "pip", ignore_errors=True)
    (prefix / "conda-meta" / "envkit" / "pip").symlink_to(other / "conda-meta")
    linked = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env=env)
    assert linked.returncode == 2 and "pip is a symlink" in linked.stderr, linked.output


def test_an_interrupted_sync_keeps_the_prefixs_platform_and_path(tmp_path: Path, image_channel: Path) -> None:
    # From a new-user trial: an interrupted sync (no installed.json) forgot what the prefix was for: an aarch64
    # environment was silently synced to linux-64, and a moved one reported synced while its files named the old path.
    import shutil

    work, cache = tmp_path / "work", tmp_path / "cache"
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    _lock(work, image_channel, ["greet=1.0"], platforms=("linux-64", "linux-aarch64"))
    arm = tmp_path / "arm"
    assert run_envkit("install", "-q", "--prefix", arm, "-p", "linux-aarch64", cwd=work, env=env).returncode == 0
    (arm / "conda-meta" / "envkit" / "installed.json").unlink()
    again = run_envkit("install", "--prefix", arm, cwd=work, env=env)  # no -p: the prefix's own platform
    assert again.returncode == 0 and "0 added, 0 changed, 0 removed" in again.stdout, again.output
    assert run_envkit("verify", "--prefix", arm, cwd=work).returncode == 0
    (arm / "conda-meta" / "envkit" / "installed.json").unlink()
    other = run_envkit("install", "--prefix", arm, "-p", "linux-64", cwd=work, env=env)
    assert other.returncode == 2 and "holds an environment for linux-aarch64" in other.stderr, other.output
    orig, moved = tmp_path / "orig", tmp_path / "moved"
    _install(work, orig, cache)
    shutil.move(orig, moved)
    (moved / "conda-meta" / "envkit" / "installed.json").unlink()
    refused = run_envkit("install", "--prefix", moved, "-p", "linux-64", cwd=work, env=env)
    assert refused.returncode == 2 and f"holds an environment made for {orig}" in refused.stderr, refused.output


def test_an_interrupted_sync_leaves_no_empty_directory_behind(tmp_path: Path, image_channel: Path) -> None:
    # py-rattler removes a package's record before its directories: after an interrupt no record names them, and
    # verify reported them as the user's. The next install removes them.
    # Only those on the way to a path the sync's journal names: a user's empty directory elsewhere stays.
    from conda_envkit.sync_journal import start_journal

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0"])
    _install(work, prefix, cache)
    start_journal(prefix, [], unlinked=["share/gone/deeper/data.bin"])  # as the interrupted sync wrote it
    (prefix / "share" / "gone" / "deeper").mkdir(parents=True)  # what its interrupted removal left
    (prefix / "data" / "incoming").mkdir(parents=True)  # the user's
    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    result = run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.output
    assert not (prefix / "share" / "gone").exists() and (prefix / "data" / "incoming").is_dir()
    assert not (prefix / "conda-meta" / "envkit" / "sync-journal").exists()


def test_a_prefix_that_is_a_symlink_to_an_empty_directory_says_so(tmp_path: Path, image_channel: Path) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    _lock(work, image_channel, ["greet=1.0"])
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    result = run_envkit("install", "--prefix", tmp_path / "link", "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 2 and f"{tmp_path / 'link'} is a symlink (to {tmp_path / 'real'})" in result.stderr, result.output
    assert list((tmp_path / "real").iterdir()) == []


def test_packages_that_moved_to_another_channel_or_index_get_their_new_urls(tmp_path: Path, toy_channel: Path, pip_index_server) -> None:  # noqa: ANN001
    # A mirror, a renamed channel or index: the same archives (same sha256s) at other URLs. Nothing is relinked, and
    # the records name the new URLs, as a fresh install's do (verify compared them, and failed for ever).
    import json
    import shutil

    from tests.conftest import write_env

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _install_with_a_wheel(work, cache, prefix, toy_channel, pip_index_server.url)
    mirror = tmp_path / "mirror"
    shutil.copytree(toy_channel, mirror)
    moved_index = pip_index_server.url.replace("127.0.0.1", "localhost")
    conda = f"channels:\n  - {mirror}\ndependencies:\n  - python =3.11\n  - numpy =1.26\n"
    write_env(work, conda + f"  - pip:\n    - --index-url {moved_index}/simple\n    - hello-ml\n")
    assert run_envkit("lock", "-q", "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)}).returncode == 0
    assert "0 added, 0 changed, 0 removed" in _install(work, prefix, cache)  # and verify passes
    (record,) = [json.loads(p.read_text()) for p in (prefix / "conda-meta").glob("numpy-*.json")]
    assert record["url"].startswith(mirror.as_uri())
    wheels = [json.loads(p.read_text()) for p in (prefix / "conda-meta" / "envkit" / "pip").glob("*.json")]
    assert wheels and all(wheel["url"].startswith(moved_index) for wheel in wheels), wheels


def test_install_warns_when_the_lock_is_stale_against_the_spec_beside_it(tmp_path: Path, image_channel: Path) -> None:
    # Day two: a package added to environment.yml, not locked yet. install said "is up to date" and nothing more, and the
    # user believed the package was there; bake warned of a stale lock, install did not.
    from tests.conftest import write_env

    work, cache, prefix = tmp_path / "work", tmp_path / "cache", tmp_path / "env"
    _lock(work, image_channel, ["greet=1.0"])
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    first = run_envkit("install", "--prefix", prefix, cwd=work, env=env)
    assert first.returncode == 0 and "warning" not in first.stderr, first.output
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0, smalldata]\n")
    again = run_envkit("install", "--prefix", prefix, cwd=work, env=env)
    assert again.returncode == 0 and again.stdout == f"{prefix} is up to date\n", again.output
    assert (
        "warning: conda-lock.yml is stale against environment.yml (linux-64: 'smalldata' "
        f"({work / 'environment.yml'}:2) is not in the lock): the environment holds what the lock says; "
        "`envkit lock --update smalldata` brings it up to date"
    ) in again.stderr, again.stderr
