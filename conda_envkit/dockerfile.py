"""`envkit dockerfile`: a build context for docker/buildx/podman/buildah from the same recipe as bake.

envkit installs the environment from the lock (every sha256 checked) into `env/` of the
context; the Dockerfile only copies it, so no solver and no network run inside the build,
and the environment's bytes and the labels are the ones `envkit bake` produces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conda_envkit.bake import BakeError, BakeOptions, image_env, image_labels, refuse_lock_holding_credentials, stage_environment
from conda_envkit.cache import CACHE_SETTING, tmp_dir
from conda_envkit.channels import ChannelSettings
from conda_envkit.files import staging_dir, write_error
from conda_envkit.lockmodel import LockFile as Lockfile
from conda_envkit.oci.image import DEFAULT_PATH, BaseImage, oci_platform
from conda_envkit.progress import SILENT, Progress
from conda_envkit.recipes import Recipe, render_dockerfile

BACKENDS = {
    "buildah": ["buildah", "bud", "--isolation", "chroot"],
    "podman": ["podman", "build"],
    "docker": ["docker", "build"],
}


def context_file_name(dest: str) -> str:
    """Where a recipe file for `dest` (a path in the image) sits in the build context."""
    return "files/" + dest.strip("/").replace("/", "__")


def dockerfile_text(recipe: Recipe, options: BakeOptions, base: str, platform: str, labels: dict[str, str]) -> str:
    """The build context's Dockerfile: the recipe's template with what bake would put in the config."""
    return render_dockerfile(
        recipe,
        {
            "base": base,
            "platform": platform,
            "prefix": options.in_image_prefix,
            "base_path": DEFAULT_PATH if base == "scratch" else "$PATH",
            "env": image_env(options),
            "labels": labels,
            "files": [{"context": context_file_name(dest), "dest": dest} for dest, _ in options.files],
            "workdir": options.workdir,
            "user": options.user,
            "entrypoint": list(options.entrypoint) if options.entrypoint is not None else None,
            "cmd": list(options.cmd) if options.cmd is not None else None,
        },
    )


@dataclass(frozen=True)
class BuildContext:
    directory: Path
    dockerfile: str
    labels: dict[str, str]


def write_build_context(
    lock_copy: bytes,
    lockfile: Lockfile,
    platform: str,
    recipe: Recipe,
    options: BakeOptions,
    base: str,
    base_digest: str | None,
    out: Path,
    cache_dir: Path,
    settings: ChannelSettings | None = None,
    progress: Progress = SILENT,
) -> BuildContext:
    """Write `out/` (Dockerfile, env/, files/) whole: assembled beside it, then renamed into place (`lock_copy`: the
    lock's bytes as they were read, for the environment's copy of it)."""
    oci_platform(platform)
    refuse_lock_holding_credentials(lockfile, "the lock", options.in_image_prefix)  # (the context's env/ holds its copy)
    labels = image_labels(lockfile, platform, options, BaseImage(reference=base, config={}, digest=base_digest))
    out = out.absolute()
    if out.is_symlink():
        raise BakeError(f"{out} is a symbolic link", hint="pass the directory it points to, or a new directory")
    if out.exists() and not out.is_dir():
        raise BakeError(f"{out} is a file, not a directory", hint="write the build context to a new directory")
    if out.exists() and any(out.iterdir()):
        raise BakeError(f"{out} is not an empty directory", hint="write the build context to a new directory")
    try:
        tmp_dir(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(tmp_dir(cache_dir), exc, "cache directory", CACHE_SETTING) from None
    staging = staging_dir(out, setting="-o/--output")
    try:
        env_dir = staging / "env"
        # Installed in the cache's filesystem (hard links from the package cache), then copied.
        scratch = Path(tempfile.mkdtemp(prefix="context-", dir=tmp_dir(cache_dir)))
        try:
            stage_environment(
                lock_copy, lockfile, platform, scratch / "env", options.in_image_prefix, labels, cache_dir, settings, progress
            )
            shutil.copytree(scratch / "env", env_dir, symlinks=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for dest, source in options.files:
            target = staging / context_file_name(dest)
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(source, target)
        # A resolved digest pins FROM too, so the build uses the base the labels name.
        text = dockerfile_text(recipe, options, f"{base}@{base_digest}" if base_digest and "@" not in base else base, platform, labels)
        (staging / "Dockerfile").write_text(text, encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(out, exc, "build context", "-o/--output") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildContext(out, text, labels)


def build_with(backend: str, context: Path, tag: str, extra: list[str] | None = None) -> None:
    """Run the build with docker, podman or buildah; an error names the tool and its last output."""
    command = BACKENDS[backend]
    if shutil.which(command[0]) is None:
        raise BakeError(f"{command[0]} is not installed", hint=f"install {command[0]}, or build the context yourself: {context}")
    proc = subprocess.run([*command, *(extra or []), "-t", tag, str(context)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BakeError(
            f"{backend} build failed: {' / '.join(tail)}", hint=f"the context is in {context}; run the build by hand to see more"
        )
