"""Registry credentials are scoped per host and never sent in clear (issue 14 items 7 and 8):
hostile registries and token servers on 127.0.0.1 log every header they receive."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conda_envkit.oci.registry import RegistryClient, RegistryError
from tests.conftest import Registry
from tests.hostile.conftest import (
    LoggingServer,
    basic_challenge,
    empty_answer,
    forwards_to,
    locked_workspace,
    own_token_realm,
    run_cli,
    sends_elsewhere,
)

PASSWORD = "reg-Pa55-canary-93ac"
ENV = {"ENVKIT_REGISTRY_USER": "pusher", "ENVKIT_REGISTRY_PASSWORD": PASSWORD}


@pytest.fixture
def basic_registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = LoggingServer(tmp_path, responder=basic_challenge)
    yield server
    server.close()


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_environment_credentials_never_go_to_a_base_images_registry(
    tmp_path: Path, basic_registry: LoggingServer, hostile_channel: Path, command: str
) -> None:
    ref = f"{basic_registry.host}/library/base:1"
    args = ["inspect", ref, "--insecure"] if command == "inspect" else ["verify", "--image", ref, "--insecure"]
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    result = run_cli(*args, cwd=ws.root, env={**ENV, "DOCKER_CONFIG": str(tmp_path / "no-docker")})
    assert result.returncode == 2
    assert basic_registry.log, "the registry was asked"
    assert "Authorization" not in basic_registry.text()
    assert PASSWORD not in result.output


def test_docker_config_credentials_go_to_their_own_host_only(tmp_path: Path, basic_registry: LoggingServer) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(b"other:other-secret").decode()
    (docker / "config.json").write_text(json.dumps({"auths": {"registry.example.org": {"auth": auth}}}))
    result = run_cli("inspect", f"{basic_registry.host}/library/base:1", "--insecure", cwd=tmp_path, env={"DOCKER_CONFIG": str(docker)})
    assert result.returncode == 2 and "authentication required" in result.stderr
    assert "Authorization" not in basic_registry.text()
    # ... and for its own host they are sent.
    own = base64.b64encode(b"mine:mine-secret").decode()
    (docker / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {"auth": own}}}))
    run_cli("inspect", f"{basic_registry.host}/library/base:1", "--insecure", cwd=tmp_path, env={"DOCKER_CONFIG": str(docker)})
    assert f"Authorization: Basic {own}" in basic_registry.text()


def test_password_is_not_sent_to_a_plain_http_token_realm(
    tmp_path: Path, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    realm = LoggingServer(tmp_path / "realm")

    def bearer(handler) -> bool:  # type: ignore[no-untyped-def]
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", f'Bearer realm="{realm.url}/token",service="hostile"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True

    registry = LoggingServer(tmp_path, tls=tls_cert, responder=bearer)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_cert[0]))
    try:
        client = RegistryClient(registry.host, credentials=("pusher", PASSWORD), retries=0)
        with pytest.raises(RegistryError):
            client.get_manifest("library/base", "1")
    finally:
        registry.close()
        realm.close()
    assert realm.log, "the token server was asked (anonymously)"
    assert "Authorization" not in realm.text()


def test_basic_credentials_do_not_follow_an_upload_location_to_another_host(tmp_path: Path) -> None:
    elsewhere = LoggingServer(tmp_path / "elsewhere", responder=lambda h: empty_answer(h, 201))
    registry = LoggingServer(tmp_path, responder=sends_elsewhere(202, lambda h: f"http://localhost:{elsewhere.port}/upload/1"))
    try:
        client = RegistryClient(registry.host, insecure=True, credentials=("pusher", PASSWORD), retries=0)
        client.put_blob("library/app", b"layer bytes")
    finally:
        registry.close()
        elsewhere.close()
    assert "Authorization: Basic" in registry.text()
    assert elsewhere.log and "Authorization" not in elsewhere.text()


def test_basic_credentials_do_not_go_to_the_token_realm_of_an_upload_locations_host(tmp_path: Path) -> None:
    # From a hostile trial: the Location's host answered 401 with a bearer challenge naming a realm of its own, and the
    # push login went there (to get a token for that host).
    elsewhere = LoggingServer(tmp_path / "elsewhere", responder=own_token_realm)
    registry = LoggingServer(tmp_path, responder=sends_elsewhere(202, lambda h: f"http://127.0.0.1:{elsewhere.port}/upload/1"))
    try:
        client = RegistryClient(registry.host, insecure=True, credentials=("pusher", PASSWORD), retries=0)
        with pytest.raises(RegistryError) as refused:
            client.put_blob("library/app", b"layer bytes")
    finally:
        registry.close()
        elsewhere.close()
    assert "Authorization: Basic" in registry.text()
    assert elsewhere.log, "the Location's host was asked"
    assert "Authorization" not in elsewhere.text()
    assert not [line for line in elsewhere.log if line.startswith("GET /token")]  # (no token asked for, not even anonymously)
    assert f"{elsewhere.host}, where the registry sent it, asks for a login (HTTP 401)" in refused.value.message
    assert PASSWORD not in refused.value.message + refused.value.hint


def test_a_login_from_auth_json_does_not_go_to_the_token_realm_of_a_redirect_target(tmp_path: Path) -> None:
    # The same on the read path: a registry open to reads redirects a manifest to another host (as to a CDN), which asks
    # for a bearer token from its own realm. The registry's login (auth.json, as `podman login` writes it) stays home.
    secret = "authjson-Pa55-canary-51d2"
    elsewhere = LoggingServer(tmp_path / "elsewhere", responder=own_token_realm)
    registry = LoggingServer(tmp_path, responder=lambda h: empty_answer(h, 307, f"{elsewhere.url}{h.path}"))
    auth_file = tmp_path / "auth.json"
    login = base64.b64encode(f"reader:{secret}".encode()).decode()
    auth_file.write_text(json.dumps({"auths": {registry.host: {"auth": login}}}))
    try:
        result = run_cli("inspect", f"{registry.host}/team/app:1", "--insecure", cwd=tmp_path, env={"REGISTRY_AUTH_FILE": str(auth_file)})
    finally:
        registry.close()
        elsewhere.close()
    assert result.returncode == 2, result.output
    assert elsewhere.log, "the redirect was followed"
    assert login not in elsewhere.text() and "Authorization" not in elsewhere.text()
    assert not [line for line in elsewhere.log if line.startswith("GET /token")]
    assert f"{elsewhere.host}, where the registry sent it, asks for a login" in result.stderr, result.stderr
    assert secret not in result.output


def test_a_netrc_login_for_the_registrys_host_is_never_sent_in_place_of_the_registrys(
    tmp_path: Path, hostile_channel: Path, auth_registry: Registry
) -> None:
    # requests reads ~/.netrc for a host no Authorization was set for, and replaced envkit's with it: a netrc entry for
    # 127.0.0.1 (kept for a pip index there) went to the registry, and the push with the right login failed.
    netrc_secret = "netrc-Pa55-canary-0b7e"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1\n  login indexuser\n  password {netrc_secret}\n")
    (home / ".netrc").chmod(0o600)
    proxy = LoggingServer(tmp_path / "proxy", responder=forwards_to(auth_registry.host))
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    env = {"ENVKIT_REGISTRY_USER": "envkit", "ENVKIT_REGISTRY_PASSWORD": "s3cret-Pa55", "HOME": str(home)}
    try:
        result = ws.envkit("bake", "-q", "-p", "linux-64", "--push", f"{proxy.host}/team/app", "--insecure", env=env)
    finally:
        proxy.close()
    netrc_login = base64.b64encode(f"indexuser:{netrc_secret}".encode()).decode()
    assert netrc_login not in proxy.text()
    assert "Authorization: Basic " + base64.b64encode(b"envkit:s3cret-Pa55").decode() in proxy.text()
    assert result.returncode == 0, result.output
    assert netrc_secret not in result.output


@pytest.mark.parametrize(
    "registry,insecure,url,allowed",
    [
        ("registry.example.org", True, "http://registry.example.org/v2/", False),  # plain HTTP off loopback
        ("registry.example.org", False, "https://registry.example.org/v2/", True),
        ("registry.example.org", False, "https://evil.example.org/v2/", False),
        ("registry.example.org", False, "https://registry.example.org.evil.example/v2/", False),
        ("127.0.0.1:5000", True, "http://127.0.0.1:5000/v2/", True),
        ("127.0.0.1:5000", True, "http://127.0.0.1:5001/v2/", False),
        ("127.0.0.1:5000", False, "http://127.0.0.1:5000/v2/", False),  # a downgrade the caller did not ask for
    ],
)
def test_credentials_only_for_their_host_over_tls(registry: str, insecure: bool, url: str, allowed: bool) -> None:
    client = RegistryClient(registry, insecure=insecure, credentials=("u", PASSWORD))
    client._basic = True
    assert bool(client._auth_header("repository:x:pull", url)) is allowed


def test_credential_helper_is_asked_for_its_own_host_only(tmp_path: Path, basic_registry: LoggingServer) -> None:
    # The docker credential-helper protocol, as skopeo and crane use it: `get`, host on stdin.
    bin_dir, docker = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    docker.mkdir()
    log = tmp_path / "helper.log"
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(
        '#!/bin/sh\nread host\necho "$1 $host" >> ' + str(log) + '\nprintf \'{"Username": "helper-user", "Secret": "helper-secret"}\'\n'
    )
    helper.chmod(0o755)
    (docker / "config.json").write_text(json.dumps({"credHelpers": {basic_registry.host: "fake", "other.example": "fake"}}))
    import os

    env = {"DOCKER_CONFIG": str(docker), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run_cli("inspect", f"{basic_registry.host}/library/base:1", "--insecure", cwd=tmp_path, env=env)
    assert log.read_text() == f"get {basic_registry.host}\n"
    assert "Authorization: Basic " + base64.b64encode(b"helper-user:helper-secret").decode() in basic_registry.text()


MALFORMED_DOCKER_CONFIGS = {
    "a-list": (b"[1]", "docker config is a JSON list, not an object"),
    "not-json": (b"{auths", "docker config is not JSON"),
    "auths-a-list": (b'{"auths": [1]}', "`auths` is not a mapping"),
    "entry-a-string": (b'{"auths": {"HOST": "x"}}', "auths.HOST is not a mapping"),
    "auth-not-base64": (b'{"auths": {"HOST": {"auth": "!!!"}}}', "auths.HOST.auth is not base64"),
    "auth-not-utf8": (b'{"auths": {"HOST": {"auth": "/w=="}}}', "auths.HOST.auth is not base64 of UTF-8"),
    "file-not-utf8": (b'{"auths": {"x": {"auth": "caf\xe9"}}}', "not UTF-8"),
    "dev-zero": (None, "docker config is not a regular file or a pipe"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_DOCKER_CONFIGS))
def test_a_malformed_docker_config_is_an_error_naming_it(tmp_path: Path, basic_registry: LoggingServer, case: str) -> None:
    # ~/.docker/config.json is read like any input: a traceback, or (for /dev/zero) all the memory, before.
    content, expected = MALFORMED_DOCKER_CONFIGS[case]
    docker = tmp_path / "docker"
    docker.mkdir()
    config = docker / "config.json"
    if content is None:
        config.symlink_to("/dev/zero")
    else:
        config.write_bytes(content.replace(b"HOST", basic_registry.host.encode()))
    result = run_cli("inspect", f"{basic_registry.host}/library/base:1", "--insecure", cwd=tmp_path, env={"DOCKER_CONFIG": str(docker)})
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.stderr
    assert f"error: {config}" in result.stderr and expected.replace("HOST", basic_registry.host) in result.stderr, result.stderr
