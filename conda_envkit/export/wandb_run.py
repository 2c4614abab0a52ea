"""`--to wandb`: the record's keys in a run's config, the lock file as an artifact (online or offline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conda_envkit.record import EnvironmentRecord, RecordError, extra_hint

ARTIFACT_TYPE = "conda-environment"


@dataclass(frozen=True)
class WandbTarget:
    project: str | None = None
    run_id: str | None = None
    mode: str | None = None  # online, offline (WANDB_MODE applies when None)
    directory: Path | None = None


def artifact_name(record: EnvironmentRecord) -> str:
    return f"conda-lock-{record.lock_hash.partition(':')[2][:12]}"


def log_to_run(run: Any, record: EnvironmentRecord, lockfile: Path | None) -> None:
    """Put the record into an open W&B run: config keys, and the lock file as an artifact."""
    import wandb

    run.config.update(record.flat(), allow_val_change=True)
    if lockfile is not None:
        artifact = wandb.Artifact(artifact_name(record), type=ARTIFACT_TYPE, metadata=record.to_json())
        artifact.add_file(str(lockfile), name=lockfile.name)
        run.log_artifact(artifact)


def export_to_wandb(record: EnvironmentRecord, lockfile: Path | None, target: WandbTarget) -> str:
    """Open (or resume) a run, log the record into it, finish it; return the run id."""
    try:
        import wandb
    except ImportError:
        raise RecordError("wandb is not installed", hint=extra_hint("wandb")) from None
    if lockfile is not None and not lockfile.is_file():
        raise RecordError(f"{lockfile}: lock file not found", hint="pass the lock with --lockfile")
    kwargs: dict[str, Any] = {"project": target.project or "envkit", "job_type": "environment", "reinit": "finish_previous"}
    if target.run_id:
        kwargs.update(id=target.run_id, resume="allow")
    if target.mode:
        kwargs["mode"] = target.mode
    if target.directory:
        kwargs["dir"] = str(target.directory)
    # W&B's own wait for its server (init_timeout, 90 s) within envkit's network deadline, as every other call is.
    from conda_envkit.network import network_timeout

    kwargs["settings"] = wandb.Settings(init_timeout=network_timeout())
    try:
        run = wandb.init(**kwargs)
    except Exception as exc:  # wandb raises its own error types for auth and network problems
        # (a settings error's first line is "1 validation error for Settings": the setting and the reason follow it)
        said = "; ".join(line.strip() for line in str(exc).splitlines()[:3] if line.strip())[:400]
        hint = "wandb login, or WANDB_MODE=offline; fix the WANDB_* setting it names; a slow server: raise --timeout"
        raise RecordError(f"W&B: cannot start a run: {said}", hint=hint) from None
    try:
        log_to_run(run, record, lockfile)
    finally:
        run.finish()
    return str(run.id)
