"""envkit lock --update: only the named packages (and what they strictly need) move; every other
package keeps its locked build, matched by sha256 (builds like `22_openblas` and `4_cp311`)."""

from __future__ import annotations

import re
from pathlib import Path

from conda_envkit.testing.local_channel import PackageSpec, build_channel
from tests.conftest import run_envkit, write_env


def _entries(text: str) -> dict[tuple[str, str], str]:
    """Package entries of a lock file by (name, platform), as text."""
    blocks = re.split(r"\n(?=- name: )", text.split("\npackage:\n", 1)[1])
    out = {}
    for block in blocks:
        name = re.search(r"^- name: (\S+)", block, re.M).group(1)  # type: ignore[union-attr]
        platform = re.search(r"^  platform: (\S+)", block, re.M).group(1)  # type: ignore[union-attr]
        out[(name, platform)] = block.strip()
    return out


def test_update_moves_only_the_named_package_and_its_strict_needs(tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    first = [
        PackageSpec("python", "3.11.9", "4_cp311", subdir="linux-64"),
        PackageSpec("libblas", "3.9.0", "22_openblas", build_number=22, subdir="linux-64"),
        PackageSpec("libfoo", "1.0", "0", subdir="linux-64"),
        PackageSpec("numpy", "1.26.4", "py311_0", subdir="linux-64", depends=("python >=3.11,<3.12", "libblas >=3.9", "libfoo >=1")),
        PackageSpec("pandas", "2.1.0", "py311_0", subdir="linux-64", depends=("numpy >=1.26", "python >=3.11,<3.12")),
    ]
    build_channel(channel, first, subdirs=("linux-64",))
    work = tmp_path / "work"
    write_env(work, f"channels: [{channel}]\ndependencies: [numpy, pandas, libblas]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    before = (work / "conda-lock.yml").read_text()

    # Newer builds of everything appear; numpy 2.0 strictly needs libfoo 2.
    newer = [
        PackageSpec("python", "3.11.10", "5_cp311", subdir="linux-64"),
        PackageSpec("libblas", "3.9.0", "23_openblas", build_number=23, subdir="linux-64"),
        PackageSpec("libfoo", "2.0", "0", subdir="linux-64"),
        PackageSpec("numpy", "2.0.1", "py311_0", subdir="linux-64", depends=("python >=3.11,<3.12", "libblas >=3.9", "libfoo >=2")),
        PackageSpec("pandas", "2.2.0", "py311_0", subdir="linux-64", depends=("numpy >=1.26", "python >=3.11,<3.12")),
    ]
    build_channel(channel, newer, subdirs=("linux-64",))

    result = run_envkit("lock", "-q", "--update", "numpy", cwd=work)
    assert result.returncode == 0, result.output
    after = (work / "conda-lock.yml").read_text()
    old, new = _entries(before), _entries(after)
    changed = {key[0] for key in old if old[key] != new.get(key)}
    assert changed == {"numpy", "libfoo"}
    assert "version: 2.0.1" in new[("numpy", "linux-64")] and "version: '2.0'" in new[("libfoo", "linux-64")]
    assert "build: 22_openblas" in new[("libblas", "linux-64")] and "build: 4_cp311" in new[("python", "linux-64")]
    head = before.split("\npackage:\n")[0]
    assert after.split("\npackage:\n")[0] == head  # metadata unchanged

    # A plain relock moves everything to the newest builds.
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    relocked = _entries((work / "conda-lock.yml").read_text())
    assert "build: 23_openblas" in relocked[("libblas", "linux-64")] and "version: 2.2.0" in relocked[("pandas", "linux-64")]

    unknown = run_envkit("lock", "--update", "tensorflow", cwd=work)
    assert unknown.returncode == 2 and "tensorflow: not in the lock" in unknown.stderr
    assert "did you mean" not in unknown.stderr
    # --update does not add a package: said, with how to add one (a user took it for `conda install`).
    assert "tensorflow: not in the lock, and the spec does not ask for it" in unknown.stderr, unknown.stderr
    how = "to add a package, write it in the spec's dependencies (or its pip: section) first, then `envkit lock --update` it"
    assert how in unknown.stderr
    near = run_envkit("lock", "--update", "panda", cwd=work)  # (a name close to a locked one: suggested)
    assert near.returncode == 2 and "panda: not in the lock" in near.stderr and "hint: did you mean pandas?" in near.stderr, near.stderr


def test_update_keeps_the_packages_that_depend_on_it_and_moves_them_only_when_it_must(tmp_path: Path) -> None:
    # scipy 1.0 caps numpy below 1.5. `--update numpy` moves numpy as far as the locked scipy allows (1.4), as
    # conda's update does; scipy moves only when the spec leaves no other way (numpy >=2 wanted).
    channel = tmp_path / "channel"
    build_channel(
        channel,
        [
            PackageSpec("numpy", "1.0", "0", subdir="linux-64"),
            PackageSpec("scipy", "1.0", "0", subdir="linux-64", depends=("numpy >=1,<1.5",)),
        ],
        subdirs=("linux-64",),
    )
    work = tmp_path / "work"
    write_env(work, f"channels: [{channel}]\ndependencies: [numpy, scipy]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    build_channel(
        channel,
        [
            PackageSpec("numpy", "1.4", "0", subdir="linux-64"),
            PackageSpec("numpy", "2.0", "0", subdir="linux-64"),
            PackageSpec("scipy", "2.0", "0", subdir="linux-64", depends=("numpy >=1.4",)),
        ],
        subdirs=("linux-64",),
    )

    def versions() -> dict[str, str]:
        entries = _entries((work / "conda-lock.yml").read_text())
        return {name: re.search(r"version: '?([^'\n]+)", text).group(1) for (name, _p), text in entries.items()}  # type: ignore[union-attr]

    assert run_envkit("lock", "-q", "--update", "NumPy", cwd=work).returncode == 0  # (a name in any case, as conda takes it)
    assert versions() == {"numpy": "1.4", "scipy": "1.0"}
    write_env(work, f"channels: [{channel}]\ndependencies: ['numpy >=2', scipy]\n")
    moved = run_envkit("lock", "-q", "--update", "numpy", cwd=work)
    assert moved.returncode == 0, moved.output
    assert versions() == {"numpy": "2.0", "scipy": "2.0"}
    assert "warning: linux-64: the update has no solution with every package that does not depend on it kept" in moved.stderr
    assert "so these moved too: scipy 1.0 -> 2.0" in moved.stderr
