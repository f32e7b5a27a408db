"""Bad input from the topic: produced by a plain aiokafka producer (not through crdtsync).

Random bytes, an unknown batch version, a record above the readers' size limit and a batch
claiming a region outside the topic's scope go to ``<ns>.dlq`` with the reason in headers,
are counted, and the reader keeps yielding the good records that follow.
"""

from __future__ import annotations

import asyncio
import os

import msgpack
from crdtsync.adapters.kafka import KafkaLog

from ._util import arun, batch_record, namespace


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=1 << 20)
    await producer.start()
    try:
        for i, v in enumerate(values):  # one send at a time: one record per Kafka batch
            await producer.send_and_wait(topic, v, partition=i % 3)
    finally:
        await producer.stop()


async def _dead_letters(bootstrap: str, topic: str, n: int, polls: int = 100) -> list[tuple[bytes, dict[str, bytes]]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[tuple[bytes, dict[str, bytes]]] = []
        for _ in range(polls):
            batch = await consumer.getmany(tp, timeout_ms=200)
            got += [(m.value, dict(m.headers)) for m in batch.get(tp, [])]
            if len(got) >= n:
                break
        return got
    finally:
        await consumer.stop()


def test_bad_records_go_to_the_dlq_and_reading_goes_on(crdtsync_kafka: str) -> None:
    async def body() -> None:
        ns = namespace("dlq")
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, scope="eu", regions=["eu-west", "eu-central"],
                                 max_request_size=20_000, check_interval=60) as kl:
            good = [batch_record("a", i + 1, key=f"k{i}", region="eu-west") for i in range(6)]
            bad = {
                "random": os.urandom(300),
                "version": msgpack.packb([99, "a", 1, [], []]),
                "oversized": batch_record("a", 50, key="x" * 25_000, region="eu-west"),
                "region": batch_record("m", 1, region="us-east"),
            }
            values = [good[0], bad["random"], good[1], bad["version"], good[2], bad["oversized"],
                      good[3], bad["region"], good[4], good[5]]
            await _produce(crdtsync_kafka, kl.topic, values)
            got = [e.payload async for e in kl.read(0)]
            assert sorted(got) == sorted(good)  # every good record, none of the bad
            assert kl.stats.dead_lettered == 4 and kl.stats.records_read == 6
            assert kl.stats.dead_letter_reasons == {"CorruptRecord": 1, "UnsupportedVersion": 1,
                                                    "oversized": 1, "forged region": 1}
            letters = await _dead_letters(crdtsync_kafka, f"{ns}.dlq", 4)
            assert len(letters) == 4 and kl.stats.dead_letter_errors == 0
            by_reason = {h["crdtsync-reason"].split(b":")[0]: (v, h) for v, h in letters}
            assert set(by_reason) == {b"CorruptRecord", b"UnsupportedVersion", b"oversized", b"forged region"}
            assert by_reason[b"CorruptRecord"][0] == bad["random"]
            assert by_reason[b"UnsupportedVersion"][0] == bad["version"]
            assert by_reason[b"forged region"][0] == bad["region"]
            assert b"us-east" in by_reason[b"forged region"][1]["crdtsync-reason"]
            assert by_reason[b"oversized"][1]["crdtsync-truncated"] == b"1"
            for _, h in letters:
                assert h["crdtsync-topic"] == kl.topic.encode() and int(h["crdtsync-offset"]) >= 0
                assert int(h["crdtsync-partition"]) in range(3)

            # a follower keeps going after bad records too
            seen: list[bytes] = []

            async def follow() -> None:
                async for e in kl.read(0, follow=True):
                    seen.append(e.payload)

            task = asyncio.create_task(follow())
            more = batch_record("a", 100, key="late", region="eu-central")
            await _produce(crdtsync_kafka, kl.topic, [os.urandom(50), more])
            for _ in range(100):
                if more in seen:
                    break
                await asyncio.sleep(0.05)
            assert more in seen and len(seen) == 7
            # re-reading does not report a record twice: only the new bad one was added
            assert kl.stats.dead_lettered == 5
            assert len(await _dead_letters(crdtsync_kafka, f"{ns}.dlq", 6, polls=5)) == 5
            task.cancel()

    arun(body(), 60)


def test_replicas_stay_healthy_under_bad_and_forged_records(crdtsync_kafka: str) -> None:
    """Bad records from a plain producer while replicas run: the log dead-letters what it can
    judge alone (from the envelope); records whose events do not decode are quarantined by the
    replica and filed by it; forged origins (an honest writer's id claiming another region, another
    role) are refused by the replica's admission, counted, and filed in the DLQ with the
    reason in headers; both replicas keep converging."""
    from crdtsync import Feature, GCounter, Replica

    schema = [Feature("clicks", GCounter)]

    async def body() -> None:
        ns = namespace("forge")
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, check_interval=60) as la, \
                KafkaLog.open(crdtsync_kafka, namespace=ns, check_interval=60) as lb:
            a = await Replica.open(None, schema=schema, log=la, name="a", region="eu", control=False)
            b = await Replica.open(None, schema=schema, log=lb, name="b", region="eu", control=False)
            a.write("clicks", "u1", "increment", 1)
            await a.flush()
            await b.sync(timeout=10)
            assert b.value("clicks", "u1") == 1
            # a's id claiming another region / role, at seqs a has not reached (an earlier seq
            # would be dropped as a duplicate of a's genuine event, whichever partition comes first)
            forged_region = batch_record(a.actor, 1000, "clicks", "u1", region="us")
            forged_origin = batch_record(a.actor, 1001, "clicks", "u1", region="eu", role="admin")
            # a well-formed envelope around events that do not decode (an entity key that is
            # not a str): the log passes it on, the replica quarantines it and files it
            inner = msgpack.packb([2, "m", 1, [], [["clicks", 1, "gcounter", 1]], 5, [], [], [123], [[1]]])
            await _produce(crdtsync_kafka, la.topic,
                           [os.urandom(64), msgpack.packb([7, "x"]), forged_region, forged_origin, inner])
            for _ in range(20):
                a.write("clicks", "u1", "increment", 1)
                await a.flush()
            for _ in range(100):
                if b.value("clicks", "u1") == 21 and lb.stats.dead_lettered == 5:
                    break
                await asyncio.sleep(0.05)
            # the forged events were refused: their dots never entered b's context
            assert a.value("clicks", "u1") == b.value("clicks", "u1") == 21
            assert b.stats.events_rejected.get("identity_mismatch") == 2
            assert b.context.max_seq(a.actor) == a.context.max_seq(a.actor) < 1000
            assert lb.stats.dead_letter_reasons == {"CorruptRecord": 2, "UnsupportedVersion": 1,
                                                    "forged region": 1, "forged origin": 1}
            assert b.stats.records_quarantined == 1  # the inner record (the log judged the other two)
            # a read its own forged records too: they claim to be its own, so it refused and filed them
            assert a.stats.events_rejected.get("identity_mismatch") == 2
            assert la.stats.dead_letter_reasons.get("forged region") == 1
            assert la.stats.dead_letter_reasons.get("forged origin") == 1
            assert a.digest() == b.digest()
            # both readers filed each record once: 5 from each log
            letters = await _dead_letters(crdtsync_kafka, f"{ns}.dlq", 10)
            assert len(letters) == 10 and la.stats.dead_letter_errors == lb.stats.dead_letter_errors == 0
            inner_letters = [h for v, h in letters if v == inner]
            assert len(inner_letters) == 2 and all(h["crdtsync-reason"].startswith(b"CorruptRecord") for h in inner_letters)
            forged = {v: h for v, h in letters if h["crdtsync-reason"].startswith(b"forged")}
            assert set(forged) == {forged_region, forged_origin}
            assert forged[forged_region]["crdtsync-reason"].startswith(b"forged region: " + a.actor.encode())
            assert b"'us'" in forged[forged_region]["crdtsync-reason"]
            assert forged[forged_origin]["crdtsync-reason"].startswith(b"forged origin: " + a.actor.encode())
            assert b"'admin'" in forged[forged_origin]["crdtsync-reason"]
            for _, h in letters:
                assert h["crdtsync-topic"] == la.topic.encode() and int(h["crdtsync-offset"]) >= 0
            # the log does not yield a filed record again: a fresh read of b's log skips them
            await b.close()
            again = [e.payload async for e in lb.read(0)]
            assert forged_region not in again and forged_origin not in again and inner not in again
            assert lb.stats.dead_lettered == 5
            await a.close()

    arun(body(), 60)
