"""Hostile servers: registries and package servers that trickle, loop, garble or never answer (issue 15).

Every case runs the real command against tests/servers/hostile_http.py with
ENVKIT_NETWORK_TIMEOUT=2 and expects exit 2 with a one-line error naming the
server and what was being fetched. The deadline is shown to have fired by the
message, not by timing the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conda_envkit.errors import EnvkitError
from tests.conftest import Registry, Result, run_envkit, stop_process, write_env

DEADLINE = {"ENVKIT_NETWORK_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    """host:port of a hostile server on 127.0.0.1 (stopped by PID)."""
    script = Path(__file__).resolve().parents[1] / "servers" / "hostile_http.py"
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


REGISTRY_CASES = {
    "trickle": "no complete answer within 2 s",
    "never-answer": "failed (ReadTimeout)",
    "redirect-loop": "too many redirects",
    "garbage": "is not UTF-8",
    "html": "is not JSON",
    "short-body": "transfer failed",
    "huge": "larger than the 4 MiB limit",
    "empty": "is not JSON",
    "not-object": "is a JSON list, not an object",
    "non-utf8": "is not UTF-8",
    "no-config": "image manifest has no config",
    "bad-config": "image config is not UTF-8",
    "bad-layers": "`layers` is not a list",
    "token-garbage": "token response is not UTF-8",
    "token-html": "token response is not JSON",
    "token-no-token": "token server sent no token",
    "token-trickle": "token server",
    "server-error": "HTTP 500",
}


@pytest.mark.parametrize("mode", sorted(REGISTRY_CASES))
def test_inspect_against_a_hostile_registry(tmp_path: Path, hostile: str, mode: str) -> None:
    image = f"{hostile}/{mode}/img:tag"
    result = run_envkit("inspect", image, "--insecure", cwd=tmp_path, env=DEADLINE)  # asserts no traceback
    assert result.returncode == 2, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: "), result.stderr
    assert hostile in first, first  # names the registry
    assert REGISTRY_CASES[mode] in first, first
    assert list(tmp_path.iterdir()) == []


def test_a_push_to_a_registry_that_starts_uploads_without_a_location_is_an_error(tmp_path: Path, hostile: str, toy_lock: Path) -> None:
    # The distribution spec's `Location` of an upload session missing: a KeyError traceback before.
    work = tmp_path / "work"
    work.mkdir()
    env = {**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    result = run_envkit("bake", "-q", "--lockfile", toy_lock, "--push", f"{hostile}/no-location/app", "--insecure", cwd=work, env=env)
    assert result.returncode == 2, result.output
    assert "the registry started an upload but said no Location" in _error_line(result.stderr)


def test_inspect_looks_up_artifacts_within_one_deadline(tmp_path: Path, hostile: str) -> None:
    # Each of 13 subjects' lookups (two requests each) answers 3.5 s late, within its own 4 s deadline: 91 s in all
    # before; now one deadline for them all, each request cut to what is left of it (~4 s, not 7 s).
    import time

    started = time.monotonic()
    slow = {"ENVKIT_NETWORK_TIMEOUT": "4"}
    result = run_envkit("inspect", f"{hostile}/slow-referrers/img:tag", "--insecure", cwd=tmp_path, env=slow)
    took = time.monotonic() - started
    assert result.returncode == 2, result.output
    assert took < 6.5, took
    assert "no complete answer within 4 s" in result.stderr or "ReadTimeout" in result.stderr, result.stderr


def _error_line(stderr: str) -> str:
    """The one `error:` line (progress lines come before it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def toy_lock(tmp_path_factory: pytest.TempPathFactory, toy_channel: Path) -> Path:
    work = tmp_path_factory.mktemp("toy-lock")
    write_env(work, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - hello\n")
    result = run_envkit("lock", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "conda-lock.yml"


# What `bake --base` says of a hostile registry: fragments of its one error line.
BAKE_BASE_CASES = {
    **{mode: ("{hostile}", REGISTRY_CASES[mode]) for mode in ("no-config", "bad-config", "huge", "trickle", "token-garbage")},
    # A config over 4 MiB stops at the cap; the error names registry, repository, reference and digest.
    "huge-config": ("{hostile}/huge-config/base:1: its config sha256:", f"declares {64 << 20} bytes, over the 4 MiB limit"),
    # A layer whose descriptor declares 1 TiB, sent at 16 MiB/s, earns the deadline more time than
    # it spends: it is refused by its declared size, before any byte.
    "endless-layer": ("{hostile}: blob endless-layer/base@sha256:", "declares 1024 GiB, over the 8 GiB download limit"),
    # An error's body is read up to 64 KiB (it was read whole, gigabytes in seconds, past the deadline).
    "endless-error": ("{hostile}: manifest endless-error/base:1: HTTP 400",),
    # The registry's words, printable and shortened; entries of other shapes skipped (they were a traceback).
    "odd-errors": ("HTTP 400: DENIED?[2J; " + "m" * 199 + "…",),
}


@pytest.mark.parametrize("mode", list(BAKE_BASE_CASES))
def test_bake_base_from_a_hostile_registry(tmp_path: Path, hostile: str, toy_lock: Path, mode: str) -> None:
    env = {**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    out.mkdir()
    args = ("bake", "--lockfile", toy_lock, "--base", f"{hostile}/{mode}/base:1", "--insecure", "--oci", "img")
    result = run_envkit(*args, cwd=out, env=env)
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    for fragment in BAKE_BASE_CASES[mode]:
        assert fragment.format(hostile=hostile) in error, error
    assert list(out.iterdir()) == []
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 4096] == []


PACKAGE_CASES = {
    "trickle": "no complete answer within 2 s",
    "never-answer": "download failed after",
    "redirect-loop": "too many redirects",
    "garbage": "sha256 mismatch",
    "short-body": "download failed after",
    "server-error": "download failed after",
}


@pytest.mark.parametrize("mode", sorted(PACKAGE_CASES))
def test_install_from_a_hostile_package_server(tmp_path: Path, hostile: str, toy_channel: Path, toy_lock: Path, mode: str) -> None:
    env = {**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    mirror = f"{toy_channel.as_uri()}=http://{hostile}/{mode}"
    result = run_envkit("install", "--lockfile", toy_lock, "-p", "linux-64", "--prefix", "env", "--mirror", mirror, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    first = _error_line(result.stderr)
    assert f"http://{hostile}/{mode}/" in first, first  # names the server and the file
    assert PACKAGE_CASES[mode] in first, first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no prefix, no staging directory
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []  # no partial download left in the cache


def test_a_package_gone_from_its_channel_ends_a_fetch_another_download_holds_up(
    tmp_path: Path, hostile: str, toy_lock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first package trickles in (a byte per 0.2 s, for a minute); the second is gone (HTTP 404). The fetch
    # ends with the 404, the trickling download stopped at its next chunk, not waited for in the lock's order,
    # and no partial download is left in the cache.
    from dataclasses import replace

    from conda_envkit.install import fetch_packages
    from conda_envkit.lockfile import read_lockfile

    monkeypatch.setenv("ENVKIT_NETWORK_TIMEOUT", "120")
    hello = read_lockfile(toy_lock).package[0]
    file_name = hello.url.rsplit("/", 1)[1]
    trickling = replace(hello, url=f"http://{hostile}/trickle/linux-64/{file_name}")
    gone = replace(hello, name="gone", url=f"http://{hostile}/gone/linux-64/{file_name}", hash=replace(hello.hash, sha256="1" * 64))
    with pytest.raises(EnvkitError) as info:
        fetch_packages([trickling, gone], tmp_path / "cache", jobs=2)
    assert f"http://{hostile}/gone/linux-64/{file_name}: HTTP 404" in str(info.value)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_network_timeout_must_be_a_number(tmp_path: Path, hostile: str) -> None:
    result = run_envkit("inspect", f"{hostile}/garbage/img:tag", "--insecure", cwd=tmp_path, env={"ENVKIT_NETWORK_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "ENVKIT_NETWORK_TIMEOUT='soon' is not a number of seconds" in result.stderr


CHANNEL_CASES = ["trickle", "never-answer", "garbage", "redirect-loop", "short-body", "server-error", "html"]


@pytest.mark.parametrize("mode", CHANNEL_CASES)
def test_lock_against_a_hostile_channel(tmp_path: Path, hostile: str, mode: str) -> None:
    channel = f"http://{hostile}/{mode}"
    write_env(tmp_path, f"channels: [{channel}]\ndependencies:\n  - python\n")
    env = {**DEADLINE, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    result = run_envkit("lock", cwd=tmp_path, env=env)  # without a deadline, trickle hangs here
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert f"linux-64: cannot read a channel ({channel})" in error, error
    assert not (tmp_path / "conda-lock.yml").exists()


@pytest.mark.parametrize("mode", ["never-answer", "server-error", "trickle"])
def test_export_to_a_hostile_mlflow_server(tmp_path: Path, hostile: str, toy_lock: Path, mode: str) -> None:
    uri = f"http://{hostile}/{mode}"
    env = {**DEADLINE, "MLFLOW_TRACKING_URI": uri}
    result = run_envkit("export", "--lockfile", toy_lock, "--to", "mlflow", "--experiment", "envkit-test", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output  # MLflow's own defaults retry for minutes
    error = _error_line(result.stderr)
    assert f"MLflow at {uri}" in error, error


def test_timeout_option_sets_the_deadline(tmp_path: Path, hostile: str) -> None:
    result = run_envkit("--timeout", "1.5", "inspect", f"{hostile}/trickle/img:tag", "--insecure", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "no complete answer within 1.5 s" in _error_line(result.stderr)
    bad = run_envkit("--timeout", "0", "inspect", f"{hostile}/trickle/img:tag", cwd=tmp_path)
    assert bad.returncode == 2 and "--timeout" in bad.stderr


def test_failed_repodata_download_leaves_no_junk_in_the_cache(tmp_path: Path, hostile: str) -> None:
    # 64 MiB of unfinished JSON per subdir: py-rattler caches what it received.
    channel = f"http://{hostile}/huge-repodata"
    write_env(tmp_path, f"channels: [{channel}]\ndependencies:\n  - python\n")
    env = {"ENVKIT_NETWORK_TIMEOUT": "60", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    result = run_envkit("lock", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    assert "failed to parse repodata.json" in _error_line(result.stderr)
    cached = [p for p in (tmp_path / "xdg").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]
    assert cached == []


def _peak_rss_mib(*args: str | Path, cwd: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run envkit under a small parent that reports the peak RSS of its children (envkit, uv), in MiB."""
    parent = (
        "import resource, subprocess, sys; proc = subprocess.run(sys.argv[1:]);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(proc.returncode)"
    )
    argv = [sys.executable, "-c", parent, sys.executable, "-m", "conda_envkit", *map(str, args)]
    proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    *_, peak_kib = proc.stderr.split()
    return proc, int(peak_kib) / 1024


def test_lock_against_an_endless_channel_ends_at_the_deadline(tmp_path: Path, hostile: str) -> None:
    # With a cap bigger than what 4 s bring, the deadline ends it, retries included, and the
    # body streams to disk (not memory) and is removed.
    channel = f"http://{hostile}/endless"
    write_env(tmp_path, f"channels: [{channel}]\nplatforms: [linux-64]\ndependencies:\n  - python\n")
    proc, peak = _peak_rss_mib("--timeout", "4", "lock", cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr
    error = _error_line(proc.stderr)
    assert f"cannot read a channel ({channel}): no complete repodata from {channel}/linux-64/, {channel}/noarch/ within 4 s" in error, error
    assert "now 4 s" in proc.stderr  # the hint says which deadline
    # 16 MiB/s per subdir for 4 s: held in memory, that would be 64 MiB or more over envkit's own ~50.
    assert peak < 100, f"peak RSS {peak:.0f} MiB"
    assert not (tmp_path / "conda-lock.yml").exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 4096] == []


_LINUX_ONLY = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="memory is watched through /proc (Linux)")


@pytest.mark.parametrize(
    ("mode", "cap", "passed"),
    [
        # A plain repodata.json that never ends streams into py-rattler's temporary file.
        ("endless", 24, "a repodata download grew past 24 MiB"),
        # py-rattler reads a sharded channel's index into memory: without the guard, 60 s of
        # this server is about 2 GiB of RSS (16 MiB/s for each of linux-64 and noarch).
        pytest.param("endless-shards", 48, "reading repodata and solving took more than 48 MiB of memory", marks=_LINUX_ONLY),
    ],
)
def test_lock_stops_endless_repodata_at_the_size_cap(tmp_path: Path, hostile: str, mode: str, cap: int, passed: str) -> None:
    # The guard stops the lock once the cap is passed, long before the 60 s deadline.
    channel = f"http://{hostile}/{mode}"
    write_env(tmp_path, f"channels: [{channel}]\nplatforms: [linux-64]\ndependencies:\n  - python\n")
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_MAX_REPODATA_BYTES": f"{cap}M"}
    proc, peak = _peak_rss_mib("--timeout", "60", "lock", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    error = _error_line(proc.stderr)
    assert error == f"error: cannot read the channels ({channel}): {passed}", error
    assert f"raise ENVKIT_MAX_REPODATA_BYTES (now {cap} MiB)" in proc.stderr
    assert peak < cap + 100, f"peak RSS {peak:.0f} MiB"
    assert not (tmp_path / "conda-lock.yml").exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 4096] == []


@pytest.mark.parametrize("value", ["lots", "0", "-5M", "1.5G"])
def test_invalid_repodata_cap_is_a_usage_error(tmp_path: Path, value: str) -> None:
    write_env(tmp_path, "channels: [conda-forge]\nplatforms: [linux-64]\ndependencies:\n  - python\n")
    result = run_envkit("lock", cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_MAX_REPODATA_BYTES": value})
    assert result.returncode == 2, result.output
    assert f"ENVKIT_MAX_REPODATA_BYTES={value!r} is not a size" in _error_line(result.stderr)


@pytest.mark.parametrize("mode", ["html", "not-object", "huge", "never-answer"])
def test_dockerfile_base_from_a_hostile_registry(tmp_path: Path, hostile: str, toy_lock: Path, mode: str) -> None:
    base = ("--base", f"{hostile}/{mode}/base:1", "--pin-base-digest", "--insecure")  # pinning asks the registry
    args = ("dockerfile", "--lockfile", toy_lock, "--recipe", "scratch", *base, "-o", "ctx")
    result = run_envkit(*args, cwd=tmp_path, env={**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert hostile in error and mode in error, error
    assert not (tmp_path / "ctx").exists()


# What the error says after `resolving the pip: section (environment.yml:7)`: envkit's index proxy
# names the page it could not read (in preference to uv's message about a 502).
PIP_INDEX_CASES = {
    "trickle": "{index}/requests/: no complete answer within 2 s",
    "never-answer": "{index}/requests/: request failed (ReadTimeout)",
    "redirect-loop": "{index}/requests/: too many redirects",
    # under the (default 256 MiB) page cap when the resolution's 4 deadlines end
    "endless": "against {index} took longer than 8 s (4 times the 2 s network deadline); still reading {index}/requests/ (",
}


@pytest.mark.parametrize("mode", ["trickle", "never-answer", "garbage", "redirect-loop", "endless"])
def test_lock_pip_section_against_a_hostile_index(tmp_path: Path, hostile: str, toy_channel: Path, mode: str) -> None:
    index = f"http://{hostile}/{mode}/simple"
    pip = f"  - pip:\n      - --index-url {index}\n      - requests\n"
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies:\n  - python=3.11\n{pip}")
    result = run_envkit("lock", cwd=tmp_path, env={**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    # (the requirement uv's explanation names, by its line; else the pip: section)
    assert "linux-64" in error and ("pip: section" in error or "requests (environment.yml:7)" in error), error
    assert not (tmp_path / "conda-lock.yml").exists()
    if mode in PIP_INDEX_CASES:
        assert PIP_INDEX_CASES[mode].format(index=index) in error, error
    else:  # a page the proxy passed on: uv's own message, with the index's URL (not the proxy's)
        said = " ".join(result.stderr.split())  # uv may wrap its message into lines (under xdist it did)
        assert f'Unsupported `Content-Type` "application/octet-stream" for `{index}/requests/`' in said, result.stderr
    if mode == "endless":
        assert "lower ENVKIT_MAX_INDEX_PAGE_BYTES" in result.stderr
        assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20] == []


def test_install_stops_an_endless_package_at_the_download_cap(tmp_path: Path, hostile: str, toy_channel: Path, toy_lock: Path) -> None:
    # 16 MiB/s earns the deadline more time than it spends: only the size cap ends it.
    env = {**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_MAX_DOWNLOAD_BYTES": "4M"}
    mirror = f"{toy_channel.as_uri()}=http://{hostile}/endless"
    result = run_envkit("install", "--lockfile", toy_lock, "-p", "linux-64", "--prefix", "env", "--mirror", mirror, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert f"http://{hostile}/endless/" in error and ".conda: " in error, error  # names the archive
    assert "response larger than the 4 MiB limit" in error, error
    assert "ENVKIT_MAX_DOWNLOAD_BYTES" in result.stderr  # the hint says which setting
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_install_refuses_a_declared_size_over_the_download_cap(tmp_path: Path, hostile: str, toy_channel: Path, toy_lock: Path) -> None:
    env = {**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_MAX_DOWNLOAD_BYTES": "512"}
    mirror = f"{toy_channel.as_uri()}=http://{hostile}/short-body"  # Content-Length: 1000
    result = run_envkit("install", "--lockfile", toy_lock, "-p", "linux-64", "--prefix", "env", "--mirror", mirror, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    assert "1000 bytes, over the 512 bytes download limit" in _error_line(result.stderr)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("target", "said"),
    [
        # A package "archive" in a local channel that is /dev/zero would fill the cache's disk.
        ("/dev/zero", "not a regular file"),
        # One that is a FIFO (a committed symlink can name one) made the open wait for a writer, forever.
        ("fifo", "not a regular file"),
        # /proc/self/mem is a regular file whose first read fails (EIO): the channel's side, not the cache's disk.
        pytest.param(
            "/proc/self/mem", "cannot read package", marks=pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="/proc")
        ),
    ],
)
def test_install_reads_local_channel_files_as_the_channels(
    tmp_path: Path, toy_channel: Path, toy_lock: Path, target: str, said: str
) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(toy_channel, channel, symlinks=True)
    victims = sorted(channel.glob("*/*.conda"))
    assert victims
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    for archive in victims:
        archive.unlink()
        archive.symlink_to(target)
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache")}
    mirror = f"{toy_channel.as_uri()}={channel.as_uri()}"
    result = run_envkit("install", "--lockfile", toy_lock, "-p", "linux-64", "--prefix", "env", "--mirror", mirror, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert f"{channel}/" in error and said in error, error
    assert "package cache" not in error, error
    assert not (tmp_path / "env").exists()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("value", ["lots", "0", "-1", "12X"])
def test_download_cap_must_be_a_size(tmp_path: Path, toy_lock: Path, value: str) -> None:
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "ENVKIT_MAX_DOWNLOAD_BYTES": value}
    result = run_envkit("install", "--lockfile", toy_lock, "-p", "linux-64", "--prefix", "env", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.output
    assert f"ENVKIT_MAX_DOWNLOAD_BYTES={value!r} is not a size" in _error_line(result.stderr)


@pytest.fixture
def blob_proxy(registry: Registry) -> Iterator[str]:
    """host:port of tests/servers/blob_proxy.py in front of `registry` (stopped by PID)."""
    script = Path(__file__).resolve().parents[1] / "servers" / "blob_proxy.py"
    proc = subprocess.Popen([sys.executable, str(script), registry.host], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def _bake_through(tmp_path: Path, toy_lock: Path, *args: str) -> Result:
    out = tmp_path / "out"
    out.mkdir(parents=True)
    env = {**DEADLINE, "ENVKIT_CACHE_DIR": str(tmp_path / "fresh-cache")}
    return run_envkit("bake", "--lockfile", toy_lock, "--insecure", "--oci", "img", *args, cwd=out, env=env)


@pytest.mark.parametrize("mode", ["long", "endless"])
def test_base_and_cached_layers_longer_than_their_descriptor_are_refused(
    tmp_path: Path, toy_lock: Path, registry: Registry, blob_proxy: str, mode: str
) -> None:
    # A real image and a real bake cache in a real registry; the proxy sends each layer whole, then
    # more (1 MiB more, or zeros without end at 16 MiB/s, which outruns the deadline).
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    push = ("--push", f"{registry.host}/team/base", "-t", "v1", "--cache-to", f"{registry.host}/team/cache")
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "c1")}
    first = run_envkit("bake", "-q", "--lockfile", toy_lock, "--insecure", *push, cwd=pushed, env=env)
    assert first.returncode == 0, first.output
    happy = _bake_through(tmp_path / "happy", toy_lock, "--base", f"{blob_proxy}/pass/team/base:v1")
    assert happy.returncode == 0, happy.output  # the proxy itself is faithful

    # A base's layer: refused, nothing written.
    work = tmp_path / "base"
    result = _bake_through(work, toy_lock, "--base", f"{blob_proxy}/{mode}/team/base:v1")
    assert result.returncode == 2, result.output
    error = _error_line(result.stderr)
    assert f"{blob_proxy}: blob {mode}/team/base@sha256:" in error and "bytes limit" in error, error  # the cap
    assert "descriptor declares" in result.stderr  # the hint says which limit
    assert list((work / "out").iterdir()) == []
    assert list((work / "fresh-cache").rglob(".part.*")) == []

    # A cached layer: not used (a warning naming the cache and the blob), built here from its packages instead.
    work = tmp_path / "cache-from"
    result = _bake_through(work, toy_lock, "--cache-from", f"{blob_proxy}/{mode}/team/cache")
    assert result.returncode == 0, result.output
    assert f"cache {blob_proxy}/{mode}/team/cache: layer blob sha256:" in result.stderr
    assert "arrived bigger than the cache map says: that layer was built here" in result.stderr
    baked = json.loads((work / "out" / "bake.json").read_text())["image"]["digest"]
    assert baked == json.loads((pushed / "bake.json").read_text())["image"]["digest"]
    assert list((work / "fresh-cache").rglob(".part.*")) == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("NameResolutionError(\"Failed to resolve 'regisrty.example' ([Errno -2] Name or service not known)\")", "cannot resolve"),
        ("Failed to establish a new connection: [Errno 111] Connection refused", "connection refused: nothing listens there"),
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate", "not trusted"),
        ("something else", "ConnectionError"),
    ],
)
def test_a_failed_connection_says_what_a_user_can_act_on(text: str, said: str) -> None:
    import requests

    from conda_envkit.network import connection_failure

    assert said in connection_failure(requests.ConnectionError(text))
