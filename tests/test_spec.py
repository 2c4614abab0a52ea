"""Reading environment.yml: selectors, merging, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conda_envkit.platforms import Blas
from conda_envkit.spec import SpecError, read_env_spec
from tests.conftest import run_envkit, write_env

SELECTORS = """\
name: demo
channels: [conda-forge]
platforms: [linux-64, linux-aarch64, osx-arm64, win-64]
dependencies:
  - python=3.11
  - numpy >=1.26
  - cudatoolkit  # [linux64]
  - appnope  # [osx]
  - pywin32  # [win]
  - uvloop  # [not win]
  - jemalloc  # [linux and not aarch64]
  - libblas=*=*accelerate  # [osx and arm64]
  - llvm-openmp  # [arm64]
envkit:
  cuda: "12.4"
  blas: {linux-64: mkl, "*": openblas}
  variants:
    cpu: {cuda: none, platforms: [linux-64]}
"""


def names(spec, platform: str) -> list[str]:
    return [d.name for d in spec.dependencies[platform]]


def test_selectors_apply_per_platform(tmp_path: Path) -> None:
    spec = read_env_spec([write_env(tmp_path, SELECTORS)])
    assert spec.platforms == ("linux-64", "linux-aarch64", "osx-arm64", "win-64")
    assert names(spec, "linux-64") == ["python", "numpy", "cudatoolkit", "uvloop", "jemalloc"]
    assert names(spec, "linux-aarch64") == ["python", "numpy", "uvloop"]
    # (`arm64` is osx-arm64 alone, as conda-build and conda-lock have it: linux-aarch64 is `aarch64`)
    assert names(spec, "osx-arm64") == ["python", "numpy", "appnope", "uvloop", "libblas", "llvm-openmp"]
    assert names(spec, "win-64") == ["python", "numpy", "pywin32"]
    # Line numbers survive selector filtering.
    assert spec.dependencies["win-64"][2].source.endswith("environment.yml:9")


def test_a_selector_among_comment_text_is_read_as_conda_lock_reads_it(tmp_path: Path) -> None:
    # `# [osx] progress bars` and `# pretty output [linux]` were ignored (both packages kept everywhere), while
    # conda-lock (conda-build's pattern) keeps tqdm on osx and rich on linux: one file, two environments.
    from conda_lock.src_parser.selectors import filter_platform_selectors

    text = (
        "channels: [conda-forge]\nplatforms: [linux-64, osx-arm64]\ndependencies:\n"
        "  - python\n  - tqdm  # [osx] progress bars\n  - rich  # pretty output [linux]\n  - numpy  # [linux] (kept: parentheses)\n"
    )
    spec = read_env_spec([write_env(tmp_path, text)])
    assert names(spec, "linux-64") == ["python", "rich", "numpy"]
    assert names(spec, "osx-arm64") == ["python", "tqdm", "numpy"]
    for platform in ("linux-64", "osx-arm64"):  # the same lines as conda-lock keeps
        theirs = [line.split("#")[0].strip(" -") for line in filter_platform_selectors(text, platform) if line.startswith("  - ")]
        assert theirs == names(spec, platform), platform
    # A note in brackets that is no selector is an error that says why, not a line kept or dropped in silence.
    write_env(tmp_path, "channels: [conda-forge]\ndependencies:\n  - numpy  # pinned [see issue 12]\n")
    with pytest.raises(SpecError, match="environment.yml:3: cannot parse selector") as refused:
        read_env_spec([tmp_path / "environment.yml"])
    assert "a comment's last [...] is read as a selector" in (refused.value.hint or "")


PIP_ON_LINUX = """channels: [conda-forge]
platforms: [linux-64, win-64]
dependencies:
  - python=3.11  # [win]
  - pip
  - pip:  # [linux]
      - tqdm
      # a comment in the section
      - rich
  - numpy
"""


def test_a_selector_on_a_section_drops_the_lines_under_it(tmp_path: Path) -> None:
    # `- pip:  # [linux]` dropped that line only: its entries were read as part of the line before (`pip\n- tqdm`, a
    # build string, or conda packages of their own) on the other platforms.
    spec = read_env_spec([write_env(tmp_path, PIP_ON_LINUX)])
    assert names(spec, "win-64") == ["python", "pip", "numpy"] and not spec.pip.get("win-64")
    assert names(spec, "linux-64") == ["pip", "numpy"]
    assert [r.line for r in spec.pip["linux-64"]] == ["tqdm", "rich"]
    assert spec.dependencies["win-64"][2].source.endswith("environment.yml:10")  # line numbers kept


def test_selectors_that_drop_every_dependency_name_the_platform(tmp_path: Path) -> None:
    text = "channels: [conda-forge]\nplatforms: [linux-64, win-64]\ndependencies:\n  - python  # [linux]\n  - numpy  # [linux]\n"
    with pytest.raises(SpecError) as refused:
        read_env_spec([write_env(tmp_path, text)])
    assert refused.value.message.endswith("environment.yml: no dependencies for win-64")  # (it said "`dependencies` must be a list")
    assert "check the selectors" in refused.value.hint


def test_envkit_keys_and_variants(tmp_path: Path) -> None:
    spec = read_env_spec([write_env(tmp_path, SELECTORS)])
    assert spec.cuda == "12.4"
    assert dict(spec.blas) == {"linux-64": Blas.MKL, "*": Blas.OPENBLAS}
    (cpu,) = spec.variants
    assert cpu.name == "cpu" and cpu.cuda is None and cpu.platforms == ("linux-64",)


def test_platform_flag_overrides_file(tmp_path: Path) -> None:
    spec = read_env_spec([write_env(tmp_path, SELECTORS)], ["osx-64"])
    assert spec.platforms == ("osx-64",)
    assert names(spec, "osx-64") == ["python", "numpy", "appnope", "uvloop"]


def test_platforms_with_the_same_lines_share_one_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import conda_envkit.spec as spec_module

    parsed: list[str] = []
    real = spec_module.MatchSpec

    def counting(text: str, strict: bool = False) -> object:
        parsed.append(text)
        return real(text, strict=strict)

    monkeypatch.setattr(spec_module, "MatchSpec", counting)
    text = "channels: [conda-forge]\nplatforms: [linux-64, linux-aarch64, osx-arm64]\ndependencies:\n  - numpy\n  - appnope  # [osx]\n"
    spec = read_env_spec([write_env(tmp_path, text)])
    assert names(spec, "linux-64") == names(spec, "linux-aarch64") == ["numpy"]
    assert names(spec, "osx-arm64") == ["numpy", "appnope"]
    # The two linux platforms keep the same lines: parsed once for both, once for osx.
    assert sorted(parsed) == ["appnope", "numpy", "numpy"]
    parsed.clear()
    read_env_spec([write_env(tmp_path, text)], ["osx-arm64", "linux-64"])
    assert sorted(parsed) == ["appnope", "numpy", "numpy"]  # -p: the file's own platforms are not parsed too


def test_default_platform_is_linux_64(tmp_path: Path) -> None:
    spec = read_env_spec([write_env(tmp_path, "channels: [conda-forge]\ndependencies: [numpy]\n")])
    assert spec.platforms == ("linux-64",)


def test_files_merge_like_conda_lock(tmp_path: Path) -> None:
    base = write_env(tmp_path, "channels: [conda-forge]\ndependencies:\n  - numpy >=1.20\n  - pandas\n", "base.yml")
    extra = write_env(tmp_path, "channels: [pytorch, conda-forge]\ndependencies:\n  - numpy >=2\n  - pytorch\n", "extra.yml")
    spec = read_env_spec([base, extra])
    assert spec.channels == ("pytorch", "conda-forge")
    assert [d.spec for d in spec.dependencies["linux-64"]] == ["numpy >=2", "pandas", "pytorch"]


def test_conflicting_channel_order_is_an_error(tmp_path: Path) -> None:
    a = write_env(tmp_path, "channels: [a, b]\ndependencies: [x]\n", "a.yml")
    b = write_env(tmp_path, "channels: [b, a]\ndependencies: [y]\n", "b.yml")
    with pytest.raises(SpecError, match="conflict"):
        read_env_spec([a, b])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("channels: [conda-forge]\ndependencies:\n  - numpy\n  - pandas\n bad: [\n", "environment.yml:5: invalid YAML"),
        # Noticed only at the end: the last line is named, not a line past it.
        ("channels: [conda-forge]\ndependencies:\n  - numpy\n-pandas\n", "environment.yml:4: invalid YAML"),
        # A tab in the indentation is named as such.
        ("channels: [conda-forge]\ndependencies:\n\t- numpy\n", "YAML does not allow tabs for indentation: indent that line with spaces"),
        ("channels: [conda-forge]\ndependencies:\n  - numpy\n  - 'numpy >=>1'\n", "environment.yml:4: invalid dependency"),
        ("channels: [conda-forge]\ndependencies:\n  - python=3.11\n   - numpy\n", "environment.yml:3: dependency 'python=3.11 - numpy'"),
        ("channels: [conda-forge]\ndependencies:\n  - numpy  # [py311]\n", "environment.yml:3: unknown selector 'py311'"),
        ("channels: [conda-forge]\ndependencies: []\n", "no dependencies for linux-64"),
        ("channels: [conda-forge]\nplatforms: [linux-32]\ndependencies: [numpy]\n", "environment.yml:2: unknown platform 'linux-32'"),
        ("channels: [conda-forge]\ndependency: [numpy]\n", "environment.yml:2: unknown key `dependency`"),
        ("channels: [conda-forge]\ndependencies: [numpy]\nenvkit:\n  cudaa: '12.4'\n", "environment.yml:4: unknown key `envkit.cudaa`"),
        ("dependencies: [numpy]\n", "no channels listed"),
        ("channels: [conda-forge]\ndependencies: [numpy]\nenvkit: {blas: fastblas}\n", "unknown BLAS 'fastblas'"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    write_env(tmp_path, text)
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "hint:" in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("-e ./src", "environment.yml:5: `-e ./src` is an editable install, which a lock cannot pin"),
        ("./wheels/thing.whl", "environment.yml:5: `./wheels/thing.whl` is a local path or URL, which a lock cannot pin"),
        ("mylib @ git+https://example.com/mylib.git", "is a VCS URL; envkit locks packages from indexes only"),
        ("-r requirements.txt", "envkit does not follow requirement files"),
        ("--trusted-host example.com", "unsupported pip option '--trusted-host'"),
        ("requests>=>2", "environment.yml:5: invalid pip requirement 'requests>=>2'"),
    ],
)
def test_unlockable_pip_lines_are_named_before_any_solve(tmp_path: Path, line: str, expected: str) -> None:
    # conda-forge is unreachable here: the line must be refused before any channel is read.
    write_env(tmp_path, f"channels: [conda-forge]\ndependencies:\n  - python\n  - pip:\n    - {line}\n")
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert expected in result.stderr
    assert "hint:" in result.stderr
    assert not (tmp_path / "conda-lock.yml").exists()


def test_missing_file(tmp_path: Path) -> None:
    result = run_envkit("lock", "-f", "nope.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yml: file not found" in result.stderr
    assert "hint: pass an existing environment file" in result.stderr


def test_missing_environment_yml_points_at_environment_yaml(tmp_path: Path) -> None:
    # `envkit lock` in a directory holding environment.yaml said "environment.yml: file not found" and nothing more.
    (tmp_path / "environment.yaml").write_text("channels: []\ndependencies: [python]\n")
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2
    assert "environment.yml: file not found" in result.stderr
    assert "hint: environment.yaml is there: pass that file instead (-f for an environment file), or rename it" in result.stderr


def test_an_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    write_env(tmp_path, "channels: [conda-forge]\ndependencie: [numpy]\n")
    assert "hint: did you mean `dependencies`? known keys:" in run_envkit("lock", cwd=tmp_path).stderr
    write_env(tmp_path, "channels: [conda-forge]\ndependencies: [numpy]\nenvkit: {cudaa: '12.4'}\n")
    assert "hint: did you mean `cuda`?" in run_envkit("lock", cwd=tmp_path).stderr


VARIANT_DEPENDENCIES = """\
channels: [conda-forge]
platforms: [linux-64, osx-arm64]
dependencies:
  - python=3.11
  - pytorch=2.3
  - numpy
envkit:
  cuda: "12.4"
  variants:
    cpu:
      cuda: none
      dependencies:
        - pytorch=2.3.*=*cpu*
        - cpuonly  # [linux]
    gpu: {cuda: "12.6"}
"""


def test_a_variants_dependencies_replace_the_shared_lines_package_by_package(tmp_path: Path) -> None:
    # A variant accepted only cuda, blas and platforms: a CPU variant beside a CUDA default could not pin CPU builds.
    spec = read_env_spec([write_env(tmp_path, VARIANT_DEPENDENCIES)])
    cpu, gpu = spec.variants
    linux = spec.dependencies_for("linux-64", cpu)
    assert [d.name for d in linux] == ["python", "pytorch", "numpy", "cpuonly"]  # replaced where it stood, then added
    assert linux[1].spec == "pytorch=2.3.*=*cpu*" and linux[1].source.endswith("environment.yml:13")
    assert linux[3].source.endswith("environment.yml:14")
    # The selector applies per platform, as at the top level.
    assert [d.spec for d in spec.dependencies_for("osx-arm64", cpu)] == ["python=3.11", "pytorch=2.3.*=*cpu*", "numpy"]
    # The shared list itself, the default's and a variant's without dependencies, is untouched.
    assert [d.spec for d in spec.dependencies["linux-64"]] == ["python=3.11", "pytorch=2.3", "numpy"]
    assert spec.dependencies_for("linux-64", gpu) is spec.dependencies["linux-64"]
    assert spec.dependencies_for("linux-64") is spec.dependencies["linux-64"]


def test_a_variants_line_beats_every_files_shared_line(tmp_path: Path) -> None:
    base = write_env(tmp_path, VARIANT_DEPENDENCIES)
    override = write_env(tmp_path, "channels: [conda-forge]\ndependencies:\n  - pytorch=2.4\n", "override.yml")
    spec = read_env_spec([base, override])
    cpu = spec.variants[0]
    assert [d.spec for d in spec.dependencies["linux-64"]][1] == "pytorch=2.4"  # the later file, for the default
    assert [d.spec for d in spec.dependencies_for("linux-64", cpu)][1] == "pytorch=2.3.*=*cpu*"  # the variant's own


def test_selectors_that_drop_every_line_of_a_variant_leave_it_the_shared_list(tmp_path: Path) -> None:
    text = VARIANT_DEPENDENCIES.replace("        - pytorch=2.3.*=*cpu*\n", "").replace("cpuonly  # [linux]", "cpuonly  # [win]")
    spec = read_env_spec([write_env(tmp_path, text)])
    cpu = spec.variants[0]
    assert cpu.dependencies == {"linux-64": (), "osx-arm64": ()}
    assert spec.dependencies_for("linux-64", cpu) is spec.dependencies["linux-64"]
    # A selector on the `dependencies:` line drops the whole list on the other platforms.
    text = VARIANT_DEPENDENCIES.replace("      dependencies:\n", "      dependencies:  # [osx]\n")
    spec = read_env_spec([write_env(tmp_path, text)])
    assert [d.name for d in spec.dependencies_for("linux-64", spec.variants[0])] == ["python", "pytorch", "numpy"]
    assert [d.spec for d in spec.dependencies_for("osx-arm64", spec.variants[0])][1] == "pytorch=2.3.*=*cpu*"


@pytest.mark.parametrize(
    ("lines", "expected", "hint"),
    [
        ("      dependencies: pytorch=*=*cpu*\n", "environment.yml:12: `envkit.variants.cpu.dependencies` must be a list", "`- package`"),
        ("      dependencies: {pytorch: cpu}\n", "environment.yml:12: `envkit.variants.cpu.dependencies` must be a list", "`- package`"),
        (
            "      dependencies:\n        - numpy\n        - pytorch=2.3=*cpu*[[[\n",
            "environment.yml:14: invalid dependency 'pytorch=2.3=*cpu*[[['",
            "write a conda match spec",
        ),
        (
            "      dependencies:\n        - pytorch=2.3.*=*cpu*\n        - pip:\n            - torch==2.3.1\n",
            "environment.yml:14: `pip:` in `envkit.variants.cpu.dependencies`: a variant's dependencies are conda specs only",
            "write pip requirements in the `- pip:` section of the top-level `dependencies:`",
        ),
        (
            "      dependencies:\n        - extras:\n            - thing\n",
            "environment.yml:13: `extras:` in `envkit.variants.cpu.dependencies`: a variant's dependencies are conda specs only",
            "write conda specs as `- package` lines",
        ),
        (
            "      dependencies:\n        - pytorch=*=*cpu*\n        - pytorch >=2\n",
            "environment.yml:14: `pytorch >=2` names pytorch again (first at ",
            "write one line per package",
        ),
        ("      dependencies:\n        - cpuonly  # [cuda]\n", "environment.yml:13: unknown selector 'cuda'", "platform selectors only"),
        (
            "      dependencies:\n        - [cpuonly]\n",
            "environment.yml:13: unexpected entry in envkit.variants.cpu.dependencies",
            "one `- package`",
        ),
    ],
)
def test_a_variants_bad_dependencies_are_refused_with_their_line(tmp_path: Path, lines: str, expected: str, hint: str) -> None:
    text = "channels: [conda-forge]\nplatforms: [linux-64, osx-arm64]\ndependencies:\n  - python\n  - pytorch\n"
    text += "envkit:\n  cuda: '12.4'\n  variants:\n    cpu:\n      cuda: none\n      platforms: [linux-64]\n" + lines
    _assert_refused(tmp_path, text, expected, hint)


def _assert_refused(tmp_path: Path, text: str, expected: str, hint: str) -> None:
    """The spec `text` is refused with `expected` in its message and `hint` in its hint; `envkit lock` says the same,
    exits 2 and writes nothing (conda-forge is not reachable here: no solve ran)."""
    path = write_env(tmp_path, text)
    with pytest.raises(SpecError) as refused:
        read_env_spec([path])
    assert expected in refused.value.message, refused.value.message
    assert hint in (refused.value.hint or ""), refused.value.hint
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr, result.output
    assert not list(tmp_path.glob("conda-lock*.yml"))


RESERVED = "variant name 'default' is reserved: it names the default variant"


@pytest.mark.parametrize(
    ("variant", "expected", "hint"),
    [
        # `default` is what the default lock records (`envkit.variant: default`) and what `--variant default` selects: a
        # variant of that name was locked to conda-lock.default.yml, which then read as a default lock (`--lockfile
        # conda-lock.default.yml` checked it against the spec's own keys and looked for conda-lock.default.default.yml).
        ("    default:\n      cuda: none\n", f"environment.yml:9: {RESERVED}", "give this variant another name"),
        ("    default: {cuda: none}\n", f"environment.yml:9: {RESERVED}", "`--variant default`"),
        # The name's own line, not the line of its first key (that was said as line 10).
        ("    Big:\n      cuda: none\n", "environment.yml:9: invalid variant name 'Big'", "lower-case letters"),
    ],
)
def test_a_variant_named_default_is_refused_with_its_line(tmp_path: Path, variant: str, expected: str, hint: str) -> None:
    text = "channels: [conda-forge]\nplatforms: [linux-64]\ndependencies:\n  - python\n"
    text += "envkit:\n  cuda: '12.4'\n  variants:\n    cpu: {cuda: none}\n" + variant
    _assert_refused(tmp_path, text, expected, hint)


def test_the_reserved_variant_name_is_the_one_the_default_lock_records(tmp_path: Path) -> None:
    from conda_envkit.lockmodel import DEFAULT_VARIANT
    from conda_envkit.spec import DEFAULT_VARIANT_NAME

    assert DEFAULT_VARIANT_NAME == DEFAULT_VARIANT
    # Only that name collides: a variant named like a platform locks to conda-lock.linux-64.yml, which no other file
    # envkit writes is named (render writes where -o says; temporary files begin with a dot).
    text = "channels: [conda-forge]\nplatforms: [linux-64]\ndependencies:\n  - python\nenvkit:\n  variants:\n    linux-64: {cuda: none}\n"
    assert [v.name for v in read_env_spec([write_env(tmp_path, text)]).variants] == ["linux-64"]
