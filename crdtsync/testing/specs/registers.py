"""Specs and reference models for the registers and VectorRegister.

The models restate each conflict rule over the whole history, the naive way:

* LWW: the value of the set event with the largest ``(ts, actor)``.
* MV: the distinct values of the set events that are in no other event's causal past.
* Max / Min: the largest / smallest value ever set, under the documented total order
  (numeric, then an int beats an equal float, then +0.0 beats -0.0 for max and -0.0
  beats +0.0 for min).
* Vector: the array of the set event with the largest ``(ts, actor)``, in the
  register's dtype.

Values are compared by their canonical bytes, so ``1``, ``1.0`` and ``True`` differ and
NaN equals itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from ..._encoding import value_key
from ...types.registers import LWWRegister, MaxRegister, MinRegister, MVRegister
from .._spec import HistoryEvent, Op, TypeSpec, register_spec

# A small pool, so that equal values (and equal-looking ones: 1, 1.0, True) occur often.
_POOL: list[Any] = [
    None, False, True, 0, 1, 1.0, -0.0, 0.0, float("nan"), 2**64 - 1, -(2**63),
    "", "a", "b", b"a", [], [1, "a"], (1, "a"), {}, {"k": [1, None]}, {"b": 1, "a": {"c": b"x"}},
]
_values = st.sampled_from(_POOL) | st.text(max_size=3) | st.integers(-3, 3)


def _set_ops(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Op]:
    return st.builds(Op, st.just("set"), st.tuples(values))


def same_json(got: Any, want: Any) -> bool:
    return value_key(got) == value_key(want)


def _last_writer(events: Sequence[HistoryEvent]) -> HistoryEvent | None:
    best: HistoryEvent | None = None
    for e in events:
        if best is None or (e.ts, e.actor) > (best.ts, best.actor):
            best = e
    return best


def lww_model(events: Sequence[HistoryEvent]) -> Any:
    """The value of the set with the largest (ts, actor); None before any set."""
    e = _last_writer(events)
    return None if e is None else e.op.args[0]


def mv_model(events: Sequence[HistoryEvent]) -> tuple[Any, ...]:
    """Distinct values of the sets that no other set has seen, ordered by canonical bytes."""
    overwritten: set[int] = set()
    for e in events:
        overwritten |= e.past
    frontier = {value_key(e.op.args[0]): e.op.args[0] for e in events if e.id not in overwritten}
    return tuple(frontier[k] for k in sorted(frontier))


def same_values(got: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    return len(got) == len(want) and all(same_json(a, b) for a, b in zip(got, want))


def max_model(events: Sequence[HistoryEvent]) -> Any:
    if not events:
        return None
    return max((e.op.args[0] for e in events),
               key=lambda v: (v, isinstance(v, int), math.copysign(1.0, v)))


def min_model(events: Sequence[HistoryEvent]) -> Any:
    if not events:
        return None
    return min((e.op.args[0] for e in events),
               key=lambda v: (v, not isinstance(v, int), math.copysign(1.0, v)))


# Mostly a small pool of numerically equal values (0, 0.0, -0.0, 1, 1.0...), so that the
# tie rules decide the winner often; sometimes extremes and arbitrary floats.
_ties = st.sampled_from([-1, -1.0, 0, 0.0, -0.0, 1, 1.0])
_numbers = (
    _ties
    | _ties
    | st.sampled_from([2**53, float(2**53), 2**53 + 1, 2.5, -2.5, 1e300, -1e300, 2**64 - 1,
                       -(2**63), 5e-324, -5e-324])
    | st.floats(allow_nan=False, allow_infinity=False)
)

LWW = register_spec(TypeSpec(LWWRegister, ops=_set_ops(_values), model=lww_model,
                             same_value=same_json, max_ms_step=2))

MV = register_spec(TypeSpec(MVRegister, ops=_set_ops(_values), model=mv_model, same_value=same_values))

MAX = register_spec(TypeSpec(MaxRegister, ops=_set_ops(_numbers), model=max_model, same_value=same_json))

MIN = register_spec(TypeSpec(MinRegister, ops=_set_ops(_numbers), model=min_model, same_value=same_json))


try:  # VectorRegister's spec needs numpy (the testing extra brings it)
    import numpy as np
except ImportError:  # pragma: no cover - exercised only without numpy
    pass
else:
    from ...types.vectors import VectorRegister

    _f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
    _VECTORS: list[tuple[float, ...]] = [
        (0.0, 0.0, 0.0, 0.0), (-0.0, 0.0, 0.0, 0.0), (1.0, 2.0, 3.0, 4.0),
        (float("nan"), 0.0, 1.0, 2.0), (0.5, -0.5, float("inf"), 1e-40),
    ]
    # mostly the pool (equal arrays, NaN, -0.0 recur); sometimes two arbitrary floats
    _vectors = st.sampled_from(_VECTORS) | st.builds(lambda x, y: (x, 0.0, y, 1.0), _f32, _f32)

    def vector_model(events: Sequence[HistoryEvent]) -> Any:
        """The array of the set with the largest (ts, actor), as float32; None before any set."""
        e = _last_writer(events)
        return None if e is None else np.asarray(e.op.args[0], dtype=np.float32)

    def same_array(got: Any, want: Any) -> bool:
        if got is None or want is None:
            return got is None and want is None
        if got.dtype != want.dtype or got.shape != want.shape:
            return False
        return got.tobytes() == want.tobytes() or bool(np.array_equal(got, want, equal_nan=True))

    VECTOR = register_spec(TypeSpec(
        VectorRegister,
        ops=_set_ops(_vectors),
        model=vector_model,
        make=lambda: VectorRegister(dim=(4,)),
        same_value=same_array,
        max_ms_step=2,
    ))
