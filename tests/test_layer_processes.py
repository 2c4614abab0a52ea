"""A big environment's own-layer `.conda`s are written by worker processes (conda_envkit.layer_processes): the
image is byte for byte the one a bake writing every layer itself gives, packages the stream cannot take still
reach their layers (staged or linked), an archive's error is the bake's error, and nothing is left behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import conda_envkit.bake as bake_module
import conda_envkit.layer_processes as layer_processes
from conda_envkit.install import is_checked
from conda_envkit.layer_processes import LayerProcesses, StreamedLayerJob, process_count
from conda_envkit.testing.hostile_packages import HostilePackage, Member, write_hostile_package
from tests.hostile.conftest import Workspace, assert_refused, locked_workspace
from tests.test_stream_layers import NAMES, _bake, _workspace
from tests.test_stream_layers import stream_channel as _shared_stream_channel  # noqa: F401 - the fixture (by its name)


@pytest.fixture(scope="module")
def stream_channel(_shared_stream_channel: Path) -> Path:  # noqa: F811 - the imported fixture, by its name
    """test_stream_layers' channel: every way a package reaches its layer."""
    return _shared_stream_channel


HASHED: dict[str, bool] = {}
PYTHON = sys.executable  # (the tests below put other programs there)
STEALS = False  # whether the bake may take back the layers no worker has started


@pytest.fixture
def worker_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A worker for every `--jobs auto` bake, however small (on two CPUs), which writes every layer given to it (the
    bake takes none back); the packages given to it (and whether their files were to be hashed, in HASHED)."""
    jobs: list[str] = []
    real = LayerProcesses.submit

    def submit(self: LayerProcesses, job: StreamedLayerJob) -> Any:
        jobs.append(job.locked.name)
        HASHED[job.locked.name] = job.hashed
        future = real(self, job)
        future.cancel = lambda: False  # type: ignore[method-assign] - taken back: never (STEALS undoes this)
        if STEALS:
            del future.cancel
        return future

    monkeypatch.setattr(layer_processes, "MIN_PROCESS_BYTES", 0)
    monkeypatch.setattr(bake_module, "usable_cpus", lambda: 2)
    monkeypatch.setattr(LayerProcesses, "submit", submit)
    yield jobs


def test_how_many_workers() -> None:
    big = [200 << 20, 100 << 20]
    assert process_count(big, 2, 1) == 0  # --jobs 1: this process alone
    assert process_count(big, 2, 2) == 1  # two layers at once: this process and one worker
    assert process_count(big, 2, 5) == 2  # one worker per layer at most
    assert process_count(big, 2) == 1  # auto (the default): one writer per CPU, this process one of them
    assert process_count(big * 4, 64) == layer_processes.MAX_PROCESSES
    assert process_count(big, 1) == 0  # one CPU: nothing to gain
    assert process_count([300 << 20], 8) == 1  # one big layer: a worker writes it while this process writes the rest
    assert process_count([1 << 20, 1 << 20], 8) == 0  # too small to pay for starting them


@pytest.mark.parametrize("steals", [False, True], ids=["workers-write-all", "bake-takes-back"])
def test_layers_written_by_workers_are_the_layers_the_bake_writes_itself(
    tmp_path: Path, stream_channel: Path, worker_jobs: list[str], monkeypatch: pytest.MonkeyPatch, steals: bool
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "STEALS", steals)
    ws = _workspace(tmp_path / "workers", stream_channel, NAMES)
    by_workers = _bake(ws, "--oci", ws.root / "image", "--compression", "zstd", "--jobs", "auto")
    monkeypatch.setattr(sys.modules[__name__], "STEALS", False)
    # Every streamable `.conda` of its own layer went to a worker; among them those the stream gives back to the
    # bake (a GNU long name: staged; a file paths.json does not list, a wrong size, a rewritten shebang: linked).
    # Not the .tar.bz2, nor the wheels.
    assert sorted(worker_jobs) == sorted(NAMES)
    # The workers hashed the archives' files (a fresh cache): the bake marked them checked.
    assert all(HASHED[name] for name in NAMES)
    for name in ("ordered", "honest", "binny", "pyish"):
        (archive,) = (ws.cache / "pkgs").rglob(f"{name}-1.0-0.conda")
        entry = next(e for e in ws.entries() if e["name"] == name)
        assert is_checked(archive, entry["hash"]["sha256"])
    assert not [p for p in (ws.cache / "blobs").rglob("*") if p.name.startswith(".")]  # no temporary blob left

    monkeypatch.setattr(layer_processes, "MIN_PROCESS_BYTES", 1 << 62)
    worker_jobs.clear()
    itself = _workspace(tmp_path / "itself", stream_channel, NAMES)
    in_process = _bake(itself, "--oci", itself.root / "image", "--compression", "zstd", "--jobs", "auto")
    assert worker_jobs == []
    assert by_workers["image"]["digest"] == in_process["image"]["digest"]
    # Again with no layer cache, the archives checked: the workers do not hash their files again; the same image.
    for written in ("layers", "blobs", "fragments"):
        shutil.rmtree(ws.cache / written, ignore_errors=True)
    worker_jobs.clear()
    monkeypatch.setattr(layer_processes, "MIN_PROCESS_BYTES", 0)
    again = _bake(ws, "--oci", ws.root / "image-again", "--compression", "zstd", "--jobs", "auto")
    assert sorted(worker_jobs) == sorted(NAMES)
    assert not any(HASHED[name] for name in ("ordered", "honest", "binny", "pyish"))
    assert again["image"]["digest"] == in_process["image"]["digest"]


def test_worker_blobs_are_written_with_the_bakes_umask(tmp_path: Path, stream_channel: Path, worker_jobs: list[str]) -> None:
    # The workers' server is started by the first bake that needs it, with that bake's umask; each later bake's
    # workers take the umask of their own bake.
    for bake, (mask, mode) in enumerate(((0o022, 0o644), (0o027, 0o640), (0o022, 0o644))):
        ws = locked_workspace(tmp_path / f"umask-{bake}", stream_channel, ["honest", "ordered", "siblings"])
        worker_jobs.clear()
        old = os.umask(mask)
        try:
            baked = _bake(ws, "--oci", ws.root / "image", "--compression", "zstd", "--jobs", "auto")
        finally:
            os.umask(old)
        assert sorted(worker_jobs) == ["honest", "ordered", "siblings"]
        for layer in baked["platforms"]["linux-64"]["layers"]:
            blob = ws.cache / "blobs" / "sha256" / layer["digest"].split(":")[1]
            assert blob.stat().st_mode & 0o777 == mode, (layer["packages"], oct(mask))


def _liar(channel: Path) -> Path:
    """A `.conda` whose file is not what its paths.json says (same size, another sha256)."""
    lie = hashlib.sha256(b"fake\n").hexdigest()
    package = HostilePackage(
        "liar-conda",
        (Member("lib/liar.txt", content=b"real\n"),),
        ({"_path": "lib/liar.txt", "path_type": "hardlink", "sha256": lie, "size_in_bytes": 5},),
    )
    return write_hostile_package(package, channel)


def test_an_archive_a_worker_finds_broken_fails_the_bake_as_the_bake_itself_would(
    tmp_path: Path, stream_channel: Path, worker_jobs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = tmp_path / "channel"
    _liar(channel)
    import asyncio

    from rattler.index import index_fs

    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))

    def refused(ws: Workspace) -> str:
        result = ws.envkit(
            "bake", "-q", "-p", "linux-64", "--large-package-mb", "0", "--compression", "zstd", "--jobs", "auto", "--oci", ws.root / "image"
        )
        line = assert_refused(result, "liar-conda", "lib/liar.txt")
        assert not (ws.root / "image").exists()
        assert not [p for p in (ws.cache / "blobs").rglob("*") if p.name.startswith(".")]  # no temporary blob left
        assert not list((ws.cache / "layers").glob("*")) if (ws.cache / "layers").exists() else True
        return line

    by_worker = refused(_two(tmp_path / "workers", channel, stream_channel))
    assert "liar-conda" in worker_jobs
    monkeypatch.setattr(layer_processes, "MIN_PROCESS_BYTES", 1 << 62)
    assert refused(_two(tmp_path / "itself", channel, stream_channel)) == by_worker


def _two(root: Path, channel: Path, stream_channel: Path) -> Workspace:
    """A lock of the liar and of `honest` (from the stream channel), each in a layer of its own."""
    ws = locked_workspace(root, channel, ["liar-conda"])
    honest = locked_workspace(root.with_name(root.name + "-honest"), stream_channel, ["honest"])
    extra = [e for e in honest.entries() if e["name"] == "honest"]
    ws.rewrite(lambda document: document["package"].extend(extra))
    return ws


def test_jobs_sets_how_many_workers_whatever_the_size(tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs: list[str] = []
    real = LayerProcesses.submit
    monkeypatch.setattr(LayerProcesses, "submit", lambda self, job: jobs.append(job.locked.name) or real(self, job))
    monkeypatch.setattr(bake_module, "usable_cpus", lambda: 2)
    names = ["honest", "ordered", "siblings"]
    digests = []
    # auto by default: none for a small env, one for a big one (here: any); as many as asked for; 1: none.
    cases = [((), 1 << 30, []), (("--jobs", "auto"), 1 << 30, []), ((), 0, names), (("--jobs", "2"), 1 << 30, names)]
    for flags, min_bytes, expected in [*cases, (("--jobs", "1"), 0, [])]:
        jobs.clear()
        monkeypatch.setattr(layer_processes, "MIN_PROCESS_BYTES", min_bytes)
        ws = locked_workspace(tmp_path / f"jobs-{len(digests)}", stream_channel, names)
        digests.append(_bake(ws, "--oci", ws.root / "image", "--compression", "zstd", *flags)["image"]["digest"])
        assert sorted(jobs) == expected, flags
    assert len(set(digests)) == 1
    for flags, warned in (((), False), (("--jobs", "auto"), False), (("--jobs", "2"), True)):
        jobs.clear()
        gzip = ws.envkit("bake", "-q", *flags, "--oci", ws.root / "gzip")
        assert gzip.returncode == 0, gzip.output
        assert ("warning: --jobs applies to zstd layers" in gzip.stderr) == warned, flags
        assert jobs == []
    for bad in ("0", "many", "-2"):
        result = ws.envkit("bake", "-q", "--jobs", bad, "--oci", ws.root / "image")
        assert result.returncode == 2
        assert "--jobs" in result.stderr


def _workers_of(pid: int) -> list[int]:
    """The layer workers `pid` has started (its children running `serve`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid and b"layer_processes import serve" in command:
                found.append(int(entry.name))
    return found


_BAKE_WITH_WORKERS = [sys.executable, "-m", "conda_envkit", "bake", "-q", "-p", "linux-64", "--large-package-mb", "0"]
_BAKE_WITH_WORKERS += ["--compression", "zstd", "--jobs", "2"]


def _bake_with_workers(ws: Workspace) -> tuple[subprocess.Popen[str], list[int]]:
    """A bake of `ws` with a layer worker, once its workers run (its SIGINT as a terminal's Ctrl-C reaches it)."""
    proc = subprocess.Popen(
        [*_BAKE_WITH_WORKERS, "--oci", str(ws.root / "image")],
        cwd=ws.root,
        env={**os.environ, "ENVKIT_CACHE_DIR": str(ws.cache)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (workers := _workers_of(proc.pid)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert workers, "the bake started no worker"  # (a worker takes ~0.15 s to start: the bake cannot be done yet)
    return proc, workers


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_bake_stops_its_workers_and_leaves_nothing(tmp_path: Path, stream_channel: Path, signum: int) -> None:
    ws = locked_workspace(tmp_path / "interrupted", stream_channel, ["honest", "ordered", "siblings", "binny", "texty"])
    proc, workers = _bake_with_workers(ws)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert err.splitlines() == [f"envkit: stopped by {signal.Signals(signum).name}" + (" (Ctrl-C)" if signum == signal.SIGINT else "")]
    assert [w for w in workers if Path(f"/proc/{w}").exists()] == []  # stopped and waited for by the bake
    assert not (ws.root / "image").exists()
    assert not [p for p in ws.cache.rglob("*") if p.name.startswith((".part", ".worker."))]  # no temporary blob left
    assert not list((ws.cache / "layers").glob("*")) if (ws.cache / "layers").exists() else True


def test_the_workers_of_a_bake_killed_outright_end_by_themselves_and_leave_nothing(tmp_path: Path, stream_channel: Path) -> None:
    # SIGKILL (or the out-of-memory killer): the bake cannot stop its workers. They went on writing their layers,
    # then printed a traceback on the closed pipe, and left their temp directories.
    ws = locked_workspace(tmp_path / "killed", stream_channel, ["honest", "ordered", "siblings", "binny", "texty"])
    proc, workers = _bake_with_workers(ws)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # (until the workers, which share its stderr, have ended too)
    assert "Traceback" not in err and "Error" not in err, err
    deadline = time.monotonic() + 10
    while [w for w in workers if Path(f"/proc/{w}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in Path(f"/proc/{w}/status").read_text()] == []
    # What a worker could not remove (one the bake was starting as it died) is removed by the next bake.
    left = [p.name for p in ws.cache.rglob("*") if p.name.startswith((".worker.", "bake."))]
    assert all(name.startswith((f".worker.{proc.pid}@", f"bake.{proc.pid}@")) for name in left), left
    again = subprocess.run(
        _BAKE_WITH_WORKERS + ["--oci", str(ws.root / "image")], cwd=ws.root, env={**os.environ, "ENVKIT_CACHE_DIR": str(ws.cache)}
    )
    assert again.returncode == 0
    assert not [p for p in ws.cache.rglob("*") if p.name.startswith((".worker.", "bake."))]


def _kill_workers_before_they_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the kernel's out-of-memory killer would: each worker dies (SIGKILL) before it answers."""
    real = layer_processes._Worker.run

    def killed(self: Any, job: StreamedLayerJob) -> Any:
        self.process.kill()
        self.process.wait()
        return real(self, job)

    monkeypatch.setattr(layer_processes._Worker, "run", killed)


@pytest.mark.usefixtures("worker_jobs")
def test_with_jobs_auto_the_bake_writes_a_killed_workers_layers_itself(
    tmp_path: Path, stream_channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["honest", "ordered", "siblings"]
    flags = ("bake", "-p", "linux-64", "--large-package-mb", "0", "--compression", "zstd")
    alone = locked_workspace(tmp_path / "alone", stream_channel, names)
    expected = _bake(alone, "--oci", alone.root / "image", "--compression", "zstd", "--jobs", "1")["image"]["digest"]
    run = layer_processes._Worker.run
    _kill_workers_before_they_answer(monkeypatch)
    ws = locked_workspace(tmp_path / "killed", stream_channel, names)
    result = ws.envkit(*flags, "--oci", ws.root / "image", "--record", ws.root / "bake.json")  # --jobs auto, the default
    assert result.returncode == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "the layer worker writing it ended (killed by signal 9)" in line]
    assert len(warned) == 1, result.stderr  # once, however many layers it had
    assert "the bake wrote that worker's layers itself" in warned[0] and "--jobs 1" in warned[0]
    assert json.loads((ws.root / "bake.json").read_text())["image"]["digest"] == expected
    assert not [p for p in ws.cache.rglob("*") if p.name.startswith((".part", ".worker."))]
    # A worker that cannot even start: the bake writes every layer itself, and says why.
    monkeypatch.setattr(layer_processes._Worker, "run", run)  # (no more killing)
    monkeypatch.setattr(layer_processes.sys, "executable", str(tmp_path / "no-such-python"))
    again = locked_workspace(tmp_path / "no-python", stream_channel, names)
    result = again.envkit(*flags, "--oci", again.root / "image", "--record", again.root / "bake.json")
    assert result.returncode == 0, result.output
    assert "cannot start a layer worker" in result.stderr and "every layer was written by the bake itself" in result.stderr
    assert json.loads((again.root / "bake.json").read_text())["image"]["digest"] == expected
    # A program there that never answers (as a worker that hangs): stopped after START_SECONDS.
    hanging = tmp_path / "hanging-python"
    hanging.write_text(f"#!/bin/sh\necho $$ >> {tmp_path / 'hanging.pids'}\nexec sleep 600\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(layer_processes.sys, "executable", str(hanging))
    monkeypatch.setattr(layer_processes, "START_SECONDS", 1.0)
    hung = locked_workspace(tmp_path / "hung", stream_channel, names)
    result = hung.envkit(*flags, "--oci", hung.root / "image", "--record", hung.root / "bake.json")
    assert result.returncode == 0, result.output
    assert "did not start within 1 s" in result.stderr, result.stderr
    assert json.loads((hung.root / "bake.json").read_text())["image"]["digest"] == expected
    pids = [int(p) for p in (tmp_path / "hanging.pids").read_text().split()]
    assert pids and not [p for p in pids if Path(f"/proc/{p}").exists()]  # stopped and waited for
    # Programs there that answer, but not as envkit's worker: a well-formed message that is not its hello (then
    # waiting), and bytes that are no message at all (then leaving).
    for case, body, said in (
        (
            "other-hello",
            "import pickle, struct, sys, time\nd = pickle.dumps(('ready', 'someone else'))\n"
            "sys.stdout.buffer.write(struct.pack('>Q', len(d)) + d); sys.stdout.flush(); time.sleep(600)\n",
            "it is not envkit's",
        ),
        ("garbage", "import sys\nsys.stdout.write('Usage: not a python at all' * 3)\n", "ended (status 0)"),
    ):
        program = tmp_path / case
        program.write_text(f"#!{PYTHON}\n{body}")
        program.chmod(0o755)
        monkeypatch.setattr(layer_processes.sys, "executable", str(program))
        other = locked_workspace(tmp_path / f"ws-{case}", stream_channel, names)
        result = other.envkit(*flags, "--oci", other.root / "image", "--record", other.root / "bake.json")
        assert result.returncode == 0, result.output
        assert said in result.stderr and "the bake wrote that worker's layers itself" in result.stderr, result.stderr
        assert json.loads((other.root / "bake.json").read_text())["image"]["digest"] == expected
    monkeypatch.setattr(layer_processes.sys, "executable", str(hanging))
    asked = locked_workspace(tmp_path / "asked", stream_channel, names)  # (a cold cache: the layers are to write)
    assert_refused(asked.envkit(*flags, "-q", "--jobs", "2", "--oci", asked.root / "image"), "did not start within 1 s")  # asked for
    assert not (asked.root / "image").exists()


def test_a_worker_killed_mid_bake_fails_the_bake_with_jobs_n(
    tmp_path: Path, stream_channel: Path, worker_jobs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _kill_workers_before_they_answer(monkeypatch)
    ws = locked_workspace(tmp_path / "killed", stream_channel, ["honest", "ordered", "siblings"])
    result = ws.envkit(
        "bake", "-q", "-p", "linux-64", "--large-package-mb", "0", "--compression", "zstd", "--jobs", "2", "--oci", ws.root / "image"
    )
    line = assert_refused(result, "the layer worker writing it ended (killed by signal 9)")
    assert any(name in line for name in ("honest", "ordered", "siblings"))
    assert "--jobs 1" in result.stderr
    assert not (ws.root / "image").exists()
    assert not [p for p in ws.cache.rglob("*") if p.name.startswith((".part", ".worker."))]
