"""A variant's own `dependencies:`: locked into its file alone, checked, updated and blamed by their own lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from conda_lock.lockfile import parse_conda_lock_file

from tests.conftest import run_envkit, write_env

# Line 13 is the variant's first dependency, line 14 its second (error texts name them).
CPU_PIN = """\
channels:
  - {channel}
platforms: [linux-64, win-64]
dependencies:
  - numpy
  - gpulib=*=*cuda*
envkit:
  cuda: "12.4"
  variants:
    cpu:
      cuda: none
      dependencies:
        - gpulib=*=*cpu*
        - linuxonly  # [linux64]
"""


def spec(channel: Path, text: str = CPU_PIN, more: str = "") -> str:
    return text.format(channel=channel.as_uri()) + more


def locked(lock: Path, platform: str) -> dict[str, dict]:
    data = yaml.safe_load(lock.read_text())
    return {p["name"]: p for p in data["package"] if p["platform"] == platform}


def stale_rows(cwd: Path) -> tuple[int, list[dict]]:
    check = run_envkit("lock", "--check", "--json", cwd=cwd)
    return check.returncode, [row for row in json.loads(check.stdout) if not row["fresh"]]


def test_a_cpu_variant_pins_cpu_builds_while_the_default_locks_cuda_ones(tmp_path: Path, toy_channel: Path) -> None:
    # Without its own dependencies the cpu variant cannot be locked: the shared `gpulib=*=*cuda*` applies to it too,
    # and the hint says where the CPU pin goes (it said "pin CPU builds for it", which nothing allowed).
    write_env(tmp_path, spec(toy_channel).split("      dependencies:\n")[0])
    refused = run_envkit("lock", cwd=tmp_path)
    assert refused.returncode == 2, refused.output
    assert "variant 'cpu' has no CUDA: pin CPU builds in its own dependencies (`envkit.variants.cpu.dependencies: [gpulib=*=*cpu*]`" in (
        refused.stderr
    )

    write_env(tmp_path, spec(toy_channel))
    result = run_envkit("lock", "-q", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [s["variant"] for s in json.loads(result.stdout)] == [None, "cpu"]
    default, cpu = tmp_path / "conda-lock.yml", tmp_path / "conda-lock.cpu.yml"
    for platform in ("linux-64", "win-64"):
        assert locked(default, platform)["gpulib"]["build"] == "cuda12_0"
        assert locked(cpu, platform)["gpulib"]["build"] == "cpu_0"
        assert "linuxonly" not in locked(default, platform)
    # The variant's selector: linuxonly on linux-64 alone.
    assert "linuxonly" in locked(cpu, "linux-64") and "linuxonly" not in locked(cpu, "win-64")
    # conda-lock reads both; the variant's lines are part of its input hash.
    gpu_meta, cpu_meta = parse_conda_lock_file(default).metadata, parse_conda_lock_file(cpu).metadata
    assert cpu_meta.custom_metadata["envkit.variant"] == "cpu"
    assert cpu_meta.content_hash["linux-64"] != gpu_meta.content_hash["linux-64"]
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 0, check.output
    assert check.stdout.count("fresh  ") == 4 and "inputs changed" not in check.stdout


def test_editing_a_variants_dependencies_makes_its_lock_alone_stale_and_update_moves_them(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, spec(toy_channel))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    default, cpu = tmp_path / "conda-lock.yml", tmp_path / "conda-lock.cpu.yml"
    default_bytes, cpu_before = default.read_bytes(), {p: locked(cpu, p) for p in ("linux-64", "win-64")}
    os.utime(default, (1, 1))

    # A dependency added to the variant: its lock is stale (both platforms), the default's is not.
    write_env(tmp_path, spec(toy_channel, more="        - hello=1.0\n"))
    code, stale = stale_rows(tmp_path)
    assert code == 1 and {(r["lockfile"], r["platform"]) for r in stale} == {
        ("conda-lock.cpu.yml", "linux-64"),
        ("conda-lock.cpu.yml", "win-64"),
    }
    assert stale[0]["reasons"] == ["'hello=1.0' (environment.yml:15) is not in the lock"]
    assert "run `envkit lock --update hello` to move only what the spec changed" in run_envkit("lock", "--check", cwd=tmp_path).stderr
    # --update accepts a name only the variant asks for, and leaves the default's lock as it was.
    update = run_envkit("lock", "-q", "--update", "hello", cwd=tmp_path)
    assert update.returncode == 0, update.output
    assert default.read_bytes() == default_bytes and default.stat().st_mtime == 1
    for platform in ("linux-64", "win-64"):
        now = locked(cpu, platform)
        assert now["hello"]["version"] == "1.0"
        assert all(now[name]["hash"] == package["hash"] for name, package in cpu_before[platform].items())  # the rest kept
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0

    # A variant's line changed: the locked package no longer satisfies it, in the variant's lock alone.
    write_env(tmp_path, spec(toy_channel, more="        - hello=2.0\n"))
    code, stale = stale_rows(tmp_path)
    assert code == 1 and {r["lockfile"] for r in stale} == {"conda-lock.cpu.yml"}
    assert stale[0]["reasons"] == ["'hello=2.0' (environment.yml:15) is not satisfied by locked hello 1.0 0"]
    assert run_envkit("lock", "-q", "--update", "hello", cwd=tmp_path).returncode == 0
    assert locked(cpu, "linux-64")["hello"]["version"] == "2.0" and locked(cpu, "win-64")["hello"]["version"] == "2.0"
    assert default.read_bytes() == default_bytes
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0


def test_a_variants_lines_are_named_in_solve_errors(tmp_path: Path, toy_channel: Path) -> None:
    # linuxonly without its selector: win-64 (cpu) has none, and the error points at the variant's line.
    write_env(tmp_path, spec(toy_channel).replace("linuxonly  # [linux64]", "linuxonly"))
    missing = run_envkit("lock", cwd=tmp_path)
    assert missing.returncode == 2, missing.output
    assert "win-64 (cpu): package 'linuxonly' (requested at environment.yml:14) is not available for win-64" in missing.stderr
    assert "add `# [not win]` to its line (environment.yml:14)" in missing.stderr, missing.stderr
    # A CUDA package the variant asks for itself: named at its line, and what to do with it.
    write_env(tmp_path, spec(toy_channel).replace("linuxonly  # [linux64]", "cuda-version=12.4"))
    cuda = run_envkit("lock", cwd=tmp_path)
    assert cuda.returncode == 2, cuda.output
    assert "requested as cuda-version (environment.yml:14)" in cuda.stderr, cuda.stderr
    assert "cuda-version (environment.yml:14) is a CUDA package and a variant cannot drop a shared line" in cuda.stderr
    assert not list(tmp_path.glob("conda-lock*.yml"))


def test_a_variant_whose_selectors_drop_every_line_locks_the_shared_list_there(tmp_path: Path, toy_channel: Path) -> None:
    text = "channels:\n  - {channel}\nplatforms: [linux-64, win-64]\ndependencies:\n  - numpy\n  - gpulib\n"
    text += "envkit:\n  cuda: '12.4'\n  variants:\n    extra:\n      dependencies:\n        - linuxonly  # [linux64]\n"
    write_env(tmp_path, spec(toy_channel, text))
    result = run_envkit("lock", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.output
    default = parse_conda_lock_file(tmp_path / "conda-lock.yml")
    extra = parse_conda_lock_file(tmp_path / "conda-lock.extra.yml")
    # On win-64 the variant is the default: the same packages and the same input hash.
    assert locked(tmp_path / "conda-lock.extra.yml", "win-64") == locked(tmp_path / "conda-lock.yml", "win-64")
    assert extra.metadata.content_hash["win-64"] == default.metadata.content_hash["win-64"]
    assert extra.metadata.content_hash["linux-64"] != default.metadata.content_hash["linux-64"]
    assert "linuxonly" in locked(tmp_path / "conda-lock.extra.yml", "linux-64")
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0
