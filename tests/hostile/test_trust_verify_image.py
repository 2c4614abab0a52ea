"""envkit verify --image reads the image itself and checks it against the lock (issue 14 item 9):
trojaned images that are internally consistent (files, records, digests all rewritten) are
caught from an OCI layout, a docker archive and a registry."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conda_envkit.testing.hostile_images import Layers, find, manifest_of, new_file, repack_layout
from tests.conftest import Registry
from tests.hostile.conftest import Workspace, locked_workspace, skopeo

TROJAN = b"#!/bin/sh\necho pwned\n"


@pytest.fixture(scope="session")
def baked(tmp_path_factory: pytest.TempPathFactory, hostile_channel: Path) -> tuple[Workspace, str]:
    """`honest` baked (scratch base) into an OCI layout `image`, and its tag."""
    ws = locked_workspace(tmp_path_factory.mktemp("baked") / "work", hostile_channel, ["honest", "linky"])
    return ws, ws.bake_layout()


def _copy(baked: tuple[Workspace, str], tmp_path: Path) -> tuple[Workspace, str]:
    ws, tag = baked
    work = tmp_path / "work"
    shutil.copytree(ws.root, work, symlinks=True)
    # The bake's own cache, with the genuine blobs: verify must not trust it.
    return Workspace(work, ws.cache), tag


def _trojan_with_records(layers: Layers, config: dict) -> None:
    tool = find(layers, "/bin/honest")
    tool.data = TROJAN
    meta = find(layers, "conda-meta/honest-1.0-0.json")
    record = json.loads(meta.data)
    for entry in record["paths_data"]["paths"]:
        if entry["_path"] == "bin/honest":
            entry["sha256"] = hashlib.sha256(TROJAN).hexdigest()
            entry.pop("sha256_in_prefix", None)
            entry["size_in_bytes"] = len(TROJAN)
    meta.data = json.dumps(record).encode()


def _preload(layers: Layers, config: dict) -> None:
    layers[-1].append(new_file("etc/ld.so.preload", b"/opt/conda/envs/env/lib/evil.so\n"))


def _env_preload(layers: Layers, config: dict) -> None:
    config["config"]["Env"].append("LD_PRELOAD=/tmp/evil.so")


def _entrypoint(layers: Layers, config: dict) -> None:
    config["config"]["Entrypoint"] = ["/tmp/evil"]


def _lying_lock_hash(layers: Layers, config: dict) -> None:
    config["config"]["Labels"]["dev.envkit.lock-hash"] = "sha256:" + "0" * 64


def _decoy_prefix(layers: Layers, config: dict) -> None:
    # The label steers verify to a copy nobody runs; the real environment is elsewhere.
    config["config"]["Labels"]["dev.envkit.prefix"] = "/opt/decoy"


def _setuid(layers: Layers, config: dict) -> None:
    find(layers, "/bin/honest").info.mode = 0o4755


def _extra_layer(layers: Layers, config: dict) -> None:
    layers.append([new_file("usr/local/bin/backdoor", b"#!/bin/sh\n", 0o755)])


def _retarget(layers: Layers, config: dict) -> None:
    find(layers, "/bin/linky").info.linkname = "/bin/sh"


def _sitecustomize(layers: Layers, config: dict) -> None:
    prefix = find(layers, "/bin/honest").info.name.rsplit("/bin/", 1)[0]
    layers[-1].append(new_file(f"{prefix}/lib/python3.11/site-packages/sitecustomize.py", b"import os\n"))


REPACKS: dict[str, tuple[Callable[[Layers, dict], None], str]] = {
    "trojan-file-and-record": (_trojan_with_records, "modified-file"),
    "ld-so-preload": (_preload, "outside-prefix"),
    "env-ld-preload": (_env_preload, "image-config"),
    "entrypoint-outside": (_entrypoint, "image-config"),
    "lying-lock-hash": (_lying_lock_hash, "image-config"),
    "decoy-prefix-label": (_decoy_prefix, "outside-prefix"),
    "setuid": (_setuid, "unsafe-mode"),
    "extra-layer": (_extra_layer, "outside-prefix"),
    "retargeted-symlink": (_retarget, "retargeted-symlink"),
    "sitecustomize": (_sitecustomize, "unowned-file"),
}


def _kinds(result) -> set[str]:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.output
    return {f["kind"] for f in json.loads(result.stdout)["findings"]}


def test_genuine_image_verifies(baked: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(baked, tmp_path)
    result = ws.envkit("verify", "--image", f"oci:image:{tag}", "--json")
    assert result.returncode == 0, result.output


@pytest.mark.parametrize("case", sorted(REPACKS))
def test_repacked_layout_is_caught(baked: tuple[Workspace, str], tmp_path: Path, case: str) -> None:
    edit, kind = REPACKS[case]
    ws, tag = _copy(baked, tmp_path)
    repack_layout(ws.root / "image", tag, edit)
    result = ws.envkit("verify", "--image", f"oci:image:{tag}", "--json")
    assert kind in _kinds(result)


def test_blob_replaced_in_place_is_read_and_refused(baked: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(baked, tmp_path)
    _entry, manifest = manifest_of(ws.root / "image", tag)
    victim = ws.root / "image" / "blobs" / "sha256" / manifest["layers"][0]["digest"].partition(":")[2]
    honest = ws.root / "honest-copy"
    shutil.copytree(ws.root / "image", honest)
    repack_layout(honest, tag, _trojan_with_records)
    _e, trojaned = manifest_of(honest, tag)
    victim.write_bytes((honest / "blobs" / "sha256" / trojaned["layers"][0]["digest"].partition(":")[2]).read_bytes())
    result = ws.envkit("verify", "--image", f"oci:image:{tag}")
    assert result.returncode == 2 and "digest" in result.stderr, result.output


def test_repacked_docker_archive_is_caught(baked: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(baked, tmp_path)
    repack_layout(ws.root / "image", tag, _trojan_with_records)
    archive = ws.root / "image.tar"
    subprocess.run([skopeo(), "copy", "-q", f"oci:{ws.root / 'image'}:{tag}", f"docker-archive:{archive}:envkit/x:{tag}"], check=True)
    result = ws.envkit("verify", "--image", f"docker-archive:{archive}", "--json")
    assert "modified-file" in _kinds(result)


def test_repacked_image_in_a_registry_is_caught(baked: tuple[Workspace, str], tmp_path: Path, registry: Registry) -> None:
    ws, tag = _copy(baked, tmp_path)
    repack_layout(ws.root / "image", tag, _trojan_with_records)
    ref = f"{registry.host}/team/trojan:{tag}"
    subprocess.run([skopeo(), "copy", "-q", "--dest-tls-verify=false", f"oci:{ws.root / 'image'}:{tag}", f"docker://{ref}"], check=True)
    result = ws.envkit("verify", "--image", ref, "--insecure", "--json")
    assert "modified-file" in _kinds(result)


def _recipe_image(tmp_path: Path, hostile_channel: Path) -> tuple[Workspace, str]:
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    mine = tmp_path / "recipes" / "mine"
    mine.mkdir(parents=True)
    (mine / "entry.sh").write_text('#!/bin/sh\nexec "$@"\n')
    (mine / "recipe.yml").write_text(
        "description: with a file\nbase: {cpu: scratch}\nentrypoint: [/usr/local/bin/entry]\n"
        "files:\n  - src: entry.sh\n    dest: /usr/local/bin/entry\n"
    )
    result = ws.envkit("bake", "-q", "--recipe", "mine", "--recipe-dir", tmp_path / "recipes", "--oci", "image", "-p", "linux-64")
    assert result.returncode == 0, result.output
    return ws, json.loads((ws.root / "bake.json").read_text())["tags"][0]


def test_recipe_files_are_listed_not_judged(tmp_path: Path, hostile_channel: Path) -> None:
    ws, tag = _recipe_image(tmp_path, hostile_channel)
    result = ws.envkit("verify", "--image", f"oci:image:{tag}", "--json")
    assert result.returncode == 0, result.output
    assert json.loads(result.stdout)["recipe_files"] == ["/usr/local/bin/entry"]


def test_a_file_outside_the_prefix_in_another_layer_of_a_recipe_image_is_a_finding(tmp_path: Path, hostile_channel: Path) -> None:
    ws, tag = _recipe_image(tmp_path, hostile_channel)

    def edit(layers: Layers, config: dict) -> None:
        layers[0].append(new_file("etc/ld.so.preload", b"/x.so\n"))

    repack_layout(ws.root / "image", tag, edit)
    assert "outside-prefix" in _kinds(ws.envkit("verify", "--image", f"oci:image:{tag}", "--json"))


def _record_a_list(layers: Layers, config: dict) -> None:
    find(layers, "conda-meta/honest-1.0-0.json").data = b"[1]\n"


def _record_path_climbs(layers: Layers, config: dict) -> None:
    meta = find(layers, "conda-meta/honest-1.0-0.json")
    record = json.loads(meta.data)
    record["paths_data"]["paths"][0]["_path"] = "../../../etc/shadow"
    meta.data = json.dumps(record).encode()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(_record_a_list, "not a package record"), (_record_path_climbs, "'../../../etc/shadow' leaves its root")],
)
def test_a_malformed_record_in_an_image_is_an_error_naming_it(
    baked: tuple[Workspace, str], tmp_path: Path, edit: Callable[[Layers, dict], None], expected: str
) -> None:
    ws, tag = _copy(baked, tmp_path)
    repack_layout(ws.root / "image", tag, edit)
    result = ws.envkit("verify", "--image", f"oci:image:{tag}")
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.stderr
    assert "conda-meta/honest-1.0-0.json" in result.stderr and expected in result.stderr, result.stderr
