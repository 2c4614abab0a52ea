"""Channels over HTTP: mirrors stand in for the recorded URL; credentials never reach the lock."""

from __future__ import annotations

from pathlib import Path

import yaml
from conda_lock.lockfile import parse_conda_lock_file

from conda_envkit.channels import ChannelSettings, resolve_channel, strip_credentials
from tests.conftest import ChannelServer, run_envkit, write_env


def test_mirror_serves_while_lock_keeps_canonical_url(tmp_path: Path, channel_server: ChannelServer) -> None:
    # conda.anaconda.org is unreachable here: every byte must come from the mirror.
    write_env(tmp_path, "channels: [toy]\ndependencies: [numpy, hello]\n")
    result = run_envkit("lock", "--mirror", f"toy={channel_server.url}/toy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lock = (tmp_path / "conda-lock.yml").read_text()
    assert "127.0.0.1" not in lock
    urls = [p["url"] for p in yaml.safe_load(lock)["package"]]
    assert urls and all(u.startswith("https://conda.anaconda.org/toy/") for u in urls)
    assert any(path.startswith("/toy/linux-64/repodata.json") for path in channel_server.requests())


def test_mirror_from_config_file(tmp_path: Path, channel_server: ChannelServer) -> None:
    write_env(tmp_path, "channels: [toy]\ndependencies: [hello]\n")
    (tmp_path / "envkit.yml").write_text(f"channel_alias: https://conda.example.com/\nmirrors:\n  toy: [{channel_server.url}/toy]\n")
    result = run_envkit("lock", cwd=tmp_path, env={"ENVKIT_CONFIG": str(tmp_path / "envkit.yml")})
    assert result.returncode == 0, result.stderr
    parsed = parse_conda_lock_file(tmp_path / "conda-lock.yml")
    assert [c.url for c in parsed.metadata.channels] == ["https://conda.example.com/toy"]


def test_credentials_from_environment_never_written(tmp_path: Path, auth_channel_server: ChannelServer) -> None:
    url = auth_channel_server.url.replace("http://", "http://${CH_USER}:${CH_PASS}@")
    write_env(tmp_path, f"channels: ['{url}/toy']\ndependencies: [numpy]\n")
    host = auth_channel_server.url.removeprefix("http://")
    unbound = run_envkit("lock", cwd=tmp_path, env={"CH_USER": "envkit", "CH_PASS": "s3cret-Pa55"})
    assert unbound.returncode == 2 and f"ENVKIT_CREDENTIAL_HOSTS does not bind to {host}" in unbound.stderr, unbound.output
    bound = {"ENVKIT_CREDENTIAL_HOSTS": f"CH_USER={host},CH_PASS={host}"}  # where these secrets belong: not the spec's say
    denied = run_envkit("lock", cwd=tmp_path, env={"CH_USER": "envkit", "CH_PASS": "wrong", **bound})
    assert denied.returncode == 2 and "cannot read a channel" in denied.stderr

    result = run_envkit("lock", cwd=tmp_path, env={"CH_USER": "envkit", "CH_PASS": "s3cret-Pa55", **bound})
    assert result.returncode == 0, result.stderr
    lock = (tmp_path / "conda-lock.yml").read_text()
    assert "s3cret-Pa55" not in lock
    parsed = parse_conda_lock_file(tmp_path / "conda-lock.yml")
    assert parsed.metadata.channels[0].url == f"{url}/toy"
    assert parsed.metadata.channels[0].used_env_vars == ("CH_PASS", "CH_USER")
    assert all("s3cret" not in p.url for p in parsed.package)

    missing = run_envkit("lock", "--lockfile", "other.yml", cwd=tmp_path, env={"CH_USER": "envkit", **bound})
    assert missing.returncode == 2 and "needs environment variable(s) CH_PASS" in missing.stderr


def test_credentials_in_written_urls_are_stripped() -> None:
    settings = ChannelSettings()
    literal = resolve_channel("https://user:pw@repo.example.com/t/tok-123/private", settings, Path("."))
    assert literal.url == "https://user:pw@repo.example.com/t/tok-123/private"
    assert literal.public_url == "https://repo.example.com/private"
    assert strip_credentials("https://a:b@h.example/t/xyz/c/linux-64/p.conda") == "https://h.example/c/linux-64/p.conda"
    named = resolve_channel("conda-forge", ChannelSettings(channel_alias="https://u:p@mirror.example/"), Path("."))
    assert named.url == "https://u:p@mirror.example/conda-forge"
    assert named.public_url == "https://mirror.example/conda-forge"


def test_a_file_mirror_is_refused_by_lock_before_any_solve(tmp_path: Path, toy_channel: Path) -> None:
    # rattler's gateway fetches a mirror with its HTTP client: a file:// mirror passed the checks, then every platform
    # failed with "URL scheme is not allowed". (install and bake fetch packages from one: tests/hostile/test_robust_network.py.)
    write_env(tmp_path, f"channels: [{toy_channel.as_uri()}]\nplatforms: [linux-64]\ndependencies: [hello]\n")
    result = run_envkit("lock", "--mirror", f"{toy_channel.as_uri()}={toy_channel.as_uri()}", cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "repodata cannot be read from a file:// mirror" in result.stderr and "http.server" in result.stderr
    assert "URL scheme is not allowed" not in result.stderr and not (tmp_path / "conda-lock.yml").exists()
