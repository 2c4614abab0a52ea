"""`envkit lock`, `--check`, `hash` and `render` against a real local channel of `.conda` files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conda_lock.lockfile import parse_conda_lock_file
from rattler.explicit_environment import ExplicitEnvironmentSpec

from tests.conftest import ALL_PLATFORMS, run_envkit, write_env


def env_text(channel: Path, deps: list[str], platforms: tuple[str, ...] = ("linux-64",), extra: str = "") -> str:
    lines = [f"channels:\n  - {channel.as_uri()}", f"platforms: [{', '.join(platforms)}]", "dependencies:"]
    lines += [f"  - {d}" for d in deps]
    return "\n".join(lines) + "\n" + extra


def locked(lock: Path, platform: str) -> dict[str, dict]:
    data = yaml.safe_load(lock.read_text())
    return {p["name"]: p for p in data["package"] if p["platform"] == platform}


def test_five_platform_lock_is_conda_lock_format(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy", "hello"], ALL_PLATFORMS))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for platform in ALL_PLATFORMS:
        assert f"solve: {platform}: " in result.stderr

    lock = tmp_path / "conda-lock.yml"
    parsed = parse_conda_lock_file(lock)  # conda-lock's own reader and models
    assert sorted(parsed.metadata.platforms) == sorted(ALL_PLATFORMS)
    assert set(parsed.metadata.content_hash) == set(ALL_PLATFORMS)
    assert parsed.metadata.sources == ["environment.yml"]
    for platform in ALL_PLATFORMS:
        pkgs = locked(lock, platform)
        assert set(pkgs) == {"python", "numpy", "libblas", "hello"}
        assert pkgs["numpy"]["version"] == "2.0.1"
        assert pkgs["python"]["version"] == "3.11.9"
        assert len(pkgs["numpy"]["hash"]["sha256"]) == 64
        assert pkgs["hello"]["url"].endswith("/noarch/hello-2.0-0.conda")
        # conda-forge's default BLAS wins when nothing is asked, and is recorded.
        assert pkgs["libblas"]["build"] == "20_openblas"
        assert parsed.metadata.custom_metadata[f"envkit.{platform}.blas"] == "openblas"
        assert parsed.metadata.custom_metadata[f"envkit.{platform}.cuda"] == "none"


def test_relock_is_byte_identical_and_writes_nothing(tmp_path: Path, toy_channel: Path) -> None:
    text = env_text(toy_channel, ["numpy", "hello"], ("linux-64", "osx-arm64"))
    write_env(tmp_path / "a", text)
    assert run_envkit("lock", cwd=tmp_path / "a").returncode == 0
    lock = tmp_path / "a" / "conda-lock.yml"
    first = lock.read_bytes()
    os.utime(lock, (1, 1))
    again = run_envkit("lock", cwd=tmp_path / "a")
    assert again.returncode == 0 and "unchanged conda-lock.yml" in again.stdout
    assert lock.stat().st_mtime == 1  # not rewritten
    # Same inputs elsewhere: the same bytes (no timestamps, no absolute source paths).
    write_env(tmp_path / "b", text)
    assert run_envkit("lock", cwd=tmp_path / "b").returncode == 0
    assert (tmp_path / "b" / "conda-lock.yml").read_bytes() == first


def test_cuda_build_only_with_cuda(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["gpulib"], ("linux-64", "osx-arm64")))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    assert locked(tmp_path / "conda-lock.yml", "linux-64")["gpulib"]["build"] == "cpu_0"

    gpu = run_envkit("lock", "--cuda", "12.4", "--lockfile", "gpu.yml", cwd=tmp_path)
    assert gpu.returncode == 0, gpu.stderr
    linux = locked(tmp_path / "gpu.yml", "linux-64")
    assert linux["gpulib"]["build"] == "cuda12_0"
    # --cuda is the driver, as conda-lock's --with-cuda: a 12.4 driver runs cuda-version 12.6
    # through minor-version compatibility, and the lock says so.
    assert linux["cuda-version"]["version"] == "12.6"
    assert "cuda driver 12.4 (cuda-version 12.6, newer than the driver: runs by CUDA minor-version compatibility)" in gpu.stdout
    assert locked(tmp_path / "gpu.yml", "osx-arm64")["gpulib"]["build"] == "cpu_0"
    meta = parse_conda_lock_file(tmp_path / "gpu.yml").metadata.custom_metadata
    assert meta["envkit.linux-64.cuda"] == "12.4"
    assert meta["envkit.linux-64.cuda-version"] == "12.6"
    assert meta["envkit.linux-64.cuda-compat"] == "minor-version"
    assert meta["envkit.metadata-version"] == "2"
    # A toolkit cap is a spec the user writes, the conda-forge idiom.
    write_env(tmp_path / "capped", env_text(toy_channel, ["gpulib", "cuda-version <=12.4"], ("linux-64",)))
    capped = run_envkit("lock", "--cuda", "12.4", cwd=tmp_path / "capped")
    assert capped.returncode == 0, capped.stderr
    assert locked(tmp_path / "capped" / "conda-lock.yml", "linux-64")["cuda-version"]["version"] == "12.4"
    assert "minor-version" not in capped.stdout
    assert "__cuda=12.4=0" in meta["envkit.linux-64.virtual-packages"]
    assert meta["envkit.osx-arm64.cuda"] == "none"


def test_a_relock_solves_again_under_the_cuda_driver_and_blas_the_lock_records(tmp_path: Path, toy_channel: Path) -> None:
    # Locked with --cuda 12.4 and --blas linux-64=mkl (flags, not in the file): `lock`, `lock --update` and
    # `lock -p` kept CUDA for --check but solved CPU and any BLAS, dropping every CUDA package without a word.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy", "gpulib"], ("linux-64", "osx-arm64")))
    lock = tmp_path / "conda-lock.yml"
    assert run_envkit("lock", "-q", "--cuda", "12.4", "--blas", "linux-64=mkl", cwd=tmp_path).returncode == 0
    made = lock.read_text()
    assert locked(lock, "linux-64")["gpulib"]["build"] == "cuda12_0" and locked(lock, "linux-64")["libblas"]["build"] == "20_mkl"
    for args in ((), ("--update", "numpy"), ("-p", "linux-64")):
        again = run_envkit("lock", *args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "note: linux-64: CUDA driver 12.4 as the lock records it" in again.stderr, again.stderr
        assert "note: linux-64: BLAS mkl as the lock records it" in again.stderr
        assert lock.read_text() == made, args  # nothing moved: same CUDA build, same BLAS
    cpu = run_envkit("lock", "-q", "--no-cuda", cwd=tmp_path)  # a flag still says otherwise
    assert cpu.returncode == 0 and locked(lock, "linux-64")["gpulib"]["build"] == "cpu_0"
    # --blas any clears the recorded pin (there was no way back but deleting the lock); it stays cleared.
    for args in (("--blas", "any"), ()):
        unpinned = run_envkit("lock", "-q", *args, cwd=tmp_path)
        assert unpinned.returncode == 0, unpinned.stderr
        assert locked(lock, "linux-64")["libblas"]["build"] == "20_openblas"
        assert yaml.safe_load(lock.read_text())["metadata"]["custom_metadata"]["envkit.linux-64.blas-requested"] == "any"


def test_lock_p_refuses_a_lock_it_cannot_keep_and_keeps_variants_json_and_order(tmp_path: Path, toy_channel: Path) -> None:
    variants = "envkit:\n  variants:\n    cpu: {cuda: none, platforms: [linux-64]}\n"
    text = env_text(toy_channel, ["python=3.11", "numpy"], ("linux-64", "osx-arm64", "win-64"), variants)
    write_env(tmp_path, text)
    lock = tmp_path / "conda-lock.yml"
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    cpu_lock = (tmp_path / "conda-lock.cpu.yml").read_text()
    # -p naming a platform the variant does not lock: refused before; the variant's lock is left as it is.
    narrowed = run_envkit("lock", "--json", "-p", "win-64", cwd=tmp_path)
    assert narrowed.returncode == 0, narrowed.stderr
    (outcome,) = json.loads(narrowed.stdout)
    assert list(outcome["platforms"]) == ["win-64"] and outcome["kept_platforms"] == ["linux-64", "osx-arm64"]
    assert (tmp_path / "conda-lock.cpu.yml").read_text() == cpu_lock
    assert list(yaml.safe_load(lock.read_text())["metadata"]["content_hash"]) == ["linux-64", "osx-arm64", "win-64"]
    again = run_envkit("lock", cwd=tmp_path)  # the same inputs: nothing to rewrite (the hashes were reordered)
    assert again.returncode == 0 and "unchanged conda-lock.yml" in again.stdout, again.stdout
    checked = run_envkit("lock", "--check", "-p", "win-64", cwd=tmp_path)  # only the platform named
    assert checked.returncode == 0 and "linux-64" not in checked.output, checked.output
    # Another channel list: keeping the other platforms would keep packages of channels the lock no longer names.
    write_env(tmp_path, text.replace("channels:\n", f"channels:\n  - {(tmp_path / 'other').as_uri()}\n", 1))
    (tmp_path / "other" / "noarch").mkdir(parents=True)
    from conda_envkit.testing.local_channel import build_channel

    build_channel(tmp_path / "other", [], subdirs=("linux-64", "osx-arm64", "win-64"))
    moved = run_envkit("lock", "-p", "win-64", cwd=tmp_path)
    assert moved.returncode == 2 and "are not the spec's" in moved.stderr and "without -p" in moved.stderr, moved.output
    # A lock that does not read: -p, and a spec that names no platforms, would drop its platforms; refused.
    write_env(tmp_path, text)
    broken = lock.read_text().replace("sha256: ", "sha256: x", 1)
    lock.write_text(broken)
    for args in (("-p", "win-64"), ()):
        if not args:
            write_env(tmp_path, text.replace("platforms: [linux-64, osx-arm64, win-64]\n", ""))
        refused = run_envkit("lock", *args, cwd=tmp_path)
        assert refused.returncode == 2 and "conda-lock.yml:" in refused.stderr, refused.output
        assert lock.read_text() == broken


def test_lock_p_says_when_it_keeps_a_platform_the_spec_no_longer_names(tmp_path: Path, toy_channel: Path) -> None:
    # The lock holds win-64 from an earlier spec; the file names linux-64 and osx-arm64 now. `-p linux-64` keeps win-64
    # as conda-lock does, and says so, since `lock --check` then calls it stale.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11"], ("linux-64", "osx-arm64")))
    assert run_envkit("lock", "-q", "-p", "linux-64", "-p", "osx-arm64", "-p", "win-64", cwd=tmp_path).returncode == 0
    narrowed = run_envkit("lock", "-p", "linux-64", cwd=tmp_path)
    assert narrowed.returncode == 0, narrowed.stderr
    (note,) = [line for line in narrowed.stderr.splitlines() if "kept as locked" in line]
    assert "win-64 kept as locked (not named by -p), but environment.yml no longer names it" in note, note
    assert "osx-arm64" not in note and "without -p" in note, note
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 1
    dropped = run_envkit("lock", cwd=tmp_path)
    assert dropped.returncode == 0 and "kept as locked" not in dropped.output, dropped.output
    assert yaml.safe_load((tmp_path / "conda-lock.yml").read_text())["metadata"]["platforms"] == ["linux-64", "osx-arm64"]


def test_check_names_the_update_that_moves_only_what_the_spec_changed(tmp_path: Path, toy_channel: Path) -> None:
    # `lock --check` said "run `envkit lock`", which solves everything again (other packages move to newer builds).
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy"]))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy", "hello"]))
    stale = run_envkit("lock", "--check", cwd=tmp_path)
    assert stale.returncode == 1 and "hint: run `envkit lock --update hello` to move only what the spec changed" in stale.stderr
    assert run_envkit("lock", "-q", "--update", "hello", cwd=tmp_path).returncode == 0
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0
    # Another kind of change (CUDA here): a full lock.
    cuda = run_envkit("lock", "--check", "--cuda", "12.4", cwd=tmp_path)
    assert cuda.returncode == 1 and "hint: run `envkit lock` to update the lock (it solves again" in cuda.stderr, cuda.stderr


def test_a_cpu_variant_that_needs_cuda_is_told_about_the_variant_not_cuda_flags(tmp_path: Path, toy_channel: Path) -> None:
    # The hint said "pass --cuda DRIVER_VERSION", which the variant's `cuda: none` overrides anyway.
    variants = "envkit:\n  variants:\n    cpu: {cuda: none}\n    gpu: {cuda: '12.4'}\n"
    write_env(tmp_path, env_text(toy_channel, ["gpulib=*=cuda*"], extra=variants))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2, result.output
    # (and where: the variant's own dependencies, which replace the shared line for it alone)
    assert "variant 'cpu' has no CUDA: pin CPU builds in its own dependencies (`envkit.variants.cpu.dependencies: " in result.stderr
    assert "or give the variant `cuda:`" in result.stderr, result.stderr


@pytest.mark.parametrize("written", ["./chän", "file://{channel}"])
def test_a_channel_with_a_non_ascii_name_is_fresh_after_locking(tmp_path: Path, written: str) -> None:
    # lock --check compared percent-encoded package URLs with the channel's name as written: STALE right after locking.
    from conda_envkit.testing.local_channel import build_channel
    from conda_envkit.testing.toy_channel import toy_packages

    channel = build_channel(tmp_path / "chän", toy_packages())
    write_env(tmp_path, f"channels: [{written.format(channel=channel)}]\nplatforms: [linux-64]\ndependencies: [hello]\n")
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    checked = run_envkit("lock", "--check", cwd=tmp_path)
    assert checked.returncode == 0, checked.output


def test_a_reference_blas_nobody_asked_for_is_named_and_warned_of(tmp_path: Path) -> None:
    # A channel whose only libblas is netlib's: the lock says `netlib` (it said `none`), and warns, unless asked for.
    from conda_envkit.testing.local_channel import PackageSpec, build_channel

    channel = build_channel(
        tmp_path / "channel",
        [
            PackageSpec("libblas", "3.9.0", "1_h86c2bf4_netlib", subdir="linux-64"),
            PackageSpec("numpy", "2.0", "0", subdir="linux-64", depends=("libblas >=3.9.0,<4",)),
        ],
        subdirs=("linux-64",),
    )
    write_env(tmp_path, env_text(channel, ["numpy"]))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "blas netlib" in result.stdout, result.stdout
    assert "linux-64: the solver chose the reference (netlib) BLAS, the slowest, which nothing asked for" in result.stderr
    assert "--blas linux-64=openblas" in result.stderr
    meta = yaml.safe_load((tmp_path / "conda-lock.yml").read_text())["metadata"]["custom_metadata"]
    assert meta["envkit.linux-64.blas"] == "netlib" and meta["envkit.linux-64.blas-requested"] == "any"
    asked = run_envkit("lock", "--blas", "netlib", cwd=tmp_path)
    assert asked.returncode == 0 and "netlib" not in asked.stderr, asked.stderr


def test_a_relock_with_fewer_platforms_keeps_the_others_as_they_were(tmp_path: Path, toy_channel: Path) -> None:
    # As conda-lock does: `-p osx-arm64` solves that platform again and keeps linux-64's entries and metadata as they
    # were (they were lost before); `lock` with no platform anywhere locks the lock's own platforms, as --check checks
    # them; a file's `platforms:` is what the lock holds.
    text = env_text(toy_channel, ["python=3.11", "numpy"]).replace("platforms: [linux-64]\n", "")
    write_env(tmp_path, text)
    lock = tmp_path / "conda-lock.yml"
    assert run_envkit("lock", "-q", "-p", "linux-64", "-p", "osx-arm64", cwd=tmp_path).returncode == 0
    first = yaml.safe_load(lock.read_text())
    linux = locked(lock, "linux-64")

    write_env(tmp_path, text.replace("  - numpy\n", "  - numpy\n  - hello\n"))
    narrowed = run_envkit("lock", "-p", "osx-arm64", cwd=tmp_path)
    assert narrowed.returncode == 0, narrowed.stderr
    assert "kept as locked before (not named by -p): linux-64" in narrowed.stdout, narrowed.stdout
    after = yaml.safe_load(lock.read_text())
    assert after["metadata"]["platforms"] == ["linux-64", "osx-arm64"]
    assert locked(lock, "linux-64") == linux and "hello" in locked(lock, "osx-arm64")
    assert after["metadata"]["content_hash"]["linux-64"] == first["metadata"]["content_hash"]["linux-64"]
    kept_meta = {k: v for k, v in after["metadata"]["custom_metadata"].items() if k.startswith("envkit.linux-64.")}
    assert kept_meta == {k: v for k, v in first["metadata"]["custom_metadata"].items() if k.startswith("envkit.linux-64.")}
    assert sorted(parse_conda_lock_file(lock).metadata.platforms) == ["linux-64", "osx-arm64"]  # conda-lock reads it
    stale = run_envkit("lock", "--check", cwd=tmp_path)  # linux-64 was kept, not solved for `hello`
    assert stale.returncode == 1 and "linux-64" in stale.output, stale.output

    relocked = run_envkit("lock", "-q", cwd=tmp_path)
    assert relocked.returncode == 0, relocked.stderr
    assert yaml.safe_load(lock.read_text())["metadata"]["platforms"] == ["linux-64", "osx-arm64"]
    assert "hello" in locked(lock, "linux-64")
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0

    write_env(tmp_path, text.replace("channels:", "platforms: [linux-64]\nchannels:", 1))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    assert yaml.safe_load(lock.read_text())["metadata"]["platforms"] == ["linux-64"]


def test_a_package_missing_on_some_platforms_gets_one_hint_with_the_selector_that_fits(tmp_path: Path) -> None:
    from conda_envkit.testing.local_channel import PackageSpec, build_channel

    platforms = ("linux-64", "linux-aarch64", "osx-arm64", "win-64")
    channel = build_channel(
        tmp_path / "channel",
        [
            PackageSpec("patchelf", "0.18", "0", subdir="linux-64"),
            PackageSpec("patchelf", "0.18", "0", subdir="linux-aarch64"),
            *(PackageSpec("sklearn", "1.5", "0", subdir=p) for p in platforms if p != "linux-aarch64"),
        ],
        subdirs=platforms,
    )
    # Missing on two platforms: one hint (it was said twice), with the selector that keeps it on linux.
    write_env(tmp_path, env_text(channel, ["patchelf"], platforms))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("is not available for") == 2 and result.stderr.count("hint:") == 1, result.stderr
    assert "add `# [linux]` to its line (environment.yml:5)" in result.stderr and "drop the platforms" in result.stderr
    # Missing on linux-aarch64 alone: `not aarch64` (the hint said `not linux`, which drops linux-64 too).
    write_env(tmp_path, env_text(channel, ["sklearn"], platforms))
    result = run_envkit("lock", cwd=tmp_path)
    assert "add `# [not aarch64]` to its line (environment.yml:5)" in result.stderr, result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()
    # Pinned (`pytorch-cuda=12.1`, as install instructions write it): the same, not "the specs cannot be satisfied".
    write_env(tmp_path, env_text(channel, ["sklearn=1.5"], platforms))
    result = run_envkit("lock", cwd=tmp_path)
    assert "package 'sklearn' (requested at environment.yml:5) is not available for linux-aarch64" in result.stderr, result.stderr
    assert "add `# [not aarch64]` to its line (environment.yml:5)" in result.stderr and "cannot be satisfied" not in result.stderr


def test_platforms_that_clash_alike_give_each_piece_of_advice_once(tmp_path: Path) -> None:
    from conda_envkit.testing.local_channel import PackageSpec, build_channel

    platforms = ("linux-64", "osx-arm64")
    specs = [PackageSpec(n, "1.0", "0", subdir=p, depends=d) for p in platforms for n, d in (("app", ("lib >=2",)), ("lib", ()))]
    channel = build_channel(tmp_path / "channel", specs, subdirs=platforms)
    write_env(tmp_path, env_text(channel, ["app"], platforms))
    result = run_envkit("lock", "--blas", "linux-64=mkl", "--blas", "osx-arm64=accelerate", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("the specs cannot be satisfied together") == 2, result.stderr
    hint = next(line for line in result.stderr.splitlines() if line.lstrip().startswith("hint:"))
    assert hint.count("relax one of the specs named above") == 1, hint  # (it was said once per platform)
    # The BLAS pins are no part of this conflict (the explanation names no libblas): the hint does not blame them.
    assert "BLAS" not in hint and "--blas" not in result.stderr, result.stderr


def _blas_channel(root: Path, platforms: tuple[str, ...]) -> Path:
    """scipy needing libblas, which has openblas and mkl builds only (no blis, no accelerate)."""
    from conda_envkit.testing.local_channel import PackageSpec, build_channel

    specs = []
    for p in platforms:
        specs.append(PackageSpec("python", "3.11.9", "h0_cpython", subdir=p))
        for blas in ("openblas", "mkl"):
            specs.append(PackageSpec("libblas", "3.9.0", f"20_{blas}", subdir=p, track_features="" if blas == "openblas" else "blas_mkl"))
        specs.append(PackageSpec("scipy", "1.13.1", "py311_0", subdir=p, depends=("python >=3.11,<3.12.0a0", "libblas >=3.9.0,<4")))
    return build_channel(root, specs, subdirs=platforms)


def test_a_blas_pin_the_channel_cannot_meet_is_named_first_with_the_flag_that_changes_it(tmp_path: Path) -> None:
    # The error named the user's `python; scipy` as the conflicting specs, and the hint the BLAS last, as a guess:
    # nothing said that --blas was the cause, nor how to change it.
    write_env(tmp_path, env_text(_blas_channel(tmp_path / "channel", ("linux-64",)), ["python=3.11", "scipy"]))
    result = run_envkit("lock", "--blas", "linux-64=blis", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "conda-lock.yml").exists()
    lines = result.stderr.splitlines()
    assert lines[0] == "error: linux-64: the BLAS pin blis (--blas linux-64=blis) cannot be satisfied together with the specs", lines
    conflicting = next(line for line in lines if line.lstrip().startswith("conflicting specs:"))
    assert conflicting.strip() == "conflicting specs: libblas * *blis (--blas linux-64=blis); scipy (environment.yml:6)", conflicting
    hint = next(line for line in lines if line.lstrip().startswith("hint:"))
    assert hint.strip().startswith(
        "hint: the BLAS pin (--blas linux-64=blis) is part of the conflict: "
        "ask for another BLAS (`--blas linux-64=openblas`) or drop `--blas linux-64=blis`; relax one of the specs named above"
    ), hint
    # The flag the hint gives does it.
    assert run_envkit("lock", "-q", "--blas", "linux-64=openblas", cwd=tmp_path).returncode == 0


def test_a_blas_pin_in_the_environment_file_is_named_with_its_key(tmp_path: Path) -> None:
    channel = _blas_channel(tmp_path / "channel", ("linux-64",))
    write_env(tmp_path, env_text(channel, ["python=3.11", "scipy"], extra="envkit:\n  blas: blis\n"))
    result = run_envkit("lock", "--json", cwd=tmp_path)
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "AddedSpecConflict" and error["exit_code"] == result.returncode == 2, error
    assert error["message"].startswith("linux-64: the BLAS pin blis (`envkit.blas` in environment.yml) cannot be satisfied"), error
    assert "conflicting specs: libblas * *blis (`envkit.blas` in environment.yml); scipy (environment.yml:6)" in error["message"]
    assert error["hint"].startswith(
        "the BLAS pin (`envkit.blas` in environment.yml) is part of the conflict: "
        "set `envkit.blas` in environment.yml to another BLAS (e.g. openblas) or remove it (`--blas openblas` overrides it)"
    ), error


@pytest.mark.parametrize(
    "flags,advice",
    [
        (
            ("--blas", "blis"),
            "the BLAS pin (--blas blis) is part of the conflict: ask for another BLAS (`--blas openblas`) or drop `--blas blis`",
        ),
        (
            ("--blas", "linux-64=blis", "--blas", "osx-64=accelerate"),
            "the BLAS pins (--blas linux-64=blis, --blas osx-64=accelerate) are part of the conflict: ask for another BLAS "
            "(`--blas linux-64=openblas --blas osx-64=openblas`) or drop `--blas linux-64=blis --blas osx-64=accelerate`",
        ),
    ],
    ids=["one-flag", "a-flag-per-platform"],
)
def test_blas_pins_failing_on_several_platforms_get_one_piece_of_advice(tmp_path: Path, flags: tuple[str, ...], advice: str) -> None:
    platforms = ("linux-64", "osx-64")
    write_env(tmp_path, env_text(_blas_channel(tmp_path / "channel", platforms), ["python=3.11", "scipy"], platforms))
    result = run_envkit("lock", *flags, cwd=tmp_path)
    assert result.returncode == 2
    for platform, pin in zip(platforms, flags[1::2] if len(flags) > 2 else flags[1:] * 2, strict=True):
        blas = pin.rpartition("=")[2]
        written = f"--blas {pin}"
        assert f"{platform}: the BLAS pin {blas} ({written}) cannot be satisfied together with the specs" in result.stderr, result.stderr
        assert f"conflicting specs: libblas * *{blas} ({written}); scipy (environment.yml:6)" in result.stderr
    hints = [line for line in result.stderr.splitlines() if line.lstrip().startswith("hint:")]
    assert (
        len(hints) == 1
        and hints[0].strip() == f"hint: {advice}; relax one of the specs named above (the explanation says which versions clash)"
    ), hints
    # --json: the same error, of the same kind as one platform's
    error = json.loads(run_envkit("lock", "--json", "-q", *flags, cwd=tmp_path).stdout)["error"]
    assert error["kind"] == "AddedSpecConflict" and error["hint"] == hints[0].strip().removeprefix("hint: "), error


def test_a_cuda_driver_the_specs_cannot_run_on_is_named_with_the_flag_that_set_it(tmp_path: Path, toy_channel: Path) -> None:
    # cuda12 builds need cuda-version >=12, which needs `__cuda >=12`: --cuda 11.8 is the other side of the conflict.
    write_env(tmp_path, env_text(toy_channel, ["gpulib=*=cuda*"]))
    result = run_envkit("lock", "--cuda", "11.8", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: linux-64: the CUDA driver 11.8 (--cuda 11.8) cannot be satisfied together with the specs\n")
    assert "conflicting specs: __cuda=11.8 (--cuda 11.8); gpulib=*=cuda* (environment.yml:5)" in result.stderr, result.stderr
    assert "hint: the CUDA driver 11.8 assumed (--cuda 11.8) is part of the conflict:" in result.stderr
    assert "(`--cuda VERSION`)" in result.stderr and "(`--no-cuda`)" in result.stderr
    # A variant's own cuda: the flags do not change it, so the hint names its key alone (it offered --cuda/--no-cuda,
    # and `envkit lock --cuda 12.9` failed the same way).
    extra = 'envkit:\n  variants:\n    old: {cuda: "11.8"}\n'
    write_env(tmp_path, env_text(toy_channel, ["gpulib=*=cuda*"], extra=extra))
    own = run_envkit("lock", "--cuda", "12.4", cwd=tmp_path)
    assert own.returncode == 2 and "linux-64 (old): the CUDA driver 11.8 (`envkit.variants.old.cuda` in environment.yml)" in own.stderr
    hint = next(line for line in own.stderr.splitlines() if line.startswith("  hint: "))
    assert "set `envkit.variants.old.cuda` in environment.yml to the driver your machines have, or to none" in hint, hint
    assert "--cuda" not in hint and "--no-cuda" not in hint, hint


def test_a_cuda_version_cap_in_a_file_shared_with_macos_locks_there(tmp_path: Path, toy_channel: Path) -> None:
    # The README's way to cap the toolkit (a `cuda-version` spec) only constrains: on osx-arm64, which has no CUDA,
    # it is locked as conda-lock and pixi lock it. It was refused there, with a hint to pass the --cuda just passed.
    write_env(tmp_path, env_text(toy_channel, ["numpy", "gpulib", "cuda-version <=12.4"], ("linux-64", "osx-arm64")))
    result = run_envkit("lock", "--cuda", "12.4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert locked(tmp_path / "conda-lock.yml", "osx-arm64")["cuda-version"]["version"] == "12.4"
    assert locked(tmp_path / "conda-lock.yml", "osx-arm64")["gpulib"]["build"] == "cpu_0"


def test_cuda_package_without_cuda_is_refused(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy", "cuda-version"]))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "linux-64: the solution contains CUDA packages but no CUDA was requested: cuda-version" in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()


def test_blas_on_purpose(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy"], ("linux-64", "osx-arm64")))
    result = run_envkit("lock", "--blas", "linux-64=mkl", "--blas", "osx-arm64=accelerate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert locked(tmp_path / "conda-lock.yml", "linux-64")["libblas"]["build"] == "20_mkl"
    assert locked(tmp_path / "conda-lock.yml", "osx-arm64")["libblas"]["build"] == "20_accelerate"

    before = (tmp_path / "conda-lock.yml").read_bytes()
    refused = run_envkit("lock", "--blas", "mkl", cwd=tmp_path)
    assert refused.returncode == 2
    assert "osx-arm64: BLAS 'mkl' does not exist on this platform" in refused.stderr
    assert (tmp_path / "conda-lock.yml").read_bytes() == before  # untouched on failure


def test_variants_are_separate_conda_lock_files(tmp_path: Path, toy_channel: Path) -> None:
    extra = 'envkit:\n  cuda: "12.6"\n  variants:\n    cpu:\n      cuda: none\n      blas: mkl\n      platforms: [linux-64]\n'
    write_env(tmp_path, env_text(toy_channel, ["numpy", "gpulib"], ("linux-64", "linux-aarch64"), extra))
    result = run_envkit("lock", "--json", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [s["variant"] for s in summary] == [None, "cpu"]
    gpu = parse_conda_lock_file(tmp_path / "conda-lock.yml")
    cpu = parse_conda_lock_file(tmp_path / "conda-lock.cpu.yml")
    assert sorted(gpu.metadata.platforms) == ["linux-64", "linux-aarch64"]
    assert cpu.metadata.platforms == ["linux-64"]
    assert cpu.metadata.custom_metadata["envkit.variant"] == "cpu"
    assert locked(tmp_path / "conda-lock.yml", "linux-64")["gpulib"]["build"] == "cuda12_0"
    cpu_pkgs = locked(tmp_path / "conda-lock.cpu.yml", "linux-64")
    assert cpu_pkgs["gpulib"]["build"] == "cpu_0" and cpu_pkgs["libblas"]["build"] == "20_mkl"
    assert summary[0]["lock_hash"] != summary[1]["lock_hash"]
    # --blas is for what does not say: the cpu variant keeps its own mkl (as a variant's own cuda beats --cuda). It
    # was relocked with OpenBLAS, and the next --check called it stale ("BLAS changed: locked 'openblas', now 'mkl'").
    flagged = run_envkit("lock", "-q", "--blas", "openblas", cwd=tmp_path)
    assert flagged.returncode == 0, flagged.output
    assert locked(tmp_path / "conda-lock.cpu.yml", "linux-64")["libblas"]["build"] == "20_mkl"
    assert "openblas" in locked(tmp_path / "conda-lock.yml", "linux-64")["libblas"]["build"]
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 0, check.output
    # Rendered environments side by side: a variant's gets `-<variant>` after the spec's name (both were `train`).
    write_env(tmp_path, "name: train\n" + env_text(toy_channel, ["numpy", "gpulib"], ("linux-64", "linux-aarch64"), extra))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    names = []
    for lock in ("conda-lock.yml", "conda-lock.cpu.yml"):
        rendered = run_envkit("render", "--lockfile", lock, "-p", "linux-64", "--kind", "env", cwd=tmp_path)
        assert rendered.returncode == 0, rendered.output
        names.append(yaml.safe_load(rendered.stdout)["name"])
    assert names == ["train", "train-cpu"]


def test_unsatisfiable_names_platform_and_spec(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["python=3.12", "numpy=1.26.4=py311_0", "hello"]))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "linux-64: the specs cannot be satisfied together" in result.stderr
    assert "numpy=1.26.4=py311_0" in result.stderr and "python=3.12" in result.stderr  # the two that clash
    assert "environment.yml:6" in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()


def test_a_version_the_channel_lacks_lists_those_it_has(tmp_path: Path, toy_channel: Path) -> None:
    """One spec asking for a version that does not exist is no clash between specs: say what there is."""
    write_env(tmp_path, env_text(toy_channel, ["python=3.12", "numpy >=1.26,<2", "hello >=3"]))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "linux-64: no hello matching >=3 (requested at environment.yml:7)" in result.stderr
    assert "(it has 2.0, 1.0)" in result.stderr and "cannot be satisfied together" not in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()


def test_package_missing_on_one_platform(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy", "linuxonly"], ("linux-64", "osx-arm64")))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "osx-arm64: package 'linuxonly' (requested at" in result.stderr
    assert "environment.yml:6" in result.stderr
    assert "linux-64: package" not in result.stderr  # only the failing platform is blamed
    assert not (tmp_path / "conda-lock.yml").exists()


def test_unknown_channel(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, "channels: [no-such-channel]\ndependencies: [numpy]\n")
    result = run_envkit("lock", "--channel-alias", toy_channel.parent.as_uri(), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read a channel" in result.stderr and "no-such-channel" in result.stderr
    write_env(tmp_path, "channels: [./missing-dir]\ndependencies: [numpy]\n")
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2 and "missing-dir" in result.stderr


def test_a_broken_subdir_is_blamed_with_its_cause_on_every_platform_that_shares_a_download(tmp_path: Path, toy_channel: Path) -> None:
    # The solves and the deadline's repodata loads share the gateway's downloads (noarch is shared by
    # both platforms): whichever request started a download that fails has rattler's cause; the others
    # only hear "a coalesced request failed", which must never be the whole story.
    channel = tmp_path / "toy"
    shutil.copytree(toy_channel, channel)
    (channel / "linux-64" / "repodata.json").write_text('{"info": {"subdir": "linux-64"}, "packages": {garbage', encoding="utf-8")
    write_env(tmp_path, env_text(channel, ["numpy"], ("linux-64", "osx-arm64")))
    for _ in range(3):  # which request starts which download varies from run to run
        result = run_envkit("lock", cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
        assert result.returncode == 2, result.output
        assert "linux-64: cannot read a channel" in result.stderr and "failed to parse repodata.json" in result.stderr, result.stderr
        assert "coalesced" not in result.stderr, result.stderr
        assert not (tmp_path / "conda-lock.yml").exists()


def test_channel_alias_names_and_relative_paths(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, "channels: [toy]\ndependencies: [hello]\n")
    result = run_envkit("lock", "--channel-alias", toy_channel.parent.as_uri(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert locked(tmp_path / "conda-lock.yml", "linux-64")["hello"]["url"].startswith(toy_channel.as_uri())
    shutil.copytree(toy_channel, tmp_path / "local-channel")
    write_env(tmp_path / "proj", "channels: [../local-channel]\ndependencies: [hello]\n")
    assert run_envkit("lock", cwd=tmp_path / "proj").returncode == 0


def test_virtual_package_spec_file(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["needs-new-glibc"]))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0  # default __glibc 2.28
    (tmp_path / "vp.yml").write_text("subdirs:\n  linux-64:\n    packages:\n      __glibc: '2.17'\n")
    result = run_envkit("lock", "--virtual-package-spec", "vp.yml", "--lockfile", "old.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "__glibc" in result.stderr and "__glibc=2.17=0" in result.stderr


def test_check_judges_satisfaction(tmp_path: Path, toy_channel: Path) -> None:
    env = write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy", "hello"], ("linux-64", "win-64")))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    fresh = run_envkit("lock", "--check", cwd=tmp_path)
    assert fresh.returncode == 0 and fresh.stdout.count("fresh") == 2

    # A looser spec the lock still satisfies: fresh, although the input hash changed.
    env.write_text(env_text(toy_channel, ["python=3.11", "numpy >=1.20", "hello"], ("linux-64", "win-64")))
    loose = run_envkit("lock", "--check", cwd=tmp_path)
    assert loose.returncode == 0 and "lock still satisfies them" in loose.stdout

    env.write_text(env_text(toy_channel, ["python=3.11", "numpy <2", "hello"], ("linux-64", "win-64")))
    stale = run_envkit("lock", "--check", cwd=tmp_path)
    assert stale.returncode == 1
    assert "STALE  conda-lock.yml linux-64" in stale.stderr
    assert "'numpy <2' (environment.yml:6) is not satisfied by locked numpy 2.0.1" in stale.stderr

    env.write_text(env_text(toy_channel, ["python=3.11", "numpy"], ("linux-64", "win-64")))
    removed = run_envkit("lock", "--check", cwd=tmp_path)
    assert removed.returncode == 1 and "hello is locked but no longer required" in removed.stderr

    env.write_text(env_text(toy_channel, ["python=3.11", "numpy", "hello"], ("linux-64", "win-64", "osx-64")))
    platform = run_envkit("lock", "--check", cwd=tmp_path)
    assert platform.returncode == 1 and "osx-64" in platform.stderr and "not in the lock" in platform.stderr

    env.write_text(env_text(toy_channel, ["python=3.11", "numpy", "hello"], ("linux-64", "win-64")))
    cuda = run_envkit("lock", "--check", "--cuda", "12.4", cwd=tmp_path)
    assert cuda.returncode == 1 and "CUDA changed" in cuda.stderr


def test_check_catches_hand_edited_lock(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy"]))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    lock = tmp_path / "conda-lock.yml"
    data = yaml.safe_load(lock.read_text())
    data["package"] = [p for p in data["package"] if p["name"] != "libblas"]
    data["metadata"]["content_hash"]["linux-64"] = "edited"
    lock.write_text(yaml.safe_dump(data))
    result = run_envkit("lock", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert "numpy needs libblas >=3.9.0,<4, which is not in the lock" in result.stderr


def test_lock_hash_is_explainable(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy"], ("linux-64", "osx-arm64")))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    result = run_envkit("hash", "--json", cwd=tmp_path)
    hashes = json.loads(result.stdout)

    # Recompute from the documented recipe (docs/lock-format.md), independently of envkit.
    def digest(obj: object) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    data = yaml.safe_load((tmp_path / "conda-lock.yml").read_text())
    per = {}
    for platform in ("linux-64", "osx-arm64"):
        lines = sorted(f"{p['url']} {p['hash']['sha256']}" for p in data["package"] if p["platform"] == platform)
        per[platform] = digest({"scheme": "envkit-lock/1", "platform": platform, "packages": lines})
        assert hashes["platforms"][platform] == f"sha256:{per[platform]}"
    assert hashes["lock_hash"] == "sha256:" + digest({"scheme": "envkit-lock/1", "platforms": per})
    short = run_envkit("hash", "--short", "-p", "linux-64", cwd=tmp_path)
    assert short.stdout.strip() == per["linux-64"][:12]


def test_render_explicit_and_env(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy", "hello"], ("linux-64", "win-64")))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    explicit = run_envkit("render", "-p", "win-64", "--kind", "explicit", cwd=tmp_path)
    assert explicit.returncode == 0
    spec = ExplicitEnvironmentSpec.from_str(explicit.stdout)  # rattler's parser
    urls = [p.url for p in spec.packages]
    lock = yaml.safe_load((tmp_path / "conda-lock.yml").read_text())
    md5 = {p["url"]: p["hash"]["md5"] for p in lock["package"] if p["platform"] == "win-64"}
    assert sorted(urls) == sorted(f"{u}#{h}" for u, h in md5.items())
    # Dependencies come before their dependents.
    assert urls.index(next(u for u in urls if "/python-" in u)) < urls.index(next(u for u in urls if "/numpy-" in u))
    strong = run_envkit("render", "-p", "win-64", "--hash", "sha256", cwd=tmp_path)
    sha = {p["url"]: p["hash"]["sha256"] for p in lock["package"] if p["platform"] == "win-64"}
    assert sorted(p.url for p in ExplicitEnvironmentSpec.from_str(strong.stdout).packages) == sorted(
        f"{u}#sha256:{h}" for u, h in sha.items()
    )

    run_envkit("render", "-p", "linux-64", "--kind", "env", "-o", "pinned/environment.yml", cwd=tmp_path)
    pinned = yaml.safe_load((tmp_path / "pinned" / "environment.yml").read_text())
    assert "numpy=2.0.1=py312_0" in pinned["dependencies"]
    # Without -p: this machine's platform (linux-64 here), as install does.
    assert run_envkit("render", "--kind", "env", cwd=tmp_path).stdout == (tmp_path / "pinned" / "environment.yml").read_text()
    # The pinned file locks to exactly the same packages.
    assert run_envkit("lock", "-p", "linux-64", cwd=tmp_path / "pinned").returncode == 0
    assert locked(tmp_path / "pinned" / "conda-lock.yml", "linux-64") == locked(tmp_path / "conda-lock.yml", "linux-64")

    missing = run_envkit("render", "-p", "osx-64", cwd=tmp_path)
    assert missing.returncode == 2 and "osx-64 is not in the lock" in missing.stderr


def test_real_conda_lock_cli_renders_our_lock(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy", "hello"], ("linux-64", "osx-arm64")))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    conda_lock = [sys.executable, "-m", "conda_lock"]
    for kind in ("explicit", "env"):
        proc = subprocess.run(
            [*conda_lock, "render", "--kind", kind, "-p", "osx-arm64", "conda-lock.yml"], cwd=tmp_path, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    explicit = (tmp_path / "conda-osx-arm64.lock").read_text()
    ours = run_envkit("render", "-p", "osx-arm64", cwd=tmp_path).stdout
    assert sorted(line.split("#")[0] for line in explicit.splitlines() if line.startswith("file:")) == sorted(
        line.split("#")[0] for line in ours.splitlines() if line.startswith("file:")
    )
    env_file = yaml.safe_load((tmp_path / "conda-osx-arm64.lock.yml").read_text())
    assert any(str(d).startswith("numpy") for d in env_file["dependencies"])


def test_json_summary_is_machine_readable(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["numpy"], ("linux-64", "osx-64")))
    result = run_envkit("lock", "--json", "-q", cwd=tmp_path)
    (summary,) = json.loads(result.stdout)
    assert summary["written"] is True and summary["lockfile"] == "conda-lock.yml"
    assert summary["platforms"]["osx-64"]["blas"] == "openblas"
    assert result.stderr == ""


def test_match_spec_forms(tmp_path: Path, toy_channel: Path) -> None:
    deps = "  - toy::hello\n  - numpy=1.26.4=py311_0\n  - libblas[build=*mkl]\n"
    write_env(tmp_path, f"channels: [toy]\ndependencies:\n{deps}")
    result = run_envkit("lock", "--channel-alias", toy_channel.parent.as_uri(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pkgs = locked(tmp_path / "conda-lock.yml", "linux-64")
    assert pkgs["numpy"]["version"] == "1.26.4" and pkgs["numpy"]["build"] == "py311_0"
    assert pkgs["python"]["version"] == "3.11.9"
    assert pkgs["libblas"]["build"] == "20_mkl"
    assert run_envkit("lock", "--check", "--channel-alias", toy_channel.parent.as_uri(), cwd=tmp_path).returncode == 0

    write_env(tmp_path, "channels: [toy]\ndependencies:\n  - elsewhere::hello\n")
    refused = run_envkit("lock", "--channel-alias", toy_channel.parent.as_uri(), cwd=tmp_path)
    assert refused.returncode == 2
    assert "environment.yml:3: 'elsewhere::hello' names channel 'elsewhere', which is not in `channels:`" in refused.stderr


def test_check_without_the_channel_alias_the_lock_was_made_with_says_which(tmp_path: Path, toy_channel: Path) -> None:
    # The lock records channel URLs, not the alias: `--check` without it found every channel changed, and its hint
    # (`envkit lock`) then went to conda.anaconda.org.
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "toy").symlink_to(toy_channel)
    write_env(tmp_path, "channels: [toy]\nplatforms: [linux-64]\ndependencies: [hello]\n")
    alias = f"{(tmp_path / 'mirror').as_uri()}/"
    assert run_envkit("lock", "-q", "--channel-alias", alias, cwd=tmp_path).returncode == 0
    assert run_envkit("lock", "--check", "--channel-alias", alias, cwd=tmp_path).returncode == 0
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 1 and f"pass --channel-alias {alias} as when locking" in check.output, check.output


def test_a_lock_that_does_not_read_is_not_replaced(tmp_path: Path, toy_channel: Path) -> None:
    # `envkit lock` solves again under what the lock records (here its CUDA driver). A lock that does not read (a merge
    # conflict) was replaced by one solved without it: a CUDA lock became CPU-only without a word.
    write_env(tmp_path, env_text(toy_channel, ["gpulib"]))
    assert run_envkit("lock", "--cuda", "12.4", cwd=tmp_path).returncode == 0
    lock = tmp_path / "conda-lock.yml"
    text = lock.read_text()
    at = text.index("- name: gpulib")
    broken = text[:at] + "<<<<<<< HEAD\n" + text[at:] + "=======\n>>>>>>> feature\n"
    lock.write_text(broken)
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "conda-lock.yml:" in result.stderr and "delete it to lock from the spec alone" in result.stderr
    assert lock.read_text() == broken


def test_cuda_version_alone_is_no_cuda_build(tmp_path: Path, toy_channel: Path) -> None:
    # `cuda-version` in the spec caps the toolkit; beside a CPU build it makes no CUDA lock: said as CPU-only, and no
    # minor-version compatibility is claimed for a toolkit nothing uses.
    write_env(tmp_path, env_text(toy_channel, ["gpulib=*=cpu*", "cuda-version"]))
    result = run_envkit("lock", "--cuda", "12.4", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert locked(tmp_path / "conda-lock.yml", "linux-64")["cuda-version"]["version"] == "12.6"
    assert "a CUDA 12.4 driver assumed, but no CUDA build was chosen" in result.stderr
    assert "cpu (cuda driver 12.4 assumed; no CUDA build chosen)" in result.stdout
    meta = parse_conda_lock_file(tmp_path / "conda-lock.yml").metadata.custom_metadata
    assert meta["envkit.linux-64.cuda"] == "12.4" and "envkit.linux-64.cuda-compat" not in meta


def test_a_cpu_build_beside_cuda_ones_is_said(tmp_path: Path, toy_channel: Path) -> None:
    # The "no CUDA build was chosen" warning is for a lock with none: one CUDA package (cudakernels) hid a CPU gpulib
    # (a CPU pytorch beside a CUDA cupy, in the trial), and the summary read as a CUDA lock.
    write_env(tmp_path, env_text(toy_channel, ["gpulib=*=cpu*", "cudakernels"]))
    result = run_envkit("lock", "--cuda", "12.4", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "linux-64: a CUDA 12.4 driver assumed, but gpulib 1.0 cpu_0 is a CPU build beside the CUDA ones" in result.stderr
    assert "(`gpulib=*=cuda*`)" in result.stderr and "no CUDA build was chosen" not in result.stderr
    write_env(tmp_path, env_text(toy_channel, ["gpulib", "cudakernels"]))
    both = run_envkit("lock", "--cuda", "12.4", cwd=tmp_path)  # (nothing CPU: nothing said)
    assert both.returncode == 0 and "CPU build" not in both.stderr, both.output


def test_a_library_built_against_mkl_itself_is_said_under_another_blas(tmp_path: Path, toy_channel: Path) -> None:
    # An OpenBLAS pin fixes libblas; a build depending on mkl directly brought MKL in anyway, and the summary and
    # envkit.<platform>.blas said openblas with no word.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "mkltorch"]))
    result = run_envkit("lock", "--blas", "linux-64=openblas", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "mkl" in locked(tmp_path / "conda-lock.yml", "linux-64")
    said = "linux-64: BLAS openblas asked for, but mkltorch 1.0 cpu_mkl_0 depends on mkl itself (not through libblas)"
    assert said in result.stderr, result.stderr
    assert "CPU build" not in result.stderr  # (no CUDA asked for: a cpu build string says nothing)
    mkl = run_envkit("lock", "--blas", "linux-64=mkl", cwd=tmp_path)
    assert mkl.returncode == 0 and "depends on mkl itself" not in mkl.stderr, mkl.output


def test_a_variant_takes_the_specs_cuda_unless_it_says(tmp_path: Path, toy_channel: Path) -> None:
    variants = 'envkit:\n  cuda: "12.4"\n  variants:\n    linux: {platforms: [linux-64]}\n    cpu: {cuda: none, platforms: [linux-64]}\n'
    write_env(tmp_path, env_text(toy_channel, ["gpulib"], ("linux-64", "osx-arm64"), extra=variants))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert locked(tmp_path / "conda-lock.linux.yml", "linux-64")["gpulib"]["build"] == "cuda12_0"
    assert locked(tmp_path / "conda-lock.cpu.yml", "linux-64")["gpulib"]["build"] == "cpu_0"
    # --no-cuda is the spec's driver too: for the default and for a variant that does not say
    assert run_envkit("lock", "--no-cuda", "--lockfile", "flagged.yml", cwd=tmp_path).returncode == 0
    assert locked(tmp_path / "flagged.linux.yml", "linux-64")["gpulib"]["build"] == "cpu_0"


VARIANTS = "envkit:\n  variants:\n    cpu: {cuda: none}\n    gpu: {cuda: '12.4', platforms: [linux-64]}\n"


def _variant_locks(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("conda-lock*.yml"))}


def test_a_variant_lock_given_as_lockfile_is_checked_and_locked_as_that_variant(tmp_path: Path, toy_channel: Path) -> None:
    # `--lockfile conda-lock.gpu.yml` (a CI job checking the lock it bakes from) was taken for a default lock: --check
    # looked for conda-lock.gpu.cpu.yml and asked for osx-arm64 in it (exit 1 on a fresh lock), and `lock` overwrote it
    # with the default variant and wrote nested variant files.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64", "osx-arm64"), VARIANTS))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    made = _variant_locks(tmp_path)
    assert list(made) == ["conda-lock.cpu.yml", "conda-lock.gpu.yml", "conda-lock.yml"]
    check = run_envkit("lock", "--check", "--lockfile", "conda-lock.gpu.yml", cwd=tmp_path)
    assert check.returncode == 0, check.output
    assert check.stdout == "fresh  conda-lock.gpu.yml linux-64\n"
    again = run_envkit("lock", "--json", "-q", "--lockfile", "conda-lock.gpu.yml", cwd=tmp_path)
    assert again.returncode == 0, again.output
    assert [(o["lockfile"], o["variant"], o["written"]) for o in json.loads(again.stdout)] == [("conda-lock.gpu.yml", "gpu", False)]
    assert _variant_locks(tmp_path) == made  # nothing rewritten, no conda-lock.gpu.cpu.yml
    # -p naming none of the variant's platforms: nothing to lock or check, and said so.
    for check in (("--check",), ()):
        idle = run_envkit("lock", *check, "-p", "osx-arm64", "--lockfile", "conda-lock.gpu.yml", cwd=tmp_path)
        assert idle.returncode == 0 and not idle.stdout, idle.output
        assert "-p osx-arm64 names none of the platforms of conda-lock.gpu.yml: -p one of its platforms" in idle.stderr
    assert _variant_locks(tmp_path) == made
    # The spec changes: the gpu lock alone is checked and relocked, in its own file; the others stay as they were.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib", "hello"], ("linux-64", "osx-arm64"), VARIANTS))
    stale = run_envkit("lock", "--check", "--lockfile", "conda-lock.gpu.yml", cwd=tmp_path)
    assert stale.returncode == 1 and "STALE  conda-lock.gpu.yml linux-64:" in stale.stderr, stale.output
    assert "conda-lock.yml" not in stale.output and "conda-lock.cpu.yml" not in stale.output
    relocked = run_envkit("lock", "--lockfile", "conda-lock.gpu.yml", cwd=tmp_path)
    assert relocked.returncode == 0, relocked.output
    assert relocked.stdout.startswith("wrote conda-lock.gpu.yml") and "solve: 1 platform solved (linux-64)" in relocked.stderr
    gpu = locked(tmp_path / "conda-lock.gpu.yml", "linux-64")
    assert "hello" in gpu and gpu["gpulib"]["build"] == "cuda12_0"
    assert parse_conda_lock_file(tmp_path / "conda-lock.gpu.yml").metadata.custom_metadata["envkit.variant"] == "gpu"
    now = _variant_locks(tmp_path)
    assert list(now) == list(made) and now["conda-lock.yml"] == made["conda-lock.yml"]
    assert now["conda-lock.cpu.yml"] == made["conda-lock.cpu.yml"]
    # --variant names the variants to check or lock (`default`: the --lockfile itself).
    cpu = run_envkit("lock", "--check", "--variant", "cpu", cwd=tmp_path)
    assert cpu.returncode == 1 and "conda-lock.gpu.yml" not in cpu.output and "STALE  conda-lock.cpu.yml" in cpu.stderr, cpu.output
    assert run_envkit("lock", "--check", "--variant", "gpu", cwd=tmp_path).returncode == 0
    both = run_envkit("lock", "--json", "-q", "--variant", "cpu", "--variant", "default", cwd=tmp_path)
    assert both.returncode == 0, both.output
    assert [o["variant"] for o in json.loads(both.stdout)] == [None, "cpu"]
    assert _variant_locks(tmp_path)["conda-lock.gpu.yml"] == now["conda-lock.gpu.yml"]
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0


def test_a_lockfile_or_variant_the_spec_does_not_name_as_such_is_refused(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64", "osx-arm64"), VARIANTS))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    # A gpu lock under another name: which default lock it belongs to is not known; neither checked nor overwritten.
    gpu = (tmp_path / "conda-lock.gpu.yml").read_bytes()
    (tmp_path / "conda-lock.cpu2.yml").write_bytes(gpu)
    (tmp_path / "gpu-lock.yml").write_bytes(gpu)
    for name in ("conda-lock.cpu2.yml", "gpu-lock.yml"):
        for args in (("--check",), ()):
            refused = run_envkit("lock", *args, "--lockfile", name, cwd=tmp_path)
            assert refused.returncode == 2, refused.output
            assert f"error: {name} records variant gpu (`envkit.variant`), but its name is not a gpu lock's" in refused.stderr
            assert "`--lockfile conda-lock.yml --variant gpu` reads and writes conda-lock.gpu.yml" in refused.stderr
            assert (tmp_path / name).read_bytes() == gpu
    (tmp_path / "conda-lock.cpu2.yml").unlink()
    (tmp_path / "gpu-lock.yml").unlink()
    made = _variant_locks(tmp_path)
    for args, said in [
        (("--variant", "nope"), "error: --variant: environment.yml declares no variant 'nope'"),
        (("--variant", "../x"), "error: --variant: '../x' is not a variant name"),
        (("--variant", "cpu.gpu"), "error: --variant: 'cpu.gpu' is not a variant name"),
        (("--lockfile", "conda-lock.cpu.yml", "--variant", "gpu"), "conda-lock.cpu.yml is variant cpu's lock, and --variant gpu"),
    ]:
        for check in (("--check",), ()):
            refused = run_envkit("lock", *check, *args, cwd=tmp_path)
            assert refused.returncode == 2 and said in refused.stderr, (args, refused.output)
    nope = run_envkit("lock", "--variant", "nope", cwd=tmp_path)
    assert "hint: name one of its variants: default (conda-lock.yml), cpu (conda-lock.cpu.yml), gpu (conda-lock.gpu.yml)" in nope.stderr
    assert _variant_locks(tmp_path) == made and not list(tmp_path.glob("*x*.yml"))


def test_check_names_the_variant_to_lock_when_a_variant_was_just_added(tmp_path: Path, toy_channel: Path) -> None:
    # Day two: a gpu variant added to a locked spec. --check said "run `envkit lock`", which solves the existing locks
    # again too (their packages may move); `lock --variant gpu` writes the new file alone.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64",)))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    before = (tmp_path / "conda-lock.yml").read_bytes()
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64",), VARIANTS))
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 1, check.output
    assert "fresh  conda-lock.yml linux-64" in check.stdout
    hint = "hint: run `envkit lock --variant cpu --variant gpu` to write conda-lock.cpu.yml, conda-lock.gpu.yml alone"
    assert hint in check.stderr, check.stderr
    made = run_envkit("lock", "--variant", "cpu", "--variant", "gpu", cwd=tmp_path)
    assert made.returncode == 0, made.output
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0
    assert (tmp_path / "conda-lock.yml").read_bytes() == before


def test_check_names_the_platform_to_lock_when_a_platform_was_just_added(tmp_path: Path, toy_channel: Path) -> None:
    # A platform added to `platforms:`: --check said "run `envkit lock`", which solves the locked platforms again too;
    # `lock -p PLATFORM` adds it and keeps the others as they are.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy"], ("linux-64",)))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "numpy"], ("linux-64", "osx-arm64", "win-64")))
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 1, check.output
    hint = "hint: run `envkit lock -p osx-arm64 -p win-64` to add osx-arm64, win-64 alone (the locked platforms stay as they are)"
    assert hint in check.stderr, check.stderr
    assert run_envkit("lock", "-q", "-p", "osx-arm64", "-p", "win-64", cwd=tmp_path).returncode == 0
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0


def test_the_lock_of_a_variant_removed_from_the_spec_is_stale_and_lock_warns(tmp_path: Path, toy_channel: Path) -> None:
    # A variant dropped (or renamed) in environment.yml left its lock; neither `lock` nor `lock --check` said so, and a
    # pipeline kept baking from a lock no spec makes.
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64", "osx-arm64"), VARIANTS))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    gpu = (tmp_path / "conda-lock.gpu.yml").read_bytes()
    renamed = VARIANTS.replace("gpu:", "cuda:")
    write_env(tmp_path, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64", "osx-arm64"), renamed))
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 1, check.output
    reason = "variant gpu is no longer in environment.yml: remove conda-lock.gpu.yml (or add gpu back under `envkit.variants`)"
    assert f"STALE  conda-lock.gpu.yml linux-64:\n         {reason}\n" in check.stderr, check.stderr
    assert "STALE  conda-lock.cuda.yml linux-64:\n         not locked yet" in check.stderr
    assert (
        "hint: delete conda-lock.gpu.yml (no variant of the spec makes it any more); run `envkit lock --variant cuda` to write "
        "conda-lock.cuda.yml alone" in check.stderr
    ), check.stderr
    rows = json.loads(run_envkit("lock", "--check", "--json", cwd=tmp_path).stdout)
    assert rows[-1] == {
        "lockfile": "conda-lock.gpu.yml", "variant": "gpu", "platform": "linux-64", "fresh": False, "reasons": [reason], "assumptions": []
    }  # fmt: skip
    relocked = run_envkit("lock", cwd=tmp_path)
    assert relocked.returncode == 0, relocked.output
    assert (
        "warning: conda-lock.gpu.yml is the lock of variant gpu, which environment.yml no longer declares: delete it "
        "(`envkit lock` leaves it, and `envkit lock --check` calls it stale)" in relocked.stderr
    ), relocked.stderr
    assert (tmp_path / "conda-lock.gpu.yml").read_bytes() == gpu and (tmp_path / "conda-lock.cuda.yml").is_file()
    # Named as the --lockfile (or with --variant): stale for --check, refused for `lock`; the file stays as it is.
    only = run_envkit("lock", "--check", "--lockfile", "conda-lock.gpu.yml", cwd=tmp_path)
    assert only.returncode == 1 and only.stderr.startswith(f"STALE  conda-lock.gpu.yml linux-64:\n         {reason}\n"), only.output
    assert "conda-lock.cuda.yml" not in only.output
    assert run_envkit("lock", "--check", "--variant", "gpu", cwd=tmp_path).returncode == 1
    for args in (("--lockfile", "conda-lock.gpu.yml"), ("--variant", "gpu")):
        refused = run_envkit("lock", *args, cwd=tmp_path)
        assert refused.returncode == 2, refused.output
        assert "error: conda-lock.gpu.yml is the lock of variant gpu, which environment.yml no longer declares" in refused.stderr
        assert "hint: delete conda-lock.gpu.yml" in refused.stderr and "add gpu back under `envkit.variants`" in refused.stderr
    assert (tmp_path / "conda-lock.gpu.yml").read_bytes() == gpu
    (tmp_path / "conda-lock.gpu.yml").unlink()
    assert run_envkit("lock", "--check", cwd=tmp_path).returncode == 0


def test_only_envkit_variant_locks_beside_the_lock_count_as_removed_variants(tmp_path: Path, toy_channel: Path) -> None:
    # Files named like a variant's lock that are not one (or not this directory's) are left alone, and read no further.
    work, outside = tmp_path / "work", tmp_path / "outside"
    write_env(work, env_text(toy_channel, ["python=3.11", "gpulib"], ("linux-64",), VARIANTS))
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    gpu_text = (work / "conda-lock.gpu.yml").read_text()
    outside.mkdir()
    # A real lock of variant `evil`, out of the directory, reached through a symlink named as its lock.
    (outside / "conda-lock.evil.yml").write_text(gpu_text.replace("envkit.variant: gpu", "envkit.variant: evil"))
    (work / "conda-lock.evil.yml").symlink_to(outside / "conda-lock.evil.yml")
    os.mkfifo(work / "conda-lock.fifo.yml")  # read, it would block
    (work / "conda-lock.dir.yml").mkdir()
    (work / "conda-lock.bin.yml").write_bytes(b"\xff\xfe\x00\x01 not text")
    (work / "conda-lock.broken.yml").write_text("metadata: [unclosed\n")
    (work / "conda-lock.loop.yml").symlink_to("conda-lock.loop.yml")
    (work / "conda-lock.dangling.yml").symlink_to(tmp_path / "nowhere.yml")
    (work / "conda-lock.other.yml").write_text(gpu_text.replace("envkit.variant: gpu", "envkit.variant: another"))
    (work / "conda-lock.old.yml").write_text(gpu_text.replace("envkit.variant: gpu", "envkit.variant: default"))
    if os.geteuid() != 0:  # (root reads it anyway)
        unreadable = work / "conda-lock.locked.yml"
        unreadable.write_text(gpu_text.replace("envkit.variant: gpu", "envkit.variant: locked"))
        unreadable.chmod(0)
    for i in range(2000):
        (work / f"unrelated-{i}.yml").write_text("x")
    check = run_envkit("lock", "--check", cwd=work)
    assert check.returncode == 0 and "no longer" not in check.output and "evil" not in check.output, check.output
    relocked = run_envkit("lock", "-q", cwd=work)
    assert relocked.returncode == 0 and "warning" not in relocked.stderr, relocked.output
    assert (outside / "conda-lock.evil.yml").read_text().count("envkit.variant: evil") == 1
    # Many files named like variant locks: the first few are read, and the rest are said to be unread.
    for i in range(70):
        (work / f"conda-lock.v{i:02d}.yml").write_text("not a lock\n")
    crowded = run_envkit("lock", "--check", cwd=work)
    assert "files beside conda-lock.yml named like variant locks (conda-lock.<variant>.yml) were not read" in crowded.stderr
    assert "(envkit reads at most 64 of them): conda-lock.v" in crowded.stderr, crowded.stderr


def test_a_platform_locked_with_p_that_the_spec_does_not_name_is_said(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, env_text(toy_channel, ["hello"], ("linux-64",)))
    assert run_envkit("lock", "-q", cwd=tmp_path).returncode == 0
    added = run_envkit("lock", "-p", "osx-arm64", cwd=tmp_path)
    assert added.returncode == 0, added.output
    assert "osx-arm64 locked (named by -p), but environment.yml does not name it in `platforms:`" in added.stderr


def test_uvs_long_explanation_is_cut_at_a_line_and_keeps_the_conda_note() -> None:
    from conda_envkit.pip_lock import _uv_failure

    stderr = "\n".join(f"because scikit-learn=={i} has no wheels" for i in range(40)) + "\nwe can conclude that all of:"
    shown = _uv_failure(stderr, [], {"scikit-learn": "1.5.0"}).split("\n  ")
    assert shown[30] == "… (11 more lines of uv's explanation)"
    assert shown[-1] == "note: from conda, fixed for pip: scikit-learn 1.5.0"  # (it was cut away with uv's lines)


def test_without_f_the_lock_is_checked_against_the_files_it_records(tmp_path: Path, toy_channel: Path) -> None:
    # As conda-lock does (its header says `conda-lock lock --lockfile conda-lock.yml --update PACKAGE`): no -f, the
    # lock's metadata.sources. It looked for environment.yml, or checked an unrelated one without a word.
    (tmp_path / "base.yml").write_text(env_text(toy_channel, ["hello"]))
    (tmp_path / "dev.yml").write_text("dependencies:\n  - numpy\n")
    assert run_envkit("lock", "-q", "-f", "base.yml", "-f", "dev.yml", cwd=tmp_path).returncode == 0
    write_env(tmp_path, env_text(toy_channel, ["python=3.11"]))  # another project's environment.yml beside it
    check = run_envkit("lock", "--check", cwd=tmp_path)
    assert check.returncode == 0, check.output
    assert "no -f given: the environment files conda-lock.yml was made from: base.yml, dev.yml" in check.stderr
    assert run_envkit("lock", "-q", "--update", "numpy", cwd=tmp_path).returncode == 0
    assert yaml.safe_load((tmp_path / "conda-lock.yml").read_text())["metadata"]["sources"] == ["base.yml", "dev.yml"]


@pytest.mark.parametrize("source", ["../elsewhere.yml", "/etc/passwd", "linked.yml"])
def test_sources_a_lock_names_outside_its_directory_are_not_read(tmp_path: Path, toy_channel: Path, source: str) -> None:
    # A lock is someone else's until checked (a pull request's): the files its metadata.sources names are read for a
    # plain `lock`/`--check` only inside the lock's directory, never through a symlink out of it.
    work = tmp_path / "work"
    write_env(work, env_text(toy_channel, ["hello"]))
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    (tmp_path / "elsewhere.yml").write_text("not: [a, spec\n")
    (work / "linked.yml").symlink_to(tmp_path / "elsewhere.yml")
    lock = work / "conda-lock.yml"
    lock.write_text(lock.read_text().replace("  - environment.yml", f"  - {source}", 1))
    assert f"  - {source}\n" in lock.read_text()  # (the lock names it now)
    check = run_envkit("lock", "--check", cwd=work)
    assert check.returncode == 0, check.output  # checked against environment.yml: the named file was not read
    assert "no -f given" not in check.stderr and "not: [a, spec" not in check.output
    # ... and it says so: which file the lock names, and that environment.yml was read instead.
    assert f"conda-lock.yml was made from other files: {source} is outside the lock's directory" in check.stderr, check.stderr
    assert "environment.yml was read (-f names the files)" in check.stderr
    # With no environment.yml either: the error's hint names the lock's own source (it said "file not found" alone).
    (work / "environment.yml").unlink()
    missing = run_envkit("lock", "--check", cwd=work)
    assert missing.returncode == 2 and "environment.yml: file not found" in missing.stderr, missing.output
    assert (
        f"hint: conda-lock.yml was made from other files: {source} is outside" in missing.stderr and "pass them with -f" in missing.stderr
    )
