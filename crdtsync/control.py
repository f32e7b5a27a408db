"""The control channel: replica heartbeats and what is derived from them.

Every replica periodically publishes a :class:`Heartbeat`: who it is (actor id, name,
region, role), the :class:`~crdtsync.clock.Context` of everything it has applied, its
wall time and HLC time, its log positions and its active model versions. A
:class:`Membership` keeps the latest heartbeat of each replica and answers the questions
the policy engine (:mod:`crdtsync.policy`) asks: which replicas acknowledged a dot
(``ACKS`` / ``QUORUM`` / ``ALL``), how stale this replica may be (``MAX_STALENESS``), the
replication lag per origin, and the causally stable context (the meet of every known
replica's context, below which metadata can be reclaimed).

Nothing here reads a clock: every time-dependent call takes ``now_ms`` (wall-clock
milliseconds), so the same inputs give the same answers.

Heartbeat wire format (format version 2), deterministic msgpack::

    ["heartbeat", 2, [actor: str, name: str, region: str, role: str,
                      wall_ms: int >= 0, hlc: int >= 0, context: CONTEXT_ROWS,
                      positions: [[log: str, position: int >= 0], ...],
                      models: [[model: str, version: str], ...],
                      ping: int >= 0, echo: [[replica name: str, ping: int >= 0], ...],
                      pruned: [actor: str, ...]]]

``CONTEXT_ROWS`` is :meth:`Context.to_payload` (``[[replica, n, [cloud seqs]], ...]``);
``positions``, ``models`` and ``echo`` are sorted by key with unique keys. ``ping`` is
non-zero when the sender asks every peer to answer at once (a ``QUORUM``/``ALL`` read
waiting for fresh reports); a peer answers with a heartbeat whose ``echo`` maps the
asker's name to that ping, so the asker knows the context was taken after it asked.
``pruned`` lists, sorted and unique, the removed incarnations the sender has pruned from
its context (so peers do not mistake a pruned entry for one never seen). Format version 1
(the first nine fields) is still decoded, with no ping, echo or pruned. ``actor``, ``name`` and
``region`` are non-empty. A decoder rejects anything else with
:class:`~crdtsync.errors.CorruptRecord`, and a newer format version with
:class:`~crdtsync.errors.UnsupportedVersion`.

Identity: the table keeps one entry per replica *name*; the entry belongs to one
incarnation (its actor id, the ``replica`` of its dots). A heartbeat from a new
incarnation of a known name supersedes the old one, which is then treated as removed. A
heartbeat from a removed incarnation (by :meth:`Membership.remove` or superseded) is
refused with :class:`ReplicaRemoved`: its dots may already have been pruned, so it must
rejoin as a new incarnation (a fresh data directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from ._crc32c import crc32c
from ._encoding import check_envelope, corrupt, packb, unpackb
from .clock import HLC, Context, Dot
from .errors import FutureTimestamp, ReplicaRemoved
from .policy import ACKS, ALL, QUORUM, Group, WriteLevel

log = logging.getLogger("crdtsync.control")

__all__ = [
    "HEARTBEAT_VERSION",
    "ControlChannel",
    "DirectoryControl",
    "MemoryControl",
    "Heartbeat",
    "Membership",
    "MembershipStats",
    "ReplicaRemoved",
]

HEARTBEAT_VERSION = 2
_TAG = "heartbeat"


def _frozen_map(m: Mapping[str, Any], what: str, value_type: type) -> Mapping[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(m):
        v = m[k]
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be str, got {k!r:.40}")
        if value_type is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"{what}[{k!r}] must be a non-negative int, got {v!r:.40}")
        if value_type is str and not isinstance(v, str):
            raise TypeError(f"{what}[{k!r}] must be a str, got {v!r:.40}")
        out[k] = v
    return MappingProxyType(out)


def _pairs(raw: Any, what: str, value_type: type) -> dict[str, Any]:
    if not isinstance(raw, list):
        corrupt(_TAG, f"{what} is not a list of pairs")
    out: dict[str, Any] = {}
    last: str | None = None
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            corrupt(_TAG, f"{what}: bad pair {pair!r:.60}")
        k, v = pair
        if last is not None and k <= last:
            corrupt(_TAG, f"{what}: keys not sorted and unique")
        last = k
        if value_type is int and (type(v) is not int or v < 0):
            corrupt(_TAG, f"{what}[{k!r:.40}] is not a non-negative int")
        if value_type is str and not isinstance(v, str):
            corrupt(_TAG, f"{what}[{k!r:.40}] is not a str")
        out[k] = v
    return out


@dataclass(frozen=True)
class Heartbeat:
    """One replica's periodic report on the control channel (immutable).

    Attributes:
        actor: the actor id of the replica's current incarnation (``name~incarnation``,
            the ``replica`` of its dots).
        name, region, role: the replica's identity.
        context: everything the replica has applied.
        wall_ms: the sender's wall time (ms) when it built the heartbeat.
        hlc: the sender's HLC time; orders heartbeats of one incarnation.
        positions: log positions by log (or scope) name.
        models: active model versions by model name.
        ping: non-zero asks every peer to answer now (see the module docstring).
        echo: the latest ping this replica answered, by asking replica's name.
        pruned: removed incarnations this replica pruned from its context.
    """

    actor: str
    name: str
    region: str
    role: str
    context: Context
    wall_ms: int
    hlc: int
    positions: Mapping[str, int] = field(default_factory=dict, hash=False)
    models: Mapping[str, str] = field(default_factory=dict, hash=False)
    ping: int = 0
    echo: Mapping[str, int] = field(default_factory=dict, hash=False)
    pruned: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for attr in ("actor", "name", "region"):
            v = getattr(self, attr)
            if not isinstance(v, str) or not v:
                raise ValueError(f"Heartbeat.{attr} must be a non-empty str, got {v!r:.40}")
        if not isinstance(self.role, str):
            raise TypeError(f"Heartbeat.role must be a str, got {self.role!r:.40}")
        if not isinstance(self.context, Context):
            raise TypeError(f"Heartbeat.context must be a Context, got {type(self.context).__name__}")
        for attr in ("wall_ms", "hlc", "ping"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Heartbeat.{attr} must be a non-negative int, got {v!r:.40}")
        object.__setattr__(self, "positions", _frozen_map(self.positions, "positions", int))
        object.__setattr__(self, "models", _frozen_map(self.models, "models", str))
        object.__setattr__(self, "echo", _frozen_map(self.echo, "echo", int))
        if isinstance(self.pruned, str) or not all(isinstance(a, str) for a in self.pruned):
            raise TypeError("Heartbeat.pruned must be a set of actor ids (str)")
        object.__setattr__(self, "pruned", frozenset(self.pruned))

    def encode(self) -> bytes:
        """Deterministic msgpack bytes (see the module docstring)."""
        return packb(
            [
                _TAG,
                HEARTBEAT_VERSION,
                [
                    self.actor,
                    self.name,
                    self.region,
                    self.role,
                    self.wall_ms,
                    self.hlc,
                    self.context.to_payload(),
                    [[k, v] for k, v in self.positions.items()],
                    [[k, v] for k, v in self.models.items()],
                    self.ping,
                    [[k, v] for k, v in self.echo.items()],
                    sorted(self.pruned),
                ],
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Heartbeat:
        """Parse :meth:`encode` output; bad input raises ``CorruptRecord``/``UnsupportedVersion``."""
        version, body = check_envelope(unpackb(data, what=_TAG), _TAG, HEARTBEAT_VERSION)
        size = 9 if version == 1 else 12
        if not (isinstance(body, list) and len(body) == size):
            corrupt(_TAG, f"expected a {size}-field body")
        ping: Any = 0
        echo: Any = []
        pruned: Any = []
        if version > 1:
            ping, echo, pruned = body[9], body[10], body[11]
            if type(ping) is not int or ping < 0:
                corrupt(_TAG, "ping must be a non-negative int")
            if not (isinstance(pruned, list) and all(isinstance(a, str) for a in pruned)
                    and pruned == sorted(set(pruned))):
                corrupt(_TAG, "pruned must be a sorted list of unique actor ids")
        actor, name, region, role, wall_ms, hlc, ctx, positions, models = body[:9]
        for what, v in (("actor", actor), ("name", name), ("region", region)):
            if not isinstance(v, str) or not v:
                corrupt(_TAG, f"{what} must be a non-empty str")
        if not isinstance(role, str):
            corrupt(_TAG, "role must be a str")
        for what, v in (("wall_ms", wall_ms), ("hlc", hlc)):
            if type(v) is not int or v < 0:
                corrupt(_TAG, f"{what} must be a non-negative int")
        context = Context.from_payload(ctx, what="heartbeat context")
        return cls(
            actor,
            name,
            region,
            role,
            context,
            wall_ms,
            hlc,
            _pairs(positions, "positions", int),
            _pairs(models, "models", str),
            ping,
            _pairs(echo, "echo", int),
            frozenset(pruned),
        )


@dataclass
class MembershipStats:
    """Counters a :class:`Membership` keeps (exported as metrics by the replica)."""

    accepted: int = 0
    stale: int = 0
    future: int = 0
    removed_refused: int = 0
    superseded: int = 0


@dataclass
class _Entry:
    latest: Heartbeat
    # (wall_ms, own max seq) of recent heartbeats, oldest first; for lag
    samples: list[tuple[int, int]]
    received_ms: int = 0  # local time the latest heartbeat arrived


def _covers(ctx: Context, origin: str, seq: int) -> bool:
    """True when ``ctx`` holds every dot of ``origin`` up to ``seq``."""
    return not ctx.missing(origin, 1, seq)


class Membership:
    """The latest heartbeat of every known replica, and the queries derived from them.

    Args:
        local: this replica's name; it is not an origin for :meth:`staleness` (its own
            writes are always applied locally). Its own heartbeat should still be
            observed so that it counts in acks and stability.
        max_drift_ms: heartbeats whose HLC time is further ahead of ``now_ms`` are
            rejected (:class:`~crdtsync.errors.FutureTimestamp`) and counted.
        history: heartbeats remembered per replica for :meth:`lag` (a replica further
            behind than that reports an infinite lag).

    Group arguments follow :data:`crdtsync.policy.Group`: ``None`` is every known,
    non-removed replica; a ``str`` is the known replicas of that region; a ``frozenset``
    is exactly those names, whether heard from or not. Sizes of ``None`` and region
    groups therefore count replicas this table has heard from; a replica that never
    published a heartbeat here does not count (name groups explicitly to avoid that).
    """

    def __init__(self, *, local: str | None = None, max_drift_ms: int = 60_000, history: int = 32) -> None:
        if history < 1:
            raise ValueError("history must keep at least one heartbeat per replica")
        self.local = local
        self.history = history
        self._now_ms = 0
        self._hlc = HLC(max_drift_ms=max_drift_ms, clock=lambda: self._now_ms)
        self._entries: dict[str, _Entry] = {}
        self._removed: dict[str, str] = {}  # actor -> reason
        self.stats = MembershipStats()

    @property
    def max_drift_ms(self) -> int:
        return self._hlc.max_drift_ms

    # -- input -------------------------------------------------------------------------
    def observe(self, hb: Heartbeat, now_ms: int) -> bool:
        """Record ``hb`` received at ``now_ms``; returns True if it became the latest.

        Stale or duplicate heartbeats (not newer by HLC than the one kept for that
        incarnation) are ignored and counted. Raises ``FutureTimestamp`` for a
        heartbeat too far in the future and ``ReplicaRemoved`` for one from a removed
        incarnation (both counted, nothing changes).
        """
        if hb.actor in self._removed:
            self.stats.removed_refused += 1
            raise ReplicaRemoved(
                f"heartbeat from replica {hb.name!r} incarnation {hb.actor!r}, which was "
                f"{self._removed[hb.actor]}; restart it with a fresh data directory so it "
                "rejoins as a new incarnation"
            )
        self._now_ms = now_ms
        try:
            self._hlc.check(hb.hlc)
            if hb.wall_ms - now_ms > self.max_drift_ms:
                raise FutureTimestamp(
                    f"heartbeat from {hb.actor!r} has wall time {hb.wall_ms - now_ms} ms ahead of "
                    f"this host's clock (limit {self.max_drift_ms} ms); check NTP on both hosts"
                )
        except FutureTimestamp:
            self.stats.future += 1
            raise
        entry = self._entries.get(hb.name)
        sample = (hb.wall_ms, hb.context.max_seq(hb.actor))
        if entry is None:
            self._entries[hb.name] = _Entry(hb, [sample], now_ms)
        elif entry.latest.actor != hb.actor:
            self._removed[entry.latest.actor] = f"superseded by incarnation {hb.actor!r}"
            self.stats.superseded += 1
            self._entries[hb.name] = _Entry(hb, [sample], now_ms)
        elif hb.hlc > entry.latest.hlc or hb.name == self.local:
            # (this replica's own heartbeats are built here in order: the latest is the
            # newest even when its clock was corrected back after a jump)
            entry.latest = hb
            entry.received_ms = now_ms
            entry.samples.append(sample)
            del entry.samples[: -self.history]
        else:
            self.stats.stale += 1
            return False
        self.stats.accepted += 1
        return True

    def forbid(self, actor: str, reason: str = "removed from the fleet") -> None:
        """Refuse incarnation ``actor`` from now on (a removal learned from the log)."""
        self._removed[actor] = reason
        for name, e in list(self._entries.items()):
            if e.latest.actor == actor:
                del self._entries[name]

    def remove(self, name: str) -> Heartbeat:
        """Remove replica ``name`` from the fleet (pruning); returns its last heartbeat.

        Its incarnation no longer counts in groups, quorums or stability, and its later
        heartbeats are refused with :class:`ReplicaRemoved`.
        """
        try:
            entry = self._entries.pop(name)
        except KeyError:
            raise KeyError(f"no replica named {name!r} is known (known: {sorted(self._entries)})") from None
        self._removed[entry.latest.actor] = "removed from the fleet"
        return entry.latest

    # -- membership --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Heartbeat]:
        return (self._entries[n].latest for n in sorted(self._entries))

    def get(self, name: str) -> Heartbeat | None:
        """The latest heartbeat of replica ``name``, if known."""
        e = self._entries.get(name)
        return e.latest if e is not None else None

    def is_removed(self, actor: str) -> bool:
        """True when incarnation ``actor`` was removed or superseded."""
        return actor in self._removed

    def members(self, group: Group = None) -> frozenset[str]:
        """Names of the replicas of ``group`` (see the class docstring)."""
        if isinstance(group, frozenset):
            return group
        if group is None:
            return frozenset(self._entries)
        return frozenset(n for n, e in self._entries.items() if e.latest.region == group)

    def quorum_size(self, group: Group = None) -> int:
        """A majority of ``group``: ``N // 2 + 1`` (1 for an empty group, never met)."""
        return len(self.members(group)) // 2 + 1

    def live(self, group: Group, now_ms: int, within_ms: int) -> frozenset[str]:
        """Members of ``group`` whose latest heartbeat arrived at most ``within_ms`` ago
        (the local replica counts when it observes its own heartbeats)."""
        out = []
        for name in self.members(group):
            e = self._entries.get(name)
            if e is not None and (name == self.local or now_ms - e.received_ms <= within_ms):
                out.append(name)
        return frozenset(out)

    def needed(self, level: WriteLevel, group_size: int) -> int:
        """How many members of a group of ``group_size`` an ack level needs."""
        if isinstance(level, ACKS):
            return level.n
        if isinstance(level, QUORUM):
            return group_size // 2 + 1
        if isinstance(level, ALL):
            return max(group_size, 1)
        raise TypeError(f"{level!r} is not an ack level (ACKS, QUORUM, ALL)")

    def answered(self, ping: int, group: Group = None) -> frozenset[str]:
        """Members of ``group`` whose latest heartbeat answers this replica's ``ping``
        (built after the ping was sent); the local replica always counts."""
        out = []
        for name in self.members(group):
            e = self._entries.get(name)
            if name == self.local or (e is not None and self.local is not None
                                      and e.latest.echo.get(self.local, 0) >= ping):
                out.append(name)
        return frozenset(out)

    def frontier(self, names: Iterable[str]) -> Context:
        """The join of the latest contexts of ``names`` (unknown names are skipped)."""
        out = Context()
        for name in names:
            e = self._entries.get(name)
            if e is not None:
                out = out.join(e.latest.context)
        return out

    # -- acknowledgements --------------------------------------------------------------
    def acks(self, dot: Dot, group: Group = None) -> frozenset[str]:
        """Names of the replicas of ``group`` whose latest context contains ``dot``."""
        out = []
        for name in self.members(group):
            e = self._entries.get(name)
            if e is not None and dot in e.latest.context:
                out.append(name)
        return frozenset(out)

    def has_quorum(self, dot: Dot, group: Group = None) -> bool:
        """True when a majority of ``group`` reports ``dot``."""
        members = self.members(group)
        return bool(members) and len(self.acks(dot, group)) >= len(members) // 2 + 1

    def all_acked(self, dot: Dot, group: Group = None) -> bool:
        """True when every member of a non-empty ``group`` reports ``dot``."""
        members = self.members(group)
        return bool(members) and self.acks(dot, group) == members

    def acknowledged(self, level: WriteLevel, dot: Dot) -> bool:
        """Whether ``dot`` meets an ack level (``ACKS``, ``QUORUM`` or ``ALL``) now.

        Other write levels are not decided by heartbeats: ``TypeError``.
        """
        if isinstance(level, ACKS):
            return len(self.acks(dot, level.group)) >= level.n
        if isinstance(level, QUORUM):
            return self.has_quorum(dot, level.group)
        if isinstance(level, ALL):
            return self.all_acked(dot, level.group)
        raise TypeError(f"{level!r} is not acknowledged through heartbeats (only ACKS, QUORUM, ALL)")

    # -- time --------------------------------------------------------------------------
    def age(self, name: str, now_ms: int) -> int:
        """Milliseconds since replica ``name``'s latest heartbeat was built (0 if ahead)."""
        e = self._entry(name)
        return max(0, now_ms - e.latest.wall_ms)

    def lag(self, origin: str, now_ms: int, own_context: Context) -> float:
        """How far behind origin ``origin`` (an actor id) this replica is, in ms.

        Let ``T`` be the wall time of the newest remembered heartbeat of ``origin`` whose
        own events (its dots up to the highest seq it reported for itself) are all in
        ``own_context``: this replica has everything ``origin`` had written at ``T``. The
        lag is ``now_ms - T`` (at least 0), or ``math.inf`` when no remembered heartbeat
        is covered. Events written after the latest heartbeat are unknown until the
        next one, so the resolution is the heartbeat interval.
        """
        for e in self._entries.values():
            if e.latest.actor == origin:
                for wall_ms, seq in reversed(e.samples):
                    if _covers(own_context, origin, seq):
                        return float(max(0, now_ms - wall_ms))
                return math.inf
        raise KeyError(f"no live replica incarnation {origin!r} is known")

    def staleness(self, now_ms: int, own_context: Context, origins: Iterable[str] | None = None) -> float:
        """How stale this replica may be, in ms: the largest :meth:`lag` over the origins.

        The origins are every known, non-removed replica except ``local`` (or only the
        given names). ``MAX_STALENESS(t)`` holds when ``staleness(...) <= t * 1000``:
        this replica has heard every origin it tracks within ``t``, i.e. for each origin
        it holds everything that origin reported in a heartbeat at most ``t`` ago. With
        no origins to track the answer is 0 (nothing is known to be missing).
        """
        names = set(self._entries) if origins is None else set(origins)
        worst = 0.0
        for name in names:
            if name == self.local:
                continue
            e = self._entry(name)
            worst = max(worst, self.lag(e.latest.actor, now_ms, own_context))
        return worst

    # -- stability ---------------------------------------------------------------------
    def stable_context(self) -> Context:
        """The meet of every known, non-removed replica's latest context.

        Every dot in it has been applied by every replica this table knows (causal
        stability): tombstones and dot-cloud entries below it may be reclaimed. Empty
        when no replica is known.
        """
        it = iter(self._entries.values())
        first = next(it, None)
        if first is None:
            return Context()
        out = first.latest.context
        for e in it:
            out = out.meet(e.latest.context)
        return out

    def stable_for(self, actor: str, upto: int) -> bool:
        """Whether every known replica has applied ``actor``'s events up to ``upto``
        (or already pruned ``actor``): then ``actor`` may be pruned here too."""
        if not self._entries:
            return False
        for e in self._entries.values():
            hb = e.latest
            if actor not in hb.pruned and hb.context.max_seq(actor) < upto:
                return False
        return True

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no replica named {name!r} is known (known: {sorted(self._entries)})") from None


# -- control channels ------------------------------------------------------------------
#
# A control channel carries heartbeats (encoded bytes) between the replicas of a fleet.
# ``publish`` sends this replica's latest heartbeat; ``start`` registers the function
# that receives every peer's heartbeat bytes (the replica decodes and validates them:
# a channel is untrusted input like a log).

Deliver = Callable[[bytes], None]


class ControlChannel(Protocol):
    """Where heartbeats travel. Implementations: :class:`MemoryControl` (one process),
    :class:`DirectoryControl` (processes of one host); a Kafka control topic later."""

    def start(self, name: str, deliver: Deliver) -> None:
        """Begin delivering peers' heartbeats to ``deliver`` (this replica is ``name``)."""
        ...

    async def publish(self, data: bytes) -> None:
        """Send this replica's heartbeat (the latest one replaces earlier ones)."""
        ...

    async def close(self) -> None: ...


class MemoryControl:
    """An in-process control hub: every endpoint hears every other one.

    ``partition(groups)`` / ``heal()`` cut it like a network (the log may be cut
    separately); tests use them to starve acknowledgements. A :class:`MemoryLog` has one
    hub (``log.control``) so replicas sharing a MemoryLog hear each other by default.
    """

    def __init__(self) -> None:
        self._endpoints: dict[str, Deliver] = {}
        self._last: dict[str, bytes] = {}
        self._groups: list[frozenset[str]] | None = None
        self.published = 0

    def endpoint(self) -> _MemoryEndpoint:
        return _MemoryEndpoint(self)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Only replicas in the same group hear each other (names not listed: one more group)."""
        gs = [frozenset(g) for g in groups]
        rest = frozenset(self._endpoints) - frozenset().union(*gs)
        self._groups = [*gs, rest] if rest else gs

    def heal(self) -> None:
        self._groups = None
        for name, data in self._last.items():
            self._send(name, data)

    def connected(self, a: str, b: str) -> bool:
        return self._groups is None or any(a in g and b in g for g in self._groups)

    def _send(self, src: str, data: bytes) -> None:
        self._last[src] = data
        self.published += 1
        for dst, deliver in list(self._endpoints.items()):
            if dst != src and self.connected(src, dst):
                deliver(data)


class _MemoryEndpoint:
    def __init__(self, hub: MemoryControl) -> None:
        self._hub = hub
        self._name: str | None = None

    def start(self, name: str, deliver: Deliver) -> None:
        self._name = name
        self._hub._endpoints[name] = deliver
        for src, data in list(self._hub._last.items()):  # what peers said before we joined
            if src != name and self._hub.connected(src, name):
                deliver(data)

    async def publish(self, data: bytes) -> None:
        if self._name is None:
            raise RuntimeError("start() the control endpoint before publishing")
        self._hub._send(self._name, data)

    async def close(self) -> None:
        if self._name is not None:
            self._hub._endpoints.pop(self._name, None)


class DirectoryControl:
    """Heartbeats as files in a directory shared by the processes of one host.

    Each replica rewrites ``<dir>/<name>.hb`` in place (no rename: replacing a file costs
    a data flush on ext4); every ``poll_interval`` seconds a reader delivers the files
    whose content changed. A file is ``magic "CSHB" | length u32 | crc32c u32 | heartbeat``;
    a reader that catches a write half done sees a bad checksum and simply reads it again
    at the next poll (counted in ``torn``). Nothing grows: one small file per replica.
    The files also persist the last word of every replica across restarts, so a replica
    that restarts knows the fleet (and quorum sizes) before anyone speaks again.
    """

    _MAGIC = b"CSHB"

    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float = 0.005) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.poll_interval = poll_interval
        self._name: str | None = None
        self._seen: dict[str, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self._fd = -1
        self.errors = 0
        self.torn = 0

    def start(self, name: str, deliver: Deliver) -> None:
        self._name = name
        self._fd = os.open(self.path / f"{name}.hb", os.O_RDWR | os.O_CREAT, 0o644)
        self.poll(deliver)
        self._task = asyncio.get_running_loop().create_task(self._run(deliver), name=f"crdtsync-control-{name}")

    @classmethod
    def frame(cls, data: bytes) -> bytes:
        return cls._MAGIC + struct.pack(">II", len(data), crc32c(data)) + data

    @classmethod
    def unframe(cls, blob: bytes) -> bytes | None:
        """The heartbeat in a file's bytes, or None if the file is empty or torn."""
        if len(blob) < 12 or blob[:4] != cls._MAGIC:
            return None
        n, crc = struct.unpack(">II", blob[4:12])
        data = blob[12:12 + n]
        if len(data) != n or crc32c(data) != crc:
            return None
        return data

    def poll(self, deliver: Deliver) -> int:
        """Deliver every heartbeat file whose content changed since the last poll."""
        n = 0
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.endswith(".hb") or entry.name == f"{self._name}.hb":
                continue
            try:
                blob = Path(entry.path).read_bytes()
            except FileNotFoundError:
                continue  # removed while we looked
            data = self.unframe(blob)
            if data is None:
                if blob:
                    self.torn += 1
                continue
            if self._seen.get(entry.name) == data:
                continue
            self._seen[entry.name] = data
            deliver(data)
            n += 1
        return n

    async def _run(self, deliver: Deliver) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.poll(deliver)
            except OSError:
                self.errors += 1
                log.exception("reading heartbeats in %s failed; retrying", self.path)

    async def publish(self, data: bytes) -> None:
        if self._fd < 0:
            raise RuntimeError("start() the control channel before publishing")
        blob = self.frame(data)
        os.pwrite(self._fd, blob, 0)
        os.ftruncate(self._fd, len(blob))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
