"""Encoding a lineage flush: records in, log record payloads out.

:class:`FlushEncoder` turns the records of one flush (and the specs registered since the
last one) into log record payloads in the compact format of
:mod:`crdtsync.inference.record`: spec rows, a base context row whenever a prediction's
context has drifted too far from its replica's base, then the prediction rows, at most
``rows_per_record`` rows per payload, back to back. It keeps the bases (they outlive a
flush: later predictions are encoded against them).

Predictions come in **runs**: consecutive records of one predictor spec that read one
context object (a burst of predictions between two replica writes). A run's prediction
rows share their first four items and their delta, which are packed once; :func:`pack_run`
packs the rest record by record, and is the reference of ``_clineage.pack_predictions``,
which packs the same bytes in C and stops at a record it was not written for (that one
is packed here). The digests are taken in bulk first (:mod:`crdtsync.inference.digests`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from crdtsync import speedups
from crdtsync._encoding import pack_small
from crdtsync.clock import Context

from .record import VERSION, LineageRecord, PredictorSpec, context_delta

if TYPE_CHECKING:
    from .lineage_log import LineageStats, PendingRecord

__all__ = ["FlushEncoder", "Run", "pack_run"]

#: (spec, context, head, packed delta, strong fields, base id, delta): what the prediction
#: rows of a run share (head: the packed array header and the row's first four items;
#: the C packer reads the first five)
Run = tuple[PredictorSpec, Context, bytes, bytes, tuple[str, ...], int, list[Any]]


class _Base:
    """A replica's base context: what its predictions' contexts are encoded against."""

    __slots__ = ("base_id", "rows", "index", "ctx")

    def __init__(self, base_id: int, ctx: Context) -> None:
        self.base_id = base_id
        self.ctx = ctx
        self.rows = ctx.to_payload()
        self.index = {row[0]: i for i, row in enumerate(self.rows)}


def _items(packed: bytes, n: int) -> bytes:
    """The items of the msgpack array ``packed`` of ``n`` items, back to back."""
    return packed[1 if n <= 15 else 3 if n <= 0xFFFF else 5:]


def pack_run(records: Sequence[Any], start: int, stop: int, run: Run, dins: Sequence[Any],
             douts: Sequence[Any]) -> tuple[int, bytes]:
    """``(end, rows)``: the packed prediction rows of ``records[start:end]``, back to back,
    ``end <= stop`` being the first record not of ``run`` (another spec or context
    object)."""
    spec, ctx, _, _, strong_fields, base_id, delta = run
    sid = spec.spec_id
    rows: list[list[Any]] = []
    end = start
    while end < stop:
        rec = records[end]
        if rec.spec is not spec or rec.context is not ctx:
            break
        strong = [rec.strong_positions.get(f) for f in strong_fields] if strong_fields else []
        stale = rec.staleness_ms
        batch = rec.batch
        rows.append([VERSION, "P", sid, base_id, rec.time, rec.key, delta, strong, dins[end], douts[end],
                     None if stale is None else int(stale), None if batch is None else list(batch)])
        end += 1
    if not rows:
        return end, b""
    pack = msgpack.Packer(use_bin_type=True, use_single_float=False).pack  # pack_small's settings
    return end, _items(pack(rows), len(rows))  # (one packer call: msgpack packs an array as its items)


class _Payloads:
    """Rows into log record payloads of at most ``per`` rows."""

    __slots__ = ("per", "parts", "count", "done")

    def __init__(self, per: int) -> None:
        self.per = per
        self.parts: list[bytes] = []
        self.count = 0
        self.done: list[bytes] = []

    @property
    def room(self) -> int:
        return self.per - self.count

    def add(self, packed: bytes, rows: int) -> None:
        self.parts.append(packed)
        self.count += rows
        if self.count >= self.per:
            self._close()

    def _close(self) -> None:
        parts = self.parts
        self.done.append(parts[0] if len(parts) == 1 else b"".join(parts))
        self.parts, self.count = [], 0

    def finish(self) -> list[bytes]:
        if self.parts:
            self._close()
        return self.done


class FlushEncoder:
    """Encodes the records of flushes against the bases it keeps (see the module doc)."""

    def __init__(self, stats: LineageStats, *, max_delta_rows: int, rows_per_record: int) -> None:
        if rows_per_record < 1:
            raise ValueError(f"rows_per_record must be >= 1, got {rows_per_record}")
        self.stats = stats
        self.max_delta_rows = max_delta_rows
        self.rows_per_record = rows_per_record
        self.bases: dict[str, _Base] = {}
        #: (context, actor, delta, packed delta) of the last record encoded
        self.last: tuple[Context, str, list[Any], bytes] | None = None
        self._heads: dict[tuple[int, int], bytes] = {}

    def snapshot(self) -> tuple[Any, ...]:
        """What :meth:`restore` puts back (the state before an encoding whose append failed)."""
        return dict(self.bases), self.last, self.stats.bases, self.stats.record_bytes

    def restore(self, saved: tuple[Any, ...]) -> None:
        bases, self.last, self.stats.bases, self.stats.record_bytes = saved
        self.bases = dict(bases)

    def encode(self, records: Sequence[LineageRecord | PendingRecord], specs: Sequence[PredictorSpec]) -> list[bytes]:
        """The payloads of a flush: ``specs``' rows, then ``records``' (bases as needed)."""
        from .lineage_log import _digests

        out = _Payloads(self.rows_per_record)
        for s in specs:
            out.add(pack_small(s.encode_row()), 1)
        if not records:
            return out.finish()
        recs = records if type(records) is list else list(records)
        dins, douts = _digests(recs)
        c = speedups.clineage
        n, i = len(recs), 0
        record_bytes = 0
        while i < n:
            run = self._run_of(recs[i], out)
            stop = min(n, i + out.room)
            if c is None:
                end, blob = pack_run(recs, i, stop, run, dins, douts)
            else:
                end, blob = c.pack_predictions(recs, i, stop, run, dins, douts)
                if end == i:  # a record the C code does not pack: this one here
                    end, blob = pack_run(recs, i, i + 1, run, dins, douts)
            out.add(blob, end - i)
            record_bytes += len(blob)
            i = end
        self.stats.record_bytes += record_bytes
        return out.finish()

    def _run_of(self, rec: LineageRecord | PendingRecord, out: _Payloads) -> Run:
        """The run ``rec`` starts: its base (a new one logged into ``out`` when the context
        drifted too far from the current one) and delta."""
        spec = rec.spec
        if spec is None:
            raise ValueError("a lineage record needs its predictor spec")
        ctx, actor = rec.context, spec.actor
        last = self.last
        delta: list[Any]
        if last is not None and last[0] is ctx and last[1] == actor:
            base, delta, packed = self.bases[actor], last[2], last[3]
        else:
            found = self.bases.get(actor)
            drift = context_delta(found.rows, found.index, ctx) if found is not None else None
            if found is None or drift is None or len(drift) > self.max_delta_rows:
                base = self.bases[actor] = _Base(secrets.randbits(32), ctx)
                out.add(pack_small([VERSION, "B", base.base_id, actor, base.rows]), 1)
                self.stats.bases += 1
                delta = []
            else:
                base, delta = found, drift
            packed = pack_small(delta)
            self.last = (ctx, actor, delta, packed)
        head = self._heads.get((spec.spec_id, base.base_id))
        if head is None:
            if len(self._heads) >= 1024:
                self._heads.clear()
            # a 12-item array header, then version, kind, spec id, base id
            head = self._heads[(spec.spec_id, base.base_id)] = b"\x9c" + _items(
                pack_small([VERSION, "P", spec.spec_id, base.base_id]), 4)
        return spec, ctx, head, packed, spec.strong, base.base_id, delta
