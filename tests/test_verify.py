"""envkit verify: a clean prefix passes; a tampered file, a missing symlink and an extra package
are caught; a baked image verifies from its layout and from the real registry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.conftest import Registry, run_envkit, write_env


def _install(work: Path, channel: Path, cache: Path, deps: str, prefix: str) -> Path:
    write_env(work, f"channels: [{channel}]\ndependencies: [{deps}]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    result = run_envkit("install", "-q", "--prefix", prefix, "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.output
    return work / prefix


def test_clean_prefix_passes_and_tampering_is_caught(tmp_path: Path, image_channel: Path) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    prefix = _install(work, image_channel, cache, "greet=1.0", "env")
    ok = run_envkit("verify", "--prefix", "env", "-p", "linux-64", cwd=work)
    assert ok.returncode == 0 and "matches" in ok.stdout

    (prefix / "bin" / "greet").write_text("#!/bin/sh\necho pwned\n")
    (prefix / "bin" / "cat").unlink()
    # An extra package: another environment's record copied in.
    other = _install(tmp_path / "other", image_channel, cache, "smalldata", "env")
    meta = next((other / "conda-meta").glob("smalldata-*.json"))
    shutil.copy(meta, prefix / "conda-meta" / meta.name)
    shutil.copytree(other / "lib", prefix / "lib")
    bad = run_envkit("verify", "--prefix", "env", "-p", "linux-64", "--json", cwd=work)
    assert bad.returncode == 1
    findings = {(f["kind"], f["package"].split()[0]) for f in json.loads(bad.stdout)["findings"]}
    assert findings == {("modified-file", "greet"), ("missing-file", "busybox"), ("extra-package", "smalldata")}
    # What to do: files changed in place need a fresh prefix (install would call it up to date).
    told = run_envkit("verify", "--prefix", "env", "-p", "linux-64", cwd=work)
    assert "hint: files of busybox 1.35.0 h0_0, greet 1.0 0 changed in place, which install does not repair" in told.stderr, told.stderr
    assert "envkit install --lockfile conda-lock.yml --prefix env" in told.stderr
    # Only files a user added: theirs to keep or remove; nothing says to remove the prefix.
    shutil.rmtree(prefix)
    _install(work, image_channel, cache, "greet=1.0", "env")
    (prefix / "notes.txt").write_text("mine")
    unowned = run_envkit("verify", "--prefix", "env", cwd=work)
    assert unowned.returncode == 1 and "unowned-file" in unowned.stderr, unowned.output
    assert "remove the prefix" not in unowned.stderr and "files no locked package installed are yours" in unowned.stderr
    # A directory a package installs into is credited to that package, not to envkit.
    shutil.rmtree(prefix / "bin")
    gone = run_envkit("verify", "--prefix", "env", "--json", cwd=work)
    owners = {f["detail"].split()[0]: f["package"] for f in json.loads(gone.stdout)["findings"] if f["kind"] == "missing-file"}
    assert owners["bin"] != "envkit" and owners["bin"].split()[0] in ("busybox", "greet"), owners
    (prefix / "notes.txt").unlink()
    # Only a package too many: install removes it, and verify then passes.
    shutil.rmtree(prefix)
    _install(work, image_channel, cache, "greet=1.0", "env")
    shutil.copy(meta, prefix / "conda-meta" / meta.name)
    extra = run_envkit("verify", "--prefix", "env", "-p", "linux-64", cwd=work)
    assert extra.returncode == 1 and "adds, removes and replaces those packages" in extra.stderr, extra.output
    assert run_envkit("install", "-q", "--prefix", "env", "-p", "linux-64", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)}).returncode == 0
    assert run_envkit("verify", "--prefix", "env", "-p", "linux-64", cwd=work).returncode == 0


def test_image_verifies_from_layout_and_registry(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0, bigmodel=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    repo = f"{registry.host}/team/verify"
    baked = run_envkit("bake", "-q", "--oci", "image", "--push", repo, "--insecure", "--large-package-mb", "1", cwd=work, env=env)
    assert baked.returncode == 0, baked.output
    tag = json.loads((work / "bake.json").read_text())["tags"][0]
    fresh_cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "verify-cache")}
    from_layout = run_envkit("verify", "--image", f"oci:image:{tag}", cwd=work, env=fresh_cache)
    assert from_layout.returncode == 0, from_layout.output
    from_registry = run_envkit("verify", "--image", f"{repo}:{tag}", "--insecure", cwd=work, env=fresh_cache)
    assert from_registry.returncode == 0, from_registry.output
    assert "/opt/conda/envs/env" in from_registry.stdout
    # Against another lock (bigmodel 2.0 instead of 1.0), the image is the wrong one.
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0, bigmodel=2.0]\n")
    assert run_envkit("lock", "-q", "--lockfile", "other.yml", cwd=work).returncode == 0
    wrong = run_envkit("verify", "--lockfile", "other.yml", "--image", f"oci:image:{tag}", cwd=work, env=fresh_cache)
    assert wrong.returncode == 1 and "wrong-package" in wrong.stderr and "bigmodel" in wrong.stderr


def test_a_prefix_installed_from_another_lock_is_said_to_be_so(tmp_path: Path, image_channel: Path) -> None:
    # The usual "did someone forget to sync?": verify named the prefix's lock copy "modified (…, installed as" the
    # other lock's sha256), and repeated the changed package as a missing and an unowned record.
    work, cache = tmp_path / "work", tmp_path / "cache"
    _install(work, image_channel, cache, "greet=1.0", "env")
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=2.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    result = run_envkit("verify", "--prefix", "env", "-p", "linux-64", "--json", cwd=work)
    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    assert [(f["kind"], f["package"].split()[0]) for f in findings] == [("wrong-package", "greet"), ("other-lock", "envkit")], findings
    assert "the prefix was installed from another lock (lock hash " in findings[1]["detail"]
    edited = work / "env" / "conda-meta" / "envkit" / "conda-lock.yml"
    edited.write_text("not a lock\n")
    result = run_envkit("verify", "--prefix", "env", "-p", "linux-64", "--json", cwd=work)
    assert any(f["kind"] == "modified-file" and "was edited" in f["detail"] for f in json.loads(result.stdout)["findings"]), result.stdout


def test_verify_with_a_cache_it_cannot_write_says_so(tmp_path: Path, image_channel: Path) -> None:
    # The reference install and the image's blobs go to the cache's tmp/: one that cannot be written (another user's,
    # read-only; here a file in its place) was a traceback (exit 1, which also reads as "differs").
    work = tmp_path / "work"
    _install(work, image_channel, tmp_path / "cache", "greet=1.0", "env")
    (tmp_path / "not-a-dir").write_text("")
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "not-a-dir")}
    for target in (["--prefix", "env"], ["--image", "oci:nowhere"]):
        result = run_envkit("verify", *target, "-p", "linux-64", cwd=work, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.output
        assert f"{tmp_path / 'not-a-dir' / 'tmp'}: cannot write cache directory" in result.stderr, result.stderr


def test_a_prefix_installed_under_umask_000_verifies_under_it(tmp_path: Path, image_channel: Path) -> None:
    # GitLab's docker runner runs with umask 000: verify expected envkit's own lock copy 0644 (and its directory 0755),
    # and called a prefix install had just made "world-writable, which no package ships".
    import os
    import subprocess
    import sys

    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    envkit = f"{sys.executable} -m conda_envkit"
    script = f"umask 000; {envkit} install -q --prefix env -p linux-64 && exec {envkit} verify --prefix env -p linux-64"
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(["sh", "-c", script], cwd=work, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_distribution_pip_installed_by_hand_is_named_with_what_to_do(tmp_path: Path, toy_channel: Path) -> None:
    # Day two: `pip install` into the environment by hand. verify listed its files one by one as unowned-file ("no
    # package") and said they were "yours", though it is a package (and install, which calls the prefix up to date,
    # never removes it): now it is an extra package, by name and version, with what to do about it.
    import subprocess
    import sys

    from conda_envkit.testing.local_index import WheelSpec, write_wheel

    work, cache = tmp_path / "work", tmp_path / "cache"
    prefix = _install(work, toy_channel, cache, "python=3.11", "env")
    wheel = write_wheel(WheelSpec("Fast_Math", "1.2.0", files=(("fastmath.py", "X = 1\n"),)), tmp_path / "wheels")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--prefix", str(prefix), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    site = next(prefix.glob("lib/python*/site-packages")).relative_to(prefix).as_posix()
    told = run_envkit("verify", "--prefix", "env", cwd=work)
    assert told.returncode == 1, told.output
    assert told.stderr.splitlines()[0] == (
        f"extra-package    Fast_Math 1.2.0 (pip, outside envkit): installed by pip or another tool, and not in the lock "
        f"({site}/fast_math-1.2.0.dist-info)"
    ), told.stderr
    assert "unowned-file" not in told.stderr  # its files (fastmath.py, bytecode, dist-info) are that one finding
    assert "env: 1 problem against conda-lock.yml (linux-64)" in told.stderr
    assert (
        "hint: Fast_Math was installed outside envkit, which install neither sees nor removes: `pip uninstall Fast_Math` with "
        "the environment's python, or add Fast_Math to the pip: section of environment.yml, then `envkit lock --update Fast_Math` and "
        "install it"
    ) in told.stderr
    assert run_envkit("install", "--prefix", "env", cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)}).stdout.endswith("is up to date\n")
    # A file of the user's own beside it is reported as before (at the top of the tree no package installs: the toy
    # python has no lib/).
    (prefix / site / "notes.txt").write_text("mine")
    both = run_envkit("verify", "--prefix", "env", cwd=work)
    assert "unowned-file     no package: lib (directory) is not installed by any locked package" in both.stderr, both.stderr
    assert "files no locked package installed are yours" in both.stderr


def test_verify_against_the_default_lock_names_the_variant_lock_the_prefix_came_from(tmp_path: Path, toy_channel: Path) -> None:
    # Installed from conda-lock.cpu.yml, verified (without --lockfile) against conda-lock.yml: the finding said
    # "installed from another lock (lock hash …)", leaving the user to find which; and a locked package not installed
    # came with its record and every file of it as missing-file findings besides.
    work, cache = tmp_path / "work", tmp_path / "cache"
    variants = "envkit:\n  variants:\n    cpu: {dependencies: [numpy=1.26]}\n"
    write_env(work, f"channels: [{toy_channel}]\nplatforms: [linux-64]\ndependencies: [python=3.11, numpy, hello]\n{variants}")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    cpu = ("--lockfile", "conda-lock.cpu.yml", "--prefix", "env")
    installed = run_envkit("install", "-q", *cpu, cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert installed.returncode == 0, installed.output
    shutil.rmtree(work / "env" / "bin")  # hello's script
    next((work / "env" / "conda-meta").glob("hello-*.json")).unlink()
    result = run_envkit("verify", "--prefix", "env", "--json", cwd=work)
    findings = json.loads(result.stdout)["findings"]
    assert [(f["kind"], f["package"].split()[0]) for f in findings] == [
        ("missing-package", "hello"), ("wrong-package", "numpy"), ("other-lock", "envkit")
    ], findings  # fmt: skip
    assert "the prefix was installed from conda-lock.cpu.yml (lock hash " in findings[2]["detail"]
    assert findings[2]["detail"].endswith("; `envkit verify --lockfile conda-lock.cpu.yml` checks it against that one")
