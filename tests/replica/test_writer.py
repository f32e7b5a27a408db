"""The writer: seqs, the queue and group commit, as the log and readers see them.

A failed append puts its events back in order with their seqs and a retry appends them
once; ``drop_pending`` forgets queued events without reusing their seqs; ``unlogged``
returns every own event the log may not hold yet, once, in seq order, also while an
append is in flight; concurrent ``update()`` calls share a record.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crdtsync import Feature, Replica
from crdtsync.clock import HLC
from crdtsync.errors import StorageFull, Unavailable
from crdtsync.events import Event, MsgpackCodec
from crdtsync.log import MemoryLog
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

from ._parts import sync

SCHEMA = [Feature("s", LWWRegister), Feature("c", GCounter)]
ID = ReplicaIdentity("a", "i1", "default", "default")
CODEC = MsgpackCodec()


async def _open(log: MemoryLog) -> Replica:
    return await Replica.open(schema=SCHEMA, log=log, identity=ID, follow=False, control=False,
                              hlc=HLC(clock=lambda: 1_000_000))


async def _user_events(log: MemoryLog) -> list[Event]:
    return [ev async for e in log.read(0) for ev in CODEC.decode(e.payload).events if ev.field in ("s", "c")]


def _mixed(r: Replica, n: int, start: int = 0) -> None:
    s, c = r.writer("s", "set"), r.writer("c", "increment")
    for i in range(start, start + n):
        if i % 3 == 0:
            s(f"k{i % 5}", i)
        elif i % 3 == 1:
            r.write("s", f"k{i % 5}", "set", [i])
        else:
            c(f"k{i % 5}")


@pytest.mark.parametrize("error", [Unavailable("down"), StorageFull("full")], ids=["unavailable", "full"])
@sync
async def test_a_failed_append_puts_events_back_and_a_retry_appends_them_once(error: Exception) -> None:
    log = MemoryLog()
    r = await _open(log)
    await r.flush()
    base = r._writer.next_seq
    _mixed(r, 30)
    log.faults.fail_appends(1, error)
    with pytest.raises(type(error)):
        await r.flush()
    assert r.pending == 30 and r._writer.next_seq == base + 30
    _mixed(r, 5, start=30)  # written after the failure: behind the events put back
    before = [r._writer.queued_event(i) for i in range(r.pending)]
    assert [e.seq for e in before] == list(range(base, base + 35))
    await r.flush()
    await r.flush()  # nothing left: appends nothing more
    assert r.pending == 0
    logged = await _user_events(log)
    assert logged == before  # each once, in seq order, the same events
    assert r.stats.storage_errors == (1 if isinstance(error, StorageFull) else 0)
    await r.close()


@sync
async def test_drop_pending_forgets_queued_events_and_never_reuses_their_seqs() -> None:
    log = MemoryLog()
    r = await _open(log)
    _mixed(r, 6)
    await r.flush()
    dropped_from = r._writer.next_seq
    _mixed(r, 4, start=6)
    r._writer.drop_pending()
    assert r.pending == 0 and r._writer.next_seq == dropped_from + 4
    await r.flush()  # nothing to append
    r.write("s", "z", "set", 1)
    await r.flush()
    seqs = [e.seq for e in await _user_events(log)]
    assert dropped_from not in seqs and seqs[-1] == dropped_from + 4
    assert len(seqs) == len(set(seqs)) == 7
    await r.close()


@sync
async def test_unlogged_is_every_own_event_not_yet_appended_once_also_during_an_append() -> None:
    log = MemoryLog()
    r = await _open(log)
    await r.flush()
    assert r._writer.unlogged() == []
    _mixed(r, MAX := 40)
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def hold(batch: list[bytes]) -> None:
        entered.set()
        await gate.wait()

    log.faults.before_append = hold
    task = asyncio.ensure_future(r.flush())
    await entered.wait()  # the append of the first 40 is in flight
    _mixed(r, 7, start=MAX)
    pending = [ev for rec in r._writer.unlogged() for ev in CODEC.decode(rec).events]
    gate.set()
    await task
    log.faults.before_append = None
    await r.flush()
    assert pending == await _user_events(log)  # in flight + queued, once each, in order
    assert r._writer.unlogged() == []
    await r.close()


@sync
async def test_concurrent_updates_share_a_record_while_an_append_is_in_flight() -> None:
    log = MemoryLog()
    r = await _open(log)
    await r.flush()

    async def slow(batch: list[bytes]) -> None:
        await asyncio.sleep(0.001)  # an append that takes a while, as a real log's does

    log.faults.before_append = slow
    start = len(log)
    events = await asyncio.gather(*(r.update("c", f"k{i}", "increment") for i in range(8)))
    # the eight share records: at most the first goes alone, the seven that queued
    # behind its append share the next one
    assert 1 <= len(log) - start <= 2
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.dot for e in await _user_events(log)] == [e.dot for e in events]
    await r.close()


@sync
async def test_next_seq_moves_only_with_an_empty_queue() -> None:
    log = MemoryLog()
    r = await _open(log)
    w = r._writer
    w.write("s", "k", "set", (1,), {})
    with pytest.raises(RuntimeError):
        w.next_seq = 100
    await r.flush()
    w.next_seq = 100
    ev: Any = w.write("s", "k", "set", (2,), {})
    assert ev.seq == 100 and w.last_seq() == 100
    await r.close()
