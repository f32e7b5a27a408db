"""Broker data loss is detected, not trusted away: kill the broker, restart it empty.

The restarted tansu broker has the same address and cluster id and hands out offsets from 0
again. The log must notice (epoch markers), count it, raise the typed alarm, re-read every
partition from its start, and keep working: records written after the loss reach readers
that were following before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from crdtsync.adapters.kafka import BrokerDataLoss, KafkaLog

from crdtsync.log._protocol import LogEntry, covers
from crdtsync.testing.kafka import TansuBroker

from ._util import arun, namespace


def test_restarted_empty_broker_is_detected_and_followers_continue(
        crdtsync_tansu: TansuBroker, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        ns = namespace()
        async with KafkaLog.open(crdtsync_tansu.bootstrap, namespace=ns, dead_letters=False,
                                 check_interval=0.3) as writer, \
                KafkaLog.open(crdtsync_tansu.bootstrap, namespace=ns, dead_letters=False,
                              check_interval=0.3) as reader:
            alarms: list[BrokerDataLoss] = []
            reader.on_loss(alarms.append)
            seen: list[LogEntry] = []

            async def follow() -> None:
                async for e in reader.read(0, follow=True):
                    seen.append(e)

            task = asyncio.create_task(follow())
            for i in range(30):
                await writer.append([b"before-%d" % i])
            while len(seen) < 30:
                await asyncio.sleep(0.05)
            last_before = seen[-1].position

            crdtsync_tansu.restart_empty()

            # both logs find the loss by themselves (their check runs every 0.3 s)
            for _ in range(100):
                if writer.stats.broker_losses and reader.stats.broker_losses:
                    break
                await asyncio.sleep(0.1)
            assert writer.stats.broker_losses == 1 and reader.stats.broker_losses == 1
            assert alarms and alarms[0].generation == 1 and alarms[0].topic == f"{ns}.events.global"
            assert reader.generation == 1 and writer.generation == 1
            # fewer records than before the loss: offsets alone could not tell
            for i in range(5):
                await writer.append([b"after-%d" % i])
            for _ in range(100):
                if sum(e.payload.startswith(b"after") for e in seen) == 5:
                    break
                await asyncio.sleep(0.1)
            after = [e for e in seen if e.payload.startswith(b"after")]
            assert sorted(e.payload for e in after) == sorted(b"after-%d" % i for i in range(5))
            # a position of the new generation covers the old one: nothing is skipped as seen
            assert all(e.position.generation == 1 and covers(e.position, last_before) for e in after)
            assert not covers(last_before, after[0].position)
            # and a fresh read sees exactly what the broker holds now
            assert sorted([e.payload async for e in reader.read(0)]) == sorted(e.payload for e in after)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert any("BROKER DATA LOSS" in r.message and r.levelno == logging.ERROR for r in caplog.records)

    arun(body(), 90)


def test_a_position_from_before_the_loss_reads_everything_again(crdtsync_tansu: TansuBroker) -> None:
    async def body() -> None:
        ns = namespace()
        async with KafkaLog.open(crdtsync_tansu.bootstrap, namespace=ns, dead_letters=False,
                                 check_interval=60) as kl:
            for i in range(20):
                await kl.append([b"r%d" % i])
            saved = (await kl.end())  # what a snapshot would hold
        crdtsync_tansu.restart_empty()
        async with KafkaLog.open(crdtsync_tansu.bootstrap, namespace=ns, dead_letters=False,
                                 check_interval=60) as kl:
            await kl.append([b"new"])
            # the saved position is past the new broker's ends: a loss, and a read from 0
            assert [e.payload async for e in kl.read(saved)] == [b"new"]
            assert kl.stats.broker_losses == 1 and kl.generation == 1

    arun(body(), 60)


def test_no_false_alarm_on_a_healthy_broker(crdtsync_kafka: str) -> None:
    async def body() -> None:
        async with KafkaLog.open(crdtsync_kafka, namespace=namespace(), dead_letters=False,
                                 check_interval=0.1) as kl:
            for i in range(50):
                await kl.append([b"x%d" % i, b"y%d" % i])
            await asyncio.sleep(0.5)
            assert await kl.check_epoch() is None
            assert kl.stats.loss_checks >= 3 and kl.stats.broker_losses == 0 and kl.generation == 0

    arun(body(), 60)


def test_replicas_keep_replicating_after_the_broker_restarts_empty(crdtsync_tansu: TansuBroker) -> None:
    from crdtsync import Feature, GCounter, ORSet, Replica

    schema = [Feature("count", GCounter), Feature("members", ORSet)]

    async def until(cond: object, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():  # type: ignore[operator]
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.05)

    async def body() -> None:
        ns = namespace("rloss")
        opts = {"namespace": ns, "check_interval": 0.3}
        async with KafkaLog.open(crdtsync_tansu.bootstrap, **opts) as la, \
                KafkaLog.open(crdtsync_tansu.bootstrap, **opts) as lb:
            a = await Replica.open(None, schema=schema, log=la, name="a", control=False)
            b = await Replica.open(None, schema=schema, log=lb, name="b", control=False)
            for i in range(40):
                a.write("count", "k", "increment", 1)
                b.write("members", "k", "add", f"b{i}")
            await a.flush()
            await b.flush()
            await until(lambda: a.value("count", "k") == b.value("count", "k") == 40
                        and len(a.value("members", "k")) == 40)

            crdtsync_tansu.restart_empty()
            await until(lambda: la.stats.broker_losses == 1 and lb.stats.broker_losses == 1)

            for i in range(10):
                a.write("count", "k", "increment", 1)
                b.write("members", "k", "add", f"after{i}")
            await a.flush()
            await b.flush()
            # the new writes replicate; what both had applied before the loss stays
            await until(lambda: a.value("count", "k") == b.value("count", "k") == 50
                        and len(a.value("members", "k")) == len(b.value("members", "k")) == 50)
            assert a.digest() == b.digest()
            assert la.generation == lb.generation == 1
            assert a.position.generation == 1  # type: ignore[union-attr]
            await asyncio.wait_for(a.sync(), 10)  # waiters work across the generation change
            await a.close()
            await b.close()

    arun(body(), 90)
