"""install's first look at a stale lock (conda_envkit.lock_age): from file times, an environment file changed
after the lock sends it to the full check; anything it cannot judge does too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conda_envkit.lock_age import sources_newer_than_lock
from tests.conftest import run_envkit, write_env
from tests.test_startup import _probe

HEAD = "version: 1\nmetadata:\n  platforms:\n  - linux-64\n  sources:\n{sources}  custom_metadata: {{}}\npackage:\n- name: sources\n"


def _lock(root: Path, sources: str, *files: str, spec_age: int = -10) -> Path:
    """A lock naming `sources` (its block list lines), and `files` written `spec_age` seconds from the lock's time."""
    lock = root / "conda-lock.yml"
    lock.write_text(HEAD.format(sources=sources), encoding="utf-8")
    when = lock.stat().st_mtime + spec_age
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("dependencies: []\n", encoding="utf-8")
        os.utime(path, (when, when))
    return lock


def test_a_lock_written_after_its_spec_is_not_checked_again(tmp_path: Path) -> None:
    assert not sources_newer_than_lock(_lock(tmp_path, "  - environment.yml\n  - envs/extra.yml\n", "environment.yml", "envs/extra.yml"))


def test_a_spec_changed_after_the_lock_sends_it_to_the_full_check(tmp_path: Path) -> None:
    lock = _lock(tmp_path, "  - environment.yml\n  - extra.yml\n", "environment.yml", "extra.yml")
    later = lock.stat().st_mtime + 5
    os.utime(tmp_path / "extra.yml", (later, later))
    assert sources_newer_than_lock(lock)


@pytest.mark.parametrize(
    ("sources", "files"),
    [
        ("  - environment.yml\n", ()),  # not there: the full check says so
        ("  - ../environment.yml\n", ("../environment.yml",)),  # outside the lock's directory: the full check says why
        ("  - 'environment.yml'\n", ("environment.yml",)),  # not as envkit writes it
        ("", ()),  # no sources block read
    ],
    ids=["missing", "outside", "quoted", "none"],
)
def test_what_file_times_cannot_judge_goes_to_the_full_check(tmp_path: Path, sources: str, files: tuple[str, ...]) -> None:
    root = tmp_path / "project"
    root.mkdir()
    assert sources_newer_than_lock(_lock(root, sources, *files))
    assert sources_newer_than_lock(root / "no-such-lock.yml")


def test_a_noop_install_of_a_fresh_lock_loads_no_solver(tmp_path: Path, toy_channel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The full freshness check loads rattler and the spec reader (~0.2 s): an install with nothing to do took 0.30 s
    # with it, at the 0.3 s budget, against 0.10 s without.
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\ndependencies: [numpy]\n")
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    assert run_envkit("install", "-q", "--prefix", tmp_path / "env", cwd=tmp_path, env=env).returncode == 0
    monkeypatch.setenv("ENVKIT_CACHE_DIR", env["ENVKIT_CACHE_DIR"])  # (the probe runs with this process's environment)
    modules = set(_probe(["install", "--prefix", str(tmp_path / "env")], tmp_path)["modules"])
    loaded = sorted(m for m in modules if m.startswith(("rattler", "conda_envkit.freshness")))
    assert not loaded, loaded


def test_a_lock_that_is_a_pipe_is_neither_waited_on_nor_read(tmp_path: Path) -> None:
    # `--lockfile <(git show …)`, or a FIFO a pull request planted as conda-lock.yml: opening it waited for a writer
    # for ever, and what the first look read of a pipe would be gone for the install.
    import threading

    fifo = tmp_path / "conda-lock.yml"
    os.mkfifo(fifo)
    (tmp_path / "environment.yml").write_text("dependencies: []\n", encoding="utf-8")
    answer: list[bool] = []
    look = threading.Thread(target=lambda: answer.append(sources_newer_than_lock(fifo)), daemon=True)
    look.start()
    look.join(timeout=10)
    assert answer == [False]
