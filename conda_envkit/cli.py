"""The `envkit` command: parse arguments, call one library function, print.

The work is in conda_envkit.commands (one function per command, returning what to print);
options used by several commands are declared once, below.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from conda_envkit import __version__
from conda_envkit.error_report import error_report, prepare_json_reports
from conda_envkit.interrupts import Interrupted, unwind_on_signals
from conda_envkit.redact import redact

if TYPE_CHECKING:
    from conda_envkit.commands import Output

# Only click and envkit's error type load at start-up: each command imports what it uses, so
# `envkit --help` and `envkit hash` never load the solver, conda_lock, uv, httpx or jinja2.

F = Callable[..., Any]


def _reports_errors(command: F) -> F:
    """Turn `EnvkitError` (a refused flag value included) into a short message and exit code 2, never a traceback.

    A command asked for JSON (`--json`, `--format json`) also gets the error as one JSON document on stdout,
    so that a script reading its stdout reads the failure too (conda_envkit.error_report).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json") is True or kwargs.get("fmt") == "json"
        if as_json:
            prepare_json_reports()
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            report = error_report(exc)
            if report is None:  # a bug: its traceback is what to report
                raise
        # Exit outside the except block: the exception's frames must not outlive it,
        # or py-rattler objects they hold are torn down during interpreter shutdown.
        for line in report.lines():
            click.echo(line, err=True)
        if as_json:
            click.echo(report.json_document())
        sys.exit(report.exit_code)

    return wrapper


def _note(text: str, nl: bool = True) -> None:
    """A note or warning on stderr, redacted as errors are (conda_envkit.redact): one may quote a lock's channel
    URL, and conda-lock writes a lock's URLs with their credentials unless --strip-auth."""
    click.echo(redact(text), err=True, nl=nl)


def _echo(to_stderr: bool, text: str, nl: bool = True) -> None:
    """A command's line: stdout as it is (the data asked for: JSON, env lines), stderr as `_note`."""
    if to_stderr:
        _note(text, nl)
    else:
        click.echo(text, nl=nl)


def _emit(output: Output) -> None:
    """Print what a command returned, then exit with its status (if not 0)."""
    for to_stderr, text, nl in output.items:
        _echo(to_stderr, text, nl)
    if output.status:
        sys.exit(output.status)


def _jobs(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    """--jobs: a number from 1, or auto (None)."""
    if value == "auto":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"{value!r} is neither a whole number of 1 or more nor auto")


def _say(quiet: bool) -> Callable[[str], None]:
    """Progress notes on stderr, or nothing with -q."""
    return (lambda _m: None) if quiet else _note


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order listed."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


# -- options shared by several commands -------------------------------------------------------

PATH = click.Path(path_type=Path)
DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def lockfile_option(help: str | None = None, default: Path | None = Path("conda-lock.yml")) -> Callable[[F], F]:
    return click.option("--lockfile", type=PATH, default=default, show_default=default is not None, help=help or "The lock file to read.")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
insecure_option = click.option("--insecure", is_flag=True, help="Plain HTTP for registries on localhost (remote ones keep TLS).")
cache_dir_option = click.option(
    "--cache-dir", type=PATH, help="Package, blob and layer cache. [default: $ENVKIT_CACHE_DIR, $XDG_CACHE_HOME/envkit, ~/.cache/envkit]"
)
mirror_option = click.option("--mirror", "mirrors", multiple=True, metavar="CHANNEL=URL", help="Fetch CHANNEL from URL instead (repeat).")
config_option = click.option("--config", "config", type=PATH, help="Config file with channel_alias and mirrors (or $ENVKIT_CONFIG).")
# Where packages come from and go: install and bake.
cache_options = _options(cache_dir_option, mirror_option, config_option)
recipe_dir_option = click.option("--recipe-dir", type=DIR, help="Also look for recipes here (searched first).")


def image_options(command: F) -> F:
    """The flags `bake` and `dockerfile` share, handed to the command as one `image` (commands.images.ImageFlags)."""
    keys = ("base", "recipe", "recipe_dir", "reproducible", "name", "prefix", "env", "labels", "entrypoint", "cmd", "workdir", "user")

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from conda_envkit.commands.images import ImageFlags

        image = ImageFlags(**{k: kwargs.pop(k) for k in keys if k in kwargs})
        return command(image=image, **kwargs)

    return _options(
        recipe_dir_option,
        click.option("--reproducible", is_flag=True, help="Add the recipe's reproducibility settings (PYTHONHASHSEED, determinism flags)."),
        click.option("-n", "--name", default="env", show_default=True, help="Environment name (prefix /opt/conda/envs/NAME)."),
        click.option("--prefix", help="Where the environment lives in the image. [default: /opt/conda/envs/NAME]"),
        click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable in the image (repeat)."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Extra label/annotation (repeat)."),
    )(wrapper)


# -- commands ---------------------------------------------------------------------------------


class _LazyGroup(click.Group):
    """A group whose commands are built when first looked up (run, completed, or asked for --help).

    Building a command creates its click options; building all twelve (about 110 options) took
    some 4 ms of every start-up. `envkit --help` lists every command from the short help
    registered with it and builds none; `envkit lock` builds one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, tuple[str, Callable[[], click.Command]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            short_help, build = self.lazy[cmd_name]
            command = build()
            command.short_help = short_help
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.lazy and args[0] not in self.commands:
            for name in self.lazy:  # a mistyped command: click's "Did you mean" picks from built ones
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][0]))
            elif not self.commands[name].hidden:
                rows.append((name, self.commands[name].get_short_help_str()))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _lazy(name: str, short_help: str) -> Callable[[Callable[[], click.Command]], Callable[[], click.Command]]:
    """Register a function that builds the command `name`; `short_help` is its line in `envkit --help`."""

    def register(build: Callable[[], click.Command]) -> Callable[[], click.Command]:
        main.lazy[name] = (short_help, build)
        return build

    return register


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


@_lazy("lock", "Solve environment.yml for every platform; write the lock.")
def _lock_command() -> click.Command:
    @click.command("lock")
    @click.option(
        "-f", "--file", "files", multiple=True, type=PATH,
        help="environment.yml (repeat to merge; later files win per package). [default: environment.yml]",
    )  # fmt: skip
    @click.option(
        "-p",
        "--platform",
        "platforms",
        multiple=True,
        help="Platform to lock (repeat; overrides `platforms:`). [default: the file's `platforms:`, else linux-64]",
    )
    @lockfile_option(
        help="Lock file to write; variants go next to it as <stem>.<variant>.yml. A variant's lock (recording envkit.variant) "
        "locks or checks that variant alone."
    )
    @click.option(
        "--cuda", "cuda", metavar="VERSION",
        help="The CUDA driver the lock is for (__cuda, as conda-lock --with-cuda): any toolkit it runs may be chosen; "
        "cap the toolkit with a spec such as `cuda-version <=12.4`.",
    )  # fmt: skip
    @click.option("--no-cuda", is_flag=True, help="Lock CPU builds only (the default unless the spec sets envkit.cuda).")
    @click.option(
        "--blas",
        multiple=True,
        metavar="[PLATFORM=]BLAS",
        help="Pin libblas: mkl, openblas, accelerate, blis or netlib; any clears a pin the lock records (per platform: PLATFORM=BLAS).",
    )
    @click.option("--virtual-package-spec", type=PATH, help="conda-lock style virtual-packages.yml overriding the defaults per platform.")
    @click.option("--channel-alias", metavar="URL", help="Where channel names point. [default: https://conda.anaconda.org/]")
    @mirror_option
    @config_option
    @click.option(
        "--check", is_flag=True, help="Do not solve: exit 1 if the lock no longer satisfies the spec, saying which platform and why."
    )
    @click.option(
        "--update", "update", multiple=True, metavar="PKG",
        help="Relock only PKG (repeat); every other package keeps its locked build unless PKG strictly needs a change. "
        "PKG may be a conda or pip package just added to the spec (add it there first: --update does not add one).",
    )  # fmt: skip
    @click.option(
        "--variant", "variants", multiple=True, metavar="NAME",
        help="Lock (or --check) only this variant's file (repeat; `default`: the --lockfile itself). [default: every variant]",
    )  # fmt: skip
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
    @quiet_option
    @_reports_errors
    def lock(as_json: bool, quiet: bool, **flags: Any) -> None:
        """Solve environment.yml for every platform and write conda-lock.yml."""
        from conda_envkit.commands.lock import LockRequest, lock_command

        _emit(lock_command(LockRequest(**flags), as_json, quiet, _note))

    return lock


@_lazy("hash", "Print the lock hash (whole lock and per platform).")
def _hash_command() -> click.Command:
    @click.command("hash")
    @lockfile_option()
    @click.option("-p", "--platform", "platform", help="Print only this platform's hash.")
    @click.option("--short", is_flag=True, help="Print only the 12-digit form (for tags).")
    @click.option("--json", "as_json", is_flag=True)
    @_reports_errors
    def hash_command(lockfile: Path, platform: str | None, short: bool, as_json: bool) -> None:
        """Print the lock hash (whole lock and per platform)."""
        from conda_envkit.commands.lock import hash_output

        _emit(hash_output(lockfile, platform, short, as_json))

    return hash_command


@_lazy("render", "Render a platform as an @EXPLICIT file or environment.yml.")
def _render_command() -> click.Command:
    @click.command("render")
    @lockfile_option()
    @click.option("-p", "--platform", "platform", help="Platform to render. [default: the lock's only one, else this machine's]")
    @click.option(
        "--kind", type=click.Choice(["explicit", "env"]), default="explicit", show_default=True,
        help="@EXPLICIT file with sha256, or a pinned environment.yml.",
    )  # fmt: skip
    @click.option("-o", "--output", type=PATH, help="Write here instead of stdout.")
    @click.option("-n", "--name", help="Environment name (for --kind env).")
    @click.option(
        "--hash", "hash_kind", type=click.Choice(["md5", "sha256"]), default="md5", show_default=True,
        help="Hash on each @EXPLICIT line: md5 (every conda client) or sha256 (url#sha256:...).",
    )  # fmt: skip
    @_reports_errors
    def render(lockfile: Path, platform: str | None, kind: str, output: Path | None, name: str | None, hash_kind: str) -> None:
        """Render one platform of the lock as an explicit file or a pinned environment.yml."""
        from conda_envkit.commands.lock import render_output

        _emit(render_output(lockfile, platform, kind, output, name, hash_kind))

    return render


@_lazy("bake", "Bake a lock into a reproducible OCI image (no daemon).")
def _bake_command() -> click.Command:
    @click.command("bake")
    @lockfile_option()
    @click.option(
        "-p", "--platform", "platforms", multiple=True,
        help="Platform to bake (repeat for a multi-arch index). [default: linux-64, else the lock's first linux platform]",
    )  # fmt: skip
    @click.option(
        "--base", help="Base image: scratch, REGISTRY/REPO:TAG, oci:DIR[:NAME], docker-archive:FILE[:REF]. [default: recipe's, or scratch]"
    )
    @click.option("--recipe", help="Recipe (see `envkit recipes`): base per CUDA, env, user, entrypoint, files.")
    @image_options
    @click.option("--oci", "oci_dir", type=PATH, help="Write an OCI image layout directory (new, empty, or an earlier layout: replaced).")
    @click.option("--docker-archive", type=PATH, help="Write a docker-archive tarball (`docker load -i`).")
    @click.option("--push", "push_repo", metavar="REGISTRY/REPO", help="Push to this repository.")
    @click.option("-t", "--tag", "tags", multiple=True, help="Extra tag (repeat). The lock hash tag is always added.")
    @insecure_option
    @click.option("--entrypoint", help="Entrypoint: a JSON array or a command line.")
    @click.option("--cmd", help="Cmd: a JSON array or a command line.")
    @click.option("--workdir", help="Working directory.")
    @click.option("--user", help="User (name or uid[:gid]).")
    @click.option(
        "--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True,
        help="Layer compression: gzip runs everywhere; zstd is faster and smaller (containerd 1.5+, podman, docker 23+).",
    )  # fmt: skip
    @click.option(
        "--large-package-mb",
        type=click.IntRange(min=0),
        default=32,
        show_default=True,
        help="Packages at least this big get a layer of their own.",
    )
    @click.option(
        "--jobs",
        default="auto",
        show_default=True,
        callback=_jobs,
        metavar="N|auto",
        help="zstd layers written at once: by this process and N-1 worker processes (each ~60-70 MB of memory; faster on "
        "several CPUs). auto: one per CPU, up to 4, for a big environment; 1: this process alone. The image is the same "
        "for any number.",
    )
    @click.option("--record", "record_path", type=PATH, default=Path("bake.json"), show_default=True, help="Bake record (JSON).")
    @cache_options
    @click.option("--cache-to", metavar="REGISTRY/REPO[:TAG]", help="Store the layer cache in a registry (tag envkit-cache by default).")
    @click.option("--cache-from", multiple=True, metavar="REGISTRY/REPO[:TAG]", help="Use layers from a registry cache (repeat).")
    @click.option("--json", "as_json", is_flag=True, help="Print the bake record on stdout.")
    @quiet_option
    @_reports_errors
    def bake(as_json: bool, quiet: bool, **flags: Any) -> None:
        """Bake a lock into a reproducible OCI image (no Docker daemon) and write/push it."""
        import json

        from conda_envkit.commands.images import BakeRequest, run_bake

        say = _say(quiet)
        result = run_bake(BakeRequest(**flags), quiet, say)
        for warning in result.warnings:
            _note(f"warning: {warning}")
        say(f"wrote {result.record_path}")
        for line in [json.dumps(result.record.to_json(), indent=2, sort_keys=True)] if as_json else result.references:
            click.echo(line)

    return bake


@_lazy("install", "Create or sync an environment from the lock, without conda.")
def _install_command() -> click.Command:
    @click.command("install")
    @lockfile_option()
    @click.option("-p", "--platform", "platform", help="Platform to install. [default: an existing prefix's own, else this machine's]")
    @click.option("--prefix", type=PATH, required=True, help="Where to create the environment, or one envkit made to bring to the lock.")
    @click.option("--force", is_flag=True, help="Bring an existing prefix envkit did not create to the lock.")
    @cache_options
    @quiet_option
    @_reports_errors
    def install_command(quiet: bool, **flags: Any) -> None:
        """Create a conda environment from the lock (hashes verified), without conda; or sync one envkit made."""
        from conda_envkit.commands.envs import InstallRequest, install_output

        _emit(install_output(InstallRequest(**flags), quiet))

    return install_command


class _ExportCommand(click.Command):
    """`envkit export`, which says what `--format json` (diff's flag, `--format`) is here: click suggested --platform."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if exc.option_name != "--format":
                raise
            raise click.UsageError(
                "export has no --format: --to chooses the output (json, env, github, mlflow, wandb, registry; repeat it for "
                "several), e.g. `envkit export --to json`",
                ctx,
            ) from None


@_lazy("export", "Send lock hash, image digest and packages to trackers.")
def _export_command() -> click.Command:
    @click.command("export", cls=_ExportCommand)
    @click.option("--record", "record_path", type=PATH, help="A bake record (bake.json).")
    @lockfile_option(
        help="A lock file (also the artifact logged to trackers). [default: ./conda-lock.yml if no other source]", default=None
    )
    @click.option("--image", help="An image: REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:NAME]; the record comes from its labels.")
    @click.option("-p", "--platform", help="Which platform's details to export (when there are several).")
    @click.option(
        "--to", "destinations", multiple=True, required=True,
        type=click.Choice(["json", "env", "github", "mlflow", "wandb", "registry"]), help="Where to (repeat).",
    )  # fmt: skip
    @click.option("-o", "--output", type=PATH, help="Write json/env output here instead of stdout.")
    @click.option("--run-id", help="MLflow run (or W&B run to resume).")
    @click.option("--experiment", help="MLflow experiment for a new run (when no --run-id).")
    @click.option("--model", help="MLflow registered model to tag (with --version).")
    @click.option("--version", "model_version", help="Version of --model.")
    @click.option("--tracking-uri", help="MLflow tracking URI. [default: $MLFLOW_TRACKING_URI]")
    @click.option("--wandb-project", help="W&B project. [default: envkit]")
    @click.option("--wandb-mode", type=click.Choice(["online", "offline"]), help="W&B mode. [default: $WANDB_MODE or online]")
    @click.option("--wandb-dir", type=PATH, help="W&B run directory.")
    @click.option(
        "--repository",
        help="For --to registry: REGISTRY/REPO the image was pushed to (only then do ENVKIT_REGISTRY_USER/PASSWORD go"
        " there). [default: the record's, with docker config credentials only]",
    )
    @insecure_option
    @_reports_errors
    def export_command(**flags: Any) -> None:
        """Send the lock hash, image digest and package list to trackers, CI and the registry."""
        from conda_envkit.commands import Output
        from conda_envkit.commands.records import ExportRequest, run_export

        run_export(ExportRequest(**flags), Output(sink=_echo))

    return export_command


@_lazy("inspect", "Print an image's envkit record and attached artifacts.")
def _inspect_command() -> click.Command:
    @click.command("inspect")
    @click.argument("image", metavar="IMAGE")
    @click.option("-p", "--platform", help="Platform of a multi-arch image. [default: linux-64]")
    @insecure_option
    @_reports_errors
    def inspect_command(image: str, platform: str | None, insecure: bool) -> None:
        """Print an image's envkit record and the artifacts (lock, SBOM) attached to it.

        IMAGE: REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:NAME] or docker-archive:FILE[:REFERENCE] (as for bake --base).
        """
        from conda_envkit.commands.images import inspect_output

        _emit(inspect_output(image, platform, insecure))

    return inspect_command


@_lazy("diff", "Show what changed between two locks.")
def _diff_command() -> click.Command:
    @click.command("diff")
    @click.argument("old")
    @click.argument("new", default="conda-lock.yml")
    @click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
    @click.option("-p", "--platform", "platforms", multiple=True, help="Only these platforms (repeat).")
    @click.option("--exit-code", is_flag=True, help="Exit 1 when the locks differ (like git diff --exit-code).")
    @_reports_errors
    def diff_command(old: str, new: str, fmt: str, platforms: tuple[str, ...], exit_code: bool) -> None:
        """Show what changed between two locks (paths, or git REV:path such as HEAD~1:conda-lock.yml)."""
        from conda_envkit.commands.records import diff_output

        _emit(diff_output(old, new, fmt, platforms, exit_code))

    return diff_command


@_lazy("verify", "Check that a prefix or image holds exactly the lock.")
def _verify_command() -> click.Command:
    @click.command("verify")
    @lockfile_option()
    @click.option("--prefix", type=PATH, help="An installed environment to check.")
    @click.option("--image", help="An image to check: REGISTRY/REPO[:TAG|@DIGEST] or oci:DIR[:NAME].")
    @click.option("-p", "--platform", help="Platform of the lock to check. [default: the image's or prefix's own, else this host's]")
    @click.option("--base", help="With --image: the base it was baked on (as for bake). [default: the one its label names]")
    @insecure_option
    @cache_dir_option
    @json_option
    @_reports_errors
    def verify_command(
        lockfile: Path,
        prefix: Path | None,
        image: str | None,
        platform: str | None,
        base: str | None,
        insecure: bool,
        cache_dir: Path | None,
        as_json: bool,
    ) -> None:
        """Check that a prefix or image holds exactly the locked packages, with unmodified files (exit 1 if not)."""
        from conda_envkit.commands.envs import verify_output

        _emit(verify_output(lockfile, prefix, image, platform, insecure, cache_dir, as_json, base))

    return verify_command


@_lazy("doctor", "Say whether the lock or image runs on this host.")
def _doctor_command() -> click.Command:
    @click.command("doctor")
    @lockfile_option()
    @click.option("--image", help="Check an image instead (its baked-in lock): REGISTRY/REPO[:TAG] or oci:DIR[:NAME].")
    @click.option("-p", "--platform", help="Platform of the lock to check. [default: the image's, or this machine's]")
    @insecure_option
    @json_option
    @_reports_errors
    def doctor_command(lockfile: Path, image: str | None, platform: str | None, insecure: bool, as_json: bool) -> None:
        """Say whether the lock or image will run on this host (CUDA driver, glibc, CPU) and what to change."""
        from conda_envkit.commands.envs import doctor_output

        _emit(doctor_output(lockfile, image, platform, insecure, as_json))

    return doctor_command


@_lazy("recipes", "List the image recipes (built-in and --recipe-dir).")
def _recipes_command() -> click.Command:
    @click.command("recipes")
    @click.option("--recipe-dir", type=DIR, help="Also list recipes here.")
    @json_option
    @_reports_errors
    def recipes_command(recipe_dir: Path | None, as_json: bool) -> None:
        """List the image recipes (built-in and --recipe-dir)."""
        from conda_envkit.commands.records import recipes_output

        _emit(recipes_output(recipe_dir, as_json))

    return recipes_command


@_lazy("dockerfile", "Write a Docker build context from a recipe.")
def _dockerfile_command() -> click.Command:
    @click.command("dockerfile")
    @lockfile_option()
    @click.option("--recipe", required=True, help="Recipe (see `envkit recipes`).")
    @image_options
    @click.option("-o", "--output", type=PATH, required=True, help="Build context directory to create.")
    @click.option("-p", "--platform", default="linux-64", show_default=True)
    @click.option("--base", help="Base image instead of the recipe's.")
    @click.option("--backend", type=click.Choice(["buildah", "podman", "docker"]), help="Also run the build with this tool.")
    @click.option("-t", "--tag", "tag", help="Image tag for --backend. [default: envkit/NAME:<lock hash>-<platform>]")
    @click.option("--insecure", is_flag=True, help="Plain HTTP for a base on a localhost registry (also passed to the backend).")
    @cache_dir_option
    @click.option(
        "--pin-base-digest", is_flag=True, help="Ask the base's registry for its digest: FROM base@digest and the base-digest label."
    )
    @quiet_option
    @_reports_errors
    def dockerfile_command(quiet: bool, **flags: Any) -> None:
        """Write a Docker build context from a recipe; the environment is installed by envkit, not in the build.

        Offline unless --pin-base-digest (or --backend, whose build pulls the base).
        """
        from conda_envkit.commands.images import DockerfileRequest, run_dockerfile

        run_dockerfile(DockerfileRequest(**flags), quiet, click.echo)

    return dockerfile_command


def run() -> NoReturn:
    """Run the click CLI on the command line, then leave without interpreter teardown.

    The console script (`conda_envkit.entry.run`) comes here for every command line it does
    not run itself (an `envkit` script installed before it moved there calls this directly).
    py-rattler keeps tokio worker threads that may still release Python objects while
    the interpreter finalizes, which aborts the process (SIGABRT) now and then after
    the work is done. Every file envkit writes is complete (written, fsynced and
    renamed) before a command returns, so skipping finalization loses nothing.
    """
    unwind_on_signals()
    try:
        main()
        code = 0
    except SystemExit as exc:
        if isinstance(exc, Interrupted):
            click.echo(exc.message(), err=True)
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            click.echo(str(exc.code), err=True)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
