"""`envkit export`, `diff` and `recipes`: records and locks -> trackers, CI, registries, reports."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from conda_envkit.commands import EXIT_STALE, Output
from conda_envkit.commands.images import insecure_for

if TYPE_CHECKING:
    from conda_envkit.record import EnvironmentRecord, ImageEnvironment


@dataclass(frozen=True)
class ExportRequest:
    """`envkit export`'s flags, as given."""

    record_path: Path | None
    lockfile: Path | None
    image: str | None
    platform: str | None
    destinations: tuple[str, ...]
    output: Path | None
    run_id: str | None
    experiment: str | None
    model: str | None
    model_version: str | None
    tracking_uri: str | None
    wandb_project: str | None
    wandb_mode: str | None
    wandb_dir: Path | None
    insecure: bool
    repository: str | None = None


def export_record(request: ExportRequest) -> ImageEnvironment:
    """The record to export: from a bake record, an image (OCI layout or registry) or a lock; checked
    (conda_envkit.record.check_environment_record), whatever it came from. With the lock copy inside an image."""
    from conda_envkit.record import check_environment_record

    where = str(request.record_path or request.image or request.lockfile or "conda-lock.yml")
    found = _read_record(request)
    return replace(found, record=check_environment_record(found.record, where))


def _read_record(request: ExportRequest) -> ImageEnvironment:
    from conda_envkit.record import (
        EnvironmentRecord,
        ImageEnvironment,
        RecordError,
        environment_from_layout,
        record_from_bake,
        record_from_lock,
    )

    if not (request.record_path or request.lockfile or request.image):
        if not Path("conda-lock.yml").is_file():
            raise RecordError("nothing to export", hint="pass --record bake.json, --lockfile conda-lock.yml or --image REF")
        request = replace(request, lockfile=Path("conda-lock.yml"))  # as every other command reads by default
    if request.record_path and request.image:
        raise RecordError("--record and --image exclude each other", hint="pass one source")
    if request.record_path:
        return ImageEnvironment(record_from_bake(request.record_path, request.platform))
    if request.image and request.image.startswith("oci:"):
        from conda_envkit.oci.base import split_ref

        layout, name = split_ref(request.image[4:])
        return environment_from_layout(Path(layout), name, request.platform)
    if request.image:
        from conda_envkit.export.registry import inspect_image_and_lock

        inspected, lock_text = inspect_image_and_lock(request.image, request.platform, insecure_for([request.image], request.insecure))
        return ImageEnvironment(EnvironmentRecord.from_json(inspected["record"]), lock_text)
    assert request.lockfile is not None
    return ImageEnvironment(record_from_lock(request.lockfile, request.platform))


def run_export(request: ExportRequest, output: Output) -> Output:
    """Send the record to each destination, in order; what each did goes to stderr, json/env text to stdout."""
    from conda_envkit.record import LockHoldsCredentials, RecordError, lock_artifact

    texts = [d for d in request.destinations if d in ("json", "env")]
    if request.output and len(texts) > 1:  # (the second replaced the first in the one file, and both said "wrote")
        raise RecordError(
            f"-o {request.output}: one file for {' and '.join(f'--to {d}' for d in texts)}",
            hint="give each its own command and -o, or leave out -o (both go to stdout, one after the other)",
        )
    if request.run_id and {"mlflow", "wandb"} <= set(request.destinations):
        # (an MLflow run id is 32 hex digits, a W&B one its own: one of them would be tagged, the other made anew)
        raise RecordError(
            f"--run-id {request.run_id}: names one run, for both --to mlflow and --to wandb",
            hint="export once per tracker, each with its own --run-id",
        )
    found = export_record(request)
    record = found.record
    if record.platform is None and set(request.destinations) - {"registry"}:
        # Several platforms, none of them this machine's: a record without a package list would pass silently.
        where = request.record_path or request.lockfile or request.image or record.lockfile
        raise RecordError(f"{where} has several platforms, and not this machine's", hint="pass -p with the platform to record")
    if "registry" in request.destinations and not request.record_path:
        raise RecordError("--to registry needs the bake record", hint="pass --record bake.json (and --lockfile if it moved)")
    # The lock logged to trackers: --lockfile, or the record's; or, for an image, bake's copy inside it (its hash is
    # the labels'): either way that record's lock (see lock_artifact).
    lock_path = request.lockfile or (Path(record.lockfile) if record.lockfile else None)
    where = f"the record of {request.record_path or request.image or request.lockfile}"
    with tempfile.TemporaryDirectory(prefix="envkit-export-") as scratch:
        if lock_path is None and found.lock_text is not None and set(request.destinations) & {"mlflow", "wandb"}:
            lock_path = Path(scratch) / "conda-lock.yml"  # (the artifact's name, as for a lock file)
            lock_path.write_text(found.lock_text, encoding="utf-8")
        artifact = None
        if set(request.destinations) & {"mlflow", "wandb"}:
            try:
                artifact = lock_artifact(lock_path, record.lock_hash, where)
            except LockHoldsCredentials as exc:  # the run is still stamped: its tags say which lock, without the file
                output.err(f"warning: {exc.message} (the runs get no lock artifact; {exc.hint})")
        _send(request, record, artifact, output)
    return output


def _send(request: ExportRequest, record: EnvironmentRecord, artifact: Path | None, output: Output) -> None:
    """The record to each destination, in order (`artifact`: the lock file the trackers log, if any)."""
    for destination in request.destinations:
        if destination in ("json", "env"):
            from conda_envkit.export.dotenv import render_env
            from conda_envkit.export.json_record import render_json
            from conda_envkit.lockfile import write_if_changed

            text = render_json(record) if destination == "json" else render_env(record)
            if request.output:
                write_if_changed(request.output, text)
                output.err(f"wrote {request.output}")
            else:
                output.out(text, nl=False)
        elif destination == "github":
            from conda_envkit.export.github import write_github_output, write_step_summary

            output.err(f"appended {len(record.flat())} outputs to {write_github_output(record)}")
            summary = write_step_summary(record)  # (the job's page shows them: the outputs are only in its log)
            if summary is not None:
                output.err(f"appended the summary to {summary}")
        elif destination == "mlflow":
            from conda_envkit.export.mlflow_run import MlflowTarget, export_to_mlflow

            target = MlflowTarget(request.run_id, request.experiment, request.model, request.model_version, request.tracking_uri)
            with _trackers_print_to_stderr():  # MLflow prints "View run ... at: ..." on stdout, among --to env lines
                result = export_to_mlflow(record, artifact, target)
            tagged = [f"run {result.run_id}"] if result.run_id else []
            tagged += [f"model {result.model_version}"] if result.model_version else []
            output.err(f"mlflow: tagged {' and '.join(tagged)}")
        elif destination == "wandb":
            from conda_envkit.export.wandb_run import WandbTarget, export_to_wandb

            wandb_target = WandbTarget(request.wandb_project, request.run_id, request.wandb_mode, request.wandb_dir)
            with _trackers_print_to_stderr():
                run = export_to_wandb(record, artifact, wandb_target)
            output.err(f"wandb: logged to run {run}")
        elif destination == "registry":
            from conda_envkit.export.registry import attach_to_registry
            from conda_envkit.record import lock_artifact, lock_of_record, read_bake_record

            assert request.record_path is not None
            bake = read_bake_record(request.record_path)
            repo = request.repository or bake.outputs.get("registry", "")
            hosts = insecure_for([repo], request.insecure) if repo else ()
            named = request.lockfile or lock_of_record(request.record_path, bake.lockfile or "conda-lock.yml")
            lock = lock_artifact(named, bake.lock_hash, str(request.record_path))
            assert lock is not None
            for item in attach_to_registry(bake.to_json(), lock, hosts, request.repository):
                output.err(f"attached {item.title} to {item.subject}: {item.artifact.digest}")


def _trackers_print_to_stderr() -> contextlib.AbstractContextManager[object]:
    """What a tracker library prints goes to stderr: stdout carries envkit's `--to json`/`--to env` text alone
    (a shell `eval`s it; a run name printed there would be run as a command). It is redacted on the way, as
    envkit's own messages are: MLflow's "View run ... at: URL" repeats a tracking URI's `user:password@`."""
    return contextlib.redirect_stdout(_RedactedStderr())


class _RedactedStderr(io.TextIOBase):
    def write(self, text: str) -> int:
        from conda_envkit.redact import redact

        sys.stderr.write(redact(text))
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDIN = ("-", "/dev/stdin")


def diff_output(old: str, new: str, fmt: str, platforms: tuple[str, ...], exit_code: bool) -> Output:
    """`envkit diff`: what changed between two locks (status 1 with `exit_code` when they differ)."""
    from conda_envkit.lockdiff import diff_locks, platforms_in_one_lock, read_lock_at, render_json, render_markdown, render_text
    from conda_envkit.lockfile import LockFileError

    if old in _STDIN and new in _STDIN:  # (the second read found the pipe empty: "-: not a conda-lock file")
        from conda_envkit.errors import BadFlag

        raise BadFlag(f"OLD and NEW are both standard input ({old}, {new}), which can be read once", hint="pipe in one of them")
    old_lock, old_label = read_lock_at(old)
    new_lock, new_label = read_lock_at(new)
    locked = set(old_lock.metadata.platforms) | set(new_lock.metadata.platforms)
    unknown = [p for p in platforms if p not in locked]
    if unknown:  # (it would read as "no changes")
        raise LockFileError(
            f"-p {' '.join(unknown)}: neither {old_label} nor {new_label} locks it (they lock {', '.join(sorted(locked))})",
            hint="pass -p with one of those platforms, or leave it out to compare them all",
        )
    changes = [c for c in diff_locks(old_lock, new_lock) if not platforms or c.platform in platforms]
    in_one_lock = [one for one in platforms_in_one_lock(old_lock, new_lock) if not platforms or one.platform in platforms]
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt]
    output = Output(status=EXIT_STALE if exit_code and (changes or in_one_lock) else 0)
    output.out(render(changes, old_label, new_label, in_one_lock), nl=False)
    return output


def recipes_output(recipe_dir: Path | None, as_json: bool) -> Output:
    """`envkit recipes`: the image recipes, built-in and from `recipe_dir`."""
    from conda_envkit.recipes import list_recipes

    found = list_recipes(recipe_dir)
    output = Output()
    if as_json:
        rows = [
            {"name": r.name, "description": r.description, "directory": str(r.directory), "cpu_base": r.base_cpu, "cuda_bases": r.base_cuda}
            for r in found
        ]
        output.out(json.dumps(rows, indent=2))
        return output
    for r in found:
        cuda = f"; CUDA bases {', '.join(sorted(r.base_cuda))}" if r.base_cuda else ""
        output.out(f"{r.name:<16} {r.description} (base {r.base_cpu}{cuda})")
    return output
