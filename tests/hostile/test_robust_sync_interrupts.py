"""A sync of a prefix stopped part-way (SIGKILL, as the OOM killer or a CI timeout does; SIGINT), then the next
install: it must converge on what a fresh install of its lock makes, and verify must pass. py-rattler links a
package's files before its record and removes them before it, and a wheel's files come before its record, so
an interrupted sync leaves files no record names, or a record whose files are gone (conda_envkit.sync_journal).

Each test stops a real sync of a package of many files once some of them are in place (or gone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel
from conda_envkit.testing.local_index import WheelSpec, write_wheel
from tests.conftest import Result, interruptible, run_envkit, write_env

FILES = 4000


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A channel (python, small, big: FILES files) and a directory holding the wheel bigwheel (FILES modules)."""
    root = tmp_path_factory.mktemp("sync-interrupts")
    big = tuple(PackageFile(f"share/big/f{i:05}.txt", f"{i}\n".encode() * 50) for i in range(FILES))
    python = PackageSpec("python", "3.11.9", "h0", subdir="linux-64", files=(PackageFile("lib/python3.11/site-packages/README.txt", b"s"),))
    small = PackageSpec("small", "1.0", "0", subdir="linux-64", files=(PackageFile("share/small.txt", b"s"),))
    build_channel(root / "channel", [python, small, PackageSpec("big", "1.0", "0", subdir="linux-64", files=big)], subdirs=("linux-64",))
    write_wheel(WheelSpec("bigwheel", "1.0", files=tuple((f"big/f{i:05}.py", f"x = {i}\n" * 20) for i in range(FILES))), root / "wheels")
    return root / "channel", root / "wheels"


def _lock(work: Path, channel: Path, deps: str) -> None:
    write_env(work, f"channels: [{channel}]\nplatforms: [linux-64]\ndependencies: {deps}\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0


def _install(work: Path, prefix: Path) -> Result:
    return run_envkit("install", "--prefix", prefix, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(work / "cache")})


def _stopped_install(work: Path, prefix: Path, watched: Path, signum: int, until: object) -> int:
    """Start `envkit install`, send `signum` once `until(number of entries in watched)` holds; its exit status.

    The install gets Ctrl-C's default handling (`interruptible`): run in the background without job control, the test
    runner ignores SIGINT, and so would the install it starts (it ran to its end and exited 0, every file linked)."""
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(work / "cache")}
    command = [sys.executable, "-m", "conda_envkit", "install", "-q", "--prefix", str(prefix), "-p", "linux-64"]
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=interruptible)
    deadline = time.monotonic() + 120
    sent = False
    while proc.poll() is None and time.monotonic() < deadline:
        count = len(os.listdir(watched)) if watched.is_dir() else 0
        if until(count):  # type: ignore[operator]
            proc.send_signal(signum)  # (not sent to an install that has ended meanwhile)
            sent = proc.returncode is None
            break
        time.sleep(0.002)
    status = proc.wait(timeout=120)
    if not sent:  # it ended first (failed early, or linked everything while this test waited for the CPU): nothing tested
        pytest.fail(f"the install ended (status {status}) before the test could send it {signal.Signals(signum).name}")
    return status


def _converged(work: Path, prefix: Path, fresh: Path) -> None:
    """The next install succeeds, verify passes, and the prefix holds what a fresh install of the lock holds."""
    again = _install(work, prefix)
    assert again.returncode == 0, again.output
    verify = run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work)
    assert verify.returncode == 0, verify.output
    assert _install(work, fresh).returncode == 0

    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if "conda-meta/envkit" not in p.as_posix()}

    assert files(prefix) == files(fresh)


def _stopped_then_back(tmp_path: Path, channel: Path, had: str, then: str, signum: int, until: object) -> Path:
    """A prefix of the lock of `had`, a sync to the lock of `then` stopped by `signum` once `until(files of big in the
    prefix)` holds, and the install of `had`'s lock again: the prefix, converged (`_converged`)."""
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, had)
    old = (work / "conda-lock.yml").read_bytes()
    assert _install(work, prefix).returncode == 0
    _lock(work, channel, then)
    status = _stopped_install(work, prefix, prefix / "share" / "big", signum, until)
    left = len(os.listdir(prefix / "share" / "big"))
    assert status != 0 and 0 < left < FILES, (status, left)  # stopped part-way
    (work / "conda-lock.yml").write_bytes(old)  # the user goes back to the lock the prefix had
    _converged(work, prefix, tmp_path / "fresh")
    return prefix


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_sync_stopped_while_linking_leaves_nothing_once_the_lock_goes_back(
    tmp_path: Path, sources: tuple[Path, Path], signum: int
) -> None:
    prefix = _stopped_then_back(tmp_path, sources[0], "[small]", "[small, big]", signum, lambda n: n > 50)
    assert not (prefix / "share" / "big").exists()


def test_ctrl_c_stops_a_sync_even_when_the_tests_run_in_the_background(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    """The test runner ignoring SIGINT (a background job without job control, as .ci/run may be): the install it stops
    with SIGINT still takes it (`_stopped_install`), rather than inheriting the runner's SIG_IGN and running to its end."""
    runners = signal.signal(signal.SIGINT, signal.SIG_IGN)  # (the test's Ctrl-C is ignored for these few seconds)
    try:
        prefix = _stopped_then_back(tmp_path, sources[0], "[small]", "[small, big]", signal.SIGINT, lambda n: n > 50)
    finally:
        signal.signal(signal.SIGINT, runners)
    assert not (prefix / "share" / "big").exists()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_sync_stopped_while_removing_links_the_package_again_once_the_lock_goes_back(
    tmp_path: Path, sources: tuple[Path, Path], signum: int
) -> None:
    prefix = _stopped_then_back(tmp_path, sources[0], "[small, big]", "[small]", signum, lambda n: n < FILES - 50)
    assert len(os.listdir(prefix / "share" / "big")) == FILES


def test_a_wheel_install_killed_part_way_does_not_block_the_next(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    channel, wheels = sources
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, "[python =3.11]")
    assert _install(work, prefix).returncode == 0
    _lock(work, channel, f"[python =3.11, pip: [--no-index, --find-links {wheels}, bigwheel]]")
    modules = prefix / "lib" / "python3.11" / "site-packages" / "big"
    status = _stopped_install(work, prefix, modules, signal.SIGKILL, lambda n: n > 100)
    left = len(os.listdir(modules))
    assert status != 0 and 0 < left < FILES, (status, left)
    _converged(work, prefix, tmp_path / "fresh")


def _interrupted(prefix: Path, journal: bytes | None = None) -> None:
    """The prefix as a sync that was stopped leaves it: no installed record, and its journal (if given, written as is)."""
    from conda_envkit.sync_journal import JOURNAL

    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    if journal is not None:
        (prefix / JOURNAL).write_bytes(journal)


def test_a_journal_never_removes_a_users_file_or_anything_outside(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    """A journal naming files the interrupted sync did not make (a user's, older than the journal; through a symlink;
    outside the prefix): none of them is removed, whatever else the journal holds."""
    import time

    channel, _wheels = sources
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, "[small]")
    assert _install(work, prefix).returncode == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    (prefix / "notes.txt").write_text("mine")
    (prefix / "share" / "mine").mkdir()
    (prefix / "share" / "mine" / "data.csv").write_text("1,2")
    (prefix / "share" / "vlink").symlink_to(outside / "victim")
    (prefix / "share" / "out").symlink_to(outside)
    later = time.time_ns()  # the journal of a sync that began after the user's files were made
    named = ["notes.txt", "share/mine/data.csv", "share/vlink", "share/out/victim", "../outside/victim", str(outside / "victim")]
    journal = f"envkit.sync-journal/2 {later}".encode() + b"\0" + b"".join(b"+" + n.encode() + b"\0" for n in named)
    _interrupted(prefix, journal + b"+\xff\xfe\0" + b"-../../x\0")
    result = _install(work, prefix)
    assert result.returncode == 0, result.output
    assert (prefix / "notes.txt").read_text() == "mine" and (prefix / "share" / "mine" / "data.csv").read_text() == "1,2"
    assert (prefix / "share" / "vlink").is_symlink() and (outside / "victim").read_text() == "keep"


@pytest.mark.parametrize("what", ["directory", "fifo", "garbage", "symlink"])
def test_a_journal_that_is_not_one_is_no_journal(tmp_path: Path, sources: tuple[Path, Path], what: str) -> None:
    from conda_envkit.sync_journal import JOURNAL

    channel, _wheels = sources
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, "[small]")
    assert _install(work, prefix).returncode == 0
    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    journal = prefix / JOURNAL
    if what == "directory":
        (journal / "x").mkdir(parents=True)
    elif what == "fifo":
        os.mkfifo(journal)
    elif what == "garbage":
        journal.write_bytes(os.urandom(4096))
    else:
        journal.symlink_to(tmp_path / "elsewhere")
        (tmp_path / "elsewhere").write_bytes(b"envkit.sync-journal/2 0\0+share/small.txt\0")
    _lock(work, channel, "[small, big]")  # a sync that changes the prefix: it writes its own journal there
    result = _install(work, prefix)
    assert result.returncode == 0, result.output
    assert not os.path.lexists(journal) and (tmp_path / "elsewhere").exists() == (what == "symlink")
    assert run_envkit("verify", "--prefix", prefix, "-p", "linux-64", cwd=work).returncode == 0


def test_after_an_interrupted_sync_a_users_file_is_still_not_overwritten(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    from conda_envkit.sync_journal import start_journal

    channel, _wheels = sources
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, "[small]")
    assert _install(work, prefix).returncode == 0
    start_journal(prefix, ["share/other.txt"])  # an interrupted sync of something else
    (prefix / "conda-meta" / "envkit" / "installed.json").unlink()
    mine = prefix / "share" / "big" / "f00007.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    _lock(work, channel, "[small, big]")
    result = _install(work, prefix)
    assert result.returncode == 2 and f"{mine} is in the prefix but in no package's record" in result.stderr, result.output
    assert mine.read_text() == "mine"


def test_a_wheel_install_killed_part_way_leaves_nothing_once_the_lock_goes_back(tmp_path: Path, sources: tuple[Path, Path]) -> None:
    channel, wheels = sources
    work, prefix = tmp_path / "work", tmp_path / "env"
    _lock(work, channel, "[python =3.11]")
    old = (work / "conda-lock.yml").read_bytes()
    assert _install(work, prefix).returncode == 0
    _lock(work, channel, f"[python =3.11, pip: [--no-index, --find-links {wheels}, bigwheel]]")
    modules = prefix / "lib" / "python3.11" / "site-packages" / "big"
    status = _stopped_install(work, prefix, modules, signal.SIGKILL, lambda n: n > 100)
    assert status != 0 and 0 < len(os.listdir(modules)) < FILES
    (work / "conda-lock.yml").write_bytes(old)
    _converged(work, prefix, tmp_path / "fresh")  # (verify: no empty pip-records directory left either)
    assert not modules.exists() and not (prefix / "conda-meta" / "envkit" / "pip").exists()
