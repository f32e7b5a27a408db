"""Specs and reference models for the feature aggregates.

The windowed specs use tiny windows (5 ms buckets, 3 retained, up to 5 ms between
operations) so that expiry happens within a few operations; the HyperLogLog spec uses
``p = 4`` (16 registers) so that elements collide in registers and both the sparse and
the dense representation occur. Amounts are small ints or multiples of 0.25, whose sums
are exact in floating point, so the models can compare values with ``==``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from ..._encoding import value_key
from ...clock import hlc_wall_ms
from ...types.aggregates import HyperLogLog, Mean, WindowedCounter, WindowedSum
from .._spec import HistoryEvent, Op, TypeSpec, register_spec

#: window parameters of the windowed specs
BUCKET_MS = 5
BUCKETS = 3
#: HyperLogLog precision of the spec
HLL_P = 4

_amount = st.integers(min_value=-20, max_value=20) | st.integers(min_value=-80, max_value=80).map(lambda k: k / 4)


def windowed_model(
    bucket_ms: int, buckets: int, amount: Callable[[HistoryEvent], Any] = lambda e: e.op.args[0]
) -> Callable[[Sequence[HistoryEvent]], Any]:
    """Model of a windowed aggregate: the sum of the amounts of the events whose bucket is
    among the ``buckets`` newest, the newest being the largest bucket of any event.

    Late data needs no special case. An increment whose bucket had already expired at the
    issuing replica was dropped there (its delta is empty), so it must not count. It does
    not: the issuer's window was set by an event in the increment's causal past, every
    history the model is given is causally closed, so that event is in the history too
    and the window computed here is at least as new. The same argument shows the
    dropped event cannot move the window: its bucket is below the issuer's newest.
    """

    def model(events: Sequence[HistoryEvent]) -> Any:
        if not events:
            return 0
        bucket = {e.id: hlc_wall_ms(e.ts) // bucket_ms for e in events}
        newest = max(bucket.values())
        return sum(amount(e) for e in events if bucket[e.id] > newest - buckets)

    return model


def mean_model(events: Sequence[HistoryEvent]) -> float | None:
    """Every observation counts once."""
    xs = [e.op.args[0] for e in events]
    return sum(xs) / len(xs) if xs else None


def _added(events: Sequence[HistoryEvent]) -> list[Any]:
    out: list[Any] = []
    for e in events:
        if e.op.name == "add":
            out.append(e.op.args[0])
        else:
            out.extend(e.op.args[0])
    return out


def hll_registers(elements: Sequence[Any], p: int) -> list[int]:
    """HyperLogLog registers recomputed from scratch, bit string by bit string.

    The hash is 64-bit blake2b of the element's canonical msgpack bytes; the first ``p``
    bits pick the register, whose rank is the position of the first 1 among the rest.
    """
    regs = [0] * (2**p)
    for x in elements:
        index, rank = _bit_place(value_key(x), p)
        regs[index] = max(regs[index], rank)
    return regs


@functools.lru_cache(maxsize=4096)
def _bit_place(key: bytes, p: int) -> tuple[int, int]:
    # keyed by the canonical bytes, not the element: 1, 1.0 and True are different elements
    digest = hashlib.blake2b(key, digest_size=8).digest()
    bits = "".join(format(byte, "08b") for byte in digest)
    index, rest = int(bits[:p], 2), bits[p:]
    rank = rest.find("1") + 1 if "1" in rest else len(rest) + 1
    return index, rank


def hll_estimate(regs: Sequence[int]) -> int:
    """The HyperLogLog estimator (Flajolet et al. 2007) with linear counting below 2.5 m."""
    m = len(regs)
    alpha = {16: 0.673, 32: 0.697, 64: 0.709}.get(m, 0.7213 / (1 + 1.079 / m))
    harmonic = math.fsum(2.0 ** -r for r in regs)  # exact terms, correctly rounded sum
    estimate = alpha * m * m / harmonic
    zeros = regs.count(0)
    if estimate <= 2.5 * m and zeros:
        estimate = m * math.log(m / zeros)
    return round(estimate)


def hll_model(p: int) -> Callable[[Sequence[HistoryEvent]], int]:
    def model(events: Sequence[HistoryEvent]) -> int:
        return hll_estimate(hll_registers(_added(events), p))

    return model


WCOUNTER = register_spec(TypeSpec(
    WindowedCounter,
    ops=st.builds(Op, st.just("increment"), st.tuples(st.integers(1, 5) | st.just(0))),
    model=windowed_model(BUCKET_MS, BUCKETS),
    make=lambda: WindowedCounter(bucket_ms=BUCKET_MS, buckets=BUCKETS),
    max_ms_step=5,
))

WSUM = register_spec(TypeSpec(
    WindowedSum,
    ops=st.builds(Op, st.just("add"), st.tuples(_amount)),
    model=windowed_model(BUCKET_MS, BUCKETS),
    make=lambda: WindowedSum(bucket_ms=BUCKET_MS, buckets=BUCKETS),
    max_ms_step=5,
))

MEAN = register_spec(TypeSpec(
    Mean,
    ops=st.builds(Op, st.just("observe"), st.tuples(_amount)),
    model=mean_model,
))

# Enough distinct elements, added in batches, that estimates cross the linear-counting
# threshold (2.5 * 16 = 40) and the register ranks matter, with repeats and collisions.
_element = st.integers(0, 300) | st.text(alphabet="abc", max_size=2) | st.sampled_from([None, True, 1.0, b"x"])

HLL = register_spec(TypeSpec(
    HyperLogLog,
    ops=st.one_of(
        st.builds(Op, st.just("add"), st.tuples(_element)),
        st.builds(Op, st.just("add_many"), st.tuples(st.lists(_element, max_size=30).map(tuple))),
    ),
    model=hll_model(HLL_P),
    make=lambda: HyperLogLog(p=HLL_P),
))
