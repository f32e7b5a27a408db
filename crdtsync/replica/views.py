"""The fleet as the coordinator sees it: from every peer's heartbeat, or from a hub.

:class:`Coordinator` asks a :class:`FleetView` (group sizes, acks, liveness, quorum-read
answers, staleness, stability) and decides every level from the answers, so the rules
exist once. :class:`PeerView` answers from this replica's own
:class:`~crdtsync.control.Membership` (a peer or a hub: it reads every heartbeat);
:class:`HubFedView` answers an edge's questions from its hub's aggregate
(:class:`~crdtsync.control.aggregate.EdgeView`). Which one a replica uses follows its
:class:`~crdtsync.control.topology.Topology`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..clock import Dot
from ..control import Membership
from ..control.aggregate import EdgeView, needed
from ..policy import Group, WriteLevel
from .fleet import Fleet
from .identity import ReplicaIdentity
from .store import Store

__all__ = ["FleetView", "HubFedView", "PeerView"]


class FleetView(Protocol):
    """What the coordinator needs to know about the fleet."""

    def size(self, group: Group) -> int: ...
    def ack_count(self, dot: Dot, group: Group) -> int: ...
    def acked_by(self, dot: Dot, group: Group) -> str: ...
    def live_count(self, group: Group, now_ms: int, within_ms: int) -> int: ...
    def describe_live(self, group: Group, now_ms: int, within_ms: int) -> str: ...
    def quorum_read_ready(self, level: Any, ping: int) -> bool: ...
    def answered(self, ping: int, group: Group) -> str: ...
    def staleness(self, now_ms: int) -> float: ...
    def stable_for(self, actor: str, upto: int) -> bool: ...


class PeerView:
    """The fleet from every replica's own heartbeats (peers and hubs)."""

    def __init__(self, identity: ReplicaIdentity, store: Store, membership: Membership, fleet: Fleet) -> None:
        self.identity = identity
        self._store = store
        self.membership = membership
        self._fleet = fleet

    def acks(self, dot: Dot, group: Group) -> frozenset[str]:
        """The members of ``group`` known to have applied ``dot``."""
        acks = self.membership.acks(dot, group)
        me = self.identity.name
        if dot in self._store.ctx() and me in self._fleet.members(group):
            acks = acks | {me}
        return acks

    def size(self, group: Group) -> int:
        return len(self._fleet.members(group))

    def ack_count(self, dot: Dot, group: Group) -> int:
        return len(self.acks(dot, group) & self._fleet.members(group))

    def acked_by(self, dot: Dot, group: Group) -> str:
        return str(sorted(self.acks(dot, group)))

    def _live(self, group: Group, now_ms: int, within_ms: int) -> frozenset[str]:
        return self.membership.live(group, now_ms, within_ms) & self._fleet.members(group)

    def live_count(self, group: Group, now_ms: int, within_ms: int) -> int:
        return len(self._live(group, now_ms, within_ms))

    def describe_live(self, group: Group, now_ms: int, within_ms: int) -> str:
        return f"of {sorted(self._fleet.members(group))} but only {sorted(self._live(group, now_ms, within_ms))}"

    def quorum_read_ready(self, level: Any, ping: int) -> bool:
        members = self._fleet.members(level.group)
        answered = self.membership.answered(ping, level.group) & members
        if not members or len(answered) < needed(level, len(members)):
            return False
        return self.membership.frontier(answered - {self.identity.name}) <= self._store.ctx()

    def answered(self, ping: int, group: Group) -> str:
        return f"answered: {sorted(self.membership.answered(ping, group))}"

    def staleness(self, now_ms: int) -> float:
        return self.membership.staleness(now_ms, self._store.ctx())

    def stable_for(self, actor: str, upto: int) -> bool:
        return self.membership.stable_for(actor, upto)


class HubFedView:
    """An edge's fleet: its hub's aggregate (:class:`EdgeView`) and its own state."""

    def __init__(self, store: Store, edge: EdgeView, pruned: set[str]) -> None:
        self._store = store
        self.edge = edge
        self._pruned = pruned

    def size(self, group: Group) -> int:
        return self.edge.size(group)

    def ack_count(self, dot: Dot, group: Group) -> int:
        return self.edge.ack_count(dot, group, self._store.ctx())

    def acked_by(self, dot: Dot, group: Group) -> str:
        return f"{self.ack_count(dot, group)} of {self.size(group)} members, by the hub's count"

    def live_count(self, group: Group, now_ms: int, within_ms: int) -> int:
        return self.edge.live_count(group, now_ms, within_ms)

    def describe_live(self, group: Group, now_ms: int, within_ms: int) -> str:
        return (f"of {self.size(group)} members but only {self.live_count(group, now_ms, within_ms)} "
                "(by the hub's count)")

    def quorum_read_ready(self, level: WriteLevel, ping: int) -> bool:
        return self.edge.quorum_read_ready(level, ping, self._store.ctx())

    def answered(self, ping: int, group: Group) -> str:
        return self.edge.answered(ping)

    def staleness(self, now_ms: int) -> float:
        return self.edge.staleness(now_ms, self._store.ctx(), self._pruned)

    def stable_for(self, actor: str, upto: int) -> bool:
        return self.edge.stable_for(actor)
