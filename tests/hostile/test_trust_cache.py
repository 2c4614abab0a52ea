"""A cache others can write (issue 14 item 11): a CI cache restored from another branch, a team cache
on a shared machine. Its writers cannot read the user's files, so they cannot seal an entry: a layer
cache entry, a fragment or an archive's `verified` marker this user did not seal is not trusted, and
a bake from such a cache ships what the lock's packages make (the digest of a cold bake), warning
about every entry that named something else."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

import conda_envkit.bake as bake_module
from tests.hostile.conftest import Workspace, assert_refused, locked_workspace

PACKAGES = ["python", "honest", "linky"]  # one small-package group each: three layers


@pytest.fixture
def ws(tmp_path: Path, hostile_channel: Path) -> Workspace:
    # A channel of this test's own: deleting it shows that no package is fetched.
    channel = tmp_path / "channel"
    shutil.copytree(hostile_channel, channel)
    return locked_workspace(tmp_path / "work", channel, PACKAGES)


def _bake(ws: Workspace, *args: str, cache: Path | None = None, state: Path | None = None) -> tuple[str, str]:
    """(image digest, stderr) of a bake into `out` (an OCI layout)."""
    env = {"ENVKIT_CACHE_DIR": str(cache or ws.cache)}
    if state is not None:
        env["XDG_STATE_HOME"] = str(state)
    shutil.rmtree(ws.root / "out", ignore_errors=True)
    result = ws.envkit("bake", "-q", "--oci", "out", "-p", "linux-64", *args, env=env)
    assert result.returncode == 0, result.output
    return json.loads((ws.root / "bake.json").read_text())["image"]["digest"], result.stderr


def _layers(ws: Workspace) -> list[dict]:
    return json.loads((ws.root / "bake.json").read_text())["platforms"]["linux-64"]["layers"]


def _owned(cache: Path, kind: str) -> Path:
    """This user's directory of `kind` entries (layers, fragments, pkginfo) in `cache`."""
    (owned,) = (cache / kind).iterdir()
    return owned


def _entries(cache: Path) -> dict[str, Path]:
    """Layer cache entries by the blob digest they name."""
    return {json.loads(p.read_text())["digest"]: p for p in _owned(cache, "layers").iterdir() if not p.name.startswith(".")}


def _repoint(cache: Path, layers: list[dict]) -> str:
    """Make the entry of the first package layer name the second's blob (a valid blob, with its size,
    diff_id, stamp and seal); return the package it was for."""
    entries = _entries(cache)
    victim, other = layers[0], layers[1]
    entries[victim["digest"]].write_text(entries[other["digest"]].read_text())
    return victim["packages"][0]


def test_a_repointed_layer_entry_is_rebuilt_and_reported(ws: Workspace) -> None:
    cold, _ = _bake(ws)
    package = _repoint(ws.cache, _layers(ws))
    digest, stderr = _bake(ws)
    assert digest == cold
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and package in warnings[0] and "layer cache entry" in warnings[0], stderr
    # Reported once: the entry is the right one (and sealed) now.
    assert _bake(ws) == (cold, "")


def test_an_entry_sealed_without_the_secret_is_not_trusted(ws: Workspace) -> None:
    cold, _ = _bake(ws)
    layers = _layers(ws)
    entries = _entries(ws.cache)
    victim = entries[layers[0]["digest"]]
    other = json.loads(entries[layers[1]["digest"]].read_text())
    fields = {k: other[k] for k in ("digest", "size", "diff_id", "stamp")}
    from conda_envkit.cache_seal import CacheSeal

    guessed = CacheSeal(b"0" * 64)  # anyone's secret but this user's
    victim.write_text(json.dumps({**fields, "seal": guessed.sign("layer", victim.name, fields)}))
    digest, stderr = _bake(ws)
    assert digest == cold
    assert layers[0]["packages"][0] in stderr and "warning: " in stderr


def test_a_cache_restored_from_another_home_is_used_for_its_archives_only(ws: Workspace, tmp_path: Path) -> None:
    cold, _ = _bake(ws, state=tmp_path / "ci-runner-1")
    _repoint(ws.cache, _layers(ws))  # one poisoned entry among honest ones
    restored = tmp_path / "restored-cache"
    shutil.copytree(ws.cache, restored)  # what actions/cache does: new files, new inodes
    shutil.rmtree(tmp_path / "channel")  # every package must come from the restored cache
    # Another runner's secret: none of its entries is this runner's, so none is used; one warning says why and what to do
    # (it said nothing: a restored cache looked as if it did not work).
    digest, stderr = _bake(ws, cache=restored, state=tmp_path / "ci-runner-2")
    assert digest == cold
    (warning,) = stderr.splitlines()
    assert f"linux-64: {len(PACKAGES)} of the layers built had an entry in this cache sealed by another secret" in warning, stderr
    assert "give them the same seal secret" in warning
    # From then on the runner has entries of its own: the next bake reuses every layer.
    result = ws.envkit(
        "bake", "--oci", "again", "-p", "linux-64", env={"ENVKIT_CACHE_DIR": str(restored), "XDG_STATE_HOME": str(tmp_path / "ci-runner-2")}
    )
    assert result.returncode == 0, result.output
    assert f"({len(PACKAGES)} reused from the layer cache)" in result.stderr and "warning" not in result.stderr


def test_runners_that_share_the_secret_share_warm_layers(ws: Workspace, tmp_path: Path) -> None:
    # The documented way to keep a restored CI cache warm: the same secret on runners you trust.
    cold, _ = _bake(ws, state=tmp_path / "ci-runner-1")
    package = _repoint(ws.cache, _layers(ws))
    restored = tmp_path / "restored-cache"
    shutil.copytree(ws.cache, restored)
    shutil.rmtree(tmp_path / "channel")
    (tmp_path / "ci-runner-2" / "envkit").mkdir(parents=True)
    secret = tmp_path / "ci-runner-2" / "envkit" / "cache-seal.key"
    shutil.copyfile(tmp_path / "ci-runner-1" / "envkit" / "cache-seal.key", secret)
    secret.chmod(0o600)
    result = ws.envkit(
        "bake", "--oci", "out", "-p", "linux-64", env={"ENVKIT_CACHE_DIR": str(restored), "XDG_STATE_HOME": str(tmp_path / "ci-runner-2")}
    )
    assert result.returncode == 0, result.output
    assert json.loads((ws.root / "bake.json").read_text())["image"]["digest"] == cold
    assert f"({len(PACKAGES) - 1} reused from the layer cache; built: " in result.stderr  # all but the poisoned entry
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and package in warnings[0], result.stderr


def test_a_swapped_fragment_is_read_again_from_its_archive(ws: Workspace, tmp_path: Path) -> None:
    _bake(ws, "--compression", "gzip")
    fragments = _owned(ws.cache, "fragments")
    owner = {}
    for index in fragments.glob("*.json"):
        for path, *_ in json.loads(index.read_text())["members"]:
            if "/conda-meta/" in path:
                owner[path.rsplit("/", 1)[1].split("-")[0]] = index.with_suffix("")
    victim, other = owner["honest"], owner["linky"]
    for suffix in (".tar", ".json"):  # linky's fragment (index, seal and all) under honest's key
        shutil.copyfile(other.with_suffix(suffix), victim.with_suffix(suffix))
    # Another compression: new layer keys, same fragment keys, so the groups are assembled from fragments.
    digest, stderr = _bake(ws, "--compression", "zstd")
    cold, _ = _bake(ws, "--compression", "zstd", cache=tmp_path / "cold-cache")
    assert digest == cold
    assert "fragment cache entry" in stderr and "honest-1.0-0" in stderr, stderr


def test_a_swapped_archive_with_a_marker_for_its_new_stat_is_hashed_again(ws: Workspace) -> None:
    first, _ = _bake(ws)
    archive = next((ws.cache / "pkgs").glob("*/honest-1.0-0.conda"))
    other = next((ws.cache / "pkgs").glob("*/linky-1.0-0.conda"))
    archive.unlink()
    shutil.copyfile(other, archive)
    st = archive.stat()  # the marker format of envkit before the seal: sha256 and stat
    stamp = f"{archive.parent.name} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}\n"
    for marker in archive.parent.glob("verified*"):
        marker.write_text(stamp)
    for sub in ("layers", "fragments", "blobs"):
        shutil.rmtree(ws.cache / sub)
    digest, _ = _bake(ws)
    assert digest == first
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == archive.parent.name  # fetched again


def test_the_seal_secret_is_private(ws: Workspace, tmp_path: Path) -> None:
    state = tmp_path / "state"
    _bake(ws, state=state)
    secret = state / "envkit" / "cache-seal.key"
    assert secret.stat().st_mode & 0o777 == 0o600
    secret.chmod(0o644)  # readable by others: anyone could seal entries
    result = ws.envkit("bake", "-q", "--oci", "out2", "-p", "linux-64", env={"XDG_STATE_HOME": str(state)})
    assert_refused(result, str(secret))
    assert not os.path.exists(ws.root / "out2")


def test_a_cached_blob_edited_in_place_with_its_mtime_put_back_is_hashed_again(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stamps a bake keeps current (size, mtime, ctime, inode) still notice an edit that restores the mtime.
    # (Each bake here goes to a fresh `out`: every blob's stamp moved, and they are hashed again on two threads.)
    monkeypatch.setattr(bake_module, "usable_cpus", lambda: 2)
    first, _ = _bake(ws)
    _bake(ws)  # the stamps are settled after an OCI output
    blob = ws.cache / "blobs" / "sha256" / _layers(ws)[0]["digest"].partition(":")[2]
    before = blob.stat()
    with blob.open("r+b") as f:  # same size, same inode (the output layout's hard link sees it too)
        f.seek(before.st_size // 2)
        byte = f.read(1)
        f.seek(before.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    digest, _ = _bake(ws)
    assert digest == first
    written = ws.root / "out" / "blobs" / "sha256" / blob.name
    assert hashlib.sha256(written.read_bytes()).hexdigest() == blob.name


def test_a_cached_blob_replaced_by_a_symlink_is_rebuilt_and_never_reaches_the_output(ws: Workspace, tmp_path: Path) -> None:
    # Whoever writes the cache put a symlink to a file of theirs (the right bytes, for now) in a blob's place: it was
    # hashed through the link, and the --oci layout got that symlink, whose bytes they could change after the bake.
    first, _ = _bake(ws)
    blob = ws.cache / "blobs" / "sha256" / _layers(ws)[0]["digest"].partition(":")[2]
    theirs = tmp_path / "theirs"
    shutil.copyfile(blob, theirs)
    blob.unlink()
    blob.symlink_to(theirs)
    digest, _ = _bake(ws)
    assert digest == first
    out = ws.root / "out" / "blobs" / "sha256"
    assert [p.name for p in out.iterdir() if p.is_symlink()] == []
    assert not blob.is_symlink()  # (rebuilt in its place)
    theirs.write_bytes(b"changed afterwards")
    assert hashlib.sha256((out / blob.name).read_bytes()).hexdigest() == blob.name


def test_a_fifo_at_the_secrets_path_is_refused_not_waited_on(ws: Workspace, tmp_path: Path) -> None:
    # Opening it for reading blocked until a writer came: the bake hung for ever.
    state = tmp_path / "state"
    (state / "envkit").mkdir(parents=True)
    os.mkfifo(state / "envkit" / "cache-seal.key", 0o600)
    result = ws.envkit("bake", "-q", "--oci", "out", "-p", "linux-64", env={"XDG_STATE_HOME": str(state)})
    assert_refused(result, "cache-seal.key", "must be a regular file")


def test_a_cache_cleaned_while_a_bake_runs_is_an_error_not_a_traceback(ws: Workspace, tmp_path: Path) -> None:
    # `rm -rf $ENVKIT_CACHE_DIR/blobs` (or fragments) meanwhile: FileNotFoundError tracebacks, exit 1.
    from conda_envkit.cache_seal import user_seal
    from conda_envkit.oci.blobs import BlobStore, OciError
    from conda_envkit.oci.layer import Compression, FragmentStore, LayerCache, write_layer
    from conda_envkit.oci.tarstream import Member

    store = BlobStore(tmp_path / "blobs")
    layer = write_layer([Member("opt/a.txt", data=b"a", size=1)], store, Compression("gzip"), 0)
    shutil.rmtree(tmp_path / "blobs")
    with pytest.raises(OciError, match="is not in "):
        LayerCache(tmp_path / "layers", user_seal()).remember("k", layer, store)
    fragments = FragmentStore(tmp_path / "fragments", user_seal())
    pending = fragments.write("k", [Member("opt/a.txt", data=b"a", size=1)], 0)
    shutil.rmtree(tmp_path / "fragments")
    assert fragments.commit(pending) == []  # (a fragment is a shortcut: not kept)


def test_without_a_place_for_the_secret_the_bake_works_and_says_what_it_costs(ws: Workspace, tmp_path: Path) -> None:
    # A container run as a user whose home is not writable: nothing cached is trusted, nothing fails.
    first, _ = _bake(ws)
    (tmp_path / "not-a-directory").write_text("")
    digest, stderr = _bake(ws, state=tmp_path / "not-a-directory" / "state")
    assert digest == first
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "cache seal's secret" in warnings[0] and "XDG_STATE_HOME" in warnings[0], stderr


def test_an_edited_package_record_is_read_again_from_the_archive(ws: Workspace) -> None:
    # pkginfo/ says what a package's conda-meta record holds (depends...) and how it is baked.
    first, _ = _bake(ws)
    record = next(p for p in _owned(ws.cache, "pkginfo").glob("*.json") if json.loads(p.read_text())["name"] == "honest")
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "depends": ["backdoor >=1"]}))  # its seal no longer matches
    for sub in ("layers", "fragments", "blobs"):
        shutil.rmtree(ws.cache / sub)
    digest, _ = _bake(ws)
    assert digest == first
    assert "backdoor" not in record.read_text()


def test_users_sharing_a_cache_keep_their_own_entries(ws: Workspace, tmp_path: Path) -> None:
    # A team cache: each user trusts only what they sealed, and nobody's bake discards another's.
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    first, _ = _bake(ws, state=alice)
    # Built again for bob (alice's entries are not his). Both are one uid here, so bob's bake says so as for a cache
    # restored from another runner; a directory of another uid (a real other user's) is not counted.
    digest, stderr = _bake(ws, state=bob)
    assert digest == first and "sealed by another secret" in stderr and len(stderr.splitlines()) == 1, stderr
    env = {"ENVKIT_CACHE_DIR": str(ws.cache), "XDG_STATE_HOME": str(alice)}
    again = ws.envkit("bake", "--oci", "again", "-p", "linux-64", env=env)
    assert again.returncode == 0, again.output
    assert f"({len(PACKAGES)} reused from the layer cache)" in again.stderr and "download" not in again.stderr.replace("0 packages", "")
    assert len(list((ws.cache / "layers").iterdir())) == 2


def test_a_scan_marker_planted_in_the_cache_does_not_pass_an_unsafe_base(ws: Workspace, tmp_path: Path) -> None:
    # A base layer with an entry `../escape`. Whoever writes the cache can compute the scan marker's key (from the
    # base's public digests) and plant a marker saying the layer was scanned; or a symlink where the marker's temp
    # file went (a fixed name), to make the bake write through it. The layer is scanned anyway (markers are sealed)
    # and refused, and nothing is written through the symlink.
    from conda_envkit.cache_seal import user_seal
    from conda_envkit.testing.hostile_images import directory, new_file, write_base_layout

    base = tmp_path / "base"
    write_base_layout(base, [[directory("etc"), new_file("../escape", b"x")]])
    blob = lambda digest: json.loads((base / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())  # noqa: E731
    manifest = blob(json.loads((base / "index.json").read_text())["manifests"][0]["digest"])
    (layer,), (diff_id,) = manifest["layers"], blob(manifest["config"]["digest"])["rootfs"]["diff_ids"]
    key = hashlib.sha256(f"{layer['digest']} {diff_id}".encode()).hexdigest()
    scans = ws.cache / "blobs" / "scans"
    scans.mkdir(parents=True)
    forged = {"links": {}, "conda_prefixes": []}
    for name in (key, f"{key}.{user_seal().owner}"):
        (scans / name).write_text(json.dumps({**forged, "seal": "0" * 64}))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (scans / f".{key}.tmp").symlink_to(victim)
    env = {"ENVKIT_CACHE_DIR": str(ws.cache)}
    result = ws.envkit("bake", "-q", "--oci", "out", "-p", "linux-64", "--base", f"oci:{base}:base", env=env)
    assert_refused(result, "'../escape' escapes the image root")
    assert victim.read_text() == "precious"
    assert not (ws.root / "out").exists()


def test_a_symlinked_scans_directory_is_refused(ws: Workspace, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (ws.cache / "blobs").mkdir(parents=True)
    (ws.cache / "blobs" / "scans").symlink_to(elsewhere)
    result = ws.envkit("bake", "-q", "--oci", "out", "-p", "linux-64", env={"ENVKIT_CACHE_DIR": str(ws.cache)})
    assert_refused(result, "scans")
    assert list(elsewhere.iterdir()) == []


def test_a_directory_at_an_archives_name_is_replaced(ws: Workspace) -> None:
    # docs/security.md: an entry that is a directory is replaced. Bake and install fetch the archive again (bake was a
    # traceback; install blamed --prefix).
    env = {"ENVKIT_CACHE_DIR": str(ws.cache)}
    assert ws.envkit("install", "-q", "--prefix", "one", "-p", "linux-64", env=env).returncode == 0
    archives = sorted((ws.cache / "pkgs").glob("*/*.conda"))
    assert archives
    for step in ("bake", "install"):
        shutil.rmtree(ws.cache / "extracted", ignore_errors=True)  # (with the layer cache empty, every archive is needed)
        for archive in archives:
            archive.unlink()
            (archive / "sub").mkdir(parents=True)
        if step == "bake":
            _bake(ws)
        else:
            assert ws.envkit("install", "-q", "--prefix", "two", "-p", "linux-64", env=env).returncode == 0
        assert all(archive.is_file() for archive in archives)


def test_a_file_planted_at_the_image_configs_name_is_replaced_not_read(ws: Workspace) -> None:
    # The config (and manifest) bytes are in hand: a file at their blob's name that is not them (a 64 GiB sparse file
    # here) is replaced. It was kept, hashed whole on every bake, and refused, until deleted by hand.
    cold, _ = _bake(ws)
    layout = ws.root / "out"
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    config_digest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())["config"]["digest"]
    planted = ws.cache / "blobs" / "sha256" / config_digest.split(":")[1]
    planted.unlink()
    with planted.open("wb") as f:
        f.truncate(64 << 30)
    assert _bake(ws)[0] == cold
    assert planted.stat().st_size < 1 << 20


def test_archives_get_the_umasks_mode_for_a_cache_a_group_shares(ws: Workspace) -> None:
    # A group's cache (setgid, umask 002): the archives were 0600 whatever the umask (mkstemp's), and another member's
    # bake was a PermissionError traceback reading them.
    import subprocess
    import sys

    command = f"umask 002; exec {sys.executable} -m conda_envkit install -q --prefix env -p linux-64"
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(ws.cache)}
    proc = subprocess.run(["sh", "-c", command], cwd=ws.root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    archives = list((ws.cache / "pkgs").glob("*/*.conda"))
    assert archives and {a.stat().st_mode & 0o777 for a in archives} == {0o664}
