"""Membership: the latest heartbeat of every known replica, and what is derived from it.

A :class:`Membership` keeps the latest heartbeat of each replica and answers the questions
the policy engine (:mod:`crdtsync.policy`) asks: which replicas acknowledged a dot
(``ACKS`` / ``QUORUM`` / ``ALL``), how stale this replica may be (``MAX_STALENESS``), the
replication lag per origin, and the causally stable context (the meet of every known
replica's context, below which metadata can be reclaimed). Nothing here reads a clock:
every time-dependent call takes ``now_ms``.

Identity: the table keeps one entry per replica *name*; the entry belongs to one
incarnation (its actor id, the ``replica`` of its dots). A heartbeat from a new
incarnation of a known name supersedes the old one, which is then treated as removed. A
heartbeat from a removed incarnation (by :meth:`Membership.remove` or superseded) is
refused with :class:`ReplicaRemoved`: its dots may already have been pruned, so it must
rejoin as a new incarnation (a fresh data directory).

A fleet replica with the *hub* role keeps a full Membership of the whole fleet; an *edge*
keeps one of its hubs and reads the rest of the fleet from its hub's aggregate
(:mod:`crdtsync.control.aggregate`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..clock import HLC, Context, Dot
from ..errors import FutureTimestamp, ReplicaRemoved
from ..policy import ACKS, ALL, QUORUM, Group, WriteLevel
from .heartbeat import Heartbeat

__all__ = ["Membership", "MembershipStats", "needed"]


def needed(level: WriteLevel, group_size: int) -> int:
    """How many members of a group of ``group_size`` an ack level needs."""
    if isinstance(level, ACKS):
        return level.n
    if isinstance(level, QUORUM):
        return group_size // 2 + 1
    if isinstance(level, ALL):
        return max(group_size, 1)
    raise TypeError(f"{level!r} is not an ack level (ACKS, QUORUM, ALL)")


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
        return needed(level, group_size)

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
