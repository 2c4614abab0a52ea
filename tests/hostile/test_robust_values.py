"""Command-line and config values refused cleanly, and specs that used to be accepted silently (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_envkit, write_env

GOOD_ENV = "channels: [conda-forge]\ndependencies:\n  - python\n"


def _refused(tmp_path: Path, *args: str, expected: str) -> str:
    before = sorted(tmp_path.iterdir())
    result = run_envkit(*args, cwd=tmp_path)  # run_envkit asserts no traceback
    assert result.returncode == 2, result.output
    assert expected in result.stderr, result.stderr
    assert sorted(tmp_path.iterdir()) == before
    return result.stderr


@pytest.mark.parametrize(
    "mirror",
    [
        "conda-forge=not a url",
        "conda-forge=mirror.example/conda-forge",
        "conda-forge=ftp://mirror/cf",
        "conda-forge=http://[::1/cf",
        "conda-forge=https://",
    ],
)
def test_mirror_that_is_not_a_url(tmp_path: Path, mirror: str) -> None:
    write_env(tmp_path, GOOD_ENV)
    _refused(tmp_path, "lock", "--mirror", mirror, expected=f"--mirror {mirror}: ")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("mirrors:\n  conda-forge: [notaurl]\n", "cfg.yml: mirrors.conda-forge: 'notaurl' is not an http(s):// or file:// URL"),
        ("channel_alias: conda.example\n", "cfg.yml: channel_alias: 'conda.example' is not"),
        ("mirrors:\n  conda-forge: [https://a]\n  conda-forge: [https://b]\n", "cfg.yml:3: duplicate key `conda-forge`"),
    ],
)
def test_config_values(tmp_path: Path, config: str, expected: str) -> None:
    write_env(tmp_path, GOOD_ENV)
    (tmp_path / "cfg.yml").write_text(config)
    _refused(tmp_path, "lock", "--config", "cfg.yml", expected=expected)


def test_channel_alias_option(tmp_path: Path) -> None:
    write_env(tmp_path, GOOD_ENV)
    _refused(tmp_path, "lock", "--channel-alias", "nowhere", expected="--channel-alias: 'nowhere' is not")


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        ("{__glibc: [2, 17]}", "vp.yml: linux-64: __glibc: invalid version [2, 17]"),
        ("{__glibc: {a: b}}", "__glibc: invalid version"),
        ("{__glibc: 'two point seventeen'}", "__glibc: invalid version 'two point seventeen'"),
        ("{__glibc: true}", "__glibc: invalid version True"),
        ("{__glibc: '>=2.17'}", "invalid version '>=2.17'"),
        ("{glibc: '2.17'}", "'glibc' is not a virtual package"),
        ("{__cuda: '12.4', __cuda: '11.8'}", "vp.yml:3: duplicate key `__cuda`"),
    ],
)
def test_virtual_package_spec_values(tmp_path: Path, packages: str, expected: str) -> None:
    write_env(tmp_path, GOOD_ENV)
    (tmp_path / "vp.yml").write_text(f"subdirs:\n  linux-64:\n    packages: {packages}\n")
    _refused(tmp_path, "lock", "--virtual-package-spec", "vp.yml", expected=expected)


def test_two_lines_for_one_package_are_refused_naming_both(tmp_path: Path) -> None:
    write_env(tmp_path, "channels: [conda-forge]\ndependencies:\n  - numpy >=2\n  - python\n  - numpy <2\n")
    stderr = _refused(tmp_path, "lock", expected="environment.yml:5: `numpy <2` names numpy again (first at ")
    assert "environment.yml:3: `numpy >=2`" in stderr


def test_one_package_per_platform_through_selectors_is_fine(tmp_path: Path, toy_channel: Path) -> None:
    deps = "  - hello  # [linux]\n  - hello >=2  # [osx]\n"
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64, osx-arm64]\ndependencies:\n{deps}")
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_duplicate_dependencies_key_is_refused(tmp_path: Path) -> None:
    write_env(tmp_path, "channels: [conda-forge]\ndependencies:\n  - numpy\ndependencies:\n  - python\n")
    _refused(tmp_path, "lock", expected="environment.yml:4: duplicate key `dependencies` (first at line 2)")


@pytest.mark.parametrize("command", [["recipes"], ["dockerfile", "--recipe", "scratch", "-o", "ctx"], ["bake", "--oci", "img"]])
def test_recipe_dir_that_does_not_exist(tmp_path: Path, command: list[str]) -> None:
    _refused(tmp_path, *command, "--recipe-dir", "no-such-dir", expected="--recipe-dir")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000#x/team/app:1", "bad registry host '127.0.0.1:5000#x'"),
        ("reg .example/team/app:1", "bad registry host 'reg .example'"),
        ("reg.example:80:90/team/app:1", "bad registry host 'reg.example:80:90'"),
        ("reg.example/" + "a" * 300 + ":1", "repository name longer than 255 characters"),
    ],
)
def test_image_reference_with_a_bad_registry_or_name(tmp_path: Path, ref: str, expected: str) -> None:
    # Refused before any request: `host#x` or a space would reach another host than the one named, or no URL at all.
    _refused(tmp_path, "inspect", ref, expected=expected)


def test_large_package_threshold_is_not_negative(tmp_path: Path) -> None:
    _refused(tmp_path, "bake", "--oci", "img", "--large-package-mb", "-5", expected="--large-package-mb")
