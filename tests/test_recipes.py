"""Recipes: golden Dockerfiles per recipe (base chosen from the lock's CUDA, env vars, labels),
and a build context that buildah (Debian's, `bud --isolation chroot`) builds against the local
registry, with the same environment bytes and labels as the daemonless bake."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conda_envkit.bake import BakeOptions, image_labels, with_recipe
from conda_envkit.dockerfile import dockerfile_text
from conda_envkit.lockfile import read_lockfile
from conda_envkit.lockmodel import cuda_driver_assumption
from conda_envkit.oci.image import BaseImage
from conda_envkit.recipes import RecipeError, list_recipes, load_recipe
from tests.conftest import Registry, run_envkit, write_env

GOLDEN = Path(__file__).parent / "golden"


def test_base_follows_the_locks_cuda() -> None:
    cuda = load_recipe("cuda-training")
    assert cuda.base_for("12.4") == "nvidia/cuda:12.4.1-runtime-ubuntu22.04"
    assert cuda.base_for("12.5") == "nvidia/cuda:12.4.1-runtime-ubuntu22.04"  # never newer than the lock
    assert cuda.base_for("13.0") == "nvidia/cuda:12.8.1-runtime-ubuntu22.04"
    assert cuda.base_for(None) == cuda.base_for("none") == "ubuntu:22.04"
    with pytest.raises(RecipeError, match="no base for CUDA 11.2"):
        cuda.base_for("11.2")
    assert [r.name for r in list_recipes()] == ["cpu-slim", "cuda-training", "scratch"]


def test_cuda_base_follows_the_driver_the_lock_assumes(tmp_path: Path, toy_channel: Path) -> None:
    # A 12.4 driver runs cuda-version 12.6 (minor-version compatibility); a 12.6 base would
    # demand a 12.6 driver (NVIDIA_REQUIRE_CUDA), so the 12.4 base is the one that runs.
    write_env(tmp_path, f"channels: [{toy_channel}]\ndependencies: [gpulib]\n")
    assert run_envkit("lock", "-q", "--cuda", "12.4", cwd=tmp_path).returncode == 0
    lockfile = read_lockfile(tmp_path / "conda-lock.yml")
    assert (lockfile.metadata.custom_metadata or {})["envkit.linux-64.cuda-version"] == "12.6"
    assert load_recipe("cuda-training").base_for(cuda_driver_assumption(lockfile, "linux-64")) == "nvidia/cuda:12.4.1-runtime-ubuntu22.04"


@pytest.fixture(scope="module")
def locks(tmp_path_factory: pytest.TempPathFactory, toy_channel: Path) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("recipe-locks")
    out = {}
    for name, deps, args in (("gpu", "[gpulib, cuda-version=12.4]", ("--cuda", "12.4")), ("cpu", "[numpy]", ())):
        write_env(work, f"channels: [{toy_channel}]\ndependencies: {deps}\n", name=f"{name}.yml")
        assert run_envkit("lock", "-q", "-f", f"{name}.yml", "--lockfile", f"{name}.lock.yml", *args, cwd=work).returncode == 0
        out[name] = work / f"{name}.lock.yml"
    return out


@pytest.mark.parametrize("recipe_name", ["cuda-training", "cpu-slim", "scratch"])
@pytest.mark.parametrize("lock_name", ["gpu", "cpu"])
def test_rendered_dockerfile_matches_golden(locks: dict[str, Path], recipe_name: str, lock_name: str) -> None:
    lockfile = read_lockfile(locks[lock_name])
    recipe = load_recipe(recipe_name)
    options = with_recipe(BakeOptions(name="train"), recipe, reproducible=True)
    base = recipe.base_for(cuda_driver_assumption(lockfile, "linux-64"))
    labels = image_labels(lockfile, "linux-64", options, BaseImage(base, {}))
    text = dockerfile_text(recipe, options, base, "linux-64", labels)
    # Lock hashes depend on where the test channel lives; everything else is golden.
    text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:<hash>", text)
    text = re.sub(r'image.version="[0-9a-f]{12}"', 'image.version="<hash12>"', text)
    text = text.replace(f'"{__import__("conda_envkit").__version__}"', '"<envkit-version>"')
    golden = GOLDEN / f"Dockerfile.{recipe_name}.{lock_name}"
    if os.environ.get("ENVKIT_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def _tree(rootfs: Path, prefix: str) -> dict[str, str]:
    """Every file and symlink under the prefix: sha256 of content, or the link target."""
    out = {}
    base = rootfs / prefix.strip("/")
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() + (" x" if os.access(path, os.X_OK) else "")
    return out


def test_buildah_builds_the_context_like_bake(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    base_work, work = tmp_path / "base", tmp_path / "work"
    write_env(base_work, f"channels: [{image_channel}]\ndependencies: [busybox]\n")
    assert run_envkit("lock", "-q", cwd=base_work).returncode == 0
    base_repo = f"{registry.host}/base/busybox"
    pushed = run_envkit("bake", "-q", "--push", base_repo, "--insecure", "-t", "v1", "--prefix", "/usr/local", cwd=base_work, env=cache)
    assert pushed.returncode == 0, pushed.output
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    common = ("--recipe", "cpu-slim", "--base", f"{base_repo}:v1", "--insecure", "--reproducible")

    baked = run_envkit("bake", "-q", *common, "--oci", "baked", "-t", "t", cwd=work, env=cache)
    common += ("--pin-base-digest",)  # the base-digest label, as bake records it
    assert baked.returncode == 0, baked.output

    storage = tmp_path / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{tmp_path}/buildah-run"\ngraphroot = "{tmp_path}/buildah-root"\n')
    env = {**cache, "CONTAINERS_STORAGE_CONF": str(storage), "BUILDAH_ISOLATION": "chroot"}
    built = run_envkit("dockerfile", *common, "-o", "ctx", "--backend", "buildah", "-t", "localhost/envkit-test:1", cwd=work, env=env)
    assert built.returncode == 0, built.output
    dockerfile = (work / "ctx" / "Dockerfile").read_text()
    base_digest = json.loads((work / "bake.json").read_text())["platforms"]["linux-64"]["base"]["digest"]
    assert f"FROM {base_repo}:v1@{base_digest}\n" in dockerfile and 'ENV PYTHONHASHSEED="0"' in dockerfile
    push = subprocess.run(
        ["buildah", "push", "localhost/envkit-test:1", f"oci:{work / 'built'}:t"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert push.returncode == 0, push.stderr

    trees, labels = [], []
    for layout in ("baked", "built"):
        bundle = tmp_path / f"bundle-{layout}"
        subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{work / layout}:t", str(bundle)], check=True, capture_output=True)
        trees.append(_tree(bundle / "rootfs", "/opt/conda/envs/env"))
        info = subprocess.run(["skopeo", "inspect", f"oci:{work / layout}:t"], capture_output=True, text=True, check=True)
        labels.append(json.loads(info.stdout)["Labels"])
    assert trees[0] == trees[1] and "bin/greet" in trees[0]
    envkit_labels = [{k: v for k, v in ls.items() if k.startswith(("dev.envkit.", "org.opencontainers."))} for ls in labels]
    assert envkit_labels[0] == envkit_labels[1]
    assert envkit_labels[0]["dev.envkit.recipe"] == "cpu-slim"


def test_bake_with_a_recipe_adds_its_files_env_and_entrypoint(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    baked = run_envkit("bake", "-q", "--recipe", "cuda-training", "--base", "scratch", "--oci", "image", "-t", "t", cwd=work, env=cache)
    assert baked.returncode == 0, baked.output
    info = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{work / 'image'}:t"], capture_output=True, check=True).stdout)
    config = info["config"]
    assert config["Entrypoint"] == ["/usr/local/bin/envkit-entrypoint"] and config["Cmd"] == ["python"]
    assert config["WorkingDir"] == "/workspace" and "NVIDIA_VISIBLE_DEVICES=all" in config["Env"]
    assert "PYTHONHASHSEED=0" not in config["Env"]  # reproducibility settings only with --reproducible
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{work / 'image'}:t", str(bundle)], check=True, capture_output=True)
    entrypoint = bundle / "rootfs" / "usr/local/bin/envkit-entrypoint"
    assert entrypoint.read_bytes() == (Path(__file__).parents[1] / "recipes/cuda-training/entrypoint.sh").read_bytes()
    assert os.access(entrypoint, os.X_OK)
    unknown = run_envkit("bake", "--recipe", "no-such", "--oci", "x", cwd=work, env=cache)
    assert unknown.returncode == 2 and "unknown recipe 'no-such'" in unknown.stderr and "cuda-training" in unknown.stderr


def test_user_recipe_directory(tmp_path: Path) -> None:
    mine = tmp_path / "recipes" / "scratch"
    mine.mkdir(parents=True)
    (mine / "recipe.yml").write_text("description: my own scratch\nbase: {cpu: scratch}\nenv: {TEAM: vision}\n")
    listed = run_envkit("recipes", "--recipe-dir", str(tmp_path / "recipes"), "--json", cwd=tmp_path)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["scratch"]["description"] == "my own scratch" and "cuda-training" in rows  # a user recipe hides the built-in one
    (mine / "recipe.yml").write_text("descriptoin: typo\n")
    bad = run_envkit("recipes", "--recipe-dir", str(tmp_path / "recipes"), cwd=tmp_path)
    assert bad.returncode == 2 and "unknown keys ['descriptoin']" in bad.stderr and "recipe.yml" in bad.stderr


def test_a_wheel_install_lists_the_builtin_recipes(tmp_path: Path) -> None:
    """`pip wheel` + an install outside the checkout: the recipes travel as package data."""
    import shutil
    import sys
    import sysconfig
    import zipfile

    root = Path(__file__).parents[1]
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("conda_envkit", "recipes"):
        shutil.copytree(root / name, source / name, symlinks=True, ignore=ignore)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("conda_envkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "conda_envkit/builtin_recipes/cuda-training/recipe.yml" in names
    assert "conda_envkit/builtin_recipes/Dockerfile.j2" in names

    # Installed into a fresh venv (its dependencies borrowed from this one through a .pth file).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.check_output([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = [venv / "bin/python", "-m", "installer", str(wheel)]  # its console script runs the venv's python
    subprocess.run(install, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENVKIT_RECIPES")}
    listed = subprocess.run([venv / "bin/envkit", "recipes", "--json"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["cpu-slim", "cuda-training", "scratch"]
    assert all(Path(r["directory"]).is_relative_to(site) for r in rows), (site, rows)


def test_dockerfile_renders_offline_unless_asked_to_pin(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    # No network: every HTTP(S) request goes to a closed port on this machine.
    offline = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    offline |= {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
    for recipe in ("cpu-slim", "cuda-training"):
        result = run_envkit("dockerfile", "--recipe", recipe, "-q", "-o", f"ctx-{recipe}", cwd=work, env=offline)
        assert result.returncode == 0, result.output
        assert "digest not pinned: --pin-base-digest asks its registry" in result.stdout
        dockerfile = (work / f"ctx-{recipe}" / "Dockerfile").read_text()
        assert re.search(r"^FROM [^@\s]+$", dockerfile, re.M) and "org.opencontainers.image.base.digest" not in dockerfile
    pinned = run_envkit("dockerfile", "--recipe", "cpu-slim", "-q", "-o", "ctx-pinned", "--pin-base-digest", cwd=work, env=offline)
    assert pinned.returncode == 2 and "docker.io" in pinned.stderr
