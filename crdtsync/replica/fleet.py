"""The fleet: who the replicas are, removals, and pruning of removed incarnations.

The roster is replicated state (the reserved ``_fleet`` field): every replica records its
own join (``join/<actor>``) when it first opens, so quorum sizes survive restarts and
partitions that hide peers. An admin's ``remove/<actor>`` record removes an incarnation:
every replica stops counting it in quorums and stability and refuses its later events and
heartbeats. Once all of a removed incarnation's events are causally stable (every known
replica reports them), each replica prunes it from its context, and heartbeats report what
was pruned so a pruned entry is not mistaken for one never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..clock import Context
from ..control import Membership
from ..errors import PermissionDenied
from ..sequenced import FLEET_FIELD
from ..types._base import CRDT
from ..types.registers import LWWRegister
from .admission import Admission
from .definitions import Definitions
from .identity import ReplicaIdentity
from .skew import ClockSkewMonitor
from .stats import ReplicaStats
from .store import Store

if TYPE_CHECKING:
    from .writer import Writer

__all__ = ["Fleet"]

log = logging.getLogger("crdtsync.replica")


class Fleet:
    """Roster, removals and stability pruning of one replica's view of the fleet."""

    def __init__(self, identity: ReplicaIdentity, store: Store, membership: Membership, admission: Admission,
                 definitions: Definitions, skew: ClockSkewMonitor, stats: ReplicaStats,
                 on_removal: Callable[[], None]) -> None:
        self.identity = identity
        self._store = store
        self.membership = membership
        self._admission = admission
        self._definitions = definitions
        self._skew = skew
        self._stats = stats
        self._on_removal = on_removal
        #: the fleet as recorded in the log: name -> (actor, region, join stamp)
        self.roster: dict[str, tuple[str, str, int]] = {}
        #: removed incarnations dropped from the context
        self.pruned: set[str] = set()
        #: whether every member applied ``actor``'s events up to ``upto`` (the
        #: coordinator's fleet view: this replica's membership, or an edge's hub)
        self.stable_for: Callable[[str, int], bool] = membership.stable_for

    # -- learning from the log -----------------------------------------------------
    def learn(self, key: str, reg: CRDT[Any], origin: str | None = None) -> None:
        """Learn a fleet record: ``join/<actor>`` (written by that actor when it first
        opens) or ``remove/<actor>`` (see :meth:`remove`)."""
        kind, _, actor = key.partition("/")
        v = reg.value()
        ts = getattr(reg, "timestamp", 0)
        if kind == "remove" and isinstance(v, dict) and type(v.get("upto")) is int and type(v.get("upto_s")) is int:
            self.learn_removal(actor, v["upto"], v["upto_s"])
        elif (kind == "join" and isinstance(v, dict) and isinstance(v.get("name"), str)
              and isinstance(v.get("region"), str) and (origin is None or origin == actor)):
            cur = self.roster.get(v["name"])
            if cur is None or cur[2] < ts:
                self.roster[v["name"]] = (actor, v["region"], ts)
        else:
            self._stats.reject("bad_fleet_record")

    def learn_removal(self, actor: str, upto: int, upto_s: int) -> None:
        removed = self._admission.removed
        for a, n in ((actor, upto), (f"{actor}/s", upto_s)):
            if a not in self.pruned:
                removed[a] = max(n, removed.get(a, 0))
        self.membership.forbid(actor)
        self._skew.forget(actor.split("~", 1)[0])
        self._on_removal()

    def joined(self) -> bool:
        """Whether the log records this incarnation's join."""
        return self.roster.get(self.identity.name, ("",))[0] == self.identity.actor

    def join_record(self) -> tuple[str, dict[str, str]]:
        """The ``_fleet`` key and value this replica writes to join."""
        ident = self.identity
        return f"join/{ident.actor}", {"name": ident.name, "region": ident.region, "role": ident.role}

    # -- queries -------------------------------------------------------------------
    def members(self, group: Any = None) -> frozenset[str]:
        """Names of the replicas of ``group``: those heard from (heartbeats) plus those the
        log records as having joined and not been removed, so quorum sizes survive a
        restart or a partition that hides peers."""
        m = set(self.membership.members(group))
        if not isinstance(group, frozenset):
            removed = self._admission.removed
            for name, (actor, region, _) in self.roster.items():
                if actor not in removed and (group is None or region == group):
                    m.add(name)
        return frozenset(m)

    def stable_context(self) -> Context:
        """What every live, known replica has applied (the meet of their latest
        heartbeats' contexts, this replica's own included)."""
        return self.membership.stable_context().meet(self._store.ctx())

    # -- removal and pruning ------------------------------------------------------
    async def remove(self, name: str, writer: Writer, catch_up: Callable[[], Awaitable[int]] | None = None) -> str:
        """Remove replica ``name`` (its current incarnation); returns the removed actor id.

        ``catch_up``: applied first, so that the removal keeps every event of ``name``
        already in the log (those after it are refused everywhere)."""
        role = self.identity.role
        if not self._definitions.is_admin(role):
            raise PermissionDenied(
                f"role {role!r} may not remove replicas (admins: {sorted(self._definitions.admins or ())})"
            )
        hb = self.membership.get(name)
        if hb is None:
            raise KeyError(f"no replica named {name!r} is heard from (known: {sorted(self.members())})")
        actor = hb.actor
        if catch_up is not None:
            await catch_up()
        ctx = self._store.ctx()
        upto, upto_s = ctx.max_seq(actor), ctx.max_seq(f"{actor}/s")
        writer.write_raw(FLEET_FIELD, f"remove/{actor}", LWWRegister, "set",
                         ({"name": name, "upto": upto, "upto_s": upto_s},), {})
        self.learn_removal(actor, upto, upto_s)
        await writer.flush()
        return actor

    def reclaim(self) -> list[str]:
        """Prune removed incarnations whose every event is causally stable; returns the
        actors pruned by this call (see :meth:`Replica.reclaim`)."""
        removed = self._admission.removed
        if len(self.pruned) == len(removed):
            return []
        done = []
        for actor, upto in removed.items():
            if actor not in self.pruned and self.stable_for(actor, upto):
                self.pruned.add(actor)
                done.append(actor)
        if done:
            self._store.set_context(self._store.ctx().without(done))
            for actor in done:
                removed[actor] = 0  # refuse everything from now on
                self._admission.pins.pop(actor, None)
            log.info("%s pruned removed replicas %s", self.identity.actor, done)
        return done
