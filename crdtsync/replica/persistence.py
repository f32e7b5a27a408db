"""Persistence: snapshots that bound recovery, recovery itself, and compaction.

A snapshot holds the store's state and context, the log position to resume after, the
next own seqs and the HLC, definitions learned from the log, and the records of own writes
that were not yet in the log when it was taken (:class:`~crdtsync.snapshots.Snapshot`).
It is written every ``snapshot_every`` folded events and on close, after flushing and
syncing the log, so it never names a position the log could still lose. While remote
events are held back for a future timestamp, it names the position before the first of
them, so a restart re-reads and holds them again. Recovery is the newest valid snapshot
plus the log tail; compaction is a snapshot followed by dropping the log records it
covers (only for a log the replica owns).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..clock import HLC
from ..errors import StorageError
from ..log._protocol import Log, Position, earliest
from ..schema import SCHEMA_FIELD
from ..sequenced import FLEET_FIELD
from ..snapshots import Snapshot, SnapshotStore, encode_snapshot
from ..types.registers import LWWRegister
from .admission import HeldEvents
from .definitions import Definitions
from .fleet import Fleet
from .sequencer import SequencerClient
from .stats import ReplicaStats
from .store import Store
from .writer import Writer

__all__ = ["Persistence"]

log = logging.getLogger("crdtsync.replica")


class Persistence:
    """Snapshots, recovery and compaction of one replica."""

    def __init__(self, actor: str, snapshots: SnapshotStore | None, snapshot_every: int, store: Store,
                 writer: Writer, sequencer: SequencerClient, held: HeldEvents, definitions: Definitions,
                 fleet: Fleet, stats: ReplicaStats, hlc: HLC, log_: Log) -> None:
        self.actor = actor
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self._store = store
        self._writer = writer
        self._sequencer = sequencer
        self._held = held
        self._definitions = definitions
        self._fleet = fleet
        self._stats = stats
        self._hlc = hlc
        self.log = log_
        self._refused_at: int | None = None  # store.changed when the disk refused a snapshot
        #: callables giving a position compaction must keep records from (``None``: no
        #: constraint), e.g. lineage retention (crdtsync.inference.history.Retention)
        self.retention: list[Callable[[], int | None]] = []

    def due(self) -> bool:
        """Whether enough changed since the last snapshot to write the next one (after a
        snapshot the disk refused: another ``snapshot_every`` events later)."""
        if self.snapshots is None:
            return False
        refused = self._refused_at
        return self._store.changed >= self.snapshot_every + (refused or 0)

    async def due_snapshot(self) -> None:
        """The snapshot applying takes every ``snapshot_every`` events. A disk that refuses
        it (full, read-only) must not stop applying: the error is logged and counted, and
        the next attempt waits for another ``snapshot_every`` events."""
        try:
            await self.snapshot()
        except StorageError as exc:
            self._refused_at = self._store.changed
            log.warning("%s: no snapshot written (retrying after %d more events): %s",
                        self.actor, self.snapshot_every, exc)

    # -- opening -------------------------------------------------------------------
    async def recover(self, catch_up: Callable[[], Awaitable[object]]) -> None:
        """Load the newest valid snapshot, then apply the log after it."""
        snap = self.snapshots.load_latest() if self.snapshots is not None else None
        store = self._store
        if snap is not None:
            if snap.actor != self.actor:
                raise ValueError(f"snapshot belongs to {snap.actor}, not {self.actor}")
            store.load(snap.state, snap.context, snap.position)
            self._writer.next_seq = snap.next_seq
            self._hlc.restore(snap.hlc)
            self._stats.events_applied = snap.events_applied
            for d in snap.schema:
                self._definitions.learn(d)
            # definitions this replica had in code when it saved the snapshot are in
            # the replicated _schema field: a replica reopened without them keeps
            # enforcing them (residency, writers, policy)
            for reg in store.tables.get(SCHEMA_FIELD, {}).values():
                self._definitions.learn(reg.value())
            for key, reg in store.tables.get(FLEET_FIELD, {}).items():
                self._fleet.learn(key, reg)
            if snap.unlogged:  # own writes the log may lack (see snapshot())
                await self.log.append(list(snap.unlogged))
        await catch_up()
        # never reuse a seq of ours that the log already holds
        ctx = store.ctx()
        self._writer.next_seq = max(self._writer.next_seq, ctx.max_seq(self.actor) + 1)
        seq = self._sequencer
        seq.next_seq = max(seq.next_seq, ctx.max_seq(seq.seq_actor) + 1)

    async def publish(self, admin: bool) -> None:
        """Publish definitions the log does not hold yet (definitions are events too;
        only an admin publishes: other replicas would reject them) and join the roster."""
        writer, tables = self._writer, self._store.tables
        for d in (self._definitions.schema if admin else ()):
            cur = tables.get(SCHEMA_FIELD, {}).get(d.name)
            want = d.to_dict()
            if cur is not None and cur.value() == want:
                continue
            writer.write_raw(SCHEMA_FIELD, d.name, LWWRegister, "set", (want,), {}, 1, True)
        if not self._fleet.joined():
            # join the fleet's roster: quorum sizes survive restarts and partitions
            key, join = self._fleet.join_record()
            writer.write_raw(FLEET_FIELD, key, LWWRegister, "set", (join,), {})
            self._fleet.learn(key, tables[FLEET_FIELD][key])
        if writer.pending:
            await writer.flush()

    # -- snapshots -------------------------------------------------------------------
    async def snapshot(self) -> None:
        """Write a snapshot now (see :meth:`Replica.snapshot`)."""
        if self.snapshots is None:
            return
        writer = self._writer
        if writer.busy:
            await writer.flush()
        sync = getattr(self.log, "sync", None)
        if sync is not None:
            await sync()
        store = self._store
        schema = [d.to_dict() for d in self._definitions.remote.values()]
        # writes made during the awaits above are in the state but maybe not in the log
        # yet: the snapshot carries them, and a replica recovering from it appends them
        # again (a duplicate is harmless), so no seq of ours is ever only in a snapshot
        snap = Snapshot(self.actor, store.ctx(), self._held.floor(store.position), writer.next_seq, self._hlc.last,
                        store.tables, schema, self._stats.events_applied, writer.unlogged())
        try:
            self.snapshots.save(encode_snapshot(snap))
        except StorageError:
            self._stats.storage_errors += 1
            raise
        store.changed = 0
        self._refused_at = None
        self._stats.snapshots_written += 1

    async def compact(self, catch_up: Callable[[], Awaitable[object]], owns_log: bool) -> Position | None:
        """Snapshot, then drop log records the snapshot covers (see :meth:`Replica.compact`)."""
        await self._writer.flush()
        await catch_up()
        await self.snapshot()
        if not owns_log:
            raise ValueError("this replica does not own its log; other readers may still need it")
        keep = self.keep_floor()
        if keep is not None:
            await self.log.truncate_before(keep)
        return self._store.position

    def keep_floor(self) -> Position | None:
        """The position compaction may drop records before: the snapshot's, lowered for
        held-back events (they must stay readable) and for every retention floor."""
        keep = self._held.floor(self._store.position)
        floors = [f for f in (floor() for floor in self.retention) if f is not None]
        if not floors:
            return keep
        return earliest([*floors, keep] if keep is not None else floors)
