"""Change subscriptions: callbacks and async streams of applied events.

Every event a replica applies, local or remote, is offered to the subscribers whose field
filter matches: a local write when it is made, the events of a record read from the log
once the whole record is applied (the replica's state and context then include every
event of it), in the record's event order. Callbacks run inline (a callback that raises is logged and counted, never
stops replication); streams are unbounded queues read by ``async for``. Definition events
(``_schema``) are not offered. Subscriptions drive cache invalidation (the prediction
cache) and application callbacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from .. import speedups
from ..events import Event
from ..schema import SCHEMA_FIELD
from .stats import ReplicaStats

__all__ = ["Change", "ChangeStream", "Subscriptions"]

_T = TypeVar("_T")

log = logging.getLogger("crdtsync.replica")


class Change(NamedTuple):
    """One applied event, as subscribers see it (immutable; a named tuple, which the apply
    path builds per event at a fraction of a frozen dataclass's cost)."""

    field: str
    key: str
    event: Event
    local: bool


class Subscriptions:
    """The subscribers of one replica.

    The subscriber lists are tuples, replaced on every (un)subscribe: a callback that
    unsubscribes itself (or anyone) while a change is being delivered does not make a
    later subscriber miss that change. Every replacement also marks the current token
    (``self._token[0] = False``) and makes a new one: a delivery loop that holds the
    token sees that the subscribers changed with one read (see :meth:`notify_all`)."""

    def __init__(self, stats: ReplicaStats) -> None:
        self._stats = stats
        self._callbacks: tuple[tuple[Callable[[Change], Any], frozenset[str] | None], ...] = ()
        self._queues: tuple[tuple[asyncio.Queue[Change | None], frozenset[str] | None], ...] = ()
        #: ``[True]`` until the subscribers change (then ``[False]``, and a new ``[True]``)
        self._token: list[bool] = [True]
        #: called whenever a subscriber comes or goes (write handles cache :attr:`active`)
        self.on_change: Callable[[], None] = lambda: None

    def _changed(self) -> None:
        """The subscriber tuples were just replaced."""
        self._token[0] = False
        self._token = [True]
        self.on_change()

    @property
    def active(self) -> bool:
        """Whether anyone listens (the apply paths skip building changes otherwise)."""
        return bool(self._callbacks or self._queues)

    def wants(self, field: str) -> bool:
        """Whether a change of ``field`` would reach anyone (definitions never do)."""
        if field == SCHEMA_FIELD:
            return False
        for _, flt in self._callbacks:
            if flt is None or field in flt:
                return True
        return any(flt is None or field in flt for _, flt in self._queues)

    def subscribe(self, callback: Callable[[Change], Any], fields: Iterable[str] | None = None) -> Callable[[], None]:
        entry = (callback, frozenset(fields) if fields is not None else None)
        self._callbacks = (*self._callbacks, entry)
        self._changed()

        def unsubscribe() -> None:
            before = self._callbacks
            self._callbacks = _without(before, entry)
            if len(self._callbacks) < len(before):
                self._changed()

        return unsubscribe

    def stream(self, fields: Iterable[str] | None = None) -> ChangeStream:
        return ChangeStream(self, frozenset(fields) if fields is not None else None)

    def _listen(self, entry: tuple[asyncio.Queue[Change | None], frozenset[str] | None]) -> None:
        self._queues = (*self._queues, entry)
        self._changed()

    def _unlisten(self, entry: tuple[asyncio.Queue[Change | None], frozenset[str] | None]) -> bool:
        """Stop feeding ``entry``'s queue; whether it was being fed."""
        queues = self._queues
        self._queues = _without(queues, entry)
        if len(self._queues) == len(queues):
            return False
        self._changed()
        return True

    def listening(self, entry: tuple[asyncio.Queue[Change | None], frozenset[str] | None]) -> bool:
        return any(e is entry for e in self._queues)

    def notify_all(self, changes: Sequence[Change]) -> None:
        """:meth:`notify` each of ``changes``, in order (also when a callback subscribes or
        unsubscribes meanwhile: from then on one by one). With one subscriber, the loop
        through its filter and callback is ``_hot.call_each`` (in C when compiled)."""
        subs = self._callbacks
        if len(subs) != 1 or self._queues:
            for change in changes:
                self.notify(change)
            return
        ((cb, flt),) = subs
        call_each = speedups.hot.call_each
        token = self._token
        i, exc = call_each(cb, changes, 0, token, flt, SCHEMA_FIELD)
        while exc is not None:  # (a subscriber's bug must not stop replication)
            self._failed(cb, changes[i], exc)
            i, exc = call_each(cb, changes, i + 1, token, flt, SCHEMA_FIELD)
        for rest in changes[i:]:  # (someone (un)subscribed: the rest one by one)
            self.notify(rest)

    def _failed(self, cb: Callable[[Change], Any], change: Change, exc: BaseException) -> None:
        self._stats.subscriber_errors += 1
        log.error("subscriber %r failed on %s/%s", cb, change.field, change.key, exc_info=exc)

    def notify(self, change: Change) -> None:
        if change.field == SCHEMA_FIELD:
            return
        for cb, flt in self._callbacks:
            if flt is None or change.field in flt:
                try:
                    cb(change)
                except Exception as exc:  # a subscriber's bug must not stop replication
                    self._failed(cb, change, exc)
        for q, flt in self._queues:
            if flt is None or change.field in flt:
                q.put_nowait(change)


def _without(entries: tuple[_T, ...], entry: _T) -> tuple[_T, ...]:
    """``entries`` without the first one that is ``entry``."""
    for i, e in enumerate(entries):
        if e is entry:
            return entries[:i] + entries[i + 1:]
    return entries


class ChangeStream:
    """The async iterator :meth:`Replica.changes` returns. Closing it (:meth:`aclose`)
    ends the iteration, also of a loop waiting for the next change right then."""

    def __init__(self, subs: Subscriptions, fields: frozenset[str] | None) -> None:
        self._subs = subs
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()  # None: closed
        self._entry = (self._queue, fields)
        subs._listen(self._entry)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        if not self._subs.listening(self._entry):
            raise StopAsyncIteration
        change = await self._queue.get()
        if change is None:
            raise StopAsyncIteration
        return change

    async def aclose(self) -> None:
        if self._subs._unlisten(self._entry):
            self._queue.put_nowait(None)  # wakes a reader waiting right now

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
