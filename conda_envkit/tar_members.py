"""Reading the members of a tar envkit did not write (a package archive, an image layer) in flat memory."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator


def each_member(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of `tar` in order, each header dropped once read: tarfile keeps every header it
    has read (for extractall), which for an archive or layer we did not write grows without bound."""
    while (member := tar.next()) is not None:
        tar.members.clear()  # type: ignore[attr-defined]  # not in typeshed; reading on appends to it, nothing else
        yield member
