"""Lock options as users write them: relative channels, flags read back from the lock, CUDA/BLAS
values checked, conda's spec grammar, older envkit locks, and UTF-8 whatever the locale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import run_envkit, write_env


def _deps(*deps: str) -> str:
    return "dependencies:\n" + "".join(f"  - {d}\n" for d in deps)


def test_relative_channel_stays_relative_and_copies_hash_alike(tmp_path: Path, toy_channel: Path) -> None:
    hashes = []
    for copy in ("a", "deep/b"):
        project = tmp_path / copy
        shutil.copytree(toy_channel, project / "channel")
        write_env(project, "channels: [./channel]\nplatforms: [linux-64, osx-arm64]\n" + _deps("numpy", "hello"))
        result = run_envkit("lock", "-q", cwd=project)
        assert result.returncode == 0, result.output
        hashes.append(json.loads(run_envkit("hash", "--json", cwd=project).stdout)["lock_hash"])
        text = (project / "conda-lock.yml").read_text()
        assert "file://" not in text and "url: ./channel/linux-64/numpy-" in text and "- url: ./channel\n" in text
        check = run_envkit("lock", "--check", cwd=project)
        assert check.returncode == 0, check.output
        rendered = run_envkit("render", "-p", "linux-64", cwd=project)
        assert (project / "channel").as_uri() in rendered.stdout  # resolved against the lock's directory
    assert hashes[0] == hashes[1]
    # conda-lock, the reference reader, still reads it.
    from conda_lock.lockfile import parse_conda_lock_file

    parsed = parse_conda_lock_file(tmp_path / "a" / "conda-lock.yml")
    assert any(p.url.startswith("./channel/") for p in parsed.package)
    assert (tmp_path / "a" / "conda-lock.yml").read_bytes() == (tmp_path / "deep" / "b" / "conda-lock.yml").read_bytes()

    # The lock in a subdirectory: URLs relative to the lock file, still resolved right.
    project = tmp_path / "a"
    assert run_envkit("lock", "-q", "--lockfile", "locks/conda-lock.yml", cwd=project).returncode == 0
    assert "url: ../channel/" in (project / "locks" / "conda-lock.yml").read_text()
    assert run_envkit("lock", "--check", "--lockfile", "locks/conda-lock.yml", cwd=project).returncode == 0
    installed = run_envkit(
        "install", "-q", "--lockfile", "locks/conda-lock.yml", "-p", "linux-64", "--prefix", "env", cwd=project,
        env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert installed.returncode == 0, installed.output


def test_local_wheels_stay_relative_too(tmp_path: Path, toy_channel: Path) -> None:
    from conda_envkit.testing.local_index import demo_wheels, write_wheel

    hashes = []
    for copy in ("a", "b"):
        project = tmp_path / copy
        shutil.copytree(toy_channel, project / "channel")
        (project / "wheels").mkdir()
        for wheel in demo_wheels():
            write_wheel(wheel, project / "wheels")
        pip = "  - pip:\n      - --no-index\n      - --find-links ./wheels\n      - hello-ml\n"
        write_env(project, "channels: [./channel]\n" + _deps("python=3.11") + pip)
        result = run_envkit("lock", "-q", cwd=project)
        assert result.returncode == 0, result.output
        assert "url: ./wheels/hello_ml-" in (project / "conda-lock.yml").read_text()
        hashes.append(run_envkit("hash", cwd=project).stdout.split()[0])
    assert hashes[0] == hashes[1]
    installed = run_envkit(
        "install", "-q", "-p", "linux-64", "--prefix", "env", cwd=tmp_path / "b", env={"ENVKIT_CACHE_DIR": str(tmp_path / "c")}
    )
    assert installed.returncode == 0, installed.output
    assert run_envkit("verify", "-p", "linux-64", "--prefix", "env", cwd=tmp_path / "b").returncode == 0


def test_local_wheels_of_a_piped_spec_are_found_from_the_working_directory(tmp_path: Path, toy_channel: Path) -> None:
    # A spec from stdin, a pipe or `<(...)` has no directory of its own: `--find-links ./wheels`
    # means ./wheels of the working directory, as for pip (not /proc/<pid>/fd/wheels).
    from conda_envkit.testing.local_index import demo_wheels, write_wheel

    project = tmp_path / "project"
    shutil.copytree(toy_channel, project / "channel")
    (project / "wheels").mkdir()
    for wheel in demo_wheels():
        write_wheel(wheel, project / "wheels")
    pip = "  - pip:\n      - --no-index\n      - --find-links ./wheels\n      - hello-ml\n"
    spec = write_env(project, "channels: [./channel]\nplatforms: [linux-64]\n" + _deps("python=3.11") + pip)
    assert run_envkit("lock", "-q", cwd=project).returncode == 0

    def body(lock: Path) -> dict:
        data = yaml.safe_load(lock.read_text())
        del data["metadata"]["sources"]  # a pipe has no path to record
        return data

    expected = body(project / "conda-lock.yml")
    command = f"'{sys.executable}' -m conda_envkit lock -q"
    for name, shell in (
        ("dash", f"{command} -f - --lockfile dash.yml < environment.yml"),
        ("pipe", f"cat environment.yml | {command} -f /dev/stdin --lockfile pipe.yml"),
        ("procsub", f"{command} -f <(cat environment.yml) --lockfile procsub.yml"),
    ):
        proc = subprocess.run(["bash", "-c", shell], cwd=project, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (name, proc.stderr)
        text = (project / f"{name}.yml").read_text()
        assert "/proc/" not in text and "/dev/" not in text and str(tmp_path) not in text, text
        assert "url: ./wheels/hello_ml-" in text
        assert body(project / f"{name}.yml") == expected, name

    # From a file, relative to the file's directory wherever the command runs.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_envkit("lock", "-q", "-f", spec, "--lockfile", project / "from-elsewhere.yml", cwd=elsewhere)
    assert result.returncode == 0, result.output
    assert body(project / "from-elsewhere.yml") == expected
    # A pipe run from elsewhere looks in elsewhere/wheels, which does not exist: uv says so.
    shutil.copytree(toy_channel, elsewhere / "channel")
    proc = subprocess.run(["bash", "-c", f"{command} -f - < {spec}"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(elsewhere / "wheels") in proc.stderr, proc.stderr


def test_check_reads_platforms_cuda_and_blas_from_the_lock(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + _deps("numpy", "gpulib"))
    args = ["-p", "linux-64", "-p", "osx-arm64", "--cuda", "12.4", "--blas", "linux-64=mkl"]
    assert run_envkit("lock", "-q", *args, cwd=tmp_path).returncode == 0
    check = run_envkit("lock", "--check", cwd=tmp_path)  # no flags repeated
    assert check.returncode == 0, check.output
    assert check.stdout.count("fresh") == 2
    assert "note: CUDA driver 12.4 as the lock records it" in check.stderr
    assert "note: BLAS mkl as the lock records it" in check.stderr
    # The virtual packages it was locked for, too.
    (tmp_path / "vp.yml").write_text("subdirs:\n  linux-64:\n    packages:\n      __glibc: '2.17'\n")
    old_args = ["-p", "linux-64", "--virtual-package-spec", "vp.yml", "--lockfile", "old.yml"]
    assert run_envkit("lock", "-q", *old_args, cwd=tmp_path).returncode == 0
    old = run_envkit("lock", "--check", "--lockfile", "old.yml", cwd=tmp_path)
    assert old.returncode == 0, old.output
    assert "virtual packages as the lock records them: __archspec=1=x86_64 __glibc=2.17=0" in old.stderr
    # A flag given overrides what the lock records.
    other = run_envkit("lock", "--check", "--no-cuda", cwd=tmp_path)
    assert other.returncode == 1 and "CUDA changed: locked '12.4', now 'none'" in other.stderr


def test_cuda_and_blas_values_are_checked(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [osx-arm64]\n" + _deps("numpy"))
    for bad in ("twelve", "-1", "12.4.1.2", ""):
        result = run_envkit("lock", "--cuda", bad, cwd=tmp_path)
        assert result.returncode == 2, (bad, result.output)
        assert "--cuda" in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()
    ignored = run_envkit("lock", "-q", "--cuda", "12.4", cwd=tmp_path)
    assert ignored.returncode == 0
    assert "warning: --cuda 12.4 has no effect: none of osx-arm64 has CUDA" in ignored.stderr

    for key, value in (("cuda", "[12.4]"), ("cuda", "{driver: 12}"), ("cuda", "twelve"), ("blas", "[mkl]")):
        write_env(tmp_path / key, f"channels: [{toy_channel.as_uri()}]\n" + _deps("numpy") + f"envkit:\n  {key}: {value}\n")
        result = run_envkit("lock", cwd=tmp_path / key)
        assert result.returncode == 2, (key, value, result.output)
        assert f"environment.yml:5: `envkit.{key}`" in result.stderr, result.stderr


def test_render_env_has_a_name(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"name: trainer\nchannels: [{toy_channel.as_uri()}]\n" + _deps("numpy"))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    assert yaml.safe_load(run_envkit("render", "-p", "linux-64", "--kind", "env", cwd=tmp_path).stdout)["name"] == "trainer"
    named = run_envkit("render", "-p", "linux-64", "--kind", "env", "-n", "other", cwd=tmp_path)
    assert yaml.safe_load(named.stdout)["name"] == "other"


def test_dotted_build_string_spec_is_conda_grammar(tmp_path: Path, toy_channel: Path) -> None:
    # From a public project's environment.yml; conda accepts it. The toy channel has no such build:
    # a clear unsatisfiable error naming the spec, not an InvalidMatchSpecError traceback.
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + _deps("numpy=2.0.1=py3.8_cuda11.1_cudnn8.0.5_0"))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "numpy" in result.stderr and "py3.8_cuda11.1_cudnn8.0.5_0" in result.stderr
    # A dotted build that exists solves.
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + _deps("python=3.11.9=h0_cpython", "numpy=2.0.1=py311_0"))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + _deps("numpy >=>=1"))
    bad = run_envkit("lock", cwd=tmp_path)
    assert bad.returncode == 2 and "environment.yml:3: invalid dependency 'numpy >=>=1'" in bad.stderr


def test_check_on_an_older_envkit_lock_says_what_changed(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + _deps("gpulib"))
    assert run_envkit("lock", "-q", "--cuda", "12.4", cwd=tmp_path).returncode == 0
    lock = tmp_path / "conda-lock.yml"
    # What envkit wrote before metadata version 2: no version key, the toolkit capped at the driver.
    lines = [line for line in lock.read_text().splitlines() if "envkit.metadata-version" not in line and "cuda-compat" not in line]
    lock.write_text("\n".join(lines) + "\n")
    result = run_envkit("lock", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert "locked by an older envkit (metadata version 1): --cuda 12.4 then also capped cuda-version <=12.4" in result.stderr
    assert "write `cuda-version <=12.4` in the spec to keep the cap" in result.stderr


def test_check_on_a_newer_envkit_lock_says_newer(tmp_path: Path, toy_channel: Path) -> None:
    # It said "written by an older envkit (metadata version 99)".
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + _deps("numpy"))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    lock = tmp_path / "conda-lock.yml"
    text = lock.read_text()
    assert "envkit.metadata-version: '2'" in text
    lock.write_text(text.replace("envkit.metadata-version: '2'", "envkit.metadata-version: '99'"))
    result = run_envkit("lock", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "written by a newer envkit (metadata version 99; this one knows 2)" in result.output and "older" not in result.output


def test_non_ascii_text_survives_a_latin1_locale(tmp_path: Path, toy_channel: Path) -> None:
    # No UTF-8 mode, no C-locale coercion: the locale encoding is ASCII, as under a Latin-1 locale it is not UTF-8.
    env = {"PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "LANG": "C"}
    write_env(tmp_path, f"name: entraînement-γ\nchannels: [{toy_channel.as_uri()}]\n" + _deps("numpy"))
    (tmp_path / "environment.yml").write_text((tmp_path / "environment.yml").read_text(), encoding="utf-8")
    assert run_envkit("lock", "-q", cwd=tmp_path, env=env).returncode == 0
    text = (tmp_path / "conda-lock.yml").read_bytes().decode("utf-8")
    assert "entra" in text
    lock = yaml.safe_load(text)
    assert lock["metadata"]["custom_metadata"]["envkit.name"] == "entraînement-γ"
    rendered = run_envkit("render", "-p", "linux-64", "--kind", "env", "-o", "env.yml", cwd=tmp_path, env=env)
    assert rendered.returncode == 0, rendered.output
    assert yaml.safe_load((tmp_path / "env.yml").read_text(encoding="utf-8"))["name"] == "entraînement-γ"


def test_deeply_nested_environment_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    write_env(tmp_path, "channels: [conda-forge]\ndependencies: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "environment.yml:2: " in result.stderr and "nested deeper than" in result.stderr


def test_unsatisfiable_names_only_the_specs_in_the_conflict(tmp_path: Path, toy_channel: Path) -> None:
    deps = _deps("hello", "python=3.11", "gpulib", "numpy=2.0.1=py312_0")
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\n" + deps)
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    conflict = next(line for line in result.stderr.splitlines() if "conflicting specs:" in line)
    assert "python=3.11 (environment.yml:4)" in conflict and "numpy=2.0.1=py312_0 (environment.yml:6)" in conflict
    assert "hello" not in conflict and "gpulib" not in conflict


def test_a_refused_flag_value_is_one_error_line_with_a_hint(tmp_path: Path) -> None:
    """Values the library checks (--cuda, --blas, flags that exclude each other) are said like any bad input:
    `error: FLAG: …` and `hint:`, exit 2, not click's usage block."""
    write_env(tmp_path, "channels: [conda-forge]\ndependencies: [numpy]\n")
    for argv, said in (
        (("--cuda", "abc"), "error: --cuda: invalid CUDA driver version 'abc'"),
        # nvidia-smi's "Driver Version" (beside its "CUDA Version: 12.4"): it fit every cuda-version, and was taken.
        (("--cuda", "550.54.15"), "error: --cuda: 550.54.15 is an NVIDIA driver release, not the CUDA version it supports"),
        (("--cuda", "12.4", "--no-cuda"), "error: --cuda and --no-cuda exclude each other"),
        (("--blas", "linux-64=fastblas"), "error: --blas:"),
    ):
        result = run_envkit("lock", *argv, cwd=tmp_path)
        assert result.returncode == 2, (argv, result.output)
        assert result.stderr.startswith(said), (argv, result.stderr)
        assert "  hint: " in result.stderr and "Usage:" not in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()


def test_a_cuda_key_that_changes_nothing_is_said_as_the_flag_is(tmp_path: Path, toy_channel: Path) -> None:
    # `--cuda` on platforms without CUDA warns "has no effect"; the same request as a key said nothing.
    text = f"channels: [{toy_channel.as_uri()}]\nplatforms: [osx-arm64]\ndependencies: [numpy]\nenvkit: {{cuda: '12.4'}}\n"
    write_env(tmp_path, text)
    spec_key = run_envkit("lock", "-q", cwd=tmp_path)
    assert spec_key.returncode == 0, spec_key.output
    assert "`envkit.cuda` 12.4 in environment.yml has no effect: none of osx-arm64 has CUDA" in spec_key.stderr
    variants = "envkit:\n  variants:\n    mac: {cuda: '12.4', platforms: [osx-arm64]}\n    gpu: {cuda: '12.4', platforms: [linux-64]}\n"
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64, osx-arm64]\ndependencies: [numpy]\n{variants}")
    variant_key = run_envkit("lock", "-q", cwd=tmp_path)
    assert variant_key.returncode == 0, variant_key.output
    said = "`envkit.variants.mac.cuda` 12.4 in environment.yml has no effect: none of its platforms (osx-arm64) has CUDA"
    assert said in variant_key.stderr and "variants.gpu" not in variant_key.stderr, variant_key.stderr
