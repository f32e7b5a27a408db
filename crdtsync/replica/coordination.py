"""Coordination: what each consistency level waits for, decided in one place.

:class:`Coordinator` answers the policy engine's questions from heartbeats
(through a :class:`~crdtsync.replica.views.FleetView`: every peer's heartbeats, or an
edge's hub aggregate) and the store: is a write acknowledged at
``ACKS``/``QUORUM``/``ALL``, are enough peers live to try, how stale may this replica be,
has a quorum answered a read's ping. For every level that waits it builds a :class:`Wait`:
the predicate that ends the wait and the error a wait that ran out raises. Two drivers run
the same waits: :class:`LevelDriver` in real time (``await replica.update/read``) and the
simulated :class:`~crdtsync.testing.Cluster`, which steps the network instead of sleeping,
so no level's logic exists twice.

The rules: an ack-level write first fails fast (``Unavailable``, nothing written) when
too few members of its group were heard from within ``liveness``; otherwise it is written
and waits for heartbeats reporting its dot; after the timeout it raises
``Unavailable(event=ev)``: the write stays applied and keeps replicating (it is not
*acknowledged*, it is not withdrawn), or, with ``on_unavailable="local"``, it is returned
and counted (``degraded_write``). A ``QUORUM``/``ALL`` read pings through heartbeats and
waits until the replica holds everything the answering quorum reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Dot
from ..control.aggregate import needed
from ..errors import StaleRead, Unavailable
from ..events import Event
from ..policy import ACKS, ALL, LINEARIZABLE, LOCAL, MAX_STALENESS, QUORUM, SESSION, ReadLevel, WriteLevel
from .definitions import Definitions
from .heartbeats import Heartbeats
from .identity import ReplicaIdentity
from .stats import ReplicaStats
from .store import Store
from .views import FleetView

__all__ = ["Coordinator", "Wait"]

log = logging.getLogger("crdtsync.replica")


@dataclass(frozen=True)
class Wait:
    """What a level waits for.

    Attributes:
        ready: whether it holds now.
        failure: the error for a wait that ran out, given how long it waited in words
            (``None``: go on anyway, as ``on_unavailable="local"`` asks).
        patient: whether to wait at all (``MAX_STALENESS`` without ``wait`` only checks).
        prompt: publish a heartbeat before waiting (peers must hear the request).
    """

    ready: Callable[[], bool]
    failure: Callable[[str], Exception | None]
    patient: bool = True
    prompt: bool = False


class Coordinator:
    """The policy engine's view of acks, liveness, staleness and quorums for one replica."""

    def __init__(self, identity: ReplicaIdentity, store: Store, view: FleetView,
                 heartbeats: Heartbeats, definitions: Definitions, stats: ReplicaStats,
                 liveness: float) -> None:
        self.identity = identity
        self._store = store
        #: the fleet as this replica sees it (peers' heartbeats, or its hub's aggregate)
        self.view = view
        self._heartbeats = heartbeats
        self._definitions = definitions
        self._stats = stats
        #: seconds without a heartbeat after which a peer is presumed unreachable
        self.liveness = liveness
        self._slo_missed: set[str] = set()

    # -- writes ----------------------------------------------------------------------
    def acknowledged(self, level: WriteLevel, dot: Dot) -> bool:
        """Whether ``dot`` meets ack level ``level`` (``ACKS``/``QUORUM``/``ALL``) now."""
        assert isinstance(level, (ACKS, QUORUM, ALL))
        size = self.view.size(level.group)
        if not size:
            return False
        return self.view.ack_count(dot, level.group) >= needed(level, size)

    def check_reachable(self, level: WriteLevel, on_unavailable: str) -> None:
        """Fail fast, before writing anything, when too few replicas are live for ``level``."""
        assert isinstance(level, (ACKS, QUORUM, ALL))
        if self._heartbeats.control is None and on_unavailable == "raise":
            raise Unavailable(
                f"{level!r} needs heartbeats, and this replica has no control channel "
                "(open it with control=True or a ControlChannel)"
            )
        need = needed(level, self.view.size(level.group))
        now, within = self._heartbeats.now_ms(), int(self.liveness * 1000)
        if self.view.live_count(level.group, now, within) < need and on_unavailable == "raise":
            self._stats.reject("unavailable")
            raise Unavailable(
                f"{level!r} needs {need} {self.view.describe_live(level.group, now, within)} were heard from "
                f"within {self.liveness:g}s; nothing was written"
            )

    def ack_wait(self, level: WriteLevel, on_unavailable: str, ev: Event, what: str, where: str) -> Wait:
        """The wait of an ack-level write of ``ev`` (``what``: field/key; ``where``: which
        replica, in the error)."""
        assert isinstance(level, (ACKS, QUORUM, ALL))

        def failure(waited: str) -> Exception | None:
            if on_unavailable == "local":
                self._stats.reject("degraded_write")
                return None
            got = self.view.acked_by(ev.dot, level.group)
            return Unavailable(
                f"{what}: {level!r} not reached within {waited} (acknowledged by {got}); "
                f"the write is applied {where} and will keep replicating, but it is not acknowledged",
                event=ev,
            )

        return Wait(lambda: self.acknowledged(level, ev.dot), failure)

    # -- reads -----------------------------------------------------------------------
    def read_wait(self, level: ReadLevel, on_unavailable: str, what: str, where: str = "this replica") -> Wait | None:
        """The wait of a read at ``level`` (``None``: ``LOCAL``, nothing to wait for).
        ``LINEARIZABLE`` is the driver's (it syncs with a log), not a wait on heartbeats."""
        lenient = on_unavailable == "local"
        if level == LOCAL:
            return None
        if isinstance(level, MAX_STALENESS):
            bound_ms = level.seconds * 1000

            def stale(waited: str) -> Exception | None:
                if lenient:
                    return None
                self._stats.reject("stale_read")
                return StaleRead(
                    f"{what}: {where} may be {self.staleness_ms() / 1000:.3g}s stale "
                    f"(bound {level.seconds:g}s); some origin has not been heard from recently"
                )

            return Wait(lambda: self.staleness_ms() <= bound_ms, stale, patient=level.wait, prompt=True)
        if isinstance(level, SESSION):
            token = level.token

            def behind(waited: str) -> Exception | None:
                if lenient:
                    return None
                self._stats.reject("stale_read")
                return StaleRead(f"{what}: {where} has not yet applied the session's earlier writes "
                                 f"within {waited} (missing {token} vs {self._store.ctx()})")

            return Wait(lambda: token <= self._store.ctx(), behind)
        if isinstance(level, (QUORUM, ALL)):
            if self._heartbeats.control is None and not lenient:
                raise Unavailable(f"{what}: {level!r} reads need a control channel")
            quorum = level
            ping = self.begin_quorum_read()

            def unanswered(waited: str) -> Exception | None:
                if lenient:
                    return None
                return Unavailable(f"{what}: {quorum!r} read at {where} not satisfied within {waited} "
                                   f"({self.view.answered(ping, quorum.group)})")

            return Wait(lambda: self.quorum_read_ready(quorum, ping), unanswered, prompt=True)
        if level == LINEARIZABLE:
            raise ValueError("LINEARIZABLE reads sync with the log; the driver handles them")
        raise TypeError(f"unknown read level {level!r}")

    def begin_quorum_read(self) -> int:
        """Start a ``QUORUM``/``ALL`` read: returns the ping that this replica's next
        heartbeats carry; peers answer it with their current context."""
        hb = self._heartbeats
        hb.ping = max(hb.ping + 1, hb.hlc.peek())
        return hb.ping

    def quorum_read_ready(self, level: QUORUM | ALL, ping: int) -> bool:
        """Whether enough of ``level``'s group answered ``ping`` and local state includes
        everything they reported (then a read sees every write they acknowledged)."""
        return self.view.quorum_read_ready(level, ping)

    # -- staleness ---------------------------------------------------------------------
    def staleness_ms(self) -> float:
        """How stale this replica may be (ms): see :meth:`Replica.staleness_ms`."""
        return self.view.staleness(self._heartbeats.now_ms())

    def freshness(self) -> dict[str, tuple[float, float]]:
        """Freshness of every field with an SLO: ``{field: (staleness_s, max_lag_s)}``."""
        stale = self.staleness_ms() / 1000
        return {d.name: (stale, d.policy.max_lag) for d in self._definitions if d.policy.max_lag is not None}

    def check_slo(self) -> None:
        """Count and log every field whose freshness SLO went from met to missed."""
        for name, (stale, max_lag) in self.freshness().items():
            missed = stale > max_lag
            if missed and name not in self._slo_missed:
                self._slo_missed.add(name)
                self._stats.slo_breaches[name] = self._stats.slo_breaches.get(name, 0) + 1
                log.warning("%s: freshness SLO of %r missed: %.3gs stale, objective %.3gs",
                            self.identity.actor, name, stale, max_lag)
            elif not missed:
                self._slo_missed.discard(name)
