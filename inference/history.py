"""What the fold reads: an index of a replica's event log, and checkpoints that outlive compaction.

:class:`EventHistory` reads an event log (the replica's own log: it holds every event the
replica applied) once and keeps, per (field, entity key), the events with their dots,
times and deltas, plus the context of every dot it saw (``fields=`` keeps the events of
those fields only, which bounds its memory; the context still covers every event). :meth:`EventHistory.refresh`
reads only what was appended since. Records that do not decode are counted and skipped
(as the replica's apply loop quarantines them), so their dots are missing, which the fold
notices.

A :class:`Checkpoint` is the state of a replica at a context, with the log position it
had applied: a base the fold can start from when the log before it is gone.
:class:`CheckpointStore` keeps them as snapshot-format files (written atomically,
checksummed: :mod:`crdtsync.snapshots`) in a directory.

:class:`Retention` ties them to compaction: :meth:`Retention.checkpoint` writes one, and
the replica's compaction (``replica.compact()``, or :meth:`Retention.compact` for a log
the replica does not own) keeps the log back to the newest checkpoint older than the
``horizon``, so any state at a context of the last ``horizon`` seconds can be rebuilt.
Older checkpoints, useless once the log before the kept one is gone, are deleted, and a
new checkpoint is written after each compaction: compacting regularly (say daily, with a
horizon of a week) keeps the log back to a checkpoint at least ``horizon`` old.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdtsync._storage import typed_storage_errors
from crdtsync.clock import Context, Dot, hlc_wall_ms
from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.events import Codec, codec_for
from crdtsync.log._protocol import Log, read_range
from crdtsync.schema import SCHEMA_FIELD
from crdtsync.sequenced import SequencedOp
from crdtsync.snapshots import Snapshot, decode_snapshot, encode_snapshot
from crdtsync.types._base import CRDT

if TYPE_CHECKING:
    from crdtsync.replica import Replica

__all__ = ["EventHistory", "HistoryEvent", "Checkpoint", "CheckpointStore", "Retention"]

log = logging.getLogger("crdtsync.inference")


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One event of a field of one entity, as the log holds it."""

    origin: str
    seq: int
    hlc: int
    delta: CRDT[Any]
    position: int

    @property
    def dot(self) -> Dot:
        return Dot(self.origin, self.seq)


class EventHistory:
    """An index of an event log: events per (field, key) and every dot seen."""

    def __init__(self, log_: Log, codec: Codec | None = None, fields: Iterable[str] | None = None) -> None:
        self.log = log_
        self.codec = codec or codec_for("msgpack")
        #: the fields whose events are kept (``None``: all); dots of every event are seen
        self.fields: frozenset[str] | None = (frozenset(fields) | {SCHEMA_FIELD}) if fields is not None else None
        self.events: dict[tuple[str, str], list[HistoryEvent]] = {}
        self.seen = Context()
        #: position of the first record read (None: the log was empty)
        self.first_position: int | None = None
        self._after: int | None = None
        #: positions of records that did not decode (skipped, their dots missing)
        self.undecodable: list[int] = []
        #: every sequenced operation, of every field whatever ``fields`` says, in log
        #: order: ``(field, key, event)`` (what a SEQUENCED field's replay walks)
        self.sequenced: list[tuple[str, str, HistoryEvent]] = []

    async def refresh(self) -> int:
        """Index what the log gained since the last call; returns how many events."""
        n = 0
        events = self.events
        seen = self.seen
        async for entry in read_range(self.log, self._after, await self.log.end()):
            self._after = entry.position
            if self.first_position is None:
                self.first_position = entry.position
            try:
                batch = self.codec.decode(entry.payload)
            except (CorruptRecord, UnsupportedVersion) as exc:
                self.undecodable.append(entry.position)
                log.warning("event log: skipping the record at %d: %s", entry.position, exc)
                continue
            keep = self.fields
            for ev in batch.events:
                op = type(ev.delta) is SequencedOp
                if keep is not None and ev.field not in keep and not op:
                    continue
                k = (ev.field, ev.key)
                he = HistoryEvent(ev.origin, ev.seq, ev.hlc, ev.delta, entry.position)
                if op:
                    self.sequenced.append((ev.field, ev.key, he))
                    if keep is not None and ev.field not in keep:
                        continue
                lst = events.get(k)
                if lst is None:
                    events[k] = [he]
                else:
                    lst.append(he)
            seen = seen.add_range(batch.origin, batch.first_seq, batch.last_seq)
            n += len(batch.events)
        self.seen = seen
        return n

    def of(self, field: str, key: str) -> list[HistoryEvent]:
        return self.events.get((field, key), [])

    def keys(self, field: str) -> list[str]:
        return sorted(k for f, k in self.events if f == field)


@dataclass(frozen=True)
class Checkpoint:
    """A replica's state at ``context``, having applied the log up to ``position``."""

    path: Path
    context: Context
    position: int | None
    time: int  # the replica's HLC when it was taken
    state: dict[str, dict[str, CRDT[Any]]]


class CheckpointStore:
    """Checkpoints as files (``checkpoint-<hlc>.snap``, snapshot format) in a directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("checkpoint-*.tmp"):
            stale.unlink(missing_ok=True)
        self._cache: dict[Path, Checkpoint] = {}
        #: files found damaged and skipped
        self.skipped: list[str] = []

    def save(self, snap: Snapshot) -> Path:
        """Write a checkpoint atomically (tmp, fsync, rename); a refusing disk raises the
        typed StorageFull/StorageUnavailable and leaves the earlier checkpoints."""
        final = self.dir / f"checkpoint-{snap.hlc:020d}.snap"
        tmp = final.with_suffix(".tmp")
        with typed_storage_errors(self.dir, "Writing a lineage checkpoint",
                                  "No checkpoint was written; the earlier ones are kept."):
            try:
                with open(tmp, "wb") as f:
                    f.write(encode_snapshot(snap))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return final

    def all(self) -> list[Checkpoint]:
        """Every valid checkpoint, oldest first."""
        out = []
        for path in sorted(self.dir.glob("checkpoint-*.snap")):
            cp = self._cache.get(path)
            if cp is None:
                try:
                    s = decode_snapshot(path.read_bytes())
                except (CorruptRecord, UnsupportedVersion) as exc:
                    log.warning("skipping damaged checkpoint %s: %s", path, exc)
                    self.skipped.append(str(path))
                    continue
                cp = self._cache[path] = Checkpoint(path, s.context, s.position, s.hlc,
                                                    {f: dict(t) for f, t in s.state.items()})
            out.append(cp)
        return out

    def remove(self, cp: Checkpoint) -> None:
        cp.path.unlink(missing_ok=True)
        self._cache.pop(cp.path, None)


class Retention:
    """Checkpoints and a compaction floor that keep every context of the last ``horizon``
    seconds rebuildable (see the module doc)."""

    def __init__(self, replica: Replica, store: CheckpointStore, horizon: float) -> None:
        self.replica = replica
        self.store = store
        self.horizon = horizon
        replica.persistence.retention.append(self.floor)

    def detach(self) -> None:
        floors: list[Callable[[], int | None]] = self.replica.persistence.retention
        if self.floor in floors:
            floors.remove(self.floor)

    async def checkpoint(self) -> Checkpoint:
        """Write a checkpoint of the replica's state now."""
        r = self.replica
        await r.flush()
        store = r.store
        ctx = store.ctx()  # next_seq below is informational: a checkpoint is never recovered from
        snap = Snapshot(r.actor, ctx, r.held.floor(store.position), ctx.max_seq(r.actor) + 1, r.hlc.peek(),
                        store.export(), [], 0, [])
        self.store.save(snap)
        return [cp for cp in self.store.all() if cp.time == snap.hlc][0]

    def _kept(self) -> Checkpoint | None:
        """The checkpoint the log is kept back to: the newest one older than the horizon."""
        cutoff = self.replica.now_ms() - self.horizon * 1000
        older = [cp for cp in self.store.all() if hlc_wall_ms(cp.time) <= cutoff]
        return older[-1] if older else None

    def floor(self) -> int | None:
        """The position compaction must keep records from (0: the whole log)."""
        kept = self._kept()
        if kept is None or kept.position is None:
            return 0  # no checkpoint old enough: keep the whole log
        return kept.position

    def prune(self) -> int:
        """Delete checkpoints older than the kept one; returns how many."""
        kept = self._kept()
        n = 0
        if kept is not None:
            for cp in self.store.all():
                if cp.time < kept.time:
                    self.store.remove(cp)
                    n += 1
        return n

    async def compact(self, log_: Log | None = None) -> int | None:
        """Snapshot, then drop the log records nothing within the horizon needs, from
        ``log_`` (a log the replica does not own) or through ``replica.compact()``."""
        r = self.replica
        if log_ is None:
            pos = await r.compact()
        else:
            await r.catch_up()
            await r.snapshot()
            keep = r.persistence.keep_floor()
            if keep is not None:
                await log_.truncate_before(keep)
            pos = r.position
        self.prune()
        # the base a later compaction keeps once this one is older than the horizon
        await self.checkpoint()
        return pos
