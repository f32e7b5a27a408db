"""GCounter and PNCounter: what users rely on."""

from __future__ import annotations

import pytest

from crdtsync import GCounter, PNCounter
from crdtsync.errors import IncompatibleState


def test_concurrent_increments_all_count_and_duplicates_do_not():
    cloud, edge = GCounter(), GCounter()
    d1 = cloud.increment(3, actor="cloud")
    d2 = edge.increment(2, actor="edge")
    cloud = cloud.join(d1)
    edge = edge.join(d2)
    merged = cloud.join(edge).join(d1).join(d2)  # duplicated deltas change nothing
    assert merged.value() == 5
    assert merged.counts == {"cloud": 3, "edge": 2}


def test_delta_is_the_actor_total_so_a_later_delta_covers_a_lost_one():
    a = GCounter()
    d1 = a.increment(1, actor="a")
    a = a.join(d1)
    d2 = a.increment(1, actor="a")
    assert GCounter().join(d2).value() == 2, "receiving only the later delta still counts both"


def test_increment_validation():
    g = GCounter()
    with pytest.raises(ValueError, match="PNCounter.decrement"):
        g.increment(-1, actor="a")
    with pytest.raises(TypeError, match="ints"):
        g.increment(1.5, actor="a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="actor"):
        g.increment(1, actor="")
    assert g.increment(0, actor="a").value() == 0
    big = g.join(g.increment(2**63 - 1, actor="a"))
    with pytest.raises(ValueError, match="64-bit"):
        big.increment(1, actor="a")


def test_pncounter_goes_negative_and_merges():
    a, b = PNCounter(), PNCounter()
    a = a.join(a.increment(10, actor="a"))
    b = b.join(b.decrement(15, actor="b"))
    assert a.join(b).value() == b.join(a).value() == -5


def test_joining_different_types_is_refused():
    with pytest.raises(IncompatibleState):
        GCounter().join(PNCounter())  # type: ignore[arg-type]


def test_encoding_is_deterministic_and_typed():
    a = GCounter().increment(3, actor="b").join(GCounter().increment(1, actor="a"))
    b = GCounter().increment(1, actor="a").join(GCounter().increment(3, actor="b"))
    assert a.encode() == b.encode()
    assert GCounter.decode(a.encode()) == a
