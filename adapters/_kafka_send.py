"""Producing crdtsync records as Kafka record batches (shared by the log and the control channel).

:func:`send_one` queues one record as its own batch; :func:`send_many` queues the records
of one append in as few batches as fit ``max_request_size``, with the last record alone in
a batch of its own. Both hand the batches to the producer's ``send_batch``; the returned
futures resolve to the batch's metadata (its base offset) once the broker acked.

Why batches matter: the producer keeps one request in flight per partition, so a record
per batch costs every record a broker round trip (63 records of 57 KB to one tansu
partition: ~180 ms one per batch, ~17 ms seventeen per batch). Why the last record goes
alone: the tansu broker reports a partition's end as the base offset of its last batch
+ 1, not its last offset + 1; ending every append with a one-record batch keeps that the
true end, so ``end()`` and catch-up see every record of the append.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Sent", "send_many", "send_one"]


async def send_one(producer: Any, max_request_size: int, topic: str, partition: int, value: bytes, *,
                   key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()) -> asyncio.Future[Any]:
    """Queue ``value`` as a one-record batch on ``topic``/``partition``; await the result for its ack."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    # the producer's codec id (aiokafka keeps it on its accumulator)
    codec = producer._message_accumulator._compression_type
    builder = BatchBuilder(max_request_size, codec)
    builder.append(timestamp=None, key=key, value=value, headers=list(headers))
    fut: asyncio.Future[Any] = await producer.send_batch(builder, topic, partition=partition)
    return fut


class Sent(NamedTuple):
    """One batch queued by :func:`send_many`: the future of its metadata, and how many
    records it holds (at offsets ``base .. base + records - 1``)."""

    future: asyncio.Future[Any]
    records: int


async def send_many(producer: Any, max_request_size: int, topic: str, partition: int, values: Sequence[bytes], *,
                    headers: Sequence[tuple[str, bytes]] = ()) -> list[Sent]:
    """Queue ``values`` in order on ``topic``/``partition``: as many to a batch as fit
    ``max_request_size`` (each value must fit alone, as the log's record check ensures),
    the last one alone. The batches' offsets follow each other in the order returned."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    codec = producer._message_accumulator._compression_type
    hdrs = list(headers)
    out: list[Sent] = []
    builder = BatchBuilder(max_request_size, codec)
    count = 0
    for value in values[:-1]:
        if builder.append(timestamp=None, key=None, value=value, headers=hdrs) is None:  # full
            out.append(Sent(await producer.send_batch(builder, topic, partition=partition), count))
            builder, count = BatchBuilder(max_request_size, codec), 0
            if builder.append(timestamp=None, key=None, value=value, headers=hdrs) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit a batch of max_request_size "
                                 f"{max_request_size}")
        count += 1
    if count:
        out.append(Sent(await producer.send_batch(builder, topic, partition=partition), count))
    if values:  # the last alone: a one-record batch of its own
        out.append(Sent(await send_one(producer, max_request_size, topic, partition, values[-1], headers=hdrs), 1))
    return out
