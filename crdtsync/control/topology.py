"""Roles in a fleet and who reads whom on the control channel.

A replica's control role comes from configuration (``Replica.open(topology=...)``), never
from what a peer says:

* ``peer`` (the default): every replica publishes its heartbeats on topic ``peers`` and
  reads every other one there. Right for a handful of replicas; each reads O(fleet)
  heartbeats per round.
* ``hub``: publishes its heartbeats on topic ``hubs`` and reads everything there (every
  hub's and every edge's heartbeats), so it keeps a full :class:`Membership` of the fleet
  and runs every level exactly as a peer does. It also publishes an *aggregate* on topic
  ``agg.<hub name>`` (:mod:`crdtsync.control.aggregate`): fleet sizes and liveness by
  region, acknowledgement counts of the writes not yet everywhere, the freshness frontier,
  which removed incarnations are stable, and answers to quorum reads.
* ``edge``: publishes its heartbeats on ``hubs`` (so every hub counts it) and reads only
  ``agg.<its hub>``. It answers every level from that aggregate plus its own state:
  O(what changed) bytes per round, whatever the fleet size.

Edges may name groups by region (or ``None``, everyone); a *name* group
(``frozenset``) needs those replicas' own heartbeats, which an edge does not read, so at
an edge it fails with ``Unavailable`` explaining that (make such replicas peers or hubs).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EDGE", "HUB", "PEER", "PEERS_TOPIC", "HUBS_TOPIC", "Topology", "aggregate_topic"]

PEER, HUB, EDGE = "peer", "hub", "edge"
PEERS_TOPIC = "peers"
HUBS_TOPIC = "hubs"


def aggregate_topic(hub: str) -> str:
    """The topic hub ``hub`` publishes its aggregate on."""
    return f"agg.{hub}"


@dataclass(frozen=True)
class Topology:
    """A replica's place in the control fleet.

    Attributes:
        role: ``"peer"``, ``"hub"`` or ``"edge"``.
        hub: for an edge, the name of the hub whose aggregate it reads.
        full_every: a full (not delta) heartbeat at least every this many messages; a
            receiver that lost a delta waits at most this long (it asks at once, so the
            period only bounds a lost request). Defaults: 32 for peers; 256 for hubs
            (a full aggregate lists every member's fresh seq, read by all its edges);
            1024 for edges (their full heartbeats are read by every hub).
        ping_ttl_ms: how long a hub relays an edge's quorum-read ping to the other edges.
    """

    role: str = PEER
    hub: str | None = None
    full_every: int | None = None
    ping_ttl_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.role not in (PEER, HUB, EDGE):
            raise ValueError(f"role must be 'peer', 'hub' or 'edge', got {self.role!r}")
        if (self.role == EDGE) != (self.hub is not None):
            raise ValueError("an edge names its hub (Topology('edge', hub='h0')); only edges do")
        if self.full_every is not None and self.full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {self.full_every}")

    @property
    def full_period(self) -> int:
        """Messages between two full heartbeats."""
        if self.full_every is not None:
            return self.full_every
        return {PEER: 32, HUB: 256, EDGE: 1024}[self.role]

    def heartbeat_topic(self) -> str:
        """Where this replica publishes its heartbeats."""
        return PEERS_TOPIC if self.role == PEER else HUBS_TOPIC

    def subscriptions(self) -> tuple[str, ...]:
        """The topics this replica reads."""
        if self.role == PEER:
            return (PEERS_TOPIC,)
        if self.role == HUB:
            return (HUBS_TOPIC,)
        assert self.hub is not None
        return (aggregate_topic(self.hub),)
