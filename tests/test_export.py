"""envkit export and the tracking API against real trackers: an MLflow server, W&B offline
runs, and the real local registry (OCI referrers by the tag-schema fallback)."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MlflowServer, Registry, run_envkit, write_env

MLFLOW_FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _locked_and_baked(work: Path, channel: Path, cache: Path, *bake_args: str) -> dict:
    write_env(work, f"channels: [{channel}]\ndependencies: [greet=1.0, smalldata]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    result = run_envkit("bake", "-q", *bake_args, cwd=work, env={"ENVKIT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.output
    return json.loads((work / "bake.json").read_text())


def _locked(tmp_path: Path, image_channel: Path) -> Path:
    """A lock of greet from the image channel, in tmp_path/work."""
    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    return work


def test_json_env_and_github_outputs_from_a_lock(tmp_path: Path, image_channel: Path) -> None:
    work = _locked(tmp_path, image_channel)
    lock_hash = run_envkit("hash", cwd=work).stdout.split()[0]
    as_json = run_envkit("export", "--lockfile", "conda-lock.yml", "--to", "json", cwd=work)
    data = json.loads(as_json.stdout)
    assert data["schema"] == "envkit.environment/1"
    assert data["lock_hash"] == lock_hash and data["platform"] == "linux-64" and data["image_digest"] is None
    assert data["packages"] == ["busybox=1.35.0=h0_0", "greet=1.0=0"]
    env_lines = run_envkit("export", "--lockfile", "conda-lock.yml", "--to", "env", cwd=work).stdout.splitlines()
    assert f"ENVKIT_LOCK_HASH={lock_hash}" in env_lines and "ENVKIT_PLATFORM=linux-64" in env_lines
    from conda_envkit import __version__

    assert f"ENVKIT_VERSION={__version__}" in env_lines
    assert all(line.startswith("ENVKIT_") and not line.startswith("ENVKIT_ENVKIT_") for line in env_lines)
    outputs = tmp_path / "github_output"
    run_envkit("export", "--lockfile", "conda-lock.yml", "--to", "github", cwd=work, env={"GITHUB_OUTPUT": str(outputs)})
    assert f"lock_hash={lock_hash}" in outputs.read_text().splitlines()
    default = run_envkit("export", "--to", "json", cwd=work)  # ./conda-lock.yml, as every command reads by default
    assert json.loads(default.stdout)["lock_hash"] == lock_hash
    missing = run_envkit("export", "--to", "json", cwd=tmp_path)
    assert missing.returncode == 2 and "nothing to export" in missing.stderr


def test_json_and_env_are_refused_one_output_file(tmp_path: Path, image_channel: Path) -> None:
    # The second replaced the first in the one -o file (the JSON record was lost), and both said "wrote", exit 0.
    work = _locked(tmp_path, image_channel)
    both = run_envkit("export", "--lockfile", "conda-lock.yml", "--to", "json", "--to", "env", "-o", "record.out", cwd=work)
    assert both.returncode == 2, both.output
    assert "-o record.out: one file for --to json and --to env" in both.stderr, both.stderr
    assert not (work / "record.out").exists() and both.stdout == ""


def test_one_run_id_for_mlflow_and_wandb_is_refused(tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer) -> None:
    # One id went to both: MLflow tagged that run, and W&B (resume="allow") silently made a new run of that id.
    from mlflow.tracking import MlflowClient

    work = _locked(tmp_path, image_channel)
    client = MlflowClient(mlflow_server.uri)
    run = client.create_run(client.create_experiment(f"both-{tmp_path.name}"))
    args = ("export", "--lockfile", "conda-lock.yml", "--to", "mlflow", "--to", "wandb", "--run-id", run.info.run_id)
    both = run_envkit(*args, cwd=work, env={"MLFLOW_TRACKING_URI": mlflow_server.uri, "WANDB_MODE": "offline", **MLFLOW_FAST_FAIL})
    assert both.returncode == 2, both.output
    assert f"--run-id {run.info.run_id}: names one run, for both --to mlflow and --to wandb" in both.stderr, both.stderr
    assert "export once per tracker" in both.stderr
    assert not any(k.startswith("envkit.") for k in client.get_run(run.info.run_id).data.tags)  # nothing sent first
    assert not (work / "wandb").exists()


def test_an_image_gives_trackers_the_lock_inside_it(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer, registry: Registry
) -> None:
    # `export --image ... --to mlflow` logged the package count alone: with no lock file named, the run got no
    # artifact. The lock bake put in the image (its hash checked against the labels) is now the run's artifact.
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    repo = f"{registry.host}/team/artifact"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image", "--push", repo, "--insecure")
    tag = record["tags"][0]
    client = MlflowClient(mlflow_server.uri)
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    elsewhere = tmp_path / "elsewhere"  # no lock file beside it: the image is all there is
    elsewhere.mkdir()
    for n, (image, extra) in enumerate(((f"oci:{work / 'image'}:{tag}", ()), (f"{repo}:{tag}", ("--insecure",)))):
        experiment = f"image-{n}-{tmp_path.name}"
        result = run_envkit("export", "--image", image, *extra, "--to", "mlflow", "--experiment", experiment, cwd=elsewhere, env=env)
        assert result.returncode == 0, result.output
        (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert run.data.tags["envkit.lock_hash"] == record["lock_hash"]
        local = client.download_artifacts(run.info.run_id, "envkit/conda-lock.yml", str(tmp_path / f"got-{n}"))
        assert Path(local).read_bytes() == (work / "conda-lock.yml").read_bytes(), image


def test_an_images_lock_holding_credentials_is_not_sent(tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer) -> None:
    # An image baked before bake refused such locks (or by hand) holds a lock whose URLs hold a token: the run is
    # stamped, the file is not sent, and the token is not printed.
    from mlflow.tracking import MlflowClient

    from conda_envkit.lockmodel import lock_hash, parse_lock_text
    from conda_envkit.testing.hostile_images import Entry, find, repack_layout

    work = tmp_path / "work"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    tag = record["tags"][0]
    secret = "Tok-SeCrEt-42"
    text = (work / "conda-lock.yml").read_text().replace(image_channel.as_uri(), f"https://ci-bot:{secret}@conda.example.com/private")
    held = str(lock_hash(parse_lock_text(text, Path("held.yml"))))

    def hold(layers: list[list[Entry]], config: dict[str, Any]) -> None:
        find(layers, "conda-meta/envkit/conda-lock.yml").data = text.encode()
        config["config"]["Labels"]["dev.envkit.lock-hash"] = held

    repack_layout(work / "image", tag, hold)
    experiment = f"held-{tmp_path.name}"
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    result = run_envkit("export", "--image", f"oci:image:{tag}", "--to", "mlflow", "--experiment", experiment, cwd=work, env=env)
    assert result.returncode == 0, result.output
    assert "its URLs hold credentials (for conda.example.com)" in result.stderr and secret not in result.output, result.output
    client = MlflowClient(mlflow_server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.data.tags["envkit.lock_hash"] == held
    assert client.list_artifacts(run.info.run_id) == []


def test_a_lock_of_several_platforms_records_this_machines(tmp_path: Path, image_channel: Path) -> None:
    """No -p: the platform this machine runs (what a training run here uses), never a record without packages."""
    from conda_envkit.platforms import host_platform

    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\nplatforms: [linux-64, linux-aarch64]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    data = json.loads(run_envkit("export", "--lockfile", "conda-lock.yml", "--to", "json", cwd=work).stdout)
    assert data["platform"] == host_platform() == "linux-64" and "greet=1.0=0" in data["packages"]
    other = json.loads(run_envkit("export", "--lockfile", "conda-lock.yml", "-p", "linux-aarch64", "--to", "json", cwd=work).stdout)
    assert other["platform"] == "linux-aarch64" and other["packages"]

    foreign = tmp_path / "foreign"  # a lock for other machines only: the platform must be named
    write_env(foreign, f"channels: [{image_channel}]\nplatforms: [linux-aarch64, linux-64]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=foreign).returncode == 0
    text = (foreign / "conda-lock.yml").read_text().replace("linux-64", "linux-ppc64le")  # as a lock made for two other machines
    (foreign / "conda-lock.yml").write_text(text)
    refused = run_envkit("export", "--lockfile", "conda-lock.yml", "--to", "json", cwd=foreign)
    assert refused.returncode == 2, refused.output
    assert "has several platforms, and not this machine's" in refused.stderr and "pass -p" in refused.stderr


def test_mlflow_run_and_model_version_are_tagged(tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer) -> None:
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment(f"envkit-{tmp_path.name}")
    run = client.create_run(experiment)
    model = f"model-{tmp_path.name}"
    client.create_registered_model(model)
    version = client.create_model_version(model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    args = ("export", "--record", "bake.json", "--lockfile", "conda-lock.yml", "--to", "mlflow", "--to", "json")
    result = run_envkit(*args, "--run-id", run.info.run_id, "--model", model, "--version", version.version, cwd=work, env=env)
    assert result.returncode == 0, result.output
    exported = json.loads(result.stdout)

    tags = client.get_run(run.info.run_id).data.tags
    assert tags["envkit.lock_hash"] == record["lock_hash"] == exported["lock_hash"]
    assert tags["envkit.image_digest"] == record["image"]["digest"]
    assert tags["envkit.platform"] == "linux-64" and tags["envkit.packages"] == "3"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "envkit")]
    assert artifacts == ["envkit/conda-lock.yml"]
    local = client.download_artifacts(run.info.run_id, "envkit/conda-lock.yml", str(tmp_path))
    assert Path(local).read_text() == (work / "conda-lock.yml").read_text()
    version_tags = client.get_model_version(model, version.version).tags
    assert version_tags["envkit.image_digest"] == record["image"]["digest"]
    assert f"mlflow: tagged run {run.info.run_id} and model {model}/{version.version}" in result.stderr
    # The model version alone: no run named (it said "tagged run  and model ...").
    alone = run_envkit(*args, "--model", model, "--version", version.version, cwd=work, env=env)
    assert alone.returncode == 0 and f"mlflow: tagged model {model}/{version.version}\n" in alone.stderr, alone.output


def test_mlflow_errors_log_nothing(tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer) -> None:
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    client = MlflowClient(mlflow_server.uri)
    run = client.create_run(client.create_experiment(f"errors-{tmp_path.name}"))
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    base = ("export", "--record", "bake.json", "--lockfile", "conda-lock.yml", "--to", "mlflow")
    unknown_run = run_envkit(*base, "--run-id", "0" * 32, cwd=work, env=env)
    assert unknown_run.returncode == 2 and "run 000" in unknown_run.stderr
    unknown_model = run_envkit(*base, "--run-id", run.info.run_id, "--model", "no-such-model", "--version", "1", cwd=work, env=env)
    assert unknown_model.returncode == 2 and "no-such-model" in unknown_model.stderr
    assert not any(k.startswith("envkit.") for k in client.get_run(run.info.run_id).data.tags)
    assert client.list_artifacts(run.info.run_id) == []
    unreachable = run_envkit(*base, "--run-id", run.info.run_id, cwd=work, env={**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert unreachable.returncode == 2 and "127.0.0.1:9" in unreachable.stderr


def test_mlflow_destination_comes_from_the_tracking_uri_or_is_an_error(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer
) -> None:
    from mlflow.tracking import MlflowClient

    work = _locked(tmp_path, image_channel)
    args = ("export", "--lockfile", "conda-lock.yml", "--to", "mlflow", "--experiment", f"uri-{tmp_path.name}")
    unset = run_envkit(*args, cwd=work, env={"MLFLOW_TRACKING_URI": "", **MLFLOW_FAST_FAIL})
    assert unset.returncode == 2 and "MLFLOW_TRACKING_URI is not set" in unset.stderr
    assert sorted(p.name for p in work.iterdir()) == ["conda-lock.yml", "environment.yml"]  # no ./mlflow.db, no ./mlruns
    file_uri = (tmp_path / "mlruns").as_uri()
    as_file = run_envkit(*args, "--tracking-uri", file_uri, cwd=work, env={"MLFLOW_ALLOW_FILE_STORE": "", **MLFLOW_FAST_FAIL})
    assert as_file.returncode == 2 and f"MLflow at {file_uri}" in as_file.stderr and "MLFLOW_ALLOW_FILE_STORE" in as_file.stderr
    from_env = run_envkit(*args, cwd=work, env={"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL})
    assert from_env.returncode == 0, from_env.output
    experiment = MlflowClient(mlflow_server.uri).get_experiment_by_name(f"uri-{tmp_path.name}")
    runs = MlflowClient(mlflow_server.uri).search_runs([experiment.experiment_id])
    assert [r.data.tags["envkit.platform"] for r in runs] == ["linux-64"]


def test_an_artifact_store_that_cannot_be_written_is_one_error_and_leaves_no_run(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer
) -> None:
    # An experiment whose artifact location this machine does not have (a server run with --no-serve-artifacts):
    # a traceback and exit 1, and with --experiment a finished run without envkit's tags was left behind.
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    work = _locked(tmp_path, image_channel)
    client = MlflowClient(mlflow_server.uri)
    name = f"unwritable-{tmp_path.name}"
    experiment = client.create_experiment(name, artifact_location="file:///proc/envkit-not-here/artifacts")
    args = ("export", "--lockfile", "conda-lock.yml", "--to", "mlflow", "--experiment", name, "--tracking-uri", mlflow_server.uri)
    result = run_envkit(*args, cwd=work, env=MLFLOW_FAST_FAIL)  # (run_envkit: never a traceback)
    assert result.returncode == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"MLflow at {mlflow_server.uri}: log the lock file: " in errors[0], result.stderr
    assert client.search_runs([experiment]) == []  # the run envkit made is deleted, not left without its tags
    assert len(client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)) == 1


def test_a_bake_records_lock_is_found_beside_the_record(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bake.json names its lock relatively: from the repository's root (a CI step), `--record train/bake.json` said
    # "conda-lock.yml: lock file not found", and log_environment(record=...) logged no lock artifact, silently.
    import mlflow

    from conda_envkit.tracking import log_environment

    work = tmp_path / "work"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    assert record["lockfile"] == "conda-lock.yml"
    name = f"beside-{tmp_path.name}"
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    result = run_envkit("export", "--record", "work/bake.json", "--to", "mlflow", "--experiment", name, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.output
    client = mlflow.MlflowClient(mlflow_server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "envkit")] == ["envkit/conda-lock.yml"]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_experiment(name)
    with mlflow.start_run() as api_run:
        log_environment(api_run, record="work/bake.json")
    assert [a.path for a in client.list_artifacts(api_run.info.run_id, "envkit")] == ["envkit/conda-lock.yml"]
    local = client.download_artifacts(api_run.info.run_id, "envkit/conda-lock.yml", str(tmp_path / "downloaded"))
    assert Path(local).read_text() == (work / "conda-lock.yml").read_text()


def test_log_environment_from_training_code(tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer) -> None:
    import mlflow

    from conda_envkit.tracking import environment_info, log_environment

    work = tmp_path / "work"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_experiment(f"train-{tmp_path.name}")
    with mlflow.start_run() as run:
        info = log_environment(run, environment_info(record=work / "bake.json"), lockfile=work / "conda-lock.yml")
    tags = mlflow.MlflowClient(mlflow_server.uri).get_run(run.info.run_id).data.tags
    assert tags["envkit.lock_hash"] == info.lock_hash == record["lock_hash"]
    assert tags["envkit.image_digest"] == record["image"]["digest"]
    # As the error outside an environment says: `record=` (it was environment_info's only, a TypeError here).
    with mlflow.start_run() as run:
        again = log_environment(run, record=work / "bake.json")
    assert again.image_digest == record["image"]["digest"]


def _current_mlflow(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server as MLflow's current store (the variable set_tracking_uri sets is put back by monkeypatch)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    mlflow.set_tracking_uri(server.uri)


def test_log_environment_tags_the_run_in_mlflows_current_store(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's `with mlflow.start_run() as run: log_environment(run)` demanded MLFLOW_TRACKING_URI: a run in a
    # store no variable names (MLflow's own default, a notebook's set_tracking_uri) was refused.
    import mlflow

    from conda_envkit.tracking import log_environment

    work = _locked(tmp_path, image_channel)
    _current_mlflow(mlflow_server, monkeypatch)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # (set_tracking_uri sets it too)
    mlflow.set_experiment(f"current-{tmp_path.name}")
    with mlflow.start_run() as run:
        info = log_environment(run, lockfile=work / "conda-lock.yml")
    client = mlflow.MlflowClient(mlflow_server.uri)
    assert client.get_run(run.info.run_id).data.tags["envkit.lock_hash"] == info.lock_hash
    assert [a.path for a in client.list_artifacts(run.info.run_id, "envkit")] == ["envkit/conda-lock.yml"]

    # A run made by MlflowClient(tracking_uri=...) while MLflow's current store is another: tracking_uri= names it.
    other = client.create_run(client.get_experiment_by_name(f"current-{tmp_path.name}").experiment_id)
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    try:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        log_environment(other, lockfile=work / "conda-lock.yml", tracking_uri=mlflow_server.uri)
    finally:
        mlflow.set_tracking_uri(mlflow_server.uri)
    assert client.get_run(other.info.run_id).data.tags["envkit.lock_hash"] == info.lock_hash


def test_log_environment_leaves_mlflows_retry_settings_as_they_were(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # envkit bounds MLflow's retries for its own calls; they stayed in os.environ, so the rest of the training job
    # (and its subprocesses) retried 2 times instead of MLflow's 7, and a user's own value was the only one kept.
    import os

    import mlflow

    from conda_envkit.tracking import log_environment

    work = _locked(tmp_path, image_channel)
    _current_mlflow(mlflow_server, monkeypatch)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # the user's
    mlflow.set_experiment(f"retries-{tmp_path.name}")
    with mlflow.start_run() as run:
        info = log_environment(run, lockfile=work / "conda-lock.yml")
        assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ and "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR" not in os.environ
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert mlflow.MlflowClient(mlflow_server.uri).get_run(run.info.run_id).data.tags["envkit.lock_hash"] == info.lock_hash


def test_environment_info_inside_the_image(tmp_path: Path, image_channel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conda_envkit.tracking import environment_info

    work = tmp_path / "work"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{work / 'image'}:{record['tags'][0]}", str(bundle)], check=True)
    rootfs_lock = bundle / "rootfs" / "opt/conda/envs/env/conda-meta/envkit/conda-lock.yml"
    # What the image's config sets, pointed at the unpacked rootfs; the launcher passes the digest.
    monkeypatch.setenv("ENVKIT_LOCK_FILE", str(rootfs_lock))
    monkeypatch.setenv("ENVKIT_IMAGE_DIGEST", record["image"]["digest"])
    info = environment_info()
    assert info.source == "runtime"
    assert info.lock_hash == record["lock_hash"] and info.platform == "linux-64"
    assert info.image_digest == record["image"]["digest"]
    assert info.packages == ("busybox=1.35.0=h0_0", "greet=1.0=0", "smalldata=1.0=0")
    # A digest copied without its sha256: prefix is the launcher's variable, named as such (it blamed environment.json).
    monkeypatch.setenv("ENVKIT_IMAGE_DIGEST", record["image"]["digest"].removeprefix("sha256:"))
    from conda_envkit.record import RecordError

    with pytest.raises(RecordError) as refused:
        environment_info()
    assert refused.value.message.startswith("$ENVKIT_IMAGE_DIGEST is ") and "sha256:" in refused.value.hint


def _environment_info_warned() -> tuple[Any, list[str]]:
    """environment_info() of the running environment, and what it warned."""
    import warnings

    from conda_envkit.tracking import environment_info

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = environment_info()
    return info, [str(w.message) for w in caught]


@pytest.fixture
def activated_prefix(tmp_path: Path, image_channel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A prefix `envkit install` made, as $CONDA_PREFIX (an activated environment), outside any image."""
    import sys

    from tests.test_verify import _install

    prefix = _install(tmp_path / "work", image_channel, tmp_path / "cache", "greet=1.0, smalldata", "env")
    # This python runs from neither: the test process's own prefixes hold no envkit lock.
    assert not any((Path(p) / "conda-meta" / "envkit" / "conda-lock.yml").exists() for p in (sys.prefix, sys.base_prefix))
    monkeypatch.delenv("ENVKIT_LOCK_FILE", raising=False)
    monkeypatch.setenv("CONDA_PREFIX", str(prefix))
    return prefix


def test_environment_info_warns_when_conda_prefix_is_not_where_this_python_runs(activated_prefix: Path) -> None:
    # An environment activated in the shell, training started with another python (a venv, `uv run`): the run was
    # stamped with $CONDA_PREFIX's lock and packages, none of them loaded, and nothing said so.
    import sys

    info, (said,) = _environment_info_warned()
    assert f"the record is $CONDA_PREFIX's ({activated_prefix}), but this python runs from {sys.prefix}" in said, said
    assert info.lockfile == str(activated_prefix / "conda-meta" / "envkit" / "conda-lock.yml")


def test_environment_info_warns_when_the_prefix_changed_after_install(activated_prefix: Path) -> None:
    # `conda remove`/`conda install` into an envkit prefix: the run was stamped with the lock's packages, no sign of
    # the change (`envkit verify` sees it).
    def changed() -> list[str]:
        return [w for w in _environment_info_warned()[1] if "changed after envkit installed it" in w]

    hint = f"`envkit verify --prefix {activated_prefix}` says what changed"
    assert changed() == []
    removed = activated_prefix / "conda-meta" / "smalldata-1.0-0.json"
    kept = removed.read_bytes()
    removed.unlink()
    (said,) = changed()
    assert hint in said, said
    removed.write_bytes(kept)
    assert changed() == []
    (activated_prefix / "conda-meta" / "torch-9.9-0.json").write_text('{"name": "torch", "version": "9.9", "build": "0", "files": []}')
    (said,) = changed()
    assert hint in said, said


def test_wandb_offline_run_holds_config_and_artifact(tmp_path: Path, image_channel: Path) -> None:
    work = tmp_path / "work"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--oci", "image")
    env = {"WANDB_SILENT": "true", "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    args = ("export", "--record", "bake.json", "--lockfile", "conda-lock.yml", "--to", "wandb", "--wandb-mode", "offline")
    result = run_envkit(*args, "--wandb-dir", str(tmp_path), "--wandb-project", "envkit-test", cwd=work, env=env)
    assert result.returncode == 0, result.output
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    config: dict[str, str] = {}
    artifacts = []
    for item in _wandb_records(next(runs[0].glob("*.wandb"))):
        kind = item.WhichOneof("record_type")
        if kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in item.config.update})
        elif kind == "artifact":
            artifacts.append((item.artifact.name, item.artifact.type, [e.path for e in item.artifact.manifest.contents]))
    assert config["envkit.lock_hash"] == record["lock_hash"] and config["envkit.image_digest"] == record["image"]["digest"]
    assert artifacts == [(f"conda-lock-{record['lock_hash'][7:19]}", "conda-environment", ["conda-lock.yml"])]
    # A W&B setting it cannot take: the error names it (it said only "1 validation error for Settings").
    bad = run_envkit(*args, "--wandb-dir", str(tmp_path), cwd=work, env={**env, "WANDB_CONSOLE": "sideways"})
    assert bad.returncode == 2 and "1 validation error for Settings; console;" in bad.stderr, bad.output


def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline run's transaction log, parsed with wandb's own protobuf classes.

    Offline runs only write this log (files/config.yaml appears on sync), and wandb 0.2x+
    ships no Python reader for it: the framing is LevelDB's log format (a 7-byte file
    header, 32 KiB blocks, records of crc32/length/type + data, split FIRST/MIDDLE/LAST).
    """
    from wandb.proto import wandb_internal_pb2

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_lock_and_sbom_attached_to_the_pushed_image(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from conda_envkit.oci.registry import RegistryClient

    work = tmp_path / "work"
    repo = f"{registry.host}/team/train"
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", "--push", repo, "--insecure")
    attached = run_envkit("export", "--record", "bake.json", "--to", "registry", "--insecure", cwd=work)
    assert attached.returncode == 0, attached.output
    assert "Warning" not in attached.stderr, attached.stderr  # (cyclonedx warned of an incomplete dependency graph)
    inspected = run_envkit("inspect", f"{repo}:{record['tags'][0]}", "--insecure", cwd=work)
    assert inspected.returncode == 0, inspected.output
    report = json.loads(inspected.stdout)
    assert report["record"]["lock_hash"] == record["lock_hash"]
    assert report["referrers_found_by"] == "tag-schema"  # distribution 2.8 has no referrers API
    titles = {item["title"]: item for item in report["referrers"][record["image"]["digest"]]}
    assert set(titles) == {"conda-lock.yml", "sbom-linux-64.cdx.json"}
    assert titles["sbom-linux-64.cdx.json"]["artifact_type"] == "application/vnd.cyclonedx+json"
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{repo}"], capture_output=True, text=True, check=True)
    assert "sha256-" + record["image"]["digest"][7:] in json.loads(tags.stdout)["Tags"]

    client = RegistryClient(registry.host, insecure=True)
    manifest = json.loads(client.get_manifest("team/train", titles["sbom-linux-64.cdx.json"]["digest"])[0])
    assert manifest["subject"]["digest"] == record["image"]["digest"]
    sbom_path = tmp_path / "sbom.json"
    client.fetch_blob("team/train", manifest["layers"][0]["digest"], sbom_path)
    sbom = sbom_path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    purls = {c["purl"] for c in json.loads(sbom)["components"]}
    assert any(p.startswith("pkg:conda/greet@1.0?build=0") for p in purls)
    assert {c.get("licenses", [{}])[0].get("license", {}).get("id") for c in json.loads(sbom)["components"]} == {"MIT"}
    document = json.loads(sbom)
    (image,) = [d for d in document["dependencies"] if d["ref"] == document["metadata"]["component"]["bom-ref"]]
    assert sorted(image["dependsOn"]) == sorted(c["bom-ref"] for c in document["components"])  # the image holds them all
    # Attaching again keeps one entry per artifact.
    again = run_envkit("export", "--record", "bake.json", "--to", "registry", "--insecure", cwd=work)
    assert again.returncode == 0
    report = json.loads(run_envkit("inspect", f"{repo}:{record['tags'][0]}", "--insecure", cwd=work).stdout)
    assert len(report["referrers"][record["image"]["digest"]]) == 2


def test_record_read_back_from_an_image_layout_and_registry(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    work = tmp_path / "work"
    repo = f"{registry.host}/team/readback"
    bake_args = ("--oci", "image", "--docker-archive", "image.tar", "--push", repo, "--insecure")
    record = _locked_and_baked(work, image_channel, tmp_path / "cache", *bake_args)
    tag = record["tags"][0]
    # `inspect` takes every form `bake --base` takes.
    packages: dict[str, list[str]] = {}
    for image in ("oci:image", f"oci:image:{tag}", "docker-archive:image.tar", f"{repo}:{tag}"):
        inspected = run_envkit("inspect", image, "--insecure", cwd=work)
        assert inspected.returncode == 0, inspected.output
        report = json.loads(inspected.stdout)
        assert report["record"]["lock_hash"] == record["lock_hash"] and report["record"]["platform"] == "linux-64"
        if not image.startswith("docker-archive:"):  # an archive keeps no manifest digest
            assert report["digest"] == record["image"]["digest"]
        # The tag it was read by is the record's (it was [] whatever the reference said).
        assert report["record"]["tags"] == ([tag] if image.endswith(f":{tag}") else []), (image, report["record"])
        packages[image] = report["record"]["packages"]
    # The packages of the lock inside the image: from a registry too (they were [] there), as from the layout.
    assert packages[f"{repo}:{tag}"] == packages[f"oci:image:{tag}"] and packages[f"oci:image:{tag}"], packages
    missing = run_envkit("inspect", "oci:no-such-dir", cwd=work)
    assert missing.returncode == 2 and "no-such-dir" in missing.stderr
    for image, extra in ((f"oci:image:{tag}", ()), (f"{repo}:{tag}", ("--insecure",))):
        result = run_envkit("export", "--image", image, *extra, "--to", "json", cwd=work)
        assert result.returncode == 0, result.output
        data = json.loads(result.stdout)
        assert data["source"] == "image" and data["lock_hash"] == record["lock_hash"]
        assert data["image_digest"] == record["image"]["digest"] and data["platform"] == "linux-64"
        if image.startswith("oci:"):  # the package list from the lock baked into the image, checked against the label
            assert data["packages"] == ["busybox=1.35.0=h0_0", "greet=1.0=0", "smalldata=1.0=0"], data["packages"]

    # An image whose label names another lock than the one inside it: its record is refused, not half believed.
    from conda_envkit.testing.hostile_images import rewrite_config

    def relabel(config: dict[str, Any]) -> None:
        config["config"]["Labels"]["dev.envkit.lock-hash"] = "sha256:" + "0" * 64

    rewrite_config(work / "image", tag, relabel)
    lied = run_envkit("export", "--image", f"oci:image:{tag}", "--to", "json", cwd=work)
    assert lied.returncode == 2, lied.output
    assert "the lock inside the image does not match its dev.envkit.lock-hash label" in lied.stderr

    # A lock copy that is not a lock at all: an error naming it, not a traceback (run_envkit checks).
    from conda_envkit.testing.hostile_images import Entry, find, repack_layout

    def garble(layers: list[list[Entry]], _config: dict[str, Any]) -> None:
        find(layers, "conda-meta/envkit/conda-lock.yml").data = b"version: [unclosed\n\xff"

    repack_layout(work / "image", tag, garble)
    broken = run_envkit("export", "--image", f"oci:image:{tag}", "--to", "json", cwd=work)
    assert broken.returncode == 2, broken.output
    assert "conda-meta/envkit/conda-lock.yml" in broken.stderr and "invalid YAML" in broken.stderr, broken.stderr


def test_export_format_json_says_that_to_chooses_the_output(tmp_path: Path) -> None:
    # `envkit diff --format json` exists; `envkit export --format json` said "No such option '--format'. Did you mean
    # '--platform'?", which sends a user the wrong way.
    for args in (("--format", "json"), ("--format=json", "--to", "json")):
        result = run_envkit("export", *args, cwd=tmp_path)
        assert result.returncode == 2, result.output
        assert "Error: export has no --format: --to chooses the output (json, env, github" in result.stderr, result.stderr
        assert "e.g. `envkit export --to json`" in result.stderr and "--platform" not in result.stderr
