"""Freshness SLOs of eventual fields are measured from heartbeats and alarmed, never enforced."""

from __future__ import annotations

import asyncio
import functools

from crdtsync import Eventual, Feature, GCounter, MemoryLog, Replica
from tests._wait import until

_until = functools.partial(until, timeout=5.0)


def test_slo_breach_is_counted_when_a_peer_goes_quiet_and_clears_after():
    async def main():
        log = MemoryLog()
        schema = [Feature("opens", GCounter, policy=Eventual(max_lag=0.15))]
        a, b = [await Replica.open(log=log, schema=schema, name=n, heartbeat_interval=0.02) for n in "ab"]
        try:
            await _until(lambda: a.membership.get("b") is not None)
            await asyncio.sleep(0.1)
            assert a.stats.slo_breaches == {}
            (stale, objective), = a.freshness().values()
            assert objective == 0.15 and stale < 0.15
            log.control.partition([["a"], ["b"]])      # a stops hearing b
            await _until(lambda: a.stats.slo_breaches.get("opens") == 1)
            assert a.freshness()["opens"][0] > 0.15
            a.write("opens", "u", "increment")          # never enforced: writes and reads go on
            assert a.value("opens", "u") == 1
            log.control.heal()
            await _until(lambda: a.freshness()["opens"][0] < 0.15)
            await asyncio.sleep(0.05)
            assert a.stats.slo_breaches["opens"] == 1   # one breach, counted once
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
