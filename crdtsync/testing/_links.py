"""The simulated data links of a :class:`~crdtsync.testing.cluster.Cluster`.

Every step, each link (source node, destination node) ships the records its source's log
holds beyond what it already shipped, as messages subject to the cluster's
:class:`~crdtsync.testing.cluster.NetworkFaults` (drop, duplicate, delay, reorder, all
drawn from the cluster's seeded generator in a fixed order, so a run is reproducible).
Delivery appends, to the destination's log, the records that carry events it has not seen
(so it can relay them) and applies them. A record whose dots never enter a context
(refused as forged, held for a future stamp) is appended once per destination, not on
every re-ship, or such records would multiply from log to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CorruptRecord, UnsupportedVersion
from ..events import MsgpackCodec

if TYPE_CHECKING:
    from ..replica import Replica
    from .cluster import Cluster

__all__ = ["DataLinks"]


@dataclass
class _Message:
    src: str
    dst: str
    payload: bytes
    due: int


class DataLinks:
    """Log records on the wire between a cluster's nodes: shipping, faults, delivery."""

    def __init__(self, cluster: Cluster) -> None:
        self._c = cluster
        self._codec = MsgpackCodec()
        #: (src, dst) -> the source log position shipped up to
        self.shipped: dict[tuple[str, str], int] = {}
        #: messages sent and not yet delivered (or lost)
        self.in_flight: list[_Message] = []

    def cut(self, name: str) -> None:
        """Lose every message to and from ``name`` (it crashed)."""
        self.in_flight = [m for m in self.in_flight if name not in (m.src, m.dst)]

    def forget_source(self, name: str) -> None:
        """``name``'s log was replaced: ship it afresh from its start."""
        for link in [k for k in self.shipped if k[0] == name]:
            del self.shipped[link]

    def reship_all(self) -> None:
        """Every connected link ships its source's log from the start again (a reconnect)."""
        for a, b in list(self.shipped):
            if self._c.connected(a, b):
                self.shipped[(a, b)] = 0

    def ship(self, *, with_faults: bool) -> None:
        c = self._c
        faults, rng = c.faults, c.rng
        up = c.up()
        for src in up:
            src_log = c.nodes[src].log
            records = src_log._records  # nothing appends while we ship
            base = src_log._start
            end = base + len(records)
            for dst in up:
                if dst == src or not c.connected(src, dst):
                    continue
                start = max(self.shipped.get((src, dst), 0), base)
                for pos in range(start, end):
                    payload = records[pos - base]
                    if with_faults and faults.drop and rng.random() < faults.drop:
                        continue
                    due = c.step_count + (rng.randint(0, faults.delay) if with_faults and faults.delay else 0)
                    self.in_flight.append(_Message(src, dst, payload, due))
                    if with_faults and faults.duplicate and rng.random() < faults.duplicate:
                        self.in_flight.append(_Message(src, dst, payload, due + 1))
                self.shipped[(src, dst)] = end
        if with_faults and faults.reorder:
            rng.shuffle(self.in_flight)

    def deliver(self, *, with_faults: bool, all_due: bool = False) -> None:
        c = self._c
        keep: list[_Message] = []
        batches: dict[str, list[bytes]] = {}
        for m in self.in_flight:
            if not all_due and m.due > c.step_count:
                keep.append(m)
                continue
            if c.nodes[m.dst].replica is None or not c.connected(m.src, m.dst):
                continue  # lost
            batches.setdefault(m.dst, []).append(m.payload)
        self.in_flight = keep
        for dst, payloads in batches.items():
            r = c.replica(dst)
            held = c.nodes[dst].delivered
            # duplicates within one delivery stay (the replica must apply them idempotently)
            fresh = [p for p in payloads if p not in held and self._is_new(r, p)]
            held.update(fresh)
            if fresh:
                c._run(r.log.append(fresh))
            c._run(r.catch_up())

    def _is_new(self, r: Replica, payload: bytes) -> bool:
        try:
            batch = self._codec.decode(payload)
        except (CorruptRecord, UnsupportedVersion):
            return True  # let the replica quarantine and count it
        ctx = r.context
        return any(ev.dot not in ctx for ev in batch.events)
