"""Helpers shared by the log tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from crdtsync.log import Log
from crdtsync.log._protocol import Position, VectorPosition

T = TypeVar("T")

#: Upper bound for one async test body; a hang fails the test instead of the run.
TEST_TIMEOUT = 60.0

LogFactory = Callable[[], Awaitable[Log]]


def arun(coro: Coroutine[Any, Any, T], timeout: float = TEST_TIMEOUT) -> T:
    """Run ``coro`` on a fresh event loop (the repo does not depend on pytest-asyncio)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def log_order(position: Position) -> tuple[int, int]:
    """Where a record appended at ``position`` comes in a read from the start without
    ``follow``: position order for a single-stream log, partition by partition for a
    partitioned one (see ``crdtsync.adapters.kafka``)."""
    if isinstance(position, VectorPosition):
        assert position.partition is not None and position.offset is not None
        return (position.partition, position.offset)
    return (0, position)


def in_log_order(appended: list[tuple[Position, list[bytes]]]) -> list[bytes]:
    """The payloads of ``(position, batch)`` appends in the order a read returns them."""
    return [r for _, batch in sorted(appended, key=lambda a: log_order(a[0])) for r in batch]


def just_after(position: Position) -> Position:
    """A position between a record and the next one (int logs: one byte/record further)."""
    return position.after() if isinstance(position, VectorPosition) else position + 1


def far_past(position: Position, n: int = 10_000) -> Position:
    """A position ``n`` records or bytes past ``position`` (a cursor for vectors)."""
    if isinstance(position, VectorPosition):
        return VectorPosition([o + n for o in position.offsets], None, position.generation)
    return position + n
