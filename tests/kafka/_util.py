"""Helpers of the Kafka tests: unique namespaces, bounded async bodies, crdtsync records."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.types.counters import GCounter

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def namespace(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def batch_record(origin: str, seq: int, field: str = "clicks", key: str = "u1", *, version: int = 2,
                 region: str | None = None, role: str | None = None) -> bytes:
    """A real crdtsync batch record of one GCounter increment (claiming ``region`` and
    ``role`` when given)."""
    delta = GCounter().increment(1, actor=origin)
    meta: dict[str, str] = {"region": region} if region is not None else {}
    if role is not None:
        meta["role"] = role
    ev = Event(origin, seq, 1_000 + seq, field, key, delta)
    return MsgpackCodec(write_version=version).encode(Batch.of([ev], meta))
