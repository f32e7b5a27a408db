"""Faults for tests that run real replicas over one shared log: cuts and crashes.

:class:`MemoryLog`'s own faults (``stall``, ``fail_appends``...) hit every replica that
shares the log at once. The faults here hit one replica:

* :class:`CuttableLog` wraps the shared log for one replica (one wrapper per replica).
  ``cut()`` partitions that replica from the log and ``restore()`` reconnects it, while
  the other replicas keep using the log. It models a replica that lost its connection to
  the sequencer (a Kafka broker, a LocalLog directory on a network mount).
* :func:`crash` kills a replica as a process crash would: no flush, no snapshot, and
  every call in flight ends with :class:`~crdtsync.errors.Unavailable`. Restart it by
  opening it again (same data directory, or ``identity=`` for an in-memory replica).

What a cut does, per call (chosen so that a test can tell "not sent" from "unknown"):

* ``append``, ``end``, ``sync`` and ``truncate_before`` fail at once with
  :class:`LogCut` (an ``Unavailable``) while cut. Nothing is forwarded, so a refused
  ``append`` **definitely** appended nothing; a test may record the operation as failed
  when ``LogCut`` is the error or its ``__cause__``. A call already forwarded before the
  cut is not interrupted: it completes (or fails) as the shared log decides.
* readers (``read``, with or without ``follow``) do not fail: they hold the next record
  until the log is restored, as if the network had stalled. A replica's apply loop then
  simply stops advancing and its local state lags; it neither errors nor skips records.

The wrapper forwards what :meth:`Replica.open <crdtsync.replica.Replica.open>` looks for
on a log: ``control`` (a MemoryLog's heartbeat hub), ``path`` (a LocalLog's directory, so
the default ``DirectoryControl`` is found) and ``regions`` (the residency scope). A cut
does not touch the control channel; cut it separately (``MemoryControl.partition``).

Usage::

    shared = MemoryLog()
    link = CuttableLog(shared)
    replica = await Replica.open(log=link, schema=schema, name="a")
    link.cut()        # strong operations of "a" now raise Unavailable; LOCAL reads lag
    link.restore()
    await replica.close()
    await link.close()  # a replica opened with log= does not close it
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Unavailable
from ..log._protocol import Log, LogClosed, LogEntry, Waiters

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ..replica import Replica

__all__ = ["CuttableLog", "LogCut", "crash"]


class LogCut(Unavailable):
    """A :class:`CuttableLog` is cut: the call was not forwarded to the shared log, so
    nothing was appended. Restore the log (``restore()``) to reconnect."""


class CuttableLog:
    """One replica's link to a shared :class:`~crdtsync.log.Log`, which a test can cut.

    Implements the ``Log`` protocol by forwarding to ``inner`` (see the module docstring
    for what a cut does). Each replica needs its own wrapper, since a cut is per wrapper.

    Args:
        inner: the shared log (a ``MemoryLog`` shared by every wrapper, or this
            replica's own ``LocalLog`` handle on a shared directory).
        close_inner: :meth:`close` also closes ``inner``. Use it when ``inner`` is this
            replica's own handle (a ``LocalLog`` opened for it); leave it ``False`` for a
            log other replicas still use.
        name: shown in error messages and ``repr`` (e.g. the replica's name).

    Attributes:
        cuts: how many times :meth:`cut` took effect.
        refused: calls refused with :class:`LogCut`.
        held: records a reader held back because the link was cut at the time.
    """

    def __init__(self, inner: Log, *, close_inner: bool = False, name: str | None = None) -> None:
        if not isinstance(inner, Log):
            raise TypeError(f"CuttableLog wraps a crdtsync Log, got {type(inner).__name__}")
        self.inner = inner
        self.close_inner = close_inner
        self.name = name
        self.cuts = 0
        self.refused = 0
        self.held = 0
        self._cut = False
        self._closed = False
        self._wake = Waiters()  # restore() and close()
        self._inflight: set[asyncio.Task[int]] = set()

    # -- faults ---------------------------------------------------------------------
    def cut(self) -> None:
        """Partition this replica from the shared log until :meth:`restore`."""
        if not self._cut:
            self._cut = True
            self.cuts += 1

    def restore(self) -> None:
        """Reconnect: refused calls work again and held readers go on where they stopped."""
        self._cut = False
        self._wake.wake()

    @property
    def is_cut(self) -> bool:
        return self._cut

    # -- what Replica.open looks for on a log -------------------------------------------
    @property
    def control(self) -> Any:
        """The inner log's control hub (a ``MemoryLog``'s ``MemoryControl``), or ``None``."""
        return getattr(self.inner, "control", None)

    @property
    def path(self) -> Path | None:
        """The inner log's directory (a ``LocalLog``'s), or ``None``."""
        p = getattr(self.inner, "path", None)
        return p if isinstance(p, Path) else None

    @property
    def regions(self) -> frozenset[str] | None:
        """The residency scope of the inner log (``None``: not scoped)."""
        r = getattr(self.inner, "regions", None)
        return frozenset(r) if r is not None else None

    # -- Log protocol ---------------------------------------------------------------
    async def append(self, records: Sequence[bytes]) -> Any:
        self._gate("append")
        # Once forwarded, an append is not interrupted by a cut or by the caller's
        # cancellation (the bytes are on their way); close() waits for it, so nothing
        # lands after a crashed replica's successor has opened.
        task: asyncio.Task[int] = asyncio.ensure_future(self.inner.append(records))
        self._inflight.add(task)
        task.add_done_callback(_forget(self._inflight))
        return await asyncio.shield(task)

    async def end(self) -> Any:
        self._gate("end")
        return await self.inner.end()

    async def sync(self) -> None:
        """Forward ``sync()`` (durability) to the inner log, if it has one."""
        self._gate("sync")
        sync = getattr(self.inner, "sync", None)
        if sync is not None:
            await sync()

    async def truncate_before(self, position: Any) -> None:
        self._gate("truncate_before")
        await self.inner.truncate_before(position)

    async def read(self, from_position: Any = 0, *, follow: bool = False) -> AsyncGenerator[LogEntry, None]:
        self._check_open()
        inner = self.inner.read(from_position, follow=follow)
        try:
            while not self._closed:
                entry = await (self._next_or_closed(inner) if follow else _next(inner))
                if entry is None:
                    return
                if self._cut:
                    self.held += 1
                    while self._cut and not self._closed:
                        await self._wake.wait()  # checked just above with no await between
                    if self._closed:
                        return
                yield entry
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    async def close(self) -> None:
        """Stop readers, wait for forwarded appends, and close ``inner`` if asked to.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.wake()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self.close_inner:
            await self.inner.close()

    # -- extras -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "cut" if self._cut else "connected"
        who = f"{self.name}: " if self.name else ""
        return f"CuttableLog({who}{state}, {self.inner!r})"

    # -- internals --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed("this CuttableLog is closed; wrap the shared log in a new one")

    def _gate(self, what: str) -> None:
        self._check_open()
        if self._cut:
            self.refused += 1
            who = f" of {self.name}" if self.name else ""
            raise LogCut(f"the link{who} to the shared log is cut (CuttableLog.cut()); {what} was not sent")

    async def _next_or_closed(self, inner: AsyncIterator[LogEntry]) -> LogEntry | None:
        """The next entry of a following reader, or ``None`` once this wrapper closes
        (the inner log may be shared and stay open, so its reader would wait forever)."""
        nxt = asyncio.ensure_future(_next(inner))
        closing = asyncio.ensure_future(self._wake_on_close())
        try:
            await asyncio.wait((nxt, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await nxt
        return nxt.result() if not nxt.cancelled() else None

    async def _wake_on_close(self) -> None:
        while not self._closed:
            await self._wake.wait()


async def _next(it: AsyncIterator[LogEntry]) -> LogEntry | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


def _forget(tasks: set[asyncio.Task[int]]) -> Callable[[asyncio.Task[int]], None]:
    def done(task: asyncio.Task[int]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the caller may have been cancelled meanwhile

    return done


async def crash(replica: Replica) -> None:
    """Kill ``replica`` as if its process died, without any of :meth:`Replica.close`'s
    orderly work.

    No flush (queued LOCAL writes are lost), no snapshot (a restart recovers from the
    last automatic snapshot plus the log tail), the apply loop and heartbeats stop at
    once, and every call still waiting on the replica (a sequenced operation, a
    LINEARIZABLE read) fails with :class:`~crdtsync.errors.Unavailable`: its outcome is
    unknown to the caller, as it would be to a client of a crashed process.

    The replica's log is closed only if the replica owns it; the lock on its data
    directory is released, as the OS releases a dead process's locks. A log given with ``log=``
    is the test's to close (close a :class:`CuttableLog` before reopening the replica,
    so that appends it forwarded have landed first). Restart by opening the replica
    again with the same data directory (or ``identity=`` for an in-memory replica).
    """
    if replica.closed:
        return
    replica._mark_closed()
    replica._writer.drop_pending()
    await replica.follower.stop()
    await replica.heartbeats.stop()

    def dead() -> Unavailable:
        return Unavailable(f"replica {replica.actor} crashed; the outcome of this call is unknown")

    replica.sequencer_client.fail_waiting(dead())
    replica.follower.fail_waiters(dead())
    replica.waiter.tick()
    if replica.owns_log:
        await replica.log.close()
    if replica._dirlock is not None:  # the OS drops a dead process's lock on its data directory
        replica._dirlock.release()
