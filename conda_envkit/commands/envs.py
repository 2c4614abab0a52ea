"""`envkit install`, `verify` and `doctor`: a lock against a prefix, an image or this host."""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conda_envkit.commands import EXIT_STALE, Output
from conda_envkit.commands.images import insecure_for, load_image
from conda_envkit.labels import ImageLabels, label_key
from conda_envkit.lock_age import sources_newer_than_lock
from conda_envkit.platforms import host_platform

if TYPE_CHECKING:
    from conda_envkit.verify import Finding


@dataclass(frozen=True)
class InstallRequest:
    """`envkit install`'s flags, as given."""

    lockfile: Path
    platform: str | None
    prefix: Path
    cache_dir: Path | None
    mirrors: tuple[str, ...]
    config: Path | None
    force: bool = False


def install_output(request: InstallRequest, quiet: bool) -> Output:
    """Create a conda environment from the lock (hashes verified), or bring one envkit made to the lock."""
    from conda_envkit.channels import load_settings
    from conda_envkit.files import absolute_path
    from conda_envkit.installed_state import recorded_platform, up_to_date
    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.progress import counted, progress_for

    output = Output()
    prefix = request.prefix
    # An existing prefix is for the platform it was installed for (`-p` at its install), a new one for this host's.
    platform = request.platform or recorded_platform(prefix) or host_platform()
    # A lock the spec beside it has moved past (an edit not locked yet) installs what the lock says: "up to date" alone
    # told a user who had just added a package that it was there. Checked only if a spec file is newer than the lock
    # (conda_envkit.lock_age): the check loads the solver, ~0.2 s an install with nothing to do cannot spare.
    stale = None
    if sources_newer_than_lock(request.lockfile):
        stale = _stale_warning(request.lockfile, platform, request.config, request.mirrors)
    if stale is not None:
        output.err(f"warning: {stale}")
    if prefix.exists() and up_to_date(request.lockfile, prefix, platform):
        output.out(f"{absolute_path(prefix)} is up to date")
        return output
    lf = read_lockfile(request.lockfile)
    settings = load_settings(request.config, None, list(request.mirrors))
    if not prefix.exists():
        from conda_envkit.install import PrefixTaken, install_environment

        try:
            report = install_environment(request.lockfile, lf, platform, prefix, request.cache_dir, settings, progress_for(quiet))
        except PrefixTaken:  # another install made it meanwhile (this one waited for it): compared with what it left
            if up_to_date(request.lockfile, prefix, platform):
                output.out(f"{absolute_path(prefix)} is up to date")
                return output
        else:
            output.out(f"installed {counted(len(report.fetch.packages), 'package')} into {report.prefix} in {report.seconds:.2f}s")
            if report.clobbers:
                output.err(f"warning: {platform}: {report.clobbers}")
            return output
    # An envkit prefix, an empty directory, or with --force any prefix: synced in place.
    from conda_envkit.sync import empty_directory, sync_environment

    was_empty = empty_directory(prefix)
    synced = sync_environment(request.lockfile, lf, platform, prefix, request.cache_dir, settings, progress_for(quiet), request.force)
    if was_empty:
        added = len(synced.plan.add)
        output.out(f"installed {counted(added, 'package')} into {synced.prefix} (an empty directory, in place) in {synced.seconds:.2f}s")
    else:
        output.out(f"synced {synced.prefix}: {synced.plan.summary()} in {synced.seconds:.2f}s")
        for change in synced.changes:
            output.out(f"  {change.line()}")
    return output


def _stale_warning(lockfile: Path, platform: str, config: Path | None, mirrors: tuple[str, ...]) -> str | None:
    """What `lock --check` would say of the lock's `platform` against the spec beside it, as one warning (None: fresh,
    nothing to check against, or a lock that does not read, which the install itself reports)."""
    from conda_envkit.channels import load_settings
    from conda_envkit.errors import EnvkitError
    from conda_envkit.freshness import stale_lock_warning
    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.locking import LockOptions

    try:
        lf = read_lockfile(lockfile)
        if platform not in lf.metadata.platforms:
            return None
        settings = load_settings(config, None, list(mirrors))
    except EnvkitError:
        return None
    return stale_lock_warning(lockfile, lf, [platform], LockOptions(settings=settings), use="install")


def verify_output(
    lockfile: Path,
    prefix: Path | None,
    image: str | None,
    platform: str | None,
    insecure: bool,
    cache_dir: Path | None,
    as_json: bool,
    base: str | None = None,
) -> Output:
    """Whether a prefix or image holds exactly the locked packages, with unmodified files (status 1 if not)."""
    from conda_envkit.cache import cache_dir_or_default
    from conda_envkit.lockfile import read_lockfile
    from conda_envkit.oci.blobs import BlobStore
    from conda_envkit.verify import (
        BASE_NAME_LABEL,
        ImageTree,
        VerifyBase,
        VerifyError,
        base_layers_of,
        layer_digest_findings,
        load_verify_base,
        scratch_dir,
        verify_image,
        verify_installed_prefix,
    )

    if (prefix is None) == (image is None):
        raise VerifyError("pass exactly one of --prefix and --image", hint="envkit verify --prefix ./env, or --image REGISTRY/REPO:TAG")
    if base is not None and image is None:
        raise VerifyError("--base goes with --image", hint="envkit verify --image REF --base BASE_REF")
    lf = read_lockfile(lockfile)
    recipe_files: list[str] = []
    the_base: VerifyBase | None = None
    if prefix is not None:
        from conda_envkit.installed_state import recorded_platform

        chosen = platform or recorded_platform(prefix) or host_platform()
        target = str(prefix)
        findings = verify_installed_prefix(lockfile, lf, chosen, prefix, cache_dir)
    else:
        assert image is not None
        # A fresh blob store: every blob is read from the image itself and checked against its
        # digest, never taken from a cache that already holds something by that name.
        # (in the cache, as every other scratch space: a full $TMPDIR was blamed on the image's blobs)
        scratch_blobs = scratch_dir(cache_dir_or_default(cache_dir))
        try:
            loaded, store_root, labels = load_image(image, platform, insecure, scratch_blobs)
            envkit = ImageLabels.from_json(labels)
            chosen = platform or (envkit and envkit.platform) or "linux-64"
            in_image = envkit.prefix if envkit else None
            if not in_image:
                raise VerifyError(f"{image} has no {label_key('prefix')} label", hint="was it baked by envkit?")
            # Which layers are the base is decided by a base the user names (or, failing that, the one
            # the labels name, said so below), never by the image's history.
            registries = insecure_for([r for r in (image, base or labels.get(BASE_NAME_LABEL) or "") if r], insecure)
            the_base = load_verify_base(base, labels, chosen, BlobStore(store_root), registries)
            claimed = [layer.diff_id for layer in loaded.layers]
            base_layers, base_findings = base_layers_of(claimed, the_base)
            tree = ImageTree(loaded, store_root, in_image, base_layers)
            target = f"{image} ({in_image})"
            findings = verify_image(lockfile, lf, chosen, tree, loaded.config, labels, cache_dir)
            findings += base_findings + layer_digest_findings(claimed, tree.diff_ids)
        finally:
            shutil.rmtree(scratch_blobs, ignore_errors=True)
        # A recipe's extra files are outside the lock: listed for review, not judged.
        recipe_files = sorted(getattr(tree, "recipe_files", []))
    output = Output(status=EXIT_STALE if findings else 0)
    if as_json:
        report: dict[str, object] = {"target": target, "platform": chosen, "ok": not findings, "findings": [f.__dict__ for f in findings]}
        if recipe_files:
            report["recipe_files"] = recipe_files
        if the_base is not None:
            report["base"] = {"reference": the_base.reference, "digest": the_base.digest, "source": the_base.source}
        output.out(json.dumps(report, indent=2))
    elif findings:
        groups: dict[tuple[str, str], list[Finding]] = {}
        for f in findings:
            groups.setdefault((f.kind, f.package), []).append(f)
        for (kind, package), group in groups.items():  # a missing 3,000-file package is a few lines, not 3,000
            for f in group[:SHOWN_PER_PACKAGE]:
                output.err(f"{kind:<16} {package}: {f.detail}")
            if len(group) > SHOWN_PER_PACKAGE:
                output.err(f"{kind:<16} {package}: … and {len(group) - SHOWN_PER_PACKAGE} more like these (--json lists every one)")
        from conda_envkit.progress import counted

        output.err(f"{target}: {counted(len(findings), 'problem')} against {lockfile} ({chosen})")
        output.err(f"  hint: {_repair_hint(findings, lockfile, prefix)}")
    else:
        output.out(f"{target}: matches {lockfile} ({chosen})")
    if recipe_files and not as_json:
        output.err(f"recipe files (not in the lock, not checked): {', '.join(recipe_files)}")
    if the_base is not None and the_base.source == "label":
        output.err(f"note: base taken from the image's own label: {the_base.describe()}; pass --base to require one")
    elif the_base is not None and the_base.source == "none":
        output.err("note: the image names no base, so every layer is checked as envkit's; pass --base to name one")
    return output


_PACKAGE_KINDS = frozenset({"missing-package", "extra-package", "wrong-package"})
SHOWN_PER_PACKAGE = 10  # findings of one kind for one package printed; --json has them all


def _repair_hint(findings: list[Finding], lockfile: Path, prefix: Path | None) -> str:
    """What brings the target back to the lock: `install` syncs packages; files changed in place need a fresh prefix."""
    if prefix is None:
        again = "bake the image again from the lock (an image is never repaired in place)"
        if any(f.kind == "extra-package" for f in findings):
            # Baking again gives the same image when the extra packages are a base image's, left at the same prefix.
            return (
                "packages the lock does not hold are in the environment: a base image with an environment at the same prefix "
                "leaves its packages there (bake warns of it); bake into another --prefix, or on a base without an environment "
                f"there; otherwise {again}"
            )
        return again
    from conda_envkit.verify import OUTSIDE_ENVKIT

    # Distributions pip put there by hand: install neither sees nor removes them (it reported the prefix up to date).
    outside = [f.package.split()[0] for f in findings if f.package.endswith(OUTSIDE_ENVKIT)]
    # (one installed over a locked package of its name: the lock has it already, so adding it to the spec is no answer)
    unlocked = [f.package.split()[0] for f in findings if f.package.endswith(OUTSIDE_ENVKIT) and "over the locked" not in f.detail]
    findings = [f for f in findings if not f.package.endswith(OUTSIDE_ENVKIT)]
    update = " ".join(f"--update {shlex.quote(name)}" for name in unlocked)
    by_hand = (
        f"{', '.join(outside)} {'was' if len(outside) == 1 else 'were'} installed outside envkit, which install neither sees "
        f"nor removes: `pip uninstall {' '.join(outside)}` with the environment's python"
    )
    if unlocked:
        them = "it" if len(unlocked) == 1 else "them"
        by_hand += f", or add {', '.join(unlocked)} to the pip: section of environment.yml, then `envkit lock {update}` and install {them}"
    rest = _sync_hint(findings, lockfile, prefix) if findings else ""
    return "; ".join(hint for hint in (by_hand if outside else "", rest) if hint)


def _sync_hint(findings: list[Finding], lockfile: Path, prefix: Path) -> str:
    """What brings a prefix's envkit-installed packages and files back to the lock."""
    install = f"envkit install --lockfile {shlex.quote(str(lockfile))} --prefix {shlex.quote(str(prefix))}"
    # envkit's own files (its lock copy, the conda-meta records) differ whenever the lock changed: install rewrites
    # them as it syncs, so they are no reason to remove the prefix; nor is an old package's record "yours".
    ours = [f for f in findings if f.package.startswith("envkit") or (f.kind == "unowned-file" and "conda-meta/" in f.detail)]
    # A package installed at another version than the lock's has other files: its file findings are that, not edits.
    replaced = {f.package.split()[0] for f in findings if f.kind in _PACKAGE_KINDS}
    findings = [f for f in findings if f not in ours and not (f.kind not in _PACKAGE_KINDS and f.package.split()[0] in replaced)]
    if not findings:
        return f"`{install}` brings envkit's records back to the lock"
    changed = sorted({f.package for f in findings if f.kind not in _PACKAGE_KINDS and f.kind != "unowned-file"})
    if changed:
        named = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        repair = f"move out any file you need, remove the prefix, then `{install}`"
        return f"files of {named} changed in place, which install does not repair: {repair}"
    hints = []
    if any(f.kind in _PACKAGE_KINDS for f in findings):
        hints.append(f"`{install}` adds, removes and replaces those packages")
    if any(f.kind == "unowned-file" for f in findings):
        hints.append("files no locked package installed are yours: remove them, or keep them knowing verify reports them")
    return "; ".join(hints)


def doctor_output(lockfile: Path, image: str | None, platform: str | None, insecure: bool, as_json: bool) -> Output:
    """Whether the lock or image will run on this host (CUDA driver, glibc, CPU); status 1 if not."""
    from conda_envkit.doctor import cpu_locks_beside, diagnose, host_facts
    from conda_envkit.lockfile import read_lockfile

    host = host_facts()
    if image is not None:
        from conda_envkit.verify import ImageTree, VerifyError

        loaded, store_root, labels = load_image(image, platform, insecure)
        envkit = ImageLabels.from_json(labels)
        text = ImageTree(loaded, store_root, (envkit and envkit.prefix) or "/opt/conda").lock_text()
        if text is None:
            raise VerifyError(f"{image} holds no envkit lock", hint="was it baked by envkit?")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "conda-lock.yml").write_text(text, encoding="utf-8")
            lf = read_lockfile(Path(tmp) / "conda-lock.yml")
        chosen = platform or (envkit and envkit.platform) or "linux-64"
    else:
        lf = read_lockfile(lockfile)
        chosen = platform or (host.platform if host.platform in lf.metadata.platforms else sorted(lf.metadata.platforms)[0])
    result = diagnose(lf, chosen, host, cpu_locks_beside(lockfile, lf, chosen) if image is None and host.cuda_driver is None else ())
    output = Output(status=0 if result.runs else EXIT_STALE)
    if as_json:
        requirements = [r.__dict__ for r in result.requirements]
        output.out(json.dumps({"host": host.__dict__, "platform": chosen, "runs": result.runs, "requirements": requirements}, indent=2))
    else:
        gpu = f", GPUs: {', '.join(host.gpus)}" if host.gpus else ""
        driver = f"CUDA driver {host.cuda_driver or 'none'} ({host.cuda_source}){gpu}"
        output.out(f"host: {host.platform} ({host.machine}), glibc {host.glibc or 'not found'}, {driver}")
        for r in result.requirements:
            output.out(f"  {'ok ' if r.ok else 'NO '} {r.what:<9} needs {r.needed:<12} have {r.have:<12} {r.why}")
        output.out(f"verdict: {image or lockfile} ({chosen}) {'will run here' if result.runs else 'will NOT run here as locked'}")
    return output
