"""A hostile machine: read-only and full destinations, umasks, races, signals (issue 15).

Read-only and full filesystems are real mounts (tmpfs, read-only or 64 KiB) when the
tests run as root and may mount; otherwise read-only directories are chmod 0555
(which binds non-root users), and the full-disk tests skip. The all-or-nothing
write is also tested in-process by failing the OS call itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conda_envkit import files
from tests.conftest import Result, interruptible, run_envkit, write_env


def _env_text(channel: Path, deps: str = "  - hello\n", extra: str = "") -> str:
    return f"channels: [{channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n{deps}{extra}"


@pytest.fixture(scope="module")
def toy_lock(tmp_path_factory: pytest.TempPathFactory, toy_channel: Path) -> Path:
    work = tmp_path_factory.mktemp("lock")
    write_env(work, _env_text(toy_channel))
    assert run_envkit("lock", cwd=work).returncode == 0
    return work / "conda-lock.yml"


def _mount(target: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True).returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write into: a read-only tmpfs as root, chmod 0555 otherwise."""
    target = tmp_path / "ro"
    if _mount(target, "ro,size=1m"):
        yield target
        _umount(target)
        return
    if os.geteuid() == 0:
        pytest.skip("running as root without permission to mount: a read-only directory cannot be made")
    target.mkdir()
    target.chmod(0o555)
    yield target
    target.chmod(0o755)


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with (almost) no free space left."""
    target = tmp_path / "full"
    if not _mount(target, "size=64k"):
        pytest.skip("needs root and mount to make a full filesystem (the in-process test covers write_files)")
    filler = target / "filler"
    try:
        with filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    yield target
    _umount(target)


def _no_temp_files(directory: Path) -> None:
    # `.cache.lock` is the package cache's own lock file, beside the cache (not a leftover).
    leftovers = [
        p.name
        for p in directory.rglob("*")
        if (p.name.startswith(".") or p.name.endswith((".tmp", ".part", ".bak"))) and p.name != ".cache.lock"
    ]
    assert leftovers == []


def _error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("render", "-p", "linux-64", "-o", "{dir}/explicit.txt"), "explicit.txt: cannot write file"),
        (("lock", "--lockfile", "{dir}/conda-lock.yml"), "conda-lock.yml: cannot write lock file"),
        (("install", "-p", "linux-64", "--prefix", "{dir}/env"), "env: cannot write directory"),
        (("dockerfile", "--recipe", "scratch", "-o", "{dir}/ctx"), "ctx: cannot write directory"),
        (("export", "--lockfile", "conda-lock.yml", "--to", "json", "-o", "{dir}/record.json"), "record.json: cannot write file"),
        (("bake", "--oci", "{dir}/img"), "img: cannot write directory"),
        (("bake", "--docker-archive", "{dir}/img.tar"), "img.tar: cannot write docker archive"),
    ],
)
def test_read_only_destination(
    tmp_path: Path, toy_channel: Path, toy_lock: Path, readonly_dir: Path, command: tuple, expected: str
) -> None:
    write_env(tmp_path, _env_text(toy_channel))
    (tmp_path / "conda-lock.yml").write_bytes(toy_lock.read_bytes())
    args = [a.format(dir=readonly_dir.name) for a in command]
    result = run_envkit(*args, cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.output
    line = _error_line(result.stderr)
    assert expected in line, line
    assert str(readonly_dir.name) in line
    assert "hint:" in result.stderr
    assert list(readonly_dir.iterdir()) == []
    _no_temp_files(tmp_path)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("install", "-p", "linux-64", "--prefix", "env"), "cannot write package cache"),
        (("dockerfile", "--recipe", "scratch", "-o", "env"), "cannot write cache directory"),
        (("bake", "--oci", "env"), "cannot write cache directory"),
    ],
)
@pytest.mark.parametrize("setting", ["ENVKIT_CACHE_DIR", "HOME"])
def test_read_only_cache(tmp_path: Path, toy_lock: Path, readonly_dir: Path, command: tuple, expected: str, setting: str) -> None:
    env = {"ENVKIT_CACHE_DIR": str(readonly_dir)} if setting == "ENVKIT_CACHE_DIR" else {"HOME": str(readonly_dir), "XDG_CACHE_HOME": ""}
    result = run_envkit(command[0], "--lockfile", toy_lock, *command[1:], cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    line = _error_line(result.stderr)
    assert expected in line and str(readonly_dir) in line, line
    assert "ENVKIT_CACHE_DIR" in result.stderr  # the setting to change
    assert not (tmp_path / "env").exists()
    _no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        ("render", "-p", "linux-64", "-o", "full/explicit.txt"),
        ("lock", "--lockfile", "full/conda-lock.yml"),
        ("install", "-p", "linux-64", "--prefix", "full/env", "--cache-dir", "cache"),
        ("install", "-p", "linux-64", "--prefix", "env", "--cache-dir", "full/cache"),
        ("bake", "--docker-archive", "full/img.tar", "--cache-dir", "cache"),
        ("dockerfile", "--recipe", "scratch", "-o", "full/ctx", "--cache-dir", "cache"),
    ],
)
def test_full_disk(tmp_path: Path, toy_channel: Path, toy_lock: Path, full_dir: Path, command: tuple) -> None:
    write_env(tmp_path, _env_text(toy_channel))
    (tmp_path / "conda-lock.yml").write_bytes(toy_lock.read_bytes())
    result = run_envkit(*command, cwd=tmp_path)
    assert result.returncode == 2, result.output
    line = _error_line(result.stderr)
    assert "No space left on device" in line and "full" in line, line  # names the path
    assert "Errno" not in line, line  # the reason, not a dump of every file a copy failed on
    files = sorted(str(p.relative_to(full_dir)) for p in full_dir.rglob("*") if p.is_file())
    assert files == ["filler"]  # nothing half-written left on the full disk
    assert not (tmp_path / "env").exists()


def test_write_files_is_all_or_nothing_when_the_os_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.yml", tmp_path / "b.yml"
    first.write_text("old a\n")
    second.write_text("old b\n")
    real_replace = os.replace

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == second:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(files.WriteError, match="b.yml: cannot write lock file"):
        files.write_files([(first, "new a\n"), (second, "new b\n")], "lock file")
    assert first.read_text() == "old a\n"  # put back
    assert second.read_text() == "old b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yml", "b.yml"]


def test_multi_variant_lock_is_all_or_nothing(tmp_path: Path, toy_channel: Path) -> None:
    variants = "envkit:\n  variants:\n    cpu: {cuda: none}\n"
    write_env(tmp_path, _env_text(toy_channel, extra=variants))
    assert run_envkit("lock", cwd=tmp_path).returncode == 0
    before = (tmp_path / "conda-lock.yml").read_text()
    (tmp_path / "conda-lock.cpu.yml").unlink()
    (tmp_path / "conda-lock.cpu.yml").mkdir()  # the variant cannot be written
    write_env(tmp_path, _env_text(toy_channel, "  - hello\n  - python\n", variants))
    result = run_envkit("lock", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "conda-lock.cpu.yml: cannot write lock file" in _error_line(result.stderr)
    assert (tmp_path / "conda-lock.yml").read_text() == before
    _no_temp_files(tmp_path)


def _run_with_umask(umask: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = f"umask {umask:03o}; exec {shlex.quote(sys.executable)} -m conda_envkit " + " ".join(map(shlex.quote, args))
    return subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(tmp_path: Path, toy_channel: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    write_env(tmp_path, _env_text(toy_channel))
    steps = [
        ["lock"],
        ["render", "-p", "linux-64", "-o", "explicit.txt"],
        ["install", "-p", "linux-64", "--prefix", "env", "--cache-dir", "cache", "-q"],
        ["dockerfile", "--recipe", "scratch", "-o", "ctx", "--cache-dir", "cache", "-q"],
        ["bake", "--oci", "img", "--docker-archive", "img.tar", "--cache-dir", "cache", "-q"],
    ]
    for args in steps:
        proc = _run_with_umask(umask, args, tmp_path)
        assert proc.returncode == 0, proc.stderr
    for name in ("conda-lock.yml", "explicit.txt", "ctx/Dockerfile", "img.tar", "img/index.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode, name
    for name in ("env", "ctx", "img"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == dir_mode, name
    blobs = list((tmp_path / "img" / "blobs" / "sha256").iterdir())
    assert blobs and {stat.S_IMODE(b.stat().st_mode) for b in blobs} == {file_mode}


def test_relock_keeps_the_umask_mode(tmp_path: Path, toy_channel: Path) -> None:
    write_env(tmp_path, _env_text(toy_channel))
    assert _run_with_umask(0o022, ["lock"], tmp_path).returncode == 0
    write_env(tmp_path, _env_text(toy_channel, "  - hello\n  - python\n"))
    assert _run_with_umask(0o022, ["lock"], tmp_path).returncode == 0
    assert stat.S_IMODE((tmp_path / "conda-lock.yml").stat().st_mode) == 0o644  # was 0600 after a relock


def test_dockerfile_output_that_is_a_symlink(tmp_path: Path, toy_lock: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "ctx").symlink_to("real")
    result = run_envkit("dockerfile", "--lockfile", toy_lock, "--recipe", "scratch", "-o", "ctx", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "ctx is a symbolic link" in _error_line(result.stderr)
    assert (tmp_path / "ctx").is_symlink() and list((tmp_path / "real").iterdir()) == []


def test_two_installs_into_one_prefix(tmp_path: Path, toy_lock: Path) -> None:
    argv = [sys.executable, "-m", "conda_envkit", "install", "--lockfile", str(toy_lock), "-p", "linux-64", "--prefix", "env", "-q"]
    env = {**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    # One installs; the other waits for it, then finds the prefix up to date (as the docs promise), not an error.
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted((out.strip() for out, _err in outputs), key=lambda line: not line.startswith("installed "))
    assert said[0].startswith("installed "), outputs
    # The other waited in the install (then found it up to date), or came after it and synced nothing.
    assert said[1] == f"{tmp_path / 'env'} is up to date" or said[1].startswith(f"synced {tmp_path / 'env'}: 0 added, 0 changed, 0 removed")
    for _out, err in outputs:
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "env"]  # no staging directory left


@contextlib.contextmanager
def _silent_server() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 that accepts nothing: whoever asks it waits (until its deadline)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener
    finally:
        listener.close()


def _signalled(proc: subprocess.Popen[str], signum: int, what: str) -> str:
    """Send `signum` to `proc` and return its stderr once it ended (failing if the signal did not end it)."""
    os.kill(proc.pid, signum)
    try:
        return proc.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the signal did not end the {what}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_install_leaves_no_staging_directory(tmp_path: Path, toy_channel: Path, toy_lock: Path, signum: int) -> None:
    # The mirror never answers, so the install is surely in the middle of its work when signalled.
    with _silent_server() as listener:
        mirror = f"{toy_channel.as_uri()}=http://127.0.0.1:{listener.getsockname()[1]}/pkgs"
        argv = [sys.executable, "-m", "conda_envkit", "install", "--lockfile", str(toy_lock), "-p", "linux-64", "--prefix", "env"]
        # A deadline far beyond the wait below: the signal must end the download, not the deadline.
        env = {**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_NETWORK_TIMEOUT": "600"}
        proc = subprocess.Popen(
            [*argv, "--mirror", mirror],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        for _ in range(600):  # bounded: until the staging directory exists
            if any(p.name.endswith(".envkit-staging") for p in tmp_path.iterdir()):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("install never created its staging directory")
        err = _signalled(proc, signum, "install (it waited for its download's deadline)")
    assert proc.returncode == 128 + signum, err  # the shell's status for a signal: 130 (Ctrl-C), 143 (SIGTERM)
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"envkit: stopped by {signal.Signals(signum).name}"), err
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []
    assert [p.name for p in (tmp_path / "cache").rglob("*.part")] == []  # the download's temp file too
    assert yaml.safe_load(toy_lock.read_text())  # the lock is untouched


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_lock_exits_with_the_signals_status_and_writes_nothing(tmp_path: Path, signum: int) -> None:
    """`envkit lock` (its own fast entry point) stopped while it waits for a channel that never answers."""
    with _silent_server() as listener:
        channel = f"http://127.0.0.1:{listener.getsockname()[1]}/silent"
        (tmp_path / "environment.yml").write_text(f"channels: [{channel}]\ndependencies: [numpy]\n")
        env = {**os.environ, "ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_NETWORK_TIMEOUT": "600"}
        argv = [sys.executable, "-m", "conda_envkit", "lock", "-p", "linux-64"]
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
        )
        waiting, _, _ = select.select([listener], [], [], 120)  # the lock is fetching repodata: in the middle of its work
        assert waiting, "envkit lock never asked the channel"
        err = _signalled(proc, signum, "lock")
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"envkit: stopped by {signal.Signals(signum).name}" + (" (Ctrl-C)" if signum == signal.SIGINT else "")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["environment.yml"]


def _drain(fifo: Path) -> tuple[object, list[bytes]]:
    """A thread reading `fifo` to its end into the returned list (the reader a pipe needs)."""
    import threading

    received: list[bytes] = []

    def read() -> None:
        with fifo.open("rb") as f:
            received.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, received


@pytest.mark.parametrize(
    "command",
    [
        ("render", "-p", "linux-64", "-o", "OUT"),
        ("export", "--lockfile", "conda-lock.yml", "--to", "json", "-o", "OUT"),
        ("lock", "--lockfile", "OUT"),
        ("bake", "-q", "--docker-archive", "OUT", "--cache-dir", "cache"),
    ],
)
def test_an_output_that_is_a_pipe_or_device_is_written_through_not_replaced(
    tmp_path: Path, toy_channel: Path, toy_lock: Path, command: tuple
) -> None:
    # `-o /dev/stdout`, `--docker-archive /dev/stdout | docker load`: a rename onto the path would
    # replace the FIFO, or (as root) the device node /dev/stdout, with a regular file.
    write_env(tmp_path, _env_text(toy_channel))
    (tmp_path / "conda-lock.yml").write_bytes(toy_lock.read_bytes())
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    reader, received = _drain(fifo)
    result = run_envkit(*[str(fifo) if a == "OUT" else a for a in command], cwd=tmp_path)
    assert result.returncode == 0, result.output
    reader.join(60)  # type: ignore[attr-defined]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received and len(received[0]) > 100
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.fifo")] == []
    if os.geteuid() == 0:  # a device node: only root can make one
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        again = run_envkit(*[str(device) if a == "OUT" else a for a in command], cwd=tmp_path)
        assert again.returncode == 0, again.output
        assert stat.S_ISCHR(device.lstat().st_mode)


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_an_output_linked_to_a_fifo_nobody_reads_or_another_device_is_refused(tmp_path: Path, toy_lock: Path, target: str) -> None:
    # bake.json as a symlink a repository holds: to a FIFO nobody reads, the bake hung forever once its layers were
    # written; to a device (here /dev/zero: /dev/kmsg or /dev/mem as root) it wrote the record into it.
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    (tmp_path / "conda-lock.yml").write_bytes(toy_lock.read_bytes())
    (tmp_path / "bake.json").symlink_to(target)
    result = _bake_to(tmp_path, tmp_path / "conda-lock.yml", "--oci", tmp_path / "image")
    assert result.returncode == 2, result.output
    assert "a FIFO nobody reads" in result.stderr or "is a device (/dev/zero)" in result.stderr, result.stderr
    assert (tmp_path / "bake.json").is_symlink()


def test_dev_stdout_redirected_to_a_file_is_written_through_not_replaced(tmp_path: Path, toy_lock: Path) -> None:
    # `envkit render -o /dev/stdout > out.txt`: the descriptor is a regular file, so the output was written to a temp
    # file renamed over /dev/stdout (as root, replacing the device link). Here a link of our own stands for it.
    (tmp_path / "conda-lock.yml").write_bytes(toy_lock.read_bytes())
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    out = tmp_path / "out.txt"
    out.write_text("before\n")
    with out.open("a") as stdout:  # `>>`: what is there stays, the render comes after it
        proc = subprocess.run(
            [sys.executable, "-m", "conda_envkit", "render", "-p", "linux-64", "-o", str(link)],
            cwd=tmp_path,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    text = out.read_text()
    assert text.startswith("before\n# Generated by envkit render"), text[:200]


def _bake_to(tmp_path: Path, toy_lock: Path, *target: str | Path, cwd: Path | None = None) -> Result:
    return run_envkit(
        "bake", "-q", "--lockfile", toy_lock, "-p", "linux-64", "--cache-dir", tmp_path / "cache", *target, cwd=cwd or tmp_path
    )


def test_bake_never_replaces_what_is_not_an_image_layout(tmp_path: Path, toy_lock: Path) -> None:
    """--oci replaces an earlier image layout, nothing else: a directory of other files, a regular file, a
    symlink or the current directory is refused before anything is fetched or built, and left as it was."""
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "notes.txt").write_text("important\n")
    (tmp_path / "regular").write_text("keep me\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to("elsewhere")
    work = tmp_path / "work"
    work.mkdir()
    (work / "environment.yml").write_text("channels: []\n")
    cases = {
        "mydata": "exists and is not an OCI image layout (notes.txt)",
        "regular": "exists and is not a directory",
        "link": "is a symbolic link",
        str(work): "is the current directory or holds it",
        ".": "is the current directory or holds it",
        "..": "is the current directory or holds it",
    }
    for target, message in cases.items():
        result = _bake_to(tmp_path, toy_lock, "--oci", target, cwd=work if target in (".", "..", str(work)) else tmp_path)
        assert result.returncode == 2, (target, result.output)
        assert message in _error_line(result.stderr), (target, result.stderr)
    assert (tmp_path / "mydata" / "notes.txt").read_text() == "important\n"
    assert (tmp_path / "regular").read_text() == "keep me\n"
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "elsewhere").iterdir()) == []
    assert sorted(p.name for p in work.iterdir()) == ["environment.yml"]
    assert not (tmp_path / "cache" / "pkgs").exists()  # refused before any package was fetched


def test_bake_checks_its_targets_before_any_work(tmp_path: Path, toy_lock: Path) -> None:
    (tmp_path / "adir").mkdir()
    for target, message in (
        ((), "nothing to write"),
        (("--docker-archive", "adir"), "is a directory"),
        (("--push", "localhost:5000/team/train:v1"), "give the repository without tag or digest"),
    ):
        result = _bake_to(tmp_path, toy_lock, *target)
        assert result.returncode == 2, (target, result.output)
        assert message in result.stderr, (target, result.stderr)
    lock = yaml.safe_load(toy_lock.read_text())
    missing = next(p for p in ("linux-aarch64", "linux-ppc64le") if p not in lock["metadata"]["platforms"])
    for platform, message in (("win-65", "unknown platform 'win-65'"), (missing, f"platform {missing} is not in the lock")):
        argv = ("bake", "--lockfile", toy_lock, "-p", platform, "--cache-dir", tmp_path / "cache", "--oci", "img")
        result = run_envkit(*argv, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (platform, result.output)
        assert "base " not in result.stderr  # said before anything is loaded
    assert not (tmp_path / "cache" / "pkgs").exists()


def test_bake_checks_its_record_path_before_writing_the_image(tmp_path: Path, toy_lock: Path) -> None:
    # The record is written last: a --record that cannot be written made bake exit 2 after the image was written
    # (or pushed and tagged), with "cannot write file (File exists)" for a parent that is a file.
    (tmp_path / "notadir").write_text("x\n")
    (tmp_path / "adir").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for record, message in (
            ("notadir/bake.json", f"--record notadir/bake.json: {tmp_path / 'notadir'} is a file, not a directory"),
            ("notadir/deeper/bake.json", f"{tmp_path / 'notadir'} is a file, not a directory"),
            ("adir", "--record adir: is a directory"),
            ("locked/sub/bake.json", f"{locked} is not writable"),
        ):
            if record.startswith("locked") and os.geteuid() == 0:  # (root writes anywhere: nothing to refuse)
                continue
            result = _bake_to(tmp_path, toy_lock, "--oci", "img", "--record", record)
            assert result.returncode == 2, (record, result.output)
            assert message in _error_line(result.stderr), (record, result.stderr)
            assert not (tmp_path / "img").exists(), record
        assert not (tmp_path / "cache" / "pkgs").exists()  # refused before any package was fetched
    finally:
        locked.chmod(0o755)
    fine = _bake_to(tmp_path, toy_lock, "--oci", "img", "--record", "records/new/bake.json")  # (missing directories: made)
    assert fine.returncode == 0, fine.output
    assert (tmp_path / "records" / "new" / "bake.json").is_file()


def test_bake_replaces_an_earlier_layout_and_writes_into_an_empty_directory(tmp_path: Path, toy_lock: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert _bake_to(tmp_path, toy_lock, "--oci", "empty").returncode == 0
    first = (tmp_path / "empty" / "index.json").read_bytes()
    assert _bake_to(tmp_path, toy_lock, "--oci", "empty").returncode == 0  # now a layout: replaced whole
    assert (tmp_path / "empty" / "index.json").read_bytes() == first


def test_a_prefix_on_a_read_only_filesystem(tmp_path: Path, image_channel: Path) -> None:
    # Up to date: nothing to write, so it is reported so. A sync that must change it: the read-only
    # filesystem is named, not free space.
    from tests.test_bake import _lock

    volume = tmp_path / "volume"
    if not _mount(volume, "size=16m"):
        pytest.skip("needs root and mount to make a read-only filesystem under a prefix")
    try:
        work, prefix, env = tmp_path / "work", volume / "env", {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
        _lock(work, image_channel, ["greet=1.0"])
        assert run_envkit("install", "-q", "-p", "linux-64", "--prefix", prefix, cwd=work, env=env).returncode == 0
        assert subprocess.run(["mount", "-o", "remount,ro", str(volume)], capture_output=True).returncode == 0
        same = run_envkit("install", "-p", "linux-64", "--prefix", prefix, cwd=work, env=env)
        assert same.returncode == 0 and "is up to date" in same.stdout, same.output
        _lock(work, image_channel, ["greet=2.0"])
        changed = run_envkit("install", "-p", "linux-64", "--prefix", prefix, cwd=work, env=env)
        assert changed.returncode == 2, changed.output
        line = _error_line(changed.stderr)
        assert str(prefix) in line and "Read-only file system" in line, line
        assert "writable" in changed.stderr and "free space" not in changed.stderr, changed.stderr
    finally:
        _umount(volume)


@pytest.mark.parametrize("exchange", [True, False])
def test_a_replaced_directory_is_the_old_or_the_new_one_whatever_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    # `bake --oci DIR` over an earlier layout: DIR was renamed aside, then the new one renamed in; a failure or a
    # signal between the two left no DIR (the old one stranded in .DIR.*.old). Linux swaps the two in one step; the
    # fallback puts the old one back when the second rename fails.
    from conda_envkit import files

    target, staging = tmp_path / "image", tmp_path / ".image.tmp"
    for directory, text in ((target, "old"), (staging, "new")):
        directory.mkdir()
        (directory / "index.json").write_text(text)
    if exchange:
        files.replace_directory(staging, target)
        assert (target / "index.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["image"]
        return
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def failing_second(a: object, b: object) -> None:
        calls.append(b)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_rename(a, b)

    monkeypatch.setattr(files.os, "rename", failing_second)
    with pytest.raises(OSError):
        files.replace_directory(staging, target)
    assert (target / "index.json").read_text() == "old"


def test_a_signal_while_a_set_of_files_is_renamed_waits_for_the_whole_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A multi-variant lock is a set written all or nothing: SIGTERM (or Ctrl-C) between two renames left the first new
    # and the second old, and a `.bak` beside them. It is held until the set is in place, then ends the command.
    import signal

    from conda_envkit import files
    from conda_envkit.interrupts import Interrupted, unwind_on_signals

    first, second = tmp_path / "conda-lock.yml", tmp_path / "conda-lock.cpu.yml"
    first.write_text("old")
    second.write_text("old")
    real = os.replace

    def replace_then_signal(source: object, target: object) -> None:
        real(source, target)  # type: ignore[arg-type]
        if Path(str(target)) == first:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(files.os, "replace", replace_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    unwind_on_signals()
    try:
        with pytest.raises(Interrupted):
            files.write_files([(first, "new"), (second, "new")], "lock file")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (first.read_text(), second.read_text()) == ("new", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conda-lock.cpu.yml", "conda-lock.yml"]


def test_a_directory_name_that_is_not_utf8_is_a_message_not_a_traceback(tmp_path: Path, toy_channel: Path) -> None:
    # A project under a directory whose name is Latin-1 bytes: py-rattler's UnicodeEncodeError traceback, exit 1.
    import subprocess
    import sys

    work = tmp_path / "caf\udce9"
    work.mkdir()
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies: [hello]\n")
    proc = subprocess.run([sys.executable, "-m", "conda_envkit", "lock", "-q"], cwd=work, capture_output=True)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert "is not valid UTF-8" in stderr and "caf\\udce9" in stderr and "  hint: " in stderr, stderr


_PACKAGE = Path(__file__).resolve().parents[2] / "conda_envkit"


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (OSError(24, "Too many open files", "/data/x.conda"), ("/data/x.conda: Too many open files", "ulimit -n")),
        (OSError(24, "Too many open files", str(_PACKAGE / "redact.py")), ("Too many open files", "ulimit -n")),
        (OSError(12, "Cannot allocate memory"), ("Cannot allocate memory", "too little memory")),
        (MemoryError(), ("out of memory", "too little memory")),
        (RuntimeError("can't start new thread"), ("cannot start a thread", "too little memory")),
        (OSError(28, "No space left on device", "/cache/x"), ("/cache/x: cannot write (No space left on device)", "free space")),
    ],
)
def test_the_machines_limits_are_described_wherever_they_are_met(failure: BaseException, words: tuple[str, str]) -> None:
    # `ulimit -n`, `ulimit -v`, a full disk met in py-rattler, a library or an import: tracebacks, exit 1, before.
    from conda_envkit.failures import machine_failure

    described = machine_failure(failure)
    assert described is not None and words[0] in described[0] and words[1] in described[1], described
    assert "conda_envkit" not in described[0]  # a module being imported is no file of the user's
    assert machine_failure(OSError(5, "Input/output error")) is None and machine_failure(ValueError("x")) is None


def test_what_killed_commands_left_is_removed_by_the_next(tmp_path: Path, toy_channel: Path) -> None:
    # SIGKILL, the OOM killer, a CI timeout: nothing removes a partial download, a staging directory or a temp file of
    # the killed command, and they piled up (42 MB after 8 killed bakes). Their names carry <pid>@<host id>: the next
    # command removes those whose process is gone, and keeps those of one that runs.
    import shutil
    import subprocess

    from conda_envkit.files import _host_id

    dead = subprocess.Popen(["true"])
    dead.wait()
    gone, alive = f"{dead.pid}@{_host_id()}", f"{os.getpid()}@{_host_id()}"
    work, cache = tmp_path / "work", tmp_path / "cache"
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies: [hello]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    env = {"ENVKIT_CACHE_DIR": str(cache)}
    assert run_envkit("bake", "-q", "--oci", "img", cwd=work, env=env).returncode == 0
    archive_dir = next((cache / "pkgs").glob("*/hello-*.conda")).parent
    left = {
        archive_dir / f".hello-2.0-0.conda.{gone}.x1.part": "file",
        cache / "blobs" / "tmp" / f".part.{gone}.x2": "file",
        cache / "tmp" / f"bake.{gone}-x3": "dir",
        work / f".conda-lock.yml.{gone}.ab12.tmp": "file",
        work / f".conda-lock.yml.{gone}.bak": "file",
        work / f".img.{gone}.x4.tmp": "dir",
        cache / "blobs" / "sha256" / f".blob.{gone}.x6": "file",  # (a config or manifest being written)
        work / f".img.tar.{gone}.x7.tmp": "file",  # (--docker-archive)
        cache / "tmp" / f"extracted.{gone}-x8": "dir",  # (an install's, or a bake's linking)
    }
    kept = [cache / "blobs" / "tmp" / f".part.{alive}.x5", work / f".conda-lock.yml.{alive}.cd34.tmp"]
    for path, kind in left.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if kind == "dir" else path.write_text("x")
    for path in kept:
        path.write_text("x")
    next(archive_dir.glob("*.conda")).unlink()  # the archive is fetched again
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies: [hello, python]\n")
    assert run_envkit("lock", "-q", cwd=work).returncode == 0
    shutil.rmtree(cache / "layers")
    shutil.rmtree(cache / "fragments")  # (every archive is needed again)
    assert run_envkit("bake", "-q", "--oci", "img", "--docker-archive", "img.tar", cwd=work, env=env).returncode == 0
    assert [p for p in left if os.path.lexists(p)] == []
    assert all(p.exists() for p in kept)
