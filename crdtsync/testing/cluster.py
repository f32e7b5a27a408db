"""A deterministic simulated cluster of real replicas, with network and crash faults.

Each node is a real :class:`~crdtsync.replica.Replica` whose "disk" is a
:class:`~crdtsync.log.memory.MemoryLog` plus an in-memory snapshot store. Nodes exchange
log records over simulated links: every step, each link ships the records its source log
holds beyond what it already shipped; the receiver appends records that carry events it
has not seen to its own log (so it can relay them) and applies them. Faults:

* ``partition(groups)`` / ``heal()``: links between groups carry nothing;
* ``drop``, ``duplicate`` probabilities and ``reorder`` (shuffle in-flight messages),
  ``delay`` (steps a message waits): set them on :attr:`Cluster.faults`;
* ``crash(node)``: the process dies (in-memory state and unsent messages are lost, its
  log and snapshots survive); ``restart(node)`` recovers it from snapshot + log tail;
* clock skew: ``skew_ms`` per node shifts that node's wall clock.

Lost messages are recovered by anti-entropy: :meth:`settle` re-ships every connected
link from the start, as replicas do after a reconnect. Everything is driven by one
seeded ``random.Random`` and one private event loop without background tasks, so a run
is reproducible from its seed. The API is synchronous (use it from plain or
hypothesis-stateful tests, not from inside a running event loop).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clock import HLC, Context
from ..errors import CorruptRecord, UnsupportedVersion
from ..events import Event, MsgpackCodec
from ..log.memory import MemoryLog
from ..replica import Replica, ReplicaIdentity
from ..schema import Definition, Schema
from ..snapshots import MemorySnapshotStore

__all__ = ["Cluster", "NetworkFaults", "assert_converged"]


@dataclass
class NetworkFaults:
    """Fault rates of the simulated network (all off by default)."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: bool = False
    delay: int = 0  # max steps a message may wait


@dataclass
class _Message:
    src: str
    dst: str
    payload: bytes
    due: int


@dataclass
class _Node:
    name: str
    identity: ReplicaIdentity
    log: MemoryLog = field(default_factory=MemoryLog)
    snapshots: MemorySnapshotStore = field(default_factory=MemorySnapshotStore)
    replica: Replica | None = None
    skew_ms: int = 0


class Cluster:
    """``n`` simulated replicas of ``schema`` with seeded network and crash faults."""

    def __init__(
        self,
        n: int = 5,
        *,
        schema: Schema | Iterable[Definition],
        seed: int = 0,
        snapshot_every: int = 64,
        regions: Sequence[str] | None = None,
        roles: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self.schema = schema if isinstance(schema, Schema) else Schema(schema)
        self.rng = random.Random(seed)
        self.faults = NetworkFaults()
        self.now_ms = 1_700_000_000_000
        self.step_count = 0
        self.snapshot_every = snapshot_every
        self._loop = asyncio.new_event_loop()
        self._codec = MsgpackCodec()
        names = list(names) if names is not None else [f"n{i}" for i in range(n)]
        self.nodes: dict[str, _Node] = {}
        for i, name in enumerate(names[:n]):
            ident = ReplicaIdentity(
                name, f"{seed:x}{i:02x}",
                regions[i % len(regions)] if regions else "default",
                roles[i % len(roles)] if roles else "default",
            )
            self.nodes[name] = _Node(name, ident)
        self._groups: list[frozenset[str]] | None = None
        self._shipped: dict[tuple[str, str], int] = {}
        self._in_flight: list[_Message] = []
        for name in self.nodes:
            self._start(name)

    # -- lifecycle ---------------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def _start(self, name: str) -> None:
        node = self.nodes[name]
        hlc = HLC(clock=self._clock_of(node))
        node.replica = self._run(Replica.open(
            schema=self.schema, log=node.log, identity=node.identity, snapshots=node.snapshots,
            snapshot_every=self.snapshot_every, hlc=hlc, follow=False,
        ))

    def _clock_of(self, node: _Node) -> Callable[[], int]:
        def wall_ms() -> int:
            return self.now_ms + node.skew_ms

        return wall_ms

    def close(self) -> None:
        for node in self.nodes.values():
            if node.replica is not None:
                node.replica._closed = True
        self._loop.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def replica(self, name: str) -> Replica:
        r = self.nodes[name].replica
        if r is None:
            raise RuntimeError(f"node {name} is crashed; restart({name!r}) it first")
        return r

    def up(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.replica is not None]

    # -- application operations -------------------------------------------------
    def write(self, name: str, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        """Write at ``name`` and make it durable in that node's log (write level LOCAL)."""
        r = self.replica(name)
        ev = r.write(field_name, key, op, *args, **kwargs)
        self._run(r.flush())
        self._run(r.catch_up())
        return ev

    def value(self, name: str, field_name: str, key: str) -> Any:
        return self.replica(name).value(field_name, key)

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    def skew(self, name: str, ms: int) -> None:
        """Shift node ``name``'s wall clock by ``ms`` (positive: ahead)."""
        self.nodes[name].skew_ms = ms

    # -- faults -----------------------------------------------------------------
    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Cut the network into ``groups``; nodes not named form one more group."""
        gs = [frozenset(g) for g in groups]
        rest = frozenset(self.nodes) - frozenset().union(*gs)
        if rest:
            gs.append(rest)
        self._groups = gs

    def heal(self) -> None:
        self._groups = None

    def connected(self, a: str, b: str) -> bool:
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    def crash(self, name: str) -> None:
        """Kill node ``name``: its memory and the messages to and from it are lost."""
        node = self.nodes[name]
        if node.replica is not None:
            node.replica._closed = True
            node.replica = None
        self._in_flight = [m for m in self._in_flight if name not in (m.src, m.dst)]

    def restart(self, name: str) -> None:
        """Restart a crashed node from its snapshot and log."""
        if self.nodes[name].replica is None:
            self._start(name)

    # -- the network --------------------------------------------------------------
    def step(self) -> None:
        """One network step: ship new records, deliver due messages, apply."""
        self.step_count += 1
        self.now_ms += self.rng.randint(0, 20)
        self._ship(with_faults=True)
        self._deliver(with_faults=True)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def settle(self, max_rounds: int = 100) -> None:
        """Anti-entropy until quiet: re-ship every connected link from the start, deliver
        everything (no drops), apply; repeats until no node learns anything new."""
        for a, b in list(self._shipped):
            if self.connected(a, b):
                self._shipped[(a, b)] = 0
        for _ in range(max_rounds):
            before = self._fingerprint()
            self._ship(with_faults=False)
            self._deliver(with_faults=False, all_due=True)
            if self._fingerprint() == before and not self._in_flight:
                return
        raise AssertionError(f"cluster did not settle within {max_rounds} rounds")

    def _fingerprint(self) -> tuple[Any, ...]:
        return tuple((n, node.replica.context if node.replica else None) for n, node in self.nodes.items())

    def _ship(self, *, with_faults: bool) -> None:
        up = self.up()
        for src in up:
            src_log = self.nodes[src].log
            records = list(src_log._records)
            base = src_log._start
            end = base + len(records)
            for dst in up:
                if dst == src or not self.connected(src, dst):
                    continue
                start = max(self._shipped.get((src, dst), 0), base)
                for pos in range(start, end):
                    payload = records[pos - base]
                    if with_faults and self.faults.drop and self.rng.random() < self.faults.drop:
                        continue
                    due = self.step_count + (self.rng.randint(0, self.faults.delay) if with_faults and self.faults.delay else 0)
                    self._in_flight.append(_Message(src, dst, payload, due))
                    if with_faults and self.faults.duplicate and self.rng.random() < self.faults.duplicate:
                        self._in_flight.append(_Message(src, dst, payload, due + 1))
                self._shipped[(src, dst)] = end
        if with_faults and self.faults.reorder:
            self.rng.shuffle(self._in_flight)

    def _deliver(self, *, with_faults: bool, all_due: bool = False) -> None:
        keep: list[_Message] = []
        batches: dict[str, list[bytes]] = {}
        for m in self._in_flight:
            if not all_due and m.due > self.step_count:
                keep.append(m)
                continue
            if self.nodes[m.dst].replica is None or not self.connected(m.src, m.dst):
                continue  # lost
            batches.setdefault(m.dst, []).append(m.payload)
        self._in_flight = keep
        for dst, payloads in batches.items():
            r = self.replica(dst)
            fresh = [p for p in payloads if self._is_new(r, p)]
            if fresh:
                self._run(r.log.append(fresh))
            self._run(r.catch_up())

    def _is_new(self, r: Replica, payload: bytes) -> bool:
        try:
            batch = self._codec.decode(payload)
        except (CorruptRecord, UnsupportedVersion):
            return True  # let the replica quarantine and count it
        ctx = r.context
        return any(ev.dot not in ctx for ev in batch.events)

    # -- checks ---------------------------------------------------------------
    def rebuild(self, name: str, *, use_snapshot: bool) -> Replica:
        """A fresh replica rebuilt from ``name``'s log (and its latest snapshot if asked)."""
        node = self.nodes[name]
        store = node.snapshots if use_snapshot else MemorySnapshotStore()
        hlc = HLC(clock=self._clock_of(node))
        r: Replica = self._run(Replica.open(
            schema=self.schema, log=node.log, identity=node.identity, snapshots=store,
            snapshot_every=10**12, hlc=hlc, follow=False,
        ))
        r._closed = True  # read-only copy: never writes
        return r

    def contexts(self) -> dict[str, Context]:
        return {n: self.replica(n).context for n in self.up()}


def assert_converged(target: Cluster | Sequence[Replica]) -> None:
    """Assert every (live) replica holds the same state and has seen the same events."""
    replicas = [target.replica(n) for n in target.up()] if isinstance(target, Cluster) else list(target)
    if not replicas:
        return
    first = replicas[0]
    for r in replicas[1:]:
        if r.context != first.context:
            raise AssertionError(f"{r.actor} has seen {r.context}, {first.actor} has seen {first.context}")
        if r.digest() != first.digest():
            diff = _first_difference(first, r)
            raise AssertionError(f"{r.actor} and {first.actor} saw the same events but differ: {diff}")


def _first_difference(a: Replica, b: Replica) -> str:
    sa, sb = a.export_state(), b.export_state()
    for f in sorted(set(sa) | set(sb)):
        ta, tb = sa.get(f, {}), sb.get(f, {})
        for k in sorted(set(ta) | set(tb)):
            if ta.get(k) != tb.get(k):
                return f"{f}/{k}: {ta.get(k)!r} vs {tb.get(k)!r}"
    return "(no visible difference)"
