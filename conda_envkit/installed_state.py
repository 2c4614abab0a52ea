"""envkit's record of what it installed into a prefix: `conda-meta/envkit/installed.json`.

Written last by `envkit install` (after the lock copy), removed first when a sync starts,
so it is present only when the prefix holds exactly what it says. It names the lock's
sha256, the platform, the prefix the files were written for, and each package's
conda-meta record (or pip record) with its archive sha256. Checking it needs no lock
parsing: `up_to_date` hashes the lock file and lists conda-meta, nothing else (stdlib
only, so `envkit install` into an up-to-date prefix returns at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

STATE_FILE = Path("conda-meta") / "envkit" / "installed.json"
LOCK_COPY = Path("conda-meta") / "envkit" / "conda-lock.yml"
STATE_SCHEMA = "envkit.installed/1"
IDENTITY_FILE = Path("conda-meta") / "envkit" / "prefix.json"
IDENTITY_SCHEMA = "envkit.prefix/1"


@dataclass(frozen=True)
class InstalledState:
    """What a prefix holds, as envkit installed it."""

    platform: str
    target_prefix: str
    lock_sha256: str
    records: dict[str, str] = field(default_factory=dict)  # prefix-relative record path -> archive sha256

    def to_json(self) -> dict[str, object]:
        return {
            "schema": STATE_SCHEMA,
            "platform": self.platform,
            "target_prefix": self.target_prefix,
            "lock_sha256": self.lock_sha256,
            "records": dict(sorted(self.records.items())),
        }


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_state(prefix: Path) -> InstalledState | None:
    """The prefix's installed record, or None when absent or unreadable (then the prefix is compared record by record)."""
    from conda_envkit.files import read_cache_entry  # (a plain file of the prefix: never a FIFO waited on, nor a link)

    try:
        data = json.loads(read_cache_entry(prefix / STATE_FILE) or b"null")
        if data.get("schema") != STATE_SCHEMA:
            return None
        return InstalledState(str(data["platform"]), str(data["target_prefix"]), str(data["lock_sha256"]), dict(data["records"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class PrefixIdentity:
    """What a prefix is for, whatever a sync is doing to it: the platform and the path its files were written for."""

    platform: str
    target_prefix: str


def read_identity(prefix: Path) -> PrefixIdentity | None:
    """The prefix's identity: `conda-meta/envkit/prefix.json` (written with every installed record, and left in place
    while a sync runs, so an interrupted sync keeps it), else the installed record's (a prefix of an older envkit)."""
    from conda_envkit.files import read_cache_entry

    try:
        data = json.loads(read_cache_entry(prefix / IDENTITY_FILE) or b"null")
        if isinstance(data, dict) and data.get("schema") == IDENTITY_SCHEMA:
            return PrefixIdentity(str(data["platform"]), str(data["target_prefix"]))
    except (ValueError, KeyError, TypeError):
        pass
    state = read_state(prefix)
    return PrefixIdentity(state.platform, state.target_prefix) if state is not None else None


def recorded_platform(prefix: Path) -> str | None:
    """The platform `prefix` was installed for, as envkit recorded it (None: not recorded, or unreadable)."""
    identity = read_identity(prefix)
    return identity.platform if identity is not None else None


def identity_bytes(platform: str, target_prefix: str) -> bytes:
    """`conda-meta/envkit/prefix.json` for a prefix installed (or baked) for `platform` at `target_prefix`."""
    document = {"schema": IDENTITY_SCHEMA, "platform": platform, "target_prefix": target_prefix}
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode()


def write_state(prefix: Path, state: InstalledState) -> None:
    """The installed record, and the prefix's identity beside it (first: the record stands for both)."""
    from conda_envkit.files import replace_entry

    identity = json.loads(identity_bytes(state.platform, state.target_prefix))
    for name, document in ((IDENTITY_FILE, identity), (STATE_FILE, state.to_json())):
        target = prefix / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(document, f, sort_keys=True, indent=1)
                f.write("\n")
            os.chmod(tmp, 0o644)
            replace_entry(Path(tmp), target)  # (a directory at its name is no record: replaced)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def clear_state(prefix: Path) -> None:
    from conda_envkit.files import remove_path

    remove_path(prefix / STATE_FILE)  # (a directory at the record's name is no record: removed too)


def up_to_date(lockfile_path: Path, prefix: Path, platform: str) -> bool:
    """Whether `prefix` holds exactly this lock for `platform`, installed for this very path."""
    from conda_envkit.files import absolute_path, read_cache_entry

    state = read_state(prefix)
    if state is None or state.platform != platform or state.target_prefix != str(absolute_path(prefix)):
        return False
    try:
        copy = read_cache_entry(prefix / LOCK_COPY)  # (a FIFO or symlink there: not up to date, and the sync says why)
        if copy is None or hashlib.sha256(copy).hexdigest() != state.lock_sha256 or file_sha256(lockfile_path) != state.lock_sha256:
            return False
    except OSError:
        return False
    # Exactly the records it installed: one another tool added (`conda install x` into the prefix) is a change too.
    try:
        present = {f"conda-meta/{name}" for name in os.listdir(prefix / "conda-meta") if name.endswith(".json")}
        pip = prefix / "conda-meta" / "envkit" / "pip"
        present |= {f"conda-meta/envkit/pip/{name}" for name in os.listdir(pip) if name.endswith(".json")} if pip.is_dir() else set()
    except OSError:
        return False
    return present == set(state.records) and all((prefix / record).is_file() for record in state.records)


def state_from_prefix(prefix: Path, platform: str, target_prefix: str, lock_sha256: str) -> InstalledState:
    """The installed record for a prefix just installed or synced: read from its conda-meta and pip records."""
    records = {}
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        sha = json.loads(meta.read_text(encoding="utf-8")).get("sha256")
        if sha:
            records[f"conda-meta/{meta.name}"] = str(sha)
    for meta in sorted((prefix / "conda-meta" / "envkit" / "pip").glob("*.json")):
        sha = json.loads(meta.read_text(encoding="utf-8")).get("sha256")
        if sha:
            records[meta.relative_to(prefix).as_posix()] = str(sha)
    return InstalledState(platform, target_prefix, lock_sha256, records)
