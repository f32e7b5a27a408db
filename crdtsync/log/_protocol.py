"""The ``Log`` protocol every log backend implements, and what its methods promise.

A log is an append-only sequence of opaque records (bytes). The event-batch codec sits
above this layer; a log never looks inside a payload. ``MemoryLog``, ``LocalLog`` and
``KafkaLog`` implement the same five methods and pass the same conformance suite
(``tests/log/test_conformance.py``).

A single-stream log (``MemoryLog``, ``LocalLog``) uses int positions, strictly increasing
in log order, and a position returned by ``append`` or carried by a :class:`LogEntry`
resumes a read exactly there. They need not be contiguous: ``MemoryLog`` counts records
(0, 1, 2, ...), ``LocalLog`` uses byte offsets.

A partitioned log (``KafkaLog``) has no single order: its position is a
:class:`VectorPosition`, one offset per partition. Consumers treat a position as opaque:
they store it (:func:`position_to_wire`), resume a read from it, and ask the functions
here the questions they need answered, which work for both kinds:

* :func:`covers` ``(applied, target)``: has the record at ``target`` been read by a reader
  that has read up to the record at ``applied``? (int: ``applied >= target``);
* :func:`reached` ``(position, end)``: is the record at ``position`` at or past ``end``,
  a value of :meth:`Log.end`? (int: ``position >= end``);
* :func:`earliest` ``(positions)``: a position that covers no more than any of them
  (int: ``min``), where a snapshot may resume so that none of their records is skipped.

Consumers never do arithmetic on positions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import CorruptRecord, LogClosed, RecordTooLarge

__all__ = [
    "Log", "LogClosed", "LogEntry", "Position", "RecordTooLarge", "VectorPosition", "check_records",
    "covers", "earliest", "format_position", "stream_of", "position_from_wire", "position_progress", "position_to_wire",
    "reached",
]


class VectorPosition:
    """A position in a partitioned log: one offset per partition (immutable, hashable).

    ``offsets[p]`` is the next offset a reader at this position reads in partition ``p``.
    A *record* position (``partition`` set) names the record at ``offsets[partition]``, and
    says the reader that yielded it had read everything below ``offsets`` before it; a
    *cursor* (``partition`` None, as :meth:`Log.end` returns) names no record. Reading from
    either yields every record not below ``offsets`` (for a record position: the record
    itself first, as with int positions).

    ``generation`` counts the broker data losses the log detected (see
    ``crdtsync.adapters.kafka``): offsets of a lost generation mean nothing in the next
    one, so a position of a later generation covers every one of an earlier generation and
    none of the same records are skipped after a loss (they are read again; applying is
    idempotent by dot).

    Two record positions are equal when they name the same record (generation, partition,
    offset); two cursors when their offsets are equal.
    """

    __slots__ = ("generation", "offsets", "partition")

    def __init__(self, offsets: Sequence[int], partition: int | None = None, generation: int = 0) -> None:
        offs = tuple(int(o) for o in offsets)
        if not offs or any(o < 0 for o in offs):
            raise ValueError(f"a VectorPosition needs one offset >= 0 per partition, got {offsets!r}")
        if partition is not None and not 0 <= partition < len(offs):
            raise ValueError(f"partition {partition} is outside 0..{len(offs) - 1}")
        if generation < 0:
            raise ValueError(f"generation must be >= 0, got {generation}")
        self.offsets: tuple[int, ...] = offs
        self.partition: int | None = partition
        self.generation = generation

    @property
    def offset(self) -> int | None:
        """The offset of the record this position names (None for a cursor)."""
        return None if self.partition is None else self.offsets[self.partition]

    def after(self) -> VectorPosition:
        """The cursor just past this record (a cursor is its own ``after``)."""
        if self.partition is None:
            return self
        offs = list(self.offsets)
        offs[self.partition] += 1
        return VectorPosition(offs, None, self.generation)

    def covers(self, target: VectorPosition) -> bool:
        """Whether ``target``'s record (or every record below a cursor ``target``) has been
        read by a reader at this position (this record included)."""
        if self.generation != target.generation:
            return self.generation > target.generation
        if len(self.offsets) != len(target.offsets):
            raise ValueError(f"positions of {len(self.offsets)} and {len(target.offsets)} partitions")
        done = self.after().offsets
        if target.partition is not None:
            return target.offsets[target.partition] < done[target.partition]
        return all(t <= d for t, d in zip(target.offsets, done))

    def reached(self, end: VectorPosition) -> bool:
        """Whether this record is at or past the cursor ``end`` (appended after it)."""
        if self.generation != end.generation:
            return self.generation > end.generation
        if self.partition is None:
            return all(o >= e for o, e in zip(self.offsets, end.offsets))
        return self.offsets[self.partition] >= end.offsets[self.partition]

    def _key(self) -> tuple[Any, ...]:
        if self.partition is None:
            return (self.generation, None, self.offsets)
        return (self.generation, self.partition, self.offsets[self.partition])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorPosition):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        at = "" if self.partition is None else f", partition={self.partition}"
        gen = f", generation={self.generation}" if self.generation else ""
        return f"VectorPosition({list(self.offsets)}{at}{gen})"


#: a log position: an int for a single-stream log, a :class:`VectorPosition` for a partitioned one
Position = int | VectorPosition


def covers(applied: Position | None, target: Position) -> bool:
    """Whether a reader that has read the record at ``applied`` has read ``target``'s."""
    if applied is None:
        return False
    if type(applied) is int and type(target) is int:
        return applied >= target
    if isinstance(applied, VectorPosition) and isinstance(target, VectorPosition):
        return applied.covers(target)
    raise TypeError(f"cannot compare positions {applied!r} and {target!r} (different kinds of log)")


def reached(position: Position, end: Position) -> bool:
    """Whether the record at ``position`` is at or past ``end`` (a value of ``Log.end()``)."""
    if type(position) is int and type(end) is int:
        return position >= end
    if isinstance(position, VectorPosition) and isinstance(end, VectorPosition):
        return position.reached(end)
    raise TypeError(f"cannot compare positions {position!r} and {end!r} (different kinds of log)")


def earliest(positions: Sequence[Position]) -> Position:
    """A position no later than any of ``positions`` (resuming there skips none of their
    records): ``min`` for ints, the per-partition minimum (a cursor) for vectors."""
    if not positions:
        raise ValueError("earliest() of no positions")
    if all(type(p) is int for p in positions):
        return min(positions)  # type: ignore[type-var]
    vecs = [p for p in positions if isinstance(p, VectorPosition)]
    if len(vecs) != len(positions):
        raise TypeError("cannot mix int and vector positions")
    gen = min(v.generation for v in vecs)
    same = [v for v in vecs if v.generation == gen]
    # a record position's record itself must be re-read: use the offsets before it
    return VectorPosition([min(col) for col in zip(*(v.offsets for v in same))], None, gen)


def position_to_wire(position: Position | None) -> Any:
    """A msgpack-able form of a position (snapshots): an int stays an int."""
    if position is None or type(position) is int:
        return position
    if isinstance(position, VectorPosition):
        return [list(position.offsets), position.partition, position.generation]
    raise TypeError(f"not a log position: {position!r}")


def position_from_wire(obj: Any, what: str = "position") -> Position | None:
    """The inverse of :func:`position_to_wire`; a malformed value is :class:`CorruptRecord`."""
    if obj is None or (type(obj) is int and obj >= 0):
        return obj  # type: ignore[no-any-return]
    try:
        offsets, partition, generation = obj
        if not (isinstance(offsets, list) and all(type(o) is int for o in offsets)):
            raise TypeError("offsets must be ints")
        if not (partition is None or type(partition) is int) or type(generation) is not int:
            raise TypeError("partition and generation must be ints")
        return VectorPosition(offsets, partition, generation)
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(f"{what}: not a log position ({exc})") from None


def position_progress(position: Position) -> int:
    """A number that grows as a reader advances (progress reports): the int position, or
    the sum of a vector's offsets."""
    return position if type(position) is int else sum(position.offsets)  # type: ignore[union-attr]


def format_position(position: Position) -> str:
    """A file-name-safe text of a position that sorts in log order within one partition."""
    if type(position) is int:
        return f"{position:020d}"
    assert isinstance(position, VectorPosition)
    if position.partition is None:
        return f"g{position.generation}-" + "-".join(f"{o:020d}" for o in position.offsets)
    return f"g{position.generation}-p{position.partition}-{position.offsets[position.partition]:020d}"


class LogEntry(NamedTuple):
    """One record as a reader sees it: where it is in the log, and its bytes."""

    position: Position
    payload: bytes


@runtime_checkable
class Log(Protocol):
    """An append-only log of opaque records.

    * ``append(records)`` appends a batch atomically (all records or none, in order,
      adjacent) and returns the position of the first; it returns once the record is as
      durable as the backend promises (``LocalLog``: its fsync policy; Kafka: ``acks``).
      An empty batch appends nothing and returns ``end()``.
    * ``read(from_position, follow=...)`` yields entries with ``position >=
      from_position`` in log order. Records dropped by ``truncate_before`` are skipped, so
      ``read(0)`` always means "everything still kept". With ``follow=True`` it keeps
      waiting for new records until the log is closed or the consumer stops iterating
      (use ``contextlib.aclosing`` to release its resources promptly).
    * ``end()`` is the position the next append will get (every record below it is
      readable).
    * ``close()`` ends followers and releases resources; later calls raise
      :class:`LogClosed`. Closing twice is harmless.
    * ``truncate_before(position)`` may drop records below ``position`` (compaction
      behind a snapshot). Backends may keep more than asked (``LocalLog`` deletes whole
      segments only) but never drop a record at or above ``position``.
    """

    async def append(self, records: Sequence[bytes]) -> Any: ...

    def read(self, from_position: Any = 0, *, follow: bool = False) -> AsyncIterator[LogEntry]: ...

    async def end(self) -> Any: ...

    async def close(self) -> None: ...

    async def truncate_before(self, position: Any) -> None: ...


async def read_range(log: Log, after: Position | None, end: Position) -> AsyncIterator[LogEntry]:
    """The records of ``log`` after position ``after`` (all if None) and before ``end``
    (a value of :meth:`Log.end`); the reader is closed however the caller stops.

    A partitioned log may also yield records appended after ``end`` was taken (up to the
    ends its read saw when it started): leaving them out would hand the caller positions
    that claim them read, since every position covers what its reader read before it.
    """
    reader = log.read(after if after is not None else 0)
    single = type(end) is int
    async with contextlib.aclosing(reader):  # type: ignore[type-var]
        async for entry in reader:
            if after is not None and covers(after, entry.position):
                continue
            if single and reached(entry.position, end):
                return  # one stream: everything after is past the end too
            yield entry


def stream_of(position: Position) -> tuple[int, int] | None:
    """Which ordered stream a record position belongs to: None for a single-stream log,
    ``(generation, partition)`` for a partitioned one. A reader that read the last record
    of every stream below an end has read everything below it."""
    if isinstance(position, VectorPosition):
        return (position.generation, position.partition if position.partition is not None else -1)
    return None


def check_records(records: Sequence[bytes], max_record_bytes: int) -> list[bytes]:
    """Validate a batch before anything is written: bytes-like, and none too large.

    Returns the records as immutable ``bytes`` (a caller's bytearray may change later).
    """
    if isinstance(records, (bytes, bytearray, memoryview, str)):
        raise TypeError("append() takes a sequence of records, not a single bytes object")
    out: list[bytes] = []
    for i, r in enumerate(records):
        if type(r) is not bytes:
            if not isinstance(r, (bytes, bytearray, memoryview)):
                raise TypeError(f"record {i} is {type(r).__name__}; log records are bytes")
            r = bytes(r)
        if len(r) > max_record_bytes:
            raise RecordTooLarge(
                f"record {i} is {len(r)} bytes; this log accepts at most {max_record_bytes} "
                "(max_record_bytes); split it into smaller records"
            )
        out.append(r)
    return out


L = TypeVar("L")


class Opening(Generic[L]):
    """What ``SomeLog.open(...)`` returns: await it, or use it as ``async with``.

    ``log = await LocalLog.open(path)`` leaves closing to the caller;
    ``async with LocalLog.open(path) as log:`` closes the log on exit.
    """

    __slots__ = ("_close", "_factory", "_log")

    def __init__(self, factory: Callable[[], Awaitable[L]], close: Callable[[L], Awaitable[None]]) -> None:
        self._factory = factory
        self._close = close
        self._log: L | None = None

    def __await__(self) -> Generator[Any, None, L]:
        return _await(self._factory()).__await__()

    async def __aenter__(self) -> L:
        self._log = await self._factory()
        return self._log

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._log is not None:
            await self._close(self._log)
            self._log = None


async def _await(aw: Awaitable[L]) -> L:
    return await aw


class Waiters:
    """Wake-ups for in-process followers, safe to create outside a running loop.

    ``asyncio.Event`` binds to the first loop that waits on it, and a log may outlive one
    ``asyncio.run``; futures are created on demand on the waiting loop instead. A waiter
    must check for new data and call :meth:`wait` with no ``await`` in between, so no
    wake-up is lost.
    """

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        if self._futures:
            futures, self._futures = self._futures, []
            for fut in futures:
                _resolve(fut)

    async def wait(self, timeout: float | None = None) -> None:
        """Return after the next :meth:`wake`, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._futures.append(fut)
        timer = loop.call_later(timeout, _resolve, fut) if timeout is not None else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if not fut.done():
                fut.cancel()
            try:
                self._futures.remove(fut)
            except ValueError:
                pass


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
