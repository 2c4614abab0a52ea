"""Bake benchmark: `envkit bake` against floors measured in the same run, on the same tree.

The environment is synthesized (no network): a few big packages (libtorch/cudnn-like, each
file half random and half text, so it compresses ~2:1) and many small ones, in a local
channel, --gb in all (the issue's 4.1 GB CUDA env is `--gb 4.1`). With the real-metadata
snapshot (../shared/data/channels) and --snapshot, package sizes come from a solved CUDA
training environment instead.

Rows (every time is a median over --rounds; ratios are against floors of the same run):
- floor: `tar --sort=name ... | zstd -3 -T0` (or `pigz -6`, else `gzip -6`) of the installed tree
- cold bake: package archives in the cache, checked by an earlier command (their files are not hashed against
  paths.json again; one more cold bake without those marks, as after a download, is its own row), everything
  else (info, layers, fragments, blobs) empty (by default,
  `--jobs auto`: with zstd, worker processes write the big layers); with zstd, also with `--jobs 1` (this
  process alone), in the same rounds
- warm bake: nothing changed (layer cache warm): plan + metadata layer + manifest; into the same --oci
  directory, and into a fresh one (the last layout removed first, as a CI job does: its hard links to the
  cached blobs go)
- re-bake after one small package changed (a new build, re-locked)
- no-op `envkit install` into the up-to-date prefix (the CLI, and the library check alone)
- push with --cache-to, then a fresh runner (empty cache) with --cache-from: blobs uploaded,
  packages downloaded
- peak memory of the cold bake: the PSS of all its processes together (with --jobs, worker processes write
  the biggest layers), sampled every 50 ms; and the peak RSS of its biggest single process
- CPU seconds (user + sys) of the floor and of the cold bake, worker processes included: on a shared machine
  the wall clock drifts with the neighbours' load, the CPU ratio much less
- the cold bake's steps as its progress lines report them (download, extract, layers; extract
  and layers overlap: a layer is written as soon as its packages are read)

Usage: python bench/bake_bench.py [--gb 1] [--rounds 1] [--compression zstd|gzip] [--snapshot] [--profile]
Prints a table and a JSON document. --profile runs one more cold bake under cProfile and prints
its 30 costliest functions (own time, every thread's work but in the main thread shown as waits).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from conda_envkit.installed_state import up_to_date
from conda_envkit.testing.local_channel import PackageFile, PackageSpec, build_channel

SNAPSHOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "channels"
SPECS = ["python=3.11", "numpy", "scipy", "pandas", "scikit-learn", "pytorch=*=cuda*", "pyarrow", "matplotlib-base"]
CUDA = "12.9"
FILE_BYTES = 64 << 10
# Shares of a CUDA training env (libtorch, cudnn, cublas, nccl, cusparse, triton, ...), the rest small.
BIG_SHARES = [0.22, 0.17, 0.12, 0.08, 0.06, 0.05, 0.04, 0.03, 0.03, 0.02]
SMALL_COUNT = 280


def synthetic_sizes(total: int, rng: random.Random) -> list[tuple[str, int]]:
    sizes = [(f"bigpkg{i:02d}", int(total * share)) for i, share in enumerate(BIG_SHARES)]
    rest = total - sum(s for _, s in sizes)
    weights = [rng.paretovariate(1.2) for _ in range(SMALL_COUNT)]
    scale = rest / sum(weights)
    sizes += [(f"smallpkg{i:03d}", max(4096, min(int(w * scale), 24 << 20))) for i, w in enumerate(weights)]
    return sizes


def snapshot_sizes(tmp: Path, total: int) -> list[tuple[str, int]]:
    import asyncio

    import rattler

    from conda_envkit.locking import LockOptions, plan_locks
    from conda_envkit.solve import _virtual
    from conda_envkit.spec import read_env_spec

    env_file = tmp / "snapshot-environment.yml"
    env_file.write_text(f"channels: [{(SNAPSHOT / 'conda-forge').as_uri()}]\ndependencies: {json.dumps(SPECS)}\n")
    channels, plans = plan_locks(read_env_spec([env_file], ["linux-64"]), LockOptions(cuda=CUDA))
    target = plans[0].targets[0]
    records = asyncio.run(
        rattler.solve(
            sources=[c.url for c in channels],
            specs=[d.match_spec for d in target.dependencies],
            platforms=[target.platform, "noarch"],
            virtual_packages=_virtual(target.virtual_packages),
            constraints=list(target.constraints()) or None,
        )
    )
    whole = sum(r.size or 0 for r in records)
    scale = min(1.0, total / whole) if whole else 1.0
    return [(r.name.normalized, max(4096, int((r.size or 0) * scale))) for r in records]


def package_files(name: str, size: int, rng: random.Random) -> tuple[PackageFile, ...]:
    files = []
    count = max(1, size // FILE_BYTES)
    per = max(1, size // count)
    text = (f"# {name}: realistic filler, compresses like source code and metadata\n" * 2048).encode()
    for i in range(count):
        half = per // 2
        body = rng.randbytes(half) + text[: per - half] if per - half <= len(text) else rng.randbytes(per)
        files.append(PackageFile(f"lib/{name}/part{i:05d}.bin", body))
    return tuple(files)


CPU: dict[str, float] = {}  # CPU seconds (user + sys) of the last command run, by its first word
RSS: dict[str, int] = {}  # KiB: the peak RSS of the last command's biggest single process


def _adopt_orphans() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux): a bake's worker processes outlive
    it by a moment, and their CPU time is counted only if someone waits for them here."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


ADOPTS_ORPHANS = _adopt_orphans()
PAGE = os.sysconf("SC_PAGE_SIZE")


def _process_tree(root: int) -> dict[int, tuple[int, int]]:
    """pid -> (proportional resident KiB, its own peak resident KiB) of `root` and its descendants."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    memory = {}
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
                values = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS:", "VmHWM:")))
            # Its proportional share (Pss): pages several processes map (libraries, the interpreter) count once in all.
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as rollup:
                pss = next((line.split()[1] for line in rollup if line.startswith("Pss:")), values["VmRSS"].split()[0])
            memory[pid] = (int(pss), int(values["VmHWM"].split()[0]))
        except (OSError, KeyError, ValueError, StopIteration):
            continue
    return memory


class _TreeMeter(threading.Thread):
    """Samples the resident memory of a process and all its descendants, every 50 ms: the sum of their proportional
    shares (PSS), and each one's own peak RSS (after its exec: a forked child's ru_maxrss counts the parent's pages
    it started with)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.largest_kib, self.seen, self.ended = pid, 0, 0, set[int](), threading.Event()

    def run(self) -> None:
        while not self.ended.wait(0.05):
            tree = _process_tree(self.pid)
            self.peak_kib = max(self.peak_kib, sum(rss for rss, _ in tree.values()))
            self.largest_kib = max([self.largest_kib, *(hwm for _, hwm in tree.values())])
            self.seen |= set(tree) - {self.pid}


def run(cmd: list[str] | str, **kwargs: object) -> tuple[float, int]:
    """Wall seconds and peak memory (KiB: the PSS of the command and its processes together, sampled, or the peak
    RSS of its biggest process if that is more: a single process is measured as before) of one command; its
    CPU seconds (with those of its processes that outlive it: they are waited for) go to CPU["last"], and the
    peak RSS of its biggest single process to RSS["largest"]."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]
    meter = _TreeMeter(proc.pid)
    meter.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    meter.ended.set()
    meter.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {cmd}")
    cpu = usage.ru_utime + usage.ru_stime
    deadline = time.monotonic() + 10
    for pid in sorted(meter.seen) if ADOPTS_ORPHANS else ():
        while time.monotonic() < deadline:  # orphans (a forkserver: it waited for its workers) end as their parent did
            try:
                done, _, orphan = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:  # not ours: waited for by its own parent (or gone)
                break
            if done:
                cpu += orphan.ru_utime + orphan.ru_stime
                break
            time.sleep(0.02)
    CPU["last"], RSS["largest"] = cpu, meter.largest_kib
    return seconds, max(meter.peak_kib, meter.largest_kib)


def _spread(ratios: list[float]) -> str:
    """`; rounds 1.41-1.72x`: each round's ratio (cold bake ÷ that round's floor), if there were several."""
    return f"; rounds {min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else ""


def envkit(*args: str, cwd: Path, env: dict[str, str], stderr: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, all its processes together) of one envkit command (stderr to a file if given)."""
    command = [sys.executable, "-m", "conda_envkit", *args]
    with open(stderr or os.devnull, "w", encoding="utf-8") as err:
        try:
            return run(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err if stderr else None)
        except SystemExit as failed:
            if stderr is None:
                raise
            # What it said (the file goes with the bench's directory): its error, e.g. a full disk.
            err.flush()
            said = stderr.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
            raise SystemExit("\n".join([str(failed.code), *said])) from None


PROFILE = """
import cProfile, os, pstats, sys
from conda_envkit.cli import main
profile = cProfile.Profile()
profile.enable()
try:
    main()
except SystemExit:
    pass
profile.disable()
pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(30)
sys.stdout.flush()
os._exit(0)
"""


def steps(stderr: Path) -> dict[str, float]:
    """Seconds per step from envkit's progress lines (`extract linux-64: ... (1.2s)`)."""
    out = {}
    for line in stderr.read_text(encoding="utf-8").splitlines():
        step, _, rest = line.partition(": ")
        if rest.endswith("s)") and "(" in rest and step.split()[0] in ("download", "extract", "layers"):
            try:
                out[step.split()[0]] = float(rest.rsplit("(", 1)[1][:-2])
            except ValueError:
                continue
    return out


def floor(tree: Path, out: Path, compression: str) -> tuple[float, str]:
    if compression == "zstd":
        compressor = "zstd -3 -T0 -q"
    else:
        compressor = "pigz -6 -n" if shutil.which("pigz") else "gzip -6 -n"
    tar = f"tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C {tree} ."
    out.unlink(missing_ok=True)  # its last output freed before the clock starts, as the bake's is
    os.sync()  # each timed command starts with nothing of the one before still being written back
    seconds, _ = run(f"{tar} | {compressor} > {out}", shell=True)
    return seconds, compressor.split()[0]


def start_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="GB of packages (installed)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--compression", choices=["zstd", "gzip"], default="zstd")
    parser.add_argument("--snapshot", action="store_true", help="package sizes from the real-metadata snapshot")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--profile", action="store_true", help="profile one more cold bake (cProfile, main thread)")
    args = parser.parse_args()
    # envkit as a user has it: its modules byte-compiled (pip compiles them when it installs a wheel). An
    # editable install on a machine that sets PYTHONDONTWRITEBYTECODE would compile them in every command
    # (~0.1 s each), which is not envkit's time.
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "conda_envkit", quiet=1)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="envkit-bake-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        rng = random.Random(7)
        total = int(args.gb * 1e9)
        sizes = snapshot_sizes(tmp, total) if args.snapshot and SNAPSHOT.is_dir() else synthetic_sizes(total, rng)
        work, cache, channel = tmp / "work", tmp / "cache", tmp / "channel"
        work.mkdir(exist_ok=True)
        started = time.perf_counter()
        specs = [PackageSpec(name, "1.0", "0", subdir="linux-64", files=package_files(name, size, rng)) for name, size in sizes]
        build_channel(channel, specs, subdirs=("linux-64",))
        del specs  # forked children would count these pages in their peak RSS
        gen_s = time.perf_counter() - started
        env = {"ENVKIT_CACHE_DIR": str(cache)}
        pins = [f"{name}=1.0=0" for name, _ in sizes]
        # The snapshot's CUDA packages are locked as they were solved: for a GPU (envkit refuses CUDA by accident).
        gpu = f"envkit:\n  cuda: {json.dumps(CUDA)}\n" if args.snapshot and SNAPSHOT.is_dir() else ""
        (work / "environment.yml").write_text(f"channels: [{channel}]\n{gpu}dependencies:\n" + "".join(f"  - {p}\n" for p in pins))
        envkit("lock", "-q", cwd=work, env=env)
        install_s, _ = envkit("install", "-q", "--prefix", str(tmp / "tree"), "-p", "linux-64", cwd=work, env=env)
        installed = tree_bytes(tmp / "tree")
        bake = ("bake", "-q", "--compression", args.compression, "--oci", str(tmp / "image"), "--record", str(tmp / "bake.json"))

        def empty_cache() -> None:
            for sub in ("extracted", "blobs", "layers", "fragments", "pkginfo", "tmp"):
                shutil.rmtree(cache / sub, ignore_errors=True)

        def cold(*flags: str) -> tuple[float, int]:
            empty_cache()
            shutil.rmtree(tmp / "image", ignore_errors=True)  # not timed: freeing the last round's 2 GB layout
            os.sync()  # the floor's output written back before, not while, the bake runs
            # Without -q: the progress lines give the steps' times.
            return envkit(*bake[:1], *bake[2:], *flags, cwd=work, env=env, stderr=tmp / ("cold-jobs.err" if flags else "cold.err"))

        floors, colds, warms, fresh_warms, rss, largest, floor_cpu, cold_cpu = [], [], [], [], [], [], [], []
        jobs_colds: list[float] = []
        jobs_cpu: list[float] = []
        jobs_rss: list[int] = []
        floor_tool = ""
        for _ in range(args.rounds):  # interleaved, so drift hits all sides alike
            seconds, floor_tool = floor(tmp / "tree", tmp / "floor.out", args.compression)
            floors.append(seconds)
            floor_cpu.append(CPU["last"])
            seconds, peak = cold()
            colds.append(seconds)
            cold_cpu.append(CPU["last"])
            rss.append(peak)
            largest.append(RSS["largest"])
            if args.compression == "zstd":  # the bake alone, no worker processes
                seconds, peak = cold("--jobs", "1")
                jobs_colds.append(seconds)
                jobs_cpu.append(CPU["last"])
                jobs_rss.append(peak)
            warms.append(envkit(*bake, cwd=work, env=env)[0])
            shutil.rmtree(tmp / "image")
            fresh_warms.append(envkit(*bake, cwd=work, env=env)[0])
        cold_steps = steps(tmp / "cold.err")
        # The rounds' cold bakes find the archives checked (files hashed against paths.json) by an earlier command:
        # its `checked.*` marker stays beside each archive in pkgs/. A runner that just downloaded them hashes every file
        # once more: one cold bake as it does.
        for marker in (cache / "pkgs").glob("*/checked.*"):
            marker.unlink()
        unchecked_s, _ = cold()
        unchecked_cpu = CPU["last"]
        if args.profile:
            empty_cache()
            subprocess.run([sys.executable, "-c", PROFILE, *bake], cwd=work, env={**os.environ, **env}, check=True)
        record = json.loads((tmp / "bake.json").read_text())
        layers = record["platforms"]["linux-64"]["layers"]

        # No-op install into the up-to-date prefix: the whole CLI, and the check alone.
        noop_s, _ = envkit("install", "-q", "--prefix", str(tmp / "tree"), "-p", "linux-64", cwd=work, env=env)
        check_started = time.perf_counter()
        assert up_to_date(work / "conda-lock.yml", tmp / "tree", "linux-64")
        check_s = time.perf_counter() - check_started
        python_s, _ = run([sys.executable, "-c", "pass"])

        # One small package changes: a new build in the channel, re-locked.
        # (the snapshot's packages have their real names: its small ones are those below a layer of their own)
        smalls = [s for s in sizes if s[0].startswith("small")] or [s for s in sizes if s[1] < 32 << 20]
        victim, victim_size = sorted(smalls, key=lambda s: s[1])[min(len(sizes) // 3, len(smalls) - 1)]
        build_channel(
            channel,
            [PackageSpec(victim, "1.0", "1", subdir="linux-64", files=package_files(victim, victim_size, random.Random(9)))],
            subdirs=("linux-64",),
        )
        (work / "environment.yml").write_text((work / "environment.yml").read_text().replace(f"{victim}=1.0=0\n", f"{victim}=1.0=1\n"))
        envkit("lock", "-q", cwd=work, env=env)
        rebake_s, _ = envkit(*bake, cwd=work, env=env)
        rebuilt = json.loads((tmp / "bake.json").read_text())

        proc, host = start_registry(tmp / "registry")
        try:
            push = ("--push", f"{host}/bench/train", "--insecure", "--cache-to", f"{host}/bench/cache")
            envkit(*bake, *push, cwd=work, env=env)
            first_push = json.loads((tmp / "bake.json").read_text())["push"]
            fresh = {"ENVKIT_CACHE_DIR": str(tmp / "fresh-runner")}
            from_cache = ("--push", f"{host}/bench/train", "--insecure", "--cache-from", f"{host}/bench/cache")
            fresh_s, _ = envkit(
                "bake", "-q", "--compression", args.compression, "--record", str(tmp / "fresh.json"), *from_cache, cwd=work, env=fresh
            )
            fresh_push = json.loads((tmp / "fresh.json").read_text())["push"]
            fresh_downloads = len(list((tmp / "fresh-runner" / "pkgs").glob("*"))) if (tmp / "fresh-runner" / "pkgs").exists() else 0
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait()
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    f, c = statistics.median(floors), statistics.median(colds)
    result = {
        "packages": len(sizes),
        "installed_tree_bytes": installed,
        "image_layers": len(layers),
        "image_layer_bytes": sum(layer["size"] for layer in layers),
        "compression": args.compression,
        "floor_tool": floor_tool,
        "generate_channel_s": round(gen_s, 1),
        "first_install_s": round(install_s, 2),
        "floor_s": round(f, 2),
        "cold_bake_s": round(c, 2),
        "ratio_cold_vs_floor": round(c / f, 3),
        "rounds": {"floor_s": [round(x, 2) for x in floors], "cold_bake_s": [round(x, 2) for x in colds]},  # the spread
        # Each round's cold bake against the floor of the same round (run just before it): the neighbours' load moves both.
        "ratio_cold_vs_floor_rounds": [round(c / f, 3) for f, c in zip(floors, colds, strict=True)],
        "floor_cpu_s": round(statistics.median(floor_cpu), 2),
        "cold_bake_cpu_s": round(statistics.median(cold_cpu), 2),
        "ratio_cold_vs_floor_cpu": round(statistics.median(cold_cpu) / statistics.median(floor_cpu), 3),
        "cold_bake_steps_s": cold_steps,
        "cold_bake_jobs_1": {
            "s": round(statistics.median(jobs_colds), 2),
            "ratio_vs_floor": round(statistics.median(jobs_colds) / f, 3),
            "rounds_s": [round(x, 2) for x in jobs_colds],
            "cpu_s": round(statistics.median(jobs_cpu), 2),
            "peak_rss_mb": round(max(jobs_rss) / 1024, 1),
        }
        if jobs_colds
        else None,
        "cold_bake_unchecked_archives": {
            "s": round(unchecked_s, 2),
            "ratio_vs_floor": round(unchecked_s / f, 3),
            "cpu_s": round(unchecked_cpu, 2),
        },
        "warm_bake_s": round(statistics.median(warms), 2),
        "warm_bake_fresh_output_s": round(statistics.median(fresh_warms), 2),
        "rebake_one_small_change_s": round(rebake_s, 2),
        "ratio_rebake_vs_cold": round(rebake_s / c, 3),
        "rebake_reused_layers": sum(
            1 for a, b in zip(layers, rebuilt["platforms"]["linux-64"]["layers"], strict=False) if a["digest"] == b["digest"]
        ),
        "noop_install_cli_s": round(noop_s, 3),
        "noop_install_check_s": round(check_s, 4),
        "python_startup_s": round(python_s, 3),
        "cold_bake_peak_rss_mb": round(max(rss) / 1024, 1),  # all its processes together (sampled every 50 ms)
        "cold_bake_peak_rss_largest_process_mb": round(max(largest) / 1024, 1),
        "push_first": first_push,
        "fresh_runner_cache_from_push": fresh_push,
        "fresh_runner_package_downloads": fresh_downloads,
        "fresh_runner_bake_s": round(fresh_s, 2),
    }
    rows = [
        ("installed tree", f"{installed / 1e9:.2f} GB, {len(sizes)} packages, {len(layers)} layers"),
        (f"floor tar | {floor_tool}", f"{f:.2f} s"),
        ("cold bake", f"{c:.2f} s  ({c / f:.2f}x floor{_spread(result['ratio_cold_vs_floor_rounds'])})"),
        (
            "cold bake CPU (user+sys)",
            f"{result['cold_bake_cpu_s']:.2f} s  ({result['ratio_cold_vs_floor_cpu']:.2f}x the floor's {result['floor_cpu_s']:.2f} s)",
        ),
        *(
            [
                (
                    "cold bake --jobs 1",
                    f"{result['cold_bake_jobs_1']['s']:.2f} s  ({result['cold_bake_jobs_1']['ratio_vs_floor']:.2f}x floor), "
                    f"CPU {result['cold_bake_jobs_1']['cpu_s']:.2f} s, peak {result['cold_bake_jobs_1']['peak_rss_mb']:.0f} MB PSS",
                )
            ]
            if jobs_colds
            else []
        ),
        (
            "cold bake, archives not checked yet",
            f"{unchecked_s:.2f} s  ({unchecked_s / f:.2f}x floor), CPU {unchecked_cpu:.2f} s (every file hashed once, as after a download)",
        ),
        ("cold bake steps", ", ".join(f"{k} {v:.1f} s" for k, v in cold_steps.items()) + " (extract and layers overlap)"),
        ("warm bake, nothing changed", f"{result['warm_bake_s']:.2f} s, into a fresh --oci dir {result['warm_bake_fresh_output_s']:.2f} s"),
        ("re-bake, one small package changed", f"{rebake_s:.2f} s  ({rebake_s / c:.3f} of cold)"),
        ("no-op install (CLI / check only)", f"{noop_s:.3f} s / {check_s:.4f} s  (python startup {python_s:.3f} s)"),
        (
            "cold bake peak memory",
            f"{max(rss) / 1024:.0f} MB PSS, all processes together (its biggest process {max(largest) / 1024:.0f} MB RSS)",
        ),
        (
            "fresh runner --cache-from push",
            f"uploaded {fresh_push['uploaded_blobs']} blobs ({fresh_push['bytes_uploaded']} B), skipped {fresh_push['skipped_blobs']}, "
            f"{fresh_downloads} package downloads, {fresh_s:.2f} s",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
