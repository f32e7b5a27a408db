"""The simulated Cluster with hubs and edges: the same control code, in simulated time.

With ``hubs=3`` nodes n0..n2 are hubs and n3..n8 edges (n3, n6 read n0; n4, n7 read n1;
n5, n8 read n2). Edges read only their hub's aggregate, yet ack levels, quorum reads,
staleness and partitions behave as with peers; lost heartbeats are gaps, repaired.
"""

from __future__ import annotations

import pytest

from crdtsync import Feature, LWWRegister, ORSet
from crdtsync.errors import StaleRead, Unavailable
from crdtsync.policy import ALL, LOCAL, MAX_STALENESS, QUORUM, Tunable
from crdtsync.testing.cluster import Cluster, assert_converged

TAGS = Feature("tags", ORSet, policy=Tunable(write=LOCAL, read=LOCAL))
QSET = Feature("members", ORSet, policy=Tunable(write=QUORUM(), read=QUORUM(), timeout=1.0))
PRICE = Feature("price", LWWRegister, policy=Tunable(write=LOCAL, read=MAX_STALENESS(1.0)))
SIDE_A = ["n0", "n3", "n6", "n1"]  # 4 of 9: a minority


def holders(c: Cluster, dot) -> list[str]:
    return [n for n in c.up() if dot in c.replica(n).context]


def test_edges_read_only_their_hub_and_still_get_quorum_writes_and_reads():
    with Cluster(9, schema=[QSET, PRICE], seed=1, hubs=3) as c:
        c.run_for(300)
        assert c.topology("n3").hub == "n0" and c.topology("n8").hub == "n2"
        for e in ("n3", "n4", "n5"):
            ev = c.update(e, "members", "team", "add", e)
            assert len(holders(c, ev.dot)) >= 5  # acknowledged means a majority applied it
        ev = c.update("n7", "members", "team", "add", "all", write=ALL())
        assert holders(c, ev.dot) == c.names
        assert c.read("n8", "members", "team") == {"n3", "n4", "n5", "all"}
        for e in ("n3", "n4", "n5", "n6", "n7", "n8"):
            assert len(c.replica(e).membership) == 1  # never heard a peer's heartbeat
            assert c.control_bytes[e] < c.control_bytes["n0"]
        c.settle()
        assert_converged(c)


def test_an_edge_in_a_minority_partition_fails_fast_and_its_write_in_the_window_times_out():
    with Cluster(9, schema=[QSET], seed=2, hubs=3) as c:
        c.run_for(300)
        c.partition([SIDE_A])
        start = c.now_ms
        with pytest.raises(Unavailable, match="not acknowledged") as info:
            c.update("n3", "members", "team", "add", "maybe", timeout_ms=500)
        ev = info.value.event
        assert ev is not None and c.now_ms - start >= 500
        assert sorted(holders(c, ev.dot)) == sorted(SIDE_A)
        c.run_for(c.liveness_ms + 100)  # n3's hub notices the rest went silent
        r = c.replica("n3")
        before = r.context
        with pytest.raises(Unavailable, match="nothing was written"):
            c.update("n3", "members", "team", "add", "lost?")
        assert r.context == before
        ok = c.update("n5", "members", "team", "add", "kept")  # the majority side (n5 reads n2) goes on
        assert len(holders(c, ok.dot)) >= 5
        c.heal()
        c.run_for(500)
        assert c.replica("n3").acknowledged(QUORUM(), ev.dot)
        c.settle()
        assert_converged(c)
        assert c.value("n3", "members", "team") == {"maybe", "kept"}


def test_max_staleness_at_an_edge_cut_off_from_its_hub_raises_and_recovers():
    with Cluster(9, schema=[PRICE], seed=3, hubs=3) as c:
        c.write("n1", "price", "sku", "set", 1)
        c.run_for(400)
        assert c.read("n5", "price", "sku") == 1
        c.partition([["n5"]])
        c.write("n1", "price", "sku", "set", 2)
        c.run_for(1300)
        with pytest.raises(StaleRead):
            c.read("n5", "price", "sku")
        c.heal()
        assert c.read("n5", "price", "sku", level=MAX_STALENESS(0.9, wait=True)) == 2


def test_lost_heartbeats_are_gaps_that_are_repaired_never_applied_on_a_wrong_base():
    with Cluster(9, schema=[QSET, TAGS], seed=4, hubs=3) as c:
        c.faults.heartbeat_drop = 0.3
        for i in range(20):
            c.write(f"n{3 + i % 6}", "tags", "t", "add", i)
            c.run(5)
        gaps = sum(c.replica(n).stats.events_rejected.get("heartbeat_gap", 0) for n in c.names)
        assert gaps > 0
        c.faults.heartbeat_drop = 0.0
        c.settle()
        c.run_for(600)
        for hub in ("n0", "n1", "n2"):
            m = c.replica(hub).membership
            for n in c.names:  # every hub's view of every replica is that replica's state
                assert m.get(n).context == c.replica(n).context, (hub, n)
        ev = c.update("n6", "members", "team", "add", "after", write=ALL())
        assert holders(c, ev.dot) == c.names


def test_a_forged_aggregate_is_counted_and_dropped_and_the_edge_keeps_its_view():
    from crdtsync.control.stream import StreamEncoder

    with Cluster(5, schema=[QSET], seed=5, hubs=1) as c:
        c.run_for(300)
        r = c.replica("n1")  # an edge of hub n0
        view = r.coordinator.view
        size = view.size(None)
        hub = c.replica("n0").heartbeats.aggregator
        bad = dict(hub.state(c.now_ms))
        bad["acks"] = {"x~1": [["eu", -3, "many"]]}
        forged = StreamEncoder("agg", "n0", epoch=99).encode(bad)
        assert not r.observe_heartbeat(forged)
        assert r.stats.events_rejected["bad_heartbeat"] == 1
        assert view.size(None) == size
        key = ("agg", "n0")
        assert r.heartbeats.decoder._held[key].epoch != 99  # never kept as a base
        ev = c.update("n1", "members", "team", "add", "still")
        assert len(holders(c, ev.dot)) >= 3
