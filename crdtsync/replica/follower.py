"""The follower: reading the log, at open (catch-up) and then as it grows (tailing).

Records are handed to the :class:`~crdtsync.replica.apply.Applier` in log order; the
store's position advances past every record read, applied or quarantined, and whoever
waits for a position (:meth:`Follower.wait_applied`, ``sync``) is woken. The tail loop
yields to the event loop every few hundred events, writes the automatic snapshot when it
is due, and restarts itself after an unexpected error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable

from ..log._protocol import Log, Position, covers, position_progress, read_range, stream_of
from .admission import Admission
from .apply import Applier
from .store import Store

__all__ = ["Follower"]

log = logging.getLogger("crdtsync.replica")

#: events applied between two yields to the event loop
YIELD_EVERY = 512


class Follower:
    """Catch-up and tailing of one replica's log, and the waiters on its position."""

    def __init__(self, actor: str, log_: Log, store: Store, applier: Applier,
                 snapshot_due: Callable[[], bool], snapshot: Callable[[], Awaitable[None]],
                 admission: Admission | None = None) -> None:
        self.actor = actor
        #: told which record is being applied, so it can file refusals with it
        self._admission = admission
        self.log = log_
        self._store = store
        self._applier = applier
        self._snapshot_due = snapshot_due
        self._snapshot = snapshot
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[Position, asyncio.Future[None]]] = []
        #: sees every record read (anti-entropy's journal); None: nobody
        self.tap: Callable[[bytes], None] | None = None

    @property
    def following(self) -> bool:
        """Whether the tail loop runs (or the replica closed): no need to catch up by hand."""
        return self.task is not None or self.closed

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._tail(), name=f"crdtsync-apply-{self.actor}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    def fail_waiters(self, exc: Exception) -> None:
        """Whoever waits for a position gets ``exc`` (the replica crashed)."""
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    def _apply(self, position: Position, payload: bytes) -> int:
        adm = self._admission
        if adm is None:
            n = self._applier.apply_record(position, payload)
        else:
            adm.reading(position, payload)
            try:
                n = self._applier.apply_record(position, payload)
            finally:
                adm.done_reading()
        self._advance(position)
        if self.tap is not None:
            self.tap(payload)
        return n

    def _advance(self, position: Position) -> None:
        self._store.position = position
        if self._waiters:
            still = []
            for target, fut in self._waiters:
                if covers(position, target):
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((target, fut))
            self._waiters = still

    async def catch_up(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every record currently in the log; returns the number of events applied."""
        # A replay allocates millions of short-lived, acyclic objects; the cyclic
        # collector's frequent young-generation passes cost about a quarter of the time.
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], 50_000), *threshold[1:])
        try:
            return await self._catch_up(progress)
        finally:
            gc.set_threshold(*threshold)

    async def _catch_up(self, progress: Callable[[int, int], None] | None) -> int:
        end = await self.log.end()
        applied = self._applier.retry_held()  # held events the clock now accepts come first
        async for entry in read_range(self.log, self._store.position, end):
            applied += self._apply(entry.position, entry.payload)
            if self._snapshot_due():
                await self._snapshot()
            if progress is not None:
                progress(position_progress(entry.position), position_progress(end))
            if applied and applied % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return applied

    async def _tail(self) -> None:
        while not self.closed:
            start = self._store.position
            try:
                reader = self.log.read(start if start is not None else 0, follow=True)
                async with contextlib.aclosing(reader):  # type: ignore[type-var]
                    n = 0
                    async for entry in reader:
                        if start is not None and covers(start, entry.position):
                            continue
                        n += self._apply(entry.position, entry.payload)
                        if self._snapshot_due():
                            await self._snapshot()
                        if n >= YIELD_EVERY:
                            n = 0
                            await asyncio.sleep(0)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.closed:
                    return
                log.exception("apply loop of %s failed; retrying in 0.5 s", self.actor)
                await asyncio.sleep(0.5)

    async def wait_applied(self, position: Position, timeout: float | None = None) -> None:
        """Wait until the record at ``position`` (or a later one) has been applied."""
        cur = self._store.position
        if covers(cur, position):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (position, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            # a waiter that gave up (timed out, cancelled) is not kept until its position
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def sync(self, flush: Callable[[], Awaitable[object]], timeout: float | None = None) -> None:
        """Flush local writes and wait until everything in the log now has been applied."""
        await flush()
        end = await self.log.end()
        if self.task is None:
            await self.catch_up()
            return
        # ``end`` is the next position; wait for the record just below it, if any (a
        # partitioned log: the last one of every partition)
        last: dict[object, Position] = {}
        async for entry in read_range(self.log, self._store.position, end):
            last[stream_of(entry.position)] = entry.position
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for position in last.values():
            await self.wait_applied(position, None if deadline is None else max(0.0, deadline - loop.time()))
