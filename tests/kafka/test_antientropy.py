"""Broker loss repaired by anti-entropy, over a real broker.

Three replicas, each with its own KafkaLog; heartbeats and digests travel on the broker's
control topic (``<ns>.control``), which the restart empties too. ``a`` and
``b`` write and follow; the broker is killed and restarted empty and the logs detect the
loss (epoch markers); ``c`` joins after it, so nothing it could read holds what ``a`` and
``b`` wrote before. ``c``'s digest shows its peers what it lacks and they re-publish the records from their journals: everyone
converges with nothing lost.
"""

from __future__ import annotations

import asyncio

import pytest
from crdtsync.adapters.kafka import KafkaControl, KafkaLog

from crdtsync import Feature, GCounter, MemoryLog, ORSet, Replica
from crdtsync.replica import AntiEntropySettings
from crdtsync.testing.kafka import TansuBroker

from ._util import arun, namespace

SCHEMA = [Feature("count", GCounter), Feature("members", ORSet)]


async def until(cond: object, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_broker_restarted_empty_anti_entropy_republishes_and_nothing_is_lost(crdtsync_tansu: TansuBroker) -> None:
    async def body() -> None:
        ns = namespace("ae")
        opts = {"namespace": ns, "check_interval": 0.3, "partitions": 4}
        async with KafkaLog.open(crdtsync_tansu.bootstrap, **opts) as la, \
                KafkaLog.open(crdtsync_tansu.bootstrap, **opts) as lb:
            kw = {"schema": SCHEMA, "heartbeat_interval": 0.1}
            a = await Replica.open(None, log=la, name="a", **kw)
            b = await Replica.open(None, log=lb, name="b", **kw)
            added: set[str] = set()
            for i in range(60):
                a.write("count", "k", "increment", 1)
                b.write("members", "k", "add", f"b{i}")
                added.add(f"b{i}")
            await a.flush()
            await b.flush()
            await until(lambda: a.value("count", "k") == b.value("count", "k") == 60
                        and len(a.value("members", "k")) == 60)
            crdtsync_tansu.restart_empty()
            await until(lambda: la.stats.broker_losses == 1 and lb.stats.broker_losses == 1)
            # c joins after the loss: the broker holds none of what a and b wrote
            lc = await KafkaLog.open(crdtsync_tansu.bootstrap, **opts)
            c = await Replica.open(None, log=lc, name="c", **kw)
            assert c.value("count", "k") == 0 and not c.value("members", "k")
            for i in range(10):
                a.write("count", "k", "increment", 1)
                c.write("members", "k", "add", f"c{i}")
                added.add(f"c{i}")
            await a.flush()
            await c.flush()
            reps = [a, b, c]
            await until(lambda: all(r.value("count", "k") == 70 and r.value("members", "k") == frozenset(added)
                                    for r in reps), 45)
            lost = {r.identity.name: len(added - set(r.value("members", "k"))) for r in reps}
            assert lost == {"a": 0, "b": 0, "c": 0}
            assert a.digest() == b.digest() == c.digest()
            assert a.context == b.context == c.context
            republished = sum(r.antientropy.stats.events_republished for r in reps)
            assert republished >= 120  # c lacked a's 60 increments and b's 60 adds
            # digests go out every 5th heartbeat: c may converge (from its own digest, which
            # a and b answered) before a peer's next digest reaches it; it does arrive
            await until(lambda: c.antientropy.stats.digests_received > 0, 10)
            assert all(isinstance(r.control, KafkaControl) for r in reps)
            # the restart emptied the control topic as well: publishing failed, then recovered
            assert all(r.control.stats.published > 0 and r.control.stats.delivered > 0 for r in reps)
            for r in reps:
                await r.close()
            await lc.close()

    arun(body(), 90)


def test_antientropy_settings_reach_the_replica(crdtsync_kafka: str) -> None:
    """``Replica.open(antientropy=...)``: digests every N beats, capped repairs, forced
    off on a lossy log or on over a durable one; bad settings are a ValueError."""
    with pytest.raises(ValueError, match="every"):
        AntiEntropySettings(every=0)
    with pytest.raises(ValueError, match="journal_bytes"):
        AntiEntropySettings(journal_bytes=-1)

    async def body() -> None:
        async with KafkaLog.open(crdtsync_kafka, namespace=namespace("aes")) as kl:
            tuned = await Replica.open(None, schema=SCHEMA, log=kl, name="t", heartbeat_interval=0.05,
                                       antientropy=AntiEntropySettings(every=1, max_records=7, journal_bytes=1 << 20))
            off = await Replica.open(None, schema=SCHEMA, log=kl, name="o", heartbeat_interval=0.05,
                                     antientropy=AntiEntropySettings(enabled=False))
            assert tuned.antientropy.enabled and tuned.antientropy.max_records == 7
            assert tuned.antientropy.journal.max_bytes == 1 << 20
            assert not off.antientropy.enabled
            await until(lambda: tuned.antientropy.stats.digests_sent >= 5, 10)  # a digest every beat
            assert off.antientropy.stats.digests_sent == 0
            assert off.antientropy.stats.digests_received > 0  # it still hears its peer's
            await tuned.close()
            await off.close()
        forced = await Replica.open(None, schema=SCHEMA, log=MemoryLog(), name="m",
                                    antientropy=AntiEntropySettings(enabled=True))
        assert forced.antientropy.enabled  # a durable log: on only when asked
        await forced.close()

    arun(body(), 60)
