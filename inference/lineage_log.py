"""The lineage log: where lineage records go, encoded in batches off the hot path.

:class:`LineageLog` takes records from predictors (:meth:`LineageLog.submit` appends a
reference to a list: nothing is encoded while a prediction waits), and a flush encodes
them in batches (:mod:`crdtsync.inference.record` describes the compact format) and
appends them to any :class:`~crdtsync.log.Log`, up to ``rows_per_record`` rows packed back to
back in one log record (a log record costs more than a row: framing, a checksum, an index
entry; a damaged one loses its rows, which the reader counts): a :class:`~crdtsync.log.LocalLog` by
default (``lineage/`` in a replica's data directory), a Kafka topic's log when the replica
is on Kafka. Flushes run in the background (after ``batch_size`` records or
``flush_interval`` seconds) and on :meth:`flush`/:meth:`close`; a flush whose append fails
keeps its records for the next one, counts the failure and logs it.

:class:`LineageReader` reads a lineage log back and finds records by prediction id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import msgpack

from crdtsync._encoding import corrupt, pack_small
from crdtsync.clock import Context
from crdtsync.errors import CorruptRecord, LineageNotFound, UnsupportedVersion
from crdtsync.log._protocol import Log

from .record import VERSION, LineageRecord, PredictorSpec, apply_delta, context_delta, prediction_id

__all__ = ["LineageLog", "LineageReader", "LineageStats", "PendingRecord", "open_lineage_log"]

log = logging.getLogger("crdtsync.inference")


class PendingRecord(Protocol):
    """A lineage record not built yet (a predictor's
    :class:`~crdtsync.inference.Prediction`): what the encoder reads of a
    :class:`LineageRecord`, and :meth:`build` for the record itself (the same each time).
    A kind of pending record may also have a static ``digests_of(records)`` returning
    their input and output digests as two lists, computed in bulk: a flush of records all
    of that kind uses it."""

    time: int
    key: str
    context: Context
    strong_positions: Mapping[str, Any]
    staleness_ms: float | None
    batch: tuple[int, int, int] | None

    @property
    def spec(self) -> PredictorSpec | None: ...
    @property
    def replica(self) -> str: ...
    @property
    def input_digest(self) -> bytes: ...
    @property
    def output_digest(self) -> bytes: ...
    def build(self) -> LineageRecord: ...


@dataclass
class LineageStats:
    records: int = 0
    bases: int = 0
    specs: int = 0
    batches: int = 0
    #: bytes of prediction records (bases and specs excluded)
    record_bytes: int = 0
    encode_seconds: float = 0.0
    append_failures: int = 0


class _Base:
    __slots__ = ("base_id", "rows", "index", "ctx")

    def __init__(self, base_id: int, ctx: Context) -> None:
        self.base_id = base_id
        self.ctx = ctx
        self.rows = ctx.to_payload()
        self.index = {row[0]: i for i, row in enumerate(self.rows)}


class LineageLog:
    """Batched, compact writing of lineage records to a log."""

    def __init__(self, log_: Log, *, batch_size: int = 256, flush_interval: float = 0.05,
                 max_delta_rows: int = 8, rows_per_record: int = 64, owns_log: bool = False) -> None:
        if rows_per_record < 1:
            raise ValueError(f"rows_per_record must be >= 1, got {rows_per_record}")
        self.log = log_
        self.batch_size = batch_size
        #: lineage rows packed back to back into one log record, at most
        self.rows_per_record = rows_per_record
        self.flush_interval = flush_interval
        self.max_delta_rows = max_delta_rows
        self.owns_log = owns_log
        self.stats = LineageStats()
        self._pending: list[LineageRecord | PendingRecord] = []
        self._specs: list[PredictorSpec] = []
        self._bases: dict[str, _Base] = {}
        self._last: tuple[Context, str, list[Any]] | None = None  # (ctx, actor, delta) of the last record
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[int] | None = None
        self._lock: asyncio.Lock | None = None
        #: the queue length at which submit() arms a flush (see _arm)
        self._kick_at = 1
        self.closed = False

    # -- hot path ---------------------------------------------------------------------
    def register(self, spec: PredictorSpec) -> None:
        """Log ``spec`` with the next flush (before any record that names it)."""
        self._specs.append(spec)

    def submit(self, record: LineageRecord | PendingRecord) -> None:
        """Queue ``record``; it is encoded and appended by a flush (background or explicit).
        A :class:`PendingRecord` (what a predictor hands over) is digested then, in the
        flush, off the prediction's path."""
        pending = self._pending
        pending.append(record)
        if len(pending) >= self._kick_at:  # (one comparison while a flush is already due)
            self._arm()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _arm(self) -> None:
        """Make sure a flush is coming for what is queued: now when ``batch_size`` records
        wait, else after ``flush_interval``; ``_kick_at`` is the queue length that needs
        this again (a flush that takes the queue, or ends with records queued, re-arms)."""
        if len(self._pending) >= self.batch_size:
            if self._schedule(0.0):
                self._kick_at = sys.maxsize
        elif self._timer is None:
            if self._schedule(self.flush_interval):
                self._kick_at = self.batch_size
        else:
            self._kick_at = self.batch_size

    def _schedule(self, delay: float) -> bool:
        """Schedule a background flush in ``delay`` seconds (0: a task now, unless one is
        running); False when there is no running loop (a sync caller: flush() writes them)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if delay <= 0:
            task = self._task
            if task is None or task.done() or task is asyncio.current_task():
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._task = loop.create_task(self._background())
            return True
        self._timer = loop.call_later(delay, self._kick)
        return True

    def _kick(self) -> None:
        self._timer = None
        self._schedule(0.0)

    async def _background(self) -> int:
        try:
            return await self.flush()
        except Exception as exc:  # kept pending for the next flush; counted in flush()
            log.warning("lineage flush failed (records kept for the next flush): %s", exc)
            return 0

    # -- encoding ---------------------------------------------------------------------
    def _rows(self, records: Sequence[LineageRecord | PendingRecord], specs: list[PredictorSpec]) -> list[Any]:
        """The lineage rows of a flush, in order: spec and base rows packed (bytes),
        prediction rows as lists (packed by :meth:`_payloads`, many per packer call)."""
        out: list[Any] = [pack_small(s.encode_row()) for s in specs]
        if not records:
            return out
        dins, douts = _digests(records)
        bases = self._bases
        max_rows = self.max_delta_rows
        last = self._last
        spec_of: PredictorSpec | None = None
        sid, strong_fields = 0, cast("tuple[str, ...]", ())
        for rec, din, dout in zip(records, dins, douts):  # (a PendingRecord has every attribute read here)
            spec = rec.spec
            if spec is None:
                raise ValueError("a lineage record needs its predictor spec")
            if spec is not spec_of:  # (one predictor's records follow each other)
                spec_of, sid, strong_fields = spec, spec.spec_id, spec.strong
            ctx, actor = rec.context, spec.actor
            delta: list[Any] | None
            if last is not None and last[0] is ctx and last[1] == actor:
                base, delta = bases[actor], last[2]
            else:
                found = bases.get(actor)
                delta = context_delta(found.rows, found.index, ctx) if found is not None else None
                if found is None or delta is None or len(delta) > max_rows:
                    base = bases[actor] = _Base(secrets.randbits(32), ctx)
                    out.append(pack_small([VERSION, "B", base.base_id, actor, base.rows]))
                    self.stats.bases += 1
                    delta = []
                else:
                    base = found
                last = self._last = (ctx, actor, delta)
            strong = [rec.strong_positions.get(f) for f in strong_fields] if strong_fields else _NONE
            stale = rec.staleness_ms
            batch = rec.batch
            out.append([VERSION, "P", sid, base.base_id, rec.time, rec.key, delta, strong, din, dout,
                        None if stale is None else int(stale), None if batch is None else list(batch)])
        return out

    def _payloads(self, rows: list[Any]) -> list[bytes]:
        """Log records of ``rows`` (up to ``rows_per_record`` each, back to back); the
        prediction rows of a record are packed by one packer call, as one array whose
        header is dropped (msgpack packs an array as its header, then its items)."""
        n = self.rows_per_record
        pack = msgpack.Packer(use_bin_type=True, use_single_float=False).pack  # pack_small's settings
        payloads = []
        record_bytes = 0
        for i in range(0, len(rows), n):
            parts: list[bytes] = []
            run: list[list[Any]] = []
            for row in rows[i:i + n]:
                if type(row) is bytes:
                    if run:
                        parts.append(_items(pack(run), len(run)))
                        record_bytes += len(parts[-1])
                        run = []
                    parts.append(row)
                else:
                    run.append(row)
            if run:
                parts.append(_items(pack(run), len(run)))
                record_bytes += len(parts[-1])
            payloads.append(parts[0] if len(parts) == 1 else b"".join(parts))
        self.stats.record_bytes += record_bytes
        return payloads

    def encode_for_size(self, record: LineageRecord) -> int:
        """The encoded size of ``record`` now (for measurements; changes no state except
        logging a base when one is due, as a flush would)."""
        return len(pack_small(self._rows([record], [])[-1]))

    async def flush(self) -> int:
        """Encode and append every queued record; returns how many were appended."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            records, self._pending = self._pending, []
            self._kick_at = 1 if self._timer is None else self.batch_size
            specs, self._specs = self._specs, []
            if not records and not specs:
                return 0
            t0 = time.perf_counter()
            saved = (dict(self._bases), self._last, self.stats.bases, self.stats.record_bytes)
            payloads = self._payloads(self._rows(records, specs))
            self.stats.encode_seconds += time.perf_counter() - t0
            try:
                await self.log.append(payloads)
            except BaseException:
                # nothing was appended: put everything back and forget the bases we made
                self._pending[:0] = records
                self._specs[:0] = specs
                self._bases, self._last, self.stats.bases, self.stats.record_bytes = saved
                self.stats.append_failures += 1
                raise
            self.stats.records += len(records)
            self.stats.specs += len(specs)
            self.stats.batches += 1
            if self._pending:  # queued while this flush appended
                self._arm()
            return len(records)

    async def close(self) -> None:
        """Flush what is queued, stop the background flushes, close an owned log."""
        if self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and self._task.get_loop() is not asyncio.get_running_loop():
            raise RuntimeError(
                "this lineage log was used on another event loop: close it (and its replica) on the "
                "loop that used it, e.g. inside the same asyncio.run()"
            )
        if self._task is not None and not self._task.done():
            await self._task
        try:
            await self.flush()
        finally:
            self.closed = True
            if self.owns_log:
                await self.log.close()


async def open_lineage_log(path: str | Path, **kwargs: Any) -> LineageLog:
    """A lineage log on a :class:`~crdtsync.log.LocalLog` in ``path`` (closed with it)."""
    from crdtsync.log.local import LocalLog

    local = await LocalLog.open(Path(path))
    return LineageLog(local, owns_log=True, **kwargs)


#: the strong positions of a spec without strong fields (packed, never changed)
_NONE: list[Any] = []


def _items(packed: bytes, n: int) -> bytes:
    """The items of the msgpack array ``packed`` of ``n`` items, back to back."""
    return packed[1 if n <= 15 else 3 if n <= 0xFFFF else 5:]


def _digests(records: Sequence[LineageRecord | PendingRecord]) -> tuple[list[bytes], list[bytes]]:
    """Input and output digests of ``records``: in bulk when they are all of one kind that
    computes them so (``digests_of``, a predictor's pending records), else one by one."""
    kinds = set(map(type, records))
    bulk = getattr(next(iter(kinds)), "digests_of", None) if len(kinds) == 1 else None
    if bulk is not None:
        return bulk(records)  # type: ignore[no-any-return]
    return [r.input_digest for r in records], [r.output_digest for r in records]


def _rows_of(payload: bytes) -> Iterator[Any]:
    """The lineage rows of one log record: msgpack objects back to back (one or more)."""
    up = msgpack.Unpacker(None, raw=False, strict_map_key=False, use_list=True,
                          max_buffer_size=max(len(payload), 1))
    up.feed(payload)
    try:
        yield from up
    except (ValueError, TypeError, msgpack.FormatError, msgpack.StackError, RecursionError,
            OverflowError, MemoryError) as exc:
        corrupt("lineage record", f"not valid msgpack ({type(exc).__name__}: {exc})")


class LineageReader:
    """Reads a lineage log and finds records by prediction id."""

    def __init__(self, log_: Log) -> None:
        self.log = log_
        self.specs: dict[int, PredictorSpec] = {}
        self._bases: dict[tuple[str, int], list[Any]] = {}
        self._rows: dict[str, tuple[PredictorSpec, list[Any], list[Any]]] = {}
        self._order: list[str] = []
        self._batches: dict[int, dict[int, str]] = {}
        self._after: int | None = None
        #: positions of records that could not be decoded
        self.corrupt: list[int] = []

    async def refresh(self) -> int:
        """Read what was appended since the last call; returns how many predictions."""
        from crdtsync.log._protocol import read_range

        before = len(self._rows)
        async for entry in read_range(self.log, self._after, await self.log.end()):
            self._after = entry.position
            try:
                for row in _rows_of(entry.payload):
                    self._take(row)
            except (CorruptRecord, UnsupportedVersion) as exc:
                self.corrupt.append(entry.position)
                log.warning("lineage log: skipping the rest of the record at %d: %s", entry.position, exc)
        return len(self._rows) - before

    def _take(self, row: Any) -> None:
        if not (isinstance(row, list) and len(row) >= 2 and isinstance(row[0], int)):
            corrupt("lineage record", "expected [version, kind, ...]")
        if row[0] > VERSION:
            raise UnsupportedVersion(f"lineage record version {row[0]} is newer than this build understands")
        kind = row[1]
        if kind == "S":
            spec = PredictorSpec.decode_row(row)
            self.specs[spec.spec_id] = spec
        elif kind == "B" and len(row) == 5:
            _, _, bid, actor, rows = row
            self._bases[(str(actor), int(bid))] = Context.from_payload(rows, what="lineage base").to_payload()
        elif kind == "P" and len(row) == 12:
            named = self.specs.get(row[2])
            if named is None:
                corrupt("lineage record", f"names spec {row[2]} that the log does not hold")
            spec = named
            base = self._bases.get((spec.actor, row[3]))
            if base is None:
                corrupt("lineage record", f"names base context {row[3]} that the log does not hold")
            if not isinstance(row[4], int):
                corrupt("lineage record", "bad time")
            pid = prediction_id(spec.actor, row[4])
            if pid not in self._rows:
                self._order.append(pid)
            self._rows[pid] = (spec, base, row)
            b = row[11]
            if b is not None:
                if not (isinstance(b, list) and len(b) == 3 and all(isinstance(x, int) for x in b)):
                    corrupt("lineage record", "bad batch")
                self._batches.setdefault(b[0], {})[b[1]] = pid
        else:
            corrupt("lineage record", f"unknown kind {kind!r}")

    def ids(self) -> list[str]:
        """Prediction ids in log order."""
        return list(self._order)

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, pid: str) -> LineageRecord:
        """The record of prediction ``pid`` (:class:`LineageNotFound` if absent)."""
        hit = self._rows.get(pid)
        if hit is None:
            raise LineageNotFound(f"no lineage record for prediction {pid!r} in this lineage log "
                                  f"({len(self._rows)} predictions)")
        spec, base, row = hit
        _, _, _, _, hlc, key, delta, strong, din, dout, stale, batch = row
        if not (isinstance(key, str) and isinstance(din, bytes) and isinstance(dout, bytes)
                and isinstance(strong, list) and len(strong) == len(spec.strong)):
            corrupt("lineage record", f"malformed prediction {pid}")
        ctx = apply_delta(base, delta)
        return LineageRecord(pid, hlc, spec.actor, spec.model, spec.features, spec.flags, key, ctx,
                             dict(zip(spec.strong, strong)), din, dout, dict(zip(spec.fields, spec.read_levels)),
                             None if stale is None else float(stale), spec,
                             tuple(batch) if batch is not None else None)

    def batch(self, batch_id: int) -> dict[int, str]:
        """Row -> prediction id of the records of one model call on several rows."""
        return dict(self._batches.get(batch_id, {}))
