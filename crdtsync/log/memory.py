"""MemoryLog: an in-process log for tests and the simulator, with fault hooks.

Positions count records from 0. Nothing is persisted: a ``MemoryLog`` lives as long as
the object. Faults are injected through :attr:`MemoryLog.faults`:

* ``fail_appends(count, error)``: the next ``count`` appends raise (nothing is appended);
* ``stall()`` / ``resume()``: appends, ``end()`` and reads wait, as if the log were
  unreachable, until resumed (or the log is closed);
* ``drop``, ``duplicate`` (probabilities) and ``delay`` (seconds): what readers see. The
  log itself stays intact; a dropped record is missing from that one read, a duplicated
  one is yielded twice in a row, a delayed one arrives ``delay`` seconds late. Draws come
  from a seeded ``random.Random``, so a run is reproducible;
* ``before_append``: an async hook called with each batch before it is appended; it may
  sleep (slow log) or raise (failed append).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import Unavailable
from ._protocol import LogClosed, LogEntry, Waiters, check_records

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..control import MemoryControl

__all__ = ["MemoryFaults", "MemoryLog"]

_READ_CHUNK = 512


class MemoryFaults:
    """Fault switches of one :class:`MemoryLog` (all off by default)."""

    def __init__(self, seed: int | None = 0) -> None:
        self.random = random.Random(seed)
        #: Probability that a reader does not see a record.
        self.drop = 0.0
        #: Probability that a reader sees a record twice in a row.
        self.duplicate = 0.0
        #: Seconds a reader waits before each record is delivered.
        self.delay = 0.0
        #: Async hook called with every batch before it is appended; may sleep or raise.
        self.before_append: Callable[[list[bytes]], Awaitable[None]] | None = None
        self.stalled = False
        self.failing_appends: int | None = 0
        self.append_error: BaseException | None = None
        # Counters, for assertions in tests.
        self.failed_appends = 0
        self.dropped = 0
        self.duplicated = 0
        self._resumed = Waiters()

    def fail_appends(self, count: int | None = 1, error: BaseException | None = None) -> None:
        """Make the next ``count`` appends raise ``error`` (``None``: every append until
        :meth:`clear`). The default error is :class:`~crdtsync.errors.Unavailable`."""
        self.failing_appends = count
        self.append_error = error

    def stall(self) -> None:
        """Block appends, ``end()`` and reads until :meth:`resume`."""
        self.stalled = True

    def resume(self) -> None:
        self.stalled = False
        self._resumed.wake()

    def clear(self) -> None:
        """Switch every fault off (counters are kept)."""
        self.drop = self.duplicate = self.delay = 0.0
        self.before_append = None
        self.failing_appends = 0
        self.append_error = None
        self.resume()

    @property
    def affects_reads(self) -> bool:
        return bool(self.drop or self.duplicate or self.delay)

    def _take_append_failure(self) -> BaseException | None:
        if self.failing_appends is None or self.failing_appends > 0:
            if self.failing_appends is not None:
                self.failing_appends -= 1
            self.failed_appends += 1
            return self.append_error or Unavailable("MemoryLog: injected append failure (faults.fail_appends)")
        return None


class MemoryLog:
    """An in-process :class:`~crdtsync.log.Log`: positions 0, 1, 2, ...; faults on demand.

    >>> log = MemoryLog()
    >>> log.faults.fail_appends(1)      # the next append raises Unavailable
    >>> log.faults.drop = 0.1           # readers miss about 10% of records
    """

    def __init__(
        self, *, max_record_bytes: int = 16 * 1024 * 1024, seed: int | None = 0,
        regions: Iterable[str] | None = None, may_lose_records: bool = False,
    ) -> None:
        self.max_record_bytes = max_record_bytes
        #: this log stands for a transport that can lose records (a broker, a lossy link):
        #: replicas on it run anti-entropy (:mod:`crdtsync.replica.antientropy`)
        self.may_lose_records = may_lose_records
        #: regions this log carries (a residency scope), or None for a private log
        self.regions: frozenset[str] | None = frozenset(regions) if regions is not None else None
        self._control: MemoryControl | None = None
        self.faults = MemoryFaults(seed)
        self._records: list[bytes] = []
        self._start = 0  # position of self._records[0]
        self._closed = False
        self._appended = Waiters()

    @property
    def control(self) -> MemoryControl:
        """The in-process control hub of the replicas sharing this log (heartbeats)."""
        if self._control is None:
            from ..control import MemoryControl

            self._control = MemoryControl()
        return self._control

    # -- Log protocol -------------------------------------------------------------

    async def append(self, records: Sequence[bytes]) -> int:
        batch = check_records(records, self.max_record_bytes)
        await self._gate()
        faults = self.faults
        if faults.before_append is not None:
            await faults.before_append(batch)
            self._check_open()
        error = faults._take_append_failure() if faults.failing_appends != 0 else None
        if error is not None:
            raise error
        position = self._start + len(self._records)
        if batch:
            self._records.extend(batch)
            self._appended.wake()
        return position

    async def read(self, from_position: int = 0, *, follow: bool = False) -> AsyncGenerator[LogEntry, None]:
        if from_position < 0:
            raise ValueError(f"from_position must be >= 0, got {from_position}")
        self._check_open()
        position = from_position
        faults = self.faults
        while not self._closed:
            if faults.stalled:
                try:
                    await self._gate()
                except LogClosed:
                    return  # closed while stalled: a read in progress ends quietly
            position = max(position, self._start)  # truncated behind us
            index = position - self._start
            chunk = self._records[index : index + _READ_CHUNK]
            if chunk:
                if faults.affects_reads:
                    for payload in chunk:
                        async for entry in self._faulty(LogEntry(position, payload)):
                            yield entry
                        position += 1
                        if self._closed:
                            return
                else:
                    for payload in chunk:
                        yield LogEntry(position, payload)
                        position += 1
                continue
            if not follow:
                return
            await self._appended.wait()

    async def end(self) -> int:
        await self._gate()
        return self._start + len(self._records)

    async def close(self) -> None:
        self._closed = True
        self._appended.wake()
        self.faults._resumed.wake()

    async def truncate_before(self, position: int) -> None:
        self._check_open()
        drop = min(position, self._start + len(self._records)) - self._start
        if drop > 0:
            del self._records[:drop]
            self._start += drop

    # -- extras -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Records currently kept (after truncation)."""
        return len(self._records)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._start}..{self._start + len(self._records)}"
        return f"MemoryLog({state})"

    # -- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed("MemoryLog is closed; create a new one")

    async def _gate(self) -> None:
        self._check_open()
        while self.faults.stalled:
            await self.faults._resumed.wait()
            self._check_open()

    async def _faulty(self, entry: LogEntry) -> AsyncGenerator[LogEntry, None]:
        faults = self.faults
        rng = faults.random
        if faults.drop and rng.random() < faults.drop:
            faults.dropped += 1
            return
        if faults.delay:
            await asyncio.sleep(faults.delay)
        yield entry
        if faults.duplicate and rng.random() < faults.duplicate:
            faults.duplicated += 1
            yield entry
