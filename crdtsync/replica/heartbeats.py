"""Heartbeats: what a replica tells its peers on the control channel, and what it hears.

A heartbeat (:class:`~crdtsync.control.Heartbeat`) carries the replica's identity, its
context, wall and HLC time, log position, its pending quorum-read ping and its answers to
peers' pings. Heartbeats are published every ``interval`` seconds and promptly after
remote events were applied or a peer pinged (bursts coalesce). Received heartbeats go to
:class:`~crdtsync.control.Membership` (acks, quorums, staleness, stability) and to the
clock-skew monitor; the control channel is untrusted like the log, so bad ones are
counted and dropped, never raised. Every beat also runs the periodic duties the replica
registers (freshness SLO check, pruning, retrying held events).

On the wire heartbeats are a numbered stream of deltas with a periodic full one
(:mod:`crdtsync.control.stream`); a gap in a sender's stream is never patched over: this
replica keeps that sender's last good heartbeat and lists it in its own heartbeat's
``want`` list until a full one arrives. Where heartbeats go and what is read follows
the replica's :class:`~crdtsync.control.topology.Topology`: peers read every peer; a hub
reads every heartbeat and also publishes its aggregate; an edge reads only its hub's
aggregate (:mod:`crdtsync.control.aggregate`). Full-format heartbeat bytes
(:meth:`Heartbeat.encode`) are still accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..clock import HLC
from ..control import ControlChannel, ControlTransport, DirectoryControl, Heartbeat, Membership
from ..control.aggregate import AGGREGATE_SECTIONS, EdgeView, HubAggregator, validate_aggregate
from ..control.heartbeat import HEARTBEAT_SECTIONS
from ..control.stream import StreamDecoder, StreamEncoder, is_stream
from ..control.topology import EDGE, Topology, aggregate_topic
from ..errors import BadInput, ReplicaRemoved
from ..log._protocol import Log
from .antientropy import AntiEntropy, is_digest
from .identity import ReplicaIdentity
from .skew import ClockSkewMonitor
from .stats import ReplicaStats
from .store import Store

__all__ = ["Heartbeats", "default_control"]

log = logging.getLogger("crdtsync.replica")

#: seconds between two prompt heartbeats (bursts of applied batches coalesce)
HEARTBEAT_GAP = 0.001


def default_control(log_: Log) -> ControlChannel | ControlTransport | None:
    """The control channel that goes with a log: a MemoryLog's in-process hub, a
    LocalLog's ``control/`` directory, a log's own ``control_channel()`` (a KafkaLog's
    ``<namespace>.control`` topic); ``None`` for other logs."""
    make = getattr(log_, "control_channel", None)
    if callable(make):
        made: ControlChannel | ControlTransport = make()
        return made
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
                 hlc: HLC, pruned: set[str], on_heard: Callable[[], None],
                 topology: Topology | None = None) -> None:
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
        self.topology = topology or Topology()
        # a channel that keeps only each sender's latest message (a file per replica)
        # cannot carry deltas: a reader may miss any message but the last
        latest_only = bool(getattr(control, "latest_only", False))
        self.encoder = StreamEncoder("hb", identity.name, hlc.peek(),
                                     full_every=1 if latest_only else self.topology.full_period)
        self.decoder = StreamDecoder({"hb": HEARTBEAT_SECTIONS, "agg": AGGREGATE_SECTIONS},
                                     {"hb": Heartbeat.from_state, "agg": validate_aggregate})
        #: a hub's aggregate builder and encoder (set up by the replica's assembly)
        self.aggregator: HubAggregator | None = None
        self.agg_encoder: StreamEncoder | None = None
        #: an edge's view of the fleet, from its hub's aggregate
        self.edge: EdgeView | None = (
            EdgeView(identity.name, identity.region) if self.topology.role == EDGE else None)
        #: anti-entropy (digests next to heartbeats; set up by the replica's assembly)
        self.antientropy: AntiEntropy | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.control is not None and (self._task is None or self._task.done()):
            if isinstance(self.control, ControlTransport):
                for topic in self.topology.subscriptions():
                    self.control.subscribe(self.identity.name, topic, self.receive)
            else:
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

    def resync(self) -> set[str]:
        """Senders whose stream this replica lost (it asks them for a full message)."""
        out: set[str] = set()
        for names in self.decoder.resync.values():
            out |= names
        if self.edge is not None and self.edge.lost and self.topology.hub is not None:
            out.add(self.topology.hub)
        return out

    def observe(self, hb: Heartbeat | bytes) -> bool:
        """Take in a heartbeat, a stream message or a hub aggregate (see
        :meth:`Replica.observe_heartbeat`); bad input is counted and dropped."""
        if not isinstance(hb, Heartbeat) and is_digest(hb):
            if self.antientropy is not None:
                self.antientropy.observe(bytes(hb))
            return False
        try:
            if isinstance(hb, Heartbeat):
                h = hb
            elif is_stream(bytes(hb[:16])):
                gaps = self.decoder.stats.gaps
                rec = self.decoder.decode(bytes(hb))
                if self.identity.name in rec.want:
                    self.request_full()
                    self.wake()
                if rec.state is None:
                    if self.decoder.stats.gaps > gaps:
                        self._stats.reject("heartbeat_gap")
                        self.wake()  # ask for a full one soon
                    return False
                if rec.kind == "agg":
                    return self._observe_aggregate(rec.sender, rec.state, rec.changed, rec.full)
                h = Heartbeat.from_state(rec.sender, rec.state)
            else:
                h = Heartbeat.decode(hb)
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

    def request_full(self) -> None:
        """A receiver lost this replica's stream: send full messages next."""
        self.encoder.request_full()
        if self.agg_encoder is not None:
            self.agg_encoder.request_full()

    def _observe_aggregate(self, hub: str, state: dict[str, Any], changed: dict[str, Any], full: bool) -> bool:
        if self.edge is None or hub != self.topology.hub:
            return False  # not this replica's hub (a misrouted topic): nothing to learn
        self.edge.observe(state, changed, full, self.now_ms())
        pings = self.edge.pings()
        for asker in [a for a in self.echo if a not in pings]:
            del self.echo[asker]  # reads no longer in flight
        for asker, ping in pings.items():
            if ping > self.echo.get(asker, 0):
                self.echo[asker] = ping
                self.wake()  # answer the asker now
        skew = state["s"].get("wall_ms")
        if type(skew) is int:
            self._skew.observe(hub, skew)
        self._on_heard()
        return True

    def messages(self) -> list[tuple[str, bytes]]:
        """Build this replica's heartbeat (observed here first) and, on a hub, its
        aggregate: the ``(topic, bytes)`` to publish now."""
        hb = self.build()
        self.observe(hb)
        lost = self.resync()
        out = [(self.topology.heartbeat_topic(), self.encoder.encode(hb.to_state(), lost))]
        if self.aggregator is not None and self.agg_encoder is not None:
            agg = self.aggregator.state(self.now_ms())
            out.append((aggregate_topic(self.identity.name), self.agg_encoder.encode(agg, lost)))
        return out

    async def publish(self) -> None:
        """Run the periodic duties, then publish a heartbeat (and aggregate) now. A duty
        that fails is logged; the other duties and the heartbeat go on (a replica that
        stopped beating would look unreachable to its peers)."""
        for duty in self.duties:
            try:
                duty()
            except Exception:
                log.exception("a heartbeat duty of %s (%r) failed", self.identity.actor, duty)
        msgs = self.messages()
        if self.control is None:
            return
        for topic, data in msgs:
            if isinstance(self.control, ControlTransport):
                await self.control.publish_to(self.identity.name, topic, data)
            else:
                await self.control.publish(data)
        if self.antientropy is not None:
            # the digest goes after the heartbeat, on the same topic (a channel that keeps
            # each sender's latest message shows it until the next heartbeat)
            digest = self.antientropy.message()
            if digest is not None:
                if isinstance(self.control, ControlTransport):
                    await self.control.publish_to(self.identity.name, self.topology.heartbeat_topic(), digest)
                else:
                    await self.control.publish(digest)
            await self.antientropy.repair()

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
