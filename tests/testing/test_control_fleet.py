"""Fleet scale: 1,000 edges and 3 hubs on the control plane, with byte budgets.

Every node is a real replica's control code (heartbeats, membership, hub aggregator,
edge view, coordinator); only the data plane is modelled (see ControlFleet). Bytes are
deterministic: the budgets are asserted exactly, timings never (benchmarks/bench_control).
Budgets per heartbeat round: 8 KB read per edge, 4 MB per hub.
"""

from __future__ import annotations

import pytest

from crdtsync.control import Heartbeat
from crdtsync.policy import ALL, QUORUM
from crdtsync.testing.control_fleet import ControlFleet

EDGE_BUDGET, HUB_BUDGET = 8 * 1024, 4 * 1024 * 1024


@pytest.fixture(scope="module")
def fleet():
    f = ControlFleet(1000, 3, seed=5, write_rate=0.002, lag=0.05, regions=("eu", "us"))
    f.run(3)  # joining: everyone's first message is full
    return f


def test_byte_budgets_per_round_with_1000_edges(fleet):
    rounds = fleet.run(10)
    assert max(r.edge_max for r in rounds) <= EDGE_BUDGET
    assert max(r.hub_max for r in rounds) <= HUB_BUDGET
    # what today's full-context heartbeats would cost: every replica reads every other one
    full = sum(len(Heartbeat.encode(fleet.replica(n).heartbeat())) for n in fleet.nodes)
    # (contexts are still small here, ~30 writers: the gap grows with every writer, see the
    # benchmark; an edge already reads a hundredth of it)
    assert max(r.hub_max for r in rounds) < full
    assert max(r.edge_max for r in rounds) < full / 100


def test_a_full_aggregate_amortised_over_its_period_stays_in_the_edge_budget(fleet):
    for h in fleet.hubs:
        fleet.replica(h).heartbeats.request_full()
    r = fleet.round()
    assert r.fulls == 6  # each hub: its heartbeat and its aggregate
    period = fleet.replica(fleet.hubs[0]).heartbeats.topology.full_period
    delta = max(x.edge_max for x in fleet.run(2))
    assert (r.edge_max + (period - 1) * delta) / period <= EDGE_BUDGET
    assert r.hub_max <= HUB_BUDGET


def test_ack_levels_quorum_reads_and_staleness_at_an_edge_of_a_large_fleet(fleet):
    e = fleet.edges[17]
    r = fleet.replica(e)
    dot = fleet.write(e)
    assert not r.acknowledged(QUORUM(), dot)
    assert not r.acknowledged(QUORUM("eu"), dot)
    fleet.run(3)
    assert r.acknowledged(QUORUM(), dot) and r.acknowledged(QUORUM("eu"), dot)
    assert r.coordinator.view.size(None) == 1003 and r.coordinator.view.size("us") == 500
    fleet.run(2)
    assert r.acknowledged(ALL(), dot)
    assert r.staleness_ms() <= 3 * fleet.heartbeat_ms
    ping = r.begin_quorum_read()
    assert not r.quorum_read_ready(QUORUM(), ping)
    fleet.run(4)
    assert r.quorum_read_ready(QUORUM(), ping)


def test_a_removed_edge_is_pruned_everywhere_once_stable(fleet):
    x = fleet.edges[3]
    fleet.write(x)
    fleet.run(2)
    actor = fleet.remove(x)
    fleet.run(4)
    others = [n for n in fleet.nodes if n != x]
    assert all(actor in fleet.replica(n).fleet.pruned for n in others)
    assert all(actor not in fleet.replica(n).context.vv for n in others)
