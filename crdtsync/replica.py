"""The replica: an event-sourced, CRDT-merging holder of features and flags.

A :class:`Replica` owns a state map ``field -> entity key -> CRDT`` and the
:class:`~crdtsync.clock.Context` of every event it has applied. Writes run a type
mutator, wrap the delta in an :class:`~crdtsync.events.Event` with the next dot, apply it
locally at once (reads see their own writes) and append it to the log; the apply loop
reads the log (its own and every other replica's events), decodes, verifies and joins
each event whose dot it has not seen. Because join is idempotent, commutative and
associative, the order, duplication and delay of events do not matter.

Durability and recovery: snapshots (state, context, log position) are written atomically
every ``snapshot_every`` applied events and on close; opening a replica loads the newest
valid snapshot and replays the log tail after it. Bad records are quarantined (kept in
``<data>/quarantine``) and counted; the loop goes on.

Identity: ``<data>/identity.json`` holds the replica's name, region, role and
*incarnation*. The actor id used in dots is ``name~incarnation``. A data directory
created afresh gets a new random incarnation, so a replica whose state was lost never
reuses its old dots: it rejoins as a new incarnation.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ._tables import LWWTable, new_table
from .clock import HLC, Context, Dot, hlc_wall_ms
from .errors import (
    BadInput,
    CorruptRecord,
    FutureTimestamp,
    IncompatibleState,
    PermissionDenied,
    ResidencyViolation,
    UnsupportedVersion,
)
from .events import Batch, Codec, Columns, Event, codec_for
from .log._protocol import Log, Opening
from .schema import SCHEMA_FIELD, Definition, Schema
from .snapshots import FileSnapshotStore, Snapshot, SnapshotStore, encode_snapshot, state_digest
from .types._base import CRDT
from .types.registers import LWWRegister

__all__ = ["Replica", "ReplicaIdentity", "Change", "ChangeStream", "View", "ReplicaStats"]

log = logging.getLogger("crdtsync.replica")

#: events applied between two yields to the event loop
_YIELD_EVERY = 512
#: events per log record when flushing
_MAX_BATCH = 1024

_new_tuple = tuple.__new__
_BLANK_LWW = LWWRegister()


@dataclass(frozen=True)
class ReplicaIdentity:
    """Who a replica is: name, incarnation, region, role."""

    name: str
    incarnation: str
    region: str = "default"
    role: str = "default"

    @property
    def actor(self) -> str:
        return f"{self.name}~{self.incarnation}"

    @staticmethod
    def new(name: str, region: str = "default", role: str = "default") -> ReplicaIdentity:
        if not name or "~" in name:
            raise ValueError(f"invalid replica name {name!r} (non-empty, no '~')")
        return ReplicaIdentity(name, secrets.token_hex(4), region, role)

    @classmethod
    def load_or_create(cls, data_dir: Path, name: str | None, region: str | None, role: str | None) -> ReplicaIdentity:
        path = data_dir / "identity.json"
        if path.exists():
            d = json.loads(path.read_text())
            ident = cls(d["name"], d["incarnation"], d.get("region", "default"), d.get("role", "default"))
            if name is not None and name != ident.name:
                raise ValueError(
                    f"{data_dir} belongs to replica {ident.name!r}, not {name!r}; use another directory"
                )
            if (region is not None and region != ident.region) or (role is not None and role != ident.role):
                ident = cls(ident.name, ident.incarnation, region or ident.region, role or ident.role)
                ident.save(data_dir)
            return ident
        ident = cls.new(name or f"replica-{secrets.token_hex(2)}", region or "default", role or "default")
        ident.save(data_dir)
        return ident

    def save(self, data_dir: Path) -> None:
        path = data_dir / "identity.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": self.name, "incarnation": self.incarnation,
                                   "region": self.region, "role": self.role}, indent=1))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


@dataclass(frozen=True)
class Change:
    """One applied event, as subscribers see it."""

    field: str
    key: str
    event: Event
    local: bool


@dataclass(frozen=True)
class View:
    """A consistent read: values of several fields of one entity and the context they come from."""

    key: str
    values: Mapping[str, Any]
    context: Context
    position: int | None
    hlc: int


@dataclass
class ReplicaStats:
    """Counters a replica keeps (exported as metrics by ``crdtsync.telemetry``)."""

    events_applied: int = 0
    events_local: int = 0
    events_duplicate: int = 0
    records_applied: int = 0
    records_quarantined: int = 0
    events_rejected: dict[str, int] = field(default_factory=dict)
    subscriber_errors: int = 0
    snapshots_written: int = 0

    def reject(self, reason: str, n: int = 1) -> None:
        self.events_rejected[reason] = self.events_rejected.get(reason, 0) + n


class ChangeStream:
    """The async iterator :meth:`Replica.changes` returns."""

    def __init__(self, replica: Replica, fields: frozenset[str] | None) -> None:
        self._replica = replica
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._entry = (self._queue, fields)
        replica._queues.append(self._entry)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        if self._entry not in self._replica._queues:
            raise StopAsyncIteration
        return await self._queue.get()

    async def aclose(self) -> None:
        if self._entry in self._replica._queues:
            self._replica._queues.remove(self._entry)

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _join_each(tbl: MutableMapping[str, CRDT[Any]], keys: list[str], deltas: list[CRDT[Any]],
               start: int) -> tuple[int, list[int]]:
    """Join ``deltas[start:]`` into ``tbl`` one by one (types without a column form)."""
    refused = []
    for i in range(start, len(keys)):
        key = keys[i]
        delta = deltas[i]
        cur = tbl.get(key)
        try:
            tbl[key] = delta if cur is None else cur.join(delta)
        except IncompatibleState:
            refused.append(i)
    return len(keys) - start - len(refused), refused


class Replica:
    """A replica of a schema's fields. Create it with :meth:`open`."""

    def __init__(
        self,
        identity: ReplicaIdentity,
        schema: Schema,
        log_: Log,
        *,
        data_dir: Path | None = None,
        snapshots: SnapshotStore | None = None,
        codec: Codec | None = None,
        hlc: HLC | None = None,
        snapshot_every: int = 100_000,
        owns_log: bool = True,
    ) -> None:
        self.identity = identity
        self.actor = identity.actor
        self.schema = schema
        self.log = log_
        self.data_dir = data_dir
        self.codec: Codec = codec or codec_for("msgpack")
        self.hlc = hlc or HLC()
        self.stats = ReplicaStats()
        self.snapshot_every = snapshot_every
        self.owns_log = owns_log
        self._snapshots = snapshots
        self._state: dict[str, MutableMapping[str, CRDT[Any]]] = {}
        self._context = Context()
        self._own_top = 0  # highest own seq written locally; folded into _context lazily
        self._position: int | None = None  # position of the last record applied
        self._next_seq = 1
        self._pending: list[Event] = []
        self._flush_lock = asyncio.Lock()
        self._callbacks: list[tuple[Callable[[Change], Any], frozenset[str] | None]] = []
        self._queues: list[tuple[asyncio.Queue[Change], frozenset[str] | None]] = []
        self._tail_task: asyncio.Task[None] | None = None
        self._since_snapshot = 0
        self._snapshot_due = False
        self._closed = False
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._meta = {"region": identity.region, "role": identity.role}
        self._remote_defs: dict[str, Definition] = {}
        # fields this replica may write: name -> (empty state factory, version, is LWW), valid
        # while the schema is at generation _plans_at and no definition was learned
        self._plans: dict[str, tuple[Callable[[], CRDT[Any]], int, bool]] = {}
        self._plans_at = -1

    # -- opening and closing ---------------------------------------------------
    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        schema: Schema | Iterable[Definition] = (),
        log: Log | None = None,
        name: str | None = None,
        region: str | None = None,
        role: str | None = None,
        identity: ReplicaIdentity | None = None,
        codec: str | Codec = "msgpack",
        fsync: str = "group",
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = 100_000,
        hlc: HLC | None = None,
        follow: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> Opening[Replica]:
        """Open (or create) a replica.

        Args:
            data_dir: where identity, snapshots and (by default) the LocalLog live.
                ``None`` makes an in-memory replica (give ``log=``).
            schema: the fields this replica serves.
            log: the log to replicate through; defaults to ``LocalLog(data_dir/"log")``.
            name, region, role: identity (persisted in ``data_dir/identity.json``).
            identity: a full identity for an in-memory replica that restarts (the
                simulated cluster uses it; a data directory keeps its own).
            codec: ``"msgpack"`` (default), ``"avro"`` or a codec object.
            fsync: fsync policy of the default LocalLog (``always``/``group``/``never``).
            snapshot_every: applied events between automatic snapshots.
            follow: start the background apply loop (``False``: call :meth:`catch_up`).
            progress: called as ``progress(done, total)`` while replaying on open.
        """

        async def factory() -> Replica:
            sch = schema if isinstance(schema, Schema) else Schema(schema)
            ddir = Path(data_dir) if data_dir is not None else None
            owns = log is None
            if identity is not None:
                ident = identity
            elif ddir is not None:
                ddir.mkdir(parents=True, exist_ok=True)
                ident = ReplicaIdentity.load_or_create(ddir, name, region, role)
            else:
                ident = ReplicaIdentity.new(name or f"replica-{secrets.token_hex(2)}", region or "default", role or "default")
            the_log = log
            if the_log is None:
                if ddir is None:
                    raise ValueError("an in-memory replica needs a log: Replica.open(log=MemoryLog())")
                from .log.local import LocalLog

                the_log = await LocalLog.open(ddir / "log", fsync=fsync)
            store = snapshots
            if store is None and ddir is not None:
                store = FileSnapshotStore(ddir / "snapshots" / ident.actor)
            r = cls(
                ident, sch, the_log, data_dir=ddir, snapshots=store,
                codec=codec if not isinstance(codec, str) else codec_for(codec),
                hlc=hlc, snapshot_every=snapshot_every, owns_log=owns,
            )
            await r._recover(progress)
            await r._publish_schema()
            if follow:
                r.start()
            return r

        return Opening(factory, Replica.close)

    async def _recover(self, progress: Callable[[int, int], None] | None) -> None:
        snap = self._snapshots.load_latest() if self._snapshots is not None else None
        if snap is not None:
            if snap.actor != self.actor:
                raise ValueError(f"snapshot belongs to {snap.actor}, not {self.actor}")
            self._state = {}
            for fname, rows in snap.state.items():
                tbl = self._state[fname] = new_table(next(iter(rows.values())).TYPE_TAG if rows else None)
                tbl.update(rows)
            self._context = snap.context
            self._position = snap.position
            self._next_seq = snap.next_seq
            self.hlc.restore(snap.hlc)
            self.stats.events_applied = snap.events_applied
            for d in snap.schema:
                self._learn_definition(d)
        await self.catch_up(progress=progress)
        # never reuse a seq of ours that the log already holds
        self._next_seq = max(self._next_seq, self._ctx().max_seq(self.actor) + 1)

    async def _publish_schema(self) -> None:
        """Publish definitions the log does not hold yet (definitions are events too)."""
        for d in self.schema:
            cur = self._state.get(SCHEMA_FIELD, {}).get(d.name)
            want = d.to_dict()
            if cur is not None and cur.value() == want:
                continue
            self._write_raw(SCHEMA_FIELD, d.name, LWWRegister, "set", (want,), {}, 1, True)
        if self._pending:
            await self.flush()

    def start(self) -> None:
        """Start the background apply loop (follows the log)."""
        if self._tail_task is None or self._tail_task.done():
            self._tail_task = asyncio.get_running_loop().create_task(self._tail(), name=f"crdtsync-apply-{self.actor}")

    async def close(self) -> None:
        """Flush pending writes, write a final snapshot, stop the loop, close the log."""
        if self._closed:
            return
        try:
            if self._pending:
                await self.flush()
            if self._snapshots is not None and self._since_snapshot:
                await self.snapshot()
        finally:
            self._closed = True
            if self._tail_task is not None:
                self._tail_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._tail_task
            if self.owns_log:
                await self.log.close()

    async def __aenter__(self) -> Replica:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- writing ---------------------------------------------------------------
    def _definition(self, fname: str) -> Definition:
        d = self.schema.get(fname) or self._remote_defs.get(fname)
        if d is None:
            raise KeyError(f"no field named {fname!r} in this replica's schema (known: {self.schema.names()})")
        return d

    def write(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        """Apply a mutation locally now and queue its event for the log (see :meth:`flush`).

        ``op`` is a mutator of the field's type (``"increment"``, ``"set"``, ``"add"``...);
        ``args`` and ``kwargs`` are its arguments (``actor`` and ``ts`` are filled in).
        """
        plan = self._plans.get(field_name)
        if plan is None or self._plans_at != self.schema._generation:
            plan = self._plan(field_name)
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"entity keys are str, got {type(key).__name__}")
        return self._write_raw(field_name, key, plan[0], op, args, kwargs, plan[1], plan[2])

    def _plan(self, field_name: str) -> tuple[Callable[[], CRDT[Any]], int, bool]:
        """Check that this replica may write ``field_name``; remember the answer while it holds."""
        if self._plans_at != self.schema._generation:
            self._plans.clear()
            self._plans_at = self.schema._generation
        d = self._definition(field_name)
        if d.writers is not None and self.identity.role not in d.writers:
            raise PermissionDenied(
                f"role {self.identity.role!r} may not write {field_name!r} (writers: {sorted(d.writers)})"
            )
        if d.residency is not None and self.identity.region not in d.residency:
            raise ResidencyViolation(
                f"{field_name!r} may live only in {sorted(d.residency)}; this replica is in {self.identity.region!r}"
            )
        plan = self._plans[field_name] = (d.empty, d.version, type(d.empty()) is LWWRegister)
        return plan

    def _write_raw(
        self, fname: str, key: str, empty: Callable[[], CRDT[Any]], op: str,
        args: tuple[Any, ...], kwargs: dict[str, Any], version: int = 1, lww: bool = False,
    ) -> Event:
        """Mutate, join locally, queue the event. ``lww``: the field's type is LWWRegister."""
        if self._closed:
            raise RuntimeError("replica is closed")
        tbl = self._state.get(fname)
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
                tbl = self._state[fname] = new_table(new.TYPE_TAG)
            tbl[key] = new
        seq = self._next_seq
        ev = _new_tuple(Event, (self.actor, seq, ts, fname, key, delta, version))
        self._next_seq = seq + 1
        self._own_top = seq  # folded into the context on the next read of it (_ctx)
        self.stats.events_local += 1
        self._since_snapshot += 1
        self._pending.append(ev)
        if self._callbacks or self._queues:
            self._notify(Change(fname, key, ev, True))
        return ev

    async def flush(self) -> int | None:
        """Append every queued event to the log; returns the position of the last record.

        Concurrent callers share one append (group commit). If the append fails the
        events stay queued and the error propagates; call ``flush`` again to retry.
        """
        async with self._flush_lock:
            if not self._pending:
                return self._position
            events, self._pending = self._pending, []
            # own events have contiguous seqs by construction: no need to check them again
            records = [
                self.codec.encode(Batch._trusted(self.actor, events[i].seq, tuple(events[i:i + _MAX_BATCH]), self._meta))
                for i in range(0, len(events), _MAX_BATCH)
            ]
            try:
                first = await self.log.append(records)
            except BaseException:
                self._pending[:0] = events
                raise
            return first

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        """Write and wait until the event is durable in the log (write level LOCAL)."""
        ev = self.write(field_name, key, op, *args, **kwargs)
        await self.flush()
        return ev

    # -- reading ---------------------------------------------------------------
    def state(self, field_name: str, key: str) -> CRDT[Any]:
        """The CRDT state of one field of one entity (an empty state if never written)."""
        s = self._state.get(field_name, {}).get(key)
        return s if s is not None else self._definition(field_name).empty()

    def value(self, field_name: str, key: str) -> Any:
        """The value of one field of one entity."""
        return self.state(field_name, key).value()

    def view(self, key: str, fields: Iterable[str]) -> View:
        """Values of several fields of one entity, from one consistent moment."""
        values = {f: self.value(f, key) for f in fields}
        return View(key, values, self._ctx(), self._position, self.hlc.last)

    def keys(self, field_name: str) -> list[str]:
        return sorted(self._state.get(field_name, {}))

    def fields(self) -> list[str]:
        return sorted(f for f in self._state if not f.startswith("_"))

    @property
    def context(self) -> Context:
        """Every event this replica has applied (immutable; cheap to keep)."""
        return self._ctx()

    def _ctx(self) -> Context:
        """The context, with this replica's own writes folded in.

        Own writes get contiguous seqs and are applied at once, so folding them is one
        version-vector entry, done when someone looks rather than on every write.
        """
        top = self._own_top
        if top:
            c = self._context
            if c._vv.get(self.actor, 0) < top:
                vv = dict(c._vv)
                vv[self.actor] = top
                c = Context(vv, c._cloud) if c._cloud else Context._raw(vv, c._cloud)
                self._context = c
            self._own_top = 0
        return self._context

    @property
    def position(self) -> int | None:
        """Position of the last log record applied."""
        return self._position

    @property
    def pending(self) -> int:
        """Local events not yet appended to the log."""
        return len(self._pending)

    def digest(self) -> bytes:
        """A digest of the whole user-visible state (equal digests, equal states)."""
        return state_digest({f: t for f, t in self._state.items() if f != SCHEMA_FIELD})

    def export_state(self) -> dict[str, dict[str, CRDT[Any]]]:
        """A shallow copy of the state map (states are immutable)."""
        return {f: dict(t) for f, t in self._state.items()}

    # -- subscriptions ---------------------------------------------------------
    def subscribe(self, callback: Callable[[Change], Any], fields: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(change)`` after every applied event; returns an unsubscribe function.

        A callback that raises is logged and counted; it never stops replication.
        """
        entry = (callback, frozenset(fields) if fields is not None else None)
        self._callbacks.append(entry)
        return lambda: self._callbacks.remove(entry) if entry in self._callbacks else None

    def changes(self, fields: Iterable[str] | None = None) -> ChangeStream:
        """Async iterator of changes (local and remote) from this call on.

        The subscription starts when ``changes()`` is called, not when iteration starts;
        close it with ``await stream.aclose()`` (or ``async with``).
        """
        return ChangeStream(self, frozenset(fields) if fields is not None else None)

    def _notify(self, change: Change) -> None:
        if change.field == SCHEMA_FIELD:
            return
        for cb, flt in self._callbacks:
            if flt is None or change.field in flt:
                try:
                    cb(change)
                except Exception:  # a subscriber's bug must not stop replication
                    self.stats.subscriber_errors += 1
                    log.exception("subscriber %r failed on %s/%s", cb, change.field, change.key)
        for q, flt in self._queues:
            if flt is None or change.field in flt:
                q.put_nowait(change)

    # -- applying --------------------------------------------------------------
    async def catch_up(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every record currently in the log; returns the number of events applied."""
        # A replay allocates millions of short-lived, acyclic objects; the cyclic
        # collector's frequent young-generation passes cost about a quarter of the time.
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
        try:
            return await self._catch_up(progress)
        finally:
            gc.set_threshold(*threshold)

    async def _catch_up(self, progress: Callable[[int, int], None] | None) -> int:
        end = await self.log.end()
        start = self._position
        applied = 0
        reader = self.log.read(start if start is not None else 0)
        async with contextlib.aclosing(reader):  # type: ignore[type-var]
            async for entry in reader:
                if start is not None and entry.position <= start:
                    continue
                if entry.position >= end:
                    break
                applied += self._apply_record(entry.position, entry.payload)
                if self._snapshot_due:
                    await self.snapshot()
                if progress is not None:
                    progress(entry.position, end)
                if applied and applied % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        return applied

    async def _tail(self) -> None:
        while not self._closed:
            start = self._position
            try:
                reader = self.log.read(start if start is not None else 0, follow=True)
                async with contextlib.aclosing(reader):  # type: ignore[type-var]
                    n = 0
                    async for entry in reader:
                        if start is not None and entry.position <= start:
                            continue
                        n += self._apply_record(entry.position, entry.payload)
                        if self._snapshot_due:
                            await self.snapshot()
                        if n >= _YIELD_EVERY:
                            n = 0
                            await asyncio.sleep(0)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._closed:
                    return
                log.exception("apply loop of %s failed; retrying in 0.5 s", self.actor)
                await asyncio.sleep(0.5)

    def _apply_record(self, position: int, payload: bytes) -> int:
        try:
            # a codec that can hands over batch-format-2 records column by column
            decode = getattr(self.codec, "decode_record", None)
            rec = decode(payload) if decode is not None else self.codec.decode(payload)
        except (CorruptRecord, UnsupportedVersion) as exc:
            self._quarantine(position, payload, exc)
            self._advance(position)
            return 0
        applied = self._apply_columns(rec) if type(rec) is Columns else self._apply_batch(rec)
        self._advance(position)
        self.stats.records_applied += 1
        return applied

    def _advance(self, position: int) -> None:
        self._position = position
        if self._applied_waiters:
            still = []
            for target, fut in self._applied_waiters:
                if position >= target:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((target, fut))
            self._applied_waiters = still
        if self._snapshots is not None and self._since_snapshot >= self.snapshot_every:
            self._snapshot_due = True

    def _apply_batch(self, batch: Batch) -> int:
        ctx = self._ctx()
        origin = batch.origin
        have = ctx._vv.get(origin, 0)
        last = batch.last_seq
        if have >= last:
            if origin != self.actor:  # our own events read back are not duplicates
                self.stats.events_duplicate += len(batch)
            return 0
        events: Sequence[Event] = batch.events
        cloud = ctx._cloud
        if batch.first_seq <= have + 1 and not (cloud and any(d[0] == origin for d in cloud)):
            # the common case: the batch extends the origin's contiguous prefix
            skip = have - batch.first_seq + 1
            if skip > 0:
                events = events[skip:]
            vv = dict(ctx._vv)
            vv[origin] = last
            new_ctx = Context._raw(vv, cloud)
        else:
            events = [ev for ev in events if ev.dot not in ctx]
            new_ctx = ctx.add_all(ev.dot for ev in events)
        dups = len(batch) - len(events)
        if dups and origin != self.actor:
            self.stats.events_duplicate += dups
        if not events:
            self._context = new_ctx
            return 0
        # one clock check for the batch; per event only if something is from the future
        try:
            self.hlc.observe(max(ev.hlc for ev in events))
            future_ok = True
        except FutureTimestamp:
            future_ok = False
        region = batch.meta.get("region", "default")
        role = batch.meta.get("role", "default")
        verdicts: dict[tuple[str, str], str | None] = {}
        tables: dict[str, MutableMapping[str, CRDT[Any]]] = {}
        notify = bool(self._callbacks or self._queues)
        applied = 0
        for ev in events:
            if not future_ok:
                try:
                    self.hlc.observe(ev.hlc)
                except FutureTimestamp:
                    self.stats.reject("future_timestamp")
                    continue
            fname = ev.field
            delta = ev.delta
            vkey = (fname, delta.TYPE_TAG)
            if vkey in verdicts:
                reason = verdicts[vkey]
            else:
                reason = verdicts[vkey] = self._verdict(fname, delta.TYPE_TAG, region, role)
            if reason is not None:
                self.stats.reject(reason)
                continue
            tbl = tables.get(fname)
            if tbl is None:
                tbl = self._state.get(fname)
                if tbl is None:
                    tbl = self._state[fname] = new_table(delta.TYPE_TAG)
                tables[fname] = tbl
            cur = tbl.get(ev.key)
            try:
                tbl[ev.key] = delta if cur is None else cur.join(delta)
            except IncompatibleState as exc:
                self.stats.reject("incompatible_type")
                log.warning("rejected %s: %s", ev.dot, exc)
                continue
            applied += 1
            if fname == SCHEMA_FIELD:
                self._learn_definition(tbl[ev.key].value())
                verdicts.clear()
            elif notify:
                self._notify(Change(fname, ev.key, ev, False))
        self._context = new_ctx
        self.stats.events_applied += applied
        self._since_snapshot += applied
        return applied

    def _apply_columns(self, cols: Columns) -> int:
        """:meth:`_apply_batch` for a columnar record, without an Event per event.

        The same verdicts, counts and context as :meth:`_apply_batch`, which it hands the
        record to whenever the shortcut would not be exact: subscribers to notify, a
        definition in the record (it changes the verdicts of the events after it), one
        field under two entries (the first event's type decides for a key), a record
        that does not extend the origin's contiguous prefix, or a timestamp from the
        future.
        """
        groups = cols.groups
        if (self._callbacks or self._queues or len({g.field for g in groups}) != len(groups)
                or any(g.field == SCHEMA_FIELD for g in groups)):
            return self._apply_batch(cols.batch())
        ctx = self._ctx()
        origin = cols.origin
        first = cols.first_seq
        hlcs = cols.hlcs
        n = len(hlcs)
        last = first + n - 1
        have = ctx._vv.get(origin, 0)
        if have >= last:
            if origin != self.actor:
                self.stats.events_duplicate += n
            return 0
        cloud = ctx._cloud
        if first > have + 1 or (cloud and any(d[0] == origin for d in cloud)):
            return self._apply_batch(cols.batch())
        skip = max(have - first + 1, 0)
        top = max(hlcs[skip:]) if skip else max(hlcs)
        clock = self.hlc
        if hlc_wall_ms(top) - clock._clock() > clock.max_drift_ms:
            return self._apply_batch(cols.batch())  # per-event timestamp verdicts
        try:
            clock.observe(top)
        except FutureTimestamp:  # the wall clock stepped back just now
            return self._apply_batch(cols.batch())
        if skip and origin != self.actor:
            self.stats.events_duplicate += skip
        vv = dict(ctx._vv)
        vv[origin] = last
        region = cols.meta.get("region", "default")
        role = cols.meta.get("role", "default")
        applied = 0
        for g in groups:
            pos = g.positions
            start = skip if pos is None else bisect.bisect_left(pos, skip)
            count = len(g.keys) - start
            if count <= 0:
                continue
            fname = g.field
            tag = g.cls.TYPE_TAG
            reason = self._verdict(fname, tag, region, role)
            if reason is not None:
                self.stats.reject(reason, count)
                continue
            tbl = self._state.get(fname)
            if tbl is None:
                tbl = self._state[fname] = new_table(tag)
            if g.cols is not None:
                done, refused = g.cls._join_columns(tbl, g.keys, g.cols, start)
            else:
                done, refused = _join_each(tbl, g.keys, g.deltas, start)  # type: ignore[arg-type]
            applied += done
            for i in refused:
                self.stats.reject("incompatible_type")
                seq = first + (i if pos is None else pos[i])
                log.warning("rejected %s: cannot join %s into the state held at %s/%s",
                            Dot(origin, seq), g.cls.__name__, fname, g.keys[i])
        self._context = Context._raw(vv, cloud)
        self.stats.events_applied += applied
        self._since_snapshot += applied
        return applied

    def _verdict(self, fname: str, tag: str, region: str, role: str) -> str | None:
        """Why events of ``fname`` with type ``tag`` from (region, role) must be rejected, if so."""
        if fname == SCHEMA_FIELD:
            return None if tag == "lww" else "wrong_type"
        d = self.schema.get(fname) or self._remote_defs.get(fname)
        if d is None:
            return None  # learned later; the state is kept under its own type
        if tag != d.type_tag:
            return "wrong_type"
        if d.residency is not None and (self.identity.region not in d.residency or region not in d.residency):
            return "residency"
        if d.writers is not None and role not in d.writers:
            return "permission"
        return None

    def _learn_definition(self, d: Any) -> None:
        if not isinstance(d, dict):
            return
        try:
            definition = Definition.from_dict(d)
        except (BadInput, KeyError, TypeError, ValueError) as exc:
            self.stats.reject("bad_definition")
            log.warning("ignoring a malformed definition: %s", exc)
            return
        if definition.name not in self.schema:
            self._remote_defs[definition.name] = definition
            self._plans.clear()

    def _quarantine(self, position: int, payload: bytes, exc: Exception) -> None:
        self.stats.records_quarantined += 1
        log.warning("quarantined record at position %s: %s", position, exc)
        if self.data_dir is not None:
            qdir = self.data_dir / "quarantine"
            qdir.mkdir(exist_ok=True)
            (qdir / f"{position:020d}.bin").write_bytes(payload)
            (qdir / f"{position:020d}.txt").write_text(f"{type(exc).__name__}: {exc}\n")

    async def wait_applied(self, position: int, timeout: float | None = None) -> None:
        """Wait until the record at ``position`` (or a later one) has been applied."""
        if self._position is not None and self._position >= position:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((position, fut))
        await asyncio.wait_for(fut, timeout)

    async def sync(self, timeout: float | None = None) -> None:
        """Flush local writes and wait until everything in the log now has been applied."""
        await self.flush()
        end = await self.log.end()
        if self._tail_task is None:
            await self.catch_up()
            return
        # ``end`` is the next position; wait for the record just below it, if any
        reader = self.log.read(self._position if self._position is not None else 0)
        last = None
        async with contextlib.aclosing(reader):  # type: ignore[type-var]
            async for entry in reader:
                if entry.position >= end:
                    break
                last = entry.position
        if last is not None:
            await self.wait_applied(last, timeout)

    # -- snapshots -------------------------------------------------------------
    async def snapshot(self) -> None:
        """Write a snapshot now (atomically); no-op without a snapshot store.

        The log is synced first: a snapshot must never name a position the log could
        still lose in a power cut (it would then be reused by different records).
        """
        if self._snapshots is None:
            return
        self._snapshot_due = False
        if self._pending:  # the snapshot must not hold events the log does not
            await self.flush()
        sync = getattr(self.log, "sync", None)
        if sync is not None:
            await sync()
        schema = [d.to_dict() for d in self._remote_defs.values()]
        snap = Snapshot(self.actor, self._ctx(), self._position, self._next_seq, self.hlc.last,
                        self._state, schema, self.stats.events_applied)
        self._snapshots.save(encode_snapshot(snap))
        self._since_snapshot = 0
        self.stats.snapshots_written += 1

    async def compact(self) -> int | None:
        """Snapshot, then drop log records the snapshot covers (only for a log this replica owns)."""
        await self.flush()
        await self.catch_up()
        await self.snapshot()
        if not self.owns_log:
            raise ValueError("this replica does not own its log; other readers may still need it")
        if self._position is not None:
            await self.log.truncate_before(self._position)
        return self._position
