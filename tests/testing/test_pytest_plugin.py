"""The pytest plugin's cluster fixture (installed through the pytest11 entry point)."""

from crdtsync import Feature, ORSet
from crdtsync.testing.cluster import assert_converged


def test_cluster_fixture_builds_seeded_clusters(crdtsync_cluster, crdtsync_seed):
    c = crdtsync_cluster(3, schema=[Feature("members", ORSet)])
    assert crdtsync_seed == 0 and len(c.names) == 3
    c.write("n0", "members", "team", "add", "ana")
    c.partition([["n0"], ["n1", "n2"]])
    c.write("n2", "members", "team", "add", "bo")
    c.heal()
    c.settle()
    assert_converged(c)
    assert c.value("n1", "members", "team") == {"ana", "bo"}
