"""A client for the OCI distribution API: pull and push blobs and manifests.

Auth: anonymous, basic, and bearer tokens (the registry's WWW-Authenticate
challenge). Credentials are scoped per registry host, like skopeo and crane: from
`~/.docker/config.json` (or $DOCKER_CONFIG) for that host, and
$ENVKIT_REGISTRY_USER / $ENVKIT_REGISTRY_PASSWORD only for the push target (the
caller says which client that is). They are sent only to the registry's own host (an
upload Location elsewhere gets none) and never over plain HTTP, except to a loopback
registry the caller asked to reach insecurely. HTTPS with certificate checks always,
unless the caller asks for plain HTTP (`insecure`) for that registry.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from requests.auth import AuthBase

from conda_envkit.network import (
    DOWNLOAD_CAP_ENV_VAR,
    Deadline,
    NetworkError,
    ResponseTooLarge,
    connection_failure,
    is_loopback,
    iter_limited,
    max_download_bytes,
    network_timeout,
    read_limited,
    size_text,
)
from conda_envkit.oci.blobs import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    OciError,
    is_digest,
    json_document,
    sha256_digest,
)
from conda_envkit.thread_pool import Stopped

MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
CHUNK_SIZE = 16 * (1 << 20)
# Token and error responses are small JSON documents; anything bigger is not one.
MAX_SMALL_RESPONSE = 1 << 20
# What is read of an error's body (a blob or manifest request streams it): the registry's message is short.
MAX_ERROR_BODY = 64 << 10
_MAX_ERRORS_SHOWN = 5
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(OciError):
    """A registry that refused, failed or could not be reached."""


class BlobMismatch(RegistryError):
    """A blob that arrived with bytes of another digest than the one asked for."""


class BlobUnknown(RegistryError):
    """A blob the registry does not have (HTTP 404)."""


def auth_files() -> list[tuple[Path, str]]:
    """The files registry logins are in, in the order skopeo and podman read them (containers-auth.json(5)):
    $REGISTRY_AUTH_FILE alone if set, else $XDG_RUNTIME_DIR/containers/auth.json (/run/containers/<uid>/auth.json
    without the variable) and $XDG_CONFIG_HOME/containers/auth.json; then docker's $DOCKER_CONFIG/config.json (~/.docker/config.json)."""
    if os.environ.get("REGISTRY_AUTH_FILE"):
        containers = [Path(os.environ["REGISTRY_AUTH_FILE"])]
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/containers/{os.getuid()}"  # (root's, without the variable)
        config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        containers = [Path(runtime) / ("containers/auth.json" if os.environ.get("XDG_RUNTIME_DIR") else "auth.json")]
        containers.append(Path(config_home) / "containers" / "auth.json")
    docker = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    return [*((path, "containers auth file") for path in containers), (docker, "docker config")]


def docker_config_credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) for `registry` from the first login file (auth_files) that has them: a `docker login`,
    `podman login` or `skopeo login` is used as those tools use it."""
    for path, what in auth_files():
        if os.path.lexists(path):
            found = _file_credentials(path, what, registry)
            if found is not None:
                return found
    return None


def _file_credentials(path: Path, what: str, registry: str) -> tuple[str, str] | None:
    """(user, password) for `registry` from one login file (docker's config.json format).

    The file is read like every input (UTF-8, capped, a regular file or pipe): a config.json
    that is /dev/zero or malformed JSON is an error naming it, not a hang or a traceback.
    """
    from conda_envkit.inputs import read_input

    try:
        config = json.loads(read_input(path, what).text)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{path}: {what} is not JSON ({str(exc)[:200]})", hint="fix or move the file") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: {what} is a JSON {type(config).__name__}, not an object", hint="fix or move the file")
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise RegistryError(f"{path}: `auths` is not a mapping", hint="fix or move the file")
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "registry-1.docker.io":
        keys += ["https://index.docker.io/v1/", "docker.io"]
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: auths.{key} is not a mapping", hint="fix or move the file")
        if entry.get("auth"):
            try:
                user, colon, password = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                colon = ""
            if not colon or not isinstance(entry["auth"], str):  # (docker refuses such a file too)
                raise RegistryError(f"{path}: auths.{key}.auth is not base64 of UTF-8 `user:password`", hint="log in again")
            return user, password
        if entry.get("username"):
            user, password = entry["username"], entry.get("password", "")
            if not isinstance(user, str) or not isinstance(password, str):
                raise RegistryError(f"{path}: auths.{key}: `username` and `password` must be strings", hint="fix or move the file")
            return user, password
    helpers = config.get("credHelpers") or {}
    helper = (helpers.get(registry) if isinstance(helpers, dict) else None) or config.get("credsStore")
    if helper:
        return _credential_helper(str(helper), registry, path)
    return None


def _credential_helper(helper: str, registry: str, config_path: Path) -> tuple[str, str] | None:
    """(user, secret) from `docker-credential-<helper> get` for `registry` (the docker credential-helper protocol)."""
    import shutil
    import subprocess

    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", helper):
        raise RegistryError(f"{config_path}: credential helper name {helper!r} is not a plain name", hint="fix the docker config")
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        raise RegistryError(
            f"{config_path}: credentials for {registry} are in the credential helper {helper!r}, "
            f"but docker-credential-{helper} is not on PATH",
            hint="install the helper, or set ENVKIT_REGISTRY_USER/ENVKIT_REGISTRY_PASSWORD for a push",
        )
    try:
        proc = subprocess.run([binary, "get"], input=registry, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"docker-credential-{helper}: failed for {registry} ({exc})", hint="check the credential helper") from None
    if proc.returncode != 0:
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise RegistryError(f"docker-credential-{helper}: failed for {registry}", hint="check the credential helper") from None
    try:
        answer = json.loads(proc.stdout)
        return str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"docker-credential-{helper}: unreadable answer for {registry}", hint="check the credential helper") from None


def environment_credentials() -> tuple[str, str] | None:
    user = os.environ.get("ENVKIT_REGISTRY_USER")
    return (user, os.environ.get("ENVKIT_REGISTRY_PASSWORD", "")) if user else None


@dataclass
class PushStats:
    """What a push sent: blobs uploaded, skipped (already there) and mounted, and bytes sent."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    moved: dict[str, str] = field(default_factory=dict)  # tag -> the digest it named before this push moved it
    unchecked: dict[str, str] = field(default_factory=dict)  # tag -> why what it named before could not be asked


class _NoNetrc(AuthBase):
    """A session's auth that adds nothing: with it, requests does not look the host up in ~/.netrc."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class _RegistrySession(requests.Session):
    """requests, without ~/.netrc: a registry's login is the one envkit chose for its host (a netrc entry for that
    host, kept for a pip index there, replaced it, and was sent unasked, also where envkit sends none). Proxy
    variables and REQUESTS_CA_BUNDLE are still read."""

    def __init__(self) -> None:
        super().__init__()
        self.auth = _NoNetrc()

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        # A redirect to another host drops the Authorization header (as requests does), and adds no netrc login.
        before, after = response.request.url or "", prepared_request.url or ""
        if "Authorization" in prepared_request.headers and self.should_strip_auth(before, after):
            del prepared_request.headers["Authorization"]


class RegistryClient:
    """One registry host: authenticated requests, blobs and manifests."""

    def __init__(
        self,
        registry: str,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
        retries: int = 4,
        chunk_size: int = CHUNK_SIZE,
        push_target: bool = False,
    ) -> None:
        self.registry = registry
        self.insecure = insecure
        self.base = f"{'http' if insecure else 'https'}://{registry}"
        if credentials is None:
            # The environment's credentials belong to the push target alone, never to a base image's registry.
            credentials = (environment_credentials() if push_target else None) or docker_config_credentials(registry)
        self.push_target = push_target
        self.credentials = credentials
        self.retries = retries
        self.chunk_size = chunk_size
        self.session = _RegistrySession()
        self._tokens: dict[str, str] = {}
        self._basic = False
        self.until: float | None = None  # a time.monotonic() no request may last past (a deadline for many of them)

    def _seconds(self) -> float:
        """Each request's deadline: the network timeout, cut to what is left before `until`."""
        if self.until is None:
            return network_timeout()
        return max(0.001, min(network_timeout(), self.until - time.monotonic()))

    # -- requests, auth and retries -----------------------------------------------------------

    def _may_send_credentials(self, url: str) -> bool:
        """Credentials go to this registry's own host only, and over HTTPS (or to an insecure loopback registry)."""
        parts = urlsplit(url)
        if parts.netloc.lower() != self.registry.lower():
            return False
        return parts.scheme == "https" or (parts.scheme == "http" and self.insecure and is_loopback(parts.hostname or ""))

    def _auth_header(self, scope: str, url: str) -> dict[str, str]:
        if not self._may_send_credentials(url):
            return {}
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if self._basic and self.credentials:
            raw = f"{self.credentials[0]}:{self.credentials[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.credentials:
                raise RegistryError(
                    f"{self.registry}: authentication required",
                    hint="log in (`docker login`, `podman login` or `skopeo login`) or set ENVKIT_REGISTRY_USER/ENVKIT_REGISTRY_PASSWORD"
                    if self.push_target
                    else "log in to it (`docker login`, `podman login` or `skopeo login`): ENVKIT_REGISTRY_* are only for the push target",
                )
            self._basic = True
            return
        if scheme.lower() != "bearer":
            raise RegistryError(f"{self.registry}: unsupported auth scheme {scheme!r}", hint="envkit speaks basic and bearer token auth")
        fields = dict(_CHALLENGE.findall(params))
        realm = fields.get("realm")
        if not realm:
            raise RegistryError(f"{self.registry}: bearer challenge without realm", hint="the registry's auth is misconfigured")
        # One `scope` parameter per scope (a cross-repository mount asks for two).
        query: dict[str, str | list[str]] = {"scope": scope.split()}
        if fields.get("service"):
            query["service"] = fields["service"]
        realm_parts = urlsplit(realm)
        secure_realm = realm_parts.scheme == "https" or (self.insecure and is_loopback(realm_parts.hostname or ""))
        if realm_parts.scheme not in ("http", "https"):
            raise RegistryError(f"{self.registry}: token realm {realm!r} is not an HTTP URL", hint="the registry's auth is misconfigured")
        # Never send the password in clear: over an http:// realm the token is asked for anonymously.
        auth = self.credentials if self.credentials and secure_realm else None
        deadline = Deadline(f"{self.registry}: token server {realm}", self._seconds())
        try:
            with self.session.get(realm, params=query, auth=auth, timeout=deadline.timeouts(), stream=True) as response:
                if response.status_code in (401, 403):
                    raise RegistryError(
                        f"{self.registry}: token server refused the credentials for {scope}", hint="check the user and password"
                    )
                if not response.ok:
                    raise RegistryError(f"{self.registry}: token server answered HTTP {response.status_code}", hint="try again later")
                data = read_limited(response, deadline, MAX_SMALL_RESPONSE)
        except requests.RequestException as exc:
            raise RegistryError(f"{self.registry}: token server {realm} unreachable ({exc})", hint="check the network") from None
        body = json_document(data, f"{self.registry}: token server {realm}", "token response")
        token = body.get("token") or body.get("access_token")
        if not token or not isinstance(token, str):
            raise RegistryError(f"{self.registry}: token server sent no token", hint="the registry's auth is misconfigured")
        self._tokens[scope] = token

    def request(
        self,
        method: str,
        url: str,
        scope: str,
        ok: tuple[int, ...],
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
        what: str = "",
    ) -> requests.Response:
        """Send a request with auth and retries; return the response if its status is in `ok`.

        Retries end at the deadline ($ENVKIT_NETWORK_TIMEOUT) as well as after `retries`.
        Unless `stream`, the body is read here, capped at MAX_SMALL_RESPONSE.
        """
        url = urljoin(self.base, url)
        deadline = Deadline(f"{self.registry}: {what or method + ' ' + url}", self._seconds())
        authenticated = False
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method,
                    url,
                    headers={**(headers or {}), **self._auth_header(scope, url)},
                    data=data,
                    stream=True,
                    timeout=deadline.timeouts(),
                )
                if not stream:
                    # Read now, within the deadline and the cap; `.content` then holds it.
                    response._content = read_limited(response, deadline, MAX_SMALL_RESPONSE)
                    response.close()
            except requests.exceptions.SSLError as exc:
                parts = urlsplit(getattr(exc.request, "url", None) or url)  # (where a redirect led, if it did)
                if f"{parts.scheme}://{parts.netloc}".lower() != self.base.lower():  # (an upload Location, a redirect)
                    raise RegistryError(
                        f"{deadline.what}: the registry sent it to {_shown(parts.scheme + '://' + parts.netloc)}, where TLS"
                        f" failed ({connection_failure(exc)})",
                        hint=f"the registry is reached at {self.base}: its upload Location or redirect is misconfigured",
                    ) from None
                if "WRONG_VERSION_NUMBER" in str(exc):  # the server answered a TLS hello in plain HTTP
                    raise RegistryError(
                        f"{self.registry}: the registry speaks plain HTTP, not HTTPS",
                        hint="pass --insecure for a local test registry (localhost only); a real registry needs TLS",
                    ) from None
                raise RegistryError(
                    f"{self.registry}: TLS verification failed ({connection_failure(exc)})",
                    hint="a registry with a certificate of a private CA: point REQUESTS_CA_BUNDLE at a bundle holding that CA;"
                    " else fix the registry's certificate (--insecure, plain HTTP, is only for local test registries)",
                ) from None
            except requests.TooManyRedirects:
                raise RegistryError(f"{deadline.what}: too many redirects", hint="the registry redirects in a loop") from None
            except requests.RequestException as exc:
                if attempt < self.retries and deadline.can_wait(0.25 * 2**attempt):
                    time.sleep(0.25 * 2**attempt)
                    attempt += 1
                    continue
                raise RegistryError(
                    f"{deadline.what} failed ({connection_failure(exc)}) after {attempt + 1} attempt(s)",
                    hint="is the registry running and reachable?",
                ) from None
            if response.status_code == 401 and urlsplit(response.url).netloc.lower() != self.registry.lower():
                # Where the registry sent the request (an upload Location, a redirect) asks for a login: the registry's
                # is never sent there, nor used to ask that host's token server for a token.
                response.close()
                raise RegistryError(
                    f"{self.registry}: {what or url}: {_shown(urlsplit(response.url).netloc)}, where the registry sent it, asks"
                    " for a login (HTTP 401)",
                    hint="envkit sends a registry's login to that registry's own host only: the registry's storage or"
                    " redirect is misconfigured",
                )
            if response.status_code == 401 and not authenticated:
                authenticated = True
                response.close()
                self._authenticate(response.headers.get("WWW-Authenticate", "Basic"), scope)
                continue
            if response.status_code in ok:
                return response
            if (
                (response.status_code >= 500 or response.status_code == 429)
                and attempt < self.retries
                and deadline.can_wait(0.25 * 2**attempt)
            ):
                response.close()
                time.sleep(0.25 * 2**attempt)
                attempt += 1
                continue
            detail = _error_detail(response, deadline)
            if response.status_code in (401, 403):
                raise RegistryError(
                    f"{self.registry}: {what or url}: access denied (HTTP {response.status_code}){detail}",
                    hint="check the credentials and that they may push/pull this repository",
                )
            raise RegistryError(
                f"{self.registry}: {what or url}: HTTP {response.status_code}{detail}", hint="see the registry's message above"
            )

    # -- blobs ---------------------------------------------------------------------------------

    def _head_blob(self, repository: str, digest: str) -> requests.Response:
        scope = repository_scope(repository, "pull")
        return self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope, (200, 404), what=f"HEAD blob {digest}")

    def check_push(self, repository: str) -> None:
        """Before anything is built for a push: the registry answers, and takes these credentials (or none) for
        pushing to `repository` (a token for its push scope, or basic auth on its API root). A registry may still
        refuse the first write (a token server that grants less than asked): that is the push's own error."""
        self.request("GET", "/v2/", repository_scope(repository, "pull,push"), (200,), what="the registry's API (/v2/)")

    def has_blob(self, repository: str, digest: str) -> bool:
        return self._head_blob(repository, digest).status_code == 200

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size (Content-Length of a HEAD) of a blob in `repository`, or None if it is not there or says none."""
        response = self._head_blob(repository, digest)
        length = response.headers.get("Content-Length", "") if response.status_code == 200 else ""
        return int(length) if length.isdigit() else None

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True if it did."""
        query = urlencode({"mount": digest, "from": source_repository})
        scope = f"{repository_scope(repository, 'pull,push')} {repository_scope(source_repository, 'pull')}"
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/?{query}", scope, (201, 202), what=f"mount blob {digest}")
        if response.status_code == 201:
            return True
        self._cancel(response, scope)
        return False

    def _cancel(self, response: requests.Response, scope: str) -> None:
        location = response.headers.get("Location")
        if location:
            self._cancel_location(location, scope)

    def _cancel_location(self, location: str, scope: str) -> None:
        with contextlib.suppress(RegistryError):  # best effort: the registry expires it anyway
            self.request("DELETE", location, scope, (204, 404, 405), what="cancel upload")

    def upload_blob(self, repository: str, path: Path, digest: str, stop: threading.Event | None = None) -> int:
        """Upload one blob (monolithic when small, in chunks when large); return bytes sent. Once `stop` is set
        (another upload failed, or Ctrl-C), no further chunk is sent."""
        scope = repository_scope(repository, "pull,push")
        what = f"upload of blob {digest} ({path.stat().st_size} bytes)"
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope, (202,), what=what)
        location = _upload_location(start, self.registry, what)
        size = path.stat().st_size
        if size <= self.chunk_size:
            self.request(
                "PUT",
                _with_query(location, digest=digest),
                scope,
                (201,),
                {"Content-Type": "application/octet-stream"},
                path.read_bytes(),
                what=what,
            )
            return size
        offset = 0
        with path.open("rb") as f:
            while chunk := f.read(self.chunk_size):
                if stop is not None and stop.is_set():
                    self._cancel_location(location, scope)
                    raise Stopped(what)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                    "Content-Length": str(len(chunk)),
                }
                response = self.request("PATCH", location, scope, (202,), headers, chunk, what=what)
                location = _upload_location(response, self.registry, what) if response.headers.get("Location") else location
                offset += len(chunk)
        self.request("PUT", _with_query(location, digest=digest), scope, (201,), {"Content-Length": "0"}, b"", what=what)
        return size

    def put_blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        """Upload a small blob in one request (POST, then PUT with the digest); return its digest."""
        digest = digest or sha256_digest(data)
        scope = repository_scope(repository, "pull,push")
        what = f"upload of blob {digest} ({len(data)} bytes)"
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope, (202,), what=what)
        headers = {"Content-Type": "application/octet-stream"}
        self.request(
            "PUT", _with_query(_upload_location(start, self.registry, what), digest=digest), scope, (201,), headers, data, what=what
        )
        return digest

    def fetch_blob(self, repository: str, digest: str, dest: Path, max_bytes: int | None = None) -> None:
        """Download a blob to `dest`, checking its digest (and its size against `max_bytes`, its descriptor's size).

        A blob is never bigger than $ENVKIT_MAX_DOWNLOAD_BYTES: a manifest declaring a larger one is
        refused before anything is fetched (the size comes from the registry too, and a 1 TiB layer
        arriving fast enough would never meet the deadline).
        """
        what = f"blob {repository}@{digest}"
        cap = max_download_bytes()
        if max_bytes is not None and max_bytes > cap:
            raise ResponseTooLarge(
                f"{self.registry}: {what}: its descriptor declares {size_text(max_bytes)}, over the {size_text(cap)} download limit",
                hint=f"no image layer should be that big: check the image; if it really is, raise {DOWNLOAD_CAP_ENV_VAR}",
            )
        response = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", repository_scope(repository, "pull"), (200, 404), stream=True, what=what
        )
        if response.status_code == 404:
            detail = _error_detail(response, Deadline(f"{self.registry}: {what}", self._seconds()))
            raise BlobUnknown(f"{self.registry}: {what}: HTTP 404{detail}", hint="the registry does not have it (deleted, or collected)")
        deadline = Deadline(f"{self.registry}: {what}", self._seconds())
        h = hashlib.sha256()
        with response, dest.open("wb") as out:
            hint = "the registry sent more than the manifest's descriptor declares: the registry or image is broken"
            for chunk in iter_limited(response, deadline, cap if max_bytes is None else max_bytes, cap_hint=hint):
                h.update(chunk)
                out.write(chunk)
        if "sha256:" + h.hexdigest() != digest:
            raise BlobMismatch(
                f"{self.registry}/{repository}: blob {digest} arrived with another digest",
                hint="retry; if it persists the registry is corrupt",
            )

    # -- manifests -----------------------------------------------------------------------------

    def _manifest_request(self, method: str, repository: str, reference: str, what: str, stream: bool = False) -> requests.Response:
        """A GET or HEAD of a manifest or index, any of the kinds envkit reads (200, or 404 for the caller to judge)."""
        scope = repository_scope(repository, "pull")
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        return self.request(method, f"/v2/{repository}/manifests/{reference}", scope, (200, 404), accept, stream=stream, what=what)

    def tag_digest(self, repository: str, tag: str) -> str | None:
        """The digest a tag names now (a HEAD's Docker-Content-Digest), or None if it names nothing or says none."""
        response = self._manifest_request("HEAD", repository, tag, f"HEAD manifest {repository}:{tag}")
        digest = response.headers.get("Docker-Content-Digest", "") if response.status_code == 200 else ""
        return digest if is_digest(digest) else None

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index."""
        what = f"manifest {repository}:{reference}"
        response = self._manifest_request("GET", repository, reference, what, stream=True)
        with response:
            if response.status_code == 404:
                raise RegistryError(f"{self.registry}/{repository}:{reference} not found", hint="check the image name and tag")
            data = read_limited(response, Deadline(f"{self.registry}: {what}", self._seconds()), MAX_MANIFEST_BYTES)
        where = f"{self.registry}/{repository}:{reference}"
        document = json_document(data, where)
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(
                f"{self.registry}/{repository}@{reference}: manifest has digest {digest}", hint="the registry returned other content"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip() or str(document.get("mediaType", ""))
        if media_type not in MANIFEST_TYPES:
            media_type = str(document.get("mediaType", "")) or media_type  # e.g. text/html from a proxy: the document decides
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(
                f"{where}: not an image manifest or index (media type {media_type or 'missing'!r})",
                hint="check the reference; a proxy or login page may have answered instead of the registry",
            )
        return data, media_type, digest

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest under a tag or digest; return its digest (checked against ours)."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            repository_scope(repository, "pull,push"),
            (201,),
            {"Content-Type": media_type},
            data,
            what=f"manifest {repository}:{reference}",
        )
        digest = sha256_digest(data)
        theirs = response.headers.get("Docker-Content-Digest")
        if theirs and theirs != digest:
            raise RegistryError(
                f"{self.registry}: stored manifest as {theirs}, expected {digest}", hint="the registry rewrote the manifest"
            )
        return digest


def _upload_location(response: requests.Response, registry: str, what: str) -> str:
    """Where an upload the registry started goes on: its `Location` (which the distribution spec requires), a
    relative one resolved against the request's URL (RFC 9110), as an absolute http(s) URL."""
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{registry}: {what}: the registry started an upload but said no Location", hint="the registry is broken")
    resolved = urljoin(response.url, location)
    if urlsplit(resolved).scheme not in ("http", "https"):
        raise RegistryError(
            f"{registry}: {what}: the registry's upload Location {_shown(location)!r} is not an HTTP URL",
            hint="the registry is misconfigured (its external URL)",
        )
    return resolved


def repository_scope(repository: str, actions: str) -> str:
    """A token scope: `repository:<name>:<actions>`."""
    return f"repository:{repository}:{actions}"


def _with_query(location: str, **params: str) -> str:
    return location + ("&" if "?" in location else "?") + urlencode(params)


def _error_detail(response: requests.Response, deadline: Deadline) -> str:
    """The registry's own words on an error (`errors: [{code, message}]`), as printable text and shortened.

    The body of a streamed response (a blob, a manifest) is read here, at most MAX_ERROR_BODY within the
    request's deadline: a server that answers an error with an endless body gets no more than that."""
    try:
        body = response.content if response._content is not False else read_limited(response, deadline, MAX_ERROR_BODY)
    except (requests.RequestException, NetworkError):
        return ""
    finally:
        response.close()
    try:
        document = json.loads(body)
    except ValueError:  # (UnicodeDecodeError too)
        return ""
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return ""
    said = []
    for e in errors[:_MAX_ERRORS_SHOWN]:
        fields = [e.get("code"), e.get("message")] if isinstance(e, dict) else []
        if shown := ": ".join(_shown(v) for v in fields if isinstance(v, str) and v):
            said.append(shown)
    return ": " + "; ".join(said) if said else ""


def _shown(text: str) -> str:
    """A registry's text as it may be printed: no control or escape characters, at most 200 of them."""
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable if len(printable) <= 200 else printable[:199] + "…"
