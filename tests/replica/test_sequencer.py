"""The sequencer client: SEQUENCED operations are appended to the sequencing log and
evaluated by every replica in log order, so conditional operations reach the same outcome
everywhere; failed appends are cancelled by the next op; timeouts raise Unavailable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crdtsync import Feature, LWWRegister, PNCounter, Strong
from crdtsync.errors import Unavailable
from crdtsync.log import MemoryLog
from crdtsync.log._protocol import read_range
from crdtsync.sequenced import SEQ_FIELD, SequencedOp

from ._parts import CODEC, Assembly, ident

FIELDS = (
    Feature("stock", PNCounter, policy=Strong(timeout=2.0)),
    Feature("owner", LWWRegister, policy=Strong(timeout=2.0)),
)


class Node:
    """One replica's sequencer client and store; its catch-up plays the applier: every
    sequenced op in the log, in log order, goes to ``apply_op`` once (by dot)."""

    def __init__(self, name: str, log: MemoryLog, *, following: bool = False) -> None:
        self.p = Assembly(FIELDS, ident(name, incarnation="x"), log=log, following=following)
        self.seq = self.p.sequencer
        self.p.catch_ups._effect = self.apply_log  # type: ignore[attr-defined]

    async def apply_log(self) -> None:
        st, log = self.p.store, self.p.log
        async for entry in read_range(log, st.position, await log.end()):
            for ev in CODEC.decode(entry.payload).events:
                if ev.dot not in st.ctx() and isinstance(ev.delta, SequencedOp):
                    tbl = st.table(ev.field, None)
                    self.seq.apply_op(ev, ev.delta, tbl, tbl.get(ev.key))
                    st.set_context(st.ctx().add(ev.dot))
            st.position = entry.position

    async def op(self, fname: str, op: str, *args: Any, cond: Any = None, timeout: float = 2.0) -> Any:
        d = self.p.defs.get(fname)
        outcome, _ = await self.seq.run(d, "k", op, args, {}, cond, timeout)
        return outcome

    def value(self, fname: str) -> Any:
        return self.p.store.value(fname, "k")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_an_operation_is_sequenced_applied_in_log_order_and_its_outcome_returned() -> None:
    async def scenario() -> None:
        a = Node("a", MemoryLog())
        out = await a.op("stock", "increment", 5)
        assert out.applied and (out.current, out.value) == (0, 5) and out.error is None
        assert a.value("stock") == 5
        out = await a.op("stock", "decrement", 3, cond=("ge", 3))
        assert out.applied and a.value("stock") == 2

    run(scenario())


def test_a_condition_that_does_not_hold_is_refused_the_same_way_everywhere() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        a, b = Node("a", log), Node("b", log)
        await a.op("stock", "increment", 1)
        await b.apply_log()
        # both think one unit is left; in log order only the first decrement finds it
        first = await a.op("stock", "decrement", 1, cond=("ge", 1))
        second = await b.op("stock", "decrement", 1, cond=("ge", 1))
        assert first.applied and not second.applied
        assert second.current == 0 and second.value == 0
        await a.apply_log()
        assert a.value("stock") == b.value("stock") == 0
        assert a.p.stats.ops_refused == b.p.stats.ops_refused == 1

    run(scenario())


def test_compare_and_set_outcomes_agree_across_replicas() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        a, b = Node("a", log), Node("b", log)
        assert (await a.op("owner", "set", "alice", cond=("eq", None))).applied
        assert not (await b.op("owner", "set", "bob", cond=("eq", None))).applied
        await a.apply_log()
        assert a.value("owner") == b.value("owner") == "alice"

    run(scenario())


def test_the_later_op_in_log_order_wins_whatever_the_writers_clocks_say() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        a, b = Node("a", log), Node("b", log)
        a.p.clock.ms += 50_000  # a's clock runs far ahead of b's
        await a.op("owner", "set", "from-a")
        await b.op("owner", "set", "from-b")
        await a.apply_log()
        assert a.value("owner") == b.value("owner") == "from-b"
        stamp = a.p.store.tables[SEQ_FIELD]["stamp"].value()
        assert stamp == b.p.store.tables[SEQ_FIELD]["stamp"].value()

    run(scenario())


def test_a_mutation_that_fails_fails_the_same_at_every_replica() -> None:
    async def scenario() -> None:
        a = Node("a", MemoryLog())
        out = await a.op("stock", "increment", "not a number")
        assert not out.applied and out.error is not None
        assert a.value("stock") == 0

    run(scenario())


def test_an_unknown_mutator_and_a_closed_client_are_refused_before_anything_is_appended() -> None:
    async def scenario() -> None:
        a = Node("a", MemoryLog())
        with pytest.raises(ValueError, match="no mutator"):
            await a.op("stock", "explode")
        a.seq.closed = True
        with pytest.raises(RuntimeError, match="closed"):
            await a.op("stock", "increment", 1)
        assert await a.p.log.end() == 0

    run(scenario())


def test_a_failed_append_raises_unavailable_and_the_next_op_cancels_it() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        a = Node("a", log)
        log.faults.fail_appends(1)
        with pytest.raises(Unavailable, match="outcome is unknown") as info:
            await a.op("stock", "increment", 5)
        lost = info.value.event
        assert lost is not None
        out = await a.op("stock", "increment", 1)
        assert out.applied and a.value("stock") == 1, "the failed op was cancelled, not applied"
        assert a.p.stats.ops_cancelled == 1
        assert lost.dot in a.p.store.ctx(), "its seq is no gap: the cancellation carries its dot"

    run(scenario())


def test_an_append_that_stalls_past_the_timeout_raises_unavailable(py310_timeouts: type[Exception]) -> None:
    async def scenario() -> None:
        log = MemoryLog()
        a = Node("a", log)
        log.faults.stall()
        with pytest.raises(Unavailable, match="did not sequence"):
            await a.op("stock", "increment", 1, timeout=0.05)
        log.faults.resume()

    run(scenario())


def test_an_op_sequenced_but_not_applied_in_time_raises_unavailable(py310_timeouts: type[Exception]) -> None:
    async def scenario() -> None:
        a = Node("a", MemoryLog(), following=True)  # "an apply loop runs", but nothing applies
        with pytest.raises(Unavailable, match="sequenced but not applied"):
            await a.op("stock", "increment", 1, timeout=0.05)
        assert a.seq._outcomes == {}, "the abandoned outcome is not kept"

    run(scenario())


def test_closing_fails_whoever_waits_for_an_outcome() -> None:
    async def scenario() -> None:
        a = Node("a", MemoryLog(), following=True)
        task = asyncio.ensure_future(a.op("stock", "increment", 1, timeout=5.0))
        while not a.seq._outcomes:
            await asyncio.sleep(0.001)
        a.seq.fail_waiting()
        with pytest.raises(Unavailable, match="closed"):
            await task

    run(scenario())


def test_sync_to_end_on_its_own_log_syncs_it() -> None:
    async def scenario() -> None:
        a = Node("a", MemoryLog())
        await a.seq.sync_to_end(1.0)
        assert a.p.syncs.n == 1

    run(scenario())


def test_sync_to_end_of_an_upstream_log_waits_until_its_records_arrived_here() -> None:
    async def scenario() -> None:
        upstream = MemoryLog()
        writer = Node("w", upstream)
        await writer.op("stock", "increment", 3)
        edge = Node("e", MemoryLog())
        edge.seq.sequencer = upstream  # sequenced through the upstream log, applied from its own
        with pytest.raises(Unavailable, match="forwarder"):
            await edge.seq.sync_to_end(0.05)
        # a forwarder copies the upstream records down; once applied, the sync returns
        async for e in upstream.read(0):
            await edge.p.log.append([e.payload])
        await edge.apply_log()
        await edge.seq.sync_to_end(1.0)
        assert edge.value("stock") == 3

    run(scenario())
