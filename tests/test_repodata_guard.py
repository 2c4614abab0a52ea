"""The repodata size guard on its own: what it samples and how it stops the work it watches."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from conda_envkit.repodata_guard import RepodataGuard, anonymous_memory, overrun, partial_download_sizes


def test_only_temporary_downloads_count(tmp_path: Path) -> None:
    (tmp_path / ".tmpA1").write_bytes(b"x" * 2000)
    (tmp_path / "0123abcd.json").write_bytes(b"x" * 9000)  # a finished cache entry: not a download
    os.symlink("/dev/zero", tmp_path / ".tmpB2")  # a link is its own size, never its target's
    assert sorted(partial_download_sizes(tmp_path)) == [len("/dev/zero"), 2000]
    assert partial_download_sizes(tmp_path / "missing") == []
    assert overrun(tmp_path, 1999, None) is not None
    assert overrun(tmp_path, 2000, None) is None


@pytest.mark.skipif(anonymous_memory() is None, reason="memory is read from /proc (Linux)")
def test_memory_growth_counts_from_the_start(tmp_path: Path) -> None:
    start = anonymous_memory()
    assert start is not None and start > 0
    assert overrun(tmp_path, 1 << 30, start) is None
    hit = overrun(tmp_path, 1 << 20, start - (2 << 20))  # as if 2 MiB had been allocated since
    assert hit is not None and hit.what == "reading repodata and solving took more than 1 MiB of memory"


def test_guard_returns_the_result_when_nothing_passes(tmp_path: Path) -> None:
    async def work() -> str:
        await asyncio.sleep(0.2)
        return "solved"

    assert asyncio.run(RepodataGuard(tmp_path, 1 << 40, interval=0.01).run(work())) == ("solved", None)


def test_guard_cancels_work_whose_download_passes_the_cap(tmp_path: Path) -> None:
    cancelled = []

    async def work() -> str:
        with (tmp_path / ".tmpgrowing").open("wb") as partial:
            try:
                for _ in range(500):  # 5 s at most
                    partial.write(b"x" * 4096)
                    partial.flush()
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                cancelled.append(partial.tell())
                raise
        return "never"

    result, hit = asyncio.run(RepodataGuard(tmp_path, 64 << 10, interval=0.01).run(work()))
    assert result is None and hit is not None
    assert hit.what == "a repodata download grew past 65536 bytes"
    assert cancelled and cancelled[0] < 1 << 20  # stopped soon after the cap, not at the end


def test_guard_lets_an_outside_cancel_through(tmp_path: Path) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(RepodataGuard(tmp_path, 1 << 40, interval=0.01).run(asyncio.sleep(10)))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
