"""`--to mlflow`: tags on a run (and on a registered model version), the lock file as an artifact.

Everything is checked before anything is written: the server answers, the run (or
experiment) and the model version exist. Then the artifact is logged, then all tags go
in one `log_batch` call, so a failure leaves either nothing or the artifact alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conda_envkit.network import call_with_deadline, network_timeout
from conda_envkit.record import EnvironmentRecord, RecordError, extra_hint

ARTIFACT_DIR = "envkit"


@dataclass(frozen=True)
class MlflowTarget:
    run_id: str | None = None
    experiment: str | None = None
    model: str | None = None
    version: str | None = None
    tracking_uri: str | None = None


@dataclass(frozen=True)
class MlflowResult:
    run_id: str
    artifact: str | None
    model_version: str | None


def tracking_uri_of(target: MlflowTarget) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI (as MLflow reads it); never MLflow's implicit ./mlflow.db."""
    uri = target.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RecordError(
            "no MLflow tracking server: --tracking-uri is not given and MLFLOW_TRACKING_URI is not set",
            hint="export MLFLOW_TRACKING_URI=http://HOST:5000 (or sqlite:///PATH/mlflow.db), or pass --tracking-uri",
        )
    return uri


def _client(tracking_uri: str):  # type: ignore[no-untyped-def]
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise RecordError("mlflow is not installed", hint=extra_hint("mlflow")) from None
    # MLflow picks the store when the client is made: an unusable URI (file:// stores are refused
    # by MLflow 3 unless MLFLOW_ALLOW_FILE_STORE=true) fails here, not at the first call.
    try:
        return _call("open the tracking store", tracking_uri, MlflowClient, tracking_uri=tracking_uri)
    except ValueError as exc:  # MLflow's own settings (MLFLOW_* variables) that it cannot parse
        raise RecordError(f"MLflow at {tracking_uri}: {exc}", hint="fix the MLFLOW_* environment variable it names") from None


def _call(what: str, uri: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    from mlflow.exceptions import MlflowException

    try:
        return call_with_deadline(f"MLflow at {uri}: {what}", lambda: fn(*args, **kwargs))
    except (OSError, ImportError) as exc:  # the run's artifact store, as this machine reaches it (a path, s3:// without boto3)
        raise RecordError(
            f"MLflow at {uri}: {what}: {type(exc).__name__}: {str(exc)[:300]}",
            hint="the run's artifact location must be writable from here (an --artifacts-destination the server serves,"
            " a path this machine has, or s3:// with boto3 installed)",
        ) from None
    except MlflowException as exc:
        full = str(exc.message if hasattr(exc, "message") else exc)
        message = full.splitlines()[0][:300]
        hint = "check MLFLOW_TRACKING_URI, the run id and the model name/version"
        if "MLFLOW_ALLOW_FILE_STORE" in full:
            hint = "use a server (http://...) or sqlite:///PATH/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true"
        raise RecordError(f"MLflow at {uri}: {what}: {message}", hint=hint) from None


@contextlib.contextmanager
def _bound_mlflow_retries() -> Iterator[None]:
    """MLflow's own HTTP settings, derived from $ENVKIT_NETWORK_TIMEOUT unless set explicitly, while envkit's calls
    run: the variables it set are removed after (training code calling log_environment keeps MLflow's own retries
    for the rest of its run, and its subprocesses too).

    Its defaults (120 s per request, 7 retries with backoff factor 2) block for many
    minutes when the server is down; these give up within about 3 request timeouts.
    """
    per_request = max(1, round(min(network_timeout(), 30.0)))
    bounds = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(per_request),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    added = [name for name in bounds if name not in os.environ]
    os.environ.update({name: bounds[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def export_to_mlflow(record: EnvironmentRecord, lockfile: Path | None, target: MlflowTarget) -> MlflowResult:
    """Tag a run (existing, or new in `experiment`) and optionally a model version with the record."""
    with _bound_mlflow_retries():
        return _export(record, lockfile, target)


def _export(record: EnvironmentRecord, lockfile: Path | None, target: MlflowTarget) -> MlflowResult:
    if (target.model is None) != (target.version is None):
        raise RecordError("--model and --version go together", hint="pass both to tag a registered model version")
    if target.run_id is None and target.experiment is None and target.model is None:
        raise RecordError("no MLflow destination", hint="pass --run-id, --experiment, or --model with --version")
    if lockfile is not None and not lockfile.is_file():
        raise RecordError(f"{lockfile}: lock file not found", hint="pass the lock with --lockfile")
    uri = tracking_uri_of(target)
    client = _client(uri)
    from mlflow.entities import RunTag

    tags = record.flat()
    run_id = target.run_id
    if run_id is not None:
        _call(f"run {run_id}", uri, client.get_run, run_id)
    if target.model is not None:
        _call(f"model {target.model} version {target.version}", uri, client.get_model_version, target.model, target.version)
    experiment_id = None
    if run_id is None and target.experiment is not None:
        existing = _call(f"experiment {target.experiment}", uri, client.get_experiment_by_name, target.experiment)
        experiment_id = existing.experiment_id if existing else _call("create experiment", uri, client.create_experiment, target.experiment)
    created = False
    if run_id is None and experiment_id is not None:
        run = _call("create run", uri, client.create_run, experiment_id, run_name=f"envkit-{record.lock_hash[7:19]}")
        run_id, created = run.info.run_id, True
    artifact = None
    if run_id is not None:
        try:
            if lockfile is not None:
                _call("log the lock file", uri, client.log_artifact, run_id, str(lockfile), ARTIFACT_DIR)
                artifact = f"{ARTIFACT_DIR}/{lockfile.name}"
            _call("set run tags", uri, client.log_batch, run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if created:
                _call("finish run", uri, client.set_terminated, run_id)
        except BaseException:
            if created:  # a run of envkit's own, without its tags: not left behind
                with contextlib.suppress(Exception):
                    client.delete_run(run_id)
            raise
    if target.model is not None:
        for key, value in tags.items():
            _call(
                f"tag model version {target.model}/{target.version}",
                uri,
                client.set_model_version_tag,
                target.model,
                target.version,
                key,
                value,
            )
    return MlflowResult(run_id or "", artifact, f"{target.model}/{target.version}" if target.model else None)
