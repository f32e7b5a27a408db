"""Hubs and edges with real replicas and their background tasks (real time).

Replicas share one MemoryLog (the data plane) and a MemoryControl's topics (the control
plane): the hub reads every heartbeat and publishes its aggregate; each edge reads only
its hub's aggregate. Every level and stability pruning work at the edges, from it.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from crdtsync import Feature, LWWRegister, MemoryLog, ORSet, Replica
from crdtsync.control.topology import EDGE, HUB, Topology
from crdtsync.errors import Unavailable
from crdtsync.policy import ALL, LOCAL, MAX_STALENESS, QUORUM, Tunable
from tests._wait import until

_until = functools.partial(until, timeout=5.0)
SCHEMA = [
    Feature("tags", ORSet, policy=Tunable(write=QUORUM(), read=QUORUM(), timeout=3.0)),
    Feature("price", LWWRegister, policy=Tunable(write=LOCAL, read=MAX_STALENESS(2.0))),
    Feature("named", ORSet, policy=Tunable(write=QUORUM(frozenset({"h", "e1"})), read=LOCAL, timeout=1.0)),
]


async def _fleet(log: MemoryLog, edges: list[str]) -> list[Replica]:
    kw = dict(log=log, schema=SCHEMA, heartbeat_interval=0.02, liveness=0.3, control=log.control.topics())
    hub = await Replica.open(name="h", topology=Topology(HUB), **kw)
    out = [hub]
    for e in edges:
        kw["control"] = log.control.topics()
        out.append(await Replica.open(name=e, topology=Topology(EDGE, hub="h"), **kw))
    return out


def test_every_level_works_at_edges_that_read_only_their_hubs_aggregate():
    async def main():
        log = MemoryLog()
        fleet = await _fleet(log, ["e1", "e2", "e3"])
        hub, e1, e2, e3 = fleet
        try:
            await _until(lambda: all(e.coordinator.view.live_count(None, e.now_ms(), 300) == 4 for e in fleet[1:]))
            ev = await e1.update("tags", "k", "add", "one")  # QUORUM write acknowledged via the hub
            assert sum(ev.dot in r.context for r in fleet) >= 3
            ev = await e2.at(write=ALL()).update("tags", "k", "add", "two")
            assert all(ev.dot in r.context for r in fleet)
            assert await e3.read("tags", "k") == {"one", "two"}  # QUORUM read from an edge
            await hub.update("price", "p", "set", 5)
            await _until(lambda: e3.value("price", "p") == 5)
            assert await e3.read("price", "p") == 5  # MAX_STALENESS from the hub's frontier
            assert e3.staleness_ms() < 2000
            with pytest.raises(Unavailable, match="names replicas"):
                await e1.update("named", "k", "add", 1)
            # edges never read a peer's heartbeat: their membership holds only themselves
            assert all(len(e.membership) == 1 for e in (e1, e2, e3))
            read = log.control.bytes_read
            assert max(read[e] for e in ("e1", "e2", "e3")) < read["h"]
        finally:
            for r in fleet:
                await r.close()

    asyncio.run(main())


def test_a_removed_edge_is_pruned_at_every_edge_once_the_hub_reports_it_stable():
    async def main():
        log = MemoryLog()
        fleet = await _fleet(log, ["e1", "e2", "x"])
        hub, e1, e2, x = fleet
        try:
            for i in range(3):
                await x.update("tags", "k", "add", f"x{i}")
            await _until(lambda: hub.membership.get("x") is not None)
            removed = await hub.remove_replica("x")
            await _until(lambda: all(removed in r.fleet.pruned for r in (hub, e1, e2)))
            for r in (hub, e1, e2):
                assert removed not in r.context.vv
                assert r.value("tags", "k") == {"x0", "x1", "x2"}
            assert "x" not in hub.membership
            ev = await e1.update("tags", "k", "add", "after")  # the quorum no longer counts x
            assert ev.dot in hub.context
        finally:
            for r in fleet:
                await r.close()

    asyncio.run(main())


def test_an_edge_cut_off_from_its_hub_fails_fast_then_recovers_after_heal():
    async def main():
        log = MemoryLog()
        fleet = await _fleet(log, ["e1", "e2"])
        hub, e1, e2 = fleet
        try:
            await _until(lambda: e1.coordinator.view.live_count(None, e1.now_ms(), 300) == 3)
            log.control.partition([["e1"]])
            await asyncio.sleep(e1.liveness + 0.1)
            with pytest.raises(Unavailable, match="nothing was written"):
                await e1.update("tags", "k", "add", "cut")
            log.control.heal()
            await _until(lambda: e1.coordinator.view.live_count(None, e1.now_ms(), 60) == 3)
            assert (await e1.update("tags", "k", "add", "back")).dot in hub.context
        finally:
            for r in fleet:
                await r.close()

    asyncio.run(main())
