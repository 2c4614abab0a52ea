"""The demo's image runs: examples/ml-demo locked against the demo channel (static busybox
under `hello`), baked with CMD hello, unpacked by umoci and its CMD run under chroot
with the image's own environment; with podman too where podman runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conda_envkit.testing.demo_channel import HELLO_TEXT, NoStaticBusybox, demo_packages, static_busybox_subdir
from conda_envkit.testing.local_channel import build_channel
from conda_envkit.testing.local_index import demo_wheels, write_wheel
from conda_envkit.testing.toy_channel import ALL_PLATFORMS
from tests.conftest import run_envkit

EXAMPLE = Path(__file__).parents[1] / "examples" / "ml-demo"


def _host() -> str:
    """linux-64 on x86_64, linux-aarch64 on arm64: the subdir of the host's static busybox."""
    try:
        return static_busybox_subdir()
    except NoStaticBusybox as exc:
        pytest.fail(f"{exc} (.ci/run installs it)")


def _bake_demo_in(work: Path) -> str:
    """examples/ml-demo copied to `work`, its channel and wheels built as demo.sh builds them, locked and baked; the tag."""
    work.mkdir(parents=True)
    shutil.copy2(EXAMPLE / "environment.yml", work / "environment.yml")
    build_channel(work / "channel", demo_packages(), subdirs=ALL_PLATFORMS)
    for wheel in demo_wheels():
        write_wheel(wheel, work / "wheels")
    cache = {"ENVKIT_CACHE_DIR": str(work / ".cache")}
    locked = run_envkit("lock", "-q", cwd=work, env=cache)
    assert locked.returncode == 0, locked.output
    baked = run_envkit("bake", "-q", "-p", _host(), "--oci", "image", "--cmd", "hello", cwd=work, env=cache)
    assert baked.returncode == 0, baked.output
    return baked.stdout.strip().removeprefix("oci:image:")


@pytest.fixture(scope="module")
def baked_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("demo") / "ml-demo"
    return work, _bake_demo_in(work)


def test_two_checkouts_of_the_demo_bake_the_same_image(baked_demo: tuple[Path, str], tmp_path: Path) -> None:
    work, tag = baked_demo
    elsewhere = tmp_path / "another" / "checkout" / "ml-demo"
    assert _bake_demo_in(elsewhere) == tag
    digests = [json.loads((w / "bake.json").read_text())["image"]["digest"] for w in (work, elsewhere)]
    assert digests[0] == digests[1]
    assert (work / "conda-lock.yml").read_bytes() == (elsewhere / "conda-lock.yml").read_bytes()


def test_the_demo_images_cmd_runs_under_chroot(baked_demo: tuple[Path, str], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chroot needs root (CI and the dev machines run as root)")
    work, tag = baked_demo
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{work / 'image'}:{tag}", str(bundle)], check=True, capture_output=True)
    # umoci's runtime config holds what a runtime would run: the image's Cmd and Env.
    process = json.loads((bundle / "config.json").read_text())["process"]
    assert process["args"] == ["hello"]
    env = dict(item.split("=", 1) for item in process["env"])
    assert env["PATH"].startswith("/opt/conda/envs/env/bin:")
    proc = subprocess.run(["chroot", str(bundle / "rootfs"), *process["args"]], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{HELLO_TEXT}\n"
    # The script's shebang is the relocated in-image busybox, not the host's /bin/sh.
    script = bundle / "rootfs/opt/conda/envs/env/bin/hello"
    assert script.read_text().splitlines()[0] == "#!/opt/conda/envs/env/bin/sh"


def test_the_demo_image_runs_with_podman(baked_demo: tuple[Path, str]) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    work, tag = baked_demo
    proc = subprocess.run(["podman", "run", "--rm", f"oci:{work / 'image'}:{tag}"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "hello" not in proc.stderr:
        pytest.skip(f"podman cannot run containers here: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{HELLO_TEXT}\n"


def test_the_demo_locks_hello_on_busybox_only_where_busybox_is(baked_demo: tuple[Path, str]) -> None:
    import yaml

    work, _tag = baked_demo
    lock = yaml.safe_load((work / "conda-lock.yml").read_text())
    hello = {p["platform"]: p["url"].rsplit("/", 1)[1] for p in lock["package"] if p["name"] == "hello"}
    assert hello[_host()] == "hello-3.0-busybox_0.conda"
    assert hello["win-64"] == "hello-3.0-sh_0.conda"
    assert "busybox" in {p["name"] for p in lock["package"] if p["platform"] == _host()}
