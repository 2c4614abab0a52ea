"""envkit's image labels (`dev.envkit.*`): one type, one spelling of each key, read and written here.

In an image (and the lock) "no CUDA" and "no BLAS" are spelled `none`, and `unknown` means the
lock did not record it (conda-lock wrote it); in Python both are None, with `recorded` telling
them apart. Only `to_json`/`from_json` see the strings.

The label set carries no schema number of its own (a new label would change every image
digest): `dev.envkit.version`, the envkit that wrote it, is its version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LABEL_PREFIX = "dev.envkit."
_NONE, _UNKNOWN = "none", "unknown"


def label_key(name: str) -> str:
    """The full label key for one of envkit's names (`lock-hash` -> `dev.envkit.lock-hash`)."""
    return LABEL_PREFIX + name


@dataclass(frozen=True)
class ImageLabels:
    """What an envkit image says about its environment."""

    lock_hash: str | None
    platform_lock_hash: str | None = None
    platform: str | None = None
    prefix: str | None = None
    cuda: str | None = None  # the CUDA driver the lock assumed; None: no CUDA (or not recorded)
    cuda_version: str | None = None  # the cuda-version chosen
    blas: str | None = None  # the BLAS chosen
    recorded: bool = True  # False: the lock holds no envkit facts for this platform ("unknown")
    envkit_version: str | None = None

    def to_json(self) -> dict[str, str]:
        """The labels as written into an image config (only the keys that have a value)."""

        def fact(value: str | None) -> str:
            return (value or _NONE) if self.recorded else _UNKNOWN

        values = {
            "lock-hash": self.lock_hash,
            "platform-lock-hash": self.platform_lock_hash,
            "platform": self.platform,
            "prefix": self.prefix,
            "cuda": fact(self.cuda),
            "cuda-version": fact(self.cuda_version),
            "blas": fact(self.blas),
            "version": self.envkit_version,
        }
        return {label_key(k): v for k, v in values.items() if v is not None}

    @classmethod
    def from_json(cls, labels: Mapping[str, str]) -> ImageLabels | None:
        """envkit's labels of an image, or None when it has none (not baked by envkit)."""
        if not any(key.startswith(LABEL_PREFIX) for key in labels):
            return None

        def get(name: str) -> str | None:
            return labels.get(label_key(name)) or None

        def fact(name: str) -> str | None:
            value = get(name)
            return None if value in (None, _NONE, _UNKNOWN) else value

        return cls(
            lock_hash=get("lock-hash"),
            platform_lock_hash=get("platform-lock-hash"),
            platform=get("platform"),
            prefix=get("prefix"),
            cuda=fact("cuda"),
            cuda_version=fact("cuda-version"),
            blas=fact("blas"),
            recorded=get("cuda") not in (None, _UNKNOWN),
            envkit_version=get("version"),
        )
