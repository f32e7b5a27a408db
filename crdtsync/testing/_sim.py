"""A small delta-propagation network for the law suite (Yjs-test style).

``n`` replicas of one type issue operations; each operation's delta is broadcast to the
connected replicas as a message. Messages are delivered in random order, possibly more
than once, but causally: a message waits until its receiver has seen everything its
sender had seen when issuing it (as Yjs buffers pending updates). A disconnected replica
loses the messages sent to and from it; reconnecting exchanges full states with every
connected replica, which is how a delta-CRDT recovers lost deltas (anti-entropy).

Because delivery is causal, every replica's state corresponds exactly to the history of
the events it has seen, so the reference model can be checked at every step, not only
at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clock import make_hlc
from ..types._base import CRDT
from ._spec import HistoryEvent, Op, TypeSpec

__all__ = ["DeltaNetwork", "actor_name"]


def actor_name(i: int) -> str:
    return f"r{i}"


@dataclass
class _Message:
    dst: int
    delta: CRDT[Any]
    event: int
    deps: frozenset[int]


@dataclass
class DeltaNetwork:
    spec: TypeSpec[Any]
    n: int
    states: list[CRDT[Any]] = field(init=False)
    seen: list[set[int]] = field(init=False)
    history: list[HistoryEvent] = field(init=False, default_factory=list)
    deltas: list[CRDT[Any]] = field(init=False, default_factory=list)
    inflight: list[_Message] = field(init=False, default_factory=list)
    connected: list[bool] = field(init=False)
    wall_ms: int = field(init=False, default=1_000)
    last_ts: list[int] = field(init=False)
    seen_ts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.states = [self.spec.empty() for _ in range(self.n)]
        self.seen = [set() for _ in range(self.n)]
        self.connected = [True] * self.n
        self.last_ts = [0] * self.n
        self.seen_ts = [0] * self.n

    # -- steps -----------------------------------------------------------------
    def op(self, r: int, op: Op, advance_ms: int = 0) -> CRDT[Any] | None:
        """Replica ``r`` performs ``op``; its delta is joined locally and broadcast.

        Returns ``None`` if the type refused ``op`` with one of ``spec.rejects``: a
        refusal changes no state and is not an event.
        """
        self.wall_ms += advance_ms
        # HLC: after our own last stamp and after everything we have seen
        ts = max(make_hlc(self.wall_ms), self.last_ts[r] + 1, self.seen_ts[r] + 1)
        self.last_ts[r] = ts
        self.seen_ts[r] = max(self.seen_ts[r], ts)
        eid = len(self.history)
        past = frozenset(self.seen[r])
        try:
            delta = op.apply(self.states[r], actor=actor_name(r), ts=ts)
        except self.spec.rejects:
            return None
        self.history.append(HistoryEvent(eid, actor_name(r), ts, op, past))
        self.deltas.append(delta)
        self.states[r] = self.states[r].join(delta)
        self.seen[r].add(eid)
        if self.connected[r]:
            for dst in range(self.n):
                if dst != r and self.connected[dst]:
                    self.inflight.append(_Message(dst, delta, eid, past))
        return delta

    def deliverable(self) -> list[int]:
        return [i for i, m in enumerate(self.inflight) if m.deps <= self.seen[m.dst]]

    def deliver(self, index: int, *, keep: bool = False) -> None:
        """Deliver message ``index`` (``keep=True`` leaves a duplicate in flight)."""
        m = self.inflight[index] if keep else self.inflight.pop(index)
        self.states[m.dst] = self.states[m.dst].join(m.delta)
        self.seen[m.dst].add(m.event)
        self.seen_ts[m.dst] = max(self.seen_ts[m.dst], self.history[m.event].ts)

    def disconnect(self, r: int) -> None:
        self.connected[r] = False
        self.inflight = [m for m in self.inflight if m.dst != r and m.event not in self._origin_events(r)]

    def _origin_events(self, r: int) -> set[int]:
        a = actor_name(r)
        return {e.id for e in self.history if e.actor == a}

    def reconnect(self, r: int) -> None:
        self.connected[r] = True
        for o in range(self.n):
            if o != r and self.connected[o]:
                self.sync(r, o)

    def sync(self, a: int, b: int) -> None:
        """Full-state exchange between replicas ``a`` and ``b``."""
        joined = self.states[a].join(self.states[b])
        self.states[a] = self.states[b] = joined
        both = self.seen[a] | self.seen[b]
        self.seen[a] = set(both)
        self.seen[b] = set(both)
        ts = max(self.seen_ts[a], self.seen_ts[b])
        self.seen_ts[a] = self.seen_ts[b] = ts

    def flush(self) -> None:
        """Reconnect everyone and deliver everything still in flight."""
        for r in range(self.n):
            if not self.connected[r]:
                self.reconnect(r)
        while True:
            ready = self.deliverable()
            if not ready:
                break
            self.deliver(ready[0])

    # -- checks ----------------------------------------------------------------
    def seen_history(self, r: int) -> list[HistoryEvent]:
        return [e for e in self.history if e.id in self.seen[r]]

    def expected_value(self, r: int | None = None) -> Any:
        assert self.spec.model is not None
        events = self.history if r is None else self.seen_history(r)
        return self.spec.model(events)
