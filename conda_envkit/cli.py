"""The `envkit` command: parse arguments, call one library function, print."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from conda_envkit import __version__
from conda_envkit.errors import EnvkitError

# Only click and envkit's error type load at start-up: each command imports what it uses, so
# `envkit --help` and `envkit hash` never load the solver, conda_lock, uv, httpx or jinja2.

EXIT_STALE = 1
EXIT_ERROR = 2


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn `EnvkitError` into a short message and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EnvkitError as exc:
            message, hint = exc.message, exc.hint
        # Exit outside the except block: the exception's frames must not outlive it,
        # or py-rattler objects they hold are torn down during interpreter shutdown.
        click.echo(f"error: {message}", err=True)
        if hint:
            click.echo(f"  hint: {hint}", err=True)
        sys.exit(EXIT_ERROR)

    return wrapper


def _parse_blas(values: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    from conda_envkit.platforms import Blas, check_platform

    table = []
    for value in values:
        platform, sep, name = value.rpartition("=")
        platform = platform if sep else "*"
        if platform != "*":
            check_platform(platform, f"--blas {value}")
        try:
            table.append((platform, Blas(name)))
        except ValueError:
            raise click.BadParameter(
                f"unknown BLAS {name!r}; use one of {', '.join(b.value for b in Blas)} (optionally PLATFORM=BLAS)",
                param_hint="--blas",
            ) from None
    return tuple(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="envkit")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Deadline for each network operation (repodata, package, manifest, blob, MLflow call). "
    "[default: $ENVKIT_NETWORK_TIMEOUT, else 300]",
)
def main(timeout: float | None) -> None:
    """Lock conda environments for every platform, bake them into images, record them."""
    if timeout is not None:
        # The one setting every network client reads (conda_envkit.network), also for child processes.
        os.environ["ENVKIT_NETWORK_TIMEOUT"] = f"{timeout:g}"


@main.command()
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="environment.yml (repeat to merge; later files win per package). [default: environment.yml]",
)
@click.option(
    "-p",
    "--platform",
    "platforms",
    multiple=True,
    help="Platform to lock (repeat). Overrides `platforms:` in the file. [default: linux-64]",
)
@click.option(
    "--lockfile",
    type=click.Path(path_type=Path),
    default=Path("conda-lock.yml"),
    show_default=True,
    help="Lock file to write; variants go next to it as <stem>.<variant>.yml.",
)
@click.option(
    "--cuda",
    "cuda",
    metavar="VERSION",
    help="The CUDA driver the lock is for (__cuda, as conda-lock --with-cuda): any toolkit it runs may be chosen; "
    "cap the toolkit with a spec such as `cuda-version <=12.4`.",
)
@click.option("--no-cuda", is_flag=True, help="Lock CPU builds only (the default unless the spec sets envkit.cuda).")
@click.option(
    "--blas",
    "blas",
    multiple=True,
    metavar="[PLATFORM=]BLAS",
    help="Pin libblas to mkl, openblas, accelerate or blis (per platform with PLATFORM=).",
)
@click.option(
    "--virtual-package-spec",
    type=click.Path(path_type=Path),
    help="conda-lock style virtual-packages.yml overriding the defaults per platform.",
)
@click.option("--channel-alias", metavar="URL", help="Where channel names point. [default: https://conda.anaconda.org/]")
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="CHANNEL=URL",
    help="Fetch CHANNEL from URL instead (repeat). The lock keeps the original URL.",
)
@click.option("--config", "config", type=click.Path(path_type=Path), help="Config file with channel_alias and mirrors (or $ENVKIT_CONFIG).")
@click.option("--check", is_flag=True, help="Do not solve: exit 1 if the lock no longer satisfies the spec, saying which platform and why.")
@click.option(
    "--update",
    "update",
    multiple=True,
    metavar="PKG",
    help="Relock only PKG (repeat); every other package keeps its locked build unless PKG strictly needs a change.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@_reports_errors
def lock(
    files: tuple[Path, ...],
    platforms: tuple[str, ...],
    lockfile: Path,
    cuda: str | None,
    no_cuda: bool,
    blas: tuple[str, ...],
    virtual_package_spec: Path | None,
    channel_alias: str | None,
    mirrors: tuple[str, ...],
    config: Path | None,
    check: bool,
    update: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Solve environment.yml for every platform and write conda-lock.yml."""
    from conda_envkit.channels import load_settings
    from conda_envkit.locking import LockOptions
    from conda_envkit.platforms import PlatformError, parse_cuda_driver, read_virtual_package_spec
    from conda_envkit.spec import read_env_spec

    if cuda and no_cuda:
        raise click.UsageError("--cuda and --no-cuda exclude each other")
    if check and update:
        raise click.UsageError("--check and --update exclude each other")
    try:
        driver = parse_cuda_driver(cuda, "--cuda") if cuda is not None else None
    except PlatformError as exc:
        raise click.BadParameter(f"{exc.message} ({exc.hint})", param_hint="--cuda") from None
    paths = list(files) or [Path("environment.yml")]
    spec = read_env_spec(paths, list(platforms))
    if check and not platforms and not spec.platforms_given:
        # Locked with -p: the lock says which platforms it holds.
        locked = _locked_platforms(lockfile)
        if locked:
            spec = read_env_spec(paths, locked)
    options = LockOptions(
        lock_path=lockfile,
        cuda="none" if no_cuda or (cuda is not None and driver is None) else driver,
        blas=_parse_blas(blas),
        virtual_packages=read_virtual_package_spec(virtual_package_spec) if virtual_package_spec else {},
        settings=load_settings(config, channel_alias, list(mirrors)),
        update=tuple(n for item in update for n in item.replace(",", " ").split()),
    )
    for warning in _flag_warnings(spec.platforms, driver, options.blas):
        click.echo(f"warning: {warning}", err=True)
    if check:
        from conda_envkit.freshness import check_locks

        _print_check(check_locks(spec, options), as_json)
        return
    _lock(spec, options, as_json, quiet)


def _locked_platforms(lockfile: Path) -> list[str]:
    from conda_envkit.lockfile import read_lockfile

    try:
        return list(read_lockfile(lockfile).metadata.platforms)
    except EnvkitError:
        return []  # --check reports the unreadable lock itself


def _flag_warnings(platforms: tuple[str, ...], cuda: str | None, blas: tuple[tuple[str, Any], ...]) -> list[str]:
    """Flags that change nothing for the platforms being locked."""
    from conda_envkit.platforms import CUDA_PLATFORMS

    out = []
    if cuda is not None and not any(p in CUDA_PLATFORMS for p in platforms):
        out.append(f"--cuda {cuda} has no effect: none of {', '.join(platforms)} has CUDA (only {', '.join(sorted(CUDA_PLATFORMS))})")
    for platform, _ in blas:
        if platform != "*" and platform not in platforms:
            out.append(f"--blas {platform}=...: {platform} is not locked ({', '.join(platforms)}), so it has no effect")
    return out


def _lock(spec: Any, options: Any, as_json: bool, quiet: bool) -> None:
    from conda_envkit.channels import channel_secrets, discard_failed_repodata, forget_credentials, make_gateway, repodata_cache_dir
    from conda_envkit.locking import lock_environment
    from conda_envkit.progress import progress_for
    from conda_envkit.solve import ChannelReadError

    reporter = progress_for(quiet)

    def progress(solved: Any) -> None:
        reporter.advance("solve", detail=f"{solved.target.label}: {len(solved.records)} packages in {solved.seconds:.2f}s")
        if solved.target.cuda and not solved.cuda_packages:
            click.echo(
                f"warning: {solved.target.label}: a CUDA {solved.target.cuda} driver assumed, but no CUDA build was chosen "
                "(none runs on that driver, or the spec pins CPU builds); the lock is CPU-only there",
                err=True,
            )

    reporter.start("solve", unit="platforms")
    started = time.time_ns()
    try:
        outcomes = lock_environment(spec, options, make_gateway(options.settings, repodata_cache_dir()), progress)
    except ChannelReadError as exc:
        discard_failed_repodata(repodata_cache_dir(), exc.urls, started)  # no half-downloaded repodata kept
        raise
    finally:
        forget_credentials(repodata_cache_dir(), channel_secrets(tuple(spec.channels), options.settings))
    reporter.done("solve", f"{sum(len(o.solved) for o in outcomes)} platform(s) solved ({', '.join(spec.platforms)})")
    if as_json:
        click.echo(json.dumps([_outcome_json(o) for o in outcomes], indent=2))
        return
    for o in outcomes:
        state = "wrote" if o.written else "unchanged"
        click.echo(f"{state} {o.path}  lock hash {o.lock_hash}")
        for s in o.solved:
            p = s.target.platform
            blas = s.chosen_blas.value if s.chosen_blas else "none"
            pip = o.pip_packages.get(p, 0)
            pip_text = f" + {pip} pip" if pip else ""
            click.echo(f"  {p:<14} {len(s.records):>4} packages{pip_text}  {_cuda_summary(s)}  blas {blas}  {o.platform_hashes[p].short}")


def _cuda_summary(solved: Any) -> str:
    """`cpu`, or the driver assumed and the cuda-version chosen (and whether it relies on minor-version compatibility)."""
    driver = solved.target.cuda
    if not driver:
        return "cpu"
    chosen = solved.chosen_cuda_version
    compat = ""
    if chosen and _version_key(chosen) > _version_key(driver):
        compat = ", newer than the driver: runs by CUDA minor-version compatibility"
    return f"cuda driver {driver} (cuda-version {chosen or 'none'}{compat})"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".") if x.isdigit())


def _outcome_json(o: Any) -> dict[str, Any]:
    return {
        "lockfile": str(o.path),
        "variant": o.variant,
        "written": o.written,
        "lock_hash": str(o.lock_hash),
        "platforms": {
            s.target.platform: {
                "lock_hash": str(o.platform_hashes[s.target.platform]),
                "packages": len(s.records),
                "pip_packages": o.pip_packages.get(s.target.platform, 0),
                "cuda": s.target.cuda,
                "cuda_driver": s.target.cuda,
                "cuda_version": s.chosen_cuda_version,
                "cuda_minor_version_compat": bool(
                    s.target.cuda and s.chosen_cuda_version and _version_key(s.chosen_cuda_version) > _version_key(s.target.cuda)
                ),
                "blas": s.chosen_blas.value if s.chosen_blas else None,
                "seconds": round(s.seconds, 3),
            }
            for s in o.solved
        },
    }


def _print_check(results: list[Any], as_json: bool) -> None:
    stale = [r for r in results if not r.fresh]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "lockfile": r.path,
                        "variant": r.variant,
                        "platform": r.platform,
                        "fresh": r.fresh,
                        "reasons": list(r.reasons),
                        "assumptions": list(r.notes),
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    else:
        for r in results:
            if r.fresh:
                changed = r.hash_matched is False
                click.echo(f"fresh  {r.path} {r.platform}" + (" (inputs changed, lock still satisfies them)" if changed else ""))
            else:
                click.echo(f"STALE  {r.path} {r.platform}:", err=True)
                for reason in r.reasons:
                    click.echo(f"         {reason}", err=True)
            for note in r.notes:
                click.echo(f"         note: {note}", err=True)
        if stale:
            click.echo("hint: run `envkit lock` to update the lock (flags default to what the lock records)", err=True)
    if stale:
        sys.exit(EXIT_STALE)


@main.command("hash")
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option("-p", "--platform", "platform", help="Print only this platform's hash.")
@click.option("--short", is_flag=True, help="Print only the 12-digit form (for tags).")
@click.option("--json", "as_json", is_flag=True)
@_reports_errors
def hash_command(lockfile: Path, platform: str | None, short: bool, as_json: bool) -> None:
    """Print the lock hash (whole lock and per platform)."""
    from conda_envkit.lockfile import lock_hash, platform_lock_hash, read_lockfile

    lf = read_lockfile(lockfile)
    whole = lock_hash(lf)
    per = {p: platform_lock_hash(lf, p) for p in sorted(lf.metadata.platforms)}
    if platform is not None:
        value = platform_lock_hash(lf, platform)
        click.echo(value.short if short else str(value))
        return
    if as_json:
        click.echo(
            json.dumps({"lockfile": str(lockfile), "lock_hash": str(whole), "platforms": {p: str(h) for p, h in per.items()}}, indent=2)
        )
        return
    click.echo(whole.short if short else f"{whole}  {lockfile}")
    if not short:
        for p, h in per.items():
            click.echo(f"{h}  {p}")


@main.command()
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option("-p", "--platform", "platform", required=True, help="Platform to render.")
@click.option(
    "--kind",
    type=click.Choice(["explicit", "env"]),
    default="explicit",
    show_default=True,
    help="@EXPLICIT file with sha256, or a pinned environment.yml.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
@click.option("-n", "--name", help="Environment name (for --kind env).")
@click.option(
    "--hash",
    "hash_kind",
    type=click.Choice(["md5", "sha256"]),
    default="md5",
    show_default=True,
    help="Hash on each @EXPLICIT line: md5 (every conda client) or sha256 (url#sha256:...).",
)
@_reports_errors
def render(lockfile: Path, platform: str, kind: str, output: Path | None, name: str | None, hash_kind: str) -> None:
    """Render one platform of the lock as an explicit file or a pinned environment.yml."""
    from conda_envkit.lockfile import read_lockfile, render_environment_yaml, render_explicit, write_if_changed

    lf = read_lockfile(lockfile)
    text = render_explicit(lf, platform, hash_kind) if kind == "explicit" else render_environment_yaml(lf, platform, name)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_if_changed(output, text)
        click.echo(f"wrote {output}", err=True)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=option)
        out[key] = val
    return out


def _command_line(value: str | None) -> tuple[str, ...] | None:
    """A JSON array (exec form) or a plain string split like a shell would."""
    if value is None:
        return None
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"invalid JSON array: {exc}") from None
        return tuple(str(i) for i in items)
    import shlex

    return tuple(shlex.split(value))


def _host_platform() -> str:
    from rattler import Platform

    return str(Platform.current())


def _image_options(
    lf: Any,
    platforms: list[str],
    base: str | None,
    recipe_name: str | None,
    recipe_dir: Path | None,
    reproducible: bool,
    name: str,
    prefix: str | None,
    env: tuple[str, ...],
    labels: tuple[str, ...],
    entrypoint: str | None,
    cmd: str | None,
    workdir: str | None,
    user: str | None,
) -> tuple[Any, dict[str, str], Any]:
    """BakeOptions from the command line (over a recipe), the base reference per platform, and the recipe (or None)."""
    from conda_envkit.bake import BakeOptions, source_date_epoch, with_recipe
    from conda_envkit.recipes import RecipeError, load_recipe

    options = BakeOptions(
        name=name,
        prefix=prefix,
        env=_pairs(env, "--env"),
        entrypoint=_command_line(entrypoint),
        cmd=_command_line(cmd),
        workdir=workdir,
        user=user,
        labels=_pairs(labels, "--label"),
        epoch=source_date_epoch(),
    )
    if recipe_name is None:
        if reproducible:
            raise RecipeError("--reproducible needs --recipe", hint="the settings come from the recipe's `reproducibility:`")
        return options, {p: base or "scratch" for p in platforms}, None
    from conda_envkit.lockmodel import cuda_driver_assumption

    recipe = load_recipe(recipe_name, recipe_dir)
    bases = {p: base or recipe.base_for(cuda_driver_assumption(lf, p)) for p in platforms}
    return with_recipe(options, recipe, reproducible), bases, recipe


@main.command()
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option(
    "-p",
    "--platform",
    "platforms",
    multiple=True,
    help="Platform to bake (repeat for a multi-arch index). [default: linux-64, else the lock's first linux platform]",
)
@click.option("--base", help="Base image: scratch, REGISTRY/REPO:TAG, oci:DIR[:NAME], docker-archive:FILE. [default: recipe's, or scratch]")
@click.option("--recipe", help="Recipe (see `envkit recipes`): base per CUDA, env, user, entrypoint, files.")
@click.option(
    "--recipe-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Also look for recipes here (searched first)."
)
@click.option("--reproducible", is_flag=True, help="Add the recipe's reproducibility settings (PYTHONHASHSEED, determinism flags).")
@click.option("-n", "--name", default="env", show_default=True, help="Environment name (prefix /opt/conda/envs/NAME).")
@click.option("--prefix", help="Where the environment lives in the image. [default: /opt/conda/envs/NAME]")
@click.option("--oci", "oci_dir", type=click.Path(path_type=Path), help="Write an OCI image layout directory.")
@click.option("--docker-archive", type=click.Path(path_type=Path), help="Write a docker-archive tarball (`docker load -i`).")
@click.option("--push", "push_repo", metavar="REGISTRY/REPO", help="Push to this repository.")
@click.option("-t", "--tag", "tags", multiple=True, help="Extra tag (repeat). The lock hash tag is always added.")
@click.option("--insecure", is_flag=True, help="Plain HTTP for registries on localhost (never for remote ones).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable in the image (repeat).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Extra label/annotation (repeat).")
@click.option("--entrypoint", help="Entrypoint: a JSON array or a command line.")
@click.option("--cmd", help="Cmd: a JSON array or a command line.")
@click.option("--workdir", help="Working directory.")
@click.option("--user", help="User (name or uid[:gid]).")
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True)
@click.option("--large-package-mb", type=int, default=32, show_default=True, help="Packages at least this big get a layer of their own.")
@click.option(
    "--record", "record_path", type=click.Path(path_type=Path), default=Path("bake.json"), show_default=True, help="Bake record (JSON)."
)
@click.option(
    "--cache-dir", type=click.Path(path_type=Path), help="Package, blob and layer cache. [default: $ENVKIT_CACHE_DIR or ~/.cache/envkit]"
)
@click.option("--cache-to", metavar="REGISTRY/REPO[:TAG]", help="Store the layer cache in a registry (tag envkit-cache by default).")
@click.option("--cache-from", multiple=True, metavar="REGISTRY/REPO[:TAG]", help="Use layers from a registry cache (repeat).")
@click.option("--mirror", "mirrors", multiple=True, metavar="CHANNEL=URL", help="Fetch packages of CHANNEL from URL instead.")
@click.option("--config", "config", type=click.Path(path_type=Path), help="Config file with channel_alias and mirrors.")
@click.option("--json", "as_json", is_flag=True, help="Print the bake record on stdout.")
@click.option("-q", "--quiet", is_flag=True)
@_reports_errors
def bake(
    lockfile: Path,
    platforms: tuple[str, ...],
    base: str | None,
    recipe: str | None,
    recipe_dir: Path | None,
    reproducible: bool,
    name: str,
    prefix: str | None,
    oci_dir: Path | None,
    docker_archive: Path | None,
    push_repo: str | None,
    tags: tuple[str, ...],
    insecure: bool,
    env: tuple[str, ...],
    labels: tuple[str, ...],
    entrypoint: str | None,
    cmd: str | None,
    workdir: str | None,
    user: str | None,
    compression: str,
    large_package_mb: int,
    record_path: Path,
    cache_dir: Path | None,
    cache_to: str | None,
    cache_from: tuple[str, ...],
    mirrors: tuple[str, ...],
    config: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Bake a lock into a reproducible OCI image (no Docker daemon) and write/push it."""
    from conda_envkit.bake import LayerPolicy, bake_image
    from conda_envkit.channels import load_settings
    from conda_envkit.install import default_cache_dir
    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.oci.base import load_base
    from conda_envkit.oci.blobs import BlobStore
    from conda_envkit.oci.layer import Compression
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.publish import BakeTargets, insecure_hosts, publish_image
    from conda_envkit.record import bake_record, write_record
    from conda_envkit.registry_cache import RegistryClients, parse_cache_ref

    say = (lambda _m: None) if quiet else (lambda m: click.echo(m, err=True))
    lf = read_lockfile(lockfile)
    linux = [p for p in lf.metadata.platforms if p.startswith("linux-")]
    chosen = list(platforms) or (["linux-64"] if "linux-64" in linux or not linux else linux[:1])
    options, base_refs, _recipe = _image_options(
        lf, chosen, base, recipe, recipe_dir, reproducible, name, prefix, env, labels, entrypoint, cmd, workdir, user
    )
    options = replace(options, compression=Compression(compression), policy=LayerPolicy(own_layer_bytes=large_package_mb << 20))
    cache = cache_dir or default_cache_dir()
    store = BlobStore(cache / "blobs")
    registries = []
    if push_repo:
        registries.append(parse_image_ref(push_repo).registry)
    for ref in set(base_refs.values()):
        if ref != "scratch" and not ref.startswith(("oci:", "docker-archive:")):
            registries.append(parse_image_ref(ref).registry)
    cache_refs = [parse_cache_ref(r) for r in cache_from]
    cache_to_ref = parse_cache_ref(cache_to) if cache_to else None
    registries += [r.registry for r in cache_refs] + ([cache_to_ref.registry] if cache_to_ref else [])
    insecure_list = insecure_hosts(registries, insecure)
    clients = RegistryClients(insecure_list)
    remote = clients.load(cache_refs, say) if cache_refs else None
    bases = {}
    for platform in chosen:
        say(f"base {base_refs[platform]} for {platform} ...")
        bases[platform] = load_base(base_refs[platform], platform, store, insecure_list)
    from conda_envkit.progress import progress_for

    progress = progress_for(quiet)
    baked = bake_image(lockfile, lf, chosen, bases, options, store, cache, load_settings(config, None, list(mirrors)), progress, remote)
    targets = BakeTargets(oci_layout=oci_dir, docker_archive=docker_archive, push=push_repo, tags=tags, insecure=insecure_list)
    pushed = ([parse_image_ref(push_repo).registry] if push_repo else []) + ([cache_to_ref.registry] if cache_to_ref else [])
    clients.fetch_needed(baked, store, local=bool(oci_dir or docker_archive), pushed_to=pushed)
    result = publish_image(baked, store, targets, progress)
    if cache_to_ref is not None:
        uploaded, mounted = clients.store_cache(cache_to_ref, baked, store)
        say(f"cache {cache_to_ref}: {uploaded} layer(s) uploaded, {mounted} mounted")
    record = bake_record(baked, lockfile, options, result.references, result.tags, result.outputs, result.push)
    write_record(record_path, record)
    say(f"wrote {record_path}")
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        for reference in result.references:
            click.echo(reference)


@main.command("install")
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option("-p", "--platform", "platform", help="Platform to install. [default: this machine's]")
@click.option(
    "--prefix",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to create the environment, or one envkit made to bring to the lock.",
)
@click.option("--force", is_flag=True, help="Bring an existing prefix envkit did not create to the lock.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Package cache. [default: $ENVKIT_CACHE_DIR or ~/.cache/envkit]")
@click.option("--mirror", "mirrors", multiple=True, metavar="CHANNEL=URL", help="Fetch packages of CHANNEL from URL instead.")
@click.option("--config", "config", type=click.Path(path_type=Path), help="Config file with channel_alias and mirrors.")
@click.option("-q", "--quiet", is_flag=True)
@_reports_errors
def install_command(
    lockfile: Path,
    platform: str | None,
    prefix: Path,
    force: bool,
    cache_dir: Path | None,
    mirrors: tuple[str, ...],
    config: Path | None,
    quiet: bool,
) -> None:
    """Create a conda environment from the lock (hashes verified), without conda; or sync one envkit made."""
    from conda_envkit.channels import load_settings
    from conda_envkit.installed_state import up_to_date
    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.progress import progress_for

    platform = platform or _host_platform()
    if prefix.exists() and up_to_date(lockfile, prefix, platform):
        click.echo(f"{prefix.absolute()} is up to date")
        return
    lf = read_lockfile(lockfile)
    settings = load_settings(config, None, list(mirrors))
    if prefix.exists():
        from conda_envkit.sync import sync_environment

        synced = sync_environment(lockfile, lf, platform, prefix, cache_dir, settings, progress_for(quiet), force)
        click.echo(f"synced {synced.prefix}: {synced.plan.summary()} in {synced.seconds:.2f}s")
        return
    from conda_envkit.install import install_environment

    report = install_environment(lockfile, lf, platform, prefix, cache_dir, settings, progress_for(quiet))
    click.echo(f"installed {len(report.fetch.packages)} packages into {report.prefix} in {report.seconds:.2f}s")


@main.command("export")
@click.option("--record", "record_path", type=click.Path(path_type=Path), help="A bake record (bake.json).")
@click.option("--lockfile", type=click.Path(path_type=Path), help="A lock file (also the artifact logged to trackers).")
@click.option("--image", help="An image: REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:NAME]; the record comes from its labels.")
@click.option("-p", "--platform", help="Which platform's details to export (when there are several).")
@click.option(
    "--to",
    "destinations",
    multiple=True,
    required=True,
    type=click.Choice(["json", "env", "github", "mlflow", "wandb", "registry"]),
    help="Where to (repeat).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write json/env output here instead of stdout.")
@click.option("--run-id", help="MLflow run (or W&B run to resume).")
@click.option("--experiment", help="MLflow experiment for a new run (when no --run-id).")
@click.option("--model", help="MLflow registered model to tag (with --version).")
@click.option("--version", "model_version", help="Version of --model.")
@click.option("--tracking-uri", help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI]")
@click.option("--wandb-project", help="W&B project. [default: envkit]")
@click.option("--wandb-mode", type=click.Choice(["online", "offline"]), help="W&B mode. [default: $WANDB_MODE or online]")
@click.option("--wandb-dir", type=click.Path(path_type=Path), help="W&B run directory.")
@click.option("--insecure", is_flag=True, help="Plain HTTP for registries on localhost.")
@_reports_errors
def export_command(
    record_path: Path | None,
    lockfile: Path | None,
    image: str | None,
    platform: str | None,
    destinations: tuple[str, ...],
    output: Path | None,
    run_id: str | None,
    experiment: str | None,
    model: str | None,
    model_version: str | None,
    tracking_uri: str | None,
    wandb_project: str | None,
    wandb_mode: str | None,
    wandb_dir: Path | None,
    insecure: bool,
) -> None:
    """Send the lock hash, image digest and package list to trackers, CI and the registry."""
    from conda_envkit.record import RecordError, record_from_bake, record_from_layout, record_from_lock

    if not (record_path or lockfile or image):
        raise RecordError("nothing to export", hint="pass --record bake.json, --lockfile conda-lock.yml or --image REF")
    if record_path and image:
        raise RecordError("--record and --image exclude each other", hint="pass one source")
    insecure_list: tuple[str, ...] = ()
    if record_path:
        record = record_from_bake(record_path, platform)
    elif image and image.startswith("oci:"):
        from conda_envkit.oci.base import split_ref

        layout, name = split_ref(image[4:])
        record = record_from_layout(Path(layout), name, platform)
    elif image:
        from conda_envkit.export.registry import inspect_image
        from conda_envkit.oci.reference import parse_image_ref
        from conda_envkit.publish import insecure_hosts
        from conda_envkit.record import EnvironmentRecord

        insecure_list = insecure_hosts([parse_image_ref(image).registry], insecure)
        record = EnvironmentRecord(**{k: v for k, v in inspect_image(image, platform, insecure_list)["record"].items() if k != "schema"})
    else:
        record = record_from_lock(lockfile, platform)  # type: ignore[arg-type]
    lock_artifact = lockfile or (Path(record.lockfile) if record.lockfile else None)
    if "registry" in destinations and not record_path:
        raise RecordError("--to registry needs the bake record", hint="pass --record bake.json (and --lockfile if it moved)")
    for destination in destinations:
        if destination in ("json", "env"):
            from conda_envkit.export.dotenv import render_env
            from conda_envkit.export.json_record import render_json
            from conda_envkit.lockfile import write_if_changed

            text = render_json(record) if destination == "json" else render_env(record)
            if output:
                write_if_changed(output, text)
                click.echo(f"wrote {output}", err=True)
            else:
                click.echo(text, nl=False)
        elif destination == "github":
            from conda_envkit.export.github import write_github_output

            click.echo(f"appended {len(record.flat())} outputs to {write_github_output(record)}", err=True)
        elif destination == "mlflow":
            from conda_envkit.export.mlflow_run import MlflowTarget, export_to_mlflow

            target = MlflowTarget(run_id, experiment, model, model_version, tracking_uri)
            result = export_to_mlflow(record, lock_artifact, target)
            model_text = f" and model {result.model_version}" if result.model_version else ""
            click.echo(f"mlflow: tagged run {result.run_id}{model_text}", err=True)
        elif destination == "wandb":
            from conda_envkit.export.wandb_run import WandbTarget, export_to_wandb

            wandb_run = export_to_wandb(record, lock_artifact, WandbTarget(wandb_project, run_id, wandb_mode, wandb_dir))
            click.echo(f"wandb: logged to run {wandb_run}", err=True)
        elif destination == "registry":
            from conda_envkit.export.registry import attach_to_registry
            from conda_envkit.oci.reference import parse_image_ref
            from conda_envkit.publish import insecure_hosts

            data = json.loads(record_path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
            repo = (data.get("outputs") or {}).get("registry", "")
            hosts = insecure_hosts([parse_image_ref(repo).registry], insecure) if repo else ()
            lock_path = lockfile or Path(data.get("lockfile") or "conda-lock.yml")
            for item in attach_to_registry(data, lock_path, hosts):
                click.echo(f"attached {item.title} to {item.subject}: {item.artifact.digest}", err=True)


@main.command("inspect")
@click.argument("image", metavar="IMAGE")
@click.option("-p", "--platform", help="Platform of a multi-arch image. [default: linux-64]")
@click.option("--insecure", is_flag=True, help="Plain HTTP for registries on localhost.")
@_reports_errors
def inspect_command(image: str, platform: str | None, insecure: bool) -> None:
    """Print an image's envkit record and the artifacts (lock, SBOM) attached to it.

    IMAGE: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME] or docker-archive:FILE[:TAG] (as for bake --base).
    """
    from conda_envkit.export.registry import inspect_image
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.publish import insecure_hosts

    hosts = () if image.startswith(("oci:", "docker-archive:")) else insecure_hosts([parse_image_ref(image).registry], insecure)
    click.echo(json.dumps(inspect_image(image, platform, hosts), indent=2, sort_keys=True))


@main.command("diff")
@click.argument("old")
@click.argument("new", default="conda-lock.yml")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("-p", "--platform", "platforms", multiple=True, help="Only these platforms (repeat).")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the locks differ (like git diff --exit-code).")
@_reports_errors
def diff_command(old: str, new: str, fmt: str, platforms: tuple[str, ...], exit_code: bool) -> None:
    """Show what changed between two locks (paths, or git REV:path such as HEAD~1:conda-lock.yml)."""
    from conda_envkit.lockdiff import diff_locks, read_lock_at, render_json, render_markdown, render_text

    old_lock, old_label = read_lock_at(old)
    new_lock, new_label = read_lock_at(new)
    changes = [c for c in diff_locks(old_lock, new_lock) if not platforms or c.platform in platforms]
    render = {"text": render_text, "markdown": render_markdown, "json": render_json}[fmt]
    click.echo(render(changes, old_label, new_label), nl=False)
    if exit_code and changes:
        sys.exit(1)


def _load_image(image: str, platform: str | None, insecure: bool, cache_dir: Path | None = None) -> tuple[Any, Path, dict[str, str]]:
    """An image's layers in the blob cache: (BaseImage, blob store root, labels)."""
    from conda_envkit.install import default_cache_dir
    from conda_envkit.oci.base import load_base
    from conda_envkit.oci.blobs import BlobStore
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.publish import insecure_hosts

    hosts = () if image.startswith(("oci:", "docker-archive:")) else insecure_hosts([parse_image_ref(image).registry], insecure)
    store = BlobStore((cache_dir or default_cache_dir()) / "blobs")
    loaded = load_base(image, platform or "linux-64", store, hosts)
    return loaded, store.root, (loaded.config.get("config") or {}).get("Labels") or {}


@main.command("verify")
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option("--prefix", type=click.Path(path_type=Path), help="An installed environment to check.")
@click.option("--image", help="An image to check: REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:NAME].")
@click.option("-p", "--platform", help="Platform of the lock to check against. [default: the image's, or this machine's]")
@click.option("--insecure", is_flag=True, help="Plain HTTP for registries on localhost.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Where image blobs are kept. [default: $ENVKIT_CACHE_DIR]")
@click.option("--json", "as_json", is_flag=True)
@_reports_errors
def verify_command(
    lockfile: Path, prefix: Path | None, image: str | None, platform: str | None, insecure: bool, cache_dir: Path | None, as_json: bool
) -> None:
    """Check that a prefix or image holds exactly the locked packages, with unmodified files (exit 1 if not)."""
    import tempfile

    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.verify import ImageTree, PrefixTree, VerifyError

    if (prefix is None) == (image is None):
        raise VerifyError("pass exactly one of --prefix and --image", hint="envkit verify --prefix ./env, or --image REGISTRY/REPO:TAG")
    lf = read_lockfile(lockfile)
    if prefix is not None:
        tree = PrefixTree(prefix)
        chosen = platform or _host_platform()
        target = str(prefix)
    else:
        # A fresh blob store: every blob is read from the image itself and checked against its
        # digest, never taken from a cache that already holds something by that name.
        scratch_blobs = tempfile.TemporaryDirectory(prefix="envkit-verify-")
        loaded, store_root, labels = _load_image(image, platform, insecure, Path(scratch_blobs.name))  # type: ignore[arg-type]
        chosen = platform or labels.get("dev.envkit.platform") or "linux-64"
        in_image = labels.get("dev.envkit.prefix")
        if not in_image:
            raise VerifyError(f"{image} has no dev.envkit.prefix label", hint="was it baked by envkit?")
        tree = ImageTree(loaded, store_root, in_image)
        target = f"{image} ({in_image})"
    if prefix is not None:
        from conda_envkit.verify import verify_installed_prefix

        findings = verify_installed_prefix(lockfile, lf, chosen, prefix, cache_dir)
    else:
        from conda_envkit.verify import verify_image

        findings = verify_image(lockfile, lf, chosen, tree, loaded.config, labels, cache_dir)  # type: ignore[arg-type]
        scratch_blobs.cleanup()
    # A recipe's extra files are outside the lock: listed for review, not judged.
    recipe_files = sorted(getattr(tree, "recipe_files", []))
    if as_json:
        report = {"target": target, "platform": chosen, "ok": not findings, "findings": [f.__dict__ for f in findings]}
        if recipe_files:
            report["recipe_files"] = recipe_files
        click.echo(json.dumps(report, indent=2))
    elif findings:
        for f in findings:
            click.echo(f"{f.kind:<16} {f.package}: {f.detail}", err=True)
        click.echo(f"{target}: {len(findings)} problem(s) against {lockfile} ({chosen})", err=True)
    else:
        click.echo(f"{target}: matches {lockfile} ({chosen})")
    if recipe_files and not as_json:
        click.echo(f"recipe files (not in the lock, not checked): {', '.join(recipe_files)}", err=True)
    if findings:
        sys.exit(EXIT_STALE)


@main.command("doctor")
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option("--image", help="Check an image instead (its baked-in lock): REGISTRY/REPO[:TAG] or oci:DIR[:NAME].")
@click.option("-p", "--platform", help="Platform of the lock to check. [default: the image's, or this machine's]")
@click.option("--insecure", is_flag=True, help="Plain HTTP for registries on localhost.")
@click.option("--json", "as_json", is_flag=True)
@_reports_errors
def doctor_command(lockfile: Path, image: str | None, platform: str | None, insecure: bool, as_json: bool) -> None:
    """Say whether the lock or image will run on this host (CUDA driver, glibc, CPU) and what to change."""
    import tempfile

    from conda_envkit.doctor import diagnose, host_facts
    from conda_envkit.lockfile import read_lockfile

    host = host_facts()
    if image is not None:
        from conda_envkit.verify import ImageTree, VerifyError

        loaded, store_root, labels = _load_image(image, platform, insecure)
        text = ImageTree(loaded, store_root, labels.get("dev.envkit.prefix", "/opt/conda")).lock_text()
        if text is None:
            raise VerifyError(f"{image} holds no envkit lock", hint="was it baked by envkit?")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "conda-lock.yml").write_text(text, encoding="utf-8")
            lf = read_lockfile(Path(tmp) / "conda-lock.yml")
        chosen = platform or labels.get("dev.envkit.platform") or "linux-64"
    else:
        lf = read_lockfile(lockfile)
        chosen = platform or (host.platform if host.platform in lf.metadata.platforms else sorted(lf.metadata.platforms)[0])
    result = diagnose(lf, chosen, host)
    if as_json:
        requirements = [r.__dict__ for r in result.requirements]
        click.echo(json.dumps({"host": host.__dict__, "platform": chosen, "runs": result.runs, "requirements": requirements}, indent=2))
    else:
        gpu = f", GPUs: {', '.join(host.gpus)}" if host.gpus else ""
        driver = f"CUDA driver {host.cuda_driver or 'none'} ({host.cuda_source}){gpu}"
        click.echo(f"host: {host.platform} ({host.machine}), glibc {host.glibc or 'not found'}, {driver}")
        for r in result.requirements:
            click.echo(f"  {'ok ' if r.ok else 'NO '} {r.what:<9} needs {r.needed:<12} have {r.have:<12} {r.why}")
        click.echo(f"verdict: {image or lockfile} ({chosen}) {'will run here' if result.runs else 'will NOT run here as locked'}")
    if not result.runs:
        sys.exit(EXIT_STALE)


@main.command("recipes")
@click.option("--recipe-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Also list recipes here.")
@click.option("--json", "as_json", is_flag=True)
@_reports_errors
def recipes_command(recipe_dir: Path | None, as_json: bool) -> None:
    """List the image recipes (built-in and --recipe-dir)."""
    from conda_envkit.recipes import list_recipes

    found = list_recipes(recipe_dir)
    if as_json:
        rows = [
            {"name": r.name, "description": r.description, "directory": str(r.directory), "cpu_base": r.base_cpu, "cuda_bases": r.base_cuda}
            for r in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for r in found:
        cuda = f"; CUDA bases {', '.join(sorted(r.base_cuda))}" if r.base_cuda else ""
        click.echo(f"{r.name:<16} {r.description} (base {r.base_cpu}{cuda})")


@main.command("dockerfile")
@click.option("--lockfile", type=click.Path(path_type=Path), default=Path("conda-lock.yml"), show_default=True)
@click.option("--recipe", required=True, help="Recipe (see `envkit recipes`).")
@click.option(
    "--recipe-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Also look for recipes here (searched first)."
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Build context directory to create.")
@click.option("-p", "--platform", default="linux-64", show_default=True)
@click.option("--base", help="Base image instead of the recipe's.")
@click.option("--reproducible", is_flag=True, help="Add the recipe's reproducibility settings.")
@click.option("-n", "--name", default="env", show_default=True, help="Environment name (prefix /opt/conda/envs/NAME).")
@click.option("--prefix", help="Where the environment lives in the image.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--backend", type=click.Choice(["buildah", "podman", "docker"]), help="Also run the build with this tool.")
@click.option("-t", "--tag", "tag", help="Image tag for --backend. [default: envkit/NAME:<lock hash>-<platform>]")
@click.option("--insecure", is_flag=True, help="Plain HTTP for a base on a localhost registry (also passed to the backend).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Package cache. [default: $ENVKIT_CACHE_DIR or ~/.cache/envkit]")
@click.option("--pin-base-digest", is_flag=True, help="Ask the base's registry for its digest: FROM base@digest and the base-digest label.")
@click.option("-q", "--quiet", is_flag=True)
@_reports_errors
def dockerfile_command(
    lockfile: Path,
    recipe: str,
    recipe_dir: Path | None,
    output: Path,
    platform: str,
    base: str | None,
    reproducible: bool,
    name: str,
    prefix: str | None,
    env: tuple[str, ...],
    labels: tuple[str, ...],
    backend: str | None,
    tag: str | None,
    insecure: bool,
    cache_dir: Path | None,
    pin_base_digest: bool,
    quiet: bool,
) -> None:
    """Write a Docker build context from a recipe; the environment is installed by envkit, not in the build.

    Offline unless --pin-base-digest (or --backend, whose build pulls the base).
    """
    from conda_envkit.dockerfile import build_with, write_build_context
    from conda_envkit.install import default_cache_dir
    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.oci.image import oci_platform
    from conda_envkit.oci.reference import parse_image_ref
    from conda_envkit.oci.registry import RegistryClient
    from conda_envkit.oci.transfer import resolve_digest
    from conda_envkit.publish import insecure_hosts

    lf = read_lockfile(lockfile)
    options, bases, the_recipe = _image_options(
        lf, [platform], base, recipe, recipe_dir, reproducible, name, prefix, env, labels, None, None, None, None
    )
    base_ref = bases[platform]
    digest = None
    in_registry = base_ref != "scratch" and not base_ref.startswith(("oci:", "docker-archive:"))
    if in_registry and pin_base_digest:
        ref = parse_image_ref(base_ref)
        hosts = insecure_hosts([ref.registry], insecure)
        client = RegistryClient(ref.registry, insecure=ref.registry in hosts)
        digest = resolve_digest(client, ref, oci_platform(platform))
    cache = cache_dir or default_cache_dir()
    from conda_envkit.progress import progress_for

    context = write_build_context(lockfile, lf, platform, the_recipe, options, base_ref, digest, output, cache, None, progress_for(quiet))
    pinned = f", pinned to {digest}" if digest else ", digest not pinned: --pin-base-digest asks its registry" if in_registry else ""
    click.echo(f"wrote {context.directory}/Dockerfile (base {base_ref}{pinned})")
    if backend:
        image_tag = tag or f"envkit/{name}:{context.labels['dev.envkit.lock-hash'][7:19]}-{platform}"
        extra = ["--tls-verify=false"] if insecure and backend in ("buildah", "podman") else []
        build_with(backend, context.directory, image_tag, extra)
        click.echo(f"built {image_tag} with {backend}")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run() -> None:
    """Console entry point: run the command, then leave without interpreter teardown.

    py-rattler keeps tokio worker threads that may still release Python objects while
    the interpreter finalizes, which aborts the process (SIGABRT) now and then after
    the work is done. Every file envkit writes is complete (written, fsynced and
    renamed) before a command returns, so skipping finalization loses nothing.
    """
    # SIGTERM unwinds like Ctrl-C, so staging directories and temp files are removed.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            click.echo(str(exc.code), err=True)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
