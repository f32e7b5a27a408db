"""Example-based tests of the feature aggregates: what a feature pipeline relies on."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from crdtsync._encoding import packb
from crdtsync.clock import make_hlc
from crdtsync.errors import CorruptRecord, IncompatibleState
from crdtsync.testing.specs.aggregates import hll_estimate, hll_registers
from crdtsync.types._base import decode_any
from crdtsync.types.aggregates import HyperLogLog, Mean, WindowedCounter, WindowedSum

MIN = 60_000


def at(ms: int) -> int:
    return make_hlc(ms)


def wc(**kw: int) -> WindowedCounter:
    return WindowedCounter(bucket_ms=kw.get("bucket_ms", 10), buckets=kw.get("buckets", 3))


def ws() -> WindowedSum:
    return WindowedSum(bucket_ms=10, buckets=3)


def with_payload(tag: str, body: Any) -> bytes:
    return packb([tag, 1, body])


# -- WindowedCounter ----------------------------------------------------------------


class TestWindowedCounter:
    def test_concurrent_increments_in_one_bucket_all_count(self) -> None:
        a = b = wc()
        a = a.join(a.increment(2, actor="edge", ts=at(1)))
        b = b.join(b.increment(5, actor="cloud", ts=at(4)))
        b = b.join(b.increment(1, actor="cloud", ts=at(7)))
        assert a.join(b).value() == 8 == b.join(a).value()
        assert dict(a.join(b).buckets()) == {0: 8}

    def test_same_delta_delivered_twice_counts_once(self) -> None:
        s = wc()
        d = s.increment(3, actor="edge", ts=at(5))
        s = s.join(d).join(d)
        assert s.value() == 3

    def test_old_buckets_are_dropped_whole_when_a_newer_bucket_arrives(self) -> None:
        edge = wc()
        for ms in (0, 9, 15, 25):
            edge = edge.join(edge.increment(actor="edge", ts=at(ms)))
        assert dict(edge.buckets()) == {0: 2, 10: 1, 20: 1}
        cloud = wc()
        cloud = cloud.join(cloud.increment(10, actor="cloud", ts=at(31)))
        merged = edge.join(cloud)
        # newest bucket is 3 (30..39 ms): buckets 1, 2, 3 are kept, bucket 0 goes whole
        assert dict(merged.buckets()) == {10: 1, 20: 1, 30: 10}
        assert merged.value() == 12
        assert merged.window_start_ms == 10

    def test_late_increment_returns_an_empty_delta_and_is_not_counted(self) -> None:
        s = wc()
        s = s.join(s.increment(actor="a", ts=at(45)))  # bucket 4: window is buckets 2..4
        assert s.accepts(at(20)) and not s.accepts(at(19))
        late = s.increment(7, actor="a", ts=at(19))
        assert late == wc()
        assert s.join(late) is s
        assert s.value() == 1

    def test_late_increment_at_issuer_never_counts_at_a_replica_behind_it(self) -> None:
        # r1 has seen bucket 4 and drops a late bucket-0 increment; r2 still shows bucket 0.
        r1 = r2 = wc()
        d0 = r2.increment(actor="r2", ts=at(1))
        r2 = r2.join(d0)
        r1 = r1.join(d0)
        d4 = r1.increment(actor="r1", ts=at(40))
        r1 = r1.join(d4)
        late = r1.increment(5, actor="r1", ts=at(2))
        r1 = r1.join(late)
        r2 = r2.join(late)
        assert r2.value() == 1  # the late 5 is not replicated
        r2 = r2.join(d4)
        assert r1 == r2 and r2.value() == 1

    def test_window_moves_with_event_time_not_the_readers_clock(self) -> None:
        s = wc()
        s = s.join(s.increment(4, actor="a", ts=at(5)))
        # however long nobody writes, the value stays; total_since gives a reader-relative read
        assert s.value() == 4
        assert s.total_since(1_000) == 0
        assert s.total_since(0) == 4

    def test_zero_increment_advances_the_window_without_counting(self) -> None:
        s = wc()
        s = s.join(s.increment(3, actor="a", ts=at(1)))
        tick = s.increment(0, actor="a", ts=at(35))
        s = s.join(tick)
        assert s.value() == 0 and s.window_start_ms == 10
        assert dict(s.buckets()) == {}

    def test_total_since_and_buckets_use_bucket_start_times(self) -> None:
        s = WindowedCounter(bucket_ms=MIN, buckets=60)
        for minute, n in ((0, 1), (1, 2), (1, 3), (5, 4)):
            s = s.join(s.increment(n, actor="a", ts=at(minute * MIN + 123)))
        assert list(s.buckets().items()) == [(0, 1), (MIN, 5), (5 * MIN, 4)]
        assert s.total_since(MIN) == 9
        assert s.total_since(MIN + 1) == 4
        assert s.value() == 10

    def test_join_with_different_parameters_raises(self) -> None:
        with pytest.raises(IncompatibleState, match="bucket_ms"):
            wc(bucket_ms=10).join(wc(bucket_ms=20))
        with pytest.raises(IncompatibleState):
            wc(buckets=3).join(wc(buckets=4))
        with pytest.raises(IncompatibleState):
            wc().join(ws())  # type: ignore[arg-type]

    def test_params(self) -> None:
        assert WindowedCounter().params() == {"bucket_ms": 60_000, "buckets": 60}
        s = WindowedCounter(bucket_ms=7, buckets=2)
        assert WindowedCounter.decode(s.encode()).params() == {"bucket_ms": 7, "buckets": 2}

    def test_default_ts_is_now_on_the_process_clock(self) -> None:
        before = time.time_ns() // 1_000_000
        s = WindowedCounter(bucket_ms=1, buckets=10**9)
        s = s.join(s.increment(actor="a"))
        (start,) = s.buckets()
        assert start >= before

    @pytest.mark.parametrize(
        "kwargs,exc",
        [
            ({"n": -1, "actor": "a", "ts": 0}, ValueError),
            ({"n": 1.0, "actor": "a", "ts": 0}, TypeError),
            ({"n": True, "actor": "a", "ts": 0}, TypeError),
            ({"n": 1, "actor": "", "ts": 0}, TypeError),
            ({"n": 1, "actor": None, "ts": 0}, TypeError),
            ({"n": 1, "actor": "a", "ts": -1}, ValueError),
            ({"n": 1, "actor": "a", "ts": 1.5}, TypeError),
            ({"n": 2**63, "actor": "a", "ts": 0}, ValueError),
        ],
    )
    def test_increment_validates_its_arguments(self, kwargs: dict[str, Any], exc: type[Exception]) -> None:
        with pytest.raises(exc):
            wc().increment(kwargs["n"], actor=kwargs["actor"], ts=kwargs["ts"])

    @pytest.mark.parametrize("kwargs", [{"bucket_ms": 0}, {"buckets": 0}, {"bucket_ms": 1.5}, {"buckets": True}])
    def test_constructor_validates_parameters(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises((TypeError, ValueError)):
            WindowedCounter(**kwargs)

    def test_round_trip_and_decode_of_a_windowed_counter(self) -> None:
        s = wc()
        for actor, ms in (("b", 3), ("a", 14), ("a", 25)):
            s = s.join(s.increment(2, actor=actor, ts=at(ms)))
        back = decode_any(s.encode())
        assert back == s and back.encode() == s.encode() and back.value() == 6

    @pytest.mark.parametrize(
        "body",
        [
            [10, 3, None, [[0, [["a", 1]]]]],  # buckets in an empty window
            [10, 3, 5, [[2, [["a", 1]]]]],  # bucket expired relative to newest
            [10, 3, 5, [[6, [["a", 1]]]]],  # bucket newer than newest
            [10, 3, 5, [[5, []]]],  # empty bucket
            [10, 3, 5, [[5, [["a", 0]]]]],  # zero count
            [10, 3, 5, [[5, [["b", 1], ["a", 1]]]]],  # actors out of order
            [10, 3, 5, [[5, [["a", 1]]], [4, [["a", 1]]]]],  # buckets out of order
            [10, 3, 5, [[5, [["", 1]]]]],  # empty actor
            [0, 3, 5, []],  # bucket_ms 0
            [10, 3, 5],  # short
        ],
    )
    def test_decode_rejects_malformed_states(self, body: Any) -> None:
        with pytest.raises(CorruptRecord):
            WindowedCounter.decode(with_payload("wcounter", body))

    def test_join_is_associative_across_expiry(self) -> None:
        # a: bucket 0; b: bucket 2; c: bucket 3 (expires bucket 0 once all three meet)
        a = wc().increment(actor="a", ts=at(1))
        b = wc().increment(actor="b", ts=at(21))
        c = wc().increment(actor="c", ts=at(31))
        assert a.join(b).join(c) == a.join(b.join(c)) == c.join(a).join(b)
        assert a.join(b).join(c).value() == 2


# -- WindowedSum -------------------------------------------------------------------


class TestWindowedSum:
    def test_concurrent_additions_including_negative_amounts_all_count(self) -> None:
        a = b = ws()
        a = a.join(a.add(10, actor="a", ts=at(1)))
        a = a.join(a.add(-2.5, actor="a", ts=at(2)))
        b = b.join(b.add(-4, actor="b", ts=at(3)))
        s = a.join(b)
        assert s.value() == 3.5 and s.count() == 3
        assert isinstance(ws().join(ws().add(3, actor="a", ts=0)).value(), int)

    def test_float_sums_merge_deterministically_in_any_order(self) -> None:
        a = b = ws()
        for i in range(10):
            a = a.join(a.add(0.1, actor="a", ts=at(i)))
            b = b.join(b.add(0.7 * i, actor="b", ts=at(i)))
        ab, ba = a.join(b), b.join(a)
        assert ab.encode() == ba.encode()
        assert ab.value() == ba.value() == math.fsum([a.value(), b.value()])

    def test_more_updates_wins_over_a_stale_copy_of_the_same_actor(self) -> None:
        s = ws()
        d1 = s.add(1.5, actor="a", ts=at(1))
        s = s.join(d1)
        d2 = s.add(-1.5, actor="a", ts=at(2))
        s = s.join(d2)
        assert s.value() == 0 and s.count() == 2
        # a stale delta arriving after the newer one changes nothing
        assert ws().join(d2).join(d1) == ws().join(d1).join(d2)
        assert ws().join(d2).join(d1).value() == 0

    def test_windowed_sum_drops_expired_buckets_and_late_data(self) -> None:
        s = ws()
        s = s.join(s.add(5, actor="a", ts=at(1)))
        s = s.join(s.add(7, actor="a", ts=at(30)))
        assert s.value() == 7 and dict(s.buckets()) == {30: 7}
        assert s.add(100, actor="a", ts=at(5)) == ws()

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_rejects_non_finite_amounts(self, bad: float) -> None:
        with pytest.raises(ValueError, match="finite"):
            ws().add(bad, actor="a", ts=0)

    @pytest.mark.parametrize("bad", [True, "1", None, [1]])
    def test_rejects_non_numbers(self, bad: Any) -> None:
        with pytest.raises(TypeError):
            ws().add(bad, actor="a", ts=0)

    def test_running_sum_that_would_overflow_is_refused(self) -> None:
        s = ws()
        s = s.join(s.add(1e308, actor="a", ts=0))
        with pytest.raises(ValueError, match="overflow"):
            s.add(1e308, actor="a", ts=0)
        t = ws()
        t = t.join(t.add(2**63 - 1, actor="a", ts=0))
        with pytest.raises(ValueError, match="64 bits"):
            t.add(1, actor="a", ts=0)

    def test_negative_zero_is_normalized(self) -> None:
        s = ws().add(-0.0, actor="a", ts=0)
        assert s.encode() == ws().add(0.0, actor="a", ts=0).encode()

    @pytest.mark.parametrize(
        "body",
        [
            [10, 3, 0, [[0, [["a", 1, -0.0]]]]],
            [10, 3, 0, [[0, [["a", 1, math.nan]]]]],
            [10, 3, 0, [[0, [["a", 0, 1]]]]],
            [10, 3, 0, [[0, [["a", 1, "1"]]]]],
            [10, 3, 0, [[0, [["a", 1]]]]],
        ],
    )
    def test_decode_rejects_malformed_sums(self, body: Any) -> None:
        with pytest.raises(CorruptRecord):
            WindowedSum.decode(with_payload("wsum", body))


# -- Mean ----------------------------------------------------------------------------


class TestMean:
    def test_empty_mean_is_none(self) -> None:
        assert Mean().value() is None
        assert Mean().count() == 0

    def test_every_observation_counts_once_across_replicas(self) -> None:
        a = b = Mean()
        d1 = a.observe(1, actor="a")
        a = a.join(d1)
        d2 = a.observe(2.5, actor="a")
        a = a.join(d2)
        d3 = b.observe(-3, actor="b")
        b = b.join(d3)
        # deliver everything twice, in another order
        c = Mean().join(d3).join(d2).join(d1).join(d2).join(d3)
        assert a.join(b) == c
        assert c.value() == pytest.approx(0.5 / 3) and c.count() == 3 and c.total() == 0.5

    def test_int_observations_keep_an_exact_total(self) -> None:
        m = Mean()
        for actor, x in (("a", 2**62), ("b", 2**62), ("c", 1)):
            m = m.join(m.observe(x, actor=actor))
        assert m.total() == 2**63 + 1  # beyond float precision, still exact
        assert m.value() == (2**63 + 1) / 3

    @pytest.mark.parametrize("bad,exc", [(math.nan, ValueError), (math.inf, ValueError), (True, TypeError), ("2", TypeError)])
    def test_observe_validates(self, bad: Any, exc: type[Exception]) -> None:
        with pytest.raises(exc):
            Mean().observe(bad, actor="a")
        with pytest.raises(TypeError):
            Mean().observe(1, actor="")

    def test_decode_rejects_bad_entries(self) -> None:
        for body in ([["a", 0, 1]], [["b", 1, 1], ["a", 1, 1]], [["a", 1, math.inf]], [["a", 1]]):
            with pytest.raises(CorruptRecord):
                Mean.decode(with_payload("mean", body))


# -- HyperLogLog --------------------------------------------------------------------


class TestHyperLogLog:
    def test_estimate_of_100k_distinct_elements_is_within_three_standard_errors(self) -> None:
        h = HyperLogLog()
        h = h.join(h.add_many((f"user-{i}" for i in range(100_000)), actor="a"))
        err = abs(h.value() - 100_000) / 100_000
        assert err <= 3 * h.standard_error, (h.value(), err)
        assert h.standard_error == pytest.approx(1.04 / 64)

    def test_merging_two_halves_equals_adding_everything(self) -> None:
        items = [f"device-{i}" for i in range(20_000)]
        a = b = everything = HyperLogLog()
        a = a.join(a.add_many(items[::2], actor="edge"))
        b = b.join(b.add_many(items[1::2], actor="cloud"))
        for x in items:
            everything = everything.join(everything.add(x, actor="one"))
        assert a.join(b) == everything == b.join(a)
        assert a.join(b).encode() == everything.encode()
        assert a.join(b).value() == everything.value()

    def test_duplicates_do_not_count(self) -> None:
        h = HyperLogLog(p=10)
        for _ in range(3):
            h = h.join(h.add_many(range(500), actor="a"))
        assert abs(h.value() - 500) <= 3 * h.standard_error * 500

    def test_small_counts_are_near_exact(self) -> None:
        h = HyperLogLog()
        for i in range(10):
            h = h.join(h.add(i, actor="a"))
        assert h.value() == 10

    def test_add_returns_the_one_register_it_raises_or_an_empty_delta(self) -> None:
        h = HyperLogLog(p=4)
        d = h.add("x", actor="a")
        assert d != HyperLogLog(p=4) and sum(1 for r in d.registers() if r) == 1
        h = h.join(d)
        assert h.add("x", actor="a") == HyperLogLog(p=4)

    def test_element_identity_is_the_canonical_encoding(self) -> None:
        h = HyperLogLog()
        assert h.add({"a": 1, "b": 2}, actor="x") == h.add({"b": 2, "a": 1}, actor="x")
        assert h.add((1, 2), actor="x") == h.add([1, 2], actor="x")
        values = {h.add_many([x], actor="x").join(h).encode() for x in (1, 1.0, True)}
        assert len(values) == 3  # 1, 1.0 and True hash differently (stable, canonical bytes)
        with pytest.raises(TypeError, match="msgpack"):
            h.add(object(), actor="x")

    def test_matches_the_reference_registers_and_estimator_exactly(self) -> None:
        elements = [i * 7 for i in range(3_000)] + ["a", b"b", None, 2.5]
        h = HyperLogLog(p=8)
        h = h.join(h.add_many(elements, actor="a"))
        regs = hll_registers(elements, 8)
        assert list(h.registers()) == regs
        assert h.value() == hll_estimate(regs)

    @pytest.mark.parametrize("p", [4, 6])
    def test_estimator_matches_the_reference_at_every_small_cardinality(self, p: int) -> None:
        # crosses the sparse/dense switch and the linear-counting threshold (2.5 * 2**p)
        h = HyperLogLog(p)
        for n in range(1, 12 * 2**p):
            h = h.join(h.add(f"e{n}", actor="a"))
            if n % 3 == 0:
                assert h.value() == hll_estimate(hll_registers([f"e{i}" for i in range(1, n + 1)], p)), n

    def test_sparse_and_dense_forms_encode_the_same_registers_the_same_way(self) -> None:
        p = 8  # 256 registers, dense from 32 non-zero registers
        one_shot = HyperLogLog(p).add_many(range(200), actor="a")
        step = HyperLogLog(p)
        for i in range(200):
            step = step.join(step.add(i, actor="a"))
        assert one_shot.encode() == step.encode()
        sparse = HyperLogLog(p).add_many(range(5), actor="a")
        assert isinstance(HyperLogLog.decode(sparse.encode())._payload()[1], list)
        assert isinstance(one_shot._payload()[1], bytes) and len(one_shot._payload()[1]) == 256

    def test_join_with_another_precision_raises(self) -> None:
        with pytest.raises(IncompatibleState, match="'p'"):
            HyperLogLog(10).join(HyperLogLog(12))

    @pytest.mark.parametrize("p,exc", [(3, ValueError), (17, ValueError), (12.0, TypeError), (True, TypeError)])
    def test_precision_is_validated(self, p: Any, exc: type[Exception]) -> None:
        with pytest.raises(exc):
            HyperLogLog(p)

    def test_add_many_refuses_a_bare_string(self) -> None:
        with pytest.raises(TypeError, match="add\\(\\)"):
            HyperLogLog().add_many("abc", actor="a")

    def test_hash_is_frozen_blake2b_of_the_canonical_bytes(self) -> None:
        # blake2b-64(msgpack "crdtsync") = b5790352058cd7fc, never Python's salted hash():
        # the top p bits pick the register, the next bits' leading zeros give the rank
        d4 = HyperLogLog(p=4).add("crdtsync", actor="a")
        assert [(i, r) for i, r in enumerate(d4.registers()) if r] == [(0xB, 2)]
        d12 = HyperLogLog(p=12).add("crdtsync", actor="a")
        assert [(i, r) for i, r in enumerate(d12.registers()) if r] == [(0xB57, 1)]

    @pytest.mark.parametrize(
        "body",
        [
            [3, []],
            [4, [[16, 1]]],  # index out of range
            [4, [[0, 62]]],  # rank above 64 - p + 1
            [4, [[1, 1], [0, 1]]],  # unsorted
            [4, [[0, 1], [1, 1]]],  # 2 non-zero of 16: must be dense
            [4, bytes(16)],  # dense but empty: must be sparse
            [4, bytes(15)],  # wrong length
            [4, bytes([62] * 16)],  # rank out of range
        ],
    )
    def test_decode_rejects_malformed_and_non_canonical_sketches(self, body: Any) -> None:
        with pytest.raises(CorruptRecord):
            HyperLogLog.decode(with_payload("hll", body))
