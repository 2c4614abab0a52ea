"""`envkit diff REV:path` with a revision or path from a pull request or a colleague, or both locks piped in: each
one that does not name a readable lock is one `error:` line naming it, exit 2, never git's usage text, a temp file's
name or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Result, run_envkit, write_env

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
HINT = "hint: pass a lock file's path, or REV:path (e.g. HEAD~1:conda-lock.yml)"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, toy_channel: Path) -> Path:
    """A git repository holding a lock (committed), a directory, and a lock a pull request broke at line 3."""
    work = tmp_path_factory.mktemp("revisions")
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - python=3.11\n")
    locked = run_envkit("lock", "-q", cwd=work)
    assert locked.returncode == 0, locked.output
    (work / "sub").mkdir()
    (work / "sub" / "conda-lock.yml").write_bytes((work / "conda-lock.yml").read_bytes())
    (work / "broken.yml").write_text((work / "conda-lock.yml").read_text().replace("version: 1", "version: 7", 1))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "add", "."], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-qm", "locks"], cwd=work, check=True)
    return work


def _refused(result: Result, names: str) -> str:
    """The one `error:` line of a refused diff, checked to name `names` and to come with the hint alone."""
    assert result.returncode == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: {names}") and lines[1].strip().startswith("hint: "), result.stderr
    return lines[0]


def test_a_revision_of_the_repository_is_read(repo: Path) -> None:
    result = run_envkit("diff", "HEAD:conda-lock.yml", "HEAD:sub/conda-lock.yml", "--exit-code", cwd=repo)
    assert result.returncode == 0 and result.stdout.startswith("no changes between HEAD:conda-lock.yml and"), result.output


@pytest.mark.parametrize("spec", ["--textconv:conda-lock.yml", "--batch-all-objects:x", "-e:conda-lock.yml", "--path=x:HEAD"])
def test_a_revision_that_reads_as_a_git_option_is_refused_before_git_runs(repo: Path, spec: str) -> None:
    # Before: handed to `git cat-file -s` as an option; the error quoted git's 40-line usage text.
    result = run_envkit("diff", "--", spec, "conda-lock.yml", cwd=repo)
    error = _refused(result, spec)
    assert "is not a git revision" in error and "usage" not in result.stderr
    assert result.stderr.splitlines()[1].strip() == HINT


def test_a_file_whose_name_reads_as_an_option_is_still_read_as_a_file(repo: Path) -> None:
    (repo / "-e:old.yml").write_bytes((repo / "conda-lock.yml").read_bytes())
    try:
        result = run_envkit("diff", "--exit-code", "--", "-e:old.yml", "conda-lock.yml", cwd=repo)
    finally:
        (repo / "-e:old.yml").unlink()
    assert result.returncode == 0 and result.stdout.startswith("no changes"), result.output


@pytest.mark.parametrize(
    "spec, said",
    [
        ("HEAD:", "HEAD:: names no file in HEAD"),
        ("HEAD:sub/", "HEAD:sub/: names no file in HEAD"),
        ("HEAD:sub", "HEAD:sub: a directory or another object, not a file, in git"),
        ("HEAD:../conda-lock.yml", "HEAD:../conda-lock.yml: not a file, and git cannot show it (fatal: '../conda-lock.yml' is outside"),
        ("HEAD:nothing.yml", "HEAD:nothing.yml: not a file, and git cannot show it (fatal: path 'nothing.yml' does not exist"),
    ],
)
def test_a_revision_without_a_lock_file_says_what_it_names(repo: Path, spec: str, said: str) -> None:
    error = _refused(run_envkit("diff", spec, "conda-lock.yml", cwd=repo), spec)
    assert error.startswith(f"error: {said}"), error


def test_an_error_in_a_lock_from_git_names_the_revision_and_its_line(repo: Path) -> None:
    # Before: `error: /tmp/tmpk2x9/broken.yml:4: unsupported lock file version '7'`, a copy deleted by then.
    for fmt in ("text", "json"):
        result = run_envkit("diff", "HEAD:broken.yml", "conda-lock.yml", "--format", fmt, cwd=repo)
        error = _refused(result, "HEAD:broken.yml:")
        assert "unsupported lock file version '7'" in error and "/tmp" not in result.output, result.output
        if fmt == "json":
            assert json.loads(result.stdout)["error"]["message"].startswith("HEAD:broken.yml:")


def test_a_lock_from_git_that_is_not_utf8_names_the_revision(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    (clone / "latin1.yml").write_bytes(b"version: 1\n# caf\xe9\n")
    subprocess.run(["git", "add", "latin1.yml"], cwd=clone, check=True)
    subprocess.run([*GIT, "commit", "-qm", "latin1"], cwd=clone, check=True)
    error = _refused(run_envkit("diff", "HEAD:latin1.yml", "conda-lock.yml", cwd=clone), "HEAD:latin1.yml:2: not UTF-8")
    assert "offset 16" in error, error


def test_without_git_a_revision_is_an_error_not_a_traceback(repo: Path, tmp_path: Path) -> None:
    # Before: FileNotFoundError: [Errno 2] No such file or directory: 'git', as a traceback.
    bin_dir = tmp_path / "bin"  # the interpreter, and no git
    bin_dir.mkdir()
    result = run_envkit("diff", "HEAD:conda-lock.yml", "conda-lock.yml", "--format", "json", cwd=repo, env={"PATH": str(bin_dir)})
    error = _refused(result, "HEAD:conda-lock.yml: not a file, and git cannot run")
    assert "install git" in result.stderr, error
    assert json.loads(result.stdout)["error"]["exit_code"] == 2


def test_outside_a_repository_a_revision_says_so(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "conda-lock.yml").write_bytes((repo / "conda-lock.yml").read_bytes())
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    error = _refused(run_envkit("diff", "HEAD:conda-lock.yml", "conda-lock.yml", cwd=tmp_path, env=env), "HEAD:conda-lock.yml:")
    assert "not a git repository" in error, error


def test_a_git_that_does_not_answer_is_stopped_at_the_deadline(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit import lockdiff
    from conda_envkit.lockfile import LockFileError

    stuck = tmp_path / "bin" / "git"  # a git on a hung network filesystem
    stuck.parent.mkdir()
    stuck.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    stuck.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stuck.parent}{os.pathsep}{os.environ['PATH']}")
    # Before: no deadline of its own to set (60 s written into the call), then subprocess.TimeoutExpired, a traceback.
    monkeypatch.setattr(lockdiff, "GIT_SECONDS", 0.5, raising=False)
    with pytest.raises(LockFileError) as refused:
        lockdiff.read_lock_at("HEAD:conda-lock.yml", cwd=repo)
    assert refused.value.message == "HEAD:conda-lock.yml: git did not answer within 0.5 s"


def _diff_piped(lock: bytes, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "conda_envkit", "diff", *args]
    return subprocess.run(command, cwd=cwd, input=lock.decode(), capture_output=True, text=True, timeout=120)


def test_a_lock_piped_in_is_compared(repo: Path) -> None:
    result = _diff_piped((repo / "conda-lock.yml").read_bytes(), "-", "conda-lock.yml", "--exit-code", cwd=repo)
    assert result.returncode == 0 and result.stdout.startswith("no changes between - and conda-lock.yml"), result.stderr


@pytest.mark.parametrize("new", ["-", "/dev/stdin"])
def test_standard_input_for_both_locks_is_refused_saying_so(repo: Path, new: str) -> None:
    # Before: `error: -: not a conda-lock file (expected a mapping…)`, of the second read, which found the pipe empty.
    result = _diff_piped((repo / "conda-lock.yml").read_bytes(), "-", new, "--format", "json", cwd=repo)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[0] == f"error: OLD and NEW are both standard input (-, {new}), which can be read once"
    assert json.loads(result.stdout)["error"]["kind"] == "BadFlag"
