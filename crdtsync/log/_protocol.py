"""The ``Log`` protocol every log backend implements, and what its methods promise.

A log is an append-only sequence of opaque records (bytes). The event-batch codec sits
above this layer; a log never looks inside a payload. ``MemoryLog``, ``LocalLog`` and
``KafkaLog`` implement the same five methods and pass the same conformance suite
(``tests/log/test_conformance.py``).

Positions are ints, strictly increasing in log order, and a position returned by
``append`` or carried by a :class:`LogEntry` resumes a read exactly there. They need not
be contiguous: ``MemoryLog`` counts records (0, 1, 2, ...), ``LocalLog`` uses byte
offsets, Kafka uses offsets. Consumers store positions; they never do arithmetic on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import LogClosed, RecordTooLarge

__all__ = ["Log", "LogClosed", "LogEntry", "RecordTooLarge", "check_records"]


class LogEntry(NamedTuple):
    """One record as a reader sees it: where it is in the log, and its bytes."""

    position: int
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

    async def append(self, records: Sequence[bytes]) -> int: ...

    def read(self, from_position: int = 0, *, follow: bool = False) -> AsyncIterator[LogEntry]: ...

    async def end(self) -> int: ...

    async def close(self) -> None: ...

    async def truncate_before(self, position: int) -> None: ...


async def read_range(log: Log, after: int | None, end: int) -> AsyncIterator[LogEntry]:
    """The records of ``log`` after position ``after`` (all if None) and before ``end``
    (a value of :meth:`Log.end`); the reader is closed however the caller stops."""
    reader = log.read(after if after is not None else 0)
    async with contextlib.aclosing(reader):  # type: ignore[type-var]
        async for entry in reader:
            if after is not None and entry.position <= after:
                continue
            if entry.position >= end:
                return
            yield entry


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
