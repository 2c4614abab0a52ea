"""Lock documents written by hand the way `envkit lock` writes them (linux-64), for tests and benchmarks that
need a lock of packages no solver would pick: crafted, as a pull request could craft one."""

from __future__ import annotations

import hashlib
from pathlib import Path


def lock_entry(archive: Path, name: str, version: str = "1.0", build: str = "0") -> dict[str, object]:
    """The lock entry `envkit lock` writes for a linux-64 conda package at `archive`."""
    data = archive.read_bytes()
    return {
        "name": name,
        "version": version,
        "manager": "conda",
        "platform": "linux-64",
        "dependencies": {},
        "url": archive.as_uri(),
        "hash": {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()},
        "build": build,
        "category": "main",
        "optional": False,
    }


def wheel_lock_entry(wheel: Path, name: str, version: str, url: str | None = None) -> dict[str, object]:
    """The lock entry `envkit lock` writes for a linux-64 pip package (a wheel at `wheel`, served from `url`)."""
    return {
        "name": name,
        "version": version,
        "manager": "pip",
        "platform": "linux-64",
        "dependencies": {},
        "url": url or wheel.as_uri(),
        "hash": {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
        "category": "main",
        "optional": False,
    }


def lock_document(channel: Path, entries: list[dict[str, object]]) -> dict[str, object]:
    """A linux-64 lock of `entries` from `channel`."""
    return {
        "version": 1,
        "metadata": {
            "content_hash": {"linux-64": "0" * 64},
            "channels": [{"url": channel.as_uri(), "used_env_vars": []}],
            "platforms": ["linux-64"],
            "sources": ["environment.yml"],
            "custom_metadata": {"envkit.channel-priority": "strict"},
        },
        "package": entries,
    }
