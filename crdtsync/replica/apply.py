"""Applying log records: decode, admit, join into the store, notify.

The apply path for every record a replica reads (its own and every other replica's):
skip its own records it holds already by their header alone (never decoded again), decode it (undecodable records are quarantined), skip the events whose dots the context
already has (the apply is idempotent by dot), ask :mod:`admission
<crdtsync.replica.admission>` about the rest, join each admitted delta into its table
(sequenced operations are evaluated by the sequencer client instead), learn definitions
and fleet records, tell subscribers, and advance the context by exactly the applied dots.
Batch format 2 records that need no per-event decision are joined column by column
(:meth:`Applier.apply_columns`), without an :class:`~crdtsync.events.Event` per event.

Python's cyclic garbage collector is held off while one record is applied
(:meth:`Applier.apply_record`) and runs, if due, right after it. Decoding a record makes
a few short-lived container objects per event (the unpacked values, and for subscribers
the events and changes); collections triggered in the middle of a record scan them,
promote the ones still referenced to older generations and so bring on full-heap
collections, although nearly all are freed when the record is done. Deferring to record
boundaries lets them die unscanned: applying 60,000 LWW sets of flat lists took 1.0-1.8
µs per event with collections mid-record and 0.6 µs deferred (2.9-3.6 and 2.1 µs with a
subscriber). A record holds at most ``MAX_EVENTS_PER_BATCH`` events, so what waits for
the collector is bounded; a process that turned the collector off keeps it off.
"""

from __future__ import annotations

import bisect
import gc
import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from .. import speedups
from .._encoding import packb
from ..clock import HLC, Dot, hlc_wall_ms
from ..errors import CorruptRecord, FutureTimestamp, IncompatibleState, UnsupportedVersion
from ..events import Batch, Codec, Columns, Event
from ..log._protocol import Position
from ..schema import SCHEMA_FIELD
from ..sequenced import FLEET_FIELD, SequencedOp
from ..types._base import CRDT
from .admission import Admission, HeldEvents
from .definitions import Definitions
from .fleet import Fleet
from .sequencer import SequencerClient
from .stats import ReplicaStats
from .store import Store
from .subscriptions import Change, Subscriptions

__all__ = ["Applier"]

#: fields whose events change how the events after them are judged (never the shortcut)
_DEFINING = frozenset((SCHEMA_FIELD, FLEET_FIELD))

log = logging.getLogger("crdtsync.replica")


class _Here:
    """The type of :data:`HERE`."""


#: ``before=`` default of :meth:`Applier.apply_batch`: the store's position now
HERE = _Here()


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


class Applier:
    """The apply path of one replica."""

    def __init__(self, actor: str, store: Store, admission: Admission, held: HeldEvents,
                 definitions: Definitions, fleet: Fleet, sequencer: SequencerClient,
                 subscriptions: Subscriptions, stats: ReplicaStats, hlc: HLC, codec: Codec,
                 on_applied: Callable[[bool], None]) -> None:
        self._actor = actor
        self._store = store
        self._admission = admission
        self._held = held
        self._definitions = definitions
        self._fleet = fleet
        self._sequencer = sequencer
        self._subs = subscriptions
        self._stats = stats
        self._hlc = hlc
        self._codec = codec
        #: called after events were applied, with whether they came from another replica
        self._on_applied = on_applied
        self._span: Callable[[bytes], tuple[str, int, int] | None] | None = getattr(codec, "span", None)
        #: how a format-2 record of this replica begins, as this build's packer writes it
        #: (a record that begins otherwise is not one of its own, or goes the general way)
        self._own_prefix = b"\x9a\x02" + packb(actor)
        self._decode_record: Callable[[bytes], Batch | Columns] | None = getattr(codec, "decode_record", None)

    def apply_record(self, position: Position, payload: bytes) -> int:
        """Apply the record at ``position``; returns the number of events applied (the
        garbage collector held off meanwhile: see the module docstring)."""
        if not gc.isenabled():
            return self._apply_record(position, payload)
        gc.disable()
        try:
            return self._apply_record(position, payload)
        finally:
            gc.enable()

    def _apply_record(self, position: Position, payload: bytes) -> int:
        if self._held and self._hlc.wall_ms() >= self._held.due:
            self.retry_held()
        if (self._span is not None and type(payload) is bytes and payload.startswith(self._own_prefix)):
            # own records read back: every dot is here already
            span = self._span(payload)
            if (span is not None and span[0] == self._actor
                    and self._store.ctx()._vv.get(self._actor, 0) >= span[1] + span[2] - 1):
                self._stats.records_applied += 1
                return 0
        try:
            # a codec that can hands over batch-format-2 records column by column
            decode = self._decode_record
            rec = decode(payload) if decode is not None else self._codec.decode(payload)
        except (CorruptRecord, UnsupportedVersion) as exc:
            self._admission.quarantine(position, payload, exc)
            return 0
        applied = self.apply_columns(rec) if isinstance(rec, Columns) else self.apply_batch(rec)
        self._stats.records_applied += 1
        return applied

    def apply_batch(self, batch: Batch, before: Position | None | _Here = HERE) -> int:
        """Apply the events of ``batch`` this replica has not seen; returns how many applied.

        A dot enters the context only when its event is applied. A refused event (its
        batch claims another identity than its origin's first, a type or field it may not
        carry, ...) leaves its dot out, so the genuine event with that dot, should a
        forged one have come first, is still applied when it arrives; an event stamped
        too far ahead of this clock is *held* and applied once the clock catches up
        (:meth:`retry_held`), never refused for good. ``before``: the position applied
        before the record carrying ``batch`` (default: this replica's position now).
        """
        ctx = self._store.ctx()
        origin = batch.origin
        have = ctx._vv.get(origin, 0)
        last = batch.last_seq
        if have >= last:
            if origin != self._actor:  # our own events read back are not duplicates
                self._stats.events_duplicate += len(batch)
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
        if dups and origin != self._actor:
            self._stats.events_duplicate += dups
        if not events:
            return 0
        region = batch.meta.get("region", "default")
        role = batch.meta.get("role", "default")
        upto = self._admission.removed.get(origin)
        if upto is not None and events[-1].seq > upto:
            late = sum(1 for ev in events if ev.seq > upto)
            self._stats.reject("removed_replica", late)
            events = [ev for ev in events if ev.seq <= upto]
            prefix = False
            if not events:
                return 0
        batch_reason = self._admission.batch_verdict(origin, region, role)
        if batch_reason is not None:
            self._stats.reject(batch_reason, len(events))
            return 0
        # one clock check for the batch; per event only if something is from the future
        try:
            self._hlc.observe(max(ev.hlc for ev in events))
            future_ok = True
        except FutureTimestamp:
            future_ok = False
        verdicts: dict[tuple[str, str], str | None] = {}
        tables: dict[str, MutableMapping[str, CRDT[Any]]] = {}
        notify = self._subs.active
        changes: list[Change] = []
        applied = 0
        left_out: list[Event] = []  # refused or held: their dots stay out of the context
        for ev in events:
            delta = ev.delta
            if not future_ok and type(delta) is not SequencedOp:
                # (a sequenced operation is evaluated in log order whatever its stamp: holding
                # it would reorder it; its stamp is not taken into this clock)
                try:
                    self._hlc.observe(ev.hlc)
                except FutureTimestamp:
                    self._stats.reject("future_timestamp")
                    self._held.hold(ev, batch.meta, self._store.position if isinstance(before, _Here) else before)
                    left_out.append(ev)
                    continue
            fname = ev.field
            vkey = (fname, delta.TYPE_TAG)
            if vkey in verdicts:
                reason = verdicts[vkey]
            else:
                reason = verdicts[vkey] = self._admission.verdict(fname, delta.TYPE_TAG, region, role)
            if reason is None and fname == FLEET_FIELD and not self._admission.fleet_allowed(ev.key, origin, role):
                reason = "permission"
            if reason is not None:
                self._stats.reject(reason)
                left_out.append(ev)
                continue
            tbl = tables.get(fname)
            if tbl is None:
                tbl = self._store.table(fname, delta.TYPE_TAG)
                tables[fname] = tbl
            cur = tbl.get(ev.key)
            if type(delta) is SequencedOp:
                self._sequencer.apply_op(ev, delta, tbl, cur)
            else:
                try:
                    tbl[ev.key] = delta if cur is None else cur.join(delta)
                except IncompatibleState as exc:
                    self._stats.reject("incompatible_type")
                    log.warning("rejected %s: %s", ev.dot, exc)
                    left_out.append(ev)
                    continue
            applied += 1
            if fname == SCHEMA_FIELD:
                self._definitions.learn(tbl[ev.key].value())
                verdicts.clear()
            elif fname == FLEET_FIELD:
                self._fleet.learn(ev.key, tbl[ev.key], origin)
            elif notify:
                changes.append(Change(fname, ev.key, ev, False))
        if left_out:
            out = {ev.seq for ev in left_out}
            self._store.set_context(ctx.add_all(ev.dot for ev in events if ev.seq not in out))
        elif prefix:
            self._store.set_context(ctx.add_range(origin, first, last))
        else:
            self._store.set_context(ctx.add_all(ev.dot for ev in events))
        self._notify(changes)
        return self._applied(origin, applied)

    def _notify(self, changes: list[Change]) -> None:
        """Offer the changes of the record just applied (state and context updated)."""
        self._subs.notify_all(changes)

    def retry_held(self) -> int:
        """Apply held events whose timestamps this clock now accepts; returns how many.

        Runs with every heartbeat and before applying a new record (the simulated
        cluster calls it every step).
        """
        ready = self._held.take_due(self._hlc.wall_ms())
        applied = 0
        for _, ev, meta, before in ready:
            # one event a batch: held events of one origin need not be contiguous
            applied += self.apply_batch(Batch._trusted(ev.origin, ev.seq, (ev,), meta), before)
        return applied

    def _applied(self, origin: str, applied: int) -> int:
        """Book ``applied`` events of ``origin`` just applied; wake whoever waits on them."""
        self._stats.events_applied += applied
        self._store.changed += applied
        if applied:
            self._on_applied(origin != self._actor)
        return applied

    def apply_columns(self, cols: Columns) -> int:
        """:meth:`_apply_batch` for a columnar record, without an Event per event.

        The same verdicts, counts and context as :meth:`_apply_batch`, which it hands the
        record to whenever the shortcut would not be exact: a
        definition in the record (it changes the verdicts of the events after it), one
        field under two entries (the first event's type decides for a key), a record
        that does not extend the origin's contiguous prefix, or a timestamp from the
        future.
        """
        groups = cols.groups
        if ((len(groups) > 1 and len({g.field for g in groups}) != len(groups))
                or any(g.field in _DEFINING or g.cls is SequencedOp for g in groups)):
            return self.apply_batch(cols.batch())
        ctx = self._store.ctx()
        origin = cols.origin
        first = cols.first_seq
        n = len(cols)
        last = first + n - 1
        have = ctx._vv.get(origin, 0)
        if have >= last:
            if origin != self._actor:
                self._stats.events_duplicate += n
            return 0
        missing = ctx.missing(origin, first, last)
        if len(missing) != 1 or missing[0][1] != last:  # not just a tail of the record is new
            return self.apply_batch(cols.batch())
        skip = missing[0][0] - first
        region = cols.meta.get("region", "default")
        role = cols.meta.get("role", "default")
        adm = self._admission
        if (adm.batch_verdict(origin, region, role) is not None
                or (origin in adm.removed and last > adm.removed[origin])
                or any(adm.verdict(g.field, g.cls.TYPE_TAG, region, role) is not None for g in groups)):
            return self.apply_batch(cols.batch())  # refusals leave dots out, event by event
        top = cols.last if cols.rising else max(cols.hlcs[skip:]) if skip else max(cols.hlcs)
        clock = self._hlc
        if hlc_wall_ms(top) - clock._clock() > clock.max_drift_ms:
            return self.apply_batch(cols.batch())  # per-event timestamp verdicts
        try:
            clock.observe(top)
        except FutureTimestamp:  # the wall clock stepped back just now
            return self.apply_batch(cols.batch())
        if skip and origin != self._actor:
            self._stats.events_duplicate += skip
        applied = 0
        refused_seqs: set[int] = set()
        subs = self._subs
        notified: list[tuple[Any, int, list[int]]] = []  # (group, first index, refused) to notify
        for g in groups:
            pos = g.positions
            start = skip if pos is None else bisect.bisect_left(pos, skip)
            count = len(g.keys) - start
            if count <= 0:
                continue
            fname = g.field
            tag = g.cls.TYPE_TAG
            tbl = self._store.table(fname, tag)
            if g.cols is not None:
                done, refused = g.cls._join_columns(tbl, g.keys, g.cols, start)
            else:
                done, refused = _join_each(tbl, g.keys, g.deltas, start)  # type: ignore[arg-type]
            applied += done
            if subs.active and subs.wants(fname):
                notified.append((g, start, refused))
            for i in refused:
                self._stats.reject("incompatible_type")
                seq = first + (i if pos is None else pos[i])
                refused_seqs.add(seq)
                log.warning("rejected %s: cannot join %s into the state held at %s/%s",
                            Dot(origin, seq), g.cls.__name__, fname, g.keys[i])
        if refused_seqs:  # refused dots stay out of the context (see _apply_batch)
            self._store.set_context(ctx.add_all(Dot(origin, q) for q in range(first + skip, last + 1) if q not in refused_seqs))
        else:
            self._store.set_context(ctx.add_range(origin, first, last))
        if notified:
            self._notify(_changes(cols, notified))
        return self._applied(origin, applied)


def _changes(cols: Columns, notified: list[tuple[Any, int, list[int]]]) -> list[Change]:
    """The changes of a columnar record's applied events (each group from its first new
    index, without its refused events), in the record's event order. The common record
    (one field, no event refused) gets its events and changes built together, a column at
    a time (``_hot.one_field_changes``, in C when compiled); any other takes the record's
    own events (:meth:`~crdtsync.events.Columns.batch`, built once per record)."""
    if len(notified) == 1 and not notified[0][2] and notified[0][0].positions is None:
        g, start, _ = notified[0]
        changes: list[Change] = speedups.hot.one_field_changes(
            Change, Event, cols.origin, cols.first_seq, cols.hlcs, g.field, g.keys, g.delta_list(), g.field_version,
            start)
        return changes
    events = cols.batch().events
    new = tuple.__new__
    out: list[tuple[int, Change]] = []
    for g, start, refused in notified:
        skip = set(refused)
        pos = g.positions
        for j in range(start, len(g.keys)):
            if j in skip:
                continue
            i = j if pos is None else pos[j]
            ev = events[i]
            out.append((i, new(Change, (ev.field, ev.key, ev, False))))
    if len(notified) > 1:
        out.sort(key=lambda p: p[0])
    return [c for _, c in out]
