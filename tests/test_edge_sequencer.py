"""An edge whose own log is a store-and-forward outbox sequences strong fields on the
upstream log: operations never wait in the outbox, and every replica (cloud and edge)
evaluates them in the upstream order."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from crdtsync import Feature, Forwarder, GCounter, LWWRegister, MemoryLog, Replica, Strong
from crdtsync.errors import Unavailable

SCHEMA = [Feature("limit", LWWRegister, policy=Strong(timeout=1.0)), Feature("opens", GCounter)]


class _Link:
    """The edge's view of the upstream log: appends fail while the link is down."""

    def __init__(self, log: MemoryLog) -> None:
        self._log = log
        self.up = True

    async def append(self, records):
        if not self.up:
            raise Unavailable("link down")
        return await self._log.append(records)

    async def end(self):
        if not self.up:
            raise Unavailable("link down")
        return await self._log.end()

    def read(self, from_position=0, *, follow=False):
        return self._log.read(from_position, follow=follow)


async def _forward(fwd: Forwarder, link: _Link) -> None:
    while True:
        fwd.connected = link.up
        await fwd.run_once()
        await asyncio.sleep(0.005)


def test_edge_sequences_on_the_upstream_log_and_agrees_with_the_cloud():
    async def main():
        shared, outbox = MemoryLog(), MemoryLog()
        link = _Link(shared)
        cloud = await Replica.open(log=shared, schema=SCHEMA, name="cloud", control=False)
        edge = await Replica.open(log=outbox, schema=SCHEMA, name="edge", sequencer=link, control=False)
        fwd = Forwarder(outbox, shared, origin=edge.actor)
        task = asyncio.create_task(_forward(fwd, link))
        try:
            assert await edge.compare_and_set("limit", "acct", None, 100)
            assert not await cloud.compare_and_set("limit", "acct", None, 5)   # edge's op came first
            assert await cloud.compare_and_set("limit", "acct", 100, 50)
            assert await edge.read("limit", "acct") == 50      # LINEARIZABLE through the sequencer
            assert await cloud.read("limit", "acct") == 50
            # cut off: strong operations refuse at once, eventual fields keep working
            link.up = False
            with pytest.raises(Unavailable, match="link down"):
                await edge.compare_and_set("limit", "acct", 50, 1)
            with pytest.raises(Unavailable):
                await edge.read("limit", "acct")
            edge.write("opens", "u", "increment")
            await edge.flush()
            assert edge.value("opens", "u") == 1
            link.up = True
            await asyncio.wait_for(cloud.sync(), 5)
            for _ in range(200):
                if cloud.value("opens", "u") == 1:
                    break
                await asyncio.sleep(0.01)
            assert cloud.value("opens", "u") == 1
            assert await edge.compare_and_set("limit", "acct", 50, 7)
            assert await cloud.read("limit", "acct") == 7
            # the edge's outbox never held a sequenced operation of its own before the
            # upstream log ordered it: every one arrived through the forwarder
            assert edge.stats.events_rejected.get("not_sequenced", 0) == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await edge.close()
            await cloud.close()

    asyncio.run(main())
