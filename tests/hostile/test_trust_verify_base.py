"""envkit verify --image decides which layers are the base from a base image, not from the image's
history or labels (issue 14 item 9): a trojan layer dressed as part of the base is checked as
envkit's, from an OCI layout, a docker archive and a registry."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conda_envkit.testing.hostile_images import (
    Layers,
    directory,
    manifest_of,
    new_file,
    repack_layout,
    rewrite_config,
    write_base_layout,
)
from tests.conftest import Registry
from tests.hostile.conftest import Workspace, locked_workspace, skopeo

BASE_LAYER = [directory("etc"), new_file("etc/motd", b"genuine base\n")]
TROJAN_LAYER = [directory("etc"), new_file("etc/ld.so.preload", b"/opt/evil.so\n")]
BASE = "oci:base:base"


@pytest.fixture(scope="session")
def on_base(tmp_path_factory: pytest.TempPathFactory, hostile_channel: Path) -> tuple[Workspace, str]:
    """`honest` baked on a one-layer base from the OCI layout `base` into the layout `image`, and its tag."""
    ws = locked_workspace(tmp_path_factory.mktemp("on-base") / "work", hostile_channel, ["honest", "linky"])
    write_base_layout(ws.root / "base", [BASE_LAYER])
    result = ws.envkit("bake", "-q", "--base", BASE, "--oci", "image", "-p", "linux-64")
    assert result.returncode == 0, result.output
    return ws, json.loads((ws.root / "bake.json").read_text())["tags"][0]


def _copy(on_base: tuple[Workspace, str], tmp_path: Path) -> tuple[Workspace, str]:
    ws, tag = on_base
    shutil.copytree(ws.root, tmp_path / "work", symlinks=True)
    return Workspace(tmp_path / "work", ws.cache), tag


def _disguised_as_base(layers: Layers, config: dict) -> None:
    # Right above the base, with the base's own history line: the image says it is the base's.
    layers.insert(1, list(TROJAN_LAYER))
    config["history"].insert(1, dict(config["history"][0]))


def _findings(result) -> list[dict]:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.output
    return json.loads(result.stdout)["findings"]


def test_genuine_image_on_a_base_verifies(on_base: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(on_base, tmp_path)
    given = ws.envkit("verify", "--image", f"oci:image:{tag}", "--base", BASE, "--json")
    assert given.returncode == 0, given.output
    assert json.loads(given.stdout)["base"]["source"] == "--base"
    assert "note:" not in given.stderr
    labelled = ws.envkit("verify", "--image", f"oci:image:{tag}")
    assert labelled.returncode == 0, labelled.output
    assert "note: base taken from the image's own label: oci:base:base@sha256:" in labelled.stderr
    assert "pass --base to require one" in labelled.stderr


@pytest.mark.parametrize("source", ["layout", "archive", "registry"])
def test_a_trojan_layer_dressed_as_the_base_is_checked(
    on_base: tuple[Workspace, str], tmp_path: Path, source: str, request: pytest.FixtureRequest
) -> None:
    ws, tag = _copy(on_base, tmp_path)
    repack_layout(ws.root / "image", tag, _disguised_as_base)
    _entry, manifest = manifest_of(ws.root / "image", tag)
    assert len(manifest["layers"]) >= 3  # base, trojan, envkit's
    image, extra = f"oci:image:{tag}", []
    if source == "archive":
        image = f"docker-archive:{ws.root / 'image.tar'}"
        subprocess.run([skopeo(), "copy", "-q", f"oci:{ws.root / 'image'}:{tag}", f"{image}:envkit/x:{tag}"], check=True)
    elif source == "registry":
        registry: Registry = request.getfixturevalue("registry")
        image, extra = f"{registry.host}/team/disguised:{tag}", ["--insecure"]
        subprocess.run(
            [skopeo(), "copy", "-q", "--dest-tls-verify=false", f"oci:{ws.root / 'image'}:{tag}", f"docker://{image}"], check=True
        )
    for base in ([], ["--base", BASE]):  # named by the (here honest) label, or by the user
        findings = _findings(ws.envkit("verify", "--image", image, *base, *extra, "--json"))
        assert any(f["kind"] == "outside-prefix" and f["detail"].startswith("/etc/ld.so.preload ") for f in findings), findings
        assert all(f["kind"] != "base-mismatch" for f in findings)  # the base's own layer is still the base


def test_a_label_naming_another_base_is_said_and_overruled_by_base(on_base: tuple[Workspace, str], tmp_path: Path) -> None:
    # The attacker publishes a "base" that holds the trojan and points the label at it.
    ws, tag = _copy(on_base, tmp_path)
    write_base_layout(ws.root / "evil", [BASE_LAYER, TROJAN_LAYER])
    evil_digest = json.loads((ws.root / "evil" / "index.json").read_text())["manifests"][0]["digest"]

    def edit(layers: Layers, config: dict) -> None:
        _disguised_as_base(layers, config)
        config["config"]["Labels"]["org.opencontainers.image.base.name"] = "oci:evil:base"
        config["config"]["Labels"]["org.opencontainers.image.base.digest"] = evil_digest

    repack_layout(ws.root / "image", tag, edit)
    trusting = ws.envkit("verify", "--image", f"oci:image:{tag}")
    assert f"note: base taken from the image's own label: oci:evil:base@{evil_digest}" in trusting.stderr, trusting.output
    findings = _findings(ws.envkit("verify", "--image", f"oci:image:{tag}", "--base", BASE, "--json"))
    assert any(f["detail"].startswith("/etc/ld.so.preload ") for f in findings), findings


def test_a_base_layer_changed_is_a_finding(on_base: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(on_base, tmp_path)

    def edit(layers: Layers, config: dict) -> None:
        layers[0].extend(TROJAN_LAYER[1:])

    repack_layout(ws.root / "image", tag, edit)
    findings = _findings(ws.envkit("verify", "--image", f"oci:image:{tag}", "--base", BASE, "--json"))
    kinds = {f["kind"] for f in findings}
    assert "base-mismatch" in kinds, findings
    assert any(f["detail"].startswith("/etc/ld.so.preload ") for f in findings)  # every layer is checked then


def test_a_config_that_lies_about_a_layer_is_a_finding(on_base: tuple[Workspace, str], tmp_path: Path) -> None:
    # The trojan goes into the base's layer, and the config keeps claiming the base's diff_id for it.
    ws, tag = _copy(on_base, tmp_path)
    _entry, manifest = manifest_of(ws.root / "image", tag)
    config = json.loads((ws.root / "image" / "blobs" / "sha256" / manifest["config"]["digest"].partition(":")[2]).read_text())
    genuine = config["rootfs"]["diff_ids"][0]
    repack_layout(ws.root / "image", tag, lambda layers, config: layers[0].extend(TROJAN_LAYER[1:]))

    def lie(config: dict) -> None:
        config["rootfs"]["diff_ids"][0] = genuine

    rewrite_config(ws.root / "image", tag, lie)
    findings = _findings(ws.envkit("verify", "--image", f"oci:image:{tag}", "--base", BASE, "--json"))
    assert any(f["kind"] == "layer-mismatch" and f["package"] == "layer 1" for f in findings), findings


def test_base_needs_an_image_and_a_readable_base(on_base: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(on_base, tmp_path)
    alone = ws.envkit("verify", "--prefix", "env", "--base", BASE)
    assert alone.returncode == 2 and "--base goes with --image" in alone.stderr
    shutil.rmtree(ws.root / "base")  # the label's base is not here: verify says so, and how to name one
    missing = ws.envkit("verify", "--image", f"oci:image:{tag}")
    assert missing.returncode == 2, missing.output
    assert "names base oci:base:base, which is not a directory here" in missing.stderr
    assert "pass --base" in missing.stderr


def test_a_base_from_a_registry_is_fetched_by_the_labels_digest(on_base: tuple[Workspace, str], tmp_path: Path, registry: Registry) -> None:
    ws, _tag = _copy(on_base, tmp_path)
    base_ref = f"{registry.host}/library/base:1"
    subprocess.run([skopeo(), "copy", "-q", "--dest-tls-verify=false", f"oci:{ws.root / 'base'}:base", f"docker://{base_ref}"], check=True)
    baked = ws.envkit("bake", "-q", "--base", base_ref, "--insecure", "--oci", "from-registry", "-p", "linux-64")
    assert baked.returncode == 0, baked.output
    tag = json.loads((ws.root / "bake.json").read_text())["tags"][0]
    genuine = ws.envkit("verify", "--image", f"oci:from-registry:{tag}", "--insecure")
    assert genuine.returncode == 0, genuine.output
    assert f"note: base taken from the image's own label: {base_ref}@sha256:" in genuine.stderr
    # The tag moves to another image: the label's digest still names the base it was baked on.
    write_base_layout(ws.root / "other", [[directory("etc"), new_file("etc/motd", b"another base\n")]])
    subprocess.run([skopeo(), "copy", "-q", "--dest-tls-verify=false", f"oci:{ws.root / 'other'}:base", f"docker://{base_ref}"], check=True)
    assert ws.envkit("verify", "--image", f"oci:from-registry:{tag}", "--insecure").returncode == 0
    moved = _findings(ws.envkit("verify", "--image", f"oci:from-registry:{tag}", "--base", base_ref, "--insecure", "--json"))
    assert [f["kind"] for f in moved if f["kind"] == "base-mismatch"] == ["base-mismatch"], moved
    repack_layout(ws.root / "from-registry", tag, _disguised_as_base)
    findings = _findings(ws.envkit("verify", "--image", f"oci:from-registry:{tag}", "--insecure", "--json"))
    assert any(f["detail"].startswith("/etc/ld.so.preload ") for f in findings), findings


def test_an_image_that_names_no_base_has_every_layer_checked(on_base: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, tag = _copy(on_base, tmp_path)

    def unlabel(config: dict) -> None:
        del config["config"]["Labels"]["org.opencontainers.image.base.name"]
        del config["config"]["Labels"]["org.opencontainers.image.base.digest"]

    rewrite_config(ws.root / "image", tag, unlabel)
    result = ws.envkit("verify", "--image", f"oci:image:{tag}", "--json")
    assert "note: the image names no base, so every layer is checked as envkit's" in result.stderr
    assert any(f["kind"] == "outside-prefix" and f["detail"].startswith("/etc/motd ") for f in _findings(result))
    assert ws.envkit("verify", "--image", f"oci:image:{tag}", "--base", BASE).returncode == 0
