"""The replica on a real LocalLog: writes, recovery, idempotency, bad input, subscriptions."""

from __future__ import annotations

import asyncio
import os

import pytest

from crdtsync import (
    DisableWinsFlag,
    Feature,
    Flag,
    GCounter,
    LocalLog,
    LWWRegister,
    MemoryLog,
    ORSet,
    PNCounter,
    Replica,
    WindowedCounter,
)
from crdtsync.clock import HLC, make_hlc
from crdtsync.errors import PermissionDenied, ResidencyViolation
from crdtsync.events import Batch, Event, MsgpackCodec

SCHEMA = [
    Feature("clicks", GCounter),
    Feature("segment", LWWRegister),
    Feature("tags", ORSet),
    Feature("eu_income", LWWRegister, residency={"eu"}),
    Feature("limits", LWWRegister, writers={"risk"}),
    Flag("checkout", lambda: DisableWinsFlag(default=True)),
    Feature("opens_1h", lambda: WindowedCounter(bucket_ms=60_000, buckets=60)),
]


def run(coro):
    return asyncio.run(coro)


def test_write_read_and_recover_from_snapshot_and_tail(tmp_path):
    async def scenario():
        async with Replica.open(tmp_path / "r", schema=SCHEMA, name="cloud", snapshot_every=10) as r:
            actor = r.actor
            for i in range(25):
                r.write("clicks", f"u{i % 3}", "increment", 1)
            await r.update("segment", "u0", "set", "premium")
            await r.update("tags", "u0", "add", "vip")
            await r.update("checkout", "global", "disable")
            await r.flush()
            digest = r.digest()
            ctx = r.context
        assert (tmp_path / "r" / "identity.json").exists()
        async with Replica.open(tmp_path / "r", schema=SCHEMA) as r2:
            assert r2.actor == actor, "reopening a data directory keeps the incarnation"
            assert r2.digest() == digest and r2.context == ctx
            assert r2.value("clicks", "u0") == 9 and r2.value("segment", "u0") == "premium"
            assert r2.value("tags", "u0") == frozenset({"vip"}) and r2.value("checkout", "global") is False
            ev = await r2.update("clicks", "u0", "increment", 1)
            assert ev.seq == ctx.max_seq(actor) + 1, "seqs continue after a restart"

    run(scenario())


def test_lost_state_rejoins_as_new_incarnation(tmp_path):
    async def scenario():
        async with Replica.open(tmp_path / "a", schema=SCHEMA, name="edge") as r:
            first = r.actor
        (tmp_path / "a" / "identity.json").unlink()
        async with Replica.open(tmp_path / "a", schema=SCHEMA, name="edge") as r:
            assert r.actor != first and r.actor.startswith("edge~")

    run(scenario())


def test_two_replicas_converge_through_one_log(tmp_path):
    async def scenario():
        log = await LocalLog.open(tmp_path / "shared")
        a = await Replica.open(schema=SCHEMA, log=log, name="a")
        b = await Replica.open(schema=SCHEMA, log=log, name="b")
        try:
            await a.update("checkout", "global", "disable")
            await b.update("checkout", "global", "enable")  # concurrent with a's disable? b has not seen it
            await a.update("tags", "k", "add", "x")
            await b.update("tags", "k", "add", "y")
            await a.sync(timeout=5)
            await b.sync(timeout=5)
            assert a.digest() == b.digest() and a.context == b.context
            assert a.value("tags", "k") == frozenset({"x", "y"})
        finally:
            await a.close()
            await b.close()
            await log.close()

    run(scenario())


def test_duplicates_are_idempotent_and_corrupt_records_quarantined(tmp_path):
    async def scenario():
        log = MemoryLog()
        r = await Replica.open(tmp_path / "r", schema=SCHEMA, log=log, name="r", follow=False)
        codec = MsgpackCodec()
        ev = Event("other~1", 1, make_hlc(1_000), "clicks", "u", GCounter().increment(5, actor="other~1"))
        rec = codec.encode(Batch.of([ev]))
        await log.append([rec, rec, b"\x00garbage", rec[:-3]])
        ev2 = Event("other~1", 2, make_hlc(1_001), "clicks", "u", GCounter({"other~1": 5}).increment(2, actor="other~1"))
        await log.append([codec.encode(Batch.of([ev2]))])
        await r.catch_up()
        assert r.value("clicks", "u") == 7, "the valid events after the damage were applied"
        assert r.stats.events_duplicate == 1
        assert r.stats.records_quarantined == 2
        quarantined = sorted(p.name for p in (tmp_path / "r" / "quarantine").iterdir())
        assert len(quarantined) == 4 and any(n.endswith(".txt") for n in quarantined)
        await r.close()

    run(scenario())


def test_rejects_future_timestamps_wrong_types_residency_and_roles(tmp_path):
    async def scenario():
        log = MemoryLog()
        wall = [10_000_000]
        r = await Replica.open(schema=SCHEMA, log=log, name="r", region="us", hlc=HLC(clock=lambda: wall[0]),
                               follow=False)
        codec = MsgpackCodec()
        o = "evil~1"
        events = [
            Event(o, 1, make_hlc(wall[0] + 3_600_000), "clicks", "u", GCounter().increment(1, actor=o)),
            Event(o, 2, make_hlc(wall[0]), "clicks", "u", LWWRegister().set(1, actor=o, ts=make_hlc(wall[0]))),
            Event(o, 3, make_hlc(wall[0]), "eu_income", "u", LWWRegister().set(9, actor=o, ts=make_hlc(wall[0]))),
            Event(o, 4, make_hlc(wall[0]), "limits", "u", LWWRegister().set(9, actor=o, ts=make_hlc(wall[0]))),
            Event(o, 5, make_hlc(wall[0]), "clicks", "u", GCounter().increment(2, actor=o)),
        ]
        await log.append([codec.encode(Batch.of(events, {"region": "us", "role": "app"}))])
        await r.catch_up()
        assert r.stats.events_rejected == {
            "future_timestamp": 1, "wrong_type": 1, "residency": 1, "permission": 1,
        }
        assert r.value("clicks", "u") == 2, "the good event in the same batch still applied"
        assert r.value("eu_income", "u") is None and r.value("limits", "u") is None
        with pytest.raises(ResidencyViolation):
            r.write("eu_income", "u", "set", 1)
        with pytest.raises(PermissionDenied):
            r.write("limits", "u", "set", 1)
        with pytest.raises(KeyError, match="no field named"):
            r.write("nope", "u", "set", 1)
        with pytest.raises(ValueError, match="no mutator"):
            r.write("clicks", "u", "set", 1)
        await r.close()

    run(scenario())


def test_subscriptions_see_local_and_remote_changes_and_survive_bad_callbacks(tmp_path):
    async def scenario():
        log = MemoryLog()
        a = await Replica.open(schema=SCHEMA, log=log, name="a")
        b = await Replica.open(schema=SCHEMA, log=log, name="b")
        seen = []
        a.subscribe(lambda ch: seen.append((ch.field, ch.key, ch.local)), fields=["clicks"])
        a.subscribe(lambda ch: 1 / 0)
        changes = a.changes(["tags"])
        nxt = asyncio.ensure_future(changes.__anext__())
        await a.update("clicks", "u", "increment", 1)
        await b.update("clicks", "v", "increment", 1)
        await b.update("tags", "v", "add", "t")
        await a.sync(timeout=5)
        ch = await asyncio.wait_for(nxt, 5)
        assert (ch.field, ch.key, ch.local) == ("tags", "v", False)
        assert ("clicks", "u", True) in seen and ("clicks", "v", False) in seen
        assert a.stats.subscriber_errors >= 3
        await changes.aclose()
        await a.close()
        await b.close()

    run(scenario())


def test_compaction_drops_covered_segments_and_state_survives(tmp_path):
    async def scenario():
        log = await LocalLog.open(tmp_path / "r" / "log", segment_bytes=4096)
        r = await Replica.open(tmp_path / "r", schema=SCHEMA, log=log, name="r")
        r.owns_log = True
        for i in range(400):
            r.write("clicks", f"u{i % 10}", "increment", 1)
            if i % 20 == 0:
                await r.flush()
        await r.flush()
        digest = r.digest()
        segs_before = len(list((tmp_path / "r" / "log").glob("*.seg")))
        await r.compact()
        segs_after = len(list((tmp_path / "r" / "log").glob("*.seg")))
        await r.close()
        assert segs_after < segs_before
        async with Replica.open(tmp_path / "r", schema=SCHEMA) as r2:
            assert r2.digest() == digest

    run(scenario())


def test_sync_facade(tmp_path):
    from crdtsync.sync import SyncReplica

    with SyncReplica.open(tmp_path / "s", schema=SCHEMA, name="web") as r:
        r.update("clicks", "u", "increment", 3)
        r.write("segment", "u", "set", "x")
        r.flush()
        assert r.value("clicks", "u") == 3 and r.value("segment", "u") == "x"
        assert r.view("u", ["clicks", "segment"]).values == {"clicks": 3, "segment": "x"}
    with SyncReplica.open(tmp_path / "s", schema=SCHEMA) as r:
        assert r.value("clicks", "u") == 3


def test_sync_facade_strong_operations(tmp_path):
    """A WSGI app gets the same strong operations as async code."""
    from crdtsync import Strong
    from crdtsync.sync import SyncReplica

    schema = [Feature("balance", PNCounter, policy=Strong(timeout=2)),
              Feature("limit", LWWRegister, policy=Strong(timeout=2))]
    with SyncReplica.open(tmp_path / "s", schema=schema, name="web") as r:
        r.update("balance", "a", "increment", 100)
        assert r.decrement_if_enough("balance", "a", 70)
        assert not r.decrement_if_enough("balance", "a", 70)
        assert r.read("balance", "a") == 30
        assert r.compare_and_set("limit", "a", None, 5) and not r.compare_and_set("limit", "a", None, 6)
        assert r.read("limit", "a") == 5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_worker_gets_a_working_replica_with_a_new_incarnation(tmp_path):
    from crdtsync.sync import SyncReplica

    r = SyncReplica.open(tmp_path / "app", schema=SCHEMA, name="web")
    r.update("clicks", "u", "increment", 1)
    parent_actor = r.actor
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: like a gunicorn --preload worker
        code = 1
        try:
            os.close(rfd)
            r.update("clicks", "u", "increment", 10)
            ok = r.actor != parent_actor and r.value("clicks", "u") == 11
            os.write(wfd, f"{r.actor}|{int(ok)}".encode())
            r.close()
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    child_msg = os.read(rfd, 1000).decode()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    child_actor, ok = child_msg.split("|")
    assert ok == "1" and child_actor.startswith("web.w")
    r.sync()
    assert r.value("clicks", "u") == 11, "the parent sees the worker's write through the shared log"
    r.close()


def test_reopened_without_schema_after_a_snapshot_still_enforces_definitions(tmp_path):
    """Definitions live in the log and the snapshot, not only in code."""

    async def scenario():
        async with Replica.open(tmp_path / "r", schema=SCHEMA, name="eu-1", region="eu") as r:
            r.write("eu_income", "u", "set", 1)
            await r.flush()
            await r.snapshot()
        async with Replica.open(tmp_path / "r") as r:
            assert r.definitions.get("eu_income").residency == {"eu"}
            assert r.definitions.get("limits").writers == {"risk"}

    run(scenario())


def test_concurrent_writers_share_appends(tmp_path):
    """Group commit: writers waiting on an append in flight go out together in the next
    one, instead of queueing behind each other one event per append."""

    async def scenario():
        async with Replica.open(tmp_path / "r", schema=SCHEMA, name="web") as r:
            appends = []
            inner = r.log.append

            async def counting(records):
                appends.append(len(records))
                return await inner(records)

            r.log.append = counting

            async def client(c):
                for _ in range(50):
                    await r.update("clicks", f"u{c}", "increment")

            await asyncio.gather(*[client(c) for c in range(8)])
            assert len(appends) < 8 * 50 * 0.75  # one client alone would need 400
            assert [r.value("clicks", f"u{c}") for c in range(8)] == [50] * 8
        async with Replica.open(tmp_path / "r", schema=SCHEMA) as r:
            assert [r.value("clicks", f"u{c}") for c in range(8)] == [50] * 8

    run(scenario())


def test_a_failed_append_fails_every_waiter_and_requeues_its_events():
    async def scenario():
        log = MemoryLog()
        async with Replica.open(log=log, schema=SCHEMA, name="web", follow=False, control=False) as r:
            gate = asyncio.Event()

            async def slow(batch):
                await gate.wait()
                raise OSError("disk gone")

            log.faults.before_append = slow
            r.write("clicks", "u", "increment")
            first = asyncio.ensure_future(r.flush())
            await asyncio.sleep(0)
            r.write("clicks", "u", "increment")
            second = asyncio.ensure_future(r.flush())
            await asyncio.sleep(0)
            gate.set()
            for f in (first, second):
                with pytest.raises(OSError, match="disk gone"):
                    await f
            assert r.pending == 2
            log.faults.before_append = None
            await r.flush()
            assert r.pending == 0 and len(log._records) >= 1

    run(scenario())
