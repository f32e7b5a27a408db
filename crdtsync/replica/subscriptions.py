"""Change subscriptions: callbacks and async streams of applied events.

Every event a replica applies, local or remote, is offered to the subscribers whose field
filter matches. Callbacks run inline (a callback that raises is logged and counted, never
stops replication); streams are unbounded queues read by ``async for``. Definition events
(``_schema``) are not offered. Subscriptions drive cache invalidation (the prediction
cache) and application callbacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..events import Event
from ..schema import SCHEMA_FIELD
from .stats import ReplicaStats

__all__ = ["Change", "ChangeStream", "Subscriptions"]

log = logging.getLogger("crdtsync.replica")


@dataclass(frozen=True)
class Change:
    """One applied event, as subscribers see it."""

    field: str
    key: str
    event: Event
    local: bool


class Subscriptions:
    """The subscribers of one replica."""

    def __init__(self, stats: ReplicaStats) -> None:
        self._stats = stats
        self._callbacks: list[tuple[Callable[[Change], Any], frozenset[str] | None]] = []
        self._queues: list[tuple[asyncio.Queue[Change], frozenset[str] | None]] = []
        #: called whenever a subscriber comes or goes (write handles cache :attr:`active`)
        self.on_change: Callable[[], None] = lambda: None

    @property
    def active(self) -> bool:
        """Whether anyone listens (the apply paths skip building changes otherwise)."""
        return bool(self._callbacks or self._queues)

    def subscribe(self, callback: Callable[[Change], Any], fields: Iterable[str] | None = None) -> Callable[[], None]:
        entry = (callback, frozenset(fields) if fields is not None else None)
        self._callbacks.append(entry)
        self.on_change()

        def unsubscribe() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)
                self.on_change()

        return unsubscribe

    def stream(self, fields: Iterable[str] | None = None) -> ChangeStream:
        return ChangeStream(self, frozenset(fields) if fields is not None else None)

    def notify(self, change: Change) -> None:
        if change.field == SCHEMA_FIELD:
            return
        for cb, flt in self._callbacks:
            if flt is None or change.field in flt:
                try:
                    cb(change)
                except Exception:  # a subscriber's bug must not stop replication
                    self._stats.subscriber_errors += 1
                    log.exception("subscriber %r failed on %s/%s", cb, change.field, change.key)
        for q, flt in self._queues:
            if flt is None or change.field in flt:
                q.put_nowait(change)


class ChangeStream:
    """The async iterator :meth:`Replica.changes` returns."""

    def __init__(self, subs: Subscriptions, fields: frozenset[str] | None) -> None:
        self._subs = subs
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._entry = (self._queue, fields)
        subs._queues.append(self._entry)
        subs.on_change()

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        if self._entry not in self._subs._queues:
            raise StopAsyncIteration
        return await self._queue.get()

    async def aclose(self) -> None:
        if self._entry in self._subs._queues:
            self._subs._queues.remove(self._entry)
            self._subs.on_change()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
