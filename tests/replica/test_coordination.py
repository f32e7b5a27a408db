"""The coordinator: acks, liveness, staleness, quorum reads and freshness SLOs, decided
from heartbeats (Membership) and the store; and the waits it builds for each level."""

from __future__ import annotations

import pytest

from crdtsync import Eventual, Feature, GCounter
from crdtsync.clock import Context, Dot
from crdtsync.errors import StaleRead, Unavailable
from crdtsync.events import Event
from crdtsync.policy import ACKS, ALL, LINEARIZABLE, LOCAL, MAX_STALENESS, QUORUM, SESSION

from ._parts import Assembly, ident

FIELDS = (Feature("clicks", GCounter), Feature("fresh", GCounter, policy=Eventual(max_lag=2.0)))
B = ident("b", region="eu", incarnation="j1")
C = ident("c", region="us", incarnation="k1")


def own_write(p: Assembly) -> Event:
    return p.writer.write_raw("clicks", "k", GCounter, "increment", (1,), {})


# -- acks ------------------------------------------------------------------------------
def test_a_write_is_acknowledged_once_enough_members_report_its_dot() -> None:
    p = Assembly(FIELDS)
    p.hear(B, Context())
    p.hear(C, Context())
    ev = own_write(p)
    assert p.coordinator.view.acks(ev.dot, None) == frozenset({"a"}), "this replica applied it"
    assert p.coordinator.acknowledged(ACKS(1), ev.dot)
    assert not p.coordinator.acknowledged(QUORUM(), ev.dot), "2 of 3 needed"
    p.hear(B, Context().add(ev.dot))
    assert p.coordinator.acknowledged(QUORUM(), ev.dot)
    assert not p.coordinator.acknowledged(ALL(), ev.dot)
    p.hear(C, Context().add(ev.dot))
    assert p.coordinator.acknowledged(ALL(), ev.dot)


def test_acks_count_only_members_of_the_group() -> None:
    p = Assembly(FIELDS)  # a is in eu
    p.hear(C, Context())
    ev = own_write(p)
    p.hear(C, Context().add(ev.dot))
    assert p.coordinator.view.acks(ev.dot, "us") == frozenset({"c"})
    assert not p.coordinator.acknowledged(ACKS(1, group="eu"), Dot("x~1", 1)), "nobody has an unknown dot"
    assert p.coordinator.acknowledged(ALL(group="us"), ev.dot)


def test_a_member_known_only_from_the_roster_still_counts_in_the_quorum_size() -> None:
    from crdtsync.types.registers import LWWRegister

    p = Assembly(FIELDS)
    for who in (B, C):
        p.fleet.learn(f"join/{who.actor}", LWWRegister().set(
            {"name": who.name, "region": who.region, "role": who.role}, actor=who.actor, ts=1), origin=who.actor)
    ev = own_write(p)
    assert not p.coordinator.acknowledged(QUORUM(), ev.dot), "b and c joined: a alone is not a majority of 3"


# -- liveness -----------------------------------------------------------------------------
def test_an_ack_write_fails_fast_without_a_control_channel() -> None:
    p = Assembly(FIELDS, control=False)
    with pytest.raises(Unavailable, match="control channel"):
        p.coordinator.check_reachable(ACKS(1), "raise")
    p.coordinator.check_reachable(ACKS(1), "local")  # falls back: no error


def test_an_ack_write_fails_fast_when_too_few_peers_were_heard_from_within_liveness() -> None:
    p = Assembly(FIELDS, liveness=3.0)
    p.hear(B, Context())
    p.hear(C, Context())
    p.coordinator.check_reachable(ALL(), "raise")
    p.clock.ms += 4_000
    p.hear(B, Context())  # c silent for 4 s
    p.heartbeats.observe(p.heartbeats.build())
    with pytest.raises(Unavailable, match="nothing was written"):
        p.coordinator.check_reachable(ALL(), "raise")
    assert p.stats.events_rejected == {"unavailable": 1}
    p.coordinator.check_reachable(QUORUM(), "raise")  # a and b are a majority


def test_an_ack_wait_that_runs_out_raises_unavailable_carrying_the_written_event() -> None:
    p = Assembly(FIELDS)
    p.hear(B, Context())
    ev = own_write(p)
    w = p.coordinator.ack_wait(ALL(), "raise", ev, "clicks/k", "here")
    assert not w.ready()
    exc = w.failure("1s")
    assert isinstance(exc, Unavailable) and exc.event == ev and "['a']" in str(exc)
    lenient = p.coordinator.ack_wait(ALL(), "local", ev, "clicks/k", "here")
    assert lenient.failure("1s") is None and p.stats.events_rejected == {"degraded_write": 1}
    p.hear(B, Context().add(ev.dot))
    assert w.ready()


# -- reads ----------------------------------------------------------------------------------
def test_local_reads_wait_for_nothing_and_linearizable_is_the_drivers() -> None:
    p = Assembly(FIELDS)
    assert p.coordinator.read_wait(LOCAL, "raise", "clicks") is None
    with pytest.raises(ValueError):
        p.coordinator.read_wait(LINEARIZABLE, "raise", "clicks")


def test_a_session_read_waits_until_the_replica_holds_the_token() -> None:
    p = Assembly(FIELDS)
    token = Context().add(Dot(B.actor, 1))
    w = p.coordinator.read_wait(SESSION(token), "raise", "clicks")
    assert w is not None and not w.ready()
    exc = w.failure("1s")
    assert isinstance(exc, StaleRead) and p.stats.events_rejected == {"stale_read": 1}
    p.store.set_context(token)
    assert w.ready()


def test_staleness_is_how_long_ago_this_replica_had_everything_an_origin_had_written() -> None:
    p = Assembly(FIELDS)
    theirs = Context().add(Dot(B.actor, 1))
    p.hear(B, theirs)
    assert p.coordinator.staleness_ms() == float("inf"), "b wrote something this replica never got"
    p.store.set_context(theirs)
    assert p.coordinator.staleness_ms() == 0
    p.clock.ms += 5_000  # b is not heard from for 5 s: it may have written more since
    assert p.coordinator.staleness_ms() == 5_000
    w = p.coordinator.read_wait(MAX_STALENESS(2), "raise", "clicks")
    assert w is not None and not w.ready() and not w.patient and w.prompt
    assert isinstance(w.failure("0s"), StaleRead)
    p.hear(B, theirs)  # heard again, nothing new
    assert w.ready()
    waits = p.coordinator.read_wait(MAX_STALENESS(2, wait=True), "local", "clicks")
    assert waits is not None and waits.patient and waits.failure("0s") is None


def test_a_quorum_read_is_ready_once_a_quorum_answered_and_their_state_is_here() -> None:
    p = Assembly(FIELDS)
    p.hear(B, Context())
    p.hear(C, Context())
    w = p.coordinator.read_wait(QUORUM(), "raise", "clicks")
    assert w is not None and w.prompt
    ping = p.heartbeats.ping
    assert ping > 0 and p.heartbeats.build().ping == ping, "the next heartbeats carry the ping"
    assert not w.ready(), "only this replica answered"
    theirs = Context().add(Dot(B.actor, 3))
    p.hear(B, theirs, echo={"a": ping})
    assert not w.ready(), "b answered with a write this replica lacks"
    p.store.set_context(theirs)
    assert w.ready()
    late = p.coordinator.read_wait(QUORUM(), "raise", "clicks")  # a new ping nobody answered yet
    assert late is not None and not late.ready()
    exc = late.failure("1s")
    assert isinstance(exc, Unavailable) and "answered: ['a']" in str(exc)


def test_a_quorum_read_needs_a_control_channel_unless_it_may_fall_back() -> None:
    p = Assembly(FIELDS, control=False)
    with pytest.raises(Unavailable):
        p.coordinator.read_wait(QUORUM(), "raise", "clicks")
    w = p.coordinator.read_wait(QUORUM(), "local", "clicks")
    assert w is not None and w.failure("1s") is None


def test_each_read_gets_a_new_ping_after_every_stamp_so_far() -> None:
    p = Assembly(FIELDS)
    first = p.coordinator.begin_quorum_read()
    second = p.coordinator.begin_quorum_read()
    assert second > first >= 1


# -- freshness SLO --------------------------------------------------------------------------------
def test_a_missed_freshness_slo_is_counted_once_per_breach() -> None:
    p = Assembly(FIELDS)
    theirs = Context().add(Dot(B.actor, 1))
    p.store.set_context(theirs)
    p.hear(B, theirs)
    p.coordinator.check_slo()
    assert p.stats.slo_breaches == {}
    p.clock.ms += 3_000  # max_lag is 2 s
    p.coordinator.check_slo()
    p.coordinator.check_slo()
    assert p.stats.slo_breaches == {"fresh": 1}, "a breach that lasts is counted once"
    assert p.coordinator.freshness() == {"fresh": (3.0, 2.0)}
    p.hear(B, theirs)
    p.coordinator.check_slo()  # met again
    assert p.stats.slo_breaches == {"fresh": 1}
    p.clock.ms += 3_000
    p.coordinator.check_slo()
    assert p.stats.slo_breaches == {"fresh": 2}, "a new breach is counted again"
