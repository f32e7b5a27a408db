"""A forwarder that runs for as long as the edge does: connect, pass, back off, reconnect.

:class:`ForwarderService` owns the link to the shared log. It opens the shared log with
the ``open_shared`` function it is given (for Kafka: ``lambda: KafkaLog.open(...)``), runs
:meth:`~crdtsync.forwarder.passes.Forwarder.run_once` in a loop while the link works, and
when opening or a pass fails (broker down, network cut, a pass that stalls past
``pass_timeout``) it closes the shared log, records the error in the forwarder's stats,
waits a :class:`Backoff` delay (capped, jittered, exponential) and opens it again. The
edge's replica never waits for any of this: it writes to its local log, the outbox.

A pass interrupted by a failure or by :meth:`ForwarderService.stop` leaves the state file
at the last acknowledged batch, so the next pass re-sends at most that batch (see
:mod:`crdtsync.forwarder`). Between passes that found nothing to copy the service sleeps
``interval`` seconds; it refreshes the outbox depth and writes its stats file (for
``crdtsync status``) at most every ``stats_interval`` seconds and when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..errors import BadInput
from ..log._protocol import Log
from .passes import Forwarder
from .state import write_atomically
from .stats import ForwarderStats, stats_path_for

__all__ = ["Backoff", "ForwarderService"]

log = logging.getLogger("crdtsync.forwarder")


class Backoff:
    """Delays between reconnection attempts: ``initial * factor**n`` capped at ``cap``,
    each drawn uniformly from ``[(1 - jitter) * d, d]`` so a fleet of edges that lost the
    same broker does not reconnect in step. :meth:`reset` after a success."""

    def __init__(self, initial: float = 0.1, cap: float = 30.0, factor: float = 2.0, jitter: float = 0.5,
                 rng: random.Random | None = None) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {jitter}")
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self.rng = rng or random.Random()
        #: failures since the last reset
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt (and count this failure)."""
        ceiling = min(self.cap, self.initial * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return ceiling * (1 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0


OpenShared = Callable[[], Awaitable[Log]]


class ForwarderService:
    """Run ``forwarder`` until :meth:`stop`, (re)opening its shared log with ``open_shared``.

    ``pass_timeout``: seconds one :meth:`~Forwarder.run_once` may take before the link is
    declared dead (give the forwarder a ``max_batches`` so a healthy pass stays below it);
    ``connect_timeout``: the same for opening. ``sleep`` and the forwarder's ``clock`` are
    injectable for tests. ``stats_path`` defaults to the state file's
    ``<name>.stats.json`` (None without a state file).
    """

    def __init__(
        self,
        forwarder: Forwarder,
        open_shared: OpenShared,
        *,
        interval: float = 0.2,
        pass_timeout: float = 60.0,
        connect_timeout: float = 15.0,
        backoff: Backoff | None = None,
        stats_path: Path | None = None,
        stats_interval: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.forwarder = forwarder
        self.open_shared = open_shared
        self.interval = interval
        self.pass_timeout = pass_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        st = forwarder.state_path
        self.stats_path = stats_path if stats_path is not None else (stats_path_for(st) if st else None)
        self.stats_interval = stats_interval
        self._sleep = sleep
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._failed = False
        self._stats_at: float | None = None

    @property
    def stats(self) -> ForwarderStats:
        """The forwarder's stats (the service updates the connection fields)."""
        return self.forwarder.stats

    def stop(self) -> None:
        """Ask :meth:`run` to return after the pass in progress (safe from any task)."""
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Connect, pass, back off and reconnect until :meth:`stop`; then close the
        shared log and write the stats file one last time.

        Raises what retrying cannot fix: :class:`~crdtsync.errors.BadInput` from a pass
        (a state file written for another shared log)."""
        self._stop = asyncio.Event()
        if self._stopping:
            self._stop.set()
        fwd = self.forwarder
        try:
            await self._publish(force=True)  # the outbox depth, before any connection
            while not self._stop.is_set():
                if fwd.shared is None and not await self._connect():
                    continue
                try:
                    report = await asyncio.wait_for(fwd.run_once(), self.pass_timeout)
                except (asyncio.CancelledError, BadInput):
                    raise  # BadInput: a state file for another log; retrying cannot fix it
                except Exception as exc:  # the link (or the broker) failed mid-pass
                    fwd.stats.link_failures += 1
                    await self._lost(exc, "pass")
                    continue
                await self._publish()
                if not (report.shipped or report.received):  # idle (or switched off by hand)
                    await self._pause(self.interval)
        finally:
            await self._close_shared()
            await self._publish(force=True)

    async def _connect(self) -> bool:
        fwd = self.forwarder
        try:
            fwd.shared = await asyncio.wait_for(self.open_shared(), self.connect_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fwd.stats.connect_failures += 1
            await self._lost(exc, "connect")
            return False
        if self._failed:
            fwd.stats.reconnects += 1
            log.info("forwarder %s reconnected to the shared log after %d failed attempts", fwd.origin,
                     self.backoff.attempt)
        self._failed = False
        fwd.stats.connected = True
        fwd.stats.backoff_s = 0.0
        self.backoff.reset()
        return True

    async def _lost(self, exc: BaseException, what: str) -> None:
        """Record ``exc``, drop the link, and wait the next backoff delay."""
        fwd = self.forwarder
        self._failed = True
        fwd.stats.connected = False
        fwd.stats.last_error = f"{what}: {exc!r}"[:500]
        fwd.stats.last_error_at = time.time()
        await self._close_shared()
        delay = self.backoff.next()
        fwd.stats.backoff_s = delay
        log.warning("forwarder %s: %s failed (%r); retrying in %.2f s", fwd.origin, what, exc, delay)
        await self._publish()
        await self._pause(delay)

    async def _close_shared(self) -> None:
        shared, self.forwarder.shared = self.forwarder.shared, None
        self.forwarder.stats.connected = False
        if shared is not None:
            try:
                await asyncio.wait_for(shared.close(), self.connect_timeout)
            except Exception as exc:  # a dead broker may refuse a clean close: note it, go on
                log.warning("forwarder %s: closing the shared log failed: %r", self.forwarder.origin, exc)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, returning early on :meth:`stop` (the injected ``sleep`` is
        awaited as is)."""
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        assert self._stop is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _publish(self, force: bool = False) -> None:
        """Refresh the outbox depth and write the stats file (at most every ``stats_interval``)."""
        fwd = self.forwarder
        now = fwd.clock()
        if not force and self._stats_at is not None and now - self._stats_at < self.stats_interval:
            return
        self._stats_at = now
        await fwd.outbox_depth()
        if self.stats_path is not None:
            fwd.stats.updated_at = time.time()
            write_atomically(self.stats_path, json.dumps(fwd.stats.to_json()).encode(), durable=False)
