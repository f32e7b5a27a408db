"""The simulated Cluster repairs dropped records in the background, during ``run()``.

Links drop records (``faults.drop``); nothing calls :meth:`Cluster.settle`. The
replicas' anti-entropy (digests next to heartbeats, re-publishing what a peer lacks)
must bring every node to the same context and state while the cluster just runs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Feature, GCounter, ORSet
from crdtsync.policy import LOCAL, Tunable
from crdtsync.testing.cluster import Cluster, assert_converged

TAGS = Feature("tags", ORSet, policy=Tunable(write=LOCAL, read=LOCAL))
HITS = Feature("hits", GCounter, policy=Tunable(write=LOCAL, read=LOCAL))


def _write_lossy(c: Cluster, n_writes: int) -> set[str]:
    written = set()
    c.faults.drop = 0.6
    c.faults.heartbeat_drop = 0.0
    for i in range(n_writes):
        node = c.names[i % len(c.names)]
        c.write(node, "tags", "k", "add", f"t{i}")
        c.write(node, "hits", f"e{i % 3}", "increment", 1)
        written.add(f"t{i}")
        c.step()
    c.faults.drop = 0.0
    return written


def _converged(c: Cluster) -> bool:
    ctxs = list(c.contexts().values())
    return all(x == ctxs[0] for x in ctxs)


def test_dropped_records_are_repaired_by_run_alone() -> None:
    with Cluster(4, schema=[TAGS, HITS], seed=7, heartbeat_ms=50) as c:
        written = _write_lossy(c, 40)
        assert not _converged(c), "the drops lost nothing: the test would prove nothing"
        # the links never re-ship old records: only anti-entropy can repair
        for _ in range(200):
            c.run(5)
            if _converged(c):
                break
        assert _converged(c)
        assert_converged(c)
        for n in c.up():
            assert c.value(n, "tags", "k") == frozenset(written)
            assert sum(c.value(n, "hits", f"e{j}") for j in range(3)) == 40
        stats = [c.replica(n).antientropy.stats for n in c.up()]
        assert sum(s.records_republished for s in stats) > 0
        assert all(s.digests_received > 0 for s in stats)


def test_without_anti_entropy_the_same_run_does_not_converge() -> None:
    """The control: the links alone never repair (so the test above can fail)."""
    with Cluster(4, schema=[TAGS, HITS], seed=7, heartbeat_ms=50, antientropy=False) as c:
        _write_lossy(c, 40)
        c.run(200)
        assert not _converged(c)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), drop=st.floats(0.1, 0.9))
def test_property_any_drop_pattern_converges_during_run(seed: int, n: int, drop: float) -> None:
    with Cluster(n, schema=[TAGS], seed=seed, heartbeat_ms=50) as c:
        c.faults.drop = drop
        for i in range(12):
            c.write(c.names[i % n], "tags", "k", "add", f"t{i}")
            c.step()
        c.faults.drop = 0.0
        for _ in range(200):
            c.run(5)
            if _converged(c):
                break
        assert _converged(c)
        for name in c.up():
            assert c.value(name, "tags", "k") == frozenset(f"t{i}" for i in range(12))


def test_a_node_restored_from_an_old_backup_converges_during_run() -> None:
    with Cluster(3, schema=[TAGS, HITS], seed=11, heartbeat_ms=50, snapshot_every=4) as c:
        for i in range(10):
            c.write("n2", "tags", "k", "add", f"early{i}")
            c.step()
        c.run(10)
        old = c.backup("n2")
        written = {f"early{i}" for i in range(10)}
        for i in range(30):
            node = c.names[i % 3]
            c.write(node, "tags", "k", "add", f"late{i}")
            c.write(node, "hits", "e", "increment", 1)
            written.add(f"late{i}")
            c.step()
        c.run(10)
        assert _converged(c)
        c.restore_backup("n2", old)
        restored = c.value("n2", "tags", "k")
        assert restored != frozenset(written), "the backup must be older than the fleet's state"
        # n2's own late events exist now only at its peers: anti-entropy brings them back
        for _ in range(200):
            c.run(5)
            if _converged(c):
                break
        assert _converged(c)
        for n in c.up():
            assert c.value(n, "tags", "k") == frozenset(written)
            assert c.value(n, "hits", "e") == 30
        assert c.replica("n0").antientropy.stats.records_republished + \
            c.replica("n1").antientropy.stats.records_republished > 0
