"""What a hub tells its edges, and the edge's view of the fleet built from it.

A hub keeps a full :class:`~crdtsync.control.Membership` of the fleet (it reads every
heartbeat on topic ``hubs``). Every heartbeat round it publishes, on ``agg.<hub>``, an
*aggregate*: the answers an edge needs for every consistency level, summed over the fleet
instead of listed per replica. Sections (a stream state, sent as deltas, see
:mod:`crdtsync.control.stream`):

* ``s``: ``hub``, ``wall_ms`` (when built), ``heard_ms`` (the oldest latest-heartbeat wall
  time over the members: every member reported at or after it);
* ``size``/``live``: members per region (heard from, plus those the log records as
  joined) and how many of them were heard within the liveness window;
* ``fresh``: per member incarnation, the highest seq of its own events it reported. With
  ``heard_ms``, a freshness frontier: an edge holding all of ``fresh`` holds everything
  every member had written at ``heard_ms``, so it is at most ``now - heard_ms`` stale;
* ``acks``: per origin with writes not yet reported by every member, the members by
  (region, highest contiguous seq of that origin they hold): ``[[region, seq, count], ...]``.
  An origin absent here but in ``fresh`` is held by every member up to its fresh seq;
* ``stable``: removed incarnations every member has applied (or pruned): pruning at an
  edge waits for its hub to list them;
* ``pings``: quorum-read pings of askers heard within the ping TTL (edges answer them in
  their heartbeat's ``echo``); ``answers``: per asker, ``[ping, [[region, count], ...],
  missing]``: how many members of each region answered that ping and the rows of their
  joined contexts (each as of its first answer) the asker's last heartbeat did not hold;

Everything is O(what changed) per round: ``fresh`` changes for the origins that wrote,
``acks`` lists only writes in flight, ``pings``/``answers`` only reads in flight. The
edge's answers are *conservative* where they summarise: acks count only dots in a
member's contiguous prefix, and staleness is measured against the whole frontier, so an
edge may wait a little longer than a peer would, never less.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .._encoding import corrupt
from ..clock import Context, Dot
from ..errors import Unavailable
from ..policy import Group, WriteLevel
from .membership import Membership, needed

__all__ = ["AGGREGATE_SECTIONS", "EdgeView", "HubAggregator", "needed", "validate_aggregate"]

#: the sections of an aggregate's stream state and their types
AGGREGATE_SECTIONS: dict[str, type] = {
    "s": dict, "size": dict, "live": dict, "fresh": dict, "acks": dict, "stable": dict,
    "pings": dict, "answers": dict,
}


class HubAggregator:
    """Builds a hub's aggregate from its membership and fleet knowledge.

    Args:
        name: the hub's name.
        membership: the hub's full membership of the fleet.
        members: ``members(None)`` gives the fleet's names (heard plus joined);
            ``region_of(name)`` their regions.
        removed: removed incarnations and the last seq to wait for; ``pruned``: those
            the hub already pruned.
        liveness_ms: silence after which a member is not live.
        ping_ttl_ms: how long a ping is relayed.
    """

    def __init__(self, name: str, membership: Membership, members: Callable[[], frozenset[str]],
                 region_of: Callable[[str], str], removed: Mapping[str, int], pruned: set[str],
                 liveness_ms: int, ping_ttl_ms: int = 30_000) -> None:
        self.name = name
        self.membership = membership
        self._members = members
        self._region_of = region_of
        self._removed = removed
        self._pruned = pruned
        self.liveness_ms = liveness_ms
        self.ping_ttl_ms = ping_ttl_ms
        self._pings: dict[str, tuple[int, int]] = {}  # asker -> (ping, first heard ms)
        self._answered: dict[str, dict[str, tuple[str, Context]]] = {}  # asker -> answerer -> (region, ctx)
        self._pending: set[str] = set()  # origins with writes not yet everywhere
        self._fresh_seen: dict[str, int] = {}

    def state(self, now_ms: int) -> dict[str, Any]:
        """The aggregate now, as a stream state."""
        m = self.membership
        names = self._members()
        size: dict[str, int] = {}
        live: dict[str, int] = {}
        region = {n: self._region_of(n) for n in names}
        alive = m.live(None, now_ms, self.liveness_ms)
        for n in names:
            size[region[n]] = size.get(region[n], 0) + 1
            if n in alive:
                live[region[n]] = live.get(region[n], 0) + 1
        beats = list(m)
        # (members that never wrote have nothing to cover: left out, so a full aggregate
        # grows with the writers, not the fleet)
        fresh = {a: n for a, n in ((hb.actor, hb.context.max_seq(hb.actor)) for hb in beats) if n}
        heard = min((hb.wall_ms for hb in beats), default=now_ms)
        for actor, seq in fresh.items():
            if self._fresh_seen.get(actor) != seq:
                self._pending.add(actor)
        self._fresh_seen = fresh
        acks: dict[str, list[list[Any]]] = {}
        for origin in sorted(self._pending):
            top = fresh.get(origin)
            if top is None:
                self._pending.discard(origin)
                continue
            hist: dict[tuple[str, int], int] = {}
            for hb in beats:
                key = (hb.region, hb.context.vv.get(origin, 0))
                hist[key] = hist.get(key, 0) + 1
            if all(seq >= top for _, seq in hist):
                self._pending.discard(origin)  # everyone holds it: implied by ``fresh``
            else:
                acks[origin] = [[r, s, c] for (r, s), c in sorted(hist.items())]
        stable = {a: 1 for a, upto in self._removed.items()
                  if a in self._pruned or m.stable_for(a, upto)}
        pings, answers = self._quorum_reads(beats, now_ms)
        return {
            "s": {"hub": self.name, "wall_ms": now_ms, "heard_ms": heard},
            "size": size, "live": live, "fresh": fresh, "acks": acks, "stable": stable,
            "pings": pings, "answers": answers,
        }

    def _quorum_reads(self, beats: list[Any], now_ms: int) -> tuple[dict[str, int], dict[str, list[Any]]]:
        for hb in beats:
            if hb.ping and hb.ping != self._pings.get(hb.name, (0, 0))[0] and hb.name != self.name:
                self._pings[hb.name] = (hb.ping, now_ms)
                self._answered[hb.name] = {}
        for asker, (_, at) in list(self._pings.items()):
            if now_ms - at > self.ping_ttl_ms or asker not in self.membership:
                del self._pings[asker]
                self._answered.pop(asker, None)
        answers: dict[str, list[Any]] = {}
        for asker, (ping, _) in self._pings.items():
            # each answerer's context as of its first answer: what the read must see (a
            # later context is more than it needs, and under steady writes never caught)
            got = self._answered[asker]
            for hb in beats:
                if hb.name != asker and hb.name not in got and (hb.echo.get(asker, 0) >= ping or hb.name == self.name):
                    got[hb.name] = (hb.region, hb.context)
            counts: dict[str, int] = {}
            joined = Context()
            for region, ctx in got.values():
                counts[region] = counts.get(region, 0) + 1
                joined = joined.join(ctx)
            asked = self.membership.get(asker)
            base = asked.context if asked is not None else Context()
            rows, _ = joined.row_delta(joined.meet(base))
            answers[asker] = [ping, [[r, c] for r, c in sorted(counts.items())], rows]
        return {a: p for a, (p, _) in self._pings.items()}, answers


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def validate_aggregate(sender: str, state: Mapping[str, Any]) -> None:
    """Check an aggregate's values (the wire is untrusted): ``CorruptRecord`` if bad."""
    s = state["s"]
    if not all(_is_count(s.get(k)) for k in ("wall_ms", "heard_ms")):
        corrupt("aggregate", "s.wall_ms and s.heard_ms must be non-negative ints")
    for sec in ("size", "live", "fresh", "stable", "pings"):
        if not all(_is_count(v) for v in state[sec].values()):
            corrupt("aggregate", f"{sec} values must be non-negative ints")
    for origin, hist in state["acks"].items():
        if not (isinstance(hist, list) and all(
                isinstance(h, list) and len(h) == 3 and isinstance(h[0], str) and _is_count(h[1])
                and _is_count(h[2]) for h in hist)):
            corrupt("aggregate", f"acks[{origin!r:.40}] must be [[region, seq, count], ...]")
    for asker, ans in state["answers"].items():
        if not (isinstance(ans, list) and len(ans) == 3 and _is_count(ans[0]) and isinstance(ans[1], list)
                and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and _is_count(p[1])
                        for p in ans[1])):
            corrupt("aggregate", f"answers[{asker!r:.40}] must be [ping, [[region, count], ...], rows]")
        Context.from_payload(ans[2], what="aggregate answer")


class EdgeView:
    """An edge's view of the fleet: its hub's latest aggregate plus its own state.

    Answers what the coordinator asks (group sizes, acks, liveness, quorum reads,
    staleness, stability) for groups ``None`` and regions; name groups raise
    ``Unavailable`` (an edge does not read individual replicas' heartbeats).

    Args:
        name, region: this edge's.
        history: aggregates remembered for staleness; an edge further behind its hub's
            frontier than that asks for a full aggregate.
    """

    def __init__(self, name: str, region: str, *, history: int = 256) -> None:
        self.name, self.region = name, region
        self.history = history
        self.state: dict[str, Any] | None = None
        self.received_ms = 0
        # freshness frontier samples not yet known covered: (heard_ms, rows changed)
        self._samples: deque[tuple[int, list[tuple[str, int]]]] = deque()
        self._covered_ms: int | None = None
        self.lost = False  # the sample history overflowed: waiting for a full aggregate

    # -- input -----------------------------------------------------------------------
    def observe(self, state: dict[str, Any], changed: Mapping[str, list[Any]], full: bool, now_ms: int) -> None:
        """Take in the hub's aggregate (``changed``: the sections' changed entries)."""
        s = state["s"]
        fresh_rows = [(k, v) for k, v in changed.get("fresh", [])]
        if full:
            self._samples.clear()
            self._covered_ms = None
            self.lost = False
            fresh_rows = list(state["fresh"].items())
        self._samples.append((s["heard_ms"], fresh_rows))
        if len(self._samples) > self.history:
            self._samples.clear()
            self._covered_ms = None
            self.lost = True
        self.state = state
        self.received_ms = now_ms

    def pings(self) -> Mapping[str, int]:
        """Quorum-read pings of other edges this edge should answer."""
        if self.state is None:
            return {}
        return {a: p for a, p in self.state["pings"].items() if a != self.name and type(p) is int}

    # -- queries -------------------------------------------------------------------
    def _regions(self, group: Group, what: str) -> Callable[[str], bool]:
        if isinstance(group, frozenset):
            raise Unavailable(
                f"{what}: group {sorted(group)} names replicas, and this edge reads only its hub's "
                "aggregate, not individual heartbeats; use a region group or make it a hub/peer"
            )
        return (lambda r: True) if group is None else (lambda r: r == group)

    def size(self, group: Group) -> int:
        """Members of ``group`` (by the hub's count; at least this edge)."""
        match = self._regions(group, "group size")
        if self.state is None:
            return 1 if match(self.region) else 0
        n = sum(c for r, c in self.state["size"].items() if match(r) and type(c) is int)
        return max(n, 1 if match(self.region) else 0)

    def live_count(self, group: Group, now_ms: int, within_ms: int) -> int:
        """Members of ``group`` heard within ``within_ms`` (only this edge when its hub's
        aggregate is older than that)."""
        match = self._regions(group, "liveness")
        mine = 1 if match(self.region) else 0
        if self.state is None or now_ms - self.received_ms > within_ms:
            return mine
        return max(mine, sum(c for r, c in self.state["live"].items() if match(r) and type(c) is int))

    def ack_count(self, dot: Dot, group: Group, own: Context) -> int:
        """Members of ``group`` known to hold ``dot`` (this edge counts when it does)."""
        match = self._regions(group, "acks")
        mine = 1 if match(self.region) and dot in own else 0
        if self.state is None:
            return mine
        hist = self.state["acks"].get(dot.replica)
        if hist is not None:
            n: int = sum(c for r, s, c in hist if match(r) and s >= dot.seq)
            return max(n, mine)
        if dot.seq <= self.state["fresh"].get(dot.replica, 0):
            return self.size(group)  # every member reported it
        return mine

    def quorum_read_ready(self, level: WriteLevel, ping: int, own: Context) -> bool:
        """Whether the hub reports enough answers to ``ping`` and this edge holds what
        they had."""
        group = level.group  # type: ignore[attr-defined]
        match = self._regions(group, "quorum read")
        if self.state is None:
            return False
        ans = self.state["answers"].get(self.name)
        if not ans or ans[0] < ping:
            return False
        n = (1 if match(self.region) else 0) + sum(c for r, c in ans[1] if match(r))
        if n < needed(level, self.size(group)):
            return False
        return Context.from_payload(ans[2], what="aggregate answer") <= own

    def answered(self, ping: int) -> str:
        """The hub's count of answers to ``ping``, in words (for errors)."""
        ans = (self.state or {}).get("answers", {}).get(self.name)
        if not ans or ans[0] < ping:
            return "no answers relayed by the hub yet"
        return f"answers by region {dict((r, c) for r, c in ans[1])}"

    def staleness(self, now_ms: int, own: Context, pruned: set[str] | frozenset[str] = frozenset()) -> float:
        """How stale this edge may be (ms): ``now - heard_ms`` of the newest aggregate
        whose freshness frontier it holds; ``inf`` before it holds one."""
        while self._samples:
            heard, rows = self._samples[0]
            if not all(a in pruned or own.max_seq(a) >= s and not own.missing(a, 1, s) for a, s in rows):
                break
            self._samples.popleft()
            self._covered_ms = heard
        if self._covered_ms is None:
            return math.inf
        return float(max(0, now_ms - self._covered_ms))

    def stable_for(self, actor: str) -> bool:
        """Whether the hub reports removed incarnation ``actor`` applied everywhere."""
        return self.state is not None and actor in self.state["stable"]
