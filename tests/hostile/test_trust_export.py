"""`envkit export` of a record, an image or an environment that is someone else's (a pull request, a registry):
no file but the record's own lock leaves the machine, no credential goes where the record says, and no value
forges a line of `--to env`/`--to github`/`--to json` output. Against a real MLflow server and real registries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MlflowServer, Registry, run_envkit, write_env

MLFLOW_FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
CREDENTIALS = {"ENVKIT_REGISTRY_USER": "envkit", "ENVKIT_REGISTRY_PASSWORD": "s3cret-Pa55"}


def _baked(work: Path, channel: Path, *bake_args: str, env: dict[str, str] | None = None) -> dict:
    write_env(work, f"channels: [{channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    result = run_envkit("bake", "-q", *bake_args, cwd=work, env={"ENVKIT_CACHE_DIR": str(work.parent / "cache"), **(env or {})})
    assert result.returncode == 0, result.output
    return json.loads((work / "bake.json").read_text())


def _edited(work: Path, record: dict, name: str = "evil.json") -> str:
    (work / name).write_text(json.dumps(record))
    return name


@pytest.fixture
def baked(tmp_path: Path, image_channel: Path) -> tuple[Path, dict]:
    work = tmp_path / "work"
    return work, _baked(work, image_channel, "--oci", "image")


def test_a_record_cannot_choose_the_file_logged_as_its_lock(
    baked: tuple[Path, dict], image_channel: Path, mlflow_server: MlflowServer
) -> None:
    # A record naming a secret (or another lock) as its `lockfile`: refused before MLflow is written to.
    from mlflow.tracking import MlflowClient

    work, record = baked
    (work / "creds.env").write_text("AWS_SECRET_ACCESS_KEY=hunter2\n")
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    secret = _edited(work, {**record, "lockfile": str(work / "creds.env")})
    refused = run_envkit("export", "--record", secret, "--to", "mlflow", "--experiment", "exfiltrated", cwd=work, env=env)
    assert refused.returncode == 2 and "creds.env: not a conda-lock file" in refused.stderr, refused.output
    other = work.parent / "other"
    write_env(other, f"channels: [{image_channel}]\ndependencies: [smalldata]\n")
    assert run_envkit("lock", "-q", cwd=other).returncode == 0
    another = _edited(work, {**record, "lockfile": str(other / "conda-lock.yml")}, "other.json")
    mismatch = run_envkit("export", "--record", another, "--to", "mlflow", "--experiment", "exfiltrated", cwd=work, env=env)
    assert mismatch.returncode == 2 and "its lock hash is sha256:" in mismatch.stderr and record["lock_hash"] in mismatch.stderr
    assert MlflowClient(mlflow_server.uri).get_experiment_by_name("exfiltrated") is None  # nothing written


def test_what_mlflow_prints_stays_off_the_env_lines(baked: tuple[Path, dict], mlflow_server: MlflowServer) -> None:
    # `eval "$(envkit export --to env --to mlflow ...)"`: MLflow's "View run ... at: ..." went to stdout.
    work, record = baked
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, **MLFLOW_FAST_FAIL}
    both = run_envkit("export", "--record", "bake.json", "--to", "env", "--to", "mlflow", "--experiment", "stdout", cwd=work, env=env)
    assert both.returncode == 0, both.output
    assert both.stdout.splitlines() and all(line.startswith("ENVKIT_") for line in both.stdout.splitlines()), both.stdout
    as_json = run_envkit("export", "--record", "bake.json", "--to", "json", "--to", "mlflow", "--experiment", "stdout", cwd=work, env=env)
    assert json.loads(as_json.stdout)["lock_hash"] == record["lock_hash"]


SECRET = "Tok-SeCrEt-42"


def _lock_holding_credentials(work: Path, channel: Path, url: str) -> Path:
    """`work`'s lock as conda-lock writes it without --strip-auth (its channel URLs hold a credential's value), in
    `work`/../ci: its lock hash is its own."""
    text = (work / "conda-lock.yml").read_text()
    assert channel.as_uri() in text
    ci = work.parent / "ci"
    ci.mkdir(exist_ok=True)
    (ci / "conda-lock.yml").write_text(text.replace(channel.as_uri(), url))
    return ci / "conda-lock.yml"


@pytest.mark.parametrize("url", [f"https://conda.example.com/t/tk-{SECRET}/private", f"https://ci-bot:{SECRET}@conda.example.com/private"])
def test_a_lock_holding_credentials_is_not_sent_to_mlflow(
    tmp_path: Path, image_channel: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    # It was uploaded as the run's artifact envkit/conda-lock.yml: the token on the tracking server, for anyone who
    # can read the run. Now the run is stamped (its tags say which lock) without the file, and a warning says so.
    import mlflow

    from conda_envkit.tracking import log_environment

    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    lock = _lock_holding_credentials(work, image_channel, url)
    lock_hash = run_envkit("hash", "--lockfile", lock, cwd=work).stdout.split()[0]
    name = f"leak-{tmp_path.name}"
    args = ("export", "--lockfile", lock, "--to", "mlflow", "--experiment", name, "--tracking-uri", mlflow_server.uri)
    result = run_envkit(*args, cwd=work, env=MLFLOW_FAST_FAIL)
    assert result.returncode == 0, result.output
    assert "warning: " in result.stderr and "its URLs hold credentials (for conda.example.com)" in result.stderr, result.stderr
    assert SECRET not in result.output
    client = mlflow.MlflowClient(mlflow_server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.data.tags["envkit.lock_hash"] == lock_hash
    assert client.list_artifacts(run.info.run_id) == []

    # The tracking API: a warning (warnings.warn), the run tagged, no artifact.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_experiment(name)
    with mlflow.start_run() as api_run, pytest.warns(UserWarning, match="its URLs hold credentials") as warned:
        log_environment(api_run, lockfile=lock)
    assert all(SECRET not in str(w.message) for w in warned)
    assert client.get_run(api_run.info.run_id).data.tags["envkit.lock_hash"] == lock_hash
    assert client.list_artifacts(api_run.info.run_id) == []


def test_a_lock_holding_credentials_is_not_attached_to_an_image(tmp_path: Path, image_channel: Path, registry: Registry) -> None:
    # `--to registry` pushed it as the image's conda-lock.yml artifact, for anyone who can pull the image.
    from conda_envkit.oci.registry import RegistryClient, RegistryError

    work = tmp_path / "work"
    repo = f"{registry.host}/team/train"
    record = _baked(work, image_channel, "--push", repo, "--insecure")
    lock = _lock_holding_credentials(work, image_channel, f"https://conda.example.com/t/tk-{SECRET}/private")
    lock_hash = run_envkit("hash", "--lockfile", lock, cwd=work).stdout.split()[0]
    # The record of an image baked from that lock (the same packages: only their URLs hold the token).
    platform = dict(record["platforms"]["linux-64"])
    platform["labels"] = {**platform["labels"], "dev.envkit.lock-hash": lock_hash}
    baked_from_it = _edited(work, {**record, "lock_hash": lock_hash, "platforms": {"linux-64": platform}})
    result = run_envkit("export", "--record", baked_from_it, "--lockfile", lock, "--to", "registry", "--insecure", cwd=work)
    assert result.returncode == 2, result.output
    assert "its URLs hold credentials (for conda.example.com): the lock file is not sent anywhere" in result.stderr, result.stderr
    assert SECRET not in result.output
    with pytest.raises(RegistryError):  # no referrers tag: nothing was attached
        RegistryClient(registry.host, insecure=True).get_manifest("team/train", "sha256-" + record["image"]["digest"][7:])


def test_a_login_in_an_image_reference_is_not_exported(baked: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    # A launcher's ENVKIT_IMAGE `bob:TOKEN@registry/...`, a record's reference `https://bob:TOKEN@...`: exported
    # whole as envkit.image (run tags, $GITHUB_OUTPUT, --to env). The reference is kept, without the login.
    import subprocess

    from conda_envkit.tracking import environment_info

    work, record = baked
    digest = record["image"]["digest"]
    login = _edited(work, {**record, "references": [f"https://bob:{SECRET}@registry.example.com/team/train@{digest}"]})
    as_env = run_envkit("export", "--record", login, "--to", "env", cwd=work)
    assert as_env.returncode == 0, as_env.output
    assert f"ENVKIT_IMAGE=https://registry.example.com/team/train@{digest}" in as_env.stdout.splitlines(), as_env.stdout
    outputs = work / "github_output"
    as_github = run_envkit("export", "--record", login, "--to", "github", cwd=work, env={"GITHUB_OUTPUT": str(outputs)})
    assert as_github.returncode == 0, as_github.output
    assert f"image=https://registry.example.com/team/train@{digest}" in outputs.read_text().splitlines()
    assert SECRET not in as_env.output + as_github.output + outputs.read_text()

    bundle = work.parent / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{work / 'image'}:{record['tags'][0]}", str(bundle)], check=True)
    monkeypatch.setenv("ENVKIT_LOCK_FILE", str(bundle / "rootfs" / "opt/conda/envs/env/conda-meta/envkit/conda-lock.yml"))
    monkeypatch.setenv("ENVKIT_IMAGE_DIGEST", digest)
    monkeypatch.setenv("ENVKIT_IMAGE", f"bob:{SECRET}@registry.example.com/team/train:1")
    info = environment_info()
    assert info.image == "registry.example.com/team/train:1" and info.image_digest == digest
    assert SECRET not in json.dumps(info.to_json())


def _label(record: dict, key: str, value: object) -> dict:
    platform = dict(record["platforms"]["linux-64"])
    platform["labels"] = {**platform["labels"], f"dev.envkit.{key}": value}
    return {**record, "platforms": {"linux-64": platform}}


def _created(record: dict, value: str) -> dict:
    platform = dict(record["platforms"]["linux-64"])
    platform["labels"] = {**platform["labels"], "org.opencontainers.image.created": value}
    return {**record, "platforms": {"linux-64": platform}}


def _package(record: dict, **fields: object) -> dict:
    platform = dict(record["platforms"]["linux-64"])
    platform["packages"] = [{**platform["packages"][0], **fields}, *platform["packages"][1:]]
    return {**record, "platforms": {"linux-64": platform}}


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda r: _label(r, "blas", "mkl\nLD_PRELOAD=/tmp/evil.so"), "labels.dev.envkit.blas 'mkl\\nLD_PRELOAD"),
        (lambda r: _label(r, "blas", "mkl\ud800"), "unpaired surrogate"),
        (lambda r: _label(r, "lock-hash", "sha256:" + "0" * 64), "is not the record's lock_hash"),
        (lambda r: _label(r, "platform", 5), "labels.dev.envkit.platform '5' is not a string"),
        # Exported as osx-arm64 with linux-64's packages and manifest:
        (lambda r: _label(r, "platform", "osx-arm64"), "platforms.linux-64.labels.dev.envkit.platform 'osx-arm64' is not linux-64"),
        (lambda r: _label(r, "cuda", "12.4;id"), "cuda '12.4;id' does not have the form of one"),
        (lambda r: {**r, "lock_hash": "not a hash"}, "lock_hash 'not a hash' is not a lock hash"),
        (lambda r: {**r, "references": ["x" * 150_000]}, "references[0]"),
        (lambda r: {**r, "tags": "abc"}, "tags 'abc' is not a list or absent"),
        (lambda r: {**r, "image": "sha256:abc"}, "image 'sha256:abc' is not an object"),
        (lambda r: {**r, "image": {}}, "image.digest 'None' is not a string"),
        (lambda r: {**r, "platforms": {"linux-64": "x"}}, "platforms.linux-64 'x' is not an object"),
        (lambda r: {**r, "platforms": {}}, "platforms '{}' names no platform"),
        (lambda r: {**r, "lockfile": 5}, "lockfile '5' is not a string or absent"),
        # What the SBOM of `--to registry` is made of (a traceback there, after the lock had been attached):
        (lambda r: _created(r, "yesterday"), "image.created 'yesterday' is not a time as bake writes it"),
        (lambda r: _package(r, license=["MIT"]), "packages[0].license \"['MIT']\" is not a string or absent"),
        (lambda r: _package(r, sha256="12"), "packages[0].sha256 '12' is not 64 hex digits"),
    ],
)
def test_a_record_value_that_would_forge_an_output_or_break_a_writer_is_refused(baked: tuple[Path, dict], edit, said: str) -> None:
    work, record = baked
    for to in ("env", "github", "json"):
        result = run_envkit(
            "export", "--record", _edited(work, edit(record)), "--to", to, cwd=work, env={"GITHUB_OUTPUT": str(work / "out")}
        )
        assert result.returncode == 2 and said in result.stderr, result.output  # (run_envkit: never a traceback)
        assert result.stdout == "" and not (work / "out").exists()


def test_environment_credentials_go_only_to_a_repository_the_user_names(
    tmp_path: Path, image_channel: Path, auth_registry: Registry
) -> None:
    # `--to registry` attaches where the record says the image was pushed. A record may be someone else's: the
    # environment's push credentials go there only when the user names it (--repository).
    work = tmp_path / "work"
    repo = f"{auth_registry.host}/team/app"
    record = _baked(work, image_channel, "--push", repo, "--insecure", env=CREDENTIALS)
    assert record["outputs"]["registry"] == repo
    said = run_envkit("export", "--record", "bake.json", "--to", "registry", "--insecure", cwd=work, env=CREDENTIALS)
    assert said.returncode == 2 and "authentication required" in said.stderr, said.output
    assert f"--repository {repo}" in said.stderr
    named = run_envkit("export", "--record", "bake.json", "--to", "registry", "--repository", repo, "--insecure", cwd=work, env=CREDENTIALS)
    assert named.returncode == 0, named.output
    assert "attached conda-lock.yml" in named.stderr
    # A repository that does not hold the image (a typo): nothing attached there, no referrers tag; a tag is refused.
    other = f"{auth_registry.host}/team/othr"
    typo = run_envkit("export", "--record", "bake.json", "--to", "registry", "--repository", other, "--insecure", cwd=work, env=CREDENTIALS)
    assert typo.returncode == 2 and "not in that repository" in typo.stderr and "nothing was attached" in typo.stderr, typo.output
    from conda_envkit.oci.registry import RegistryClient, RegistryError

    with pytest.raises(RegistryError):  # (the repository was not even created)
        RegistryClient(auth_registry.host, insecure=True, credentials=("envkit", "s3cret-Pa55")).get_manifest(
            "team/othr", "sha256-" + record["image"]["digest"][7:]
        )
    tagged = run_envkit("export", "--record", "bake.json", "--to", "registry", "--repository", f"{repo}:v1", "--insecure", cwd=work)
    assert tagged.returncode == 2 and "names a tag or digest" in tagged.stderr, tagged.output
    # The record's `lockfile` naming another file is refused there too.
    (work / "creds.env").write_text("AWS_SECRET_ACCESS_KEY=hunter2\n")
    secret = _edited(work, {**record, "lockfile": str(work / "creds.env")})
    leaked = run_envkit("export", "--record", secret, "--to", "registry", "--repository", repo, "--insecure", cwd=work, env=CREDENTIALS)
    assert leaked.returncode == 2 and "creds.env: not a conda-lock file" in leaked.stderr


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda c: c["config"].update(Labels=["dev.envkit.lock-hash=x"]), "config.Labels is not a mapping of strings"),
        (lambda c: c["config"]["Labels"].update({"dev.envkit.platform": 5}), "config.Labels is not a mapping of strings"),
        (lambda c: c["config"]["Labels"].update({"dev.envkit.blas": "mkl\nX=1"}), "blas 'mkl\\nX=1' does not have the form of one"),
    ],
)
def test_a_hostile_image_layout_is_refused_by_export_and_inspect(baked: tuple[Path, dict], edit, said: str) -> None:
    from conda_envkit.testing.hostile_images import rewrite_config

    work, record = baked
    rewrite_config(work / "image", record["tags"][0], edit)
    exported = run_envkit("export", "--image", f"oci:image:{record['tags'][0]}", "--to", "env", cwd=work)
    assert exported.returncode == 2 and said in exported.stderr, exported.output
    assert exported.stdout == ""
    if "form" not in said:  # inspect prints the record as JSON (escaped), it does not export it
        inspected = run_envkit("inspect", f"oci:image:{record['tags'][0]}", cwd=work)
        assert inspected.returncode == 2 and said in inspected.stderr, inspected.output


def test_the_tracking_api_refuses_an_environment_json_that_contradicts_its_lock(
    tmp_path: Path, image_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conda_envkit.errors import EnvkitError
    from conda_envkit.tracking import environment_info

    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    monkeypatch.setenv("ENVKIT_LOCK_FILE", str(work / "conda-lock.yml"))  # as inside an image
    about = work / "environment.json"
    for data, said in [
        (b"{not json", "environment.json: invalid JSON"),
        (b"[1]", "`labels` is not an object of strings"),
        (b"\xff\xfe", "environment.json"),
        (json.dumps({"labels": {"dev.envkit.lock-hash": "sha256:" + "0" * 64}}).encode(), "is not the sha256:"),
        (json.dumps({"labels": {"dev.envkit.lock-hash": "x\ny"}}).encode(), "is not the sha256:"),
    ]:
        about.write_bytes(data)
        with pytest.raises(EnvkitError) as refused:  # (an envkit error, with its hint: not a JSONDecodeError)
            environment_info()
        assert said in refused.value.message, refused.value.message


def test_inspect_looks_up_each_manifest_of_an_index_once_and_not_without_end(
    tmp_path: Path, image_channel: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An index listing one manifest many times made `inspect` ask for its artifacts each time (each with a deadline
    # of its own); one listing thousands had no end. Now each once, at most MAX_REFERRER_SUBJECTS, within one deadline.
    from conda_envkit.export import registry as export_registry
    from conda_envkit.oci.blobs import OciError
    from conda_envkit.oci.registry import RegistryClient

    work = tmp_path / "work"
    write_env(work, f"channels: [{image_channel}]\nplatforms: [linux-64, linux-aarch64]\ndependencies: [greet=1.0]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    repo = f"{registry.host}/team/train"
    args = ("-p", "linux-64", "-p", "linux-aarch64", "--push", repo, "--insecure", "-t", "v1")
    assert run_envkit("bake", "-q", *args, cwd=work, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}).returncode == 0
    client = RegistryClient(registry.host, insecure=True)
    index = json.loads(client.get_manifest("team/train", "v1")[0])
    index["manifests"] = index["manifests"][:1] * 40
    client.put_manifest("team/train", "repeated", json.dumps(index).encode(), index["mediaType"])
    asked: list[str] = []
    real = export_registry.list_referrers
    monkeypatch.setattr(export_registry, "list_referrers", lambda c, r, subject: (asked.append(subject), real(c, r, subject))[1])
    export_registry.inspect_image(f"{repo}:repeated", insecure=(registry.host,))
    assert len(asked) == 2 and len(set(asked)) == 2  # the index and its one manifest
    monkeypatch.setattr(export_registry, "MAX_REFERRER_SUBJECTS", 2)
    with pytest.raises(OciError) as refused:
        export_registry.inspect_image(f"{repo}:v1", insecure=(registry.host,))
    assert "its index lists 2 manifests; envkit looks up the artifacts of at most 1" in refused.value.message


def test_a_malformed_referrers_list_is_an_error_naming_the_registry_repository_and_subject(
    tmp_path: Path, image_channel: Path, registry: Registry
) -> None:
    # A registry whose referrers API answers with a malformed descriptor: the error said "referrers: malformed
    # descriptor (...)", no registry, repository or image named (the tag-schema fallback's errors name them).
    from tests.hostile.conftest import LoggingServer, forwards_to, json_answer

    def malformed(handler) -> bool:  # type: ignore[no-untyped-def]
        if "/referrers/" not in handler.path:
            return False
        manifest = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "a" * 64, "size": "big"}
        index = "application/vnd.oci.image.index.v1+json"
        return json_answer(handler, {"schemaVersion": 2, "mediaType": index, "manifests": [manifest]}, index)

    record = _baked(tmp_path / "work", image_channel, "--push", f"{registry.host}/team/app", "--insecure")
    proxy = LoggingServer(tmp_path / "proxy", responder=forwards_to(registry.host, before=malformed))
    try:
        result = run_envkit("inspect", f"{proxy.host}/team/app:{record['tags'][0]}", "--insecure", cwd=tmp_path)
    finally:
        proxy.close()
    assert result.returncode == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert f"{proxy.host}/team/app: referrers of {record['image']['digest']}: malformed descriptor (" in errors[0], errors[0]


def test_the_tracking_api_checks_a_record_made_by_hand() -> None:
    from conda_envkit.record import EnvironmentRecord, RecordError, check_environment_record

    good = EnvironmentRecord(source="api", lock_hash="sha256:" + "a" * 64, tags=("latest",))
    assert check_environment_record(good, "api") is good
    for bad, said in [
        (EnvironmentRecord(source="bake\nX=1", lock_hash=good.lock_hash), "source"),
        (EnvironmentRecord(source="api", lock_hash=good.lock_hash, tags="latest"), "tags 'latest' is not a list"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(RecordError, match=said):
            check_environment_record(bad, "api")
    with pytest.raises(RecordError, match="unknown field"):
        EnvironmentRecord.from_json({"lock_hash": good.lock_hash, "evil": 1})
