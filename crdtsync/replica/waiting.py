"""Waiting in real time for something a replica's state or heartbeats will make true.

Whatever may satisfy a waiter (an applied batch, a heartbeat) calls :meth:`Waiter.tick`;
:meth:`Waiter.until` re-checks its predicate on every tick and at least every
``interval`` seconds, and catches the replica up itself when no apply loop runs. The
simulated :class:`~crdtsync.testing.Cluster` waits by stepping instead, on the same
predicates (see :mod:`crdtsync.replica.coordination`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

__all__ = ["Waiter"]


class Waiter:
    """Futures woken by :meth:`tick`."""

    def __init__(self, interval: float, catch_up: Callable[[], Awaitable[object]],
                 following: Callable[[], bool]) -> None:
        self.interval = interval
        self._catch_up = catch_up
        self._following = following
        self._ticks: list[asyncio.Future[None]] = []

    def tick(self) -> None:
        """Something waiters may care about changed (a heartbeat, an applied batch)."""
        if self._ticks:
            ticks, self._ticks = self._ticks, []
            for f in ticks:
                if not f.done():
                    f.set_result(None)

    async def until(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``pred()`` holds; False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not pred() and not self._following():
            # nothing ticks a replica that does not follow its log: catch up before waiting
            await self._catch_up()
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._ticks.append(fut)
            # asyncio's: on Python 3.10 wait_for raises it, and it is not the builtin TimeoutError
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, min(left, self.interval))
            if not self._following():
                await self._catch_up()
        return True
