"""Golden vectors of the feature aggregates (fixed timestamps, public mutators only)."""

from __future__ import annotations

from crdtsync.clock import make_hlc
from crdtsync.types.aggregates import HyperLogLog, Mean, WindowedCounter, WindowedSum

MIN = 60_000
T0 = 1_700_000_000_000  # a fixed wall time (ms)


def _wcounter() -> WindowedCounter:
    s = WindowedCounter()
    s = s.join(s.increment(3, actor="edge-1", ts=make_hlc(T0)))
    s = s.join(s.increment(2, actor="cloud", ts=make_hlc(T0 + 5)))
    return s.join(s.increment(1, actor="edge-1", ts=make_hlc(T0 + 2 * MIN, 7)))


def _wcounter_expired() -> WindowedCounter:
    s = WindowedCounter(bucket_ms=1_000, buckets=3)
    for i, actor in enumerate(["a", "b", "a", "c", "b"]):
        s = s.join(s.increment(i + 1, actor=actor, ts=make_hlc(T0 + i * 1_000)))
    return s  # buckets 0 and 1 dropped


def _wsum() -> WindowedSum:
    s = WindowedSum(bucket_ms=MIN, buckets=10)
    s = s.join(s.add(19.99, actor="edge-1", ts=make_hlc(T0)))
    s = s.join(s.add(-5, actor="cloud", ts=make_hlc(T0 + 10)))
    s = s.join(s.add(0.25, actor="edge-1", ts=make_hlc(T0 + 20)))
    return s.join(s.add(7, actor="cloud", ts=make_hlc(T0 + MIN)))


def _mean() -> Mean:
    s = Mean()
    s = s.join(s.observe(2, actor="edge-1"))
    s = s.join(s.observe(3.5, actor="cloud"))
    return s.join(s.observe(-1, actor="edge-1"))


def _hll_sparse() -> HyperLogLog:
    s = HyperLogLog()
    return s.join(s.add_many(["user-1", "user-2", "user-3", 42, None, [1, "a"]], actor="edge-1"))


def _hll_dense() -> HyperLogLog:
    a = HyperLogLog(p=4)
    a = a.join(a.add_many([f"user-{i}" for i in range(40)], actor="edge-1"))
    b = HyperLogLog(p=4)
    b = b.join(b.add_many([f"user-{i}" for i in range(30, 100)], actor="cloud"))
    return a.join(b)


def _hll_dense_p6() -> HyperLogLog:
    s = HyperLogLog(p=6)
    for i in range(500):
        s = s.join(s.add({"id": i}, actor="edge-1"))
    return s


CASES = [
    ("wcounter/empty", WindowedCounter),
    ("wcounter/two-actors", _wcounter),
    ("wcounter/expired", _wcounter_expired),
    ("wsum/empty", WindowedSum),
    ("wsum/int-and-float", _wsum),
    ("mean/empty", Mean),
    ("mean/two-actors", _mean),
    ("hll/empty", HyperLogLog),
    ("hll/sparse", _hll_sparse),
    ("hll/dense-p4", _hll_dense),
    ("hll/dense-p6", _hll_dense_p6),
]
