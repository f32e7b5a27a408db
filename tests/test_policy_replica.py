"""The policy engine wired into real replicas: levels, acks, reads, fleet removal.

Replicas share one MemoryLog (and so its control hub) and run their real background
tasks (apply loop and heartbeats, ``follow=True``) with short heartbeat intervals;
waits poll for a condition with a generous deadline, and nothing asserts on timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from crdtsync import Feature, GCounter, LocalLog, LWWRegister, MemoryLog, Replica, Strong
from crdtsync._encoding import packb
from crdtsync.clock import make_hlc
from crdtsync.errors import PolicyViolation, ReplicaRemoved, StaleRead, Unavailable
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.policy import ACKS, ALL, LOCAL, LOG, MAX_STALENESS, QUORUM, SESSION, Eventual, Tunable
from tests._wait import until

HB = 0.02  # heartbeat interval (s)
LIVE = 1.0  # liveness window (s): generous, so a busy machine does not look partitioned

SCHEMA = [
    Feature("free", GCounter),
    Feature("acks2", LWWRegister, policy=Tunable(write=ACKS(2), read=LOCAL, timeout=5.0)),
    Feature("quorum", LWWRegister, policy=Tunable(write=QUORUM(), read=QUORUM(), timeout=5.0)),
    Feature("all", LWWRegister, policy=Tunable(write=ALL(), read=LOCAL, timeout=5.0)),
    Feature("logged", LWWRegister, policy=Tunable(write=LOG, read=LOCAL, timeout=5.0)),
    Feature("strong", LWWRegister, policy=Strong(timeout=5.0)),
    Feature("fresh", LWWRegister, policy=Tunable(write=LOCAL, read=MAX_STALENESS(0.1), timeout=5.0)),
    Feature("fresh_wait", LWWRegister,
            policy=Tunable(write=LOCAL, read=MAX_STALENESS(0.1, wait=True), timeout=10.0)),
]


def run(coro):
    return asyncio.run(coro)


async def open_replica(log, name: str, schema=SCHEMA, **kw) -> Replica:
    kw.setdefault("heartbeat_interval", HB)
    kw.setdefault("liveness", LIVE)
    return await Replica.open(schema=schema, log=log, name=name, **kw)


@contextlib.asynccontextmanager
async def fleet(n: int = 3, log=None, **kw) -> AsyncIterator[tuple[MemoryLog, list[Replica]]]:
    """``n`` followers named a, b, c... on one MemoryLog, each knowing all the others."""
    log = log if log is not None else MemoryLog()
    reps = [await open_replica(log, "abcde"[i], **kw) for i in range(n)]
    try:
        await until(lambda: all(len(r.membership) == n for r in reps), what="every replica knows the fleet")
        yield log, reps
    finally:
        for r in reps:
            await r.close()


def test_a_definitions_policy_travels_through_the_schema_field():
    async def scenario():
        policy = Tunable(write=ACKS(2), read=MAX_STALENESS(2.0), timeout=3.0, on_unavailable="local")
        log = MemoryLog()
        a = await open_replica(log, "a", schema=[Feature("risk", LWWRegister, policy=policy)])
        b = await open_replica(log, "b", schema=[])
        try:
            await until(lambda: "risk" in b.export_state().get("_schema", {}), what="b learned the definition")
            learned = b.export_state()["_schema"]["risk"].value()
            assert learned["policy"] == policy.to_dict()
            # b enforces what it learned: an ACKS(2) field cannot be written LOCAL
            with pytest.raises(PolicyViolation):
                b.write("risk", "card", "set", 0.5)
            with pytest.raises(PolicyViolation, match="weaker"):
                await b.at(write=ACKS(1)).update("risk", "card", "set", 0.5)
            assert b.value("risk", "card") is None
        finally:
            await b.close()
            await a.close()

    run(scenario())


@pytest.mark.parametrize("fname", ["acks2", "quorum", "all", "logged", "strong"])
def test_write_is_local_only_and_refuses_stronger_fields(fname):
    async def scenario():
        r = await open_replica(MemoryLog(), "a", follow=False)
        try:
            ctx, local = r.context, r.stats.events_local
            with pytest.raises(PolicyViolation, match="update"):
                r.write(fname, "k", "set", 1)
            assert r.value(fname, "k") is None and r.context == ctx and r.stats.events_local == local
            r.write("free", "k", "increment", 1)  # an Eventual field is LOCAL: allowed
            assert r.value("free", "k") == 1
        finally:
            await r.close()

    run(scenario())


def test_overrides_weaker_than_the_definition_are_refused_and_write_nothing():
    async def scenario():
        async with fleet(1) as (_, [a]):
            ctx = a.context
            for level in (LOCAL, LOG, ACKS(1)):  # all below QUORUM (ACKS(1) <= QUORUM)
                with pytest.raises(PolicyViolation):
                    await a.at(write=level).update("quorum", "k", "set", 1)
            with pytest.raises(PolicyViolation):  # ACKS(3) is above ACKS(2), ACKS(1) below it
                await a.at(write=ACKS(1)).update("acks2", "k", "set", 1)
            with pytest.raises(PolicyViolation):
                await a.at(read=LOCAL).read("fresh", "k")
            with pytest.raises(PolicyViolation):  # a looser bound is weaker
                await a.at(read=MAX_STALENESS(5.0)).read("fresh", "k")
            assert a.value("quorum", "k") is None and a.value("acks2", "k") is None and a.context == ctx

    run(scenario())


def test_ack_levels_are_acknowledged_by_three_healthy_replicas():
    async def scenario():
        async with fleet(3) as (_, [a, b, c]):
            ev = await a.update("acks2", "k", "set", "two")
            assert a.acknowledged(ACKS(2), ev.dot)
            assert ev.dot in b.context or ev.dot in c.context, "a peer reported it applied"
            ev = await b.update("quorum", "k", "set", "q")
            assert b.acknowledged(QUORUM(), ev.dot)
            assert ev.dot in a.context or ev.dot in c.context
            ev = await c.update("all", "k", "set", "everyone")
            # ALL: every replica reported the dot applied, so each of them holds the value now
            assert ev.dot in a.context and ev.dot in b.context
            assert a.value("all", "k") == b.value("all", "k") == "everyone"
            # an override strengthens one call
            ev = await a.at(write=ALL()).update("acks2", "k", "set", "all-of-them")
            assert ev.dot in b.context and ev.dot in c.context

    run(scenario())


def test_ack_write_fails_fast_with_nothing_written_when_too_few_are_live():
    async def scenario():
        async with fleet(3, liveness=0.2) as (log, [a, _b, _c]):
            log.control.partition([["a"], ["b", "c"]])
            await until(lambda: len(a.membership.live(None, a.now_ms(), int(a.liveness * 1000))) == 1,
                        what="b and c fall out of a's liveness window")
            ctx, value, local = a.context, a.value("quorum", "k"), a.stats.events_local
            for fname in ("quorum", "acks2", "all"):
                with pytest.raises(Unavailable) as info:
                    await a.update(fname, "k", "set", "lost?")
                assert info.value.event is None
            assert a.context == ctx and a.value("quorum", "k") == value and a.stats.events_local == local
            log.control.heal()
            await until(lambda: len(a.membership.live(None, a.now_ms(), int(a.liveness * 1000))) == 3,
                        what="the fleet is live again")
            ev = await a.update("quorum", "k", "set", "after heal")
            assert a.acknowledged(QUORUM(), ev.dot)

    run(scenario())


def test_ack_timeout_raises_with_the_event_or_degrades_to_local():
    async def scenario():
        schema = [*SCHEMA,
                  Feature("soft", LWWRegister,
                          policy=Tunable(write=ACKS(3), read=LOCAL, timeout=0.3, on_unavailable="local"))]
        async with fleet(3, schema=schema) as (log, [a, b, c]):
            log.faults.delay = 2.0  # heartbeats flow, but b and c apply records late
            with pytest.raises(Unavailable) as info:
                await a.at(timeout=0.3).update("acks2", "k", "set", "unacked")
            ev = info.value.event
            assert ev is not None and ev.field == "acks2"
            assert a.value("acks2", "k") == "unacked" and ev.dot in a.context, "kept locally"
            assert not a.acknowledged(ACKS(2), ev.dot)
            soft = await a.update("soft", "k", "set", "degraded")
            assert a.stats.events_rejected.get("degraded_write") == 1
            log.faults.delay = 0.0
            # not withdrawn: both writes keep replicating
            await until(lambda: all(d in r.context for r in (b, c) for d in (ev.dot, soft.dot)),
                        what="the unacknowledged writes replicate")
            assert b.value("acks2", "k") == "unacked" and c.value("soft", "k") == "degraded"

    run(scenario())


def test_log_level_waits_for_the_log_to_sync(tmp_path):
    async def scenario():
        log = await LocalLog.open(tmp_path / "log", fsync="never")
        r = await open_replica(log, "a")
        syncs = []
        real_sync = log.sync

        async def spy() -> None:
            syncs.append(1)
            await real_sync()

        try:
            log.sync = spy  # type: ignore[method-assign]
            await r.update("free", "k", "increment", 1)
            assert syncs == [], "LOCAL does not wait for a sync"
            ev = await r.update("logged", "k", "set", "durable")
            assert syncs and r.value("logged", "k") == "durable"

            async def broken() -> None:
                raise OSError("disk gone")

            log.sync = broken  # type: ignore[method-assign]
            with pytest.raises(Unavailable) as info:
                await r.update("logged", "k", "set", "unsure")
            assert info.value.event is not None and info.value.event.dot != ev.dot
        finally:
            log.sync = real_sync  # type: ignore[method-assign]
            await r.close()
            await log.close()

    run(scenario())


def test_max_staleness_raises_when_a_peer_went_quiet_and_wait_waits_until_fresh():
    async def scenario():
        async with fleet(2) as (log, [a, b]):
            b.write("fresh", "k", "set", "v1")
            b.write("fresh_wait", "k", "set", "v1")
            await b.flush()
            await until(lambda: a.value("fresh", "k") == "v1" and a.staleness_ms() <= 100, what="a is fresh")
            assert await a.read("fresh", "k") == "v1"
            log.control.partition([["a"], ["b"]])
            await until(lambda: a.staleness_ms() > 100, what="b's silence makes a stale")
            with pytest.raises(StaleRead):
                await a.read("fresh", "k")
            assert a.stats.events_rejected.get("stale_read") == 1
            waiting = asyncio.ensure_future(a.read("fresh_wait", "k"))
            await asyncio.sleep(0.1)
            assert not waiting.done(), "cannot be fresh while b is unheard"
            log.control.heal()
            assert await waiting == "v1"
            assert a.stats.events_rejected.get("stale_read") == 1, "the read that waited did not fail"

    run(scenario())


def test_session_read_waits_for_a_token_from_another_replica():
    async def scenario():
        async with fleet(2) as (_, [a, b]):
            s = a.session()
            await s.update("free", "k", "increment", 3)
            a.write("free", "k", "increment", 4)  # applied at a, not yet in the log
            token = a.context
            with pytest.raises(StaleRead):
                await b.read("free", "k", level=SESSION(token), timeout=0.1)
            reading = asyncio.ensure_future(b.session(token).read("free", "k", timeout=10))
            await a.flush()
            assert await reading == 7
            # a session token carries read-your-writes over to b
            assert await b.session(s.token).read("free", "k") == 7

    run(scenario())


def test_quorum_read_sees_a_quorum_write_made_elsewhere():
    async def scenario():
        async with fleet(3) as (_, [a, b, c]):
            for i in range(5):
                writer, reader = (a, c) if i % 2 == 0 else (c, b)
                await writer.update("quorum", "k", "set", i)
                assert await reader.read("quorum", "k") == i

    run(scenario())


def _raw_record(actor: str, seq: int, value: int, meta: dict[str, str]) -> bytes:
    ev = Event(actor, seq, make_hlc(int(time.time() * 1000)), "free", "k", GCounter({actor: value}))
    return MsgpackCodec().encode(Batch.of([ev], meta))


def test_removed_replica_is_refused_everywhere_and_rejoins_as_a_new_incarnation():
    async def scenario():
        async with fleet(2) as (log, [a, b]):
            c = await open_replica(log, "c", follow=False)  # applies only when told: it lags the removal
            try:
                for r in (a, b):
                    r.observe_heartbeat(c.heartbeat())
                c.write("free", "k", "increment", 1)
                await c.flush()
                await until(lambda: a.value("free", "k") == 1, what="a applied c's first write")
                removed = await a.remove_replica("c")
                assert removed == c.actor
                c.write("free", "k", "increment", 10)  # c has not heard of its removal yet
                await c.flush()
                for r in (a, b):
                    await r.sync(timeout=10)
                    assert r.value("free", "k") == 1, "events before the removal are kept, later ones refused"
                    assert r.stats.events_rejected.get("removed_replica") == 1
                    assert "c" not in r.membership
                    assert r.observe_heartbeat(c.heartbeat()) is False
                    assert r.stats.events_rejected["removed_replica"] == 2, "its heartbeats are refused too"
                await c.catch_up()  # now c learns it was removed
                with pytest.raises(ReplicaRemoved):
                    c.write("free", "k", "increment", 1)
                with pytest.raises(ReplicaRemoved):
                    await c.update("acks2", "k", "set", "x")
            finally:
                await c.close()
            c2 = await open_replica(log, "c")  # a fresh identity: a new incarnation
            try:
                assert c2.actor != removed
                c2.write("free", "k", "increment", 5)
                await c2.flush()
                await until(lambda: a.value("free", "k") == 6 and b.value("free", "k") == 6,
                            what="the new incarnation's write applies")
                await until(lambda: "c" in a.membership, what="the new incarnation is heard")
                assert a.membership.get("c").actor == c2.actor
            finally:
                await c2.close()

    run(scenario())


def test_removal_survives_a_restart_from_snapshot(tmp_path):
    async def scenario():
        log = MemoryLog()
        a = await Replica.open(tmp_path / "a", schema=SCHEMA, log=log, name="a",
                               heartbeat_interval=HB, liveness=LIVE)
        c = await open_replica(log, "c", follow=False)
        meta = {"region": "default", "role": "default"}
        try:
            a.observe_heartbeat(c.heartbeat())
            c.write("free", "k", "increment", 1)
            await c.flush()
            await until(lambda: a.value("free", "k") == 1, what="a applied c's write")
            actor = await a.remove_replica("c")
            await a.sync(timeout=10)
            await a.close()
            # the snapshot alone must carry the removal: the log before it is gone
            await log.truncate_before(await log.end())
            a = await Replica.open(tmp_path / "a", schema=SCHEMA, log=log, name="a",
                                   heartbeat_interval=HB, liveness=LIVE)
            # the next seq c would use (its join record and its write came before)
            await log.append([_raw_record(actor, c.context.max_seq(actor) + 1, 50, meta)])
            await a.sync(timeout=10)
            assert a.value("free", "k") == 1
            assert a.stats.events_rejected.get("removed_replica") == 1
        finally:
            await c.close()
            await a.close()

    run(scenario())


def test_heartbeat_garbage_is_counted_and_ignored():
    async def scenario():
        async with fleet(3) as (log, [a, b, c]):
            intruder = log.control.endpoint()
            intruder.start("intruder", lambda data: None)
            await intruder.publish(b"\x00 not a heartbeat")
            await intruder.publish(packb(["heartbeat", 2, ["x", "", "eu", "r", -1]]))
            for r in (a, b, c):
                assert r.stats.events_rejected.get("bad_heartbeat") == 2
                assert sorted(hb.name for hb in r.membership) == ["a", "b", "c"]
            ev = await a.update("all", "k", "set", "still works")
            assert ev.dot in b.context and ev.dot in c.context

    run(scenario())


def test_two_replicas_on_one_local_log_directory_acknowledge_a_quorum_write(tmp_path):
    async def scenario():
        logs = [await LocalLog.open(tmp_path / "shared") for _ in range(2)]
        reps = [await open_replica(lg, name) for lg, name in zip(logs, "ab", strict=True)]
        a, b = reps
        try:
            await until(lambda: len(a.membership) == 2 and len(b.membership) == 2,
                        what="the replicas hear each other through the control directory")
            assert (tmp_path / "shared" / "control" / "a.hb").exists()
            ev = await a.update("quorum", "k", "set", "2 of 2")
            assert a.acknowledged(QUORUM(), ev.dot)  # a majority of 2 is both
            assert ev.dot in b.context and b.value("quorum", "k") == "2 of 2"
            assert await b.read("quorum", "k") == "2 of 2"
        finally:
            for r in reps:
                await r.close()
            for lg in logs:
                await lg.close()

    run(scenario())


def test_eventual_fields_keep_working_when_acks_cannot_be_had():
    async def scenario():
        async with fleet(2, liveness=0.2) as (log, [a, b]):
            log.control.partition([["a"], ["b"]])
            await until(lambda: len(a.membership.live(None, a.now_ms(), 200)) == 1, what="b looks down")
            a.write("free", "k", "increment", 2)
            await a.update("free", "k", "increment", 1)
            assert Eventual().write == LOCAL and a.value("free", "k") == 3
            await until(lambda: b.value("free", "k") == 3, what="the log still carries eventual writes")

    run(scenario())
