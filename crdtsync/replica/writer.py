"""The writer: local writes, their dots, and the group-committed queue to the log.

A write runs the field type's mutator, joins the delta into the store at once (reads see
their own writes), stamps it with the next seq of this replica's actor and its HLC, and
queues the event. :meth:`Writer.flush` appends the queue to the log with group commit.
Whether this replica may write a field at all is admission's call
(:meth:`~crdtsync.replica.admission.Admission.check_write`); the answer for ``LOCAL``
writes is cached per field until the schema, a learned definition or the fleet changes.

The queue is columnar (:class:`~crdtsync.replica.pending.Pending`): a write appends its
key, stamp and delta (or, for the specialised writers of :mod:`crdtsync.replica.handles`,
just its value) to parallel lists, with seqs implicit, and a flush encodes batch format 2
straight from those columns. An :class:`~crdtsync.events.Event` is built only for whoever
asks for one (the return value of :meth:`Writer.write`, subscribers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from .._tables import LWWTable
from ..clock import HLC
from ..errors import PolicyViolation, StorageError
from ..events import Codec, Event
from ..log._protocol import Log, Position
from ..policy import LOCAL
from ..types._base import CRDT
from ..types.registers import LWWRegister
from .admission import Admission
from .definitions import Definitions
from .pending import DELTA, Chunk, Pending
from .stats import ReplicaStats
from .store import Store
from .subscriptions import Change, Subscriptions

__all__ = ["Writer", "Plan"]

_BLANK_LWW = LWWRegister()

#: what the writer knows about a field it may write at LOCAL: (empty state factory,
#: field version, whether its type is LWWRegister)
Plan = tuple[Callable[[], CRDT[Any]], int, bool]


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
        self._closed = False
        self.queue = Pending(actor, meta, codec)
        self._inflight: Chunk | None = None  # the events of the append in flight
        self._flushed_to = 1  # every own seq below this was appended (or dropped)
        self._written_top = 0  # the highest own seq taken off the queue (appended or dropped)
        self._flushing: asyncio.Future[Position | None] | None = None  # the append in flight
        self._plans: dict[str, Plan] = {}
        self._plans_at = -1
        #: replaced whenever cached plans go stale: handles compare it by identity
        self.generation = object()
        store.own_top = self.last_seq

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        self.invalidate()

    @property
    def next_seq(self) -> int:
        """The seq of this replica's next write."""
        return self.queue.first + len(self.queue.keys)

    @next_seq.setter
    def next_seq(self, seq: int) -> None:
        if self.queue.keys:
            raise RuntimeError("the next seq can only move while no event is queued")
        self.queue.first = seq
        if self._flushing is None:
            self._flushed_to = seq

    def last_seq(self) -> int:
        """The highest seq written here, queued or not (0: none)."""
        q = self.queue
        if q.keys:
            return q.first + len(q.keys) - 1
        return self._written_top

    @property
    def pending(self) -> int:
        """Local events not yet appended to the log."""
        return len(self.queue.keys)

    @property
    def busy(self) -> bool:
        """Whether events are queued or being appended."""
        return bool(self.queue.keys) or self._flushing is not None

    def invalidate(self) -> None:
        """Forget cached write permissions (a definition was learned, the fleet changed,
        the store was reloaded, the replica closed): handles re-plan on their next call."""
        self._plans.clear()
        self.generation = object()

    def drop_pending(self) -> None:
        """Forget queued events (a simulated crash: they were never appended)."""
        q = self.queue
        if q.keys:
            self._written_top = q.first + len(q.keys) - 1
            self._take()
        if self._flushing is None:
            self._flushed_to = q.first

    def _take(self) -> Chunk:
        """Everything queued, off the queue: folded into the store's count of changes."""
        chunk = self.queue.take(len(self.queue.keys))
        self._store.changed += len(chunk)
        return chunk

    # -- writing -------------------------------------------------------------------
    def plan(self, fname: str) -> Plan:
        """What writing ``fname`` at ``LOCAL`` needs (raises if this replica may not)."""
        plan = self._plans.get(fname)
        if plan is not None and self._plans_at == self._definitions.schema._generation:
            return plan
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

    def write(self, fname: str, key: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Event:
        """A ``LOCAL`` write: applied now, queued for the log."""
        plan = self.plan(fname)
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"entity keys are str, got {type(key).__name__}")
        return self.write_raw(fname, key, plan[0], op, args, kwargs, plan[1], plan[2])

    def write_raw(
        self, fname: str, key: str, empty: Callable[[], CRDT[Any]], op: str,
        args: tuple[Any, ...], kwargs: dict[str, Any], version: int = 1, lww: bool = False,
        ts: int | None = None,
    ) -> Event:
        """Mutate, join locally, queue the event (no permission check). ``lww``: the
        field's type is LWWRegister; ``ts``: a stamp this clock issued for this write
        and nothing else (default: a new one)."""
        if self._closed:
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
        if ts is None:
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
        q = self.queue
        seq = q.first + len(q.keys)
        q.push(q.entry(fname, version, type(delta), DELTA), key, ts, delta)
        self._stats.events_local += 1
        ev = Event(self.actor, seq, ts, fname, key, delta, version)
        if self._subs.active:
            self._subs.notify(Change(fname, key, ev, True))
        return ev

    def queued_event(self, index: int) -> Event:
        """The event at ``index`` of the queue (for subscribers of handle writes)."""
        return self.queue.event(index)

    # -- the log -------------------------------------------------------------------
    async def flush(self, linger: bool = False) -> Position | None:
        """Append every queued event to the log (see :meth:`Replica.flush`).

        ``linger``: before taking the queue, let the tasks ready to run go first once, so
        that concurrent writers waiting on a flush (``update()`` calls) queue their events
        and share this append: group commit within one loop iteration."""
        target = self.next_seq
        position = self._store.position
        lingered = not linger
        while self._flushed_to < target:
            inflight = self._flushing
            if inflight is not None:
                position = await asyncio.shield(inflight)
                continue
            q = self.queue
            if not q.keys:
                break  # dropped (a simulated crash) rather than appended
            if not lingered:
                lingered = True
                await asyncio.sleep(0)
                continue
            chunk = self._take()
            fut: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
            self._flushing = fut
            self._inflight = chunk
            self._written_top = max(self._written_top, chunk.last)
            try:
                position = await self.log.append(q.encode(chunk))
            except BaseException as exc:
                q.put_back(chunk)
                if isinstance(exc, StorageError):  # the events wait in the queue for space
                    self._stats.storage_errors += 1
                fut.set_exception(exc)
                fut.exception()  # retrieved: the callers waiting on it re-raise it themselves
                raise
            else:
                self._flushed_to = chunk.last + 1
                fut.set_result(position)
            finally:
                self._flushing = None
                self._inflight = None
        return position

    def unlogged(self) -> list[bytes]:
        """Records of own writes that may not be in the log yet (queued or in flight)."""
        q = self.queue
        out = q.encode(self._inflight) if self._inflight is not None else []
        if q.keys:
            out += q.encode(q.peek())
        return out
