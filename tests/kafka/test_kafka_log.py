"""KafkaLog against the real broker: layout, routing, settings, typed errors.

The Log protocol itself is checked by tests/log/test_conformance.py (backend ``kafka``).
"""

from __future__ import annotations

import pytest
from crdtsync.adapters._kafka_route import EventRouter, stable_partition
from crdtsync.adapters._kafka_settings import KafkaSettings
from crdtsync.adapters.kafka import KafkaLog

from crdtsync.errors import RecordTooLarge, TopicMismatch, TopicUnavailable
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.log._protocol import VectorPosition
from crdtsync.sequenced import SEQ_FIELD, SequencedOp

from ._util import arun, batch_record, namespace


def test_topic_per_scope_with_the_partition_count(crdtsync_kafka: str) -> None:
    async def body() -> None:
        ns = namespace()
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, scope="eu", partitions=4) as kl:
            assert kl.topic == f"{ns}.events.eu"
            assert await kl._admin.partition_count(kl.topic) == 4
            assert await kl._admin.partition_count(f"{ns}.dlq") == 1
            end = await kl.end()
            assert isinstance(end, VectorPosition) and len(end.offsets) == 4
            # every partition holds this log's epoch marker, never yielded to readers
            assert all(o >= 1 for o in end.offsets)
            assert [e async for e in kl.read(0)] == []
            assert kl.stats.markers_skipped == 4

    arun(body())


def test_wrong_partition_count_is_a_clear_error(crdtsync_kafka: str) -> None:
    async def body() -> None:
        ns = namespace()
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=2):
            pass
        with pytest.raises(TopicMismatch, match=r"has 2 partitions; this log is set to 3.*partitions=2"):
            await KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=3)

    arun(body())


def test_missing_topic_without_creation_says_what_to_create(crdtsync_kafka: str) -> None:
    async def body() -> None:
        ns = namespace()
        with pytest.raises(TopicUnavailable, match=rf"--create --topic {ns}.events.global --partitions 5"):
            await KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=5, create_topics=False)

    arun(body())


def test_record_too_large_before_sending(crdtsync_kafka: str) -> None:
    async def body() -> None:
        async with KafkaLog.open(crdtsync_kafka, namespace=namespace(), max_request_size=10_000,
                                 dead_letters=False) as kl:
            assert kl.max_record_bytes < 10_000
            before = await kl.end()
            with pytest.raises(RecordTooLarge, match="max_record_bytes"):
                await kl.append([b"ok", b"x" * (kl.max_record_bytes + 1)])
            assert await kl.end() == before and kl.stats.records_appended == 0
            await kl.append([b"x" * kl.max_record_bytes])  # exactly the limit is sent
            assert [len(e.payload) async for e in kl.read(0)] == [kl.max_record_bytes]

    arun(body())


@pytest.mark.parametrize("compression", ["gzip", "lz4", "zstd", "snappy"])
def test_compression_round_trips(crdtsync_kafka: str, compression: str) -> None:
    async def body() -> None:
        async with KafkaLog.open(crdtsync_kafka, namespace=namespace(), compression=compression,
                                 dead_letters=False) as kl:
            payloads = [b"compressible " * 500, bytes(range(256)) * 8]
            await kl.append(payloads)
            assert [e.payload async for e in kl.read(0)] == payloads

    arun(body())


def test_settings_are_checked_and_passed_through() -> None:
    with pytest.raises(ValueError, match="acks='all'"):
        KafkaSettings("h:1", acks="1")
    with pytest.raises(ValueError, match="compression"):
        KafkaSettings("h:1", compression="brotli")
    with pytest.raises(ValueError, match="sasl_mechanism"):
        KafkaSettings("h:1", sasl_mechanism="GSSAPI")
    with pytest.raises(ValueError, match="namespace"):
        KafkaSettings("h:1", namespace="a b")
    s = KafkaSettings("h:1", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                      sasl_plain_username="u", sasl_plain_password="p", linger_ms=7, max_batch_size=999,
                      compression="zstd")
    prod = s.producer()
    assert prod["acks"] == "all" and prod["linger_ms"] == 7 and prod["max_batch_size"] == 999
    assert prod["compression_type"] == "zstd"
    for kw in (prod, s.consumer()):
        assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kw["sasl_plain_username"] == "u" and kw["sasl_plain_password"] == "p"
    assert s.consumer()["group_id"] is None  # manual assignment, never a group
    assert "p" not in repr(s).split("sasl_plain_username")[1].split(",")[1]  # password not in repr


def test_routing_is_stable_and_strong_fields_share_partition_zero() -> None:
    router = EventRouter(8, strong_fields={"balance"})
    rec = batch_record("a", 1, "clicks", "user-7")
    # a stable hash, the same in every process (not Python's salted hash())
    assert router([rec]) == stable_partition(b"clicks\x00user-7", 8) == router([batch_record("b", 9, "clicks", "user-7")])
    spread = {router([batch_record("a", 1, "clicks", f"user-{i}")]) for i in range(64)}
    assert len(spread) == 8
    assert {router([batch_record("a", 1, "balance", f"k{i}")]) for i in range(20)} == {0}
    assert {router([batch_record("a", 1, SEQ_FIELD, f"k{i}", version=1)]) for i in range(20)} == {0}
    # a sequenced operation carries its target field: its type tag sends it to partition 0
    for version in (1, 2):
        ops = [MsgpackCodec(write_version=version).encode(Batch.of([Event(
            "a/s", 1, 5, "limit", f"k{i}", SequencedOp("lww", "set", ("x",), {}, None))])) for i in range(20)]
        assert {router([op]) for op in ops} == {0}
    assert router([batch_record("a", 1, "clicks", "user-7", version=1)]) == router([rec])


def test_routing_reads_a_format_2_record_only_to_its_first_event() -> None:
    """Several fields in one record (a field column), the first event's field not the
    first entry; a strong field later in the record still sends it to partition 0;
    bytes that are not a batch are routed by their hash."""
    import msgpack

    from crdtsync.types.counters import GCounter
    from crdtsync.types.registers import LWWRegister

    router = EventRouter(8, strong_fields={"balance"})
    codec = MsgpackCodec(write_version=2)

    def record(fields: list[str]) -> bytes:
        return codec.encode(Batch.of([
            Event("a", i + 1, 10 + i, f, f"key-{i}", GCounter().increment(1, actor="a") if f == "n" else
                  LWWRegister().set(i, actor="a", ts=10 + i)) for i, f in enumerate(fields)]))

    rec = record(["clicks", "n", "clicks", "n"])
    obj = msgpack.unpackb(rec, raw=False)
    assert obj[7] == [0, 1, 0, 1]  # a field column: two entries
    assert router([rec]) == stable_partition(b"clicks\x00key-0", 8)
    rec = record(["n", "clicks", "n"])
    assert router([rec]) == stable_partition(b"n\x00key-0", 8)
    assert router([record(["clicks", "n", "balance"])]) == 0  # strong anywhere: partition 0
    for junk in (b"\x00\x01garbage", msgpack.packb([2, "a", 1]), msgpack.packb([2, 1, 2, 3, 4, 5, 6, 7, 8, 9])):
        assert router([junk]) == stable_partition(junk, 8)


def test_appends_land_on_the_routed_partition(crdtsync_kafka: str) -> None:
    async def body() -> None:
        async with KafkaLog.open(crdtsync_kafka, namespace=namespace(), partitions=4,
                                 strong_fields=["balance"]) as kl:
            router = EventRouter(4, {"balance"})
            for i in range(12):
                rec = batch_record("a", i + 1, "balance" if i % 3 == 0 else "clicks", f"u{i}")
                pos = await kl.append([rec])
                assert pos.partition == router([rec])
            got = [e async for e in kl.read(0)]
            assert len(got) == 12 and kl.stats.dead_lettered == 0
            assert sum(1 for e in got if e.position.partition == 0) >= 4

    arun(body())


def test_security_settings_reach_every_aiokafka_client() -> None:
    import ssl

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    ctx = ssl.create_default_context()
    s = KafkaSettings("127.0.0.1:1", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                      sasl_plain_username="svc", sasl_plain_password="pw", ssl_context=ctx)

    async def body() -> None:
        clients = [AIOKafkaProducer(**s.producer()), AIOKafkaConsumer(**s.consumer()),
                   AIOKafkaAdminClient(**s.common())]
        for c in clients:  # the clients accept the settings as given (no connection is made)
            inner = getattr(c, "client", None) or c._client
            assert inner._security_protocol == "SASL_SSL" and inner._sasl_mechanism == "SCRAM-SHA-256"
            assert inner._sasl_plain_username == "svc" and inner._sasl_plain_password == "pw"
            assert inner._ssl_context is ctx
        await clients[0].stop()
        await clients[1].stop()
        await clients[2].close()

    arun(body(), 10)


def test_an_append_of_many_records_is_all_visible_to_another_log_s_end_and_read(crdtsync_kafka: str) -> None:
    """Many records in one append travel in few Kafka batches (the last alone): another
    log of the topic sees the whole append in ``end()``, and reads every record in order,
    also when the records fill more than one batch."""
    async def body() -> None:
        ns = namespace()
        big = 300_000  # four such records exceed one 1 MiB batch
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=1) as kl, \
                KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=1) as other:
            records = [batch_record("a", i + 1, "clicks", f"u{i}") for i in range(20)]
            padded = [MsgpackCodec(write_version=2).encode(Batch.of([Event(
                "b", i + 1, 5 + i, "note", f"k{i}", __import__("crdtsync").LWWRegister().set(
                    "x" * big, actor="b", ts=5 + i))])) for i in range(8)]
            first = await kl.append(records)
            mid = await other.end()
            assert mid.offsets[0] >= first.offsets[0] + len(records), "end hides records of the first append"
            second = await kl.append(padded)
            end = await other.end()
            want = second.offsets[0] + len(padded)
            assert first.offsets[0] + len(records) == second.offsets[0]
            assert end.offsets[0] >= want, f"end {end.offsets[0]} hides records of the append (want {want})"
            got = []
            async for e in other.read(0):
                got.append(e.payload)
                if len(got) == len(records) + len(padded):
                    break
            assert got == records + padded

    arun(body())
