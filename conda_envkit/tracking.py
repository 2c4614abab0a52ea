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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from conda_envkit.installed_state import LOCK_COPY
from conda_envkit.platforms import host_platform
from conda_envkit.record import EnvironmentRecord, RecordError, record_from_bake, record_from_labels, record_from_lock


def _runtime_lock() -> Path | None:
    if os.environ.get("ENVKIT_LOCK_FILE"):
        return Path(os.environ["ENVKIT_LOCK_FILE"])
    prefix = os.environ.get("CONDA_PREFIX")
    if prefix and (Path(prefix) / LOCK_COPY).is_file():
        return Path(prefix) / LOCK_COPY
    return None


def environment_info(
    lockfile: Path | str | None = None, record: Path | str | None = None, platform: str | None = None
) -> EnvironmentRecord:
    """The record of the environment: from a bake record, a lock, or (default) the running environment."""
    if record is not None:
        return record_from_bake(Path(record), platform)
    path = Path(lockfile) if lockfile is not None else _runtime_lock()
    if path is None:
        raise RecordError(
            "no environment record found: not in an envkit image or environment ($ENVKIT_LOCK_FILE unset)",
            hint="pass lockfile= or record= (a bake.json)",
        )
    result = record_from_lock(path, platform)
    if result.platform is None:  # this machine's platform is not in the lock: say so, naming those it has
        result = record_from_lock(path, host_platform())
    about = path.parent / "environment.json"
    if lockfile is None and about.is_file():
        labels = json.loads(about.read_text(encoding="utf-8")).get("labels", {})
        from_labels = record_from_labels(labels, "runtime", os.environ.get("ENVKIT_IMAGE_DIGEST"), os.environ.get("ENVKIT_IMAGE"))
        result = EnvironmentRecord(**{**asdict(from_labels), "packages": result.packages, "lockfile": str(path)})
    return result


def log_environment(run: Any, info: EnvironmentRecord | None = None, lockfile: Path | str | None = None) -> EnvironmentRecord:
    """Stamp an MLflow run (ActiveRun or Run) or a W&B run with the environment; return the record."""
    info = info or environment_info(lockfile)
    lock_path = Path(lockfile) if lockfile is not None else (Path(info.lockfile) if info.lockfile else None)
    module = type(run).__module__
    if module.startswith("mlflow"):
        from conda_envkit.export.mlflow_run import MlflowTarget, export_to_mlflow

        export_to_mlflow(info, lock_path if lock_path and lock_path.is_file() else None, MlflowTarget(run_id=run.info.run_id))
    elif module.startswith("wandb"):
        from conda_envkit.export.wandb_run import log_to_run

        log_to_run(run, info, lock_path if lock_path and lock_path.is_file() else None)
    else:
        raise RecordError(f"cannot log to a {type(run).__name__}", hint="pass an mlflow ActiveRun/Run or a wandb Run")
    return info
