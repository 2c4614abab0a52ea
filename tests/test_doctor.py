"""envkit doctor. This machine has no GPU: the NVIDIA driver is played by a fake `nvidia-smi`
on PATH that prints what a real one prints (the header line with "CUDA Version"), so these
tests exercise the parsing and the verdicts, not a real driver."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import run_envkit, write_env

FAKE_SMI = """#!/bin/sh
if [ "$1" = "--query-gpu=name" ]; then echo "NVIDIA A100-SXM4-80GB"; exit 0; fi
cat <<'SMI'
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
SMI
"""
NO_DRIVER = {"PATH": "/usr/bin:/bin"}


def _fake_driver(tmp_path: Path, cuda: str) -> dict[str, str]:
    bin_dir = tmp_path / f"fake-driver-{cuda}"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI.replace("{cuda}", cuda))
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _doctor(work: Path, env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = run_envkit("doctor", "--json", *args, cwd=work, env=env)
    return result.returncode, json.loads(result.stdout)


def _requirement(report: dict, what: str) -> dict:
    return next(r for r in report["requirements"] if r["what"] == what)


def test_cuda_lock_on_hosts_with_and_without_a_driver(tmp_path: Path, toy_channel: Path) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{toy_channel}]\ndependencies: [gpulib, cuda-version=12.4, needs-new-glibc]\n")
    assert run_envkit("lock", "-q", "--cuda", "12.4", cwd=work).returncode == 0

    code, report = _doctor(work, NO_DRIVER)
    cuda = _requirement(report, "cuda")
    assert code == 1 and not cuda["ok"] and "no NVIDIA driver" in cuda["why"] and "gpulib" in cuda["why"]
    assert "lock CPU builds for this machine (`envkit lock --no-cuda`" in cuda["why"]  # (what to change, as --help promises)
    glibc = _requirement(report, "glibc")
    assert glibc["ok"] and glibc["needed"] == ">=2.28" and "needs-new-glibc" in glibc["why"]

    code, report = _doctor(work, _fake_driver(tmp_path, "12.6"))
    assert code == 0 and report["runs"] and report["host"]["cuda_driver"] == "12.6"
    assert report["host"]["gpus"] == ["NVIDIA A100-SXM4-80GB"]

    code, report = _doctor(work, _fake_driver(tmp_path, "11.8"))
    cuda = _requirement(report, "cuda")
    assert code == 1 and "update the NVIDIA driver" in cuda["why"] and "--cuda 11.8" in cuda["why"]

    text = run_envkit("doctor", cwd=work, env=_fake_driver(tmp_path, "12.2"))
    assert text.returncode == 0 and "minor-version compatibility" in text.stdout and "will run here" in text.stdout


def test_cpu_lock_and_a_foreign_platform(tmp_path: Path, toy_channel: Path) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{toy_channel}]\ndependencies: [numpy]\n")
    assert run_envkit("lock", "-q", "-p", "linux-64", "-p", "linux-aarch64", cwd=work).returncode == 0
    code, report = _doctor(work, NO_DRIVER)
    assert code == 0 and [r["what"] for r in report["requirements"]] == ["platform", "glibc"]
    foreign = run_envkit("doctor", "-p", "linux-aarch64", cwd=work)
    assert foreign.returncode == 1 and "cannot run on linux-64" in foreign.stdout


def test_doctor_reads_the_lock_baked_into_an_image(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", "-p", "linux-aarch64", cwd=work).returncode == 0
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), **NO_DRIVER}
    assert run_envkit("bake", "-q", "-p", "linux-aarch64", "--oci", "image", "-t", "arm", cwd=work, env=env).returncode == 0
    (work / "conda-lock.yml").unlink()  # the image's own copy of the lock is what doctor reads
    code, report = _doctor(work, env, "--image", "oci:image:arm")
    assert code == 1 and report["platform"] == "linux-aarch64"
    assert "cannot run on linux-64" in _requirement(report, "platform")["why"]


def test_cuda_need_is_the_driver_the_lock_was_solved_for(tmp_path: Path, toy_channel: Path) -> None:
    # --cuda 12.4 picks cuda-version 12.6 (minor-version compatibility): a 12.4 driver is what
    # the lock needs, and a 12.2 driver is older than that.
    work = tmp_path / "work"
    write_env(work, f"channels: [{toy_channel}]\ndependencies: [gpulib]\n")
    assert run_envkit("lock", "-q", "--cuda", "12.4", "-p", "linux-64", cwd=work).returncode == 0
    code, report = _doctor(work, _fake_driver(tmp_path, "12.4"), "-p", "linux-64")
    cuda = _requirement(report, "cuda")
    assert cuda["ok"] and cuda["needed"] == ">=12.4" and "solved for a CUDA 12.4 driver" in cuda["why"]
    code, report = _doctor(work, _fake_driver(tmp_path, "11.8"), "-p", "linux-64")
    cuda = _requirement(report, "cuda")
    assert not cuda["ok"] and "older than the CUDA 12.4 driver the lock was solved for" in cuda["why"]


def test_many_glibc_needs_are_one_requirement_and_the_packages_that_set_it() -> None:
    # A real lock's packages ask for `__glibc >=2.17,<3.0.a0` and `>=2.28,<3.0.a0`: doctor printed both, joined (the
    # table's columns broke), and the first five names rather than the ones that need 2.28.
    from conda_envkit.doctor import _binding_need

    needs = [("libgcc", ">=2.17,<3.0.a0"), ("pytorch", ">=2.28,<3.0.a0"), ("libtorch", ">=2.28"), ("zlib", ">=2.17,<3.0.a0")]
    assert _binding_need(needs) == (">=2.28", ["libtorch", "pytorch"])
    assert _binding_need([("a", "2.17.*"), ("b", ">=2.17")]) == ("2.17.*, >=2.17", ["a", "b"])  # no bound to compare: all
    assert _binding_need([]) == ("any", [])


def test_a_gpu_variant_lock_on_a_host_without_a_driver_names_the_spec_s_cpu_locks(tmp_path: Path, toy_channel: Path) -> None:
    # The hint was `envkit lock --no-cuda`, which leaves a variant with its own `cuda:` as it is (the gpu lock stays a
    # CUDA lock): the spec's CPU locks beside it are what this host can use.
    work = tmp_path / "work"
    variants = "envkit:\n  variants:\n    cpu: {cuda: none}\n    gpu: {cuda: '12.4', dependencies: [gpulib=*=cuda*]}\n"
    write_env(work, f"channels: [{toy_channel}]\nplatforms: [linux-64]\ndependencies: [python=3.11, gpulib]\n{variants}")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    code, report = _doctor(work, NO_DRIVER, "--lockfile", "conda-lock.gpu.yml")
    cuda = _requirement(report, "cuda")
    assert code == 1 and not cuda["ok"], report
    assert cuda["why"].endswith(
        "; run where a driver is, or use a CPU lock of this spec here: conda-lock.yml, conda-lock.cpu.yml "
        "(`envkit install --lockfile conda-lock.yml --prefix ...`)"
    ), cuda["why"]
    # A CPU lock itself needs no driver: nothing to suggest.
    assert _doctor(work, NO_DRIVER, "--lockfile", "conda-lock.cpu.yml")[0] == 0
