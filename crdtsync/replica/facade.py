"""The replica: an event-sourced, CRDT-merging holder of features and flags.

A :class:`Replica` owns a state map ``field -> entity key -> CRDT`` and the
:class:`~crdtsync.clock.Context` of every event it has applied. Writes run a type
mutator, wrap the delta in an :class:`~crdtsync.events.Event` with the next dot, apply it
locally at once (reads see their own writes) and append it to the log; the apply loop
reads the log (its own and every other replica's events), decodes, verifies and joins
each event whose dot it has not seen. Because join is idempotent, commutative and
associative, the order, duplication and delay of events do not matter.

This class is a facade: it composes the parts of :mod:`crdtsync.replica` (store, writer,
admission, applier, follower, coordination, sequencer client, fleet, heartbeats,
subscriptions, persistence) and forwards its public methods to them; it holds no policy,
apply or admission logic of its own. ``docs/concepts/replica.md`` describes the parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from .._dirlock import DirLock
from ..clock import HLC, Context
from ..control import ControlChannel, Heartbeat, Membership
from ..control.topology import Topology
from ..events import Codec, Event, codec_for
from ..log._protocol import Log, Opening, Position
from ..policy import ReadLevel, WriteLevel
from ..schema import Definition, Schema
from ..sequenced import Outcome
from ..snapshots import SnapshotStore
from ..types._base import CRDT
from .admission import Admission, HeldEvents
from .antientropy import AntiEntropy, AntiEntropySettings
from .apply import Applier
from .coordination import Coordinator
from .definitions import Definitions
from .fleet import Fleet
from .follower import Follower
from .handles import WriteHandle, make_handle
from .heartbeats import Heartbeats
from .identity import ReplicaIdentity
from .levels import LevelDriver
from .parts import assemble, close_replica, open_replica
from .persistence import Persistence
from .sequencer import SequencerClient
from .sessions import Leveled, Session
from .skew import ClockSkewMonitor
from .stats import ReplicaStats
from .store import Store, View
from .subscriptions import Change, ChangeStream, Subscriptions
from .waiting import Waiter
from .writer import Writer

__all__ = ["Replica"]


class Replica:
    """A replica of a schema's fields. Create it with :meth:`open`."""

    # its parts, built by crdtsync.replica.parts.assemble (see docs/concepts/replica.md)
    definitions: Definitions
    store: Store
    subscriptions: Subscriptions
    membership: Membership
    skew: ClockSkewMonitor
    admission: Admission
    held: HeldEvents
    _writer: Writer
    fleet: Fleet
    waiter: Waiter
    heartbeats: Heartbeats
    sequencer_client: SequencerClient
    applier: Applier
    persistence: Persistence
    follower: Follower
    antientropy: AntiEntropy
    coordinator: Coordinator
    levels: LevelDriver

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
        topology: Topology | None = None,
        antientropy: AntiEntropySettings | None = None,
    ) -> None:
        self.identity = identity
        #: how anti-entropy runs (on by default on logs that can lose records)
        self.antientropy_settings = antientropy or AntiEntropySettings()
        #: this replica's place in the control fleet (peer, hub or edge); configuration
        self.topology = topology or Topology()
        self.actor = identity.actor
        self.schema = schema
        self.log = log_
        self.data_dir = data_dir
        self.codec: Codec = codec or codec_for("msgpack")
        self.hlc = hlc or HLC()
        self.stats = ReplicaStats()
        self.owns_log = owns_log
        self.control = control
        self.heartbeat_interval = heartbeat_interval
        #: seconds without a heartbeat after which a peer is presumed unreachable
        self.liveness = liveness if liveness is not None else 3 * heartbeat_interval
        #: the shared log that orders SEQUENCED operations (this replica's log by default;
        #: an edge gives the upstream log, its own being a store-and-forward outbox)
        self.sequencer: Log = sequencer if sequencer is not None else log_
        self.scope: frozenset[str] | None = getattr(log_, "regions", None)
        self._closed = False
        self._dirlock: DirLock | None = None  # the data directory's lock (held while open)
        assemble(self, snapshots, snapshot_every, admins)


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
        topology: Topology | None = None,
        antientropy: AntiEntropySettings | None = None,
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
            topology: this replica's control role (:class:`~crdtsync.control.topology.Topology`):
                ``peer`` (default, reads every peer's heartbeat), ``hub`` (reads every
                heartbeat, publishes an aggregate) or ``edge`` (reads only its hub's
                aggregate). Hubs and edges need a ``ControlTransport`` (topics), e.g.
                ``MemoryControl().topics()`` or a KafkaLog's control topic.
            antientropy: :class:`~crdtsync.replica.antientropy.AntiEntropySettings`:
                whether digests run (default: on logs that can lose records, e.g. Kafka),
                how often, how much is re-published per round, the journal's size.
        """
        return open_replica(cls, data_dir, schema=schema, log=log, name=name, region=region, role=role,
                            identity=identity, codec=codec, fsync=fsync, snapshots=snapshots, snapshot_every=snapshot_every,
                            hlc=hlc, follow=follow, progress=progress, control=control, heartbeat_interval=heartbeat_interval,
                            liveness=liveness, sequencer=sequencer, admins=admins, topology=topology,
                            antientropy=antientropy)

    def start(self) -> None:
        """Start the background apply loop (follows the log) and heartbeats."""
        self.follower.start()
        self.heartbeats.start()

    async def close(self) -> None:
        """Flush pending writes, write a final snapshot, stop the loop, close the log
        (a ``StorageError`` on the way says what that cost; the replica closes anyway)."""
        await close_replica(self)

    def _mark_closed(self) -> None:
        self._closed = self._writer.closed = self.follower.closed = True
        self.heartbeats.closed = self.sequencer_client.closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def seq_actor(self) -> str:
        """The origin of this replica's sequenced operations (``<actor>/s``)."""
        return self.sequencer_client.seq_actor

    async def __aenter__(self) -> Replica:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- writing ---------------------------------------------------------------
    def write(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        """Apply mutator ``op`` (``"increment"``, ``"set"``, ...) of the field's type now and
        queue its event for the log (:meth:`flush`); ``actor`` and ``ts`` are filled in.
        ``LOCAL`` only: fields whose policy asks for more are written with :meth:`update`."""
        return self._writer.write(field_name, key, op, args, kwargs)

    def writer(self, field_name: str, op: str) -> WriteHandle:
        """A handle for hot loops: ``w = replica.writer("score", "set"); w(key, 0.7)`` is
        ``replica.write("score", key, "set", 0.7)`` specialised once, returning the seq
        instead of the event (see :mod:`crdtsync.replica.handles`)."""
        return make_handle(self._writer, field_name, op)

    async def flush(self) -> Position | None:
        """Append every queued event to the log (group commit: concurrent callers share
        appends); returns the position of the append that carried the last of them. If an
        append fails its events go back to the queue; call ``flush`` again to retry."""
        return await self._writer.flush()

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        """Write and wait for what the field's write level promises; returns the event.

        ``LOCAL``: applied and appended; ``LOG``: also synced; ``ACKS``/``QUORUM``/``ALL``:
        also reported applied by that many replicas (``Unavailable`` with nothing written
        when too few are live; after the timeout ``Unavailable(event=ev)``: the write stays
        applied and keeps replicating); ``SEQUENCED``: ordered by the log (see
        :mod:`crdtsync.replica.coordination`). :meth:`at` strengthens one call."""
        return await self.levels.update(field_name, key, op, args, kwargs, None, None)

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

    async def compare_and_set(self, field_name: str, key: str, expected: Any, new: Any, *,
                              timeout: float | None = None) -> bool:
        """Set a ``SEQUENCED`` register to ``new`` if its value is ``expected``; returns
        whether it did, the same answer at every replica. ``Unavailable`` if the log cannot
        be reached in time (the op may then still be applied, once, in log order)."""
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
        return await self.levels.conditional(field_name, key, op, args, dict(kwargs or {}), cond, timeout)

    # -- reads with levels -------------------------------------------------------
    async def read(self, field_name: str, key: str, *, level: ReadLevel | None = None,
                   timeout: float | None = None) -> Any:
        """Read a value at the field's read level (or a stronger ``level``): ``LOCAL`` now;
        ``MAX_STALENESS(t)`` if every origin was heard within ``t`` (else waits or
        ``StaleRead``); ``SESSION(token)`` once ``token`` is applied; ``QUORUM``/``ALL`` once
        what a quorum reported is applied; ``LINEARIZABLE`` once the log's end is applied."""
        return await self.levels.read(field_name, key, level, timeout)

    async def sync_to_end(self, timeout: float | None = None) -> None:
        """Wait until everything the sequencing log holds now is applied here (an edge's
        upstream sequencer: until its records arrive through the forwarder); else
        ``Unavailable``."""
        await self.sequencer_client.sync_to_end(timeout)

    # -- coordination, heartbeats ------------------------------------------------
    def now_ms(self) -> int:
        """This replica's wall clock in ms (the simulated clock in a test Cluster)."""
        return self.hlc.wall_ms()

    def clock_skew_ms(self) -> int | None:
        """How far this replica's clock is ahead of its peers' (median; negative: behind),
        from their heartbeats; ``None`` before any peer was heard."""
        return self.skew.skew_ms(self.now_ms())

    def acknowledged(self, level: WriteLevel, dot: Any) -> bool:
        """Whether ``dot`` meets ack level ``level`` (``ACKS``/``QUORUM``/``ALL``) now."""
        return self.coordinator.acknowledged(level, dot)

    def begin_quorum_read(self) -> int:
        """Start a ``QUORUM``/``ALL`` read: returns the ping that this replica's next
        heartbeats carry; peers answer it with their current context."""
        return self.coordinator.begin_quorum_read()

    def quorum_read_ready(self, level: Any, ping: int) -> bool:
        """Whether enough of ``level``'s group answered ``ping`` and local state includes
        everything they reported (then a read sees every write they acknowledged)."""
        return self.coordinator.quorum_read_ready(level, ping)

    def staleness_ms(self) -> float:
        """How stale this replica may be (ms): the largest lag behind any origin it tracks,
        live or not (remove dead replicas with :meth:`remove_replica`), from heartbeats."""
        return self.coordinator.staleness_ms()

    def freshness(self) -> dict[str, tuple[float, float]]:
        """``{field: (staleness_s, max_lag_s)}`` for every field with a freshness SLO
        (measured and alarmed, never enforced; staleness is replica-wide)."""
        return self.coordinator.freshness()

    def heartbeat(self) -> Heartbeat:
        """This replica's heartbeat now (what it publishes on the control channel)."""
        return self.heartbeats.build()

    def observe_heartbeat(self, hb: Heartbeat | bytes) -> bool:
        """Take in a peer's heartbeat (bytes are decoded and validated; bad ones are counted
        and dropped, never raised). Returns whether it was new."""
        return self.heartbeats.observe(hb)

    async def publish_heartbeat(self) -> None:
        """Publish a heartbeat now (the background task does it every interval)."""
        await self.heartbeats.publish()

    # -- fleet -------------------------------------------------------------------
    def members(self, group: Any = None) -> frozenset[str]:
        """Names of the replicas of ``group``: those heard from (heartbeats) plus those the
        log records as having joined and not been removed, so quorum sizes survive a
        restart or a partition that hides peers."""
        return self.fleet.members(group)

    async def remove_replica(self, name: str) -> str:
        """Remove replica ``name`` (its current incarnation) from the fleet; the decision
        replicates (see :mod:`crdtsync.replica.fleet`); every event of it already in the
        log is kept. Returns the removed actor id."""
        return await self.fleet.remove(name, self._writer, self.catch_up)

    def stable_context(self) -> Context:
        """The causally stable context: what every live, known replica has applied
        (the meet of their latest heartbeats' contexts, this replica's own included)."""
        return self.fleet.stable_context()

    def reclaim(self) -> list[str]:
        """Prune removed incarnations whose every event is causally stable (they leave the
        context; all their events are refused from then on). Runs with every heartbeat;
        returns the actors pruned by this call."""
        return self.fleet.reclaim()

    # -- reading ---------------------------------------------------------------
    def state(self, field_name: str, key: str) -> CRDT[Any]:
        """The CRDT state of one field of one entity (an empty state if never written)."""
        return self.store.state(field_name, key)

    def value(self, field_name: str, key: str) -> Any:
        """The value of one field of one entity."""
        return self.store.value(field_name, key)

    def view(self, key: str, fields: Iterable[str]) -> View:
        """Values of several fields of one entity, from one consistent moment."""
        return self.store.view(key, fields, self.hlc.last)

    def keys(self, field_name: str) -> list[str]:
        return self.store.keys(field_name)

    def fields(self) -> list[str]:
        return self.store.fields()

    @property
    def context(self) -> Context:
        """Every event this replica has applied (immutable; cheap to keep)."""
        return self.store.ctx()

    @property
    def position(self) -> Position | None:
        """Position of the last log record applied."""
        return self.store.position

    @property
    def pending(self) -> int:
        """Local events not yet appended to the log."""
        return self._writer.pending

    def digest(self) -> bytes:
        """A digest of the whole user-visible state (equal digests, equal states)."""
        return self.store.digest()

    def export_state(self) -> dict[str, dict[str, CRDT[Any]]]:
        """A shallow copy of the state map (states are immutable)."""
        return self.store.export()

    # -- subscriptions ---------------------------------------------------------
    def subscribe(self, callback: Callable[[Change], Any], fields: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(change)`` after every applied event (a callback that raises is
        logged and counted); returns an unsubscribe function."""
        return self.subscriptions.subscribe(callback, fields)

    def changes(self, fields: Iterable[str] | None = None) -> ChangeStream:
        """Async iterator of changes (local and remote) from this call on (not from the
        first iteration); close it with ``await stream.aclose()`` or ``async with``."""
        return self.subscriptions.stream(fields)

    # -- applying --------------------------------------------------------------
    async def catch_up(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every record currently in the log; returns the number of events applied."""
        return await self.follower.catch_up(progress=progress)

    def retry_held(self) -> int:
        """Apply held-back events (stamped ahead of this clock) that it now accepts;
        returns how many. Runs with every heartbeat and before applying a record."""
        return self.applier.retry_held()

    async def wait_applied(self, position: int, timeout: float | None = None) -> None:
        """Wait until the record at ``position`` (or a later one) has been applied."""
        await self.follower.wait_applied(position, timeout)

    async def sync(self, timeout: float | None = None) -> None:
        """Flush local writes and wait until everything in the log now has been applied."""
        await self.follower.sync(self._writer.flush, timeout)

    # -- snapshots -------------------------------------------------------------
    async def snapshot(self) -> None:
        """Write a snapshot now, atomically, after syncing the log (see
        :mod:`crdtsync.replica.persistence`); no-op without a snapshot store."""
        await self.persistence.snapshot()

    async def compact(self) -> Position | None:
        """Snapshot, then drop log records the snapshot covers (only for a log this replica owns)."""
        return await self.persistence.compact(self.catch_up, self.owns_log)
