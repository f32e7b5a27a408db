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

from ._dirlock import DirLock
from ._tables import LWWTable, new_table
from .clock import HLC, Context, Dot, hlc_wall_ms
from .control import ControlChannel, DirectoryControl, Heartbeat, Membership
from .errors import (
    BadInput,
    ClockSkew,
    CorruptRecord,
    CrdtSyncError,
    FutureTimestamp,
    IncompatibleState,
    PermissionDenied,
    PolicyViolation,
    ReplicaRemoved,
    ResidencyViolation,
    StaleRead,
    StorageError,
    Unavailable,
    UnsupportedVersion,
)
from .events import Batch, Codec, Columns, Event, codec_for
from .log._protocol import Log, Opening, read_range
from .policy import (
    ACKS,
    ALL,
    LINEARIZABLE,
    LOCAL,
    LOG,
    MAX_STALENESS,
    QUORUM,
    SEQUENCED,
    SESSION,
    ReadLevel,
    WriteLevel,
)
from .schema import SCHEMA_FIELD, Definition, Schema
from .sequenced import CANCEL, FLEET_FIELD, SEQ_FIELD, Outcome, SequencedOp, evaluate_condition
from .skew import ClockSkewMonitor
from .snapshots import FileSnapshotStore, Snapshot, SnapshotStore, encode_snapshot, state_digest
from .types._base import CRDT
from .types.registers import LWWRegister, MaxRegister

__all__ = ["Replica", "ReplicaIdentity", "Change", "ChangeStream", "View", "ReplicaStats", "Session", "Leveled"]

log = logging.getLogger("crdtsync.replica")

#: events applied between two yields to the event loop
_YIELD_EVERY = 512
#: events per log record when flushing
_MAX_BATCH = 1024
#: seconds between two prompt heartbeats (bursts of applied batches coalesce)
_HEARTBEAT_GAP = 0.001
#: events held back for a future timestamp, at most (beyond, they are re-read on restart)
_MAX_HELD = 1_000_000

_new_tuple = tuple.__new__
_BLANK_LWW = LWWRegister()


class _Here:
    """The type of :data:`HERE`."""


#: ``before=`` default of ``Replica._apply_batch``: the replica's position now
HERE = _Here()


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
    #: sequenced operations whose condition did not hold (same count at every replica)
    ops_refused: int = 0
    #: sequenced operations cancelled by their writer before the log ordered them
    ops_cancelled: int = 0
    #: times a field's freshness SLO (``Eventual(max_lag=...)``) went from met to missed
    slo_breaches: dict[str, int] = field(default_factory=dict)
    #: local writes refused (``ClockSkew``) because this replica's clock was ahead of its peers'
    clock_skew: int = 0
    #: remote events held back now because their timestamp is ahead of this clock (they are
    #: applied once it catches up; ``events_rejected["future_timestamp"]`` counts arrivals)
    events_held: int = 0
    #: flushes and snapshots the disk refused (``StorageFull``/``StorageUnavailable``)
    storage_errors: int = 0

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
        control: ControlChannel | None = None,
        heartbeat_interval: float = 1.0,
        liveness: float | None = None,
        sequencer: Log | None = None,
        admins: Iterable[str] | None = None,
    ) -> None:
        self.identity = identity
        #: roles that may publish definitions and remove replicas (None: any role)
        self.admins: frozenset[str] | None = frozenset(admins) if admins is not None else None
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
        self._inflight: list[Event] = []  # events of the append in flight
        self._queued = 0  # events ever queued for the log (own writes)
        self._flushed = 0  # of those, events appended
        self._flushing: asyncio.Future[int | None] | None = None  # the append in flight
        self._callbacks: list[tuple[Callable[[Change], Any], frozenset[str] | None]] = []
        self._queues: list[tuple[asyncio.Queue[Change], frozenset[str] | None]] = []
        self._tail_task: asyncio.Task[None] | None = None
        self._since_snapshot = 0
        self._snapshot_due = False
        self._snapshot_refused_at: int | None = None  # _since_snapshot when the disk refused one
        self._closed = False
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._meta = {"region": identity.region, "role": identity.role}
        self._remote_defs: dict[str, Definition] = {}
        # -- coordination (policy engine) --
        self.control = control
        self.heartbeat_interval = heartbeat_interval
        #: seconds without a heartbeat after which a peer is presumed unreachable
        self.liveness = liveness if liveness is not None else 3 * heartbeat_interval
        self.membership = Membership(local=identity.name, max_drift_ms=self.hlc.max_drift_ms)
        #: peers' clocks from their heartbeats; fences local stamps too far ahead of them
        self.skew = ClockSkewMonitor(max_drift_ms=self.hlc.max_drift_ms)
        self.hlc.fence = self._fence
        # remote events held back for a timestamp ahead of this clock:
        # (wall ms from which they may apply, event, batch meta, position applied before them)
        self._held: list[tuple[int, Event, Mapping[str, Any], int | None]] = []
        self._held_due = 0  # earliest wall ms at which a held event may apply
        self._overflowed = False  # more were held than _MAX_HELD (those wait for a restart)
        self._overflow_before: int | None = None
        self.seq_actor = f"{self.actor}/s"  # the origin of this replica's sequenced operations
        #: the shared log that orders SEQUENCED operations (this replica's log by default;
        #: an edge gives the upstream log, its own being a store-and-forward outbox)
        self.sequencer: Log = sequencer if sequencer is not None else log_
        self._seq_scanned: int | None = None  # sequencer position scanned by sync_to_end
        self._seq_need = Context()  # dots seen in the sequencer up to _seq_scanned
        self._seq_next = 1
        self._seq_unsettled: list[Event] = []  # sequenced ops whose append failed
        self._seq_lock = asyncio.Lock()
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}
        self._echo: dict[str, int] = {}  # latest ping answered, by asking replica
        self._ping = 0
        self._ticks: list[asyncio.Future[None]] = []
        self._hb_wake: asyncio.Event | None = None
        self._hb_task: asyncio.Task[None] | None = None
        self._removed: dict[str, int] = {}  # removed incarnation -> last seq still accepted
        self._pins: dict[str, tuple[str, str]] = {}  # origin -> (region, role) it first claimed
        self._recovered = False  # own events new after recovery are forged
        self._pruned: set[str] = set()  # removed incarnations dropped from the context
        self._slo_missed: set[str] = set()
        #: the fleet as recorded in the log: name -> (actor, region, join stamp)
        self._roster: dict[str, tuple[str, str, int]] = {}
        self.scope: frozenset[str] | None = getattr(log_, "regions", None)
        # fields this replica may write: name -> (empty state factory, version, is LWW), valid
        # while the schema is at generation _plans_at and no definition was learned
        self._plans: dict[str, tuple[Callable[[], CRDT[Any]], int, bool]] = {}
        self._plans_at = -1
        self._dirlock: DirLock | None = None  # the data directory's lock (held while open)

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
        control: ControlChannel | None | bool = True,
        heartbeat_interval: float = 1.0,
        liveness: float | None = None,
        sequencer: Log | None = None,
        admins: Iterable[str] | None = None,
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
            control: the control channel for heartbeats (acks, staleness, stability).
                ``True`` (default): the log's own channel (a MemoryLog's hub, a
                LocalLog's ``control/`` directory); ``None``/``False``: none (ack levels
                and QUORUM reads then raise ``Unavailable``).
            heartbeat_interval: seconds between heartbeats (more often while someone
                waits for an acknowledgement).
            liveness: seconds of silence after which a peer counts as unreachable
                (default three heartbeat intervals); ack levels fail fast when too
                few peers are live.
            sequencer: the shared log that orders ``SEQUENCED`` operations, when this
                replica's own log is not it (an edge whose LocalLog is a
                store-and-forward outbox: give the upstream log, and run a
                :class:`~crdtsync.forwarder.Forwarder` that copies it down). Sequenced
                operations never wait in an outbox: with the sequencer unreachable they
                raise ``Unavailable``.
            admins: roles allowed to publish definitions (``_schema``) and remove
                replicas (``_fleet``); events of other roles there are rejected and
                counted (``permission``). ``None`` (default): any role. Configure every
                replica of a fleet alike.
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
            chan: ControlChannel | None
            if control is True:
                chan = default_control(the_log)
            elif control is False or control is None:
                chan = None
            else:
                chan = control
            r = cls(
                ident, sch, the_log, data_dir=ddir, snapshots=store,
                codec=codec if not isinstance(codec, str) else codec_for(codec),
                hlc=hlc, snapshot_every=snapshot_every, owns_log=owns,
                control=chan, heartbeat_interval=heartbeat_interval, liveness=liveness,
                sequencer=sequencer, admins=admins,
            )
            await r._recover(progress)
            r._recovered = True
            await r._publish_schema()
            r.observe_heartbeat(r.heartbeat())
            if follow:
                r.start()
            return r

        async def locked() -> Replica:
            # one process per data directory: a second one would reuse this actor's seqs
            lock = DirLock.acquire(Path(data_dir), name) if data_dir is not None else None
            try:
                r = await factory()
            except BaseException:
                if lock is not None:
                    lock.release()
                raise
            if lock is not None:
                lock.describe(r.identity.name)
            r._dirlock = lock
            return r

        return Opening(locked, Replica.close)

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
            # definitions this replica had in code when it saved the snapshot are in
            # the replicated _schema field: a replica reopened without them keeps
            # enforcing them (residency, writers, policy)
            for reg in self._state.get(SCHEMA_FIELD, {}).values():
                self._learn_definition(reg.value())
            for key, reg in self._state.get(FLEET_FIELD, {}).items():
                self._learn_fleet(key, reg)
            if snap.unlogged:  # own writes the log may lack (see snapshot())
                await self.log.append(list(snap.unlogged))
        await self.catch_up(progress=progress)
        # never reuse a seq of ours that the log already holds
        self._next_seq = max(self._next_seq, self._ctx().max_seq(self.actor) + 1)
        self._seq_next = max(self._seq_next, self._ctx().max_seq(self.seq_actor) + 1)

    async def _publish_schema(self) -> None:
        """Publish definitions the log does not hold yet (definitions are events too).
        Only an admin role publishes: other replicas would reject the events anyway."""
        for d in (self.schema if self._is_admin() else ()):
            cur = self._state.get(SCHEMA_FIELD, {}).get(d.name)
            want = d.to_dict()
            if cur is not None and cur.value() == want:
                continue
            self._write_raw(SCHEMA_FIELD, d.name, LWWRegister, "set", (want,), {}, 1, True)
        if self._roster.get(self.identity.name, ("",))[0] != self.actor:
            # join the fleet's roster: quorum sizes survive restarts and partitions
            join = {"name": self.identity.name, "region": self.identity.region, "role": self.identity.role}
            self._write_raw(FLEET_FIELD, f"join/{self.actor}", LWWRegister, "set", (join,), {})
            self._learn_fleet(f"join/{self.actor}", self._state[FLEET_FIELD][f"join/{self.actor}"])
        if self._pending:
            await self.flush()

    def start(self) -> None:
        """Start the background apply loop (follows the log) and heartbeats."""
        if self._tail_task is None or self._tail_task.done():
            self._tail_task = asyncio.get_running_loop().create_task(self._tail(), name=f"crdtsync-apply-{self.actor}")
        if self.control is not None and (self._hb_task is None or self._hb_task.done()):
            self.control.start(self.identity.name, self._receive_heartbeat)
            self._hb_wake = asyncio.Event()
            self._hb_task = asyncio.get_running_loop().create_task(
                self._heartbeats(), name=f"crdtsync-heartbeat-{self.actor}")

    async def close(self) -> None:
        """Flush pending writes, write a final snapshot, stop the loop, close the log."""
        if self._closed:
            return
        try:
            if self._pending or self._flushing is not None:
                await self.flush()
            if self._snapshots is not None and self._since_snapshot:
                await self.snapshot()
        except StorageError as exc:
            # Closing anyway (files and tasks are released): say what that cost.
            lost = len(self._pending)
            cost = f"{lost} queued events were not written and are lost" if lost else "no final snapshot was written"
            raise type(exc)(exc.errno, f"closing replica {self.actor}: {cost}. {exc}", exc.filename) from exc
        finally:
            self._closed = True
            for task in (self._tail_task, self._hb_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self.control is not None:
                await self.control.close()
            for fut in self._outcomes.values():
                if not fut.done():
                    fut.set_exception(Unavailable("the replica closed before the operation was applied"))
            self._outcomes.clear()
            try:
                if self.owns_log:
                    await self.log.close()
            finally:
                if self._dirlock is not None:
                    self._dirlock.release()

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
        This is the ``LOCAL`` write level without waiting for the append; fields whose
        policy asks for more (``LOG``, acks, ``SEQUENCED``) must be written with
        :meth:`update`, which waits for what the policy promises.
        """
        plan = self._plans.get(field_name)
        if plan is None or self._plans_at != self.schema._generation:
            plan = self._plan(field_name)
        if type(key) is not str and not isinstance(key, str):
            raise TypeError(f"entity keys are str, got {type(key).__name__}")
        return self._write_raw(field_name, key, plan[0], op, args, kwargs, plan[1], plan[2])

    def _plan(self, field_name: str) -> tuple[Callable[[], CRDT[Any]], int, bool]:
        """Check that this replica may write ``field_name`` at LOCAL; remember the answer
        while it holds (the cache is cleared when the schema, a learned definition or
        the fleet changes)."""
        if self._plans_at != self.schema._generation:
            self._plans.clear()
            self._plans_at = self.schema._generation
        d = self._check_write(field_name)
        if d.policy.write != LOCAL:
            raise PolicyViolation(
                f"{field_name!r} is written at {d.policy.write!r}; write() is LOCAL and would skip "
                "that. Use `await replica.update(...)` (it waits for what the policy promises)"
            )
        plan = self._plans[field_name] = (d.empty, d.version, type(d.empty()) is LWWRegister)
        return plan

    def _check_write(self, field_name: str, key: str | None = None) -> Definition:
        d = self._definition(field_name)
        if self.actor in self._removed:
            raise ReplicaRemoved(
                f"this replica's incarnation {self.actor!r} was removed from the fleet; "
                "restart it with a fresh data directory to rejoin as a new incarnation"
            )
        if d.writers is not None and self.identity.role not in d.writers:
            raise PermissionDenied(
                f"role {self.identity.role!r} may not write {field_name!r} (writers: {sorted(d.writers)})"
            )
        if d.residency is not None:
            if self.identity.region not in d.residency:
                raise ResidencyViolation(
                    f"{field_name!r} may live only in {sorted(d.residency)}; this replica is in {self.identity.region!r}"
                )
            if self.scope is not None and not self.scope <= d.residency:
                raise ResidencyViolation(
                    f"{field_name!r} may live only in {sorted(d.residency)}, but this replica's log is "
                    f"scoped to {sorted(self.scope)}; write it through a log scoped to those regions"
                )
        if key is not None and not isinstance(key, str):
            raise TypeError(f"entity keys are str, got {type(key).__name__}")
        return d

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
        self._queued += 1
        if self._callbacks or self._queues:
            self._notify(Change(fname, key, ev, True))
        return ev

    async def flush(self) -> int | None:
        """Append every queued event to the log; returns the position of the first record
        of the append that carried the last of them (or the last applied position when
        nothing was queued).

        Group commit: while an append is in flight, callers wait for it, and the next
        append carries everything queued meanwhile, so concurrent writers share appends
        (and fsyncs) instead of queueing behind each other one event at a time. If an
        append fails its events go back to the queue and every caller waiting on it gets
        the error; call ``flush`` again to retry.
        """
        target = self._queued
        position = self._position
        while self._flushed < target:
            inflight = self._flushing
            if inflight is not None:
                position = await asyncio.shield(inflight)
                continue
            if not self._pending:
                break  # dropped (a simulated crash) rather than appended
            events, self._pending = self._pending, []
            fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
            self._flushing = fut
            self._inflight = events
            try:
                position = await self.log.append(self._encode_own(events))
            except BaseException as exc:
                self._pending[:0] = events
                if isinstance(exc, StorageError):  # the events wait in the queue for space
                    self.stats.storage_errors += 1
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

    def _encode_own(self, events: Sequence[Event]) -> list[bytes]:
        """Log records for own events (contiguous seqs by construction: not checked again)."""
        return [
            self.codec.encode(Batch._trusted(self.actor, events[i].seq, tuple(events[i:i + _MAX_BATCH]), self._meta))
            for i in range(0, len(events), _MAX_BATCH)
        ]

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        """Write and wait for what the field's write level promises; returns the event.

        * ``LOCAL``: applied here and appended to the log (fsync per the log's policy);
        * ``LOG``: also synced (durable) in the log;
        * ``ACKS(n)`` / ``QUORUM(group)`` / ``ALL(group)``: also reported applied, in
          heartbeats, by that many replicas. Fails fast with ``Unavailable`` (nothing
          written) when too few of them are live; after a timeout it raises
          ``Unavailable`` whose ``event`` is the write, which stays applied here and
          keeps replicating (it was not *acknowledged*, it is not withdrawn);
        * ``SEQUENCED``: the operation is ordered by the log and applied in that order
          at every replica (see :meth:`compare_and_set`).

        Use :meth:`at` to strengthen the level of one call.
        """
        return await self._update(field_name, key, op, args, kwargs, None, None)

    def at(self, *, write: WriteLevel | None = None, read: ReadLevel | None = None,
           timeout: float | None = None) -> Leveled:
        """This replica with stronger levels for the calls made through the result::

            await replica.at(write=QUORUM()).update("risk", "card-1", "set", 0.9)
            await replica.at(read=MAX_STALENESS(2)).read("risk", "card-1")

        Overrides may only strengthen a field's policy (``PolicyViolation`` otherwise).
        """
        return Leveled(self, write, read, timeout)

    def session(self, token: Context | None = None) -> Session:
        """A session: reads through it see every write and read made through it before
        (also across replicas: pass ``session.token`` to another replica's session)."""
        return Session(self, token if token is not None else Context())

    async def _update(
        self, field_name: str, key: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        write: WriteLevel | None, timeout: float | None,
    ) -> Event:
        d = self._check_write(field_name, key)
        res = d.policy.resolve(write=write)
        level, wait = res.write, (timeout if timeout is not None else res.timeout)
        if level == SEQUENCED:
            outcome, ev = await self._sequenced(d, key, op, args, kwargs, None, wait)
            if outcome.error is not None:
                raise ValueError(f"{field_name}/{key}: {op} failed at apply: {outcome.error}")
            return ev
        if isinstance(level, (ACKS, QUORUM, ALL)):
            try:
                self._check_reachable(level, res.on_unavailable)
            except Unavailable:
                await asyncio.sleep(0)  # a caller retrying in a loop must not starve the heartbeats
                raise
        ev = self._write_raw(field_name, key, d.empty, op, args, kwargs, d.version)
        await self.flush()
        if level == LOCAL:
            return ev
        if level == LOG:
            sync = getattr(self.log, "sync", None)
            if sync is not None:
                try:
                    await asyncio.wait_for(sync(), wait)
                except (TimeoutError, OSError) as exc:
                    raise Unavailable(f"the log did not confirm {ev.dot} within {wait:g}s: {exc}", event=ev) from exc
            return ev
        assert isinstance(level, (ACKS, QUORUM, ALL))
        self._wake_heartbeat()
        ok = await self._wait_until(lambda: self.acknowledged(level, ev.dot), wait)
        if not ok:
            if res.on_unavailable == "local":
                self.stats.reject("degraded_write")
                return ev
            got = sorted(self._acks(ev.dot, level.group))
            raise Unavailable(
                f"{field_name}/{key}: {level!r} not reached within {wait:g}s (acknowledged by {got}); "
                "the write is applied here and will keep replicating, but it is not acknowledged",
                event=ev,
            )
        return ev

    async def compare_and_set(self, field_name: str, key: str, expected: Any, new: Any, *,
                              timeout: float | None = None) -> bool:
        """Set a ``SEQUENCED`` register to ``new`` if its value is ``expected``.

        Returns whether it did; every replica reaches the same answer (the condition is
        evaluated in log order). Raises ``Unavailable`` if the log cannot be reached in
        time (the operation may then still be applied, once, in log order).
        """
        outcome = await self.conditional(field_name, key, "set", (new,), cond=("eq", expected), timeout=timeout)
        return outcome.applied

    async def decrement_if_enough(self, field_name: str, key: str, n: int = 1, *,
                                  timeout: float | None = None) -> bool:
        """Decrement a ``SEQUENCED`` counter by ``n`` if its value is at least ``n``."""
        outcome = await self.conditional(field_name, key, "decrement", (n,), cond=("ge", n), timeout=timeout)
        return outcome.applied

    async def conditional(self, field_name: str, key: str, op: str, args: tuple[Any, ...] = (),
                          kwargs: dict[str, Any] | None = None, *, cond: tuple[str, Any] | None,
                          timeout: float | None = None) -> Outcome:
        """Run mutator ``op`` on a ``SEQUENCED`` field if ``cond`` holds in log order.

        ``cond`` is ``("eq", value)`` or ``("ge", n)`` (or ``None``). Returns the
        :class:`~crdtsync.sequenced.Outcome`, the same at every replica.
        """
        d = self._check_write(field_name, key)
        res = d.policy.resolve()
        if res.write != SEQUENCED:
            raise PolicyViolation(
                f"conditional operations need a SEQUENCED field (Strong() or Tunable(write=SEQUENCED)); "
                f"{field_name!r} is written at {res.write!r}, where replicas could disagree on the outcome"
            )
        outcome, _ = await self._sequenced(d, key, op, args, dict(kwargs or {}), cond,
                                           timeout if timeout is not None else res.timeout)
        return outcome

    async def _sequenced(
        self, d: Definition, key: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        cond: tuple[str, Any] | None, timeout: float,
    ) -> tuple[Outcome, Event]:
        if self._closed:
            raise RuntimeError("replica is closed")
        template = d.empty()
        if op not in type(template).MUTATORS:
            raise ValueError(f"{type(template).__name__} has no mutator {op!r}; it has {list(type(template).MUTATORS)}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._seq_lock:  # one append at a time keeps this replica's seqs in order
            # operations whose append failed come first, as cancellations with the same
            # dots: in log order either the original or its cancellation comes first, and
            # the other is a duplicate, so no seq is left as a gap in anyone's context
            events = [
                Event(u.origin, u.seq, self.hlc.now(), u.field, u.key,
                      SequencedOp(u.delta.target if isinstance(u.delta, SequencedOp) else "", CANCEL),
                      u.field_version)
                for u in self._seq_unsettled
            ]
            ev = Event(self.seq_actor, self._seq_next, self.hlc.now(), d.name, key,
                       SequencedOp(template.TYPE_TAG, op, args, kwargs, cond), d.version)
            events.append(ev)
            fut: asyncio.Future[Outcome] = loop.create_future()
            self._outcomes[ev.seq] = fut
            record = self.codec.encode(Batch.of(events, self._meta))
            self._seq_next += 1
            try:
                await asyncio.wait_for(self.sequencer.append([record]), max(0.0, deadline - loop.time()))
            except (TimeoutError, OSError, CrdtSyncError) as exc:
                self._seq_unsettled.append(ev)
                self._outcomes.pop(ev.seq, None)
                raise Unavailable(
                    f"{d.name}/{key}: the log did not sequence {op} within {timeout:g}s ({type(exc).__name__}: "
                    f"{exc}); its outcome is unknown until this replica's next sequenced operation, "
                    "which either finds it applied (once, in log order) or cancels it",
                    event=ev,
                ) from exc
            self._seq_unsettled.clear()
        try:
            if self._tail_task is None:
                await self.catch_up()
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time())), ev
        except TimeoutError:
            raise Unavailable(
                f"{d.name}/{key}: {op} was sequenced but not applied here within {timeout:g}s; "
                "it will be applied, once, in log order",
                event=ev,
            ) from None
        finally:
            if fut.done():
                self._outcomes.pop(ev.seq, None)

    # -- acknowledgements, heartbeats -------------------------------------------
    def now_ms(self) -> int:
        """This replica's wall clock in ms (the simulated clock in a test Cluster)."""
        return self.hlc.wall_ms()

    def _fence(self, stamp_wall_ms: int) -> None:
        """The HLC's fence: refuse a local stamp the fleet would hold back (see
        :mod:`crdtsync.skew`), counting it, before anything is written."""
        try:
            self.skew.check(stamp_wall_ms)
        except ClockSkew:
            self.stats.clock_skew += 1
            if self.stats.clock_skew == 1 or self.stats.clock_skew % 1000 == 0:
                log.error("%s refused a write: clock %+.1f s off the fleet's (%d refused so far)",
                          self.actor, (self.skew.skew_ms(stamp_wall_ms) or 0) / 1000, self.stats.clock_skew)
            raise

    def clock_skew_ms(self) -> int | None:
        """How far this replica's clock is ahead of its peers' (median; negative: behind),
        from their heartbeats; ``None`` before any peer was heard."""
        return self.skew.skew_ms(self.now_ms())

    def _acks(self, dot: Dot, group: Any) -> frozenset[str]:
        acks = self.membership.acks(dot, group)
        me = self.identity.name
        if dot in self._ctx() and me in self.members(group):
            acks = acks | {me}
        return acks

    def acknowledged(self, level: WriteLevel, dot: Dot) -> bool:
        """Whether ``dot`` meets ack level ``level`` (``ACKS``/``QUORUM``/``ALL``) now."""
        assert isinstance(level, (ACKS, QUORUM, ALL))
        members = self.members(level.group)
        if not members:
            return False
        return len(self._acks(dot, level.group) & members) >= self.membership.needed(level, len(members))

    def _check_reachable(self, level: WriteLevel, on_unavailable: str) -> None:
        """Fail fast, before writing anything, when too few replicas are live for ``level``."""
        assert isinstance(level, (ACKS, QUORUM, ALL))
        if self.control is None and on_unavailable == "raise":
            raise Unavailable(
                f"{level!r} needs heartbeats, and this replica has no control channel "
                "(open it with control=True or a ControlChannel)"
            )
        members = self.members(level.group)
        needed = self.membership.needed(level, len(members))
        live = self.membership.live(level.group, self.now_ms(), int(self.liveness * 1000)) & members
        if len(live) < needed and on_unavailable == "raise":
            self.stats.reject("unavailable")
            raise Unavailable(
                f"{level!r} needs {needed} of {sorted(members)} but only {sorted(live)} were heard from "
                f"within {self.liveness:g}s; nothing was written"
            )

    def heartbeat(self) -> Heartbeat:
        """This replica's heartbeat now (what it publishes on the control channel)."""
        positions = {"log": self._position} if self._position is not None else {}
        return Heartbeat(
            self.actor, self.identity.name, self.identity.region, self.identity.role, self._ctx(),
            self.now_ms(), self.hlc.peek(), positions, {}, self._ping, dict(self._echo),
            frozenset(self._pruned),
        )

    def observe_heartbeat(self, hb: Heartbeat | bytes) -> bool:
        """Take in a peer's heartbeat (decoded and validated if given as bytes).

        Bad input is counted (``stats.rejected``) and dropped, never raised: the control
        channel is untrusted like the log. Returns whether it was new.
        """
        try:
            h = Heartbeat.decode(hb) if isinstance(hb, (bytes, bytearray, memoryview)) else hb
            if h.name != self.identity.name and not self.membership.is_removed(h.actor):
                # before the drift check: a peer whose heartbeats are refused as too far
                # ahead still tells this replica where the fleet's clocks are
                self.skew.observe(h.name, h.wall_ms)
            fresh = self.membership.observe(h, self.now_ms())
        except ReplicaRemoved:
            self.stats.reject("removed_replica")
            return False
        except BadInput as exc:
            self.stats.reject("bad_heartbeat")
            log.warning("%s dropped a heartbeat: %s", self.actor, exc)
            return False
        if h.name != self.identity.name and h.ping and h.ping > self._echo.get(h.name, 0):
            self._echo[h.name] = h.ping
            self._wake_heartbeat()  # answer the asker now
        self._tick()
        return fresh

    def _receive_heartbeat(self, data: bytes) -> None:
        self.observe_heartbeat(data)

    def _wake_heartbeat(self) -> None:
        if self._hb_wake is not None:
            self._hb_wake.set()

    def freshness(self) -> dict[str, tuple[float, float]]:
        """Freshness of every field with an SLO: ``{field: (staleness_s, max_lag_s)}``.

        Staleness is replica-wide (the largest lag behind any origin, from heartbeats),
        an upper bound for each field. The SLO is measured and alarmed, never enforced.
        """
        stale = self.staleness_ms() / 1000
        out = {}
        for d in (*self.schema, *self._remote_defs.values()):
            if d.policy.max_lag is not None:
                out[d.name] = (stale, d.policy.max_lag)
        return out

    def _check_slo(self) -> None:
        for name, (stale, max_lag) in self.freshness().items():
            missed = stale > max_lag
            if missed and name not in self._slo_missed:
                self._slo_missed.add(name)
                self.stats.slo_breaches[name] = self.stats.slo_breaches.get(name, 0) + 1
                log.warning("%s: freshness SLO of %r missed: %.3gs stale, objective %.3gs",
                            self.actor, name, stale, max_lag)
            elif not missed:
                self._slo_missed.discard(name)

    async def publish_heartbeat(self) -> None:
        """Publish a heartbeat now (the background task does it every interval)."""
        self._check_slo()
        if self._removed:
            self.reclaim()
        if self._held:
            self.retry_held()
        hb = self.heartbeat()
        self.observe_heartbeat(hb)
        if self.control is not None:
            await self.control.publish(hb.encode())

    async def _heartbeats(self) -> None:
        assert self._hb_wake is not None
        while not self._closed:
            try:
                await self.publish_heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("publishing a heartbeat of %s failed; retrying", self.actor)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hb_wake.wait(), self.heartbeat_interval)
            self._hb_wake.clear()
            # coalesce bursts of prompt heartbeats (one per applied batch) into one
            await asyncio.sleep(min(self.heartbeat_interval, _HEARTBEAT_GAP))

    def _tick(self) -> None:
        """Something waiters may care about changed (a heartbeat, an applied batch)."""
        if self._ticks:
            ticks, self._ticks = self._ticks, []
            for f in ticks:
                if not f.done():
                    f.set_result(None)

    async def _wait_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait (real time) until ``pred()`` holds; False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._ticks.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, min(left, self.heartbeat_interval))
            if self._tail_task is None and not self._closed:
                await self.catch_up()
        return True

    # -- reads with levels -------------------------------------------------------
    async def read(self, field_name: str, key: str, *, level: ReadLevel | None = None,
                   timeout: float | None = None) -> Any:
        """Read a value at the field's read level (or a stronger ``level``).

        * ``LOCAL``: local state now;
        * ``MAX_STALENESS(t)``: local state if this replica heard every origin it
          tracks within ``t`` seconds, else waits (``wait=True``) or raises ``StaleRead``;
        * ``SESSION(token)``: waits until local state includes ``token``;
        * ``QUORUM(group)`` / ``ALL(group)``: asks the group for fresh heartbeats and
          waits until local state includes what that many of them reported;
        * ``LINEARIZABLE``: waits until this replica applied the log up to its end.
        """
        d = self._definition(field_name)
        res = d.policy.resolve(read=level)
        await self._await_read_level(res.read, timeout if timeout is not None else res.timeout,
                                     res.on_unavailable, field_name)
        return self.value(field_name, key)

    async def _await_read_level(self, level: ReadLevel, wait: float, on_unavailable: str, what: str) -> None:
        if level == LOCAL:
            return
        if isinstance(level, MAX_STALENESS):
            bound_ms = level.seconds * 1000
            ok = self.staleness_ms() <= bound_ms
            if not ok and level.wait:
                self._wake_heartbeat()
                ok = await self._wait_until(lambda: self.staleness_ms() <= bound_ms, wait)
            if not ok and on_unavailable != "local":
                self.stats.reject("stale_read")
                raise StaleRead(
                    f"{what}: this replica may be {self.staleness_ms() / 1000:.3g}s stale "
                    f"(bound {level.seconds:g}s); some origin has not been heard from recently"
                )
            return
        if isinstance(level, SESSION):
            token = level.token
            ok = await self._wait_until(lambda: token <= self._ctx(), wait)
            if not ok and on_unavailable != "local":
                self.stats.reject("stale_read")
                raise StaleRead(f"{what}: this replica has not yet applied the session's earlier writes "
                                f"within {wait:g}s (missing {token} vs {self._ctx()})")
            return
        if level == LINEARIZABLE:
            await self.sync_to_end(wait)
            return
        if isinstance(level, (QUORUM, ALL)):
            await self._quorum_read(level, wait, on_unavailable, what)
            return
        raise TypeError(f"unknown read level {level!r}")

    async def _quorum_read(self, level: QUORUM | ALL, wait: float, on_unavailable: str, what: str) -> None:
        if self.control is None and on_unavailable != "local":
            raise Unavailable(f"{what}: {level!r} reads need a control channel")
        ping = self.begin_quorum_read()
        await self.publish_heartbeat()
        ok = await self._wait_until(lambda: self.quorum_read_ready(level, ping), wait)
        if not ok and on_unavailable != "local":
            answered = sorted(self.membership.answered(ping, level.group))
            raise Unavailable(f"{what}: {level!r} read not satisfied within {wait:g}s (answered: {answered})")

    def begin_quorum_read(self) -> int:
        """Start a ``QUORUM``/``ALL`` read: returns the ping that this replica's next
        heartbeats carry; peers answer it with their current context."""
        self._ping = max(self._ping + 1, self.hlc.peek())
        return self._ping

    def quorum_read_ready(self, level: QUORUM | ALL, ping: int) -> bool:
        """Whether enough of ``level``'s group answered ``ping`` and local state includes
        everything they reported (then a read sees every write they acknowledged)."""
        members = self.members(level.group)
        answered = self.membership.answered(ping, level.group) & members
        if not members or len(answered) < self.membership.needed(level, len(members)):
            return False
        return self.membership.frontier(answered - {self.identity.name}) <= self._ctx()

    def staleness_ms(self) -> float:
        """How stale this replica may be (ms): the largest lag behind any origin it tracks
        (every replica heard from and not removed, live or not: a silent peer may have
        written; remove dead replicas with :meth:`remove_replica`), from heartbeats (0
        with no peers: nothing is known to be missing)."""
        return self.membership.staleness(self.now_ms(), self._ctx())

    async def sync_to_end(self, timeout: float | None = None) -> None:
        """Wait until everything the sequencing log holds now is applied here
        (``Unavailable`` if it cannot be reached or the apply does not get there in time).

        With the replica's own log as sequencer this is :meth:`sync`. With a separate
        sequencer (an edge), the sequencer's new records are scanned for their dots and
        the call waits until they arrive here (through the forwarder) and are applied.
        """
        wait = 5.0 if timeout is None else timeout
        try:
            if self.sequencer is self.log:
                await asyncio.wait_for(self.sync(), wait)
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            need = await asyncio.wait_for(self._sequencer_dots(), wait)
        except (TimeoutError, OSError, CrdtSyncError) as exc:
            raise Unavailable(
                f"could not sync to the sequencing log's end within {wait:g}s ({type(exc).__name__}: {exc})"
            ) from exc
        if not await self._wait_until(lambda: need <= self._ctx(), max(0.0, deadline - loop.time())):
            raise Unavailable(
                f"the sequencing log's records did not reach this replica within {wait:g}s "
                "(is its forwarder running?)"
            )

    async def _sequencer_dots(self) -> Context:
        end = await self.sequencer.end()
        dots: list[Dot] = []
        async for entry in read_range(self.sequencer, self._seq_scanned, end):
            try:
                dots.extend(ev.dot for ev in self.codec.decode(entry.payload).events)
            except (CorruptRecord, UnsupportedVersion) as exc:
                # the apply loop quarantines and counts it when it arrives here
                log.debug("skipping an undecodable sequencer record at %s: %s", entry.position, exc)
            self._seq_scanned = entry.position
        self._seq_need = self._seq_need.add_all(dots) if dots else self._seq_need
        return self._seq_need

    # -- fleet -------------------------------------------------------------------
    def _is_admin(self, role: str | None = None) -> bool:
        return self.admins is None or (role if role is not None else self.identity.role) in self.admins

    def _fleet_allowed(self, key: str, origin: str, role: str) -> bool:
        """A replica records only its own join; removals need an admin role."""
        if key.startswith("join/"):
            return key == f"join/{origin}"
        return key.startswith("remove/") and self._is_admin(role)

    async def remove_replica(self, name: str) -> str:
        """Remove replica ``name`` (its current incarnation) from the fleet.

        The decision replicates (on the reserved ``_fleet`` field): every replica stops
        counting it in quorums and stability and refuses its later events and
        heartbeats (``ReplicaRemoved``); events it wrote before are kept. Returns the
        removed actor id.
        """
        if not self._is_admin():
            raise PermissionDenied(
                f"role {self.identity.role!r} may not remove replicas (admins: {sorted(self.admins or ())})"
            )
        hb = self.membership.get(name)
        if hb is None:
            raise KeyError(f"no replica named {name!r} is heard from (known: {sorted(self.members())})")
        actor = hb.actor
        upto, upto_s = self._ctx().max_seq(actor), self._ctx().max_seq(f"{actor}/s")
        self._write_raw(FLEET_FIELD, f"remove/{actor}", LWWRegister, "set",
                        ({"name": name, "upto": upto, "upto_s": upto_s},), {})
        self._learn_removal(actor, upto, upto_s)
        await self.flush()
        return actor

    def stable_context(self) -> Context:
        """The causally stable context: what every live, known replica has applied
        (the meet of their latest heartbeats' contexts, this replica's own included)."""
        return self.membership.stable_context().meet(self._ctx())

    def reclaim(self) -> list[str]:
        """Prune removed incarnations whose every event is causally stable.

        Their entries leave this replica's context (and so its heartbeats and
        snapshots), and from then on all their events are refused, whatever their seq.
        Runs with every heartbeat; returns the actors pruned by this call.
        """
        if len(self._pruned) == len(self._removed):
            return []
        done = []
        for actor, upto in self._removed.items():
            if actor not in self._pruned and self.membership.stable_for(actor, upto):
                self._pruned.add(actor)
                done.append(actor)
        if done:
            self._context = self._ctx().without(done)
            for actor in done:
                self._removed[actor] = 0  # refuse everything from now on
                self._pins.pop(actor, None)
            log.info("%s pruned removed replicas %s", self.actor, done)
        return done

    def _learn_removal(self, actor: str, upto: int, upto_s: int) -> None:
        for a, n in ((actor, upto), (f"{actor}/s", upto_s)):
            if a not in self._pruned:
                self._removed[a] = max(n, self._removed.get(a, 0))
        self.membership.forbid(actor)
        self.skew.forget(actor.split("~", 1)[0])
        self._plans.clear()

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
                c = c.add_range(self.actor, 1, top)
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
        applied = self.retry_held()  # held events the clock now accepts come first
        async for entry in read_range(self.log, self._position, end):
            applied += self._apply_record(entry.position, entry.payload)
            if self._snapshot_due:
                await self._due_snapshot()
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
                            await self._due_snapshot()
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
        if self._held and self.hlc.wall_ms() >= self._held_due:
            self.retry_held()
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

    def _apply_batch(self, batch: Batch, before: int | None | _Here = HERE) -> int:
        """Apply the events of ``batch`` this replica has not seen; returns how many applied.

        A dot enters the context only when its event is applied. A refused event (its
        batch claims another identity than its origin's first, a type or field it may not
        carry, ...) leaves its dot out, so the genuine event with that dot, should a
        forged one have come first, is still applied when it arrives; an event stamped
        too far ahead of this clock is *held* and applied once the clock catches up
        (:meth:`retry_held`), never refused for good. ``before``: the position applied
        before the record carrying ``batch`` (default: this replica's position now).
        """
        ctx = self._ctx()
        origin = batch.origin
        have = ctx._vv.get(origin, 0)
        last = batch.last_seq
        if have >= last:
            if origin != self.actor:  # our own events read back are not duplicates
                self.stats.events_duplicate += len(batch)
            return 0
        events: Sequence[Event] = batch.events
        first = batch.first_seq
        missing = ctx.missing(origin, first, last)
        prefix = len(missing) == 1 and missing[0][1] == last
        if prefix:
            # the common case: what the context lacks is a tail of the batch (it extends
            # the origin's contiguous prefix, or a run of seqs after a gap)
            skip = missing[0][0] - first
            if skip > 0:
                events = events[skip:]
        else:
            events = [ev for ev in events if ev.dot not in ctx]
        dups = len(batch) - len(events)
        if dups and origin != self.actor:
            self.stats.events_duplicate += dups
        if not events:
            return 0
        region = batch.meta.get("region", "default")
        role = batch.meta.get("role", "default")
        upto = self._removed.get(origin)
        if upto is not None and events[-1].seq > upto:
            late = sum(1 for ev in events if ev.seq > upto)
            self.stats.reject("removed_replica", late)
            events = [ev for ev in events if ev.seq <= upto]
            prefix = False
            if not events:
                return 0
        batch_reason = self._batch_verdict(origin, region, role)
        if batch_reason is not None:
            self.stats.reject(batch_reason, len(events))
            return 0
        # one clock check for the batch; per event only if something is from the future
        try:
            self.hlc.observe(max(ev.hlc for ev in events))
            future_ok = True
        except FutureTimestamp:
            future_ok = False
        verdicts: dict[tuple[str, str], str | None] = {}
        tables: dict[str, MutableMapping[str, CRDT[Any]]] = {}
        notify = bool(self._callbacks or self._queues)
        applied = 0
        left_out: list[Event] = []  # refused or held: their dots stay out of the context
        for ev in events:
            delta = ev.delta
            if not future_ok and type(delta) is not SequencedOp:
                # (a sequenced operation is evaluated in log order whatever its stamp: holding
                # it would reorder it; its stamp is not taken into this clock)
                try:
                    self.hlc.observe(ev.hlc)
                except FutureTimestamp:
                    self.stats.reject("future_timestamp")
                    self._hold(ev, batch.meta, self._position if isinstance(before, _Here) else before)
                    left_out.append(ev)
                    continue
            fname = ev.field
            vkey = (fname, delta.TYPE_TAG)
            if vkey in verdicts:
                reason = verdicts[vkey]
            else:
                reason = verdicts[vkey] = self._verdict(fname, delta.TYPE_TAG, region, role)
            if reason is None and fname == FLEET_FIELD and not self._fleet_allowed(ev.key, origin, role):
                reason = "permission"
            if reason is not None:
                self.stats.reject(reason)
                left_out.append(ev)
                continue
            tbl = tables.get(fname)
            if tbl is None:
                tbl = self._state.get(fname)
                if tbl is None:
                    tbl = self._state[fname] = new_table(delta.TYPE_TAG)
                tables[fname] = tbl
            cur = tbl.get(ev.key)
            if type(delta) is SequencedOp:
                self._apply_op(ev, delta, tbl, cur)
            else:
                try:
                    tbl[ev.key] = delta if cur is None else cur.join(delta)
                except IncompatibleState as exc:
                    self.stats.reject("incompatible_type")
                    log.warning("rejected %s: %s", ev.dot, exc)
                    left_out.append(ev)
                    continue
            applied += 1
            if fname == SCHEMA_FIELD:
                self._learn_definition(tbl[ev.key].value())
                verdicts.clear()
            elif fname == FLEET_FIELD:
                self._learn_fleet(ev.key, tbl[ev.key], origin)
            elif notify:
                self._notify(Change(fname, ev.key, ev, False))
        if left_out:
            out = {ev.seq for ev in left_out}
            self._context = ctx.add_all(ev.dot for ev in events if ev.seq not in out)
        elif prefix:
            self._context = ctx.add_range(origin, first, last)
        else:
            self._context = ctx.add_all(ev.dot for ev in events)
        return self._applied(origin, applied)

    def _hold(self, ev: Event, meta: Mapping[str, Any], before: int | None) -> None:
        """Hold back ``ev`` (stamped ahead of this clock) until the clock catches up;
        ``before`` is the position applied before its record (snapshots do not pass it)."""
        if len(self._held) >= _MAX_HELD:
            # still not lost: snapshots do not pass the first held record, so a restart re-reads it
            log.error("%s holds %d future-stamped events already; %s waits for a restart",
                      self.actor, len(self._held), ev.dot)
            if not self._overflowed or (self._overflow_before is not None
                                        and (before is None or before < self._overflow_before)):
                self._overflowed, self._overflow_before = True, before
            return
        due = hlc_wall_ms(ev.hlc) - self.hlc.max_drift_ms
        self._held_due = min(self._held_due, due) if self._held else due
        self._held.append((due, ev, meta, before))
        self.stats.events_held = len(self._held)

    def _snapshot_position(self) -> int | None:
        """The position a snapshot may name: the last applied, or, while events are held
        back, the record applied before the first record that holds one (a restart
        re-reads from there and holds them again)."""
        if not self._held and not self._overflowed:
            return self._position
        befores = [b for _, _, _, b in self._held]
        if self._overflowed:
            befores.append(self._overflow_before)
        if any(b is None for b in befores):
            return None
        return min(b for b in befores if b is not None)

    def retry_held(self) -> int:
        """Apply held events whose timestamps this clock now accepts; returns how many.

        Runs with every heartbeat and before applying a new record (the simulated
        cluster calls it every step).
        """
        if not self._held or self.hlc.wall_ms() < self._held_due:
            return 0
        ready = [h for h in self._held if h[0] <= self.hlc.wall_ms()]
        self._held = [h for h in self._held if h[0] > self.hlc.wall_ms()]
        self._held_due = min((h[0] for h in self._held), default=0)
        self.stats.events_held = len(self._held)
        applied = 0
        for _, ev, meta, before in ready:
            # one event a batch: held events of one origin need not be contiguous
            applied += self._apply_batch(Batch._trusted(ev.origin, ev.seq, (ev,), meta), before)
        return applied

    def _applied(self, origin: str, applied: int) -> int:
        """Book ``applied`` events of ``origin`` just applied; wake whoever waits on them."""
        self.stats.events_applied += applied
        self._since_snapshot += applied
        if applied:
            self._tick()
            if origin != self.actor:
                self._wake_heartbeat()  # report promptly: a writer may wait for this ack
        return applied

    def _batch_verdict(self, origin: str, region: Any, role: Any) -> str | None:
        """Why a whole batch must be refused, if so: it claims an identity other than the one
        its origin first claimed, or a region its channel does not carry. (Events of a
        removed origin beyond its last accepted seq are refused by the caller.)"""
        if not isinstance(region, str) or not isinstance(role, str):
            return "bad_identity"
        claim = (region, role)
        if origin == self.actor and self._recovered and claim != (self.identity.region, self.identity.role):
            # this replica's own events are never new to it unless forged
            return "identity_mismatch"
        pinned = self._pins.setdefault(origin, claim)
        if pinned != claim:
            log.warning("%s claims %s but first claimed %s; rejected", origin, claim, pinned)
            return "identity_mismatch"
        if self.scope is not None and region not in self.scope:
            return "residency"
        return None

    def _apply_op(self, ev: Event, op: SequencedOp, tbl: MutableMapping[str, CRDT[Any]], cur: CRDT[Any] | None) -> None:
        """Evaluate a sequenced operation against the state it finds, in log order."""
        d = self._definition(ev.field)
        state = cur if cur is not None else d.empty()
        before = state.value()
        if op.op == CANCEL:  # the writer gave up on this seq before the log ordered it
            self.stats.ops_cancelled += 1
            return
        error: str | None = None
        ok = op.target == state.TYPE_TAG and op.op in type(state).MUTATORS and evaluate_condition(op.cond, before)
        if op.target != state.TYPE_TAG or op.op not in type(state).MUTATORS:
            error = f"{state.TYPE_TAG} has no mutator {op.op!r} (operation for {op.target!r})"
        if ok:
            stamps = self._state.setdefault(SEQ_FIELD, {})
            last = stamps.get("stamp")
            stamp = max(ev.hlc, int(last.value() or 0) + 1 if last is not None else ev.hlc)
            fn = getattr(state, op.op)
            kwargs = dict(op.kwargs)
            kwargs["actor"] = ev.origin
            if type(state).NEEDS_TIME:
                kwargs["ts"] = stamp
            try:
                new = state.join(fn(*op.args, **kwargs))
            except (TypeError, ValueError, CrdtSyncError) as exc:  # the same failure at every replica
                ok, error = False, f"{type(exc).__name__}: {exc}"
                self.stats.reject("op_failed")
            else:
                tbl[ev.key] = new
                stamps["stamp"] = (last if last is not None else MaxRegister()).join(
                    MaxRegister().set(stamp, actor=ev.origin))
        elif error is None:
            self.stats.ops_refused += 1
        if ev.origin == self.seq_actor:
            fut = self._outcomes.pop(ev.seq, None)
            if fut is not None and not fut.done():
                after = tbl[ev.key].value() if ev.key in tbl else before
                fut.set_result(Outcome(ok, before, after, None, error))

    def _learn_fleet(self, key: str, reg: CRDT[Any], origin: str | None = None) -> None:
        """Learn a fleet record: ``join/<actor>`` (written by that actor when it first
        opens) or ``remove/<actor>`` (see :meth:`remove_replica`)."""
        kind, _, actor = key.partition("/")
        v = reg.value()
        ts = getattr(reg, "timestamp", 0)
        if kind == "remove" and isinstance(v, dict) and type(v.get("upto")) is int and type(v.get("upto_s")) is int:
            self._learn_removal(actor, v["upto"], v["upto_s"])
        elif (kind == "join" and isinstance(v, dict) and isinstance(v.get("name"), str)
              and isinstance(v.get("region"), str) and (origin is None or origin == actor)):
            cur = self._roster.get(v["name"])
            if cur is None or cur[2] < ts:
                self._roster[v["name"]] = (actor, v["region"], ts)
        else:
            self.stats.reject("bad_fleet_record")

    def members(self, group: Any = None) -> frozenset[str]:
        """Names of the replicas of ``group``: those heard from (heartbeats) plus those the
        log records as having joined and not been removed, so quorum sizes survive a
        restart or a partition that hides peers."""
        m = set(self.membership.members(group))
        if not isinstance(group, frozenset):
            for name, (actor, region, _) in self._roster.items():
                if actor not in self._removed and (group is None or region == group):
                    m.add(name)
        return frozenset(m)

    def _apply_columns(self, cols: Columns) -> int:
        """:meth:`_apply_batch` for a columnar record, without an Event per event.

        The same verdicts, counts and context as :meth:`_apply_batch`, which it hands the
        record to whenever the shortcut would not be exact: subscribers to notify, a
        definition in the record (it changes the verdicts of the events after it), one
        field under two entries (the first event's type decides for a key), a record
        of which the context lacks more than a tail (new seqs after a gap in the origin's
        seqs are such a tail), or a timestamp from the future.
        """
        groups = cols.groups
        if (self._callbacks or self._queues or len({g.field for g in groups}) != len(groups)
                or any(g.field in (SCHEMA_FIELD, FLEET_FIELD) or g.cls is SequencedOp for g in groups)):
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
        missing = ctx.missing(origin, first, last)
        if len(missing) != 1 or missing[0][1] != last:  # not just a tail of the record is new
            return self._apply_batch(cols.batch())
        skip = missing[0][0] - first
        region = cols.meta.get("region", "default")
        role = cols.meta.get("role", "default")
        if (self._batch_verdict(origin, region, role) is not None
                or (origin in self._removed and last > self._removed[origin])
                or any(self._verdict(g.field, g.cls.TYPE_TAG, region, role) is not None for g in groups)):
            return self._apply_batch(cols.batch())  # refusals leave dots out, event by event
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
        applied = 0
        refused_seqs: set[int] = set()
        for g in groups:
            pos = g.positions
            start = skip if pos is None else bisect.bisect_left(pos, skip)
            count = len(g.keys) - start
            if count <= 0:
                continue
            fname = g.field
            tag = g.cls.TYPE_TAG
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
                refused_seqs.add(seq)
                log.warning("rejected %s: cannot join %s into the state held at %s/%s",
                            Dot(origin, seq), g.cls.__name__, fname, g.keys[i])
        if refused_seqs:  # refused dots stay out of the context (see _apply_batch)
            self._context = ctx.add_all(Dot(origin, q) for q in range(first + skip, last + 1) if q not in refused_seqs)
        else:
            self._context = ctx.add_range(origin, first, last)
        return self._applied(origin, applied)

    def _verdict(self, fname: str, tag: str, region: str, role: str) -> str | None:
        """Why events of ``fname`` with type ``tag`` from (region, role) must be rejected, if so."""
        if fname == SCHEMA_FIELD or fname == FLEET_FIELD:
            if tag != "lww":
                return "wrong_type"
            if fname == SCHEMA_FIELD and not self._is_admin(role):
                return "permission"
            return None
        if fname == SEQ_FIELD:
            return "reserved_field"
        d = self.schema.get(fname) or self._remote_defs.get(fname)
        if d is None:
            # learned later; the state is kept under its own type. An operation needs
            # its definition now: it is evaluated in log order.
            return "unknown_field" if tag == SequencedOp.TYPE_TAG else None
        sequenced = d.policy.write == SEQUENCED
        if (tag == SequencedOp.TYPE_TAG) != sequenced:
            return "not_sequenced"
        if not sequenced and tag != d.type_tag:
            return "wrong_type"
        if d.residency is not None and (
            self.identity.region not in d.residency or region not in d.residency
            # a log carrying regions outside the residency must not bring the field in
            or (self.scope is not None and not self.scope <= d.residency)
        ):
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
        last = None
        async for entry in read_range(self.log, self._position, end):
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
        if self._pending or self._flushing is not None:  # the snapshot must not hold events the log does not
            await self.flush()
        sync = getattr(self.log, "sync", None)
        if sync is not None:
            await sync()
        schema = [d.to_dict() for d in self._remote_defs.values()]
        # writes made during the awaits above are in the state but maybe not in the log
        # yet: the snapshot carries them, and a replica recovering from it appends them
        # again (a duplicate is harmless), so no seq of ours is ever only in a snapshot
        unlogged = self._encode_own([*self._inflight, *self._pending])
        snap = Snapshot(self.actor, self._ctx(), self._snapshot_position(), self._next_seq, self.hlc.last,
                        self._state, schema, self.stats.events_applied, unlogged)
        try:
            self._snapshots.save(encode_snapshot(snap))
        except StorageError:
            self.stats.storage_errors += 1
            raise
        self._since_snapshot = 0
        self._snapshot_refused_at = None
        self.stats.snapshots_written += 1

    async def _due_snapshot(self) -> None:
        """The snapshot applying takes every ``snapshot_every`` events. A disk that refuses
        it (full, read-only) must not stop applying: the error is logged and counted, and
        the next attempt waits for another ``snapshot_every`` events."""
        refused = self._snapshot_refused_at
        if refused is not None and self._since_snapshot < refused + self.snapshot_every:
            self._snapshot_due = False
            return
        try:
            await self.snapshot()
        except StorageError as exc:
            self._snapshot_refused_at = self._since_snapshot
            log.warning("%s: no snapshot written (retrying after %d more events): %s", self.actor, self.snapshot_every, exc)

    async def compact(self) -> int | None:
        """Snapshot, then drop log records the snapshot covers (only for a log this replica owns)."""
        await self.flush()
        await self.catch_up()
        await self.snapshot()
        if not self.owns_log:
            raise ValueError("this replica does not own its log; other readers may still need it")
        keep = self._snapshot_position()  # held-back events must stay readable
        if keep is not None:
            await self.log.truncate_before(keep)
        return self._position


def default_control(log_: Log) -> ControlChannel | None:
    """The control channel that goes with a log: a MemoryLog's in-process hub, a
    LocalLog's ``control/`` directory; ``None`` for other logs."""
    hub = getattr(log_, "control", None)
    if hub is not None and hasattr(hub, "endpoint"):
        ep: ControlChannel = hub.endpoint()
        return ep
    path = getattr(log_, "path", None)
    if isinstance(path, Path):
        return DirectoryControl(path / "control")
    return None


class Leveled:
    """A replica seen through stronger levels (see :meth:`Replica.at`)."""

    def __init__(self, replica: Replica, write: WriteLevel | None, read: ReadLevel | None,
                 timeout: float | None) -> None:
        self.replica = replica
        self.write = write
        self.read_level = read
        self.timeout = timeout

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        return await self.replica._update(field_name, key, op, args, kwargs, self.write, self.timeout)

    async def read(self, field_name: str, key: str) -> Any:
        return await self.replica.read(field_name, key, level=self.read_level, timeout=self.timeout)


class Session:
    """Read-your-writes and monotonic reads across calls (and replicas).

    ``token`` is a :class:`~crdtsync.clock.Context`: everything the session wrote or
    read so far. Reads through the session wait until the replica includes it
    (``SESSION(token)``), or raise ``StaleRead`` after the field's timeout. Hand the
    token to a session on another replica to carry the guarantee over.
    """

    def __init__(self, replica: Replica, token: Context) -> None:
        self.replica = replica
        self.token = token

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        ev = await self.replica.update(field_name, key, op, *args, **kwargs)
        self.token = self.token.add(ev.dot)
        return ev

    async def read(self, field_name: str, key: str, *, timeout: float | None = None) -> Any:
        value = await self.replica.read(field_name, key, level=SESSION(self.token), timeout=timeout)
        self.token = self.token.join(self.replica.context)
        return value
