"""A simulated fleet of thousands of replicas on the control plane, for byte budgets.

:class:`~crdtsync.testing.Cluster` runs complete replicas and ships every log record
between them: its data plane costs O(nodes²) per step (200 nodes take minutes to settle),
so it cannot hold 10,000 edges. :class:`ControlFleet` keeps everything of the control
plane real and *models* only the data plane:

* every node is a real :class:`~crdtsync.replica.Replica` (constructed, not opened: no
  log I/O), with its real heartbeat part, membership, fleet, coordinator and, on hubs,
  the aggregator; messages are the bytes its ``heartbeats.messages()`` builds, read with
  ``observe_heartbeat`` exactly as in a running replica or the Cluster;
* the data plane is a model: each round, each edge writes one event with probability
  ``write_rate``; hubs hold everything written up to this round, edges everything up to
  the previous round (a ``lag`` fraction of them one round more) plus their own writes.
  A removal is learned by every node at once (as if its record had replicated).

One :meth:`round` is one heartbeat interval: every edge publishes (hubs read), then every
hub publishes its heartbeat (the other hubs read) and its aggregate (its edges read).
:attr:`ControlFleet.bytes_read` counts, per node, the bytes it read in the last round.
Deterministic from ``seed``: byte counts are reproducible, never timings.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..clock import HLC, Context, Dot
from ..control.topology import EDGE, HUB, Topology
from ..log.memory import MemoryLog
from ..replica import Replica, ReplicaIdentity
from ..schema import Schema

__all__ = ["ControlFleet", "RoundBytes"]


class _Inert:
    """A control channel that is present (levels are allowed) but carries nothing: the
    fleet delivers the messages itself."""

    def start(self, name: str, deliver: object) -> None:
        pass

    async def publish(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class RoundBytes:
    """Control bytes read in one round: per edge and per hub (max and mean)."""

    edge_max: int = 0
    edge_mean: float = 0.0
    hub_max: int = 0
    hub_mean: float = 0.0
    messages: int = 0
    fulls: int = 0


@dataclass
class _Node:
    name: str
    replica: Replica
    own: Context = field(default_factory=Context)  # its own writes not yet everywhere


class ControlFleet:
    """``hubs`` hub replicas and ``edges`` edge replicas (each edge reads hub ``i % hubs``).

    Args:
        regions: edge regions, assigned round-robin (hubs are in the first).
        heartbeat_ms: simulated ms per round.
        full_every: override the topology's full-message period (``None``: defaults).
    """

    def __init__(self, edges: int, hubs: int = 3, *, seed: int = 0, write_rate: float = 0.001,
                 lag: float = 0.0, regions: Iterable[str] = ("default",), heartbeat_ms: int = 1000,
                 full_every: int | None = None, schema: Schema | None = None) -> None:
        if hubs < 1 or edges < 0:
            raise ValueError("a control fleet needs at least one hub")
        self.rng = random.Random(seed)
        self.write_rate, self.lag, self.heartbeat_ms = write_rate, lag, heartbeat_ms
        self.now_ms = 1_700_000_000_000
        self.schema = schema or Schema([])
        regions = list(regions)
        self.hubs = [f"h{i}" for i in range(hubs)]
        self.edges = [f"e{i:05d}" for i in range(edges)]
        self.nodes: dict[str, _Node] = {}
        for i, name in enumerate(self.hubs):
            self._add(name, i, regions[0], Topology(HUB, full_every=full_every))
        for i, name in enumerate(self.edges):
            self._add(name, hubs + i, regions[i % len(regions)],
                      Topology(EDGE, hub=self.hubs[i % hubs], full_every=full_every))
        self.delivered = Context()  # what every hub holds
        self._previous = Context()  # what (non-lagging) edges hold
        self._older = Context()
        self.bytes_read: dict[str, int] = {}
        self.rounds = 0

    def _add(self, name: str, i: int, region: str, topology: Topology) -> None:
        ident = ReplicaIdentity(name, f"{i:08x}", region, "default")
        r = Replica(ident, self.schema, MemoryLog(), hlc=HLC(clock=lambda: self.now_ms), control=_Inert(),
                    heartbeat_interval=self.heartbeat_ms / 1000, liveness=3 * self.heartbeat_ms / 1000,
                    topology=topology)
        self.nodes[name] = _Node(name, r)

    def replica(self, name: str) -> Replica:
        return self.nodes[name].replica

    # -- the modelled data plane ------------------------------------------------------
    def seed_history(self, writers: int, max_seq: int = 50) -> None:
        """Start as a fleet that has run a while: the first ``writers`` edges have written
        up to ``max_seq`` events each, and every node holds them (contexts of that many
        rows, as a full heartbeat carries)."""
        vv = {self.replica(e).actor: self.rng.randint(1, max_seq) for e in self.edges[:writers]}
        self.delivered = self._previous = self._older = Context.from_vv(vv)
        for node in self.nodes.values():
            node.replica.store.set_context(self.delivered)

    def write(self, name: str) -> Dot:
        """Node ``name`` writes one event now (applied there at once)."""
        node = self.nodes[name]
        ctx = node.replica.store.ctx()
        dot = ctx.next_dot(node.replica.actor)
        node.own = node.own.add(dot)
        node.replica.store.set_context(ctx.add(dot))
        return dot

    def remove(self, name: str) -> str:
        """Remove replica ``name``: every node learns it (its record replicated)."""
        actor = self.replica(name).actor
        upto = self.delivered.max_seq(actor)
        for n, node in self.nodes.items():
            if n != name:
                node.replica.fleet.learn_removal(actor, upto, 0)
        return actor

    def _apply_data(self) -> None:
        writers = [n for n in self.edges if self.rng.random() < self.write_rate]
        for n in writers:
            self.write(n)
        own = Context()
        for n in self.edges:
            node = self.nodes[n]
            if node.own:
                own = own.join(node.own)
        self._older, self._previous = self._previous, self.delivered
        self.delivered = self.delivered.join(own)
        for node in self.nodes.values():
            r = node.replica
            if r.heartbeats.topology.role == HUB:
                base = self.delivered
            else:
                base = self._older if self.lag and self.rng.random() < self.lag else self._previous
                node.own = Context.from_dots(d for d in node.own.dots() if d not in base)
                base = base.join(node.own) if node.own else base
            if r.fleet.pruned:
                base = base.without(r.fleet.pruned)
            r.store.set_context(base)

    # -- the control plane ---------------------------------------------------------------
    def _deliver(self, dst: str, data: bytes) -> None:
        self.bytes_read[dst] = self.bytes_read.get(dst, 0) + len(data)
        self.nodes[dst].replica.observe_heartbeat(data)

    def round(self) -> RoundBytes:
        """One heartbeat interval: data, then every edge's and hub's messages."""
        self.rounds += 1
        self.now_ms += self.heartbeat_ms
        self._apply_data()
        self.bytes_read = {}
        for node in self.nodes.values():
            r = node.replica
            r.coordinator.check_slo()
            r.fleet.reclaim()
        msgs = 0
        fulls_before = self._fulls()
        for e in self.edges:
            for _topic, data in self.replica(e).heartbeats.messages():
                msgs += 1
                for h in self.hubs:
                    self._deliver(h, data)
        for h in self.hubs:
            for topic, data in self.replica(h).heartbeats.messages():
                msgs += 1
                if topic.startswith("agg."):
                    for e in self.edges:
                        if self.replica(e).heartbeats.topology.hub == h:
                            self._deliver(e, data)
                else:
                    for other in self.hubs:
                        if other != h:
                            self._deliver(other, data)
        edge_b = [self.bytes_read.get(e, 0) for e in self.edges] or [0]
        hub_b = [self.bytes_read.get(h, 0) for h in self.hubs]
        return RoundBytes(max(edge_b), sum(edge_b) / len(edge_b), max(hub_b), sum(hub_b) / len(hub_b),
                          msgs, self._fulls() - fulls_before)

    def _fulls(self) -> int:
        n = 0
        for node in self.nodes.values():
            hb = node.replica.heartbeats
            n += hb.encoder.stats.fulls + (hb.agg_encoder.stats.fulls if hb.agg_encoder else 0)
        return n

    def run(self, rounds: int) -> list[RoundBytes]:
        return [self.round() for _ in range(rounds)]
