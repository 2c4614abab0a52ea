"""`--to env`: `ENVKIT_LOCK_HASH=…` lines for shells (`eval`/`source`) and dotenv files."""

from __future__ import annotations

import shlex

from conda_envkit.record import EnvironmentRecord


def env_name(key: str) -> str:
    """`envkit.lock_hash` -> `ENVKIT_LOCK_HASH`."""
    return key.replace(".", "_").replace("-", "_").upper()


def render_env(record: EnvironmentRecord) -> str:
    return "".join(f"{env_name(k)}={shlex.quote(v)}\n" for k, v in record.flat().items())
