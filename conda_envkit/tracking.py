"""For training code: which environment is this process running in, and stamp a run with it.

    from conda_envkit.tracking import environment_info, log_environment
    log_environment(mlflow.active_run())      # or a wandb run

Inside an envkit image the answer comes from the files bake put next to the
environment ($ENVKIT_LOCK_FILE, and environment.json beside it with the image's
labels); the image's own digest cannot be inside the image, so it comes from
$ENVKIT_IMAGE_DIGEST / $ENVKIT_IMAGE when the launcher sets them (e.g. from bake.json).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from conda_envkit.installed_state import LOCK_COPY
from conda_envkit.oci.blobs import is_digest
from conda_envkit.platforms import host_platform
from conda_envkit.record import (
    EnvironmentRecord,
    LockHoldsCredentials,
    RecordError,
    check_environment_record,
    lock_artifact,
    record_from_bake,
    record_from_labels,
    record_from_lock,
)


def _runtime_lock() -> Path | None:
    """The lock of the environment this process runs in: $ENVKIT_LOCK_FILE (an image), else the lock copy of the
    prefix this python runs from, else of $CONDA_PREFIX (with a warning when this python is not that prefix's)."""
    if os.environ.get("ENVKIT_LOCK_FILE"):
        named = Path(os.environ["ENVKIT_LOCK_FILE"])
        if not named.is_file():  # (an image's variable kept where its environment is not: a derived image, a launcher)
            raise RecordError(
                f"$ENVKIT_LOCK_FILE names {named}, which is not a file here",
                hint="run in the image envkit baked (it sets the variable), unset it, or pass lockfile= or record=",
            )
        return named
    running = list(dict.fromkeys((sys.prefix, sys.base_prefix)))  # (a venv made over an environment: its base)
    for prefix in running:
        if (Path(prefix) / LOCK_COPY).is_file():
            return Path(prefix) / LOCK_COPY
    activated = os.environ.get("CONDA_PREFIX")
    if activated and (Path(activated) / LOCK_COPY).is_file():
        import warnings

        warnings.warn(
            f"envkit: the record is $CONDA_PREFIX's ({activated}), but this python runs from {sys.prefix}: the run may not"
            " use that environment (run its python, or pass lockfile= or record= for the one it uses)",
            stacklevel=3,
        )
        return Path(activated) / LOCK_COPY
    return None


def _warn_if_changed(lock_copy: Path, platform: str) -> None:
    """A warning when the prefix whose lock copy this is no longer holds exactly the packages envkit installed there
    (a package added, removed or replaced since: `conda install`, `pip install`): the record is the lock's."""
    from conda_envkit.installed_state import STATE_FILE, up_to_date

    prefix = lock_copy.parent.parent.parent  # (<prefix>/conda-meta/envkit/conda-lock.yml)
    if lock_copy != prefix / LOCK_COPY or not (prefix / STATE_FILE).is_file():
        return  # (an image's lock, beside no installed state: what the image was baked from)
    if not up_to_date(lock_copy, prefix, platform):
        import warnings

        warnings.warn(
            f"envkit: {prefix} changed after envkit installed it (packages added, removed or replaced): the record is its"
            f" lock's, not what runs; `envkit verify --prefix {prefix}` says what changed",
            stacklevel=3,
        )


def environment_info(
    lockfile: Path | str | None = None, record: Path | str | None = None, platform: str | None = None
) -> EnvironmentRecord:
    """The record of the environment: from a bake record, a lock, or (default) the running environment."""
    if record is not None:
        return check_environment_record(record_from_bake(Path(record), platform), str(record))
    path = Path(lockfile) if lockfile is not None else _runtime_lock()
    if path is None:
        raise RecordError(
            "no environment record found: not in an envkit image or environment ($ENVKIT_LOCK_FILE unset, and $CONDA_PREFIX "
            "holds no lock envkit installed)",
            hint="run in an environment `envkit install` made, or in an envkit image; or pass lockfile='conda-lock.yml' "
            "(that lock is logged as the run's environment: only true if the run uses it) or record='bake.json'",
        )
    result = record_from_lock(path, platform)
    if result.platform is None:  # this machine's platform is not in the lock: say so, naming those it has
        result = record_from_lock(path, host_platform())
    if lockfile is None and result.platform is not None:
        _warn_if_changed(path, result.platform)
    about = path.parent / "environment.json"
    if lockfile is None and about.is_file():
        labels = _image_labels(about)
        digest = os.environ.get("ENVKIT_IMAGE_DIGEST")
        if digest and not is_digest(digest):  # (bare hex, copied without its prefix)
            raise RecordError(
                f"$ENVKIT_IMAGE_DIGEST is {digest[:80]!r}, not an image digest (sha256:<64 hex digits>)",
                hint="the launcher sets it from bake.json's image.digest or `skopeo inspect`, with its sha256: prefix",
            )
        from_labels = record_from_labels(labels, "runtime", digest, os.environ.get("ENVKIT_IMAGE"))
        if from_labels.lock_hash != result.lock_hash:  # the labels and the lock beside them must tell the same story
            raise RecordError(
                f"{about}: its lock hash {from_labels.lock_hash[:80]!r} is not the {result.lock_hash} of {path}",
                hint="the environment was changed after envkit made it; rebuild it (or pass lockfile=)",
            )
        result = EnvironmentRecord(**{**asdict(from_labels), "packages": result.packages, "lockfile": str(path)})
    return check_environment_record(result, str(about if lockfile is None and about.is_file() else path))


def _image_labels(path: Path) -> dict[str, str]:
    """The image's labels bake wrote beside the lock (`environment.json`), read as any input is."""
    from conda_envkit.inputs import read_input

    try:
        data = json.loads(read_input(path, "environment record").text)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"{path}: invalid JSON ({str(exc)[:200]})", hint="the environment was changed after envkit made it") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise RecordError(f"{path}: `labels` is not an object of strings", hint="the environment was changed after envkit made it")
    return labels


def log_environment(
    run: Any,
    info: EnvironmentRecord | None = None,
    lockfile: Path | str | None = None,
    record: Path | str | None = None,
    tracking_uri: str | None = None,
) -> EnvironmentRecord:
    """Stamp an MLflow run (ActiveRun or Run) or a W&B run with the environment; return the record. The environment
    is `info`, else environment_info(lockfile=..., record=...): a lock, a bake record, or (default) the running one.
    An MLflow run is found in MLflow's current tracking store, or in `tracking_uri`."""
    info = check_environment_record(info or environment_info(lockfile, record), "the environment record")
    # The lock logged is the record's own (lock_artifact): a record's `lockfile` may name any file.
    path = Path(lockfile) if lockfile is not None else (Path(info.lockfile) if info.lockfile else None)
    try:
        lock_path = lock_artifact(path, info.lock_hash, "the environment record") if path is not None and path.is_file() else None
    except LockHoldsCredentials as exc:  # the run is still stamped: its tags say which lock, without the file
        import warnings

        warnings.warn(f"envkit: {exc.message}: the run gets no lock artifact ({exc.hint})", stacklevel=2)
        lock_path = None
    module = type(run).__module__
    if module.startswith("mlflow"):
        import mlflow

        from conda_envkit.export.mlflow_run import MlflowTarget, export_to_mlflow

        # The run's store is MLflow's current one (set_tracking_uri, $MLFLOW_TRACKING_URI, or its own default, as
        # start_run used it), unless the caller names another (a run made by MlflowClient(tracking_uri=...)).
        uri = tracking_uri or mlflow.get_tracking_uri()
        export_to_mlflow(info, lock_path, MlflowTarget(run_id=run.info.run_id, tracking_uri=uri))
    elif module.startswith("wandb"):
        from conda_envkit.export.wandb_run import log_to_run

        log_to_run(run, info, lock_path)
    else:
        raise RecordError(f"cannot log to a {type(run).__name__}", hint="pass an mlflow ActiveRun/Run or a wandb Run")
    return info
