"""envkit diff on a realistic pair of locks of real conda-forge metadata: numpy and libblas
upgraded on linux-64 (numerics flagged), golden text, markdown and JSON.

The locks are solved against tests/data/conda-forge-diff, the slice of the conda-forge
snapshot that these two specs need (tests/data/make_diff_slice.py regenerates it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_envkit, write_env

GOLDEN = Path(__file__).parent / "golden"
SLICE = Path(__file__).parent / "data" / "conda-forge-diff"
SPEC = """\
channels: [{channel}]
platforms: [linux-64, osx-arm64]
dependencies:
  - python=3.11
  - numpy={numpy}  # [linux64]
  - numpy=1.26  # [osx]
  - scipy
  - libblas={blas}=*openblas  # [linux64]
  - libblas=*=*openblas  # [osx]
"""
OLD_SPEC = SPEC.replace("{numpy}", "1.26").replace("{blas}", "3.9.0")
NEW_SPEC = SPEC.replace("{numpy}", "2.2").replace("{blas}", "3.11.0")


@pytest.fixture(scope="module")
def lock_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("diff")
    channel = SLICE.as_uri()
    for name, spec in (("old", OLD_SPEC), ("new", NEW_SPEC)):
        write_env(work, spec.format(channel=channel), name=f"{name}.yml")
        result = run_envkit("lock", "-q", "-f", f"{name}.yml", "--lockfile", f"{name}.lock.yml", cwd=work)
        assert result.returncode == 0, result.output
    return work


@pytest.mark.parametrize("fmt, golden", [("text", "diff.txt"), ("markdown", "diff.md"), ("json", "diff.json")])
def test_diff_matches_golden(lock_pair: Path, fmt: str, golden: str) -> None:
    result = run_envkit("diff", "old.lock.yml", "new.lock.yml", "--format", fmt, cwd=lock_pair)
    assert result.returncode == 0, result.output
    if os.environ.get("ENVKIT_UPDATE_GOLDEN"):
        (GOLDEN / golden).write_text(result.stdout)
    assert result.stdout == (GOLDEN / golden).read_text()


def test_diff_flags_numerics_and_reads_git_revisions(lock_pair: Path) -> None:
    data = json.loads(run_envkit("diff", "old.lock.yml", "new.lock.yml", "--format", "json", cwd=lock_pair).stdout)
    upgraded = {(c["platform"], c["name"]) for c in data["changes"] if c["kind"] == "upgraded" and c["numerics"]}
    assert {("linux-64", "numpy"), ("linux-64", "libblas")} <= upgraded
    assert not [c for c in data["changes"] if c["platform"] == "osx-arm64"]  # only linux-64 changed
    assert {"numpy", "libblas"} <= set(data["numerics_changed"])
    same = run_envkit("diff", "old.lock.yml", "old.lock.yml", "--exit-code", cwd=lock_pair)
    assert same.returncode == 0 and same.stdout.startswith("no changes")
    differ = run_envkit("diff", "old.lock.yml", "new.lock.yml", "--exit-code", cwd=lock_pair)
    assert differ.returncode == 1

    repo = lock_pair / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "conda-lock.yml").write_text((lock_pair / "old.lock.yml").read_text())
    subprocess.run(git + ["commit", "-qam", "old", "--allow-empty"], cwd=repo, check=True)
    subprocess.run(["git", "add", "conda-lock.yml"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "old lock"], cwd=repo, check=True)
    (repo / "conda-lock.yml").write_text((lock_pair / "new.lock.yml").read_text())
    from_git = run_envkit("diff", "HEAD:conda-lock.yml", "conda-lock.yml", cwd=repo)
    direct = run_envkit("diff", str(lock_pair / "old.lock.yml"), str(lock_pair / "new.lock.yml"), cwd=repo)
    assert from_git.stdout.splitlines()[2:] == direct.stdout.splitlines()[2:]
    bad = run_envkit("diff", "nosuchrev:conda-lock.yml", cwd=repo)
    assert bad.returncode == 2 and "git cannot show it" in bad.stderr
    # A lock of 64 MiB that git stores in kilobytes (a pull request's): refused by its size, never read whole.
    with (repo / "huge.yml").open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["git", "add", "huge.yml"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "huge"], cwd=repo, check=True)
    huge = run_envkit("diff", "HEAD:huge.yml", "conda-lock.yml", cwd=repo)
    assert huge.returncode == 2 and "larger than the 32 MiB limit for a lock file" in huge.stderr, huge.output


def test_numerics_flags_match_exact_names(tmp_path: Path) -> None:
    from conda_envkit.lockdiff import NUMERICS_PACKAGES
    from conda_envkit.testing.local_channel import PackageSpec, build_channel

    names = ("libcups", "libcurl", "cudatoolkit", "libcublas", "cuda-python", "numpy-financial")
    packages = [PackageSpec(n, v, subdir="linux-64") for n in names for v in ("1.0", "2.0")]
    channel = build_channel(tmp_path / "channel", packages, subdirs=("linux-64",))
    for version in ("1.0", "2.0"):
        deps = "".join(f"  - {n}={version}\n" for n in names)
        write_env(tmp_path, f"channels: [{channel.as_uri()}]\ndependencies:\n{deps}envkit: {{cuda: '12.4'}}\n", name=f"v{version}.yml")
        locked = run_envkit("lock", "-q", "-f", f"v{version}.yml", "--lockfile", f"v{version}.lock.yml", cwd=tmp_path)
        assert locked.returncode == 0, locked.output
    data = json.loads(run_envkit("diff", "v1.0.lock.yml", "v2.0.lock.yml", "--format", "json", cwd=tmp_path).stdout)
    flagged = {c["name"]: c["numerics"] for c in data["changes"]}
    assert flagged == {
        "libcups": False,  # matched `libcu.*` before
        "libcurl": False,
        "cuda-python": False,  # matched `cuda-.*` before
        "numpy-financial": False,
        "cudatoolkit": True,  # missed before
        "libcublas": True,
    }
    # docs/diff.md lists exactly the names the code flags.
    doc = (Path(__file__).parents[1] / "docs" / "diff.md").read_text()
    listed: set[str] = set()
    for row in doc[doc.index("<!-- numerics-list") :].splitlines()[3:]:
        kind, _, names = row.strip("| ").partition(" | ")
        found = re.findall(r"`([A-Za-z0-9_.-]+)`", names)
        listed |= {f"nvidia-{lib}-cu{m}" for lib in found for m in (11, 12)} if kind.startswith("NVIDIA") else set(found)
    assert listed == NUMERICS_PACKAGES


def test_the_same_archive_from_another_url_is_moved_not_rebuilt(tmp_path: Path) -> None:
    """A channel spelled another way (./channel vs file:///…/channel, a mirror): same sha256, nothing installed
    changes, so it is `moved`, and a numerics package is not flagged for it."""
    from conda_envkit.testing.local_channel import PackageSpec, build_channel

    channel = build_channel(tmp_path / "channel", [PackageSpec("numpy", "1.26.4", subdir="linux-64")], subdirs=("linux-64",))
    write_env(tmp_path, f"channels: [{channel.as_uri()}]\ndependencies: [numpy]\n")
    assert run_envkit("lock", "-q", "--lockfile", "a.lock.yml", cwd=tmp_path).returncode == 0
    text = (tmp_path / "a.lock.yml").read_text()
    (tmp_path / "b.lock.yml").write_text(text.replace(channel.as_uri(), "https://mirror.example/channel"))
    result = run_envkit("diff", "a.lock.yml", "b.lock.yml", "--format", "json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert [(c["name"], c["kind"], c["numerics"]) for c in data["changes"]] == [("numpy", "moved", False)]
    assert "> numpy 1.26.4 0 -> 1.26.4 0  moved" in run_envkit("diff", "a.lock.yml", "b.lock.yml", cwd=tmp_path).stdout


def test_a_platform_only_one_lock_has_is_said_once(tmp_path: Path, toy_channel: Path) -> None:
    # A gpu variant locked for linux-64 alone, diffed against the cpu variant's lock of three platforms: every package
    # of osx-arm64 and linux-aarch64 was listed as removed (python flagged numerics), as if the variant dropped them.
    variants = "envkit:\n  variants:\n    cpu: {cuda: none}\n    gpu: {cuda: '12.4', platforms: [linux-64]}\n"
    deps = "  - python=3.11\n  - gpulib\n"
    platforms = "platforms: [linux-64, osx-arm64, linux-aarch64]\n"
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n{platforms}dependencies:\n{deps}{variants}")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    text = run_envkit("diff", "conda-lock.cpu.yml", "conda-lock.gpu.yml", cwd=tmp_path)
    assert text.returncode == 0, text.output
    assert "linux-aarch64: only in conda-lock.cpu.yml (2 packages)\n" in text.stdout, text.stdout
    assert "osx-arm64: only in conda-lock.cpu.yml (2 packages)\n" in text.stdout
    assert "removed" not in text.stdout, text.stdout  # (nothing was removed from a platform both locks have)
    assert "  ~ gpulib 1.0 cpu_0 -> 1.0 cuda12_0  rebuilt\n" in text.stdout  # linux-64, in both, is compared as before
    assert "numerics: cuda-version changed;" in text.stdout

    data = json.loads(run_envkit("diff", "conda-lock.cpu.yml", "conda-lock.gpu.yml", "--format", "json", cwd=tmp_path).stdout)
    assert data["platforms_in_one_lock"] == [
        {"platform": "linux-aarch64", "only_in": "old", "packages": 2},
        {"platform": "osx-arm64", "only_in": "old", "packages": 2},
    ]
    assert {c["platform"] for c in data["changes"]} == {"linux-64"} and data["summary"]["removed"] == 0
    assert data["numerics_changed"] == ["cuda-version"]  # (python was flagged for the platforms gpu does not lock)
    back = json.loads(run_envkit("diff", "conda-lock.gpu.yml", "conda-lock.cpu.yml", "--format", "json", cwd=tmp_path).stdout)
    assert [(one["platform"], one["only_in"]) for one in back["platforms_in_one_lock"]] == [("linux-aarch64", "new"), ("osx-arm64", "new")]
    assert data["schema"] == back["schema"] == "envkit.diff/1"  # a field added, none changed

    markdown = run_envkit("diff", "conda-lock.gpu.yml", "conda-lock.cpu.yml", "--format", "markdown", cwd=tmp_path).stdout
    assert "<b>osx-arm64</b>: only in `conda-lock.cpu.yml` (2 packages)\n" in markdown, markdown
    assert "<summary><b>osx-arm64</b>" not in markdown and "| added |" not in markdown

    # A platform in one lock alone is a difference (--exit-code), and -p selects it like any other.
    only = run_envkit("diff", "conda-lock.cpu.yml", "conda-lock.gpu.yml", "-p", "osx-arm64", "--exit-code", cwd=tmp_path)
    assert only.returncode == 1, only.output
    assert only.stdout == "--- conda-lock.cpu.yml\n+++ conda-lock.gpu.yml\nosx-arm64: only in conda-lock.cpu.yml (2 packages)\n"
    # A platform neither lock has is said so, not read as "no changes" (a typo'd -p passed CI's --exit-code).
    typo = run_envkit("diff", "conda-lock.cpu.yml", "conda-lock.gpu.yml", "-p", "osx-64", "--exit-code", cwd=tmp_path)
    assert typo.returncode == 2, typo.output
    said = "-p osx-64: neither conda-lock.cpu.yml nor conda-lock.gpu.yml locks it (they lock linux-64, linux-aarch64, osx-arm64)"
    assert said in typo.stderr, typo.stderr
    assert "Traceback" not in typo.output and typo.stdout == ""
