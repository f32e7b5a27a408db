"""The level driver: leveled writes and reads in real time (fail fast, wait for acks,
time out with the typed error; LOG syncs; overrides only strengthen)."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import Feature, GCounter, Strong, Tunable
from crdtsync.clock import Context, Dot
from crdtsync.errors import PolicyViolation, StaleRead, Unavailable
from crdtsync.log import MemoryLog
from crdtsync.policy import ACKS, ALL, LOCAL, LOG, QUORUM, SESSION

from .._wait import until
from ._parts import CODEC, Assembly, ident

FIELDS = (
    Feature("clicks", GCounter),
    Feature("acked", GCounter, policy=Tunable(write=QUORUM(), read=LOCAL, timeout=0.2)),
    Feature("stock", GCounter, policy=Strong(timeout=0.5)),
)
B = ident("b", region="eu", incarnation="j1")
C = ident("c", region="eu", incarnation="k1")


class HangingSyncLog(MemoryLog):
    """A log whose durability confirmation (``sync``) never comes."""

    async def sync(self) -> None:
        await asyncio.Event().wait()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def records(log: MemoryLog) -> list[tuple[str, int]]:
    return [(ev.field, ev.seq) async for e in log.read(0) for ev in CODEC.decode(e.payload).events]


def test_a_local_update_is_applied_and_appended() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        ev = await p.driver.update("clicks", "k", "increment", (2,), {}, None, None)
        assert p.store.value("clicks", "k") == 2 and ev.dot in p.store.ctx()
        assert await records(p.log) == [("clicks", 1)]

    run(scenario())


def test_an_override_may_only_strengthen_the_fields_policy() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        with pytest.raises(PolicyViolation):
            await p.driver.update("acked", "k", "increment", (1,), {}, LOCAL, None)
        assert await records(p.log) == [], "nothing written"

    run(scenario())


def test_a_quorum_write_without_enough_live_peers_fails_fast_and_writes_nothing() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        p.hear(B, Context())
        p.hear(C, Context())
        p.clock.ms += 10_000  # b and c silent past liveness
        p.heartbeats.observe(p.heartbeats.build())
        with pytest.raises(Unavailable, match="nothing was written") as info:
            await p.driver.update("acked", "k", "increment", (1,), {}, None, None)
        assert info.value.event is None
        assert p.store.value("acked", "k") == 0 and await records(p.log) == []

    run(scenario())


def test_a_quorum_write_returns_once_a_peer_reports_its_dot() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        p.hear(B, Context())
        p.hear(C, Context())

        async def peer_b() -> None:  # b applies the write and says so in its next heartbeat
            await until(lambda: p.store.ctx().max_seq(p.identity.actor) >= 1, what="the write")
            p.hear(B, Context().add(Dot(p.identity.actor, 1)))

        task = asyncio.ensure_future(peer_b())
        ev = await p.driver.update("acked", "k", "increment", (1,), {}, None, 5.0)
        await task
        assert p.coordinator.acknowledged(QUORUM(), ev.dot)

    run(scenario())


def test_an_unacknowledged_write_times_out_with_unavailable_and_stays_applied() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        p.hear(B, Context())
        p.hear(C, Context())
        with pytest.raises(Unavailable, match="not acknowledged") as info:
            await p.driver.update("acked", "k", "increment", (1,), {}, None, 0.05)
        ev = info.value.event
        assert ev is not None and ev.dot in p.store.ctx(), "not withdrawn: it keeps replicating"
        assert await records(p.log) == [("acked", 1)]

    run(scenario())


def test_a_write_stronger_than_its_field_waits_for_what_the_override_asks() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        p.hear(B, Context())
        with pytest.raises(Unavailable):
            await p.driver.update("clicks", "k", "increment", (1,), {}, ALL(), 0.05)
        ev = await p.driver.update("clicks", "k", "increment", (1,), {}, ACKS(1), 0.05)
        assert ev.seq == 2

    run(scenario())


def test_a_log_level_write_whose_sync_does_not_come_raises_unavailable(py310_timeouts: type[Exception]) -> None:
    # also on Python 3.10, where asyncio.wait_for raises asyncio.TimeoutError
    async def scenario() -> None:
        p = Assembly(FIELDS, log=HangingSyncLog())
        with pytest.raises(Unavailable, match="did not confirm") as info:
            await p.driver.update("clicks", "k", "increment", (1,), {}, LOG, 0.05)
        assert info.value.event is not None and info.value.event.dot in p.store.ctx()

    run(scenario())


def test_a_log_level_write_on_a_log_without_sync_returns_once_appended() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        await p.driver.update("clicks", "k", "increment", (1,), {}, LOG, 0.05)
        assert await records(p.log) == [("clicks", 1)]

    run(scenario())


def test_a_session_read_waits_for_the_token_and_times_out_with_stale_read() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        token = Context().add(Dot(B.actor, 1))
        with pytest.raises(StaleRead):
            await p.driver.read("clicks", "k", SESSION(token), 0.05)

        async def arrives() -> None:
            await asyncio.sleep(0.01)
            p.store.set_context(token)
            p.waiter.tick()

        task = asyncio.ensure_future(arrives())
        assert await p.driver.read("clicks", "k", SESSION(token), 5.0) == 0
        await task

    run(scenario())


def test_a_quorum_read_pings_peers_and_returns_once_a_quorum_answered() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        got: list[bytes] = []
        p.hub.endpoint().start("b", got.append)
        p.hear(B, Context())

        async def peer_b() -> None:
            await until(lambda: p.heartbeats.ping > 0 and got, what="the ping to be published")
            p.hear(B, Context(), echo={"a": p.heartbeats.ping})

        task = asyncio.ensure_future(peer_b())
        assert await p.driver.read("clicks", "k", QUORUM(), 5.0) == 0
        await task

    run(scenario())


def test_conditional_operations_need_a_sequenced_field() -> None:
    async def scenario() -> None:
        p = Assembly(FIELDS)
        with pytest.raises(PolicyViolation, match="SEQUENCED"):
            await p.driver.conditional("clicks", "k", "increment", (1,), {}, None, None)

    run(scenario())
