"""Producing one record as its own Kafka record batch (shared by the log and the control channel).

The tansu test broker reports a wrong high watermark after a multi-record batch, so every
crdtsync record travels alone in a batch built here and handed to the producer's
``send_batch``; the returned future resolves to the record's metadata once the broker acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["send_one"]


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
