"""The broker fixtures start a real tansu broker that answers Kafka clients, and kill it."""

from __future__ import annotations

import asyncio
import os

import pytest

from crdtsync.testing.kafka import BrokerUnavailable, TansuBroker


async def _produce_and_read(bootstrap: str, topic: str) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, b"m%d" % i, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[bytes] = []
        while len(got) < 3:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            got += [m.value for m in batch.get(tp, [])]
        return got
    finally:
        await consumer.stop()


def test_session_broker_answers_kafka_clients(crdtsync_kafka: str) -> None:
    got = asyncio.run(asyncio.wait_for(_produce_and_read(crdtsync_kafka, "t-broker-smoke"), 30))
    assert got == [b"m0", b"m1", b"m2"]


def test_own_broker_is_killed_and_restarts_empty(crdtsync_tansu: TansuBroker) -> None:
    asyncio.run(asyncio.wait_for(_produce_and_read(crdtsync_tansu.bootstrap, "t-restart"), 30))
    pid = crdtsync_tansu.proc.pid  # type: ignore[union-attr]
    crdtsync_tansu.restart_empty()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the old process group is gone
    # same address, no data: the same three records come back at offsets 0..2 again
    got = asyncio.run(asyncio.wait_for(_produce_and_read(crdtsync_tansu.bootstrap, "t-restart"), 30))
    assert got == [b"m0", b"m1", b"m2"]


def test_stop_kills_the_process_group(tmp_path: object) -> None:
    broker = TansuBroker()
    with broker:
        proc = broker.proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def test_a_broker_that_cannot_start_is_a_clear_error() -> None:
    broker = TansuBroker()
    broker.binary = "/bin/false"  # exits at once, as a broker that cannot listen would
    with pytest.raises(BrokerUnavailable, match="exited with status 1"):
        broker.start(timeout=5)
    assert broker.proc is None
