"""Assembly: building a replica's parts and wiring them to each other.

The one place that knows how the parts of :mod:`crdtsync.replica` depend on each other
(each takes the parts it talks to in its constructor). :func:`assemble` sets them on the
:class:`~crdtsync.replica.facade.Replica` being built; :func:`open_replica` is what
:meth:`Replica.open <crdtsync.replica.Replica.open>` runs: identity, log, snapshot store
and control channel from the arguments, then recovery, publishing the schema, the first
heartbeat and the apply loop.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .._dirlock import DirLock
from .._storage import storage_error
from ..clock import HLC
from ..control import ControlChannel, ControlTransport, Membership
from ..control.aggregate import HubAggregator
from ..control.stream import StreamEncoder
from ..control.topology import HUB, Topology
from ..errors import StorageError
from ..events import Codec, codec_for
from ..log._protocol import Log, Opening
from ..schema import Definition, Schema
from ..snapshots import FileSnapshotStore, SnapshotStore
from .admission import Admission, HeldEvents
from .antientropy import AntiEntropy, AntiEntropySettings, JournaledLog
from .apply import Applier
from .coordination import Coordinator
from .definitions import Definitions
from .fleet import Fleet
from .follower import Follower
from .heartbeats import Heartbeats, default_control
from .identity import ReplicaIdentity
from .levels import LevelDriver
from .persistence import Persistence
from .sequencer import SequencerClient
from .skew import ClockSkewMonitor
from .store import Store
from .subscriptions import Subscriptions
from .views import FleetView, HubFedView, PeerView
from .waiting import Waiter
from .writer import Writer

if TYPE_CHECKING:
    from .facade import Replica

__all__ = ["assemble", "close_replica", "open_replica"]


def assemble(r: Replica, snapshots: SnapshotStore | None, snapshot_every: int,
             admins: Iterable[str] | None) -> None:
    """Build ``r``'s parts (``r`` has its identity, schema, log, clock and stats set)."""
    identity, log_, stats, actor, hlc = r.identity, r.log, r.stats, r.actor, r.hlc
    meta = {"region": identity.region, "role": identity.role}
    r.definitions = Definitions(r.schema, stats, admins)
    r.store = Store(actor, r.definitions)
    r.subscriptions = Subscriptions(stats)
    r.membership = Membership(local=identity.name, max_drift_ms=hlc.max_drift_ms)
    # peers' clocks from their heartbeats; fences local stamps too far ahead of them
    r.skew = ClockSkewMonitor(max_drift_ms=hlc.max_drift_ms, stats=stats, actor=actor)
    hlc.fence = r.skew.check
    r.admission = Admission(identity, r.definitions, stats, r.scope, r.data_dir)
    r.held = HeldEvents(stats, hlc.max_drift_ms, actor)
    # anti-entropy runs over logs that can lose records (Kafka: broker loss, retention; the
    # simulated Cluster's lossy links). A LocalLog or MemoryLog is the one durable copy its
    # replicas share: nothing to repair, so no journal, no digests, no cost on the hot path.
    ae = r.antientropy_settings
    lossy = ae.active(log_)
    r.antientropy = AntiEntropy(identity.name, r.store, log_, r.codec, every=ae.every, max_records=ae.max_records,
                                journal_bytes=ae.journal_bytes if lossy else 0, enabled=lossy)
    # the writer's appends are journaled: own records the log loses before they are read back
    writer_log = JournaledLog(log_, r.antientropy.journal) if lossy else log_
    r._writer = Writer(actor, r.store, r.definitions, r.admission, r.subscriptions, stats, hlc, r.codec,
                       writer_log, meta)  # type: ignore[arg-type]
    r.definitions.on_learn = r.store.on_load = r.subscriptions.on_change = r._writer.invalidate
    r.fleet = Fleet(identity, r.store, r.membership, r.admission, r.definitions, r.skew, stats, r._writer.invalidate)

    def following() -> bool:
        return r.follower.following

    r.waiter = Waiter(r.heartbeat_interval, r.catch_up, following)
    topology = r.topology
    r.heartbeats = Heartbeats(identity, r.control, r.heartbeat_interval, r.store, r.membership, r.skew, stats,
                              hlc, r.fleet.pruned, r.waiter.tick, topology)
    view: FleetView
    if r.heartbeats.edge is not None:
        view = HubFedView(r.store, r.heartbeats.edge, r.fleet.pruned)
    else:
        view = PeerView(identity, r.store, r.membership, r.fleet)
    r.fleet.stable_for = view.stable_for
    if topology.role == HUB:
        roster = r.fleet.roster

        def region_of(name: str) -> str:
            hb = r.membership.get(name)
            return hb.region if hb is not None else roster.get(name, ("", "default", 0))[1]

        r.heartbeats.aggregator = HubAggregator(
            identity.name, r.membership, r.fleet.members, region_of, r.admission.removed, r.fleet.pruned,
            int(r.liveness * 1000), topology.ping_ttl_ms)
        r.heartbeats.agg_encoder = StreamEncoder("agg", identity.name, hlc.peek(), full_every=topology.full_period)
    r.sequencer_client = SequencerClient(actor, r.sequencer, log_, r.store, r.definitions, stats, hlc, r.codec,
                                         meta, r.waiter, r.catch_up, following, r.sync)

    def applied(remote: bool) -> None:
        r.waiter.tick()
        if remote:
            r.heartbeats.wake()  # report promptly: a writer may wait for this ack

    r.applier = Applier(actor, r.store, r.admission, r.held, r.definitions, r.fleet, r.sequencer_client,
                        r.subscriptions, stats, hlc, r.codec, applied)
    r.persistence = Persistence(actor, snapshots, snapshot_every, r.store, r._writer, r.sequencer_client, r.held,
                                r.definitions, r.fleet, stats, hlc, log_)
    # a log with a dead-letter channel files the records admission refuses for good
    r.admission.sink = getattr(log_, "dead_letter", None)
    r.follower = Follower(actor, log_, r.store, r.applier, r.persistence.due, r.persistence.due_snapshot,
                          r.admission if r.admission.sink is not None else None)  # no cost otherwise
    r.coordinator = Coordinator(identity, r.store, view, r.heartbeats, r.definitions, stats,
                                r.liveness)
    r.levels = LevelDriver(r.admission, r.definitions, r.coordinator, r._writer, r.sequencer_client,
                           r.heartbeats, r.waiter, r.store, log_)
    r.heartbeats.antientropy = r.antientropy
    if lossy:
        r.follower.tap = r.antientropy.tap
    r.heartbeats.duties += [r.coordinator.check_slo, r.fleet.reclaim, r.applier.retry_held]


def open_replica(
    cls: type[Replica],
    data_dir: str | os.PathLike[str] | None,
    *,
    schema: Schema | Iterable[Definition],
    log: Log | None,
    name: str | None,
    region: str | None,
    role: str | None,
    identity: ReplicaIdentity | None,
    codec: str | Codec,
    fsync: str,
    snapshots: SnapshotStore | None,
    snapshot_every: int,
    hlc: HLC | None,
    follow: bool,
    progress: Callable[[int, int], None] | None,
    control: ControlChannel | None | bool,
    heartbeat_interval: float,
    liveness: float | None,
    sequencer: Log | None,
    admins: Iterable[str] | None,
    topology: Topology | None = None,
    antientropy: AntiEntropySettings | None = None,
) -> Opening[Replica]:
    """What :meth:`Replica.open` does (see its docstring for the arguments)."""

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
            from ..log.local import LocalLog

            the_log = await LocalLog.open(ddir / "log", fsync=fsync)
        store = snapshots
        if store is None and ddir is not None:
            store = FileSnapshotStore(ddir / "snapshots" / ident.actor)
        chan: ControlChannel | ControlTransport | None
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
            sequencer=sequencer, admins=admins, topology=topology, antientropy=antientropy,
        )
        await r.persistence.recover(lambda: r.catch_up(progress=progress))
        r.admission.recovered = True
        await r.persistence.publish(r.definitions.is_admin(ident.role))
        r.observe_heartbeat(r.heartbeat())
        if follow:
            r.start()
        return r

    async def locked() -> Replica:
        # one process per data directory: a second one would reuse this actor's seqs
        try:
            lock = DirLock.acquire(Path(data_dir), name) if data_dir is not None else None
        except OSError as exc:
            typed = storage_error(exc, Path(data_dir or "."), "locking the data directory",
                                  "the replica was not opened")
            if typed is None:
                raise
            raise typed from exc
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

    return Opening(locked, cls.close)


async def close_replica(r: Replica) -> None:
    """What :meth:`Replica.close <crdtsync.replica.Replica.close>` runs: flush, final
    snapshot, then release everything (also when the disk refused one of those)."""
    if r._closed:
        return
    try:
        if r._writer.busy:
            await r._writer.flush()
        if r.persistence.snapshots is not None and r.store.changed:
            await r.persistence.snapshot()
    except StorageError as exc:
        # Closing anyway (files and tasks are released): say what that cost.
        lost = r._writer.pending
        cost = f"{lost} queued events were not written and are lost" if lost else "no final snapshot was written"
        raise type(exc)(exc.errno, f"closing replica {r.actor}: {cost}. {exc}", exc.filename) from exc
    finally:
        r._mark_closed()
        await r.follower.stop()
        await r.heartbeats.stop()
        r.sequencer_client.fail_waiting()
        try:
            if r.owns_log:
                await r.log.close()
        finally:
            if r._dirlock is not None:
                r._dirlock.release()
