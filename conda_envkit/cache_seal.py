"""The cache seal: which cache entries this user wrote (or checked), under a secret kept outside the cache.

A cache directory may be writable by others (a CI cache restored from another branch, a team
cache on a shared machine): they can put anything there, but they cannot read the user's
private files. Entries that say what something is for (a layer key -> its blob, a fragment's
index, an archive's `verified` marker, a package info record) therefore carry an HMAC-SHA256
over their fields and their key, under a per-user secret (`cache.seal_key_path()`, created
0600 on first use), in a directory of that secret's own (`CacheSeal.owner`). An entry whose
seal checks was written by this user; any other entry (restored, shared, forged, written by an
older envkit) is not trusted: what it stands for is built, hashed or read again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from conda_envkit.cache import seal_key_path
from conda_envkit.errors import EnvkitError

SEAL_FORMAT = "envkit-seal/1"


class CacheSealError(EnvkitError):
    """The seal's secret cannot be read or created safely."""


@dataclass(frozen=True)
class CacheSeal:
    """Signs and checks cache entries with the user's secret."""

    secret: bytes
    problem: str = ""  # why the secret lives only as long as this process (then nothing cached before is trusted)

    @cached_property  # (asked for by every cache entry's read and write: one HMAC per seal)
    def owner(self) -> str:
        """A name for this secret's entries (a cache shared by several users keeps each one's apart, so that
        one user's bake does not discard another's): derived from the secret, which it does not reveal."""
        if self.problem:
            return "ephemeral"
        return hmac.new(self.secret, b"envkit-seal-owner", hashlib.sha256).hexdigest()[:16]

    def sign(self, kind: str, key: str, fields: object) -> str:
        """The seal of an entry: HMAC-SHA256 over its kind, key and fields (canonical JSON)."""
        message = json.dumps([SEAL_FORMAT, kind, key, fields], sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def check(self, kind: str, key: str, fields: object, seal: object) -> bool:
        """Whether `seal` is this user's seal of the entry."""
        return isinstance(seal, str) and hmac.compare_digest(seal, self.sign(kind, key, fields))

    def sealed(self, kind: str, key: str, fields: dict[str, object]) -> dict[str, object]:
        """A JSON entry: `fields` and their seal under `"seal"`."""
        return {**fields, "seal": self.sign(kind, key, fields)}

    def unsealed(self, kind: str, key: str, document: object) -> dict[str, object] | None:
        """The fields of a JSON entry (`sealed`'s form) if this user sealed them, else None."""
        if not isinstance(document, dict):
            return None
        fields = {k: v for k, v in document.items() if k != "seal"}
        return fields if self.check(kind, key, fields, document.get("seal")) else None


def _read_secret(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO at that path would block the open for ever; it is refused below as any non-file is.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise CacheSealError(
                f"{path}: the cache seal's secret must be a regular file of yours that no one else can read or write",
                hint=f"run `chmod 600 {path}`, or delete it (envkit makes a new one; cached layers are then built once more)",
            )
        data = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(data) < 32:
        raise CacheSealError(f"{path}: the cache seal's secret is too short", hint="delete it; envkit makes a new one")
    return data


def _create_secret(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cache-seal.", dir=path.parent)  # mode 0600
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):  # never replaces a secret another process created meanwhile
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@cache
def _read_once(path: Path, identity: tuple[int, ...]) -> CacheSeal:  # `identity`: the file as it is now (the cache key)
    return CacheSeal(_read_secret(path))


def _load(path: Path) -> CacheSeal:
    try:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            _create_secret(path)
            st = os.stat(path)
        return _read_once(path, (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid))
    except OSError as exc:
        # A read-only home (a container run as another user): envkit still works, trusting only what this
        # process writes; the bake says so.
        return _ephemeral(path, f"{path}: cannot read or create the cache seal's secret ({exc.strerror or exc})")


@cache
def _ephemeral(path: Path, problem: str) -> CacheSeal:  # one per process: entries it writes stay usable while it runs
    return CacheSeal(secrets.token_bytes(32), problem)


def user_seal() -> CacheSeal:
    """This user's seal (the secret at `cache.seal_key_path()`, created on first use; if that cannot be
    written, a secret of this process only, with the reason in `problem`)."""
    return _load(seal_key_path())
