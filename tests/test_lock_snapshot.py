"""Locks of realistic ML specs against ../shared/data/channels (real conda-forge metadata).

The snapshot holds repodata only (no package files), which is all a lock needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conda_lock.lockfile import parse_conda_lock_file

from conda_envkit.lockfile import HEADER
from tests.conftest import SHARED_CHANNELS, run_envkit, write_env

pytestmark = pytest.mark.skipif(not SHARED_CHANNELS.is_dir(), reason="needs ../shared/data/channels beside the checkout")
CONDA_FORGE = (SHARED_CHANNELS / "conda-forge").as_uri()


def packages(lock: Path, platform: str) -> dict[str, dict]:
    return {p["name"]: p for p in yaml.safe_load(lock.read_text())["package"] if p["platform"] == platform}


ML_SPEC = f"""\
name: training
channels:
  - {CONDA_FORGE}
platforms: [linux-64, linux-aarch64, osx-64, osx-arm64, win-64]
dependencies:
  - python=3.11
  - numpy
  - pandas  # [not aarch64]
  - scikit-learn  # [not aarch64]
  - pytorch  # [not win]
"""


def test_five_platform_ml_lock(tmp_path: Path) -> None:
    write_env(tmp_path, ML_SPEC)
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lock = tmp_path / "conda-lock.yml"
    for platform in ("linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64"):
        pkgs = packages(lock, platform)
        assert pkgs["python"]["version"].startswith("3.11.")
        assert "numpy" in pkgs
        assert ("pytorch" in pkgs) == (platform != "win-64")
        # No CUDA anywhere without --cuda.
        assert not any(name.startswith("cuda") for name in pkgs), platform
        if "pytorch" in pkgs:
            assert "cuda" not in pkgs["pytorch"]["build"]
    # Every package's depends are resolved inside the lock: --check agrees.
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0
    # Our fast writer produces exactly what conda-lock's own path (v1 models + PyYAML) does.
    parsed = parse_conda_lock_file(lock)
    parsed.alphasort_inplace()
    expected = yaml.safe_dump(parsed.to_v1().dict_for_output(), sort_keys=False, default_flow_style=False, width=1000)
    assert lock.read_text() == HEADER + expected


def test_pytorch_cuda_or_cpu_is_chosen_by_flag(tmp_path: Path) -> None:
    write_env(tmp_path, f"channels: [{CONDA_FORGE}]\ndependencies:\n  - python=3.11\n  - pytorch\n")
    cpu = run_envkit("lock", "--lockfile", "cpu.yml", cwd=tmp_path)
    assert cpu.returncode == 0, cpu.stderr
    assert packages(tmp_path / "cpu.yml", "linux-64")["pytorch"]["build"].startswith("cpu_")

    gpu = run_envkit("lock", "--cuda", "12.9", "--lockfile", "gpu.yml", cwd=tmp_path)
    assert gpu.returncode == 0, gpu.stderr
    pkgs = packages(tmp_path / "gpu.yml", "linux-64")
    assert pkgs["pytorch"]["build"].startswith("cuda129_")
    assert pkgs["cuda-version"]["version"] == "12.9"
    assert "__cuda" in pkgs["pytorch"]["dependencies"]

    # --cuda is the driver, as conda-lock's --with-cuda 12.4: a 12.4 driver runs the cuda 12.9
    # build through minor-version compatibility, where conda-lock picks it too.
    driver = run_envkit("lock", "--cuda", "12.4", "--lockfile", "driver.yml", cwd=tmp_path)
    assert driver.returncode == 0, driver.stderr
    pkgs = packages(tmp_path / "driver.yml", "linux-64")
    assert pkgs["pytorch"]["build"].startswith("cuda129_")
    assert pkgs["cuda-version"]["version"] == "12.9"
    assert "cuda driver 12.4 (cuda-version 12.9, newer than the driver: runs by CUDA minor-version compatibility)" in driver.stdout
    meta = yaml.safe_load((tmp_path / "driver.yml").read_text())["metadata"]["custom_metadata"]
    assert meta["envkit.linux-64.cuda"] == "12.4" and meta["envkit.linux-64.cuda-compat"] == "minor-version"

    # A driver too old for every CUDA build: CPU build, and the user is told.
    old = run_envkit("lock", "--cuda", "11.2", "--lockfile", "old.yml", cwd=tmp_path)
    assert old.returncode == 0
    assert "a CUDA 11.2 driver assumed, but no CUDA build was chosen" in old.stderr
    assert packages(tmp_path / "old.yml", "linux-64")["pytorch"]["build"].startswith("cpu_")


def test_mkl_or_openblas_on_purpose(tmp_path: Path) -> None:
    deps = "dependencies:\n  - python=3.11\n  - numpy\n  - scipy\n"
    write_env(tmp_path, f"channels: [{CONDA_FORGE}]\nplatforms: [linux-64, osx-arm64]\n{deps}")
    result = run_envkit("lock", "--blas", "linux-64=mkl", "--blas", "osx-arm64=openblas", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    linux = packages(tmp_path / "conda-lock.yml", "linux-64")
    assert linux["libblas"]["build"].endswith("_mkl") and "mkl" in linux
    osx = packages(tmp_path / "conda-lock.yml", "osx-arm64")
    assert osx["libblas"]["build"].endswith("_openblas") and "mkl" not in osx

    result = run_envkit("lock", "--blas", "openblas", "--lockfile", "ob.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mkl" not in packages(tmp_path / "ob.yml", "linux-64")

    refused = run_envkit("lock", "--blas", "mkl", "--lockfile", "bad.yml", cwd=tmp_path)
    assert refused.returncode == 2
    assert "osx-arm64: BLAS 'mkl' does not exist on this platform" in refused.stderr
    assert not (tmp_path / "bad.yml").exists()


def test_unsatisfiable_request_explains(tmp_path: Path) -> None:
    write_env(tmp_path, f"channels: [{CONDA_FORGE}]\ndependencies:\n  - python=3.9\n  - pytorch >=2.10\n  - pandas\n  - requests\n")
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "linux-64: the specs cannot be satisfied together" in result.stderr
    assert "pytorch" in result.stderr and "python" in result.stderr
    # The specs named are the solver's unsat core, not every spec of the file.
    conflict = next(line for line in result.stderr.splitlines() if "conflicting specs:" in line)
    assert conflict.strip() == "conflicting specs: python=3.9 (environment.yml:3); pytorch >=2.10 (environment.yml:4)"
    assert "hint:" in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()
