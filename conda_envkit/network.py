"""Deadlines and size caps for everything envkit fetches over the network.

One setting, $ENVKIT_NETWORK_TIMEOUT (seconds, default 300), bounds each network
operation as a whole: fetching one package, one manifest, one blob, one token. A
server that trickles a byte a second passes every per-read timeout; the deadline
still ends it. Connect and read timeouts are derived from the same number.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from conda_envkit.errors import EnvkitError

T = TypeVar("T")
TIMEOUT_ENV_VAR = "ENVKIT_NETWORK_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# Each byte received extends its download's deadline by 1/MIN_RATE seconds: a 2 GiB
# layer arriving at 1 MiB/s or faster always finishes, a trickle does not.
MIN_RATE = float(1 << 20)
# A download whose size nothing tells in advance (a package archive or wheel: the lock has
# only its hash) stops here; the largest conda-forge archives and PyPI wheels are ~3 GiB.
DOWNLOAD_CAP_ENV_VAR = "ENVKIT_MAX_DOWNLOAD_BYTES"
DEFAULT_DOWNLOAD_CAP = 8 << 30
# An index page (PEP 503 HTML, PEP 691 JSON, a --find-links page) is read whole before uv gets
# it; PyPI's largest simple pages are tens of MiB.
PAGE_CAP_ENV_VAR = "ENVKIT_MAX_INDEX_PAGE_BYTES"
DEFAULT_PAGE_CAP = 256 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class NetworkError(EnvkitError):
    """A server that did not answer in time, sent too much, or sent something unusable."""


class DeadlineExceeded(NetworkError):
    """A network operation that took longer than $ENVKIT_NETWORK_TIMEOUT."""


class ResponseTooLarge(NetworkError):
    """A response over its size cap."""


def network_timeout() -> float:
    """$ENVKIT_NETWORK_TIMEOUT in seconds (default 300); an invalid value is an error naming it."""
    raw = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 < value < 7 * 24 * 3600):
        raise NetworkError(f"{TIMEOUT_ENV_VAR}={raw!r} is not a number of seconds", hint=f"e.g. {TIMEOUT_ENV_VAR}=120, or unset it")
    return value


def size_from_env(var: str, default: int) -> int:
    """A size from the environment variable `var` (bytes, or with a K/M/G/T suffix, binary); invalid is an error naming it."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", raw, re.IGNORECASE)
    value = int(match[1]) * _UNITS[match[2].upper()] if match else 0
    if value <= 0:
        raise NetworkError(f"{var}={raw!r} is not a size", hint=f"e.g. {var}=16G (bytes, or K/M/G/T), or unset it")
    return value


def max_download_bytes() -> int:
    """$ENVKIT_MAX_DOWNLOAD_BYTES (default 8G): the most a package archive or wheel may be."""
    return size_from_env(DOWNLOAD_CAP_ENV_VAR, DEFAULT_DOWNLOAD_CAP)


def max_index_page_bytes() -> int:
    """$ENVKIT_MAX_INDEX_PAGE_BYTES (default 256M): the most one pip index page may be."""
    return size_from_env(PAGE_CAP_ENV_VAR, DEFAULT_PAGE_CAP)


DOWNLOAD_CAP_HINT = f"no package should be that big: check the server; if the file really is, raise {DOWNLOAD_CAP_ENV_VAR}"


@dataclass
class Deadline:
    """The end of one network operation; `what` names the server and what was fetched."""

    what: str
    seconds: float = field(default_factory=network_timeout)
    started: float = field(default_factory=time.monotonic)
    earned: float = 0.0

    def remaining(self) -> float:
        return self.seconds + self.earned - (time.monotonic() - self.started)

    def check(self) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(
                f"{self.what}: no complete answer within {self.seconds:g} s",
                hint=f"the server is slow or stuck; retry, or raise {TIMEOUT_ENV_VAR} (now {self.seconds:g})",
            )

    def can_wait(self, seconds: float) -> bool:
        """Whether a retry after `seconds` of backoff still has time left."""
        return self.remaining() > seconds

    def earn(self, received: int) -> None:
        """Extend the deadline for bytes received: a download moving at MIN_RATE never runs out."""
        self.earned += received / MIN_RATE

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts for one request, never past the deadline."""
        self.check()
        left = max(self.remaining(), 0.05)
        return min(CONNECT_TIMEOUT, left), min(READ_TIMEOUT, left)


class _Raw(Protocol):
    def read1(self, amt: int | None = None, decode_content: bool | None = None) -> bytes: ...


class _Streaming(Protocol):
    @property
    def raw(self) -> _Raw: ...


def iter_limited(
    response: _Streaming, deadline: Deadline, max_bytes: int | None = None, chunk: int = 1 << 20, cap_hint: str | None = None
) -> Iterator[bytes]:
    """The body of a streamed response (`stream=True`) in chunks, stopped at the deadline or past `max_bytes`.

    Reads with `read1` (whatever one receive brings), so a server that trickles
    bytes cannot hold a read open past the deadline.
    """
    from urllib3.exceptions import HTTPError as Urllib3Error

    total = 0
    while True:
        deadline.check()
        try:
            part = response.raw.read1(chunk, decode_content=True)
        except Urllib3Error as exc:  # read timeout, short body, bad chunking, bad gzip
            raise NetworkError(f"{deadline.what}: transfer failed ({exc.__class__.__name__})", hint="retry; check the server") from None
        if not part:
            return
        total += len(part)
        deadline.earn(len(part))
        if max_bytes is not None and total > max_bytes:
            raise ResponseTooLarge(
                f"{deadline.what}: response larger than the {size_text(max_bytes)} limit",
                hint=cap_hint or "the server sent something other than expected; check the reference and the server",
            )
        yield part


def call_with_deadline(what: str, fn: Callable[[], T], seconds: float | None = None) -> T:
    """`fn()`, given up after `seconds` (default $ENVKIT_NETWORK_TIMEOUT) for clients we cannot give a deadline.

    `fn` runs in a daemon thread; if it overruns, the caller gets DeadlineExceeded and
    the thread is abandoned (it holds no envkit state and dies with the process).
    """
    limit = network_timeout() if seconds is None else seconds
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below, not swallowed
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"envkit: {what}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise DeadlineExceeded(
            f"{what}: no answer within {limit:g} s", hint=f"the server is slow or down; retry, or raise {TIMEOUT_ENV_VAR} (now {limit:g})"
        )
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def read_limited(response: _Streaming, deadline: Deadline, max_bytes: int) -> bytes:
    """The whole body of a streamed response, within the deadline and `max_bytes`."""
    return b"".join(iter_limited(response, deadline, max_bytes))


def connection_failure(exc: BaseException) -> str:
    """A short reason for a failed request: what a user can act on (the host name does not resolve, nothing listens,
    the certificate is not trusted), else the exception's class."""
    text = str(exc)
    if "NameResolutionError" in text or "Name or service not known" in text or "nodename nor servname" in text:
        return "cannot resolve the host name"
    if "Temporary failure in name resolution" in text:
        return "cannot resolve the host name (no DNS answer)"
    if "Connection refused" in text:
        return "connection refused: nothing listens there"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its certificate is not trusted"
    return exc.__class__.__name__


def size_text(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):g} GiB"
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


def is_loopback(host: str) -> bool:
    """True for a host (or registry, or URL netloc: `localhost`, `127.0.0.0/8`, `::1`) on this machine, with or
    without a port (`127.0.0.1:5000`, `[::1]:5000`)."""
    import ipaddress

    if host.startswith("["):  # a bracketed IPv6 address, perhaps with a port after the bracket
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
