"""The follower: catch-up and tailing hand every record to the applier in log order,
advance the position, snapshot when due, wake position waiters, and survive errors."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync.log import MemoryLog
from crdtsync.replica.follower import Follower

from .._wait import until
from ._parts import Calls, defs, store


class FakeApplier:
    """The applier's interface to the follower: ``apply_record`` and ``retry_held``."""

    def __init__(self, held: int = 0) -> None:
        self.records: list[tuple[int, bytes]] = []
        self.held = held
        self.fail_on: set[bytes] = set()  # payloads that raise once

    def apply_record(self, position: int, payload: bytes) -> int:
        if payload in self.fail_on:
            self.fail_on.discard(payload)
            raise RuntimeError(f"applier bug on {payload!r}")
        self.records.append((position, payload))
        return 1

    def retry_held(self) -> int:
        n, self.held = self.held, 0
        return n


class Parts:
    def __init__(self, snapshot_every: int | None = None) -> None:
        self.log = MemoryLog()
        self.store = store("a~i1", defs())
        self.applier = FakeApplier()
        self.snapshots = Calls(self._snapshotted)
        self.every = snapshot_every
        self.since = 0
        self.follower = Follower("a~i1", self.log, self.store, self.applier, self._due, self.snapshots)  # type: ignore[arg-type]

    def _due(self) -> bool:
        self.since += 1
        return self.every is not None and self.since >= self.every

    def _snapshotted(self) -> None:
        self.since = 0

    async def append(self, *payloads: bytes) -> int:
        return await self.log.append(list(payloads))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_catch_up_applies_every_record_in_log_order_once() -> None:
    async def scenario() -> None:
        p = Parts()
        assert await p.follower.catch_up() == 0 and p.store.position is None
        await p.append(b"r0", b"r1", b"r2")
        assert await p.follower.catch_up() == 3
        assert p.applier.records == [(0, b"r0"), (1, b"r1"), (2, b"r2")]
        assert p.store.position == 2
        assert await p.follower.catch_up() == 0, "nothing new: nothing applied again"
        await p.append(b"r3")
        assert await p.follower.catch_up() == 1
        assert p.applier.records[-1] == (3, b"r3") and p.store.position == 3

    run(scenario())


def test_catch_up_first_applies_held_events_the_clock_now_accepts() -> None:
    async def scenario() -> None:
        p = Parts()
        p.applier.held = 2
        await p.append(b"r0")
        assert await p.follower.catch_up() == 3

    run(scenario())


def test_catch_up_reports_progress_and_snapshots_when_due() -> None:
    async def scenario() -> None:
        p = Parts(snapshot_every=2)
        await p.append(*(b"r%d" % i for i in range(5)))
        seen: list[tuple[int, int]] = []
        await p.follower.catch_up(progress=lambda done, total: seen.append((done, total)))
        assert seen == [(i, 5) for i in range(5)]
        assert p.snapshots.n == 2

    run(scenario())


def test_the_tail_loop_applies_what_is_appended_and_wakes_position_waiters() -> None:
    async def scenario() -> None:
        p = Parts()
        assert not p.follower.following
        p.follower.start()
        assert p.follower.following
        try:
            pos = await p.append(b"r0")
            await asyncio.wait_for(p.follower.wait_applied(pos), 5)
            waiter = asyncio.ensure_future(p.follower.wait_applied(pos + 2))
            await asyncio.sleep(0.01)
            await p.append(b"r1")
            await asyncio.sleep(0.01)
            assert not waiter.done(), "woken only once its own position is reached"
            await p.append(b"r2")
            await asyncio.wait_for(waiter, 5)
            assert [r for _, r in p.applier.records] == [b"r0", b"r1", b"r2"]
        finally:
            p.follower.closed = True
            await p.follower.stop()

    run(scenario())


def test_a_position_already_applied_returns_at_once() -> None:
    async def scenario() -> None:
        p = Parts()
        await p.append(b"r0", b"r1")
        await p.follower.catch_up()
        await p.follower.wait_applied(0, timeout=0)
        await p.follower.wait_applied(1, timeout=0)

    run(scenario())


def test_a_position_waiter_times_out_and_is_forgotten() -> None:
    async def scenario() -> None:
        p = Parts()
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await p.follower.wait_applied(10, timeout=0.01)
        assert p.follower._waiters == [], "a waiter that gave up is not kept until position 10"

    run(scenario())


def test_a_crash_fails_whoever_waits_for_a_position() -> None:
    async def scenario() -> None:
        p = Parts()
        waiter = asyncio.ensure_future(p.follower.wait_applied(5))
        await asyncio.sleep(0)
        p.follower.fail_waiters(RuntimeError("crashed"))
        with pytest.raises(RuntimeError, match="crashed"):
            await waiter

    run(scenario())


def test_the_tail_loop_restarts_after_an_unexpected_error_and_loses_nothing() -> None:
    async def scenario() -> None:
        p = Parts()
        p.applier.fail_on.add(b"r1")
        p.follower.start()
        try:
            await p.append(b"r0", b"r1", b"r2")
            await until(lambda: p.store.position == 2, what="the tail to apply past the failure")
            assert [r for _, r in p.applier.records] == [b"r0", b"r1", b"r2"], "r1 retried, nothing twice"
        finally:
            p.follower.closed = True
            await p.follower.stop()

    run(scenario())


def test_sync_flushes_then_catches_up_without_an_apply_loop() -> None:
    async def scenario() -> None:
        p = Parts()
        flush = Calls(lambda: p.append(b"own"))
        await p.append(b"r0")
        await p.follower.sync(flush)
        assert flush.n == 1
        assert [r for _, r in p.applier.records] == [b"r0", b"own"]

    run(scenario())


def test_sync_waits_for_the_tail_loop_to_apply_everything_in_the_log() -> None:
    async def scenario() -> None:
        p = Parts()
        p.follower.start()
        try:
            await p.append(b"r0", b"r1")
            await p.follower.sync(Calls(), timeout=5)
            assert p.store.position == 1
        finally:
            p.follower.closed = True
            await p.follower.stop()

    run(scenario())
