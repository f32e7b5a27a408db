"""Persistence: snapshots round-trip and bound recovery to the log after them; a snapshot
the disk refuses does not stop applying; held events and unlogged own writes survive a
restart; definitions and the roster are published; compaction keeps what is needed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crdtsync import Feature, GCounter, LWWRegister
from crdtsync.errors import StorageFull
from crdtsync.events import Batch
from crdtsync.log import MemoryLog
from crdtsync.log._protocol import read_range
from crdtsync.replica.admission import HeldEvents
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.replica.persistence import Persistence
from crdtsync.schema import SCHEMA_FIELD
from crdtsync.sequenced import FLEET_FIELD
from crdtsync.snapshots import FileSnapshotStore, MemorySnapshotStore, SnapshotStore, decode_snapshot

from ._parts import CODEC, Assembly, event, ident

FIELDS = (Feature("clicks", GCounter), Feature("segment", LWWRegister))
ME = ident("a", role="admin", incarnation="i1")
PEER = "b~1"


class Node:
    """One replica's persistence with the parts it talks to; its catch-up plays the
    applier (joins every event whose dot is new, in log order) and counts records read."""

    def __init__(self, log: MemoryLog, snaps: SnapshotStore | None, *, every: int = 1_000,
                 identity: ReplicaIdentity = ME) -> None:
        self.p = Assembly(FIELDS, identity, log=log)
        self.held = HeldEvents(self.p.stats, 60_000, identity.actor)
        self.persist = Persistence(identity.actor, snaps, every, self.p.store, self.p.writer, self.p.sequencer,
                                   self.held, self.p.defs, self.p.fleet, self.p.stats, self.p.hlc, log)
        self.read = 0

    async def catch_up(self) -> None:
        st = self.p.store
        async for entry in read_range(self.p.log, st.position, await self.p.log.end()):
            self.read += 1
            for ev in CODEC.decode(entry.payload).events:
                if ev.dot in st.ctx():
                    continue
                tbl = st.table(ev.field, ev.delta.TYPE_TAG)
                cur = tbl.get(ev.key)
                tbl[ev.key] = ev.delta if cur is None else cur.join(ev.delta)
                st.set_context(st.ctx().add(ev.dot))
                st.changed += 1
            st.position = entry.position

    def write(self, n: int = 1) -> None:
        for _ in range(n):
            self.p.writer.write_raw("clicks", "k", GCounter, "increment", (1,), {})

    async def written(self, n: int) -> None:
        """``n`` own writes, appended (counted as changes once they leave the queue)."""
        self.write(n)
        await self.p.writer.flush()

    def value(self) -> int:
        return int(self.p.store.value("clicks", "k"))


async def peer_record(log: MemoryLog, seq: int) -> int:
    ev = event(PEER, seq, "clicks", "k", GCounter().increment(seq, actor=PEER))
    return await log.append([CODEC.encode(Batch.of([ev], {"region": "eu", "role": "default"}))])


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_snapshot_round_trips_and_recovery_reads_only_the_log_after_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = MemoryLog()
        first = Node(log, FileSnapshotStore(tmp_path / "snaps"))
        first.write(5)
        await first.p.writer.flush()
        await first.catch_up()
        await first.persist.snapshot()
        assert first.p.stats.snapshots_written == 1 and first.p.store.changed == 0
        for seq in (1, 2, 3):
            await peer_record(log, seq)
        # a restart: new parts, the same snapshot directory and log
        again = Node(log, FileSnapshotStore(tmp_path / "snaps"))
        await again.persist.recover(again.catch_up)
        assert again.read == 3, "only the records after the snapshot were read"
        assert again.value() == 5 + 3
        assert again.p.store.ctx().max_seq(ME.actor) == 5
        assert again.p.writer.next_seq == 6, "own seqs continue after a restart"
        assert again.p.hlc.last >= first.p.hlc.last, "the clock never goes back over a restart"

    run(scenario())


def test_without_a_snapshot_recovery_replays_the_whole_log() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        for seq in (1, 2, 3):
            await peer_record(log, seq)
        n = Node(log, MemorySnapshotStore())
        await n.persist.recover(n.catch_up)
        assert n.read == 3 and n.value() == 3

    run(scenario())


def test_own_seqs_in_the_log_but_past_the_snapshot_are_never_reused() -> None:
    async def scenario() -> None:
        log, snaps = MemoryLog(), MemorySnapshotStore()
        first = Node(log, snaps)
        first.write(2)
        await first.p.writer.flush()
        await first.persist.snapshot()
        first.write(3)
        await first.p.writer.flush()  # seqs 3..5 reached the log, no snapshot names them
        again = Node(log, snaps)
        await again.persist.recover(again.catch_up)
        assert again.p.writer.next_seq == 6

    run(scenario())


def test_a_snapshot_of_another_replica_is_refused() -> None:
    async def scenario() -> None:
        log, snaps = MemoryLog(), MemorySnapshotStore()
        other = Node(log, snaps, identity=ident("z", incarnation="q"))
        await other.persist.snapshot()
        me = Node(log, snaps)
        with pytest.raises(ValueError, match="belongs to"):
            await me.persist.recover(me.catch_up)

    run(scenario())


def test_a_snapshot_is_due_every_snapshot_every_changes() -> None:
    async def scenario() -> None:
        n = Node(MemoryLog(), MemorySnapshotStore(), every=3)
        await n.written(2)
        assert not n.persist.due()
        await n.written(1)
        assert n.persist.due()
        await n.persist.due_snapshot()
        assert not n.persist.due() and n.p.stats.snapshots_written == 1
        assert not Node(MemoryLog(), None, every=1).persist.due(), "no snapshot store: never due"

    run(scenario())


class FullDisk(MemorySnapshotStore):
    def __init__(self) -> None:
        super().__init__()
        self.full = True

    def save(self, blob: bytes) -> None:
        if self.full:
            raise StorageFull(28, "no space left (test)")
        super().save(blob)


def test_a_snapshot_the_disk_refuses_is_counted_and_retried_after_another_interval() -> None:
    async def scenario() -> None:
        snaps = FullDisk()
        n = Node(MemoryLog(), snaps, every=3)
        await n.written(3)
        await n.persist.due_snapshot()  # must not raise: applying goes on
        assert n.p.stats.storage_errors == 1 and n.p.stats.snapshots_written == 0
        assert not n.persist.due(), "no retry on every event"
        await n.written(2)
        assert not n.persist.due()
        await n.written(1)
        assert n.persist.due()
        snaps.full = False
        await n.persist.due_snapshot()
        assert n.p.stats.snapshots_written == 1 and not n.persist.due()
        with pytest.raises(StorageFull):  # an explicit snapshot says why it failed
            snaps.full = True
            await n.persist.snapshot()

    run(scenario())


def test_while_an_event_is_held_a_snapshot_stops_before_its_record_so_a_restart_holds_it_again() -> None:
    async def scenario() -> None:
        log, snaps = MemoryLog(), MemorySnapshotStore()
        n = Node(log, snaps)
        for seq in (1, 2, 3):
            await peer_record(log, seq)
        await n.catch_up()
        ev = event(PEER, 9, "clicks", "k", GCounter().increment(9, actor=PEER), wall_ms=10**13)
        n.held.hold(ev, {}, 0)  # held from the record after position 0
        await n.persist.snapshot()
        assert decode_snapshot(snaps.blobs[-1]).position == 0
        again = Node(log, snaps)
        await again.persist.recover(again.catch_up)
        assert again.read == 2, "records 1 and 2 are read again (duplicates skipped by dot)"
        assert again.value() == 3

    run(scenario())


class WritesDuringSync(MemoryLog):
    """A log whose sync lets a write slip in while a snapshot awaits it."""

    node: Node

    async def sync(self) -> None:
        self.node.write(1)


def test_own_writes_made_while_a_snapshot_awaits_the_log_survive_a_crash() -> None:
    async def scenario() -> None:
        log, snaps = WritesDuringSync(), MemorySnapshotStore()
        n = Node(log, snaps)
        log.node = n
        n.write(1)
        await n.persist.snapshot()  # flushes seq 1, then seq 2 is written during sync
        assert len(decode_snapshot(snaps.blobs[-1]).unlogged) == 1
        # crash: seq 2 never reached the log
        assert [ev.seq async for e in log.read(0) for ev in CODEC.decode(e.payload).events] == [1]
        again = Node(MemoryLog(), snaps)
        again.p.log = again.persist.log = log
        await again.persist.recover(again.catch_up)
        seqs = [ev.seq async for e in log.read(0) for ev in CODEC.decode(e.payload).events]
        assert seqs == [1, 2], "recovery appended the unlogged write"
        assert again.value() == 2 and again.p.writer.next_seq == 3

    run(scenario())


def test_an_admin_publishes_its_definitions_and_every_replica_joins_the_roster_once() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        n = Node(log, None)
        await n.persist.publish(admin=True)
        await n.catch_up()
        published = n.p.store.tables[SCHEMA_FIELD]
        assert set(published) == {"clicks", "segment"}
        assert f"join/{ME.actor}" in n.p.store.tables[FLEET_FIELD] and n.p.fleet.joined()
        records = await log.end()
        await n.persist.publish(admin=True)
        assert await log.end() == records, "nothing published twice"
        other = Node(MemoryLog(), None, identity=ident("c", incarnation="m"))
        await other.persist.publish(admin=False)
        assert SCHEMA_FIELD not in other.p.store.tables and other.p.fleet.joined()

    run(scenario())


def test_definitions_learned_from_the_log_survive_a_restart_from_the_snapshot() -> None:
    async def scenario() -> None:
        log, snaps = MemoryLog(), MemorySnapshotStore()
        n = Node(log, snaps)
        n.p.defs.learn(Feature("limits", LWWRegister, writers={"risk"}).to_dict())
        await n.persist.snapshot()
        again = Node(log, snaps)
        await again.persist.recover(again.catch_up)
        assert again.p.defs.get("limits").writers == frozenset({"risk"})

    run(scenario())


def test_compaction_drops_what_the_snapshot_covers_and_only_for_an_owned_log() -> None:
    async def scenario() -> None:
        log, snaps = MemoryLog(), MemorySnapshotStore()
        n = Node(log, snaps)
        for seq in (1, 2, 3, 4):
            await peer_record(log, seq)
        with pytest.raises(ValueError, match="does not own"):
            await n.persist.compact(n.catch_up, owns_log=False)
        assert await n.persist.compact(n.catch_up, owns_log=True) == 3
        assert [e.position async for e in log.read(0)] == [3]
        again = Node(log, snaps)
        await again.persist.recover(again.catch_up)
        assert again.value() == 4

    run(scenario())
