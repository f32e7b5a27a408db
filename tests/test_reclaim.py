"""Removing a replica from the fleet: the decision replicates, the removed incarnation is
refused, and once its events are causally stable it is pruned from every context."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import Feature, MemoryLog, ORSet, Replica
from crdtsync.errors import ReplicaRemoved
from crdtsync.events import Batch, MsgpackCodec
from crdtsync.types.collections import ORSet as _ORSet

SCHEMA = [Feature("tags", ORSet)]


async def _until(pred, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


async def _fleet(log):
    return [await Replica.open(log=log, schema=SCHEMA, name=n, heartbeat_interval=0.02) for n in ("a", "b", "x")]


def test_removed_replica_is_pruned_once_stable_and_refused_after():
    async def main():
        log = MemoryLog()
        a, b, x = await _fleet(log)
        try:
            for i in range(5):
                await x.update("tags", "k", "add", f"x{i}")
            await _until(lambda: all(r.membership.get("x") is not None for r in (a, b)))
            removed = await a.remove_replica("x")
            assert removed == x.actor
            # every remaining replica prunes x once all of x's events are stable
            await _until(lambda: all(x.actor in r._pruned for r in (a, b)))
            for r in (a, b):
                assert x.actor not in r.context.vv
                assert r.value("tags", "k") == {f"x{i}" for i in range(5)}  # its past writes stay
                assert "x" not in r.membership.members()
            # x learns it was removed and refuses to write
            await _until(lambda: x.actor in x._removed)
            with pytest.raises(ReplicaRemoved, match="fresh data directory"):
                await x.update("tags", "k", "add", "late")
            # a forged event under x's old identity (any seq) is refused and counted
            codec = MsgpackCodec()
            forged = x._write_raw("tags", "k", _ORSet, "add", ("forged",), {})
            x._pending.clear()
            await log.append([codec.encode(Batch.of([forged], {"region": "default", "role": "default"}))])
            await _until(lambda: all(r.stats.events_rejected.get("removed_replica", 0) >= 1 for r in (a, b)))
            for r in (a, b):
                assert "forged" not in r.value("tags", "k")
                assert x.actor not in r.context.vv
        finally:
            for r in (a, b, x):
                await r.close()

    asyncio.run(main())


def test_new_incarnation_of_a_removed_replica_is_accepted():
    async def main():
        log = MemoryLog()
        a, b, x = await _fleet(log)
        await x.update("tags", "k", "add", "old")
        await _until(lambda: a.membership.get("x") is not None)
        await a.remove_replica("x")
        await x.close()
        x2 = await Replica.open(log=log, schema=SCHEMA, name="x", heartbeat_interval=0.02)
        try:
            assert x2.actor != x.actor
            await x2.update("tags", "k", "add", "new")
            await _until(lambda: "new" in a.value("tags", "k") and "new" in b.value("tags", "k"))
            await _until(lambda: a.membership.get("x") is not None and a.membership.get("x").actor == x2.actor)
        finally:
            for r in (a, b, x2):
                await r.close()

    asyncio.run(main())
