"""Clock skew against the fleet: is this replica's clock ahead of its peers'?

Peers hold back events stamped further ahead of their own clock than ``max_drift_ms``
(they are applied once the receiver's clock catches up). A replica whose wall clock
jumped ahead would therefore acknowledge writes the rest of the fleet cannot apply for as
long as the jump lasts. :class:`ClockSkewMonitor` estimates the fleet's clock from peers'
heartbeats and lets the replica refuse such writes up front with
:class:`~crdtsync.errors.ClockSkew`, through its HLC's fence.

The estimate: every heartbeat carries its sender's wall time. Its offset from this host's
*monotonic* clock at arrival is kept per peer, so the estimate of a peer's clock now is
``monotonic now + offset``. A jump of the local wall clock does not move the monotonic
clock, so it shows at the very next write, before a new heartbeat arrives. The fleet's
clock is the median of the peers' estimates (the upper median: being ahead of it means
being ahead of a majority of peers, so a single peer with a slow clock fences nobody).
Transit time makes the estimate slightly low, by milliseconds, against a drift bound of
seconds to minutes. Peers not heard from within ``horizon_ms`` no longer count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import ClockSkew
from .stats import ReplicaStats

__all__ = ["ClockSkewMonitor", "monotonic_ms"]

log = logging.getLogger("crdtsync.replica")


def monotonic_ms() -> int:
    """This host's monotonic clock in milliseconds."""
    return time.monotonic_ns() // 1_000_000


class ClockSkewMonitor:
    """Peers' clocks as heartbeats report them, and this replica's skew against them."""

    def __init__(self, *, max_drift_ms: int, stats: ReplicaStats, actor: str,
                 mono_ms: Callable[[], int] = monotonic_ms, horizon_ms: int = 600_000) -> None:
        self.max_drift_ms = max_drift_ms
        self._stats = stats
        self.actor = actor
        self.mono_ms = mono_ms
        self.horizon_ms = horizon_ms
        self._peers: dict[str, tuple[int, int]] = {}  # name -> (wall - mono at arrival, mono at arrival)
        self._fleet: int | None = None  # the fleet's offset from this host's monotonic clock
        self._oldest: int | None = None  # the earliest arrival among _peers (expiry is due past it)

    def observe(self, name: str, wall_ms: int) -> None:
        """A heartbeat from peer ``name`` stamped ``wall_ms`` (its clock) arrived now."""
        mono = self.mono_ms()
        self._peers[name] = (wall_ms - mono, mono)
        self._recompute(mono)

    def forget(self, name: str) -> None:
        """Stop counting peer ``name`` (removed from the fleet)."""
        if self._peers.pop(name, None) is not None:
            self._recompute(self.mono_ms())

    def _recompute(self, mono: int) -> None:
        for name, (_, at) in list(self._peers.items()):
            if mono - at > self.horizon_ms:
                del self._peers[name]
        offsets = sorted(off for off, _ in self._peers.values())
        self._fleet = offsets[len(offsets) // 2] if offsets else None
        self._oldest = min((at for _, at in self._peers.values()), default=None)

    def _expire(self, mono: int) -> None:
        """Drop peers not heard from within the horizon (checked on every read, not only
        when a heartbeat arrives: a peer that went silent must stop counting even when no
        peer is heard from any more)."""
        if self._oldest is not None and mono - self._oldest > self.horizon_ms:
            self._recompute(mono)

    def fleet_now_ms(self) -> int | None:
        """The fleet's clock now (median of the peers' estimates); ``None`` without peers."""
        mono = self.mono_ms()
        self._expire(mono)
        return None if self._fleet is None else mono + self._fleet

    def offsets_ms(self, wall_ms: int) -> dict[str, int]:
        """Each peer's estimated clock minus ``wall_ms`` (this replica's wall time now)."""
        mono = self.mono_ms()
        self._expire(mono)
        return {name: mono + off - wall_ms for name, (off, _) in sorted(self._peers.items())}

    def skew_ms(self, wall_ms: int) -> int | None:
        """How far ``wall_ms`` is ahead of the fleet's clock (negative: behind)."""
        fleet = self.fleet_now_ms()
        return None if fleet is None else wall_ms - fleet

    def check(self, stamp_wall_ms: int) -> None:
        """Raise :class:`ClockSkew` if a stamp at ``stamp_wall_ms`` would be held back by
        the fleet (more than ``max_drift_ms`` ahead of its clock), counting it in
        ``stats.clock_skew``. The replica's HLC fence."""
        mono = self.mono_ms()
        self._expire(mono)
        if self._fleet is None:
            return
        ahead = stamp_wall_ms - (mono + self._fleet)
        if ahead > self.max_drift_ms:
            n = self._stats.clock_skew = self._stats.clock_skew + 1
            if n == 1 or n % 1000 == 0:
                log.error("%s refused a write: clock %+.1f s off the fleet's (%d refused so far)",
                          self.actor, ahead / 1000, n)
            raise ClockSkew(
                f"this replica's clock is {ahead / 1000:.1f} s ahead of its peers' (median of "
                f"{len(self._peers)}; limit {self.max_drift_ms / 1000:g} s): peers would hold back "
                "what it writes, so nothing was written. Fix the host's clock (NTP); writes "
                "resume by themselves once it agrees with the fleet",
                ahead_ms=ahead,
            )
