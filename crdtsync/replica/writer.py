"""The writer: local writes, their dots, and the group-committed queue to the log.

A write runs the field type's mutator, joins the delta into the store at once (reads see
their own writes), stamps it with the next seq of this replica's actor and its HLC, and
queues the event. :meth:`Writer.flush` appends the queue to the log with group commit.
Whether this replica may write a field at all is admission's call
(:meth:`~crdtsync.replica.admission.Admission.check_write`); the answer for ``LOCAL``
writes is cached per field until the schema, a learned definition or the fleet changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._tables import LWWTable
from ..clock import HLC
from ..errors import PolicyViolation, StorageError
from ..events import Batch, Codec, Event
from ..log._protocol import Log, Position
from ..policy import LOCAL
from ..types._base import CRDT
from ..types.registers import LWWRegister
from .admission import Admission
from .definitions import Definitions
from .stats import ReplicaStats
from .store import Store
from .subscriptions import Change, Subscriptions

__all__ = ["Writer"]

#: events per log record when flushing
MAX_BATCH = 1024

_new_tuple = tuple.__new__
_BLANK_LWW = LWWRegister()


class Writer:
    """Dots, the pending queue and group commit of one replica's own writes."""

    def __init__(self, actor: str, store: Store, definitions: Definitions, admission: Admission,
                 subscriptions: Subscriptions, stats: ReplicaStats, hlc: HLC, codec: Codec, log_: Log,
                 meta: Mapping[str, str]) -> None:
        self.actor = actor
        self._store = store
        self._definitions = definitions
        self._admission = admission
        self._subs = subscriptions
        self._stats = stats
        self.hlc = hlc
        self.codec = codec
        self.log = log_
        self.meta = meta
        self.closed = False
        self.next_seq = 1
        self._pending: list[Event] = []
        self._inflight: list[Event] = []  # events of the append in flight
        self._queued = 0  # events ever queued for the log
        self._flushed = 0  # of those, events appended
        self._flushing: asyncio.Future[Position | None] | None = None  # the append in flight
        # fields this replica may write at LOCAL: name -> (empty state factory, version, is LWW),
        # valid while the schema is at generation _plans_at and nothing was invalidated
        self._plans: dict[str, tuple[Callable[[], CRDT[Any]], int, bool]] = {}
        self._plans_at = -1

    @property
    def pending(self) -> int:
        """Local events not yet appended to the log."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """Whether events are queued or being appended."""
        return bool(self._pending) or self._flushing is not None

    def invalidate(self) -> None:
        """Forget cached write permissions (a definition was learned, the fleet changed)."""
        self._plans.clear()

    def drop_pending(self) -> None:
        """Forget queued events (a simulated crash: they were never appended)."""
        self._pending.clear()

    # -- writing -------------------------------------------------------------------
    def write(self, fname: str, key: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Event:
        """A ``LOCAL`` write: applied now, queued for the log."""
        plan = self._plans.get(fname)
        if plan is None or self._plans_at != self._definitions.schema._generation:
            plan = self._plan(fname)
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"entity keys are str, got {type(key).__name__}")
        return self.write_raw(fname, key, plan[0], op, args, kwargs, plan[1], plan[2])

    def _plan(self, fname: str) -> tuple[Callable[[], CRDT[Any]], int, bool]:
        schema_gen = self._definitions.schema._generation
        if self._plans_at != schema_gen:
            self._plans.clear()
            self._plans_at = schema_gen
        d = self._admission.check_write(fname)
        if d.policy.write != LOCAL:
            raise PolicyViolation(
                f"{fname!r} is written at {d.policy.write!r}; write() is LOCAL and would skip "
                "that. Use `await replica.update(...)` (it waits for what the policy promises)"
            )
        plan = self._plans[fname] = (d.empty, d.version, type(d.empty()) is LWWRegister)
        return plan

    def write_raw(
        self, fname: str, key: str, empty: Callable[[], CRDT[Any]], op: str,
        args: tuple[Any, ...], kwargs: dict[str, Any], version: int = 1, lww: bool = False,
    ) -> Event:
        """Mutate, join locally, queue the event (no permission check). ``lww``: the
        field's type is LWWRegister."""
        if self.closed:
            raise RuntimeError("replica is closed")
        store = self._store
        tbl = store.tables.get(fname)
        blind = lww and type(tbl) is LWWTable and op in LWWTable.BLIND_MUTATORS
        state: CRDT[Any] | None
        if blind:
            state = _BLANK_LWW  # the delta of ``set`` ignores the current register
        else:
            state = tbl.get(key) if tbl is not None else None
            if state is None:
                state = empty()
        cls = type(state)
        if op not in cls.MUTATORS:
            raise ValueError(f"{cls.__name__} has no mutator {op!r}; it has {list(cls.MUTATORS)}")
        ts = self.hlc.now()
        fn = getattr(state, op)
        if cls.NEEDS_TIME:
            delta = fn(*args, actor=self.actor, ts=ts, **kwargs) if kwargs else fn(*args, actor=self.actor, ts=ts)
        else:
            delta = fn(*args, actor=self.actor, **kwargs) if kwargs else fn(*args, actor=self.actor)
        if blind:
            tbl.join_in(key, delta)  # type: ignore[union-attr]
        else:
            new = state.join(delta)
            if tbl is None:
                tbl = store.table(fname, new.TYPE_TAG)
            tbl[key] = new
        seq = self.next_seq
        ev = _new_tuple(Event, (self.actor, seq, ts, fname, key, delta, version))
        self.next_seq = seq + 1
        store.own_top = seq  # folded into the context on the next read of it
        store.changed += 1
        self._stats.events_local += 1
        self._pending.append(ev)
        self._queued += 1
        if self._subs.active:
            self._subs.notify(Change(fname, key, ev, True))
        return ev

    # -- the log -------------------------------------------------------------------
    async def flush(self) -> Position | None:
        """Append every queued event to the log (see :meth:`Replica.flush`)."""
        target = self._queued
        position = self._store.position
        while self._flushed < target:
            inflight = self._flushing
            if inflight is not None:
                position = await asyncio.shield(inflight)
                continue
            if not self._pending:
                break  # dropped (a simulated crash) rather than appended
            events, self._pending = self._pending, []
            fut: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
            self._flushing = fut
            self._inflight = events
            try:
                position = await self.log.append(self.encode(events))
            except BaseException as exc:
                self._pending[:0] = events
                if isinstance(exc, StorageError):  # the events wait in the queue for space
                    self._stats.storage_errors += 1
                fut.set_exception(exc)
                fut.exception()  # retrieved: the callers waiting on it re-raise it themselves
                raise
            else:
                self._flushed += len(events)
                fut.set_result(position)
            finally:
                self._flushing = None
                self._inflight = []
        return position

    def encode(self, events: Sequence[Event]) -> list[bytes]:
        """Log records for own events (contiguous seqs by construction: not checked again)."""
        return [
            self.codec.encode(Batch._trusted(self.actor, events[i].seq, tuple(events[i:i + MAX_BATCH]), self.meta))
            for i in range(0, len(events), MAX_BATCH)
        ]

    def unlogged(self) -> list[bytes]:
        """Records of own writes that may not be in the log yet (queued or in flight)."""
        return self.encode([*self._inflight, *self._pending])
