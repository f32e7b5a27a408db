"""Small builders and fakes shared by the part tests.

Construction of the collaborators the lead is reworking (``Store``, ``Writer``) is kept
here, in one place, so a change of their constructors is a one-line change for every
part test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from crdtsync.clock import HLC, make_hlc
from crdtsync.control import Heartbeat, Membership
from crdtsync.events import Event, MsgpackCodec
from crdtsync.log import MemoryLog
from crdtsync.replica.admission import Admission
from crdtsync.replica.definitions import Definitions
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.replica.skew import ClockSkewMonitor
from crdtsync.replica.stats import ReplicaStats
from crdtsync.replica.store import Store
from crdtsync.replica.subscriptions import Subscriptions
from crdtsync.replica.writer import Writer
from crdtsync.schema import Definition, Schema
from crdtsync.types._base import CRDT

CODEC = MsgpackCodec()


def ident(name: str = "a", region: str = "eu", role: str = "default", incarnation: str = "i1") -> ReplicaIdentity:
    return ReplicaIdentity(name, incarnation, region, role)


def defs(*fields: Definition, admins: Any = None, stats: ReplicaStats | None = None) -> Definitions:
    return Definitions(Schema(fields), stats or ReplicaStats(), admins)


def store(actor: str, definitions: Definitions) -> Store:
    return Store(actor, definitions)


def writer(identity: ReplicaIdentity, st: Store, definitions: Definitions, admission: Admission,
           stats: ReplicaStats, hlc: HLC, log_: MemoryLog, subs: Subscriptions | None = None) -> Writer:
    meta = {"region": identity.region, "role": identity.role}
    return Writer(identity.actor, st, definitions, admission, subs or Subscriptions(stats), stats, hlc, CODEC,
                  log_, meta)


def event(origin: str, seq: int, fname: str, key: str, delta: CRDT[Any], wall_ms: int = 1_000) -> Event:
    return Event(origin, seq, make_hlc(wall_ms), fname, key, delta)


def heartbeat(identity: ReplicaIdentity, context: Any, wall_ms: int, *, hlc: int | None = None,
              ping: int = 0, echo: dict[str, int] | None = None, pruned: frozenset[str] = frozenset()) -> Heartbeat:
    return Heartbeat(identity.actor, identity.name, identity.region, identity.role, context, wall_ms,
                     hlc if hlc is not None else make_hlc(wall_ms), {}, {}, ping, echo or {}, pruned)


class FakeClock:
    """A wall clock in ms that tests move by hand (for HLC and the skew monitor)."""

    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class Calls:
    """An async callable that counts its calls (catch_up, flush, snapshot)."""

    def __init__(self, effect: Callable[[], Awaitable[object] | object] | None = None) -> None:
        self.n = 0
        self._effect = effect

    async def __call__(self) -> object:
        self.n += 1
        if self._effect is not None:
            out = self._effect()
            if asyncio.iscoroutine(out):
                return await out
            return out
        return None


def membership(identity: ReplicaIdentity, max_drift_ms: int = 60_000) -> Membership:
    return Membership(local=identity.name, max_drift_ms=max_drift_ms)


def skew(stats: ReplicaStats, clock: FakeClock | None = None, max_drift_ms: int = 60_000,
         horizon_ms: int = 600_000) -> ClockSkewMonitor:
    kw: dict[str, Any] = {"horizon_ms": horizon_ms}
    if clock is not None:
        kw["mono_ms"] = clock
    return ClockSkewMonitor(max_drift_ms=max_drift_ms, stats=stats, actor="a~i1", **kw)


class Assembly:
    """The parts the consistency levels use, wired as ``parts.assemble`` wires them, with
    no applier or follower: the test plays the peers by handing heartbeats in.

    ``clock`` is the wall clock of the HLC, of heartbeats and of liveness; ``log`` is the
    replica's own (and sequencing) log.
    """

    def __init__(self, fields: tuple[Definition, ...], identity: ReplicaIdentity | None = None, *,
                 control: bool = True, liveness: float = 3.0, log: MemoryLog | None = None,
                 following: bool = True) -> None:
        from crdtsync.control import MemoryControl
        from crdtsync.replica.coordination import Coordinator
        from crdtsync.replica.fleet import Fleet
        from crdtsync.replica.heartbeats import Heartbeats
        from crdtsync.replica.levels import LevelDriver
        from crdtsync.replica.sequencer import SequencerClient
        from crdtsync.replica.views import PeerView
        from crdtsync.replica.waiting import Waiter

        self.identity = identity or ident()
        actor = self.identity.actor
        self.stats = ReplicaStats()
        self.clock = FakeClock(1_000_000)
        self.hlc = HLC(clock=self.clock)
        self.defs = defs(*fields, stats=self.stats)
        self.store = store(actor, self.defs)
        self.log = log if log is not None else MemoryLog()
        self.hub = MemoryControl()
        self.control = self.hub.endpoint() if control else None
        self.membership = membership(self.identity)
        self.skew = skew(self.stats, FakeClock(0))
        self.admission = Admission(self.identity, self.defs, self.stats, None, None)
        self.writer = writer(self.identity, self.store, self.defs, self.admission, self.stats, self.hlc, self.log)
        self.fleet = Fleet(self.identity, self.store, self.membership, self.admission, self.defs, self.skew,
                           self.stats, self.writer.invalidate)
        self.catch_ups = Calls()
        self.syncs = Calls()
        self.waiter = Waiter(0.01, self.catch_ups, lambda: following)
        self.heartbeats = Heartbeats(self.identity, self.control, 3600.0, self.store, self.membership, self.skew,
                                     self.stats, self.hlc, self.fleet.pruned, self.waiter.tick)
        meta = {"region": self.identity.region, "role": self.identity.role}
        self.sequencer = SequencerClient(actor, self.log, self.log, self.store, self.defs, self.stats, self.hlc,
                                         CODEC, meta, self.waiter, self.catch_ups, lambda: following, self.syncs)
        view = PeerView(self.identity, self.store, self.membership, self.fleet)
        self.coordinator = Coordinator(self.identity, self.store, view, self.heartbeats, self.defs, self.stats, liveness)
        self.driver = LevelDriver(self.admission, self.defs, self.coordinator, self.writer, self.sequencer,
                                  self.heartbeats, self.waiter, self.store, self.log)
        if self.control is not None:
            self.control.start(self.identity.name, self.heartbeats.receive)
        self.heartbeats.observe(self.heartbeats.build())  # as opening does: its own heartbeat first

    def hear(self, peer: ReplicaIdentity, ctx: Any, *, ago_ms: int = 0, echo: dict[str, int] | None = None) -> bool:
        """A heartbeat of ``peer`` built ``ago_ms`` before now, arriving now."""
        self._beat = getattr(self, "_beat", 0) + 1
        wall = self.clock.ms - ago_ms
        hb = heartbeat(peer, ctx, wall, hlc=make_hlc(wall, self._beat), echo=echo)
        return self.heartbeats.observe(hb)


def sync(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an ``async def`` test on a fresh event loop (the suite has no asyncio plugin)."""
    import functools

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(fn(*args, **kwargs))

    return run
