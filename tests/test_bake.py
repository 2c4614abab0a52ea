"""envkit bake and envkit install against a real local channel, checked by independent tools:
skopeo (inspect), umoci (unpack), chroot (run a binary from the image) and a real registry."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Registry, run_envkit, write_env


def _lock(workdir: Path, channel: Path, deps: list[str], platforms: tuple[str, ...] = ("linux-64",)) -> Path:
    write_env(workdir, f"channels: [{channel}]\ndependencies: [{', '.join(deps)}]\n")
    args = [a for p in platforms for a in ("-p", p)]
    result = run_envkit("lock", "-q", *args, cwd=workdir)
    assert result.returncode == 0, result.output
    return workdir / "conda-lock.yml"


def _bake(workdir: Path, cache: Path, *args: str, ok: bool = True) -> tuple[dict, str]:
    result = run_envkit("bake", "-q", "--large-package-mb", "1", *args, cwd=workdir, env={"ENVKIT_CACHE_DIR": str(cache)})
    if ok:
        assert result.returncode == 0, result.output
        record_path = workdir / "bake.json"
        return json.loads(record_path.read_text()), result.stdout
    return {}, result.output


def _skopeo(*args: str) -> dict:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _unpack_and_run(layout: Path, tag: str, tmp: Path, program: str) -> tuple[Path, str]:
    bundle = tmp / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    proc = subprocess.run(["chroot", str(rootfs), program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return rootfs, proc.stdout


def test_bake_layout_runs_in_chroot_and_skopeo_agrees(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    record, stdout = _bake(work, tmp_path / "cache", "--oci", "image", "--cmd", "greet", "--env", "TRAINING=1")
    tag = record["tags"][0]
    assert tag == record["lock_hash"].split(":")[1][:12] + "-linux-64"
    assert stdout.strip() == f"oci:image:{tag}"

    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{work / 'image'}:{tag}"], capture_output=True, check=True).stdout
    import hashlib

    assert "sha256:" + hashlib.sha256(raw).hexdigest() == record["image"]["digest"]
    info = _skopeo("inspect", f"oci:{work / 'image'}:{tag}")
    assert info["Architecture"] == "amd64"
    assert info["Labels"]["dev.envkit.lock-hash"] == record["lock_hash"]
    assert info["Labels"]["dev.envkit.platform"] == "linux-64"
    assert info["Created"] == "1970-01-01T00:00:00Z"
    assert "TRAINING=1" in info["Env"] and "CONDA_PREFIX=/opt/conda/envs/env" in info["Env"]
    assert info["Env"][0].startswith("PATH=/opt/conda/envs/env/bin:") or any(
        e.startswith("PATH=/opt/conda/envs/env/bin:") for e in info["Env"]
    )

    rootfs, out = _unpack_and_run(work / "image", tag, tmp_path, "/opt/conda/envs/env/bin/greet")
    assert out.splitlines() == ["hello from the image", "prefix is /opt/conda/envs/env"]
    env = rootfs / "opt/conda/envs/env"
    assert (env / "conda-meta/envkit/conda-lock.yml").read_text() == (work / "conda-lock.yml").read_text()
    meta = json.loads(next((env / "conda-meta").glob("greet-*.json")).read_text())
    assert meta["url"].startswith(image_channel.as_uri()) and "extracted_package_dir" not in meta
    # Big packages have layers of their own; every layer is a known size and type.
    layers = record["platforms"]["linux-64"]["layers"]
    assert ["bigmodel-1.0-0"] in [layer["packages"] for layer in layers]
    assert ["busybox-1.35.0-h0_0"] in [layer["packages"] for layer in layers]
    assert len(info["Layers"]) == len(layers)


def test_same_lock_same_digest_from_other_dirs_and_caches(tmp_path: Path, image_channel: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b" / "nested"
    _lock(first, image_channel, ["greet=1.0", "bigmodel=1.0"])
    second.mkdir(parents=True)
    shutil.copy(first / "conda-lock.yml", second / "conda-lock.yml")
    one, _ = _bake(first, tmp_path / "cache-1", "--oci", "image", "--docker-archive", "image.tar")
    warm, _ = _bake(first, tmp_path / "cache-1", "--oci", "image2")
    two, _ = _bake(second, tmp_path / "cache-2", "--oci", "image")
    assert one["image"]["digest"] == two["image"]["digest"] == warm["image"]["digest"]
    assert (first / "image" / "index.json").read_bytes() == (second / "image" / "index.json").read_bytes()
    # The docker-archive is read by skopeo and names the same image.
    info = _skopeo("inspect", f"docker-archive:{first / 'image.tar'}")
    assert info["Labels"]["dev.envkit.lock-hash"] == one["lock_hash"]
    assert len(info["Layers"]) == len(one["platforms"]["linux-64"]["layers"])


def test_one_changed_package_changes_only_its_layer(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0", "smalldata"])
    before, _ = _bake(work, tmp_path / "cache", "--oci", "image")
    _lock(work, image_channel, ["greet=1.0", "bigmodel=2.0", "smalldata"])
    after, _ = _bake(work, tmp_path / "cache", "--oci", "image")

    def by_packages(record: dict) -> dict[str, str]:
        return {",".join(layer["packages"]) or "metadata": layer["digest"] for layer in record["platforms"]["linux-64"]["layers"]}

    old, new = by_packages(before), by_packages(after)
    assert old.pop("bigmodel-1.0-0") != new.pop("bigmodel-2.0-0")
    assert old.pop("metadata") != new.pop("metadata")  # conda-meta history and the lock copy
    assert old == new  # busybox and the small-package group: same bytes, same digests
    assert before["image"]["digest"] != after["image"]["digest"]


def test_a_lock_stale_against_its_spec_is_baked_with_a_warning_naming_the_update(tmp_path: Path, image_channel: Path) -> None:
    work, cache = tmp_path / "work", {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    _lock(work, image_channel, ["greet=1.0", "smalldata"])
    fresh = run_envkit("bake", "-q", "--oci", "image", cwd=work, env=cache)
    assert fresh.returncode == 0 and "stale" not in fresh.stderr, fresh.output
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0, smalldata, bigmodel]\n")
    for quiet in ((), ("-q",)):
        stale = run_envkit("bake", *quiet, "--oci", "image", cwd=work, env=cache)
        assert stale.returncode == 0, stale.output
        assert stale.stdout == fresh.stdout  # the image of the lock, as it was
        assert stale.stderr.count("conda-lock.yml is stale against environment.yml") == 1, stale.stderr
        assert "bigmodel" in stale.stderr and "`envkit lock --update bigmodel`" in stale.stderr
    # Many names: the plain re-lock (a command line of them all may be too long to run).
    many = ", ".join(f"extra{i}" for i in range(25))
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0, smalldata, {many}]\n")
    crowded = run_envkit("bake", "-q", "--oci", "image", cwd=work, env=cache)
    assert crowded.returncode == 0 and "`envkit lock` brings it up to date" in crowded.stderr, crowded.output
    assert "--update" not in crowded.stderr and "(+24 more)" in crowded.stderr
    # A spec that no longer names the baked platform: said as such (`envkit lock` would drop it, not bring it up to date).
    _lock(work, image_channel, ["greet=1.0", "smalldata"], platforms=("linux-64", "linux-aarch64"))
    write_env(work, f"channels: [{image_channel}]\nplatforms: [linux-aarch64]\ndependencies: [greet=1.0, smalldata]\n")
    dropped = run_envkit("bake", "-q", "--oci", "image", "-p", "linux-64", cwd=work, env=cache)
    assert dropped.returncode == 0, dropped.output
    assert "environment.yml no longer names linux-64, baked from the lock as it is (`envkit lock` would drop it)" in dropped.stderr
    assert "stale" not in dropped.stderr
    # A spec that does not read is not the bake's error: it says the lock was not checked.
    (work / "environment.yml").write_text("dependencies: [\n")
    broken = run_envkit("bake", "-q", "--oci", "image", cwd=work, env=cache)
    assert broken.returncode == 0 and "not checked against environment.yml, which does not read" in broken.stderr, broken.output


def test_a_variant_lock_is_baked_checked_as_its_variant_and_one_of_a_removed_variant_is_stale(tmp_path: Path, image_channel: Path) -> None:
    work, cache = tmp_path / "work", {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    spec = f"channels: [{image_channel}]\ndependencies: [greet=1.0]\nenvkit:\n  variants:\n    slim: {{cuda: none}}\n"
    write_env(work, spec)
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    fresh = run_envkit("bake", "-q", "--oci", "image", "--lockfile", "conda-lock.slim.yml", cwd=work, env=cache)
    assert fresh.returncode == 0 and "warning" not in fresh.stderr, fresh.output
    write_env(work, spec.split("envkit:")[0])  # the variant is dropped: its lock is what no spec makes any more
    stale = run_envkit("bake", "-q", "--oci", "image", "--lockfile", "conda-lock.slim.yml", cwd=work, env=cache)
    assert stale.returncode == 0 and stale.stdout == fresh.stdout, stale.output
    assert (
        "conda-lock.slim.yml: variant slim is no longer in environment.yml, so no spec makes this lock any more "
        "(`envkit lock --check` calls it stale): bake from a lock of the spec's variants, and delete conda-lock.slim.yml"
    ) in stale.stderr, stale.stderr


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_a_locks_sources_outside_its_directory_are_not_read(tmp_path: Path, image_channel: Path, where: str) -> None:
    """A lock from a pull request names the spec it was made from: only a file in the lock's directory is read."""
    work, outside = tmp_path / "repo" / "work", tmp_path / "outside"
    _lock(work, image_channel, ["greet=1.0"])
    # A spec elsewhere the lock does not fit: read, it would give a warning.
    spec = write_env(outside, f"channels: [{image_channel}]\ndependencies: [greet=1.0, bigmodel]\n")
    source = {"parent": "../../outside/environment.yml", "absolute": str(spec), "symlink": "environment.yml"}[where]
    if where == "symlink":
        (work / "environment.yml").unlink()
        (work / "environment.yml").symlink_to(spec)
    lock = work / "conda-lock.yml"
    text = lock.read_text()
    assert "  sources:\n  - environment.yml\n" in text
    lock.write_text(text.replace("  sources:\n  - environment.yml\n", f"  sources:\n  - {json.dumps(source)}\n"))
    result = run_envkit("bake", "-q", "--oci", "image", cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.output
    assert "stale" not in result.stderr and "bigmodel" not in result.stderr, result.stderr
    # ... and the bake says that it was not checked, and why (it said nothing).
    shown = source if where != "absolute" else str(spec)
    said = f"not checked against the spec it was made from: {shown} is outside the lock's directory"
    assert said in result.stderr and "`envkit lock --check -f FILE` checks it" in result.stderr, result.stderr


def test_push_multi_arch_then_second_push_uploads_nothing(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0", "bigmodel=1.0"], ("linux-64", "linux-aarch64"))
    repo = f"{registry.host}/team/train"
    args = ("-p", "linux-64", "-p", "linux-aarch64", "--push", repo, "--insecure", "-t", "latest")
    first, stdout = _bake(work, tmp_path / "cache", *args)
    digest = first["image"]["digest"]
    assert stdout.splitlines()[0] == f"{repo}@{digest}"
    assert first["push"]["uploaded_blobs"] > 0

    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{repo}:latest"], capture_output=True, check=True)
    index = json.loads(raw.stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"amd64", "arm64"}
    import hashlib

    assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == digest
    arm = _skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64", f"docker://{repo}:{first['tags'][0]}")
    assert arm["Labels"]["dev.envkit.platform"] == "linux-aarch64"

    second, _ = _bake(work, tmp_path / "cache", *args)
    assert second["image"]["digest"] == digest
    assert second["push"] == {
        "uploaded_blobs": 0,
        "skipped_blobs": first["push"]["uploaded_blobs"],
        "mounted_blobs": 0,
        "bytes_uploaded": 0,
    }


@pytest.mark.parametrize("given", ["-", "/dev/stdin"])
def test_a_lock_piped_in_bakes_the_image_of_the_same_lock_in_a_file(tmp_path: Path, image_channel: Path, given: str) -> None:
    """The lock is read once: its copy in the image is what was piped in (it was read again: a traceback for `-`, an
    empty copy and another digest for /dev/stdin)."""
    import sys

    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    from_file, _ = _bake(work, tmp_path / "cache", "--oci", "image")
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "conda_envkit", "bake", "-q", "--large-package-mb", "1", "--lockfile", given, "--oci", "piped"]
    lock = (work / "conda-lock.yml").read_bytes()
    proc = subprocess.run(command, input=lock, cwd=work, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    piped = json.loads((work / "bake.json").read_text())
    assert piped["image"]["digest"] == from_file["image"]["digest"] and piped["lockfile"] == given


def test_a_push_that_moves_the_lock_hash_tag_to_another_image_says_so(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    repo = f"{registry.host}/team/train"
    first, _ = _bake(work, tmp_path / "cache", "--push", repo, "--insecure")
    again, _ = _bake(work, tmp_path / "cache", "--push", repo, "--insecure")
    assert again["image"]["digest"] == first["image"]["digest"]  # the same image: nothing moved, nothing said
    other = run_envkit(
        "bake", "-q", "--push", repo, "--insecure", "--cmd", "greet", cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert other.returncode == 0, other.output
    moved = json.loads((work / "bake.json").read_text())
    tag = first["tags"][0]
    assert moved["tags"][0] == tag and moved["image"]["digest"] != first["image"]["digest"]
    expected = (
        f"warning: {repo}:{tag} named {first['image']['digest']}, another image of this lock; it now names {moved['image']['digest']}"
    )
    assert expected in other.stderr, other.stderr
    assert _skopeo("inspect", "--tls-verify=false", f"docker://{repo}:{tag}")["Digest"] == moved["image"]["digest"]


def test_base_from_registry_is_layered_under_the_env_and_mounted(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    base_work, work = tmp_path / "base", tmp_path / "work"
    _lock(base_work, image_channel, ["busybox"])
    base, _ = _bake(
        base_work, tmp_path / "cache", "--push", f"{registry.host}/base/busybox", "--insecure", "-t", "v1", "--prefix", "/usr/local"
    )
    _lock(work, image_channel, ["greet=1.0"])
    record, _ = _bake(
        work,
        tmp_path / "cache",
        "--base",
        f"{registry.host}/base/busybox:v1",
        "--push",
        f"{registry.host}/team/app",
        "--insecure",
        "--oci",
        "image",
    )
    platform = record["platforms"]["linux-64"]
    assert platform["base"]["digest"] == base["image"]["digest"]
    assert record["push"]["mounted_blobs"] == len(base["platforms"]["linux-64"]["layers"])
    info = _skopeo("inspect", f"oci:{work / 'image'}:{record['tags'][0]}")
    assert len(info["Layers"]) == platform["base"]["layers"] + len(platform["layers"])
    assert info["Labels"]["org.opencontainers.image.base.digest"] == base["image"]["digest"]
    _, out = _unpack_and_run(work / "image", record["tags"][0], tmp_path, "/usr/local/bin/busybox")
    assert "BusyBox" in out


def test_base_from_layout_and_docker_archive(tmp_path: Path, image_channel: Path) -> None:
    base_work, work = tmp_path / "base", tmp_path / "work"
    _lock(base_work, image_channel, ["busybox"])
    base, _ = _bake(base_work, tmp_path / "cache", "--oci", "layout", "--docker-archive", "base.tar", "-t", "v1")
    _lock(work, image_channel, ["greet=1.0"])
    from_layout, _ = _bake(work, tmp_path / "cache", "--base", f"oci:{base_work / 'layout'}:v1", "--oci", "image")
    from_archive, _ = _bake(work, tmp_path / "cache", "--base", f"docker-archive:{base_work / 'base.tar'}", "--oci", "image2")
    base_layers = [layer["diff_id"] for layer in base["platforms"]["linux-64"]["layers"]]
    for record in (from_layout, from_archive):
        assert record["platforms"]["linux-64"]["base"]["layers"] == len(base_layers)
    assert from_layout["platforms"]["linux-64"]["base"]["digest"] == base["image"]["digest"]
    # An image of the archive named by its reference, which holds colons and slashes (as skopeo reads it), also with
    # docker's defaults filled in; a name it does not hold is an error listing the ones it does.
    archive = base_work / "base.tar"
    for named in ("envkit/env:v1", "docker.io/envkit/env:v1"):
        by_name, _ = _bake(work, tmp_path / "cache", "--base", f"docker-archive:{archive}:{named}", "--oci", "image3")
        assert by_name["image"]["digest"] != ""
        assert by_name["platforms"]["linux-64"]["base"]["reference"] == f"docker-archive:{archive}:{named}"  # (the label too)
    _, said = _bake(work, tmp_path / "cache", "--base", f"docker-archive:{archive}:envkit/env:nope", "--oci", "image4", ok=False)
    assert "holds 0 matching images for 'envkit/env:nope'" in said and "envkit/env:v1" in said, said


def test_a_base_holding_an_environment_at_the_prefix_is_warned_of(tmp_path: Path, image_channel: Path) -> None:
    # An envkit image as the base, its environment where this bake's goes: the two are merged, and the base's
    # packages this lock does not have stay in the image. Said, from a layout and from an archive (a scan's
    # result kept for the next bake too); not for an environment elsewhere.
    base_work, work = tmp_path / "base", tmp_path / "work"
    _lock(base_work, image_channel, ["busybox"])
    _bake(base_work, tmp_path / "cache", "--oci", "layout", "--docker-archive", "base.tar", "-t", "v1")
    _lock(work, image_channel, ["greet=1.0"])
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    for base in (f"oci:{base_work / 'layout'}:v1", f"docker-archive:{base_work / 'base.tar'}", f"oci:{base_work / 'layout'}:v1"):
        result = run_envkit("bake", "-q", "--base", base, "--oci", "image", cwd=work, env=env)
        assert result.returncode == 0, result.output
        assert f"linux-64: the base {base} already holds a conda environment at /opt/conda/envs/env" in result.stderr, result.stderr
        assert "bake into another --prefix" in result.stderr
    layout = f"oci:{base_work / 'layout'}:v1"
    # Without -q, said as soon as the base is read: before any layer is built (or a tag pushed).
    said = run_envkit("bake", "--base", layout, "--oci", "image", cwd=work, env=env)
    lines = said.stderr.splitlines()
    warned = next(i for i, line in enumerate(lines) if "already holds a conda environment" in line)
    assert warned < next(i for i, line in enumerate(lines) if line.startswith("layers linux-64")), said.stderr
    assert said.stderr.count("already holds a conda environment") == 1
    # The base's PATH starts with the environment's bin already: the image's has it once.
    record = json.loads((work / "bake.json").read_text())
    env_vars = _skopeo("inspect", f"oci:{work / 'image'}:{record['tags'][0]}")["Env"]
    (path,) = [v for v in env_vars if v.startswith("PATH=")]
    assert path.split("=", 1)[1].split(":").count("/opt/conda/envs/env/bin") == 1, path
    elsewhere = run_envkit("bake", "-q", "--base", layout, "--prefix", "/opt/train", "--oci", "image", cwd=work, env=env)
    assert elsewhere.returncode == 0 and "already holds" not in elsewhere.output, elsewhere.output


def _unsafe_archive(path: Path, member: tarfile.TarInfo) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["evil:1"], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("config.json", config), ("layer.tar", layer.getvalue()), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "member, words",
    [
        (tarfile.TarInfo("../../etc/evil"), "escapes the image root"),
        (
            (
                lambda: (t := tarfile.TarInfo("usr/lib/link"), setattr(t, "type", tarfile.SYMTYPE), setattr(t, "linkname", "../../../etc"))[
                    0
                ]
            )(),
            "points above",
        ),
    ],
)
def test_unsafe_base_layers_are_refused(tmp_path: Path, image_channel: Path, member: tarfile.TarInfo, words: str) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    _unsafe_archive(work / "evil.tar", member)
    _, output = _bake(work, tmp_path / "cache", "--base", f"docker-archive:{work / 'evil.tar'}", "--oci", "image", ok=False)
    assert words in output and "evil.tar" in output
    assert not (work / "image").exists()


def test_a_base_of_another_architecture_is_refused_before_anything_is_fetched(tmp_path: Path, image_channel: Path) -> None:
    # An amd64-only base for linux-aarch64: refused as the base is loaded (every platform was fetched and layered first).
    from conda_envkit.testing.hostile_images import directory, write_base_layout

    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"], platforms=("linux-64", "linux-aarch64"))
    write_base_layout(work / "base", [[directory("etc")]])
    base = ("--base", f"oci:{work / 'base'}:base")
    _, output = _bake(work, tmp_path / "cache", *base, "-p", "linux-64", "-p", "linux-aarch64", "--oci", "image", ok=False)
    assert "is linux/amd64, but the bake is for linux-aarch64 (arm64)" in output, output
    assert not (tmp_path / "cache" / "pkgs").exists() and not (work / "image").exists()


def test_tampered_package_is_named_and_nothing_is_written(tmp_path: Path, image_channel: Path) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(image_channel, channel)
    work = tmp_path / "work"
    _lock(work, channel, ["greet=1.0"])
    (work / "image").mkdir()  # a previous layout: the only kind of directory --oci replaces
    (work / "image" / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (work / "image" / "index.json").write_text('{"schemaVersion":2,"manifests":[]} the previous layout')
    target = channel / "noarch" / "greet-1.0-0.conda"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    result = run_envkit("bake", "--oci", "image", cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2
    assert "greet 1.0 0: sha256 mismatch" in result.stderr
    assert (work / "image" / "index.json").read_text().endswith("the previous layout")
    assert not (work / "bake.json").exists()


def test_push_with_basic_auth(tmp_path: Path, image_channel: Path, auth_registry: Registry) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["smalldata"])
    repo = f"{auth_registry.host}/private/data"
    cache = str(tmp_path / "cache")
    denied = run_envkit("bake", "--push", repo, "--insecure", cwd=work, env={"ENVKIT_CACHE_DIR": cache, "DOCKER_CONFIG": str(tmp_path)})
    assert denied.returncode == 2 and f"error: --push {repo}: {auth_registry.host}: authentication required" in denied.stderr
    assert not (tmp_path / "cache" / "pkgs").exists()  # refused before anything was fetched (or built)
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        down = f"127.0.0.1:{closed.getsockname()[1]}/private/data"
    refused = run_envkit("bake", "--push", down, "--insecure", cwd=work, env={"ENVKIT_CACHE_DIR": cache, "ENVKIT_NETWORK_TIMEOUT": "3"})
    assert refused.returncode == 2 and "connection refused: nothing listens there" in refused.stderr, refused.stderr
    assert not (tmp_path / "cache" / "pkgs").exists()
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    import base64

    auth = base64.b64encode(b"envkit:s3cret-Pa55").decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    ok = run_envkit("bake", "--push", repo, "--insecure", cwd=work, env={"ENVKIT_CACHE_DIR": cache, "DOCKER_CONFIG": str(docker_config)})
    assert ok.returncode == 0, ok.output
    info = _skopeo(
        "inspect",
        "--tls-verify=false",
        "--creds",
        "envkit:s3cret-Pa55",
        f"docker://{repo}:{json.loads((work / 'bake.json').read_text())['tags'][0]}",
    )
    assert info["Labels"]["dev.envkit.platform"] == "linux-64"


@pytest.mark.parametrize("where", ["runtime directory", "REGISTRY_AUTH_FILE"])
def test_a_skopeo_login_is_used_for_a_push(tmp_path: Path, image_channel: Path, auth_registry: Registry, where: str) -> None:
    # `skopeo login` (podman's, buildah's) writes $XDG_RUNTIME_DIR/containers/auth.json, or $REGISTRY_AUTH_FILE: read
    # as those tools read it (only docker's config.json was: "authentication required" after a login).
    work = tmp_path / "work"
    _lock(work, image_channel, ["smalldata"])
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "DOCKER_CONFIG": str(tmp_path / "no-docker")}
    if where == "REGISTRY_AUTH_FILE":
        env["REGISTRY_AUTH_FILE"] = str(tmp_path / "auth.json")
    login = ["skopeo", "login", "--tls-verify=false", "-u", "envkit", "--password-stdin", auth_registry.host]
    logged_in = subprocess.run(login, input="s3cret-Pa55", capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert logged_in.returncode == 0, logged_in.stderr
    assert (tmp_path / "auth.json").is_file() == (where == "REGISTRY_AUTH_FILE")
    pushed = run_envkit("bake", "-q", "--push", f"{auth_registry.host}/private/data", "--insecure", cwd=work, env=env)
    assert pushed.returncode == 0, pushed.output


def test_a_registry_cache_on_the_push_registry_uses_the_environments_credentials(
    tmp_path: Path, image_channel: Path, auth_registry: Registry, registry: Registry
) -> None:
    # ENVKIT_REGISTRY_* belong to the registry the bake writes to: its cache there is written and read with them
    # (the cache step failed "authentication required", and its hint said to set these very variables).
    work = tmp_path / "work"
    _lock(work, image_channel, ["smalldata"])
    creds = {"ENVKIT_REGISTRY_USER": "envkit", "ENVKIT_REGISTRY_PASSWORD": "s3cret-Pa55", "DOCKER_CONFIG": str(tmp_path)}
    repo, cache_ref = f"{auth_registry.host}/private/data", f"{auth_registry.host}/private/cache"
    first_env = {"ENVKIT_CACHE_DIR": str(tmp_path / "a"), **creds}
    first = run_envkit("bake", "-q", "--push", repo, "--cache-to", cache_ref, "--insecure", cwd=work, env=first_env)
    assert first.returncode == 0, first.output
    fresh = {"ENVKIT_CACHE_DIR": str(tmp_path / "b"), **creds}
    second = run_envkit("bake", "--push", repo, "--cache-from", cache_ref, "--insecure", cwd=work, env=fresh)
    assert second.returncode == 0 and "warning" not in second.stderr, second.output
    assert json.loads((work / "bake.json").read_text())["cache"]["layers_from_registry"] > 0
    # A cache-warming bake (no --push): the --cache-to registry is the one it writes to.
    warming_env = {"ENVKIT_CACHE_DIR": str(tmp_path / "c"), **creds}
    warming = run_envkit("bake", "-q", "--cache-to", cache_ref, "--insecure", cwd=work, env=warming_env)
    assert warming.returncode == 0, warming.output
    # A cache on another registry than the push target's gets no credentials from the environment.
    elsewhere = run_envkit("bake", "-q", "--push", f"{registry.host}/team/data", "--cache-to", cache_ref, "--insecure", cwd=work, env=fresh)
    assert elsewhere.returncode == 2 and "authentication required" in elsewhere.stderr, elsewhere.output
    assert "ENVKIT_REGISTRY_* are only for the push target" in elsewhere.stderr  # (not "set ENVKIT_REGISTRY_USER")
    # A base on the push target's own host is read with them too (that host gets them anyway, as crane and buildx have
    # one credential per host); pushed to another registry, the same base gets none.
    base = f"{repo}:{json.loads((work / 'bake.json').read_text())['tags'][0]}"
    on_base = run_envkit("bake", "-q", "--base", base, "--push", f"{auth_registry.host}/private/app", "--insecure", cwd=work, env=fresh)
    assert on_base.returncode == 0, on_base.output
    moved = run_envkit("bake", "-q", "--base", base, "--push", f"{registry.host}/team/app", "--insecure", cwd=work, env=fresh)
    assert moved.returncode == 2 and "authentication required" in moved.stderr, moved.output


def test_bad_inputs_say_what_to_do(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    cases = [
        (("bake",), "nothing to write"),
        (("bake", "-p", "osx-arm64", "--oci", "x"), "cannot bake an image for osx-arm64"),
        (("bake", "-p", "linux-aarch64", "--oci", "x"), "platform linux-aarch64 is not in the lock"),
        (("bake", "--base", f"{registry.host}/no/such:tag", "--insecure", "--oci", "x"), "not found"),
        (("bake", "--push", "registry.example.com/a/b", "--insecure"), "--insecure refused for registry.example.com"),
        (("bake", "--base", "Bad Ref", "--oci", "x"), "invalid image reference"),
        (("bake", "--base", f"{registry.host}/team/base:", "--insecure", "--oci", "x"), "empty tag after ':'"),
        (("bake", "--name", "../../../x", "--oci", "x"), "--name: '../../../x' is not an environment name"),
        (("bake", "--env", "FOO", "--oci", "x"), "hint: e.g. --env KEY=VALUE"),
        (("bake", "--oci", "x", "--cache-to", f"{registry.host}/team/cache:", "--insecure"), "empty tag after ':'"),
    ]
    for args, words in cases:
        result = run_envkit(*args, cwd=work, env=cache)
        assert result.returncode == 2, (args, result.output)
        assert words in result.stderr, (args, result.stderr)
    assert not (work / "x").exists()


def test_insecure_is_plain_http_for_loopback_registries_and_tls_for_the_others(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    from conda_envkit.publish import insecure_hosts

    # A base on a remote registry beside a push to one on localhost: the local one over HTTP, the remote over TLS.
    assert insecure_hosts(["registry-1.docker.io", "127.0.0.1:5000"], True) == ("127.0.0.1:5000",)
    assert insecure_hosts(["[::1]:5000", "localhost:5000", "[::1]"], True) == ("[::1]:5000", "localhost:5000", "[::1]")
    assert insecure_hosts(["registry-1.docker.io"], False) == ()
    with pytest.raises(Exception, match="--insecure refused for registry.example.com"):
        insecure_hosts(["registry.example.com"], True)  # it could only have been meant for the remote one
    # End to end: the remote base is asked over TLS (and cannot be reached here), not refused for --insecure.
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    args = ("--timeout", "5", "bake", "--base", "registry.invalid/team/base:1", "--push", f"{registry.host}/team/x", "--insecure")
    result = run_envkit(*args, cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2 and "refused" not in result.stderr and "registry.invalid" in result.stderr, result.output


def test_install_creates_a_relocated_prefix_atomically(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    _lock(work, image_channel, ["greet=1.0"])
    cache = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    result = run_envkit("install", "--prefix", "envs/train", "-p", "linux-64", cwd=work, env=cache)
    assert result.returncode == 0, result.output
    prefix = (work / "envs" / "train").absolute()
    proc = subprocess.run([str(prefix / "bin" / "greet")], capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == ["hello from the image", f"prefix is {prefix}"]
    again = run_envkit("install", "--prefix", "envs/train", "-p", "linux-64", cwd=work, env=cache)
    assert again.returncode == 0 and again.stdout.strip() == f"{prefix} is up to date"
    # A failing install leaves nothing behind.
    shutil.rmtree(tmp_path / "cache")
    lock = work / "conda-lock.yml"
    lock.write_text(lock.read_text().replace(image_channel.as_uri(), (tmp_path / "gone").as_uri()))
    failed = run_envkit("install", "--prefix", "envs/other", "-p", "linux-64", cwd=work, env=cache)
    assert failed.returncode == 2 and "cannot read package" in failed.stderr
    assert sorted(p.name for p in (work / "envs").iterdir()) == ["train"]


def test_bearer_token_auth_push_and_mount(tmp_path: Path, image_channel: Path, token_registry: Registry) -> None:
    host, cache = token_registry.host, str(tmp_path / "cache")
    creds = {"ENVKIT_CACHE_DIR": cache, "ENVKIT_REGISTRY_USER": "envkit", "ENVKIT_REGISTRY_PASSWORD": "s3cret-Pa55"}
    base_work, work = tmp_path / "base", tmp_path / "work"
    _lock(base_work, image_channel, ["busybox"])
    anonymous = run_envkit("bake", "--push", f"{host}/base/busybox", "--insecure", cwd=base_work, env={"ENVKIT_CACHE_DIR": cache})
    assert anonymous.returncode == 2 and "access denied" in anonymous.stderr
    pushed = run_envkit("bake", "-q", "--push", f"{host}/base/busybox", "--insecure", "-t", "v1", cwd=base_work, env=creds)
    assert pushed.returncode == 0, pushed.output
    _lock(work, image_channel, ["greet=1.0"])
    base_ref = f"{host}/base/busybox:v1"
    app = run_envkit("bake", "-q", "--base", base_ref, "--push", f"{host}/team/app", "--insecure", cwd=work, env=creds)
    assert app.returncode == 0, app.output
    record = json.loads((work / "bake.json").read_text())
    base_layers = json.loads((base_work / "bake.json").read_text())["platforms"]["linux-64"]["layers"]
    assert record["push"]["mounted_blobs"] == len(base_layers) == 2  # busybox, then environment metadata
    info = _skopeo("inspect", "--tls-verify=false", "--creds", "envkit:s3cret-Pa55", f"docker://{host}/team/app:{record['tags'][0]}")
    assert info["Digest"] == record["image"]["digest"]


def test_large_blobs_go_up_in_chunks(tmp_path: Path, registry: Registry) -> None:
    from conda_envkit.oci.blobs import file_digest
    from conda_envkit.oci.registry import RegistryClient

    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 10_000 + b"tail")  # 2.56 MB: three 1 MiB chunks
    digest = file_digest(blob)
    client = RegistryClient(registry.host, insecure=True, chunk_size=1 << 20)
    assert not client.has_blob("chunks/test", digest)
    assert client.upload_blob("chunks/test", blob, digest) == blob.stat().st_size
    assert client.has_blob("chunks/test", digest)
    back = tmp_path / "back"
    client.fetch_blob("chunks/test", digest, back)
    assert back.read_bytes() == blob.read_bytes()


def _layer(path: Path, *names: str) -> Path:
    """A plain tar layer of empty files (a name ending in / is a directory)."""
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(b""))
    return path


@pytest.mark.parametrize(
    ("upper", "left"),
    [
        ([], ["/", "/opt/conda", "/opt/tool/envs/a"]),
        (["opt/.wh.conda"], ["/", "/opt/tool/envs/a"]),  # the directory removed
        (["opt/conda/.wh.conda-meta"], ["/", "/opt/tool/envs/a"]),  # its conda-meta removed
        (["opt/conda/conda-meta/.wh.python-3.12.json"], ["/", "/opt/conda", "/opt/tool/envs/a"]),  # one record: still one
        (["opt/tool/.wh..wh..opq"], ["/", "/opt/conda"]),  # an opaque directory hides all below it
        (["opt/tool/.wh..wh..opq", "opt/tool/envs/b/conda-meta/x.json"], ["/", "/opt/conda", "/opt/tool/envs/b"]),  # and keeps its own
        ([".wh..wh..opq"], []),
        (["srv/conda-meta.txt", "srv/x/conda-meta"], ["/", "/opt/conda", "/opt/tool/envs/a"]),  # a file of that name is not one
    ],
)
def test_the_environments_a_base_holds_are_followed_through_its_whiteouts(tmp_path: Path, upper: list[str], left: list[str]) -> None:
    from conda_envkit.oci.safety import check_layer, in_root

    prefixes: set[str] = set()
    lower = _layer(tmp_path / "1.tar", "conda-meta/", "opt/conda/conda-meta/python-3.12.json", "opt/tool/envs/a/conda-meta/")
    check_layer(lower, "1", {}, None, prefixes)
    check_layer(_layer(tmp_path / "2.tar", *upper), "2", {}, None, prefixes)
    assert list(in_root(prefixes)) == left
