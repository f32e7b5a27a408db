"""Refused events never burn their dot; transient refusals are held and applied later;
a writer whose clock is ahead of the fleet refuses to write; snapshots never hold a write
the log lacks (issue 8, defects 1, 2 and 4)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crdtsync import Feature, GCounter, LWWRegister, MemoryLog, ORSet, Replica
from crdtsync.clock import HLC, Dot, make_hlc
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.snapshots import MemorySnapshotStore
from crdtsync.testing import Cluster, assert_converged
from crdtsync.testing.faults import crash

SCHEMA = [Feature("segment", LWWRegister), Feature("clicks", GCounter), Feature("tags", ORSet)]
HOUR = 3_600_000
T0 = 1_700_000_000_000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Wall:
    """A wall clock the test moves."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def _pair(log: MemoryLog, **b_kwargs: Any) -> tuple[Replica, Replica]:
    a = await Replica.open(schema=SCHEMA, log=log, name="a", follow=False, control=False)
    b = await Replica.open(schema=SCHEMA, log=log, name="b", follow=False, control=False, **b_kwargs)
    return a, b


def _forged(origin: str, seq: int, delta: Any, *, field: str = "segment",
            meta: dict[str, str] | None = None) -> bytes:
    ev = Event(origin, seq, make_hlc(T0), field, "cust-1", delta, 1)
    return MsgpackCodec().encode(Batch.of([ev], meta or {"region": "default", "role": "default"}))


@pytest.mark.parametrize("how", ["other identity", "wrong type"])
def test_a_forged_record_with_a_writers_next_seq_does_not_delete_its_genuine_write(how):
    """Minimized from the outside fault campaign: the forged record arrived first, its
    refusal put the dot in the context, and the genuine event was dropped as a duplicate."""

    async def scenario() -> None:
        log = MemoryLog()
        a, b = await _pair(log)
        a.write("segment", "cust-1", "set", "gold")
        await a.flush()
        await b.catch_up()  # b has pinned a's identity
        nxt = a.context.max_seq(a.actor) + 1
        if how == "other identity":
            forged = _forged(a.actor, nxt, LWWRegister().set("forged", actor=a.actor, ts=make_hlc(T0)),
                             meta={"region": "eu", "role": "admin"})
        else:
            forged = _forged(a.actor, nxt, ORSet().add("x", actor=a.actor))
        await log.append([forged])
        await b.catch_up()
        assert sum(b.stats.events_rejected.values()) == 1
        assert Dot(a.actor, nxt) not in b.context, "a refused event must not burn its dot"
        ev = a.write("segment", "cust-1", "set", "platinum")  # the genuine event with that dot
        assert ev.dot == Dot(a.actor, nxt)
        await a.flush()
        await b.catch_up()
        assert b.value("segment", "cust-1") == "platinum"
        await a.catch_up()
        assert b.context == a.context and b.digest() == a.digest()

    run(scenario())


def test_a_future_stamped_event_is_held_and_applied_once_the_clock_catches_up():
    async def scenario() -> None:
        log = MemoryLog()
        wall = Wall()
        ahead = Wall(T0 + HOUR)
        snaps = MemorySnapshotStore()
        a = await Replica.open(schema=SCHEMA, log=log, name="a", follow=False, control=False,
                               hlc=HLC(clock=ahead))
        b = await Replica.open(schema=SCHEMA, log=log, name="b", follow=False, control=False,
                               hlc=HLC(clock=wall), snapshots=snaps)
        a.write("clicks", "cust-1", "increment", 5)
        a.write("segment", "cust-1", "set", "gold")
        await a.flush()
        await b.catch_up()
        assert b.context.max_seq(a.actor) == 0, "held back, not refused for good"
        # a's definitions and fleet join (4 events) are stamped by the same clock
        assert b.value("clicks", "cust-1") == 0 and b.stats.events_held == 6
        # b snapshots and restarts while it holds them: they must not be lost
        await b.snapshot()
        ident = b.identity
        await crash(b)
        b2 = await Replica.open(schema=SCHEMA, log=log, identity=ident, follow=False, control=False,
                                hlc=HLC(clock=wall), snapshots=snaps)
        assert b2.stats.events_held == 6
        wall.ms += HOUR  # the clocks agree again; no record is re-sent
        assert b2.retry_held() == 6
        assert b2.value("clicks", "cust-1") == 5 and b2.value("segment", "cust-1") == "gold"
        await a.catch_up()
        assert b2.context == a.context and b2.stats.events_held == 0

    run(scenario())


def test_a_writer_whose_clock_jumps_ahead_of_the_fleet_refuses_writes_until_it_is_corrected():
    from crdtsync.errors import ClockSkew

    with Cluster(3, schema=SCHEMA, seed=4, heartbeat_ms=100) as c:
        c.run(20)
        c.write("n0", "clicks", "cust-1", "increment", 1)
        c.skew("n0", HOUR)  # n0's wall clock jumps an hour ahead
        with pytest.raises(ClockSkew) as err:
            c.write("n0", "clicks", "cust-1", "increment", 1)
        assert err.value.ahead_ms >= HOUR - 1_000 and err.value.event is None
        r0 = c.replica("n0")
        assert r0.stats.clock_skew == 1 and r0.pending == 0
        skew = r0.clock_skew_ms()
        assert skew is not None and abs(skew - HOUR) < 5_000
        c.write("n1", "clicks", "cust-1", "increment", 1)  # the others write on
        c.run(10)
        c.skew("n0", 0)  # corrected
        c.write("n0", "clicks", "cust-1", "increment", 1)
        c.settle()
        assert_converged(c)
        assert {c.value(n, "clicks", "cust-1") for n in c.names} == {3}


class SlowLog(MemoryLog):
    """A MemoryLog whose appends take a while, as an fsync does."""

    async def append(self, records: Any) -> int:
        await asyncio.sleep(0.01)
        return await super().append(records)


def test_a_snapshot_never_holds_a_write_the_log_lacks():
    """Minimized from a SIGKILL with fsync=always: seqs written during the snapshot's
    own flush were in the snapshot, never in the log, and no peer could ever get them."""

    async def scenario() -> None:
        log = SlowLog()
        snaps = MemorySnapshotStore()
        a = await Replica.open(schema=SCHEMA, log=log, name="a", follow=False, control=False, snapshots=snaps)
        for i in range(10):
            a.write("clicks", f"k{i}", "increment", 1)
        snapping = asyncio.ensure_future(a.snapshot())
        await asyncio.sleep(0.002)  # the snapshot is waiting for its flush
        for i in range(10):
            a.write("clicks", f"late{i}", "increment", 1)  # written during its awaits
        await snapping
        ident = a.identity
        await crash(a)  # the late writes were never appended
        a2 = await Replica.open(schema=SCHEMA, log=log, identity=ident, follow=False, control=False,
                                snapshots=snaps)
        b = await Replica.open(schema=SCHEMA, log=log, name="b", follow=False, control=False)
        assert b.context.max_seq(ident.actor) == a2.context.max_seq(ident.actor) == 20 + 4  # + 3 definitions and the fleet join
        assert all(b.value("clicks", f"late{i}") == 1 for i in range(10))
        ev = a2.write("clicks", "k0", "increment", 1)
        assert ev.seq == 25

    run(scenario())
