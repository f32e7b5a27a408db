"""Heartbeats: what a replica tells its peers on the control channel, and what it hears.

A heartbeat (:class:`~crdtsync.control.Heartbeat`) carries the replica's identity, its
context, wall and HLC time, log position, its pending quorum-read ping and its answers to
peers' pings. Heartbeats are published every ``interval`` seconds and promptly after
remote events were applied or a peer pinged (bursts coalesce). Received heartbeats go to
:class:`~crdtsync.control.Membership` (acks, quorums, staleness, stability) and to the
clock-skew monitor; the control channel is untrusted like the log, so bad ones are
counted and dropped, never raised. Every beat also runs the periodic duties the replica
registers (freshness SLO check, pruning, retrying held events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from ..clock import HLC
from ..control import ControlChannel, DirectoryControl, Heartbeat, Membership
from ..errors import BadInput, ReplicaRemoved
from ..log._protocol import Log
from .identity import ReplicaIdentity
from .skew import ClockSkewMonitor
from .stats import ReplicaStats
from .store import Store

__all__ = ["Heartbeats", "default_control"]

log = logging.getLogger("crdtsync.replica")

#: seconds between two prompt heartbeats (bursts of applied batches coalesce)
HEARTBEAT_GAP = 0.001


def default_control(log_: Log) -> ControlChannel | None:
    """The control channel that goes with a log: a MemoryLog's in-process hub, a
    LocalLog's ``control/`` directory; ``None`` for other logs."""
    hub = getattr(log_, "control", None)
    if hub is not None and hasattr(hub, "endpoint"):
        ep: ControlChannel = hub.endpoint()
        return ep
    path = getattr(log_, "path", None)
    if isinstance(path, Path):
        return DirectoryControl(path / "control")
    return None


class Heartbeats:
    """Publishing and receiving one replica's heartbeats."""

    def __init__(self, identity: ReplicaIdentity, control: ControlChannel | None, interval: float,
                 store: Store, membership: Membership, skew: ClockSkewMonitor, stats: ReplicaStats,
                 hlc: HLC, pruned: set[str], on_heard: Callable[[], None]) -> None:
        self.identity = identity
        self.control = control
        self.interval = interval
        self._store = store
        self.membership = membership
        self._skew = skew
        self._stats = stats
        self.hlc = hlc
        self._on_heard = on_heard  # a heartbeat arrived: waiters may care
        self._pruned = pruned  # the removed incarnations pruned from the context (the fleet's)
        #: periodic duties run before every heartbeat (SLO check, pruning, held events)
        self.duties: list[Callable[[], object]] = []
        self.ping = 0  # this replica's pending quorum-read ping
        self.echo: dict[str, int] = {}  # latest ping answered, by asking replica
        self.closed = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.control is not None and (self._task is None or self._task.done()):
            self.control.start(self.identity.name, self.receive)
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._beat(), name=f"crdtsync-heartbeat-{self.identity.actor}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.control is not None:
            await self.control.close()

    def receive(self, data: bytes) -> None:
        """A control channel's delivery: :meth:`observe` the heartbeat's bytes."""
        self.observe(data)

    def wake(self) -> None:
        """Publish soon (a writer may wait for an ack, a peer asked)."""
        if self._wake is not None:
            self._wake.set()

    def now_ms(self) -> int:
        return self.hlc.wall_ms()

    def build(self) -> Heartbeat:
        """This replica's heartbeat now."""
        position = self._store.position
        positions = {"log": position} if type(position) is int else {}  # vectors: not in heartbeats yet
        ident = self.identity
        return Heartbeat(
            ident.actor, ident.name, ident.region, ident.role, self._store.ctx(),
            self.now_ms(), self.hlc.peek(), positions, {}, self.ping, dict(self.echo),
            frozenset(self._pruned),
        )

    def observe(self, hb: Heartbeat | bytes) -> bool:
        """Take in a heartbeat (see :meth:`Replica.observe_heartbeat`)."""
        try:
            h = Heartbeat.decode(hb) if isinstance(hb, (bytes, bytearray, memoryview)) else hb
            if h.name != self.identity.name and not self.membership.is_removed(h.actor):
                # before the drift check: a peer whose heartbeats are refused as too far
                # ahead still tells this replica where the fleet's clocks are
                self._skew.observe(h.name, h.wall_ms)
            fresh = self.membership.observe(h, self.now_ms())
        except ReplicaRemoved:
            self._stats.reject("removed_replica")
            return False
        except BadInput as exc:
            self._stats.reject("bad_heartbeat")
            log.warning("%s dropped a heartbeat: %s", self.identity.actor, exc)
            return False
        if h.name != self.identity.name and h.ping and h.ping > self.echo.get(h.name, 0):
            self.echo[h.name] = h.ping
            self.wake()  # answer the asker now
        self._on_heard()
        return fresh

    async def publish(self) -> None:
        """Run the periodic duties, then publish a heartbeat now. A duty that fails is
        logged; the other duties and the heartbeat go on (a replica that stopped beating
        would look unreachable to its peers)."""
        for duty in self.duties:
            try:
                duty()
            except Exception:
                log.exception("a heartbeat duty of %s (%r) failed", self.identity.actor, duty)
        hb = self.build()
        self.observe(hb)
        if self.control is not None:
            await self.control.publish(hb.encode())

    async def _beat(self) -> None:
        assert self._wake is not None
        while not self.closed:
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("publishing a heartbeat of %s failed; retrying", self.identity.actor)
            # asyncio's: on Python 3.10 wait_for raises it, and it is not the builtin TimeoutError
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            # coalesce bursts of prompt heartbeats (one per applied batch) into one
            await asyncio.sleep(min(self.interval, HEARTBEAT_GAP))
