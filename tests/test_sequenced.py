"""SEQUENCED fields by example: one log order, one outcome, everywhere.

A ``Strong()`` field is written with operations that the shared log orders; each replica
evaluates them in that order, so conditional operations (compare-and-set, decrement if
enough) have the same outcome at every replica, at replay, and after a restart from a
snapshot. Without the log they refuse (``Unavailable``) rather than guess.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from crdtsync import Eventual, Feature, LocalLog, LWWRegister, MemoryLog, PNCounter, Replica, Strong
from crdtsync.clock import HLC
from crdtsync.errors import PolicyViolation, Unavailable
from crdtsync.policy import LOCAL, MAX_STALENESS
from crdtsync.testing.faults import CuttableLog, LogCut, crash

SCHEMA = [
    Feature("limit", LWWRegister, policy=Strong(timeout=2.0)),
    Feature("stock", PNCounter, policy=Strong(timeout=2.0)),
    Feature("note", LWWRegister),  # eventual: merged by HLC, not ordered by the log
    Feature("visits", PNCounter),
]
#: the same field names, all eventual: how a misconfigured (or hostile) replica sees them
EVENTUAL_SCHEMA = [
    Feature("limit", LWWRegister, policy=Eventual()),
    Feature("stock", PNCounter, policy=Eventual()),
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def caused_by_cut(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, LogCut):
            return True
        exc = exc.__cause__
    return False


async def open_many(log: Any, n: int, **kw: Any) -> list[Replica]:
    return [await Replica.open(log=log, schema=SCHEMA, name=f"r{i}", **kw) for i in range(n)]


async def close_all(replicas: list[Replica]) -> None:
    for r in replicas:
        await r.close()


def test_concurrent_cas_has_one_winner_and_the_same_outcome_at_every_replica() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        rs = await open_many(log, 4)
        try:
            # all four try to claim the empty register at once: exactly one may
            results = await asyncio.gather(*(r.compare_and_set("limit", "k", None, f"by-{r.identity.name}")
                                             for r in rs))
            assert sorted(results) == [False, False, False, True]
            winner = rs[results.index(True)].identity.name
            for r in rs:
                await r.sync_to_end()
                assert r.value("limit", "k") == f"by-{winner}"
                assert r.stats.ops_refused == 3, "every replica refused the same three operations"
            # the outcome tells the loser what it lost to
            loser = rs[results.index(False)]
            out = await loser.conditional("limit", "k", "set", ("mine",), cond=("eq", None))
            assert not out.applied and out.current == out.value == f"by-{winner}"
            # a replica that joins later replays the log to the same outcomes
            late = await Replica.open(log=log, schema=SCHEMA, name="late")
            rs.append(late)
            assert late.value("limit", "k") == f"by-{winner}" and late.stats.ops_refused == 4
            for r in rs:
                await r.sync_to_end()
            assert len({r.digest() for r in rs}) == 1
        finally:
            await close_all(rs)

    run(scenario())


def test_concurrent_decrements_never_overdraw_and_agree_everywhere() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        rs = await open_many(log, 3)
        try:
            await rs[0].update("stock", "sku", "increment", 10)
            # 3 replicas x 4 decrements of 1 = 12 asked, 10 available: exactly 10 succeed
            results = await asyncio.gather(*(r.decrement_if_enough("stock", "sku", 1)
                                             for r in rs for _ in range(4)))
            assert results.count(True) == 10 and results.count(False) == 2
            for r in rs:
                await r.sync_to_end()
                assert r.value("stock", "sku") == 0 and r.stats.ops_refused == 2
            assert not await rs[1].decrement_if_enough("stock", "sku", 1)
        finally:
            await close_all(rs)

    run(scenario())


def test_a_later_op_in_log_order_wins_even_if_its_writers_clock_is_behind() -> None:
    """The writer ``slow`` stamps its operation 20 s before ``fast``'s, but appends it
    later: log order decides, so ``slow``'s value wins at every replica. An eventual
    LWW field with the same two writes goes the other way (the higher stamp wins),
    which is what makes this test able to fail."""
    base = 1_700_000_000_000

    async def scenario() -> None:
        log = MemoryLog()
        # slow opens first and does not follow the log: it has not seen fast's stamps
        # when it writes, so its own stamps stay behind
        slow = await Replica.open(log=log, schema=SCHEMA, name="slow", control=False, follow=False,
                                  hlc=HLC(clock=lambda: base))
        fast = await Replica.open(log=log, schema=SCHEMA, name="fast", control=False,
                                  hlc=HLC(clock=lambda: base + 20_000))
        try:
            fast.write("note", "k", "set", "fast")
            await fast.flush()
            ev_fast = await fast.update("limit", "k", "set", "fast")
            slow.write("note", "k", "set", "slow")
            await slow.flush()
            ev_slow = await slow.update("limit", "k", "set", "slow")
            assert ev_slow.hlc < ev_fast.hlc, "the later operation carries the older stamp"
            await fast.sync_to_end()
            await slow.catch_up()
            for r in (fast, slow):
                assert r.value("limit", "k") == "slow", "log order wins for a SEQUENCED field"
                assert r.value("note", "k") == "fast", "the higher stamp wins for an eventual field"
            # and a CAS that expects the log-order winner succeeds everywhere
            assert await fast.compare_and_set("limit", "k", "slow", "done")
            await slow.catch_up()
            assert slow.value("limit", "k") == "done"
        finally:
            await close_all([slow, fast])

    run(scenario())


def test_conditional_ops_and_local_writes_need_the_field_policy_to_allow_them() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        (r,) = await open_many(log, 1)
        try:
            before = len(log)
            with pytest.raises(PolicyViolation, match="SEQUENCED"):
                await r.compare_and_set("note", "k", None, "x")
            with pytest.raises(PolicyViolation, match="SEQUENCED"):
                await r.decrement_if_enough("visits", "k", 1)
            with pytest.raises(PolicyViolation, match="update"):
                r.write("limit", "k", "set", "x")  # LOCAL write of a strong field
            with pytest.raises(PolicyViolation):
                await r.at(read=LOCAL).read("limit", "k")  # weaker than LINEARIZABLE
            with pytest.raises(PolicyViolation):
                await r.at(read=MAX_STALENESS(1.0)).read("limit", "k")
            await r.flush()
            assert len(log) == before, "nothing was written"
            assert r.value("note", "k") is None and r.value("limit", "k") is None
        finally:
            await r.close()

    run(scenario())


def test_a_plain_delta_for_a_sequenced_field_is_rejected_and_counted() -> None:
    """A replica whose schema says the field is eventual writes a plain LWW delta for
    it; replicas whose schema says Strong refuse it (``not_sequenced``), so the field
    still changes only in log order."""

    async def scenario() -> None:
        log = MemoryLog()
        strong = await Replica.open(log=log, schema=SCHEMA, name="strong")
        rogue = await Replica.open(log=log, schema=EVENTUAL_SCHEMA, name="rogue")
        try:
            assert await strong.compare_and_set("limit", "k", None, 5)
            await rogue.sync_to_end()
            rogue.write("limit", "k", "set", 999)
            rogue.write("stock", "k", "increment", 1_000)
            await rogue.flush()
            await strong.sync_to_end()
            assert strong.stats.events_rejected.get("not_sequenced") == 2
            assert strong.value("limit", "k") == 5 and strong.value("stock", "k") == 0
            # the field keeps working in log order
            assert await strong.compare_and_set("limit", "k", 5, 6)
            assert not await strong.decrement_if_enough("stock", "k", 1)
            # a replica opened later rejects them the same way
            late = await Replica.open(log=log, schema=SCHEMA, name="late")
            assert late.stats.events_rejected.get("not_sequenced") == 2
            await strong.sync_to_end()
            assert late.value("limit", "k") == 6 and late.digest() == strong.digest()
            await late.close()
        finally:
            await close_all([strong, rogue])

    run(scenario())


def test_replay_from_the_log_and_from_snapshot_plus_tail_gives_the_same_state_and_outcomes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        logdir = tmp_path / "log"

        async def open_replica(name: str, **kw: Any) -> Replica:
            link = CuttableLog(await LocalLog.open(logdir, fsync="never"), close_inner=True, name=name)
            return await Replica.open(tmp_path / name, log=link, schema=SCHEMA, **kw)

        async def release(r: Replica) -> None:
            await r.close()
            await r.log.close()

        writer = await open_replica("writer")
        # a follower that replays the log in one go later (catch_up), watching every
        # sequenced operation as it is evaluated
        watcher = await open_replica("watcher", follow=False)
        seen: list[tuple[Any, Any]] = []
        watcher.subscribe(lambda ch: seen.append((ch.event.dot, watcher.value(ch.field, ch.key))),
                          fields=["limit", "stock"])
        archive = await open_replica("archive", follow=False)
        outcomes = []
        try:
            await writer.update("stock", "s", "increment", 5)
            for i in range(40):
                if i % 2:
                    out = await writer.conditional("limit", "k", "set", (i % 3,), cond=("eq", (i - 1) % 3))
                else:
                    out = await writer.conditional("stock", "s", "decrement", (1,), cond=("ge", 1))
                outcomes.append((out.applied, out.value))
                if i == 19:  # the archive snapshots halfway, then dies without a final one
                    await archive.catch_up()
                    await archive.snapshot()
                    refused_at_snapshot = archive.stats.ops_refused
                    await crash(archive)
                    await archive.log.close()
            assert {a for a, _ in outcomes} == {True, False}, "both outcomes occur"
            refused = writer.stats.ops_refused
            assert refused == sum(not a for a, _ in outcomes)

            # replay from the log: same outcomes, in the same order
            await writer.sync_to_end()
            await watcher.catch_up()
            assert [v for _, v in seen[1:]] == [v for _, v in outcomes]
            assert watcher.stats.ops_refused == refused
            assert watcher.digest() == writer.digest()

            # replay from snapshot + tail: only the tail is evaluated, to the same state
            archive2 = await open_replica("archive")
            await writer.sync_to_end()
            assert archive2.actor == archive.actor
            assert archive2.stats.ops_refused == refused - refused_at_snapshot
            assert archive2.digest() == writer.digest()
            assert archive2.value("limit", "k") == writer.value("limit", "k")
            assert archive2.value("stock", "s") == writer.value("stock", "s") == 0
            await release(archive2)
        finally:
            for r in (writer, watcher):
                await release(r)

    run(scenario())


def test_sequenced_ops_and_linearizable_reads_are_unavailable_while_the_log_is_stalled() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        a, b = await open_many(log, 2)
        try:
            assert await a.compare_and_set("limit", "k", None, 1)
            log.faults.stall()
            with pytest.raises(Unavailable) as info:
                await a.compare_and_set("limit", "k", 1, 2, timeout=0.2)
            assert info.value.event is not None, "the operation is named: its outcome is unknown"
            with pytest.raises(Unavailable):
                await b.decrement_if_enough("stock", "k", 1, timeout=0.2)
            with pytest.raises(Unavailable):
                await b.read("limit", "k", timeout=0.2)
            assert b.value("limit", "k") == 1, "local state is still there to look at"
            log.faults.resume()
            # the stalled append was abandoned before reaching the log; the field goes on
            assert await b.read("limit", "k") == 1
            assert await b.compare_and_set("limit", "k", 1, 3)
            await a.sync_to_end()
            assert a.value("limit", "k") == 3
        finally:
            log.faults.resume()
            await close_all([a, b])

    run(scenario())


def test_a_replica_cut_off_the_log_refuses_strong_calls_and_serves_only_local_state() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        link = CuttableLog(log, name="edge")
        edge = await Replica.open(log=link, schema=SCHEMA, name="edge")
        (core,) = await open_many(log, 1)
        try:
            assert await core.compare_and_set("limit", "k", None, 1)
            assert await edge.read("limit", "k") == 1
            link.cut()
            assert await core.compare_and_set("limit", "k", 1, 2)
            before = len(log)
            with pytest.raises(Unavailable) as read_err:
                await edge.read("limit", "k")
            assert caused_by_cut(read_err.value)
            with pytest.raises(Unavailable) as cas_err:
                await edge.compare_and_set("limit", "k", 1, 5)
            assert caused_by_cut(cas_err.value), "refused before anything was sent"
            assert len(log) == before
            assert edge.value("limit", "k") == 1, "LOCAL state is stale while cut"
            link.restore()
            assert await edge.read("limit", "k") == 2
            assert await edge.compare_and_set("limit", "k", 2, 5)
            await core.sync_to_end()
            assert core.value("limit", "k") == 5
        finally:
            await close_all([edge, core])
            await link.close()

    run(scenario())


def test_a_failed_append_is_cancelled_by_the_next_op_and_leaves_no_gap() -> None:
    """An op whose append failed has an unknown outcome until the writer's next sequenced
    op, which carries a cancellation of it: no replica keeps a hole in its context."""

    async def main() -> None:
        log = MemoryLog()
        a, b = await open_many(log, 2)
        try:
            log.faults.fail_appends(1)
            with pytest.raises(Unavailable, match="cancels it") as info:
                await a.compare_and_set("limit", "k", None, 1)
            lost = info.value.event
            assert lost is not None and lost.origin == a.seq_actor
            assert await a.compare_and_set("limit", "k", None, 2)   # the lost op never applied
            await b.sync()
            for r in (a, b):
                assert await r.read("limit", "k") == 2
                assert r.context.max_seq(a.seq_actor) == lost.seq + 1
                assert not [d for d in r.context.cloud if d[0] == a.seq_actor]  # no gap
                assert r.stats.ops_cancelled == 1
            # the original arriving late (a retried append) is a duplicate: not applied
            from crdtsync.events import Batch, MsgpackCodec

            await log.append([MsgpackCodec().encode(Batch.of([lost], {"region": "default", "role": "default"}))])
            await b.sync()
            assert await b.read("limit", "k") == 2
        finally:
            await close_all([a, b])

    run(main())
