"""Specs and reference models for the counters."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from ...types.counters import GCounter, PNCounter
from .._spec import HistoryEvent, Op, TypeSpec, register_spec

_amount = st.integers(min_value=0, max_value=1_000)


def gcounter_model(events: Sequence[HistoryEvent]) -> int:
    """Every increment counts once."""
    return sum(e.op.args[0] for e in events)


def pncounter_model(events: Sequence[HistoryEvent]) -> int:
    return sum(e.op.args[0] if e.op.name == "increment" else -e.op.args[0] for e in events)


GCOUNTER = register_spec(TypeSpec(
    GCounter,
    ops=st.builds(Op, st.just("increment"), st.tuples(_amount)),
    model=gcounter_model,
))

PNCOUNTER = register_spec(TypeSpec(
    PNCounter,
    ops=st.builds(Op, st.sampled_from(["increment", "decrement"]), st.tuples(_amount)),
    model=pncounter_model,
))
