"""The `pip:` section: resolved per platform by uv against a local wheel index, locked as
conda-lock pip entries, installed and baked from verified wheels. Never the live PyPI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conda_lock.lockfile import parse_conda_lock_file

from conda_envkit.export.sbom import render_sbom
from tests.conftest import ChannelServer, run_envkit, write_env

PLATFORMS = ("linux-64", "linux-aarch64", "osx-arm64", "win-64")


def _env_file(work: Path, channel: Path, pip_lines: list[str], conda: str = "numpy =1.26") -> Path:
    lines = "".join(f"    - {line}\n" for line in pip_lines)
    return write_env(
        work,
        f"channels:\n  - {channel}\nplatforms: [{', '.join(PLATFORMS)}]\ndependencies:\n  - python =3.11\n  - {conda}\n  - pip:\n{lines}",
    )


def _lock(work: Path, cache: Path, *args: str, env: dict[str, str] | None = None):
    return run_envkit("lock", *args, cwd=work, env={"ENVKIT_CACHE_DIR": str(cache), **(env or {})})


def _pip_entries(lock: Path) -> dict[tuple[str, str], dict]:
    data = yaml.safe_load(lock.read_text())
    return {(p["platform"], p["name"]): p for p in data["package"] if p["manager"] == "pip"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pip_section_locked_per_platform_against_conda_python(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    work = tmp_path / "work"
    _env_file(
        work,
        toy_channel,
        [f"--index-url {pip_index_server.url}/simple", "hello-ml >=0.3", "fastmath  # [not (win or aarch64)]"],
    )
    result = _lock(work, tmp_path / "cache")
    assert result.returncode == 0, result.output
    assert re.search(r"linux-64 +3 packages \+ 3 pip", result.stdout), result.stdout
    lock = work / "conda-lock.yml"
    parsed = parse_conda_lock_file(lock)  # conda-lock's own reader accepts the pip entries
    assert {p.manager for p in parsed.package} == {"conda", "pip"}

    pins = _pip_entries(lock)
    files = pip_index_server.root / "files"
    for platform in PLATFORMS:
        hello = pins[(platform, "hello-ml")]
        assert hello["version"] == "0.3.0"
        assert hello["url"] == f"{pip_index_server.url}/files/hello_ml-0.3.0-py3-none-any.whl"
        assert hello["hash"] == {"sha256": _sha256(files / "hello_ml-0.3.0-py3-none-any.whl")}
        assert pins[(platform, "tiny-tokenizer")]["version"] == "1.1.0"
        # numpy comes from conda (1.26.4); pip must not add PyPI's numpy 2.0.0 on top.
        assert (platform, "numpy") not in pins
    # One platform-specific wheel per platform, chosen by the platform's tags.
    assert pins[("linux-64", "fastmath")]["url"].endswith("fastmath-1.2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert pins[("osx-arm64", "fastmath")]["url"].endswith("fastmath-1.2.0-cp311-cp311-macosx_11_0_arm64.whl")
    assert ("win-64", "fastmath") not in pins and ("linux-aarch64", "fastmath") not in pins
    fast = pins[("osx-arm64", "fastmath")]
    assert fast["hash"]["sha256"] == _sha256(files / fast["url"].rsplit("/", 1)[1])
    # conda-lock's own CLI renders the pip pins the way ours does.
    proc = subprocess.run(
        [sys.executable, "-m", "conda_lock", "render", "--kind", "explicit", "-p", "osx-arm64", "conda-lock.yml"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    theirs = [line for line in (work / "conda-osx-arm64.lock").read_text().splitlines() if line.startswith("# pip ")]
    ours = [line for line in run_envkit("render", "-p", "osx-arm64", cwd=work).stdout.splitlines() if line.startswith("# pip ")]
    assert sorted(theirs) == sorted(ours) and len(ours) == 3
    meta = yaml.safe_load(lock.read_text())["metadata"]["custom_metadata"]
    assert meta["envkit.linux-64.pip-indexes"] == f"{pip_index_server.url}/simple"

    # Same inputs: nothing rewritten. A changed pip line: the lock is stale.
    before = lock.read_text()
    again = _lock(work, tmp_path / "cache")
    assert again.returncode == 0 and "unchanged conda-lock.yml" in again.stdout
    assert lock.read_text() == before
    assert _lock(work, tmp_path / "cache", "--check").returncode == 0
    # The same requirements spelled and ordered otherwise (pip reads them alike): still fresh. They made it stale.
    spec = (work / "environment.yml").read_text()
    swapped = "    - fastmath  # [not (win or aarch64)]\n    - Hello_ML>= 0.3\n"
    respelled = spec.replace("    - hello-ml >=0.3\n    - fastmath  # [not (win or aarch64)]\n", swapped)
    assert respelled != spec
    (work / "environment.yml").write_text(respelled)
    fresh = _lock(work, tmp_path / "cache", "--check")
    assert fresh.returncode == 0 and "inputs changed" not in fresh.output, fresh.output
    # A lock written before that (its pip: lines hashed as written): fresh too, not stale for the new hashing.
    from conda_envkit.lockwrite import pip_input_hash
    from conda_envkit.pip_lock import parse_pip_section
    from conda_envkit.spec import read_env_spec

    (work / "environment.yml").write_text(spec)
    sections = read_env_spec([work / "environment.yml"]).pip
    document = yaml.safe_load(before)
    for platform, lines in sections.items():
        meta = document["metadata"]["custom_metadata"]
        new_hash = pip_input_hash(parse_pip_section(lines))
        assert meta[f"envkit.{platform}.pip-inputs"] == new_hash
        meta[f"envkit.{platform}.pip-inputs"] = pip_input_hash(parse_pip_section(lines), as_written=True)
        assert meta[f"envkit.{platform}.pip-inputs"] != new_hash
    lock.write_text(yaml.safe_dump(document, sort_keys=False))
    legacy = _lock(work, tmp_path / "cache", "--check")
    assert legacy.returncode == 0, legacy.output
    lock.write_text(before)
    text = (work / "environment.yml").read_text().replace("hello-ml >=0.3", "hello-ml ==0.2.0")
    (work / "environment.yml").write_text(text)
    check = _lock(work, tmp_path / "cache", "--check")
    unmet = "'hello-ml ==0.2.0' (environment.yml:9, pip:) is not satisfied by locked hello-ml 0.3.0"
    assert check.returncode == 1 and unmet in check.output, check.output

    # Re-lock and diff: the pip changes are listed as pip changes.
    (work / "old.yml").write_text(before)
    assert _lock(work, tmp_path / "cache", "-q").returncode == 0
    diff = run_envkit("diff", "old.yml", "conda-lock.yml", cwd=work)
    assert "v hello-ml (pip) 0.3.0 -> 0.2.0  downgraded" in diff.stdout
    assert "- tiny-tokenizer (pip) 1.1.0  removed" in diff.stdout


@pytest.mark.parametrize(
    ("pip_line", "platform", "expected"),
    [
        ("needs-numpy3", "linux-64", "note: from conda, fixed for pip: numpy 1.26.4"),
        ("sdist-only-thing", "linux-64", "sdist-only-thing==1.0 has no usable wheels"),
        ("fastmath", "linux-aarch64", "fastmath==1.2.0 has no wheels with a matching platform tag"),
        ("no-such-package", "osx-arm64", "no-such-package was not found in the package registry"),
    ],
)
def test_unresolvable_pip_requirements_say_which_platform_and_line(
    tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer, pip_line: str, platform: str, expected: str
) -> None:
    work = tmp_path / "work"
    _env_file(work, toy_channel, [f"--index-url {pip_index_server.url}/simple", pip_line])
    result = _lock(work, tmp_path / "cache", "-p", platform)
    assert result.returncode == 2, result.output
    assert f"error: {platform}: {pip_line} (environment.yml:9) cannot be resolved for" in result.stderr, result.stderr
    assert expected in result.stderr
    assert "hint:" in result.stderr
    assert not (work / "conda-lock.yml").exists()


def test_a_pip_requirement_without_wheels_on_some_platforms_is_reported_for_all_with_the_selector_that_fits(
    tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer
) -> None:
    # fastmath has wheels for linux-64, osx-arm64 and win-64. Every platform that fails says so in one run (it took
    # a run per platform), naming the requirement's own line, with one hint: the selector that keeps it elsewhere.
    work = tmp_path / "work"
    _env_file(work, toy_channel, [f"--index-url {pip_index_server.url}/simple", "tiny-tokenizer", "fastmath"])
    with_osx_64 = (work / "environment.yml").read_text().replace("platforms: [", "platforms: [osx-64, ", 1)
    (work / "environment.yml").write_text(with_osx_64)
    result = _lock(work, tmp_path / "cache")
    assert result.returncode == 2, result.output
    for platform in ("linux-aarch64", "osx-64"):
        assert f"{platform}: fastmath (environment.yml:10) cannot be resolved for" in result.stderr, result.stderr
    assert result.stderr.count("cannot be resolved for") == 2
    assert "to lock fastmath only where it resolves, add `# [linux64 or arm64 or win]` to its line (environment.yml:10)" in result.stderr
    assert not (work / "conda-lock.yml").exists()


def test_index_credentials_come_from_the_environment_and_never_reach_the_lock(
    tmp_path: Path, toy_channel: Path, auth_pip_index_server: ChannelServer
) -> None:
    work = tmp_path / "work"
    host = auth_pip_index_server.url.removeprefix("http://")
    _env_file(work, toy_channel, ["--index-url http://${PIP_USER}:${PIP_TOKEN}@" + host + "/simple", "hello-ml"])
    secrets = {"PIP_USER": "pipuser", "PIP_TOKEN": "wheel-Pa55", "ENVKIT_CREDENTIAL_HOSTS": f"PIP_USER={host} PIP_TOKEN={host}"}

    missing = _lock(work, tmp_path / "cache", "-p", "linux-64")
    assert missing.returncode == 2 and "needs environment variable(s) PIP_USER, PIP_TOKEN" in missing.stderr

    result = _lock(work, tmp_path / "cache", "-p", "linux-64", env=secrets)
    assert result.returncode == 0, result.output
    text = (work / "conda-lock.yml").read_text()
    assert "wheel-Pa55" not in text and "pipuser" not in text
    assert f"envkit.linux-64.pip-indexes: http://${{PIP_USER}}:${{PIP_TOKEN}}@{host}/simple" in text
    assert _pip_entries(work / "conda-lock.yml")[("linux-64", "hello-ml")]["url"].startswith(f"http://{host}/files/")

    cache = tmp_path / "install-cache"
    without = run_envkit("install", "-p", "linux-64", "--prefix", work / "env", "--cache-dir", cache, cwd=work)
    assert without.returncode == 2 and "needs environment variable(s) PIP_USER, PIP_TOKEN" in without.stderr
    assert not (work / "env").exists()
    wrong = run_envkit(
        "install", "-p", "linux-64", "--prefix", work / "env", "--cache-dir", cache, cwd=work, env={**secrets, "PIP_TOKEN": "nope"}
    )
    assert wrong.returncode == 2 and "HTTP 401 (not authorized)" in wrong.stderr
    ok = run_envkit("install", "-p", "linux-64", "--prefix", work / "env", "--cache-dir", cache, cwd=work, env=secrets)
    assert ok.returncode == 0, ok.output
    assert (work / "env/lib/python3.11/site-packages/hello_ml/__init__.py").is_file()


def test_baked_image_runs_the_pip_console_script_and_verifies(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    work = tmp_path / "work"
    _env_file(work, toy_channel, [f"--index-url {pip_index_server.url}/simple", "hello-ml", "fastmath"])
    assert _lock(work, tmp_path / "cache", "-p", "linux-64").returncode == 0
    bake = run_envkit("bake", "-q", "--oci", "image", cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert bake.returncode == 0, bake.output
    record = json.loads((work / "bake.json").read_text())
    tag = record["tags"][0]
    layered = [p for layer in record["platforms"]["linux-64"]["layers"] for p in layer["packages"]]
    assert {"pip:hello-ml-0.3.0", "pip:tiny-tokenizer-1.1.0", "pip:fastmath-1.2.0"} <= set(layered)
    pip_about = [p for p in record["platforms"]["linux-64"]["packages"] if p.get("manager") == "pip"]
    assert {p["name"] for p in pip_about} == {"hello-ml", "tiny-tokenizer", "fastmath"}
    # The SBOM (validated against CycloneDX 1.6 while rendered) names them as PyPI packages.
    sbom = json.loads(render_sbom(record, "linux-64"))
    purls = {c["purl"] for c in sbom["components"]}
    assert {"pkg:pypi/hello-ml@0.3.0", "pkg:pypi/tiny-tokenizer@1.1.0"} <= purls
    assert any(p.startswith("pkg:conda/numpy@1.26.4") for p in purls)

    # umoci (an independent OCI tool) unpacks the image; the env's files are what pip would install.
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{work / 'image'}:{tag}", str(bundle)], check=True, capture_output=True)
    env = bundle / "rootfs/opt/conda/envs/env"
    script = env / "bin/hello-ml"
    assert script.read_text().splitlines()[0] == "#!/opt/conda/envs/env/bin/python"
    assert os.access(script, os.X_OK)
    site = env / "lib/python3.11/site-packages"
    assert (site / "hello_ml-0.3.0.dist-info/INSTALLER").read_text() == "envkit\n"
    assert "manylinux_2_17_x86_64" in (site / "fastmath.py").read_text()
    # The image's Python is a stand-in; this machine's CPython 3.11 runs the console script from the image.
    run = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); sys.argv = ['hello-ml']; "
         f"exec(compile(open({str(script)!r}).read(), 'hello-ml', 'exec'))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "hello-ml 0.3.0"

    verified = run_envkit("verify", "--image", "oci:image", "-p", "linux-64", cwd=work)
    assert verified.returncode == 0, verified.output
    # The bake record exports with its pip entries (which have no build string) as name==version.
    exported = run_envkit("export", "--record", "bake.json", "--to", "json", cwd=work)
    assert exported.returncode == 0, exported.output
    assert {"hello-ml==0.3.0", "fastmath==1.2.0"} <= set(json.loads(exported.stdout)["packages"])

    # An installed prefix: verify names a modified pip file and a pip package removed by hand.
    cache = tmp_path / "cache"
    assert run_envkit("install", "-p", "linux-64", "--prefix", work / "env", "--cache-dir", cache, cwd=work).returncode == 0
    (work / "env/lib/python3.11/site-packages/tiny_tokenizer.py").write_text("tampered\n")
    (work / "env/conda-meta/envkit/pip/fastmath.json").unlink()
    found = run_envkit("verify", "--prefix", work / "env", "-p", "linux-64", cwd=work)
    assert found.returncode == 1
    assert "modified-file    tiny-tokenizer 1.1.0 (pip): lib/python3.11/site-packages/tiny_tokenizer.py was modified" in found.output
    assert "missing-package  fastmath 1.2.0 (pip): locked but not installed" in found.output

    # A lock whose pip entry is a source distribution (conda-lock can write those) is refused.
    wheel_url = f"{pip_index_server.url}/files/hello_ml-0.3.0-py3-none-any.whl"
    (work / "sdist.yml").write_text(
        (work / "conda-lock.yml").read_text().replace(wheel_url, f"{pip_index_server.url}/files/hello_ml-0.3.0.tar.gz")
    )
    sdist = run_envkit("install", "--lockfile", "sdist.yml", "-p", "linux-64", "--prefix", work / "env2", cwd=work)
    assert sdist.returncode == 2
    assert "linux-64: pip package hello-ml 0.3.0 is locked as a source distribution" in sdist.stderr
    assert "envkit installs wheels only" in sdist.stderr and not (work / "env2").exists()


def test_update_one_pip_package_keeps_the_others(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    from conda_envkit.testing.local_index import DEMO_SDISTS, WheelSpec, build_index, demo_wheels

    work = tmp_path / "work"
    _env_file(work, toy_channel, [f"--index-url {pip_index_server.url}/simple", "hello-ml"])
    assert _lock(work, tmp_path / "cache", "-p", "linux-64").returncode == 0
    before = (work / "conda-lock.yml").read_text()

    # New releases of both pip packages appear on the index.
    newer = [
        WheelSpec("hello-ml", "0.4.0", requires=("tiny-tokenizer>=1.0",), files=(("hello_ml/__init__.py", ""),)),
        WheelSpec("tiny-tokenizer", "1.2.0", files=(("tiny_tokenizer.py", ""),)),
    ]
    build_index(pip_index_server.root, demo_wheels() + newer, DEMO_SDISTS)
    result = _lock(work, tmp_path / "cache-2", "-p", "linux-64", "--update", "hello-ml")
    assert result.returncode == 0, result.output
    pins = _pip_entries(work / "conda-lock.yml")
    assert pins[("linux-64", "hello-ml")]["version"] == "0.4.0"
    assert pins[("linux-64", "tiny-tokenizer")]["version"] == "1.1.0"  # kept, though 1.2.0 exists
    # The conda part is byte-identical.
    conda_part = [line for line in before.split("- name: ") if "manager: conda" in line]
    assert all(part in (work / "conda-lock.yml").read_text() for part in conda_part)
    # A plain re-lock takes the newest of both.
    assert _lock(work, tmp_path / "cache-3", "-p", "linux-64").returncode == 0
    assert _pip_entries(work / "conda-lock.yml")[("linux-64", "tiny-tokenizer")]["version"] == "1.2.0"


def test_update_takes_a_pip_requirement_just_added(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    # As for a conda dependency just added, `--update NAME` solves a new pip requirement in and keeps every other pin
    # (it was refused: "--update fastmath: not in the lock"). Its name as pip spells it alike (PEP 503) works too.
    work = tmp_path / "work"
    index = f"--index-url {pip_index_server.url}/simple"
    _env_file(work, toy_channel, [index, "hello-ml"])
    assert _lock(work, tmp_path / "cache", "-p", "linux-64").returncode == 0
    before = _pip_entries(work / "conda-lock.yml")
    _env_file(work, toy_channel, [index, "hello-ml", "FastMath >=1.0"])
    result = _lock(work, tmp_path / "cache", "-p", "linux-64", "--update", "fastmath")
    assert result.returncode == 0, result.output
    pins = _pip_entries(work / "conda-lock.yml")
    assert pins[("linux-64", "fastmath")]["version"] == "1.2.0"
    assert {k: v for k, v in pins.items() if k[1] != "fastmath"} == before
    assert _lock(work, tmp_path / "cache", "-p", "linux-64", "--check").returncode == 0
    nothing = _lock(work, tmp_path / "cache", "-p", "linux-64", "--update", "fast-maths")
    assert nothing.returncode == 2 and "error: --update fast-maths: not in the lock" in nothing.stderr, nothing.output


def test_check_names_the_pip_requirements_the_lock_does_not_meet(
    tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer
) -> None:
    # A pip line added or changed was reported as "the pip: section (requirements or indexes) changed since locking",
    # with the hint of a full `envkit lock` (which moves every package): now the lines are named, file:line, and the
    # hint is the `--update` that moves them alone.
    work = tmp_path / "work"
    index = f"--index-url {pip_index_server.url}/simple"
    _env_file(work, toy_channel, [index, "hello-ml"])
    assert _lock(work, tmp_path / "cache", "-p", "linux-64").returncode == 0
    _env_file(work, toy_channel, [index, "hello-ml ==0.2.0", "fastmath >=1.0"])
    check = _lock(work, tmp_path / "cache", "-p", "linux-64", "--check")
    assert check.returncode == 1, check.output
    assert "'hello-ml ==0.2.0' (environment.yml:9, pip:) is not satisfied by locked hello-ml 0.3.0" in check.stderr, check.stderr
    assert "'fastmath >=1.0' (environment.yml:10, pip:) is not in the lock" in check.stderr
    assert "changed since locking" not in check.stderr
    assert "hint: run `envkit lock --update hello-ml --update fastmath` to move only what the spec changed" in check.stderr
    # A change no locked pin contradicts (a requirement loosened) is the section's change, relocked by a full lock.
    _env_file(work, toy_channel, [index, "hello-ml >=0.1"])
    loosened = _lock(work, tmp_path / "cache", "-p", "linux-64", "--check")
    assert loosened.returncode == 1, loosened.output
    assert "the pip: section (requirements or indexes) changed since locking" in loosened.stderr
    assert "hint: run `envkit lock` to update the lock" in loosened.stderr
    # ... and beside a conda dependency dropped, `--update` of that one relocks the pip section too.
    write_env(
        work,
        f"channels:\n  - {toy_channel}\nplatforms: [{', '.join(PLATFORMS)}]\ndependencies:\n  - python =3.11\n"
        f"  - pip:\n    - {index}\n    - hello-ml >=0.1\n",
    )
    dropped = _lock(work, tmp_path / "cache", "-p", "linux-64", "--check")
    assert "numpy is locked but no longer required by the spec" in dropped.stderr, dropped.stderr
    assert "hint: run `envkit lock --update libblas --update numpy`" in dropped.stderr, dropped.stderr
    assert _lock(work, tmp_path / "cache", "-p", "linux-64", "--update", "libblas", "--update", "numpy").returncode == 0
    assert _lock(work, tmp_path / "cache", "-p", "linux-64", "--check").returncode == 0


def test_conda_lock_pip_repositories_and_allow_pypi_requests(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    # conda-lock's keys: with PyPI disallowed, the first repository is the only index.
    work = tmp_path / "work"
    write_env(
        work,
        f"channels: [{toy_channel}]\nplatforms: [linux-64]\n"
        f"pip-repositories:\n  - {pip_index_server.url}/simple\nallow-pypi-requests: false\n"
        "dependencies:\n  - python =3.11\n  - pip:\n    - tiny-tokenizer\n",
    )
    result = _lock(work, tmp_path / "cache")
    assert result.returncode == 0, result.output
    assert _pip_entries(work / "conda-lock.yml")[("linux-64", "tiny-tokenizer")]["version"] == "1.1.0"
    assert "/simple/tiny-tokenizer/" in "".join(pip_index_server.requests())
    text = (work / "conda-lock.yml").read_text()
    assert f"envkit.linux-64.pip-indexes: {pip_index_server.url}/simple" in text

    (work / "environment.yml").write_text(
        (work / "environment.yml").read_text().replace("allow-pypi-requests: false", "allow-pypi-requests: maybe")
    )
    bad = _lock(work, tmp_path / "cache")
    assert bad.returncode == 2 and "environment.yml:5: `allow-pypi-requests` must be true or false" in bad.stderr


def test_a_wheel_missing_for_macos_names_the_assumed_osx(tmp_path: Path, toy_channel: Path, pip_index_server: ChannelServer) -> None:
    # A wheel built for a newer macOS than the lock assumes (scikit-learn's macosx_12_0 arm64 wheels) is not taken; the
    # error did not say the assumed __osx was the reason, nor how to change it.
    work = tmp_path / "work"
    _env_file(work, toy_channel, [f"--index-url {pip_index_server.url}/simple", "fastmath"])
    only_osx = (work / "environment.yml").read_text().replace(f"platforms: [{', '.join(PLATFORMS)}]", "platforms: [osx-64]", 1)
    (work / "environment.yml").write_text(only_osx)
    result = _lock(work, tmp_path / "cache")
    assert result.returncode == 2, result.output
    assert "the __osx (macOS) version the lock assumes (macosx_11_0_x86_64)" in result.stderr, result.stderr
    assert "--virtual-package-spec" in result.stderr
