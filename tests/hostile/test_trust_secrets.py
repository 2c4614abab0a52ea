"""Secrets from the environment reach only their own host, in a credential position, and are
never printed or stored (issue 14 items 5 and 6). A canary variable and a server that logs
every request line and header prove it."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import pytest

from conda_envkit.errors import EnvkitError
from conda_envkit.redact import redact
from tests.conftest import MlflowServer, run_envkit
from tests.hostile.conftest import LoggingServer, Workspace, assert_refused, locked_workspace, real_locked_workspace, run_cli, write_env

CANARY = "canary-5ecret-VALUE-7f3a"
ENV = {"ENVKIT_CANARY": CANARY, "ENVKIT_TOKEN_CANARY": CANARY + "-token"}


def _served(tmp_path: Path, channel: Path, server: LoggingServer, package_url: str | None = None) -> Workspace:
    """A lock of `honest` whose channel is the logging server (and whose package URL may be crafted)."""
    ws = locked_workspace(tmp_path / "work", channel, ["honest"])
    base = f"{server.url}/ch"

    def edit(document: dict) -> None:
        document["metadata"]["channels"] = [{"url": base, "used_env_vars": []}]
        entry = document["package"][0]
        entry["url"] = (package_url or "{base}/noarch/honest-1.0-0.conda").format(base=base, host=server.host, port=server.port)

    ws.rewrite(edit)
    return ws


CRAFTED_URLS = {
    "path": "{base}/${{ENVKIT_CANARY}}/noarch/honest-1.0-0.conda",
    "host": "http://${{ENVKIT_CANARY}}.127.0.0.1.nip.io:{port}/ch/noarch/honest-1.0-0.conda",
    "query": "{base}/noarch/honest-1.0-0.conda?leak=${{ENVKIT_CANARY}}",
    "fragment": "{base}/noarch/honest-1.0-0.conda#${{ENVKIT_CANARY}}",
    "percent-encoded": "{base}/$%7BENVKIT_CANARY%7D/noarch/honest-1.0-0.conda",
    "userinfo-other-host": "http://u:${{ENVKIT_CANARY}}@localhost:{port}/ch/noarch/honest-1.0-0.conda",
    "token-other-host": "http://localhost:{port}/t/${{ENVKIT_TOKEN_CANARY}}/ch/noarch/honest-1.0-0.conda",
    "token-embedded": "http://{host}/t/x${{ENVKIT_TOKEN_CANARY}}/ch/noarch/honest-1.0-0.conda",
    "user-embedded": "http://a${{ENVKIT_CANARY}}b@{host}/ch/noarch/honest-1.0-0.conda",
}


@pytest.mark.parametrize("case", sorted(CRAFTED_URLS))
def test_variable_outside_a_credential_position_of_the_locks_hosts_is_refused(
    tmp_path: Path, hostile_channel: Path, logging_server: LoggingServer, case: str
) -> None:
    ws = _served(tmp_path, hostile_channel, logging_server, CRAFTED_URLS[case])
    result = ws.install(env=ENV)
    assert_refused(result, "honest")
    assert CANARY not in result.output
    assert logging_server.log == []  # nothing was sent at all
    assert not (ws.root / "env").exists()


def test_credentials_for_the_locks_own_channel_are_expanded_there_only(
    tmp_path: Path, hostile_channel: Path, logging_server: LoggingServer
) -> None:
    ws = _served(tmp_path, hostile_channel, logging_server, "http://envkit:${{ENVKIT_CANARY}}@{host}/ch/noarch/honest-1.0-0.conda")
    # The lock names this channel (a pull request may edit it to any host): without a binding set outside the
    # repository, the secret goes nowhere.
    unbound = ws.install(env=ENV)
    assert_refused(unbound, "ENVKIT_CREDENTIAL_HOSTS does not bind")
    assert logging_server.log == []
    assert ws.install(env={**ENV, "ENVKIT_CREDENTIAL_HOSTS": f"ENVKIT_CANARY={logging_server.host}"}).returncode == 0
    expected = "Basic " + base64.b64encode(f"envkit:{CANARY}".encode()).decode()
    assert expected in logging_server.text()
    # Nothing of it was written: the lock copy, conda-meta and the cache keep the placeholder or nothing.
    for path in [*(ws.root / "env").rglob("*"), *ws.cache.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert CANARY.encode() not in path.read_bytes(), path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_error_does_not_print_the_token(tmp_path: Path, hostile_channel: Path) -> None:
    # requests puts the URL (with the /t/<token>/ segment) into its exception text.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    port = _closed_port()

    def edit(document: dict) -> None:
        document["metadata"]["channels"] = [{"url": f"http://127.0.0.1:{port}/t/${{ENVKIT_TOKEN_CANARY}}/ch", "used_env_vars": []}]
        document["package"][0]["url"] = f"http://127.0.0.1:{port}/t/${{ENVKIT_TOKEN_CANARY}}/ch/noarch/honest-1.0-0.conda"

    ws.rewrite(edit)
    result = ws.install(env={**ENV, "ENVKIT_CREDENTIAL_HOSTS": f"ENVKIT_TOKEN_CANARY=127.0.0.1:{port}"})
    assert_refused(result, "download failed")
    assert CANARY not in result.output


def test_solve_error_does_not_print_a_channels_literal_password(tmp_path: Path) -> None:
    port = _closed_port()
    write_env(tmp_path, f"channels: ['http://user:{CANARY}@127.0.0.1:{port}/ch']\nplatforms: [linux-64]\ndependencies: [honest]\n")
    result = run_cli("lock", "-q", cwd=tmp_path, env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2
    assert CANARY not in result.output


@pytest.mark.parametrize(
    "dependency",
    [
        f"http://user:{CANARY}@127.0.0.1:9/other::honest",  # `chan::pkg` quotes the channel it names, login and all
        f"http://127.0.0.1:9/{ENV['ENVKIT_TOKEN_CANARY']}::honest",  # and a secret variable's value, where it stands
    ],
    ids=["login-in-a-url", "secret-variable-value"],
)
@pytest.mark.parametrize("through_click", [False, True], ids=["plain", "click"])
def test_a_lock_error_printed_as_json_carries_no_credential(
    tmp_path: Path, hostile_channel: Path, dependency: str, through_click: bool
) -> None:
    # `lock --json` prints its error on stdout too, for a CI script to parse (and a CI log to keep): redacted as stderr is.
    write_env(tmp_path, f"channels: ['{hostile_channel.as_uri()}']\nplatforms: [linux-64]\ndependencies:\n  - '{dependency}'\n")
    group = ("--timeout", "300") if through_click else ()
    result = run_envkit(*group, "lock", "--json", cwd=tmp_path, env=ENV)
    assert result.returncode == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert "environment.yml:4" in error["message"] and "***" in error["message"], error
    assert CANARY not in result.stdout and CANARY not in result.stderr


def test_repodata_cache_lives_under_envkit_cache_dir(tmp_path: Path, hostile_channel: Path, logging_server: LoggingServer) -> None:
    home = tmp_path / "home"
    home.mkdir()
    write_env(tmp_path / "w", f"channels: ['{logging_server.url}/ch']\nplatforms: [linux-64]\ndependencies: [honest]\n")
    env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(home), "XDG_CACHE_HOME": ""}
    result = run_cli("lock", "-q", cwd=tmp_path / "w", env=env)
    assert result.returncode == 0, result.output
    assert not list(home.rglob("*"))
    assert list((tmp_path / "cache" / "repodata").rglob("*.json"))


@pytest.mark.parametrize(
    "text,secret",
    [
        ("GET https://user:hunter22@host/x failed", "hunter22"),
        ("https://conda.example/t/tk-123456/ch/noarch failed", "tk-123456"),
        ("url https://h/x?token=abcdef123&y=1", "abcdef123"),
        ("mlflow at http://admin:pa55word@127.0.0.1:5000: refused", "pa55word"),
        (f"server said: bad credential {CANARY}", CANARY),
    ],
)
def test_one_redaction_for_every_error(text: str, secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_TOKEN", CANARY)
    assert secret not in redact(text)
    assert secret not in str(EnvkitError(text, hint=text))


def test_a_login_before_a_registry_is_masked_and_an_email_address_is_not() -> None:
    # `--push bob:$TOKEN@registry/team/app` (no scheme: an image reference) was printed whole: only a login after a
    # scheme was masked. An e-mail address (no `:` before its `@`, no `/` after its host) is not a login.
    for text, shown in [
        ("x bob:pw@127.0.0.1:5000/team/app", "x ***@127.0.0.1:5000/team/app"),
        ("reference 'bob:Hunter2-tok@registry.example.org/team/app:v1'", "reference '***@registry.example.org/team/app:v1'"),
        ("push to bob:pw@[::1]:5000/team/app failed", "push to ***@[::1]:5000/team/app failed"),
        ("https://u:p@h/x", "https://***@h/x"),
        ("mail user@example.com about it", "mail user@example.com about it"),
        ("a@b.com/x", "a@b.com/x"),
        ("${REG_USER}:${REG_PASSWORD}@registry.example.org/team/app", "${REG_USER}:${REG_PASSWORD}@registry.example.org/team/app"),
    ]:
        assert redact(text) == shown, text


def test_a_login_in_an_image_reference_is_refused_and_never_printed() -> None:
    from conda_envkit.oci.blobs import OciError
    from conda_envkit.oci.reference import parse_image_ref

    for text in (f"bob:{CANARY}@127.0.0.1:5000/team/app", f"docker://bob:{CANARY}@registry.example.org/team/app:v1"):
        with pytest.raises(OciError) as refused:
            parse_image_ref(text)
        assert "it holds a login before the registry" in refused.value.message
        assert CANARY not in refused.value.message + refused.value.hint
        assert "ENVKIT_REGISTRY_USER" in refused.value.hint
    assert parse_image_ref("registry.example.org/team/app@sha256:" + "a" * 64).digest == "sha256:" + "a" * 64  # (a digest is no login)


@pytest.mark.parametrize("option", ["bake --push", "bake --cache-to", "inspect"])
def test_a_login_in_a_reference_on_the_command_line_is_never_printed(tmp_path: Path, hostile_channel: Path, option: str) -> None:
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    ref = f"bob:{CANARY}@127.0.0.1:{_closed_port()}/team/app"
    args = {
        "bake --push": ("bake", "-q", "-p", "linux-64", "--push", ref),
        "bake --cache-to": ("bake", "-q", "-p", "linux-64", "--oci", "image", "--cache-to", ref),
        "inspect": ("inspect", f"{ref}:v1"),
    }[option]
    result = ws.envkit(*args, "--insecure")
    assert result.returncode == 2, result.output
    assert "holds a login before the registry" in result.stderr, result.stderr
    assert CANARY not in result.output


def test_placeholders_are_not_redacted() -> None:
    text = "https://${USER}:${PASS}@host/t/${TOKEN}/ch"
    assert redact(text) == text


def test_locking_with_a_token_channel_leaves_no_secret_in_lock_or_cache(tmp_path: Path, hostile_channel: Path) -> None:
    import shutil

    root = tmp_path / "served"
    shutil.copytree(hostile_channel, root / "t" / (CANARY + "-token") / "ch")
    server = LoggingServer(root)
    try:
        write_env(
            tmp_path / "w",
            f"channels: ['http://u:${{ENVKIT_CANARY}}@{server.host}/t/${{ENVKIT_TOKEN_CANARY}}/ch']\n"
            "platforms: [linux-64]\ndependencies: [honest]\n",
        )
        home = tmp_path / "home"
        bound = {"ENVKIT_CREDENTIAL_HOSTS": f"ENVKIT_CANARY={server.host},ENVKIT_TOKEN_CANARY={server.host}"}
        env = {"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(home), "XDG_CACHE_HOME": "", **ENV, **bound}
        result = run_cli("lock", "-q", cwd=tmp_path / "w", env=env)
    finally:
        server.close()
    assert result.returncode == 0, result.output
    for path in [tmp_path / "w" / "conda-lock.yml", *(tmp_path / "cache").rglob("*"), *home.rglob("*")]:
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_mlflow_error_does_not_print_the_tracking_uri_password(tmp_path: Path, hostile_channel: Path) -> None:
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    uri = f"http://admin:{CANARY}@127.0.0.1:{_closed_port()}"
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    result = ws.envkit("export", "--lockfile", ws.lock, "--to", "mlflow", "--tracking-uri", uri, "--experiment", "x", env=env)
    assert result.returncode == 2, result.output
    assert CANARY not in result.output


def test_what_mlflow_prints_does_not_show_the_tracking_uri_password(
    tmp_path: Path, hostile_channel: Path, mlflow_server: MlflowServer
) -> None:
    # MLflow's own "View run ... at: URL" (routed to stderr) repeats a tracking URI's `user:password@` into the CI log.
    ws = locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    uri = mlflow_server.uri.replace("http://", f"http://alice:{CANARY}@")
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    args = ("export", "--lockfile", ws.lock, "--to", "mlflow", "--experiment", f"creds-{tmp_path.name}")
    for result in (
        ws.envkit(*args, "--tracking-uri", uri, env=env),
        ws.envkit(*args, env={**env, "MLFLOW_TRACKING_URI": uri}),
    ):
        assert result.returncode == 0, result.output
        assert "View run envkit-" in result.stderr, result.stderr  # (what MLflow prints is there, redacted)
        assert CANARY not in result.output


@pytest.mark.parametrize(
    "channel",
    [
        "{url}/${{ENVKIT_CANARY}}/ch",
        "{url}/ch?k=${{ENVKIT_CANARY}}",
        "http://${{ENVKIT_CANARY}}.localhost:{port}/ch",
    ],
)
def test_spec_channel_variable_outside_a_credential_position_is_refused(
    tmp_path: Path, logging_server: LoggingServer, channel: str
) -> None:
    written = channel.format(url=logging_server.url, port=logging_server.port)
    write_env(tmp_path / "w", f"channels: ['{written}']\nplatforms: [linux-64]\ndependencies: [honest]\n")
    result = run_cli("lock", "-q", cwd=tmp_path / "w", env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), **ENV})
    assert_refused(result, "credential position")
    assert CANARY not in result.output and logging_server.log == []


def test_a_backslash_cannot_send_a_bound_secret_to_another_host(tmp_path: Path, logging_server: LoggingServer) -> None:
    # From a hostile trial: urlsplit ends a host at "/", the HTTP clients at "\\" too: `u:${T}@evil\\@good` was
    # judged for good (bound) and sent to evil. Such a URL is refused, at lock time and in a lock.
    written = f"http://${{ENVKIT_CANARY}}:x@127.0.0.2:{logging_server.port}\\@{logging_server.host}/ch"
    write_env(tmp_path / "w", f"channels: ['{written}']\nplatforms: [linux-64]\ndependencies: [honest]\n")
    bound = {"ENVKIT_CREDENTIAL_HOSTS": f"ENVKIT_CANARY={logging_server.host}"}
    result = run_cli("lock", "-q", cwd=tmp_path / "w", env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), **ENV, **bound})
    assert_refused(result, "holds a backslash")
    assert CANARY not in result.output and logging_server.log == []


def test_spec_pip_index_variable_outside_a_credential_position_is_refused(
    tmp_path: Path, hostile_channel: Path, logging_server: LoggingServer
) -> None:
    write_env(
        tmp_path / "w",
        f"channels: ['{hostile_channel}']\nplatforms: [linux-64]\ndependencies: [python, {{pip: "
        f"['--index-url {logging_server.url}/${{ENVKIT_CANARY}}/simple', 'anything']}}]\n",
    )
    result = run_cli("lock", "-q", cwd=tmp_path / "w", env={"ENVKIT_CACHE_DIR": str(tmp_path / "cache"), **ENV})
    assert result.returncode == 2, result.output
    assert "credential position" in result.stderr
    assert CANARY not in result.output and logging_server.log == []


def test_wheel_credentials_go_only_to_their_index_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """An index's `${VAR}` credentials go with a wheel download only to the index's scheme, host and port: a lock
    naming the same host over plain http (or another port) must not get the password sent in clear."""
    from conda_envkit.install import pip_index_auth

    monkeypatch.setenv("ENVKIT_CANARY", CANARY)
    monkeypatch.setenv("ENVKIT_CREDENTIAL_HOSTS", "ENVKIT_CANARY=pypi.corp.example")
    indexes = ("https://ci:${ENVKIT_CANARY}@pypi.corp.example/simple", "http://local:pw@127.0.0.1:8080/simple")
    assert pip_index_auth("https://pypi.corp.example/files/x-1.0-py3-none-any.whl", indexes) == ("ci", CANARY)
    assert pip_index_auth("https://PyPI.corp.example:443/files/x-1.0-py3-none-any.whl", indexes) == ("ci", CANARY)
    assert pip_index_auth("http://pypi.corp.example/files/x-1.0-py3-none-any.whl", indexes) is None
    assert pip_index_auth("https://pypi.corp.example:8443/files/x-1.0-py3-none-any.whl", indexes) is None
    assert pip_index_auth("https://files.example/x-1.0-py3-none-any.whl", indexes) is None
    assert pip_index_auth("http://127.0.0.1:8080/files/x-1.0-py3-none-any.whl", indexes) == ("local", "pw")
    assert pip_index_auth("https://127.0.0.1:8080/files/x-1.0-py3-none-any.whl", indexes) is None


def test_a_secret_with_url_characters_is_percent_encoded_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    # From a hostile trial: a base64 token's "/" broke the URL (InvalidURL, and the error printed the secret whole),
    # "#" or "?" likewise, and "%41" was sent decoded (the wrong password).
    from urllib.parse import unquote, urlsplit

    from conda_envkit.channels import expand_credentials

    secret = CANARY + "/Ab+c==#f?q@x%41"
    monkeypatch.setenv("DEPLOY_KEY_VALUE", secret)  # (a name that does not look secret: bound, so it is one)
    monkeypatch.setenv("ENVKIT_CREDENTIAL_HOSTS", "DEPLOY_KEY_VALUE=conda.example.com")
    url = expand_credentials("https://u:${DEPLOY_KEY_VALUE}@conda.example.com/t/${DEPLOY_KEY_VALUE}/ch/x.conda", None, "package")
    parts = urlsplit(url)
    assert parts.hostname == "conda.example.com" and unquote(parts.password or "") == secret
    assert unquote(parts.path.split("/")[2]) == secret
    assert CANARY not in redact(f"error: {url} failed, also {secret}")


@pytest.mark.parametrize("name", ["SIGNING_KEY", "DEPLOY_KEY", "SSH_KEY", "gpg_key"])
def test_a_variable_named_like_a_key_is_a_secret(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/security.md says `*_KEY`: the pattern had API_KEY and ACCESS_KEY only.
    monkeypatch.setenv(name, "sk-live-0123456789abcdef")
    assert "sk-live-0123456789abcdef" not in redact("directory /w/sk-live-0123456789abcdef does not exist")


@pytest.mark.parametrize(
    "spec",
    [
        "channels: ['./${SIGNING_KEY}']\nplatforms: [linux-64]\ndependencies: [honest]\n",
        "channels: ['/srv/${SIGNING_KEY}/ch']\nplatforms: [linux-64]\ndependencies: [honest]\n",
    ],
)
def test_a_variable_in_a_local_channel_path_is_refused_and_never_printed(tmp_path: Path, spec: str) -> None:
    # A local path's variable printed its value in "directory ... does not exist": any CI secret, by name.
    write_env(tmp_path, spec)
    result = run_cli("lock", cwd=tmp_path, env={"SIGNING_CANARY": "x", "SIGNING_KEY": "sk-live-0123456789abcdef"})
    assert result.returncode == 2 and "a local path holds a ${...} variable" in result.stderr, result.output
    assert "sk-live-0123456789abcdef" not in result.output


def test_a_variable_in_a_local_find_links_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # uv's error printed the expanded path; a URL's credentials stay variables (expand_credentials judges those).
    from conda_envkit.pip_lock import FindLinks, PipLockError

    monkeypatch.setenv("SIGNING_KEY", "sk-live-0123456789abcdef")
    with pytest.raises(PipLockError, match=r"environment.yml:8: --find-links ./\$\{SIGNING_KEY\}: a local path holds") as refused:
        FindLinks("./${SIGNING_KEY}", "environment.yml:8", Path(".")).for_uv()
    assert "sk-live" not in str(refused.value) + refused.value.hint


def test_a_file_url_holds_no_variable(tmp_path: Path) -> None:
    # `file:///t/${VAR}/` passed as a token position, its empty host matching any unbound variable: the value went
    # into a local path the errors print.
    write_env(tmp_path, "channels: ['file:///t/${SIGNING_KEY}/chan']\nplatforms: [linux-64]\ndependencies: [honest]\n")
    result = run_cli("lock", cwd=tmp_path, env={"SIGNING_KEY": "AbC/dEfSECRETPART+gh=="})
    assert result.returncode == 2 and "a file:// URL has no credentials" in result.stderr, result.output
    assert "SECRETPART" not in result.output


def test_a_secret_with_a_slash_is_masked_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # The `/t/<token>/` pattern masked up to the value's first `/` first; the rest no longer matched and was printed.
    monkeypatch.setenv("SIGNING_KEY", "AbC/dEfSECRETPART+gh==")
    assert "SECRETPART" not in redact("failed to open file /t/AbC/dEfSECRETPART+gh==/chan/noarch/repodata.json")


def test_a_stale_locks_channel_credentials_are_not_printed(tmp_path: Path, hostile_channel: Path) -> None:
    # `lock --check` (and bake's stale-lock warning) quoted the locked channel URLs as they are: a conda-lock lock
    # keeps `user:password@` there unless --strip-auth.
    ws = real_locked_workspace(tmp_path / "work", hostile_channel, ["honest"])
    secret = "Tok-SeCrEt-42"

    def edit(document: dict) -> None:
        document["metadata"]["channels"] = [{"url": f"https://ci-bot:{secret}@conda.example.com/private", "used_env_vars": []}]

    ws.rewrite(edit)
    result = ws.envkit("lock", "--check")
    assert result.returncode == 1, result.output
    assert "channels changed: locked ['https://***@conda.example.com/private']" in result.output, result.output
    assert secret not in result.output
    # The real command line: `envkit lock` takes a path of its own there, around click (conda_envkit.entry).
    real = run_envkit("lock", "--check", cwd=ws.root, env={"ENVKIT_CACHE_DIR": str(ws.cache)})
    assert real.returncode == 1 and "https://***@conda.example.com/private" in real.stderr, real.output
    assert secret not in real.output
