"""Heartbeats: what a replica reports, what it takes in from peers (untrusted: bad ones
are counted and dropped), and the beat loop with its duties."""

from __future__ import annotations

import asyncio
from typing import Any

from crdtsync.clock import HLC, Context, Dot
from crdtsync.control import Heartbeat, MemoryControl
from crdtsync.control.heartbeat import HEARTBEAT_SECTIONS
from crdtsync.control.stream import StreamDecoder
from crdtsync.replica.heartbeats import Heartbeats, default_control
from crdtsync.replica.stats import ReplicaStats

from .._wait import until
from ._parts import FakeClock, defs, heartbeat, ident, membership, skew, store

ME = ident("a", incarnation="i1")
PEER = ident("b", incarnation="j1")


class Parts:
    def __init__(self, control: Any = None, interval: float = 3600.0, wall: int = 1_000_000) -> None:
        self.stats = ReplicaStats()
        self.wall = FakeClock(wall)
        self.hlc = HLC(clock=self.wall)
        self.store = store(ME.actor, defs())
        self.membership = membership(ME)
        self.skew = skew(self.stats, FakeClock(0))
        self.pruned: set[str] = set()
        self.heard = 0
        self.hb = Heartbeats(ME, control, interval, self.store, self.membership, self.skew, self.stats,
                             self.hlc, self.pruned, self._heard)

    def _heard(self) -> None:
        self.heard += 1


def test_a_heartbeat_reports_identity_context_position_ping_echo_and_pruned() -> None:
    p = Parts()
    p.store.set_context(Context().add(Dot(ME.actor, 1)).add(Dot(PEER.actor, 4)))
    p.store.position = 17
    p.hb.ping = 5
    p.hb.echo["c"] = 3
    p.pruned.add("old~x")
    hb = p.hb.build()
    assert (hb.actor, hb.name, hb.region, hb.role) == (ME.actor, "a", ME.region, ME.role)
    assert hb.context == p.store.ctx() and hb.positions == {"log": 17}
    assert hb.wall_ms == 1_000_000 and hb.ping == 5 and hb.echo == {"c": 3}
    assert hb.pruned == frozenset({"old~x"})
    assert Heartbeat.decode(hb.encode()) == hb


def test_a_replica_that_applied_nothing_reports_no_position() -> None:
    assert Parts().hb.build().positions == {}


def test_a_peers_heartbeat_feeds_membership_and_the_skew_monitor_and_wakes_waiters() -> None:
    p = Parts()
    ctx = Context().add(Dot(PEER.actor, 2))
    assert p.hb.observe(heartbeat(PEER, ctx, 999_000).encode()) is True
    assert p.membership.get("b") is not None and p.membership.get("b").context == ctx  # type: ignore[union-attr]
    assert p.skew.fleet_now_ms() == 999_000
    assert p.heard == 1
    # an older heartbeat of the same incarnation is stale: not the latest, not an error
    assert p.hb.observe(heartbeat(PEER, Context(), 998_000)) is False
    assert p.membership.get("b").context == ctx  # type: ignore[union-attr]


def test_bad_heartbeat_bytes_are_counted_and_dropped_never_raised() -> None:
    p = Parts()
    assert p.hb.observe(b"\x93not a heartbeat") is False
    assert p.stats.events_rejected == {"bad_heartbeat": 1}
    assert p.heard == 0 and len(p.membership) == 0


def test_a_heartbeat_too_far_ahead_is_refused_but_still_tells_where_the_fleets_clock_is() -> None:
    p = Parts()
    ahead = 1_000_000 + 10 * 60_000
    assert p.hb.observe(heartbeat(PEER, Context(), ahead)) is False
    assert p.stats.events_rejected == {"bad_heartbeat": 1}
    assert p.membership.get("b") is None
    assert p.skew.fleet_now_ms() == ahead


def test_a_removed_incarnations_heartbeats_are_counted_and_ignored() -> None:
    p = Parts()
    p.membership.forbid(PEER.actor)
    assert p.hb.observe(heartbeat(PEER, Context(), 999_000)) is False
    assert p.stats.events_rejected == {"removed_replica": 1}
    assert p.skew.fleet_now_ms() is None, "a removed peer's clock does not count either"


def test_a_peers_ping_is_answered_in_the_next_heartbeat_once() -> None:
    p = Parts()
    p.hb.observe(heartbeat(PEER, Context(), 999_000, ping=7))
    assert p.hb.build().echo == {"b": 7}
    p.hb.observe(heartbeat(PEER, Context(), 999_001, ping=6))  # an older ping does not move the echo
    assert p.hb.echo == {"b": 7}


def test_own_heartbeat_does_not_count_as_a_peers_clock() -> None:
    p = Parts()
    p.hb.observe(p.hb.build())
    assert p.skew.fleet_now_ms() is None
    assert p.membership.get("a") is not None


def test_publish_runs_the_duties_then_sends_the_heartbeat_to_peers() -> None:
    async def scenario() -> None:
        hub = MemoryControl()
        got: list[bytes] = []
        peer = hub.endpoint()
        peer.start("b", got.append)
        p = Parts(control=hub.endpoint())
        order: list[str] = []
        p.hb.duties.append(lambda: order.append("duty"))
        p.hb.control.start("a", p.hb.receive)  # type: ignore[union-attr]
        await p.hb.publish()
        assert order == ["duty"]
        assert [StreamDecoder({"hb": HEARTBEAT_SECTIONS}).decode(b).sender for b in got] == ["a"]
        assert p.membership.get("a") is not None, "its own heartbeat counts in acks and stability"
        await peer.publish(heartbeat(PEER, Context(), 999_000).encode())
        assert p.membership.get("b") is not None, "received through the channel"

    asyncio.run(scenario())


def test_the_beat_loop_publishes_every_interval_and_promptly_when_woken(py310_timeouts: type[Exception]) -> None:
    # (with py310_timeouts: an interval passing without a wake must not end the loop on 3.10)
    async def scenario() -> None:
        hub = MemoryControl()
        got: list[bytes] = []
        hub.endpoint().start("b", got.append)
        p = Parts(control=hub.endpoint(), interval=0.01)
        p.hb.start()
        try:
            await until(lambda: len(got) >= 3, what="three heartbeats, one per interval")
            p.hb.interval = 3600.0
            await asyncio.sleep(0.05)  # the loop now sleeps in its hour-long interval
            n = len(got)
            p.hb.wake()
            await until(lambda: len(got) > n, what="a prompt heartbeat after wake()")
        finally:
            p.hb.closed = True
            await p.hb.stop()
        assert p.hb._task is not None and p.hb._task.done()

    asyncio.run(scenario())


def test_a_failing_duty_neither_stops_the_heartbeats_nor_the_other_duties() -> None:
    # a bug in one duty (say the SLO check) must not silence the replica: peers would
    # count it as unreachable and ack levels would fail fleet-wide
    async def scenario() -> None:
        hub = MemoryControl()
        got: list[bytes] = []
        hub.endpoint().start("b", got.append)
        p = Parts(control=hub.endpoint(), interval=0.01)
        ran = {"later": 0}

        def broken() -> None:
            raise RuntimeError("a duty's bug")

        p.hb.duties += [broken, lambda: ran.__setitem__("later", ran["later"] + 1)]
        p.hb.start()
        try:
            await until(lambda: len(got) >= 2, what="heartbeats despite a duty that always fails")
        finally:
            p.hb.closed = True
            await p.hb.stop()
        assert ran["later"] >= 2, "the duties after the failing one still run"

    asyncio.run(scenario())


def test_without_a_control_channel_start_and_stop_do_nothing() -> None:
    async def scenario() -> None:
        p = Parts(control=None)
        p.hb.start()
        assert p.hb._task is None
        await p.hb.publish()  # still observes its own heartbeat
        assert p.membership.get("a") is not None
        await p.hb.stop()

    asyncio.run(scenario())


def test_the_default_control_channel_of_a_memory_log_is_its_hub() -> None:
    from crdtsync.log import MemoryLog

    log = MemoryLog()
    ep = default_control(log)
    assert ep is not None and ep._hub is log.control  # type: ignore[attr-defined]
