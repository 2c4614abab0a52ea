"""One place that takes secrets out of text before envkit prints or stores it.

Credentials reach envkit in URLs (`user:password@`, anaconda `/t/<token>/`, `?token=`)
and in environment variables (channel/index credentials, registry passwords). Every
user-facing error goes through `redact` (EnvkitError does it), so a message built from
a server's or a library's text (which may quote the URL it used) never shows them.
"""

from __future__ import annotations

import os
import re

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"<>]+)@")
# `user:password@host/...` with no scheme (an image reference: `--push bob:TOKEN@registry/team/app`): a login before
# a host and a path. (An e-mail address has no `:` before its `@`, and no `/` after its host.)
_BARE_USERINFO = re.compile(
    r"(?<![\w.+-])(?P<userinfo>[^/@\s'\"<>:]+:[^/@\s'\"<>]+)@(?=[A-Za-z0-9.-]+(?::[0-9]+)?/|\[[0-9A-Fa-f:.]+\](?::[0-9]+)?/)"
)
_TOKEN_SEGMENT = re.compile(r"/t/(?P<token>[^/\s'\"<>]+)/")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:token|access_token|auth|password|passwd|secret|sig|signature|x-amz-signature|x-amz-credential|code)=)[^&\s'\"<>]+",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"(\$\{\w+\}|:)*")
# Environment variables whose values are secrets by their name.
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW|PASSWORD|_PASS$|_PAT$|API_?KEY|ACCESS_KEY|_KEY$|^KEY$|PRIVATE|CREDENTIAL|AUTH)", re.IGNORECASE
)
# ... but not those that name where something is (`REGISTRY_AUTH_FILE`, `GOOGLE_APPLICATION_CREDENTIALS_PATH`,
# docker's `*_PASSWORD_FILE` convention): their values are paths, which errors must show.
_LOCATION_NAME = re.compile(r"_(FILE|PATH|DIR)$", re.IGNORECASE)
_MIN_SECRET = 4
MASK = "***"


def strip_userinfo(url: str) -> str:
    """`url` without `user:password@`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables named like secrets (not like a file's location), or bound to a host by
    ENVKIT_CREDENTIAL_HOSTS (secrets by declaration, whatever their names), as they are and percent-encoded (as a URL
    carries them), longest first (so no partial masking)."""
    from urllib.parse import quote

    env = os.environ if environ is None else environ
    bound = {item.partition("=")[0] for item in re.split(r"[\s,]+", env.get("ENVKIT_CREDENTIAL_HOSTS", "")) if "=" in item}
    named = {v for k, v in env.items() if SECRET_NAME.search(k) and not _LOCATION_NAME.search(k)}
    values = {v for v in named | {v for k, v in env.items() if k in bound} if len(v) >= _MIN_SECRET}
    values |= {quote(v, safe="") for v in values}
    return sorted(values, key=len, reverse=True)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """`text` with URL credentials, token segments, secret query values and secret variables' values masked.

    `${VAR}` placeholders are kept (they are not secrets, they name one).
    """
    if not text:
        return text

    def userinfo(m: re.Match[str]) -> str:
        info = m.group("userinfo")
        return m.group(0) if _PLACEHOLDER.fullmatch(info) else f"{m.group('scheme')}{MASK}@"

    def token(m: re.Match[str]) -> str:
        value = m.group("token")
        return m.group(0) if re.fullmatch(r"\$\{\w+\}", value) else f"/t/{MASK}/"

    # Whole secret values first: a pattern that masked a piece of one (a `/t/` token ends at the value's first `/`)
    # would leave the rest unmatched, and printed.
    for value in [*sorted((e for e in extra if len(e) >= _MIN_SECRET), key=len, reverse=True), *secret_values()]:
        text = text.replace(value, MASK)
    text = _USERINFO.sub(userinfo, text)
    text = _BARE_USERINFO.sub(lambda m: m.group(0) if _PLACEHOLDER.fullmatch(m.group("userinfo")) else f"{MASK}@", text)
    text = _TOKEN_SEGMENT.sub(token, text)
    return _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, text)
