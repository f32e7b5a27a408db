"""MemoryLog's fault hooks."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync.errors import Unavailable
from crdtsync.log import LogClosed, MemoryLog

from ._util import arun


def test_positions_count_records() -> None:
    async def body() -> None:
        log = MemoryLog()
        assert await log.append([b"a", b"b"]) == 0
        assert await log.append([b"c"]) == 2
        assert await log.end() == 3 and len(log) == 3
        await log.truncate_before(2)
        assert [e.position async for e in log.read(0)] == [2]
        assert len(log) == 1

    arun(body())


def test_fail_appends() -> None:
    async def body() -> None:
        log = MemoryLog()
        log.faults.fail_appends(2)
        for _ in range(2):
            with pytest.raises(Unavailable):
                await log.append([b"x"])
        assert await log.append([b"y"]) == 0
        log.faults.fail_appends(None, RuntimeError("disk on fire"))
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await log.append([b"z"])
        log.faults.clear()
        await log.append([b"ok"])
        assert [e.payload async for e in log.read()] == [b"y", b"ok"]
        assert log.faults.failed_appends == 5

    arun(body())


def test_before_append_hook_can_delay_or_fail() -> None:
    async def body() -> None:
        log = MemoryLog()
        seen: list[list[bytes]] = []

        async def hook(batch: list[bytes]) -> None:
            seen.append(batch)
            if batch == [b"bad"]:
                raise OSError("refused")
            await asyncio.sleep(0)

        log.faults.before_append = hook
        await log.append([b"good"])
        with pytest.raises(OSError):
            await log.append([b"bad"])
        assert seen == [[b"good"], [b"bad"]]
        assert [e.payload async for e in log.read()] == [b"good"]

    arun(body())


def test_drop_duplicate_are_seeded_and_leave_the_log_intact() -> None:
    async def body() -> list[int]:
        log = MemoryLog(seed=7)
        await log.append([b"%d" % i for i in range(200)])
        log.faults.drop = 0.2
        log.faults.duplicate = 0.2
        got = [e.position async for e in log.read()]
        assert log.faults.dropped > 0 and log.faults.duplicated > 0
        assert len(got) == 200 - log.faults.dropped + log.faults.duplicated
        assert got == sorted(got)
        log.faults.clear()
        assert [e.position async for e in log.read()] == list(range(200))
        return got

    assert arun(body()) == arun(body()), "same seed, same faults"


def test_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    async def body() -> None:
        log = MemoryLog()
        await log.append([b"a", b"b"])
        log.faults.delay = 0.25
        monkeypatch.setattr(asyncio, "sleep", recording_sleep)
        assert [e.payload async for e in log.read()] == [b"a", b"b"]
        monkeypatch.undo()
        assert slept == [0.25, 0.25]  # each record was held back before delivery

    arun(body())


def test_stall_blocks_until_resume() -> None:
    async def body() -> None:
        log = MemoryLog()
        log.faults.stall()
        task = asyncio.create_task(log.append([b"x"]))
        end = asyncio.create_task(log.end())
        await asyncio.sleep(0.01)
        assert not task.done() and not end.done()
        log.faults.resume()
        assert await task == 0
        assert await end in (0, 1)

    arun(body())


def test_close_releases_stalled_callers() -> None:
    async def body() -> None:
        log = MemoryLog()
        await log.append([b"x"])
        log.faults.stall()
        app = asyncio.create_task(log.append([b"y"]))
        reader_done = asyncio.Event()

        async def read() -> None:
            async for _ in log.read(0, follow=True):
                pass
            reader_done.set()

        rtask = asyncio.create_task(read())
        await asyncio.sleep(0.01)
        await log.close()
        with pytest.raises(LogClosed):
            await app
        await asyncio.wait_for(rtask, 5)
        assert reader_done.is_set()

    arun(body())
