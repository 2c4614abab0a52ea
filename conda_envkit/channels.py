"""Channel names to URLs, mirrors, credentials kept out of files, and the repodata gateway."""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

from conda_envkit.cache import repodata_cache_dir
from conda_envkit.errors import EnvkitError
from conda_envkit.inputs import load_yaml, read_input
from conda_envkit.network import is_loopback, network_timeout

if TYPE_CHECKING:  # py-rattler's networking loads only when a gateway is made (a warm bake makes none)
    from rattler import Gateway

DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org/"
CONFIG_ENV_VAR = "ENVKIT_CONFIG"
# Which host each `${VAR}` of a lock or spec may be sent to: `VAR=host[:port]`, comma- or space-separated. Set
# outside the repository (CI settings, a shell profile): a lock or environment.yml from a pull request names its
# own channels, so only this decides where a secret goes.
CREDENTIAL_HOSTS_ENV_VAR = "ENVKIT_CREDENTIAL_HOSTS"
ENV_VAR = _ENV_VAR = re.compile(r"\$\{(\w+)\}")
# anaconda.org style tokens: https://host/t/<token>/channel
_TOKEN_PATH = re.compile(r"/t/[^/]+/")


class ChannelError(EnvkitError):
    """A channel that cannot be named, reached or configured."""


@dataclass(frozen=True)
class ChannelSettings:
    """Where channel names point and which mirrors stand in for them.

    `mirrors` maps a channel URL (or name) to URLs tried instead, like pixi's
    `[mirrors]`; the lock still records the original URL, so it stays portable.
    """

    channel_alias: str = DEFAULT_CHANNEL_ALIAS
    mirrors: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedChannel:
    """A channel as written in the spec, the URL used to reach it, and the URL to record.

    `url` may hold credentials expanded from the environment; `public_url` never does
    (it keeps `${VAR}` placeholders, as conda-lock writes them).
    """

    written: str
    url: str
    public_url: str
    used_env_vars: tuple[str, ...] = ()


def load_settings(
    config_path: Path | None = None,
    channel_alias: str | None = None,
    mirrors: list[str] | None = None,
) -> ChannelSettings:
    """Read settings from a config file (or $ENVKIT_CONFIG), then apply command-line values."""
    path = config_path or (Path(os.environ[CONFIG_ENV_VAR]) if os.environ.get(CONFIG_ENV_VAR) else None)
    data: dict[str, object] = {}
    if path is not None:
        loaded = load_yaml(read_input(path, "config file")) or {}
        if not isinstance(loaded, dict):
            raise ChannelError(f"{path}: expected a mapping", hint="write `channel_alias:` and `mirrors:` keys")
        unknown = set(loaded) - {"channel_alias", "mirrors"}
        if unknown:
            raise ChannelError(f"{path}: unknown keys {sorted(unknown)}", hint="known keys: channel_alias, mirrors")
        data = loaded
    if channel_alias:
        alias = _checked_url(channel_alias, "--channel-alias")
    else:
        alias = _checked_url(str(data.get("channel_alias") or DEFAULT_CHANNEL_ALIAS), f"{path}: channel_alias")
    table: dict[str, tuple[str, ...]] = {}
    raw_mirrors = data.get("mirrors") or {}
    if not isinstance(raw_mirrors, dict):
        raise ChannelError(
            f"{path}: `mirrors` must map a channel to a list of URLs", hint="e.g. mirrors: {conda-forge: [https://mirror/conda-forge]}"
        )
    for key, value in raw_mirrors.items():
        urls = value if isinstance(value, list) else [value]
        table[str(key)] = tuple(_checked_url(str(v), f"{path}: mirrors.{key}") for v in urls)
    for item in mirrors or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ChannelError(
                f"--mirror {item!r}: expected CHANNEL=URL", hint="e.g. --mirror conda-forge=https://mirror.example/conda-forge"
            )
        table[key] = table.get(key, ()) + (_checked_url(value, f"--mirror {item}"),)
    return ChannelSettings(channel_alias=_with_slash(alias), mirrors=table)


def _checked_url(value: str, where: str) -> str:
    """`value` if it is an http(s) URL with a host, or a file:// URL; else a ChannelError naming `where`."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        parts, host = urlsplit(""), None
    scheme = parts.scheme.lower()
    if any(c.isspace() for c in value) or not ((scheme in ("http", "https") and host) or (scheme == "file" and parts.path.startswith("/"))):
        raise ChannelError(
            f"{where}: {value!r} is not an http(s):// or file:// URL", hint="write the full URL, e.g. https://mirror.example/conda-forge"
        )
    return value


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def missing_env_vars(text: str) -> list[str]:
    """The `${VAR}` names in `text` that the environment does not set."""
    return [v for v in dict.fromkeys(_ENV_VAR.findall(text)) if v not in os.environ]


def refuse_variable_in_path(path: str, what: str) -> None:
    """A `${VAR}` in a local path is an error: its value would be part of a path the errors (envkit's, uv's) print,
    and a spec from a pull request could name any secret of the CI's environment that way."""
    if "${" in path:
        raise ChannelError(
            f"{what}: a local path holds a ${{...}} variable",
            hint="write the path itself (relative to the file, or with ~); variables stand only for URL credentials",
        )


def expand_env_vars(text: str) -> str:
    """`text` with every `${VAR}` replaced from the environment (check `missing_env_vars` first)."""
    return _ENV_VAR.sub(lambda m: os.environ[m.group(1)], text)


def _expand_quoted(text: str) -> str:
    """`text` with every `${VAR}` replaced by its value, percent-encoded (a URL's userinfo or path segment)."""
    return _ENV_VAR.sub(lambda m: quote(os.environ[m.group(1)], safe=""), text)


def url_host(url: str) -> str:
    """The lower-case host[:port] of `url`, without credentials."""
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def check_no_backslash(url: str, what: str) -> str:
    """`url` unless it holds a backslash: Python's urlsplit ends the host at `/`, but requests, urllib3 and rattler
    end it at `\\` too, so `https://u:${T}@evil\\@good/` would be judged for good and sent to evil."""
    if "\\" in url:
        said = what if url in what else f"{what}: {url[:200]!r}"
        raise ChannelError(f"{said} holds a backslash", hint="a channel, index or package URL has none")
    return url


def origin(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of `url`, lower case, without credentials or a default port: where credentials may go
    (the same host over plain http is another origin: a password for https must never cross the wire in clear)."""
    check_no_backslash(url, "URL")
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].lower()
    default = {"http": ":80", "https": ":443"}.get(parts.scheme.lower(), "")
    return parts.scheme.lower(), host.removesuffix(default) if default and host.endswith(default) else host


def credential_hosts() -> dict[str, str]:
    """ENVKIT_CREDENTIAL_HOSTS: each variable a URL may carry -> the host[:port] it belongs to (lower case)."""
    bound: dict[str, str] = {}
    for item in re.split(r"[\s,]+", os.environ.get(CREDENTIAL_HOSTS_ENV_VAR, "").strip()):
        name, sep, host = item.partition("=")
        if sep and re.fullmatch(r"\w+", name) and host:
            bound[name] = host.strip().lower()
    return bound


def check_credential_host(variables: list[str], url: str, what: str) -> None:
    """Refuse to send `variables` (named in `url`'s credential position) unless ENVKIT_CREDENTIAL_HOSTS binds each
    to `url`'s host, and over HTTPS (plain HTTP to a loopback host only): a lock or spec from someone else must not
    be able to choose where a CI secret goes."""
    scheme, host = origin(url)
    if variables and (scheme not in ("http", "https") or not host):
        # A file:// URL has no host to bind a credential to, and no credential position: `file:///t/${VAR}/` put any
        # variable into a local path the errors print (an unbound variable matched its empty host).
        raise ChannelError(
            f"{what}: {strip_credentials(url)} holds ${{{variables[0]}}}, and a {scheme}:// URL has no credentials",
            hint="write the URL itself; variables stand only for the credentials of an https:// channel or index",
        )
    bound = credential_hosts()
    default_port = {"http": ":80", "https": ":443"}.get(scheme, ":")
    for name in dict.fromkeys(variables):
        if name not in bound or bound[name].rstrip(".").removesuffix(default_port) != host.rstrip("."):
            now = f" (it binds {name} to {bound[name]})" if name in bound else ""
            raise ChannelError(
                f"{what}: {strip_credentials(url)} asks for ${{{name}}}, which {CREDENTIAL_HOSTS_ENV_VAR} does not bind to {host}{now}",
                hint=f"if {host} is where {name} belongs, export {CREDENTIAL_HOSTS_ENV_VAR}={name}={host} outside the repository "
                "(CI settings, your shell): a lock or environment.yml from someone else must not choose where a secret goes",
            )
    if variables and scheme == "http" and not is_loopback(host):
        raise ChannelError(
            f"{what}: {strip_credentials(url)} would send ${{{variables[0]}}} over plain HTTP",
            hint="use the https:// URL of that channel or index",
        )


def expand_credentials(url: str, allowed_hosts: frozenset[str] | set[str] | None, what: str) -> str:
    """`url` with `${VAR}` expanded only in its credential positions, and only for an allowed host.

    Credential positions are `user:password@` and an anaconda-style `/t/<token>/` first path
    segment; `allowed_hosts` are the hosts of the lock's own channels or pip indexes. A
    `${...}` anywhere else (host, path, query) or for another host is an error naming `what`:
    a lock from someone else must not be able to send an environment variable to a server.
    `allowed_hosts` None: the URL names its own host (a channel or index written in the spec).
    """
    check_no_backslash(url, what)
    if "${" not in url and "$%7B" not in url.replace("%7b", "%7B"):
        return url
    source = "the lock" if allowed_hosts is not None else "the environment file (environment.yml)"
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    token_match = re.match(r"/t/([^/]+)/", parts.path)
    token = token_match.group(1) if token_match else ""
    rest = parts.path[token_match.end() - 1 :] if token_match else parts.path
    elsewhere = "".join((parts.scheme, host, rest, parts.query, parts.fragment))
    if "${" in elsewhere or "$%7B" in elsewhere.replace("%7b", "%7B") or "$" in host:
        raise ChannelError(
            f"{what}: ${{...}} outside a credential position in {strip_credentials(url)}",
            hint="environment variables may only stand for user:password@ or a /t/<token>/ segment; fix " + source,
        )
    if allowed_hosts is not None and host.lower() not in allowed_hosts:
        raise ChannelError(
            f"{what}: {strip_credentials(url)} asks for credentials from the environment, "
            f"but {host} is not one of the lock's channels or indexes",
            hint="credentials are only sent to the hosts the lock names as channels or pip indexes",
        )
    for piece in (*userinfo.split(":", 1), token):
        if "${" in piece and not _ENV_VAR.fullmatch(piece):
            raise ChannelError(f"{what}: a credential must be a literal or a single ${{VAR}}, not {piece!r}", hint="fix " + source)
    missing = missing_env_vars(userinfo + token)
    if missing:
        raise ChannelError(
            f"{what}: {strip_credentials(url)} needs environment variable(s) {', '.join(missing)}",
            hint="export the channel's or index's credentials before installing; they are never stored",
        )
    check_credential_host(_ENV_VAR.findall(userinfo + token), url, what)
    # Each value percent-encoded: a base64 token's `/`, `+` or `=`, a `#`, `?` or `%` in a password stays itself.
    new_path = (f"/t/{_expand_quoted(token)}" + rest) if token_match else parts.path
    netloc = (_expand_quoted(userinfo) + "@" + host) if at else host
    return urlunsplit((parts.scheme, netloc, new_path, parts.query, parts.fragment))


def strip_credentials(url: str) -> str:
    """Remove user:password@ and /t/<token>/ from `url`."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    path = _TOKEN_PATH.sub("/", parts.path)
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def resolve_channel(written: str, settings: ChannelSettings, base_dir: Path) -> ResolvedChannel:
    """Turn a channel as written in environment.yml into the URLs to use and to record."""
    used = tuple(sorted(set(_ENV_VAR.findall(written))))
    missing = sorted(missing_env_vars(written))
    if missing:
        raise ChannelError(
            f"channel {written!r} needs environment variable(s) {', '.join(missing)}",
            hint="export them before locking; they are never written into the lock",
        )
    # A URL's variables stand for credentials only: a spec from a pull request must not be able
    # to put `https://evil.example/${AWS_SECRET_ACCESS_KEY}/` into a request. A local path holds none:
    # `./${SIGNING_KEY}` printed the key's value in "directory ... does not exist".
    if "://" not in written and "${" in written:
        refuse_variable_in_path(written, f"channel {written!r}")
    expanded = expand_credentials(written, None, f"channel {written!r}") if "://" in written else expand_env_vars(written)
    if "://" in written:
        url = expanded.rstrip("/")
        public = written.rstrip("/")
        if not used:
            public = strip_credentials(public)
    elif written.startswith((".", "/", "~")):
        local = (base_dir / Path(expanded).expanduser()).resolve()
        if not local.is_dir():
            raise ChannelError(
                f"channel {written!r}: directory {local} does not exist", hint="build or copy the channel there, or fix the path"
            )
        url = public = local.as_uri()
    else:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*", written):
            raise ChannelError(f"invalid channel name {written!r}", hint="use a name like conda-forge, a URL, or a ./local/path")
        url = settings.channel_alias + expanded
        public = strip_credentials(settings.channel_alias) + written
    return ResolvedChannel(written=written, url=url, public_url=public, used_env_vars=used)


def resolve_channels(channels: tuple[str, ...], settings: ChannelSettings, base_dir: Path) -> tuple[ResolvedChannel, ...]:
    """Resolve every channel of a spec, in priority order."""
    return tuple(resolve_channel(c, settings, base_dir) for c in channels)


def public_package_url(url: str, channels: tuple[ResolvedChannel, ...]) -> str:
    """The URL of a solved package as it may be written to a lock: no credentials."""
    for channel in channels:
        if url.startswith(channel.url + "/"):
            return channel.public_url + url[len(channel.url) :]
    return strip_credentials(url)


def discard_failed_repodata(cache_dir: Path, channel_urls: tuple[str, ...], since_ns: int) -> list[Path]:
    """Delete the repodata cache entries of `channel_urls` written since `since_ns`; return them.

    After a failed fetch py-rattler keeps what it received (a truncated or garbage
    repodata.json of any size); a later run would only fetch it again.
    """
    import json  # only after a failed fetch: `envkit lock` loads json while the solver runs

    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    removed += _discard_partial_downloads(cache_dir, since_ns)
    prefixes = tuple(url.rstrip("/") + "/" for url in channel_urls)
    for info in cache_dir.glob("*.info.json"):
        try:
            if info.stat().st_mtime_ns < since_ns:
                continue
            url = json.loads(info.read_text(encoding="utf-8")).get("url", "")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(url, str) or not url.startswith(prefixes):
            continue
        stem = info.name[: -len(".info.json")]
        for path in (cache_dir / f"{stem}.json", info):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _discard_partial_downloads(cache_dir: Path, since_ns: int, wait: float = 2.0) -> list[Path]:
    """py-rattler's temporary download files (`.tmp*`) begun since `since_ns`, once they stop.

    A cancelled fetch drops its download on py-rattler's own thread, a moment later, and
    that removes its file; one that lingers (the process is about to leave) is removed here,
    once it has stopped growing for a few polls.
    """

    from conda_envkit.repodata_guard import partial_downloads

    def partial() -> dict[Path, int]:
        found = partial_downloads(cache_dir).items()
        return {path: st.st_size for path, st in found if st.st_mtime_ns >= since_ns or st.st_ctime_ns >= since_ns}

    seen, still = partial(), 0
    end = time.monotonic() + wait
    while seen and time.monotonic() < end and still < 3:
        time.sleep(0.05)
        now = partial()
        still = still + 1 if now == seen else 0
        seen = now
    removed: list[Path] = []
    if still < 3:  # still being written: another run's download, not ours
        return removed
    for path in seen:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def make_gateway(settings: ChannelSettings, cache_dir: Path | None = None) -> Gateway:
    """A repodata gateway whose client applies mirrors, stored credentials and retries.

    Its repodata cache is `<cache>/repodata` (not py-rattler's own ~/.cache/rattler).
    """
    from rattler import Client, Gateway
    from rattler.networking import AuthenticationMiddleware, MirrorMiddleware, RetryMiddleware

    cache_dir = cache_dir or repodata_cache_dir()
    mirrors: dict[str, list[str]] = {}
    for key, targets in settings.mirrors.items():
        local = [t for t in targets if t.lower().startswith("file:")]
        if local:  # (rattler's gateway fetches a mirror with its HTTP client: every solve failed "URL scheme is not allowed")
            raise ChannelError(
                f"mirror {key}={local[0]}: repodata cannot be read from a file:// mirror (envkit install and bake can fetch"
                " packages from one; the solver reads mirrors over HTTP)",
                hint="serve the directory over HTTP (e.g. `python -m http.server`) and name that URL, or use the directory"
                " as the channel itself (`channels:`, or `channel_alias: file:///DIR/` for names)",
            )
        source = key if "://" in key else settings.channel_alias + key
        mirrors[_with_slash(source)] = [_with_slash(t) for t in targets]
    mirror = [MirrorMiddleware(mirrors)] if mirrors else []
    # reqwest's timeout bounds each request from connect to the end of the body: the
    # same deadline as every other fetch ($ENVKIT_NETWORK_TIMEOUT).
    timeout = max(1, round(network_timeout()))
    client = Client([*mirror, AuthenticationMiddleware(), RetryMiddleware(max_retries=3)], timeout=timeout)
    return Gateway(cache_dir=cache_dir, client=client)


def channel_secrets(channels: tuple[str, ...], settings: ChannelSettings | None = None) -> list[str]:
    """The credential values channels carry: expanded `${VAR}`s and literal user:password / tokens."""
    secrets = []
    for written in (*channels, *((settings.channel_alias,) if settings else ())):
        secrets += [os.environ[v] for v in _ENV_VAR.findall(written) if os.environ.get(v)]
        parts = urlsplit(written)
        if parts.password:
            secrets.append(parts.password)
        token = re.match(r"/t/([^/]+)/", parts.path or "")
        if token:
            secrets.append(token.group(1))
    return [s for s in secrets if len(s) >= 2 and "${" not in s]


def forget_credentials(cache_dir: Path, secrets: list[str]) -> None:
    """Delete every file of a repodata cache that holds one of `secrets`.

    py-rattler keys its cache by the URL it fetched, credentials included, and writes that URL
    into the cache's metadata; a cache is cheap to refill and must not keep a token.
    """
    needles = [s.encode() for s in secrets]
    if not needles or not cache_dir.is_dir():
        return
    for path in cache_dir.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in needles):
                path.unlink()
        except OSError:
            continue
