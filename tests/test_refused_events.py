"""A refused event must not burn its dot (issue 8, defect 1), focused examples.

(a) A forged record carrying an honest writer's next seq arrives first and is refused;
the genuine event with that dot, arriving later, must still be applied. (b) An event
refused for a transient reason (a timestamp from the future) must be applied once the
receiver's clock catches up, without being sent again. (c) A replica must refuse a
forgery of its own actor id as firmly as its peers do (it never sees its own first claim
arrive, so nothing was pinned for it).

Replicas share one MemoryLog and are driven by ``catch_up`` (no background tasks); their
HLCs read a clock the test moves (no sleeping). The property test with every kind of
refusal mixed into random histories is ``property_tests/test_refused_events.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import Feature, MemoryLog, Replica
from crdtsync.clock import HLC, make_hlc
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.types.collections import ORSet
from crdtsync.types.counters import GCounter

SCHEMA = [Feature("items", ORSet), Feature("count", GCounter), Feature("admin_only", ORSet, writers={"admin"})]
DRIFT_MS = 1_000
T0 = 1_700_000_000_000


class Clock:
    """A wall clock the test moves; ``skew`` puts one host ahead."""

    def __init__(self, skew: int = 0, base: list[int] | None = None) -> None:
        self.base = base if base is not None else [T0]
        self.skew = skew

    def __call__(self) -> int:
        return self.base[0] + self.skew


async def _pair(log: MemoryLog, writer_clock: Clock, reader_clock: Clock) -> tuple[Replica, Replica]:
    w = await Replica.open(schema=SCHEMA, log=log, name="w", region="eu", role="app",
                           hlc=HLC(max_drift_ms=DRIFT_MS, clock=writer_clock), follow=False, control=None)
    r = await Replica.open(schema=SCHEMA, log=log, name="r", region="eu", role="app",
                           hlc=HLC(max_drift_ms=DRIFT_MS, clock=reader_clock), follow=False, control=None)
    return w, r


def _forged(kind: str, origin: str, seq: int, wall_ms: int, codec: MsgpackCodec) -> bytes:
    """A record at dot (origin, seq) that every replica must refuse."""
    # the delta's own dot names a forger, so that it cannot collide with the origin's adds
    delta = ORSet().add("forged", actor="forger~0")
    meta = {"region": "eu", "role": "app"}
    fname = "items"
    if kind == "claim":
        meta = {"region": "us", "role": "admin"}  # not what the origin first claimed
    elif kind == "forbidden":
        fname = "admin_only"  # role "app" may not write it
    else:
        fname = "count"  # a GCounter: an ORSet delta is the wrong type
    return codec.encode(Batch.of([Event(origin, seq, make_hlc(wall_ms), fname, "k", delta)], meta))


@pytest.mark.parametrize("codec", [MsgpackCodec(write_version=1), MsgpackCodec(write_version=2)],
                         ids=["rows", "columns"])
@pytest.mark.parametrize("kind", ["claim", "forbidden", "wrong_type"])
def test_a_forged_record_with_an_honest_writers_next_seq_does_not_delete_its_write(kind: str, codec: MsgpackCodec) -> None:
    async def scenario() -> None:
        log = MemoryLog()
        clock = Clock()
        w, r = await _pair(log, clock, clock)
        await w.update("items", "k", "add", "first")
        await r.catch_up()  # r has heard w (and pinned its claim)
        nxt = w.context.max_seq(w.actor) + 1
        await log.append([_forged(kind, w.actor, nxt, clock(), codec)])
        await r.catch_up()
        assert "forged" not in r.value("items", "k") and "forged" not in r.value("admin_only", "k")
        assert sum(r.stats.events_rejected.values()) >= 1, "the forgery was refused"
        ev = await w.update("items", "k", "add", "genuine")  # acknowledged, with the forged dot
        assert ev.seq == nxt
        await r.catch_up()
        assert "genuine" in r.value("items", "k"), (
            f"w's acknowledged write {ev.dot} was dropped at r as a duplicate of the refused "
            f"forgery (dot in r's context: {ev.dot in r.context}; rejected: {r.stats.events_rejected})"
        )
        assert ev.dot in r.context
        await w.close()
        await r.close()

    asyncio.run(scenario())


def test_an_event_from_the_future_is_applied_once_the_receivers_clock_catches_up() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        base = [T0]
        ahead = Clock(base=base)
        w, r = await _pair(log, ahead, Clock(base=base))
        await r.catch_up()
        ahead.skew = 5 * DRIFT_MS  # the writer's clock jumps 5 s ahead
        ev = await w.update("items", "k", "add", "early")  # acknowledged at LOCAL
        await r.catch_up()
        assert "early" not in r.value("items", "k") and r.stats.events_rejected.get("future_timestamp", 0) >= 1
        end = await log.end()
        base[0] += 5 * DRIFT_MS  # r's clock catches up with the stamp; w's clock agrees now
        ahead.skew = 0
        await r.catch_up()
        assert await log.end() == end, "nothing was sent again"
        assert "early" in r.value("items", "k") and ev.dot in r.context, (
            f"the event refused as too early was never applied (dot in context: {ev.dot in r.context})"
        )
        await w.catch_up()
        assert r.digest() == w.digest() and r.context.max_seq(w.actor) == w.context.max_seq(w.actor)
        await w.close()
        await r.close()

    asyncio.run(scenario())


def test_a_replica_refuses_a_forgery_of_its_own_actor_id() -> None:
    """Its peers refuse a record claiming it with another region/role (they pinned its
    first claim); the replica itself must too, or it applies what the fleet refuses and
    never converges with it."""

    async def scenario() -> None:
        log = MemoryLog()
        clock = Clock()
        w, r = await _pair(log, clock, clock)
        await w.update("items", "k", "add", "first")
        await w.catch_up()
        await r.catch_up()
        nxt = w.context.max_seq(w.actor) + 1
        await log.append([_forged("claim", w.actor, nxt, clock(), MsgpackCodec(write_version=2))])
        await w.catch_up()
        await r.catch_up()
        assert "forged" not in r.value("items", "k")
        assert w.value("items", "k") == r.value("items", "k") == {"first"}, (
            f"w applied a forgery of its own actor id that its peers refused: {w.value('items', 'k')}")
        await w.close()
        await r.close()

    asyncio.run(scenario())
