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

Lost messages are recovered by anti-entropy, in the background: with heartbeats on,
every node runs its replica's anti-entropy part (:mod:`crdtsync.replica.antientropy`):
digests travel with the heartbeats (their losses drawn from a third seeded generator)
and each step starts with every node re-publishing the records a peer's digest showed
it lacks, so :meth:`run` repairs drops. :meth:`settle` still re-ships every connected
link from the start, as replicas do after a reconnect. Everything is driven by one
seeded ``random.Random`` and one private event loop without background tasks, so a run
is reproducible from its seed. The API is synchronous (use it from plain or
hypothesis-stateful tests, not from inside a running event loop).

**Heartbeats and consistency levels, in simulated time.** Every replica's HLC reads the
cluster's simulated clock (``replica.now_ms()`` is ``cluster.now_ms`` plus the node's
skew). Unless ``heartbeat_ms=None``, the cluster plays the control channel: at the end of
every step, each live node whose heartbeat is due (``heartbeat_ms`` of simulated time
since its last one, every step with ``heartbeat_ms=0``, or at once when its context, its
pending quorum-read ping or its answers to peers' pings changed, as a real replica
reports promptly) builds ``replica.heartbeat()``, observes it itself and sends its
encoded bytes to every connected live node (``replica.observe_heartbeat(bytes)``).
Heartbeats respect partitions and crashes, are lost with probability
``faults.heartbeat_drop`` (``None``: the same as ``faults.drop``), never wait (no delay
or reorder) and draw their losses from a second seeded generator, so turning them on
does not change which data messages a seed drops. A (re)started node first hears the
last heartbeat of every connected peer, as with :class:`~crdtsync.control.MemoryControl`,
then sends its own at once.

Heartbeats travel as each replica's control code sends them: numbered delta streams
with periodic full messages (:mod:`crdtsync.control.stream`), so a dropped heartbeat is a
gap the receiver detects and repairs by asking for a full one. With ``hubs=k`` the first
``k`` nodes are hubs and the others edges (assigned round-robin to the hubs), or give
``topologies`` per node: messages go only to the nodes subscribed to their topic
(:mod:`crdtsync.control.topology`), and :attr:`Cluster.control_bytes` counts, per node,
the control bytes it read.
A peer is *live* when its heartbeat arrived within ``liveness_ms`` of simulated time
(default three heartbeat intervals).

:meth:`Cluster.update` and :meth:`Cluster.read` run the policy engine of one field the
way ``await replica.update(...)`` / ``await replica.read(...)`` do, but wait by stepping
the cluster (so timeouts are simulated milliseconds): ack levels fail fast with
``Unavailable(event=None)`` when too few peers are live, else write, then step until the
level is acknowledged or the timeout passes (``Unavailable(event=ev)``; the write stays
applied and keeps replicating). ``SEQUENCED`` writes and ``LINEARIZABLE`` reads need one
shared log, which this mesh of private logs does not have: they raise
``NotImplementedError`` (test them with replicas sharing one ``MemoryLog``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..clock import HLC, Context
from ..control import Deliver
from ..control.stream import Retained
from ..control.topology import EDGE, HUB, Topology
from ..events import Event
from ..log.memory import MemoryLog
from ..policy import (
    ACKS,
    ALL,
    LINEARIZABLE,
    LOCAL,
    QUORUM,
    SEQUENCED,
    ReadLevel,
    WriteLevel,
)
from ..replica import Replica, ReplicaIdentity
from ..replica.coordination import Wait
from ..schema import Definition, Schema
from ..snapshots import MemorySnapshotStore
from ._links import DataLinks

__all__ = ["Cluster", "NetworkFaults", "assert_converged"]

#: the most simulated time one step advances (ms); each step draws 0..this
_STEP_MS = 20


@dataclass
class NetworkFaults:
    """Fault rates of the simulated network (all off by default)."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: bool = False
    delay: int = 0  # max steps a message may wait
    #: loss rate of heartbeats (the control channel); None: the same as ``drop``
    heartbeat_drop: float | None = None


@dataclass
class _Node:
    name: str
    identity: ReplicaIdentity
    log: MemoryLog = field(default_factory=MemoryLog)
    snapshots: MemorySnapshotStore = field(default_factory=MemorySnapshotStore)
    replica: Replica | None = None
    skew_ms: int = 0
    hb_at: int | None = None  # cluster time of this node's last heartbeat
    hb_mark: tuple[Any, ...] | None = None  # (context, ping, echo) it reported then
    #: payloads already appended to ``log`` by delivery: a record whose dots stay out of the
    #: context (refused as forged, held for a future stamp) is not appended again on every
    #: re-ship, or such records would multiply from log to log
    delivered: set[bytes] = field(default_factory=set)


class _SimulatedControl:
    """The control channel of a cluster node: present (so ack levels and quorum reads are
    allowed), but inert. The :class:`Cluster` carries heartbeats itself, in simulated time."""

    def __init__(self) -> None:
        self.published = 0

    def start(self, name: str, deliver: Deliver) -> None:
        pass

    async def publish(self, data: bytes) -> None:
        self.published += 1

    async def close(self) -> None:
        pass


class Cluster:
    """``n`` simulated replicas of ``schema`` with seeded network and crash faults.

    ``heartbeat_ms``: simulated ms between a node's heartbeats (``0``: every step;
    ``None``: no heartbeats, and no level-aware operations). ``liveness_ms``: simulated
    ms of silence after which a peer counts as unreachable (default three heartbeat
    intervals, at least three steps' worth). ``antientropy``: nodes exchange
    anti-entropy digests with their heartbeats and re-publish, at the start of every
    step, the records a peer lacks (:mod:`crdtsync.replica.antientropy`), so dropped
    records are repaired during :meth:`run`.
    """

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
        heartbeat_ms: int | None = 100,
        liveness_ms: int | None = None,
        hubs: int = 0,
        topologies: dict[str, Topology] | None = None,
        antientropy: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        if heartbeat_ms is not None and heartbeat_ms < 0:
            raise ValueError(f"heartbeat_ms must be >= 0 (0: every step) or None, got {heartbeat_ms}")
        self.schema = schema if isinstance(schema, Schema) else Schema(schema)
        self.rng = random.Random(seed)
        # heartbeat losses come from their own stream: enabling heartbeats must not change
        # which data messages a seed drops
        self._hb_rng = random.Random(f"crdtsync-heartbeats-{seed}")
        #: whether nodes exchange anti-entropy digests (with heartbeats) and re-publish
        self.antientropy = antientropy
        self._ae_rng = random.Random(f"crdtsync-antientropy-{seed}")
        #: anti-entropy digests delivered so far
        self.digests_delivered = 0
        self.faults = NetworkFaults()
        self.now_ms = 1_700_000_000_000
        self.step_count = 0
        self.snapshot_every = snapshot_every
        self.heartbeat_ms = heartbeat_ms
        if liveness_ms is None:
            liveness_ms = 3 * max(heartbeat_ms or 0, _STEP_MS)
        if liveness_ms <= 0:
            raise ValueError(f"liveness_ms must be positive, got {liveness_ms}")
        self.liveness_ms = liveness_ms
        #: heartbeats built, delivered and lost (drop faults) so far
        self.heartbeats_sent = 0
        self.heartbeats_delivered = 0
        self.heartbeats_dropped = 0
        #: control bytes each node read (heartbeats and hub aggregates)
        self.control_bytes: dict[str, int] = {}
        self._retained: dict[str, Retained] = {}  # per topic: what a (re)joining node is given
        self._loop = asyncio.new_event_loop()
        names = list(names) if names is not None else [f"n{i}" for i in range(n)]
        self.nodes: dict[str, _Node] = {}
        for i, name in enumerate(names[:n]):
            ident = ReplicaIdentity(
                name, f"{seed:x}{i:02x}",
                regions[i % len(regions)] if regions else "default",
                roles[i % len(roles)] if roles else "default",
            )
            # the links between nodes drop records: the nodes' logs say so (anti-entropy)
            self.nodes[name] = _Node(name, ident, log=MemoryLog(may_lose_records=antientropy))
        self.topologies: dict[str, Topology] = dict(topologies or {})
        if hubs:
            hub_names = list(self.nodes)[:hubs]
            for i, name in enumerate(self.nodes):
                self.topologies.setdefault(name, Topology(HUB) if i < hubs
                                           else Topology(EDGE, hub=hub_names[(i - hubs) % hubs]))
        self._groups: list[frozenset[str]] | None = None
        self.links = DataLinks(self)
        for name in self.nodes:
            self._start(name, with_faults=False)  # so everyone knows the fleet from the start

    # -- lifecycle ---------------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    def _start(self, name: str, *, with_faults: bool = True) -> None:
        node = self.nodes[name]
        hlc = HLC(clock=self._clock_of(node))
        beats = self.heartbeat_ms is not None
        node.replica = r = self._run(Replica.open(
            schema=self.schema, log=node.log, identity=node.identity, snapshots=node.snapshots,
            snapshot_every=self.snapshot_every, hlc=hlc, follow=False,
            control=_SimulatedControl() if beats else None,
            heartbeat_interval=max(self.heartbeat_ms or 0, _STEP_MS) / 1000,
            liveness=self.liveness_ms / 1000, topology=self.topology(name),
        ))
        r.skew.mono_ms = lambda: self.now_ms  # peers' clocks carried forward in simulated time
        node.hb_at = node.hb_mark = None
        if beats:
            subs = self.topology(name).subscriptions()
            for topic in subs:  # what peers said before we (re)joined
                for src, data in self._retained.get(topic, Retained()).replay():
                    if src != name and self.connected(src, name):
                        self._read(name, data)
            self._heartbeats(with_faults=with_faults, only=name)  # a started replica speaks at once

    def topology(self, name: str) -> Topology:
        """Node ``name``'s control role (peer unless configured)."""
        return self.topologies.get(name, Topology())

    def _read(self, dst: str, data: bytes) -> None:
        self.control_bytes[dst] = self.control_bytes.get(dst, 0) + len(data)
        self.replica(dst).observe_heartbeat(data)

    def _clock_of(self, node: _Node) -> Callable[[], int]:
        def wall_ms() -> int:
            return self.now_ms + node.skew_ms

        return wall_ms

    def close(self) -> None:
        for node in self.nodes.values():
            if node.replica is not None:
                node.replica._mark_closed()
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

    @property
    def in_flight(self) -> int:
        """Data messages still on the wire (a partition or crash loses the ones it cuts)."""
        return len(self.links.in_flight)

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

    # -- operations at consistency levels (simulated time) ------------------------
    def update(
        self, name: str, field_name: str, key: str, op: str, *args: Any,
        write: WriteLevel | None = None, timeout_ms: int | None = None, **kwargs: Any,
    ) -> Event:
        """Write at ``name`` and wait, in simulated time, for what the field's write level
        (or the stronger ``write`` override) promises; returns the event.

        Like ``await replica.update(...)``: ``LOCAL``/``LOG`` return once the write is in
        the node's log. Ack levels (``ACKS``/``QUORUM``/``ALL``) raise
        ``Unavailable(event=None)`` before writing anything when too few members of the
        group were heard from within ``liveness_ms``; otherwise they write and step the
        cluster until heartbeats acknowledge the write, or until ``timeout_ms`` (default:
        the policy's timeout) of simulated time passed: then ``Unavailable(event=ev)``,
        and the write stays applied and keeps replicating (with
        ``on_unavailable="local"`` the write is returned instead, and counted).
        ``SEQUENCED`` raises ``NotImplementedError`` (no shared log in this cluster).
        """
        r = self.replica(name)
        d = r.admission.check_write(field_name, key)
        res = d.policy.resolve(write=write)
        level = res.write
        if level == SEQUENCED:
            raise NotImplementedError(
                f"{field_name!r} is written at SEQUENCED, which needs one shared log to order "
                "operations; this simulated Cluster gives every node a private log. Test "
                "sequenced fields with replicas sharing one MemoryLog"
            )
        acked = isinstance(level, (ACKS, QUORUM, ALL))
        if acked:
            self._need_heartbeats(level)
            r.coordinator.check_reachable(level, res.on_unavailable)
        ev = r._writer.write_raw(field_name, key, d.empty, op, args, kwargs, d.version)
        self._run(r.flush())
        self._run(r.catch_up())
        if not acked:
            return ev
        self._wait(r.coordinator.ack_wait(level, res.on_unavailable, ev, f"{field_name}/{key}", f"at {name}"),
                   self._wait_ms(timeout_ms, res.timeout))
        return ev

    def read(
        self, name: str, field_name: str, key: str, level: ReadLevel | None = None,
        timeout_ms: int | None = None,
    ) -> Any:
        """Read at ``name`` at the field's read level (or the stronger ``level``), waiting
        in simulated time like ``await replica.read(...)``.

        ``LOCAL``: the value now. ``MAX_STALENESS(t)``: ``StaleRead`` if the node may be
        more than ``t`` stale (with ``wait=True``, after stepping up to the timeout).
        ``SESSION(token)``: steps until the node holds ``token``, else ``StaleRead``.
        ``QUORUM``/``ALL``: pings the group through heartbeats and steps until enough
        members answered and the node holds what they reported, else ``Unavailable``.
        ``LINEARIZABLE`` raises ``NotImplementedError`` (no shared log in this cluster).
        """
        r = self.replica(name)
        res = r.definitions.get(field_name).policy.resolve(read=level)
        if res.read == LINEARIZABLE:
            raise NotImplementedError(
                f"{field_name!r} is read at LINEARIZABLE, which syncs to one shared log's end; "
                "this simulated Cluster gives every node a private log. Test it with replicas "
                "sharing one MemoryLog"
            )
        if res.read != LOCAL:
            self._need_heartbeats(res.read)
        w = r.coordinator.read_wait(res.read, res.on_unavailable, field_name, name)
        if w is not None:
            self._wait(w, self._wait_ms(timeout_ms, res.timeout))
        return r.value(field_name, key)

    def _wait(self, w: Wait, wait_ms: int) -> None:
        """Run a level's wait in simulated time (the prompt heartbeat is the next step's)."""
        ok = w.ready() or (w.patient and self._step_until(w.ready, wait_ms))
        if not ok:
            exc = w.failure(f"{wait_ms} simulated ms")
            if exc is not None:
                raise exc

    def _wait_ms(self, timeout_ms: int | None, policy_timeout: float) -> int:
        if timeout_ms is None:
            return round(policy_timeout * 1000)
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        return timeout_ms

    def _step_until(self, pred: Callable[[], bool], wait_ms: int) -> bool:
        """Step until ``pred()`` holds (True) or ``wait_ms`` of simulated time passed (False)."""
        deadline = self.now_ms + wait_ms
        while not pred():
            if self.now_ms >= deadline:
                return False
            self.step()
        return True

    def _need_heartbeats(self, level: WriteLevel | ReadLevel) -> None:
        if self.heartbeat_ms is None:
            raise RuntimeError(
                f"{level!r} is decided by heartbeats, and this Cluster was made with "
                "heartbeat_ms=None; give it a heartbeat interval"
            )

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
            node.replica._mark_closed()
            node.replica = None
        self.links.cut(name)

    def restart(self, name: str) -> None:
        """Restart a crashed node from its snapshot and log."""
        if self.nodes[name].replica is None:
            self._start(name)

    def backup(self, name: str) -> tuple[list[bytes], MemorySnapshotStore]:
        """A copy of node ``name``'s disk now: its log's records and its snapshots."""
        node = self.nodes[name]
        snaps = MemorySnapshotStore()
        snaps.blobs = list(node.snapshots.blobs)
        return list(node.log._records), snaps

    def restore_backup(self, name: str, backup: tuple[list[bytes], MemorySnapshotStore]) -> None:
        """Crash node ``name`` and restart it from an old :meth:`backup` of its disk: it has
        forgotten everything after it (its peers' links start shipping its new log afresh)."""
        if self.nodes[name].replica is not None:
            self.crash(name)
        records, snaps = backup
        node = self.nodes[name]
        node.log = MemoryLog(may_lose_records=self.antientropy)
        if records:
            self._run(node.log.append(records))
        node.snapshots = snaps
        node.delivered.clear()  # what delivery appended to the old log is not in this one
        self.links.forget_source(name)
        self.restart(name)

    # -- the network --------------------------------------------------------------
    def step(self) -> None:
        """One network step: advance the clock, ship new records, deliver due messages,
        apply, then exchange the heartbeats that are due."""
        self.step_count += 1
        self.now_ms += self.rng.randint(0, _STEP_MS)
        for name in self.up() if self.antientropy else ():  # re-publish what peers' digests showed they lack
            self._run(self.replica(name).antientropy.repair())
        self.links.ship(with_faults=True)
        self.links.deliver(with_faults=True)
        for name in self.up():  # events held for a future timestamp apply once clocks agree
            self.replica(name).retry_held()
        self._heartbeats(with_faults=True)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def run_for(self, ms: int) -> None:
        """Step until at least ``ms`` of simulated time passed."""
        end = self.now_ms + ms
        while self.now_ms < end:
            self.step()

    def settle(self, max_rounds: int = 100) -> None:
        """Anti-entropy until quiet: re-ship every connected link from the start, deliver
        everything (no drops), apply; repeats until no node learns anything new. Ends with
        a loss-free heartbeat round, so every node's view of its peers is current."""
        self.links.reship_all()
        for _ in range(max_rounds):
            before = self._fingerprint()
            self.links.ship(with_faults=False)
            self.links.deliver(with_faults=False, all_due=True)
            if self._fingerprint() == before and not self.links.in_flight:
                self._heartbeats(with_faults=False)
                return
        raise AssertionError(f"cluster did not settle within {max_rounds} rounds")

    def _fingerprint(self) -> tuple[Any, ...]:
        return tuple((n, node.replica.context if node.replica else None) for n, node in self.nodes.items())

    def _heartbeats(self, *, with_faults: bool, only: str | None = None) -> None:
        """Every live node whose heartbeat is due (or node ``only``, now) reports to every
        connected live node."""
        if self.heartbeat_ms is None:
            return
        up = self.up()
        sent: list[tuple[str, str, bytes]] = []
        for name in up if only is None else [only]:
            node = self.nodes[name]
            r = self.replica(name)
            beats = r.heartbeats
            # a replica reports at once when what it would say changed, when it lost a
            # peer's stream or was asked for a full one; a hub also when it heard news
            mark = (r.context, beats.ping, tuple(sorted(beats.echo.items())), frozenset(beats.resync()),
                    beats.encoder.full_wanted, beats.aggregator is not None and r.membership.stats.accepted)
            if only is None and node.hb_at is not None and mark == node.hb_mark \
                    and self.now_ms - node.hb_at < self.heartbeat_ms:
                continue
            node.hb_at, node.hb_mark = self.now_ms, mark
            for topic, data in r.heartbeats.messages():  # (it observes its own heartbeat)
                self._retained.setdefault(topic, Retained()).add(name, data)
                self.heartbeats_sent += 1
                sent.append((name, topic, data))
        drop = self.faults.heartbeat_drop if self.faults.heartbeat_drop is not None else self.faults.drop
        readers = {n: self.topology(n).subscriptions() for n in up}
        for src, topic, data in sent:
            for dst in up:
                if dst == src or topic not in readers[dst] or not self.connected(src, dst):
                    continue
                if with_faults and drop and self._hb_rng.random() < drop:
                    self.heartbeats_dropped += 1
                    continue
                self._read(dst, data)
                self.heartbeats_delivered += 1
        if only is None and self.antientropy:
            self._digests(with_faults=with_faults, up=up, readers=readers)

    def _digests(self, *, with_faults: bool, up: list[str], readers: dict[str, Any]) -> None:
        """Anti-entropy digests: each node's, when due, to the nodes reading its heartbeat
        topic (not retained, not counted as heartbeats; losses from their own generator)."""
        drop = self.faults.heartbeat_drop if self.faults.heartbeat_drop is not None else self.faults.drop
        for src in up:
            data = self.replica(src).antientropy.message()
            if data is None:
                continue
            topic = self.topology(src).heartbeat_topic()
            for dst in up:
                if dst == src or topic not in readers[dst] or not self.connected(src, dst):
                    continue
                if with_faults and drop and self._ae_rng.random() < drop:
                    continue
                self.digests_delivered += 1
                self._read(dst, data)

    # -- checks ---------------------------------------------------------------
    def rebuild(self, name: str, *, use_snapshot: bool) -> Replica:
        """A fresh replica rebuilt from ``name``'s log (and its latest snapshot if asked)."""
        node = self.nodes[name]
        store = node.snapshots if use_snapshot else MemorySnapshotStore()
        hlc = HLC(clock=self._clock_of(node))
        r: Replica = self._run(Replica.open(
            schema=self.schema, log=node.log, identity=node.identity, snapshots=store,
            snapshot_every=10**12, hlc=hlc, follow=False, control=None,
        ))
        r._mark_closed()  # read-only copy: never writes
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
