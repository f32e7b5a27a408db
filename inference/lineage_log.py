"""The lineage log: where lineage records go, encoded in batches off the hot path.

:class:`LineageLog` takes records from predictors (:meth:`LineageLog.submit` appends a
reference to a list: nothing is encoded while a prediction waits), and a flush encodes
them in batches (:mod:`crdtsync.inference.record` describes the compact format,
:mod:`crdtsync.inference.encoder` encodes it) and appends them to any :class:`~crdtsync.log.Log`, up to ``rows_per_record`` rows packed back to
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
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from crdtsync._encoding import corrupt
from crdtsync.clock import Context
from crdtsync.errors import CorruptRecord, LineageNotFound, UnsupportedVersion
from crdtsync.log._protocol import Log

from .encoder import FlushEncoder
from .record import VERSION, LineageRecord, PredictorSpec, apply_delta, prediction_id

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


#: predictions freed between two turns of the event loop while their append runs (flush)
_FREE_SLICE = 256


class _Step:
    """An encoded part of a flush: appended in order, kept for the next flush until it is."""

    __slots__ = ("payloads", "records", "specs", "sent")

    def __init__(self, payloads: list[bytes], records: int, specs: int) -> None:
        self.payloads = payloads
        self.records = records
        self.specs = specs
        self.sent = False


class LineageLog:
    """Batched, compact writing of lineage records to a log."""

    def __init__(self, log_: Log, *, batch_size: int = 256, flush_interval: float = 0.05,
                 max_delta_rows: int = 8, rows_per_record: int = 64, records_per_append: int = 4096,
                 owns_log: bool = False) -> None:
        if records_per_append < 1:
            raise ValueError(f"records_per_append must be >= 1, got {records_per_append}")
        self.log = log_
        #: records encoded and appended per step of a flush, at most (see flush)
        self.records_per_append = records_per_append
        self.batch_size = batch_size
        #: lineage rows packed back to back into one log record, at most
        self.rows_per_record = rows_per_record
        self.flush_interval = flush_interval
        self.max_delta_rows = max_delta_rows
        self.owns_log = owns_log
        self.stats = LineageStats()
        self._encoder = FlushEncoder(self.stats, max_delta_rows=max_delta_rows, rows_per_record=rows_per_record)
        self._pending: list[LineageRecord | PendingRecord] = []
        self._specs: list[PredictorSpec] = []
        #: steps encoded by a flush and not appended yet (an append failed), in order
        self._unsent: list[_Step] = []
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
        """Records not appended yet: queued, or encoded by a flush whose append failed."""
        return len(self._pending) + sum(st.records for st in self._unsent if not st.sent)

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

    async def flush(self) -> int:
        """Encode and append every queued record; returns how many were appended.

        The records go in steps of ``records_per_append``: a step is encoded while the
        previous step's append (its fsync) runs, and the step's predictions are let go
        (encoded, they are no longer needed) while its own append runs. Each append
        returns when its records are durable as the log defines it, and the flush
        returns after the last one. An append that fails keeps its step, and the steps
        encoded after it, for the next flush, which appends them first, in order; the
        error is counted and raised."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            records, self._pending = self._pending, []
            self._kick_at = 1 if self._timer is None else self.batch_size
            specs, self._specs = self._specs, []
            if not records and not specs and not self._unsent:
                return 0
            before = self.stats.records
            per = self.records_per_append
            chunks: list[list[LineageRecord | PendingRecord] | None] = [records[i:i + per]
                                                                         for i in range(0, len(records), per)] or [[]]
            del records
            inflight: asyncio.Future[None] | None = None
            k, specs_encoded = 0, False
            try:
                for st in list(self._unsent):  # what an earlier flush could not append, first
                    await self._send(st)
                for k in range(len(chunks)):
                    t0 = time.perf_counter()
                    saved = self._encoder.snapshot()
                    try:
                        st = _Step(self._encoder.encode(chunks[k] or (), specs if k == 0 else ()), len(chunks[k] or ()),
                                   len(specs) if k == 0 else 0)
                    except BaseException:
                        self._encoder.restore(saved)  # (no base of this step reaches the log)
                        chunks[k] = None  # (a record that cannot be encoded: its step is dropped, and raised)
                        raise
                    finally:
                        self.stats.encode_seconds += time.perf_counter() - t0
                    self._unsent.append(st)  # (encoded: from here on the step, not its records, is kept)
                    done, chunks[k] = chunks[k], None
                    specs_encoded = True
                    if inflight is not None:
                        await inflight
                    inflight = asyncio.ensure_future(self._send(st))
                    # this step's predictions are freed in slices while its append runs: the
                    # loop runs the append between slices (its write, then its fsync, in threads)
                    while True:
                        await asyncio.sleep(0)
                        if not done:
                            break
                        del done[-_FREE_SLICE:]
                if inflight is not None:
                    await inflight
            except BaseException as exc:
                # steps not encoded yet are queued again, before what came meanwhile
                self._pending[:0] = [r for c in chunks[k:] if c is not None for r in c]
                if not specs_encoded:
                    self._specs[:0] = specs
                if not isinstance(exc, asyncio.CancelledError) and any(not st.sent for st in self._unsent):
                    self.stats.append_failures += 1
                raise
            self.stats.batches += 1
            if self._pending:  # queued while this flush appended
                self._arm()
            return self.stats.records - before

    async def _send(self, st: _Step) -> None:
        """Append one step (once: a step already appended is skipped) and count it."""
        if not st.sent:
            if st.payloads:
                await self.log.append(st.payloads)
            st.sent = True
            self.stats.records += st.records
            self.stats.specs += st.specs
        if self._unsent and self._unsent[0] is st:
            self._unsent.pop(0)

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
