"""The clock-skew monitor: the fleet's clock from peers' heartbeats, the fence on local
stamps, and peers that stop counting once silent past the horizon."""

from __future__ import annotations

import pytest

from crdtsync.clock import HLC
from crdtsync.errors import ClockSkew
from crdtsync.replica.stats import ReplicaStats

from ._parts import FakeClock, skew


def test_without_peers_there_is_no_fleet_clock_and_nothing_is_fenced() -> None:
    mon = skew(ReplicaStats(), FakeClock(0))
    assert mon.fleet_now_ms() is None and mon.skew_ms(10**12) is None
    mon.check(10**12)  # no peer: nothing to be ahead of


def test_the_fleet_clock_is_the_upper_median_of_peers_and_follows_the_monotonic_clock() -> None:
    mono = FakeClock(100)
    mon = skew(ReplicaStats(), mono)
    mon.observe("b", 10_000)
    mon.observe("c", 20_000)
    mon.observe("d", 5_000_000)  # one far-off peer does not move a median of three
    assert mon.fleet_now_ms() == 20_000
    mono.ms += 1_000
    assert mon.fleet_now_ms() == 21_000, "estimates advance with this host's monotonic clock"
    assert mon.offsets_ms(21_000) == {"b": -10_000, "c": 0, "d": 4_980_000}
    assert mon.skew_ms(25_000) == 4_000
    mon.forget("d")
    assert mon.fleet_now_ms() == 21_000, "upper median of two"
    mon.forget("c")
    assert mon.fleet_now_ms() == 11_000


def test_a_stamp_too_far_ahead_of_the_fleet_is_refused_and_counted() -> None:
    stats = ReplicaStats()
    mon = skew(stats, FakeClock(0), max_drift_ms=1_000)
    mon.observe("b", 50_000)
    mon.check(51_000)  # exactly at the bound: fine
    with pytest.raises(ClockSkew) as info:
        mon.check(51_001)
    assert info.value.ahead_ms == 1_001 and stats.clock_skew == 1


def test_the_monitor_fences_an_hlc_whose_wall_clock_jumped_ahead() -> None:
    wall = FakeClock(1_000_000)
    stats = ReplicaStats()
    mon = skew(stats, FakeClock(0), max_drift_ms=1_000)
    mon.observe("b", 1_000_000)
    hlc = HLC(max_drift_ms=1_000, clock=wall)
    hlc.fence = mon.check
    before = hlc.now()
    wall.ms += 60_000
    with pytest.raises(ClockSkew):
        hlc.now()
    assert hlc.last == before, "a refused stamp leaves the clock as it was"
    wall.ms -= 60_000
    assert hlc.now() > before


def test_a_peer_not_heard_from_within_the_horizon_stops_counting() -> None:
    mono = FakeClock(0)
    stats = ReplicaStats()
    mon = skew(stats, mono, max_drift_ms=1_000, horizon_ms=10_000)
    mon.observe("slow", 0)  # a peer whose clock is far behind this host's wall clock (~1e6)
    with pytest.raises(ClockSkew):
        mon.check(1_000_000)
    mono.ms = 10_001  # silent past the horizon, and no other heartbeat arrives
    assert mon.fleet_now_ms() is None
    assert mon.offsets_ms(1_000_000) == {}
    assert mon.skew_ms(1_000_000) is None
    mon.check(1_000_000)  # the silent peer fences nobody any more
    assert stats.clock_skew == 1


def test_expiry_drops_only_the_silent_peers() -> None:
    mono = FakeClock(0)
    mon = skew(ReplicaStats(), mono, horizon_ms=10_000)
    mon.observe("gone", 0)
    mono.ms = 6_000
    mon.observe("here", 100_000)  # 94 s ahead of this host's monotonic clock
    mono.ms = 12_000
    assert mon.offsets_ms(0) == {"here": 106_000}
    assert mon.fleet_now_ms() == 106_000
    mon.check(106_000 + 60_000)  # within the default drift bound of the one peer left


def test_a_peer_heard_again_counts_again() -> None:
    mono = FakeClock(0)
    mon = skew(ReplicaStats(), mono, horizon_ms=10_000)
    mon.observe("b", 500)
    mono.ms = 20_000
    assert mon.fleet_now_ms() is None
    mon.observe("b", 30_000)
    assert mon.fleet_now_ms() == 30_000
