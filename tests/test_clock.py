"""Dots, contexts and the hybrid logical clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync.clock import HLC, Context, Dot, Ordering, hlc_logical, hlc_wall_ms, make_hlc
from crdtsync.errors import CorruptRecord, FutureTimestamp, UnsupportedVersion

dots = st.builds(Dot, st.sampled_from(["a", "b", "c"]), st.integers(1, 12))
contexts = st.builds(Context.from_dots, st.lists(dots, max_size=20))


def test_prefix_and_cloud_compaction():
    c = Context.from_dots([Dot("a", 1), Dot("a", 3)])
    assert c.vv == {"a": 1} and c.cloud == {Dot("a", 3)}
    c2 = c.add(Dot("a", 2))
    assert c2.vv == {"a": 3} and c2.is_compact()
    assert c.vv == {"a": 1}, "contexts are immutable"
    assert Dot("a", 2) in c2 and Dot("a", 4) not in c2
    assert c2.next_dot("a") == Dot("a", 4) and c.next_dot("a") == Dot("a", 4)
    assert c.next_dot("z") == Dot("z", 1)


def test_compare():
    a = Context({"x": 2})
    b = Context({"x": 2, "y": 1})
    c = Context({"y": 3})
    assert a.compare(b) is Ordering.BEFORE and b.compare(a) is Ordering.AFTER
    assert a.compare(c) is Ordering.CONCURRENT and a.concurrent(c)
    assert a.compare(Context({"x": 2})) is Ordering.EQUAL
    # a prefix covered by the other side's cloud still counts as contained
    assert Context.from_dots([Dot("x", 3)]) <= Context({"x": 3})
    assert not Context({"x": 3}) <= Context.from_dots([Dot("x", 3)])


@given(contexts, contexts, contexts)
def test_join_is_a_semilattice(a, b, c):
    assert a.join(b) == b.join(a)
    assert a.join(b).join(c) == a.join(b.join(c))
    assert a.join(a) == a
    assert a <= a.join(b) and b <= a.join(b)
    assert set(a.join(b).dots()) == set(a.dots()) | set(b.dots())


@given(contexts, contexts)
def test_meet_is_intersection(a, b):
    assert set(a.meet(b).dots()) == set(a.dots()) & set(b.dots())
    assert a.meet(b) <= a and a.meet(b) <= b


@given(contexts, contexts)
def test_order_matches_set_inclusion(a, b):
    assert (a <= b) == (set(a.dots()) <= set(b.dots()))


@given(contexts)
def test_encoding_roundtrip_and_determinism(c):
    blob = c.encode()
    assert Context.decode(blob) == c
    assert Context.decode(blob).encode() == blob
    rebuilt = Context.from_dots(reversed(list(c.dots())))
    assert rebuilt.encode() == blob, "same dots, same bytes"


@given(st.binary(max_size=40))
def test_decode_garbage_raises_typed_error(blob):
    try:
        Context.decode(blob)
    except (CorruptRecord, UnsupportedVersion):
        pass


def test_decode_rejects_unnormalized_and_future_versions():
    import msgpack

    with pytest.raises(CorruptRecord):
        Context.decode(msgpack.packb([1, [["a", 1, [2]]]]))  # 2 belongs to the prefix
    with pytest.raises(CorruptRecord):
        Context.decode(msgpack.packb([1, [["b", 1, []], ["a", 1, []]]]))  # unsorted
    with pytest.raises(UnsupportedVersion):
        Context.decode(msgpack.packb([2, []]))


def test_hlc_is_monotonic_even_when_wall_clock_goes_back():
    wall = [1_000]
    clock = HLC(clock=lambda: wall[0])
    t1 = clock.now()
    wall[0] = 900
    t2 = clock.now()
    assert t2 > t1 and hlc_wall_ms(t2) == 1_000 and hlc_logical(t2) == 1
    wall[0] = 2_000
    assert hlc_wall_ms(clock.now()) == 2_000


def test_hlc_update_moves_past_remote_and_rejects_future():
    wall = [10_000]
    clock = HLC(clock=lambda: wall[0], max_drift_ms=500)
    remote = make_hlc(10_400, 7)
    t = clock.update(remote)
    assert t > remote
    with pytest.raises(FutureTimestamp, match="ahead"):
        clock.update(make_hlc(10_501))
    assert clock.rejected == 1
    assert clock.now() > t, "a rejected timestamp does not move the clock"
    assert hlc_wall_ms(clock.now()) == 10_400
    with pytest.raises(FutureTimestamp):
        clock.update(-1)


def test_hlc_stamps_stay_unique_when_threads_share_it():
    """One thread stamps lock-free; once others join, the clock locks and no stamp repeats."""
    import threading

    h = HLC(clock=lambda: 1_000)  # a frozen wall clock: every stamp is a logical increment
    per_thread: list[list[int]] = [[] for _ in range(4)]
    h.now()  # the main thread owns it first
    barrier = threading.Barrier(4)

    def stamp(out: list[int]) -> None:
        barrier.wait()
        for _ in range(20_000):
            out.append(h.now())

    threads = [threading.Thread(target=stamp, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [ts for out in per_thread for ts in out]
    assert len(set(every)) == len(every), "two threads got the same stamp"
    for out in per_thread:
        assert out == sorted(out) and len(set(out)) == len(out)


def test_hlc_fence_refuses_a_stamp_and_leaves_the_clock_unchanged():
    wall = [10_000]
    h = HLC(clock=lambda: wall[0], max_drift_ms=1_000)
    before = h.now()
    seen: list[int] = []

    def fence(stamp_wall: int) -> None:
        seen.append(stamp_wall)
        if stamp_wall > 50_000:
            raise FutureTimestamp("ahead of the fleet")

    h.fence = fence
    wall[0] = 3_600_000  # the wall clock jumps an hour ahead
    with pytest.raises(FutureTimestamp):
        h.now()
    assert h.last == before, "a refused stamp must not move the clock"
    wall[0] = 10_001  # corrected
    ts = h.now()
    assert hlc_wall_ms(ts) == 10_001 and seen[-1] == 10_001
    # a clock already far ahead of its own wall (it absorbed a jump before any fence) is fenced too
    h2 = HLC(clock=lambda: wall[0], max_drift_ms=1_000)
    h2.restore(make_hlc(3_600_000))
    h2.fence = fence
    with pytest.raises(FutureTimestamp):
        h2.now()
    assert h2.peek() > make_hlc(3_600_000), "peek() is not fenced: heartbeats keep flowing"
    wall[0] = 3_600_000
    assert h.peek() >= make_hlc(3_600_000) and h.last == ts, "peek() never moves the clock"
