"""Spec and reference model for the bounded counter.

Operations are drawn without looking at the state, so many decrements and transfers
ask for more rights than their replica holds; the type refuses them with
``InsufficientRights``, which the spec lists in ``rejects``: the simulator records
nothing for a refused operation, so the history holds only operations that happened.

The model recomputes everything from that history. Besides the value, it re-derives
each spending operation's rights from the events in its causal past (exactly what the
issuing replica had seen) and fails if the type let a replica spend rights it did not
hold. The opposite mistake (refusing a spend that was covered) is invisible here,
because refusals leave no event; ``property_tests/test_bounded_invariant.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import strategies as st

from ...errors import InsufficientRights
from ...types.bounded import BoundedCounter
from .._spec import HistoryEvent, Op, TypeSpec, register_spec

# increments larger than spends, so that spends are often covered and often not;
# targets are the simulator's replicas (r0..r4, the issuer itself included) plus one
# replica that never writes
_created = st.integers(min_value=0, max_value=8)
_spent = st.integers(min_value=0, max_value=3)
_target = st.sampled_from(["r0", "r1", "r2", "r3", "r4", "edge-9"])

BCOUNTER_OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(Op, st.just("increment"), st.tuples(_created)),
    st.builds(Op, st.just("decrement"), st.tuples(_spent)),
    st.builds(Op, st.just("transfer"), st.tuples(_spent, _target)),
)


def _held(actor: str, events: Sequence[HistoryEvent]) -> int:
    """Rights of ``actor`` after ``events``: created + received - sent - spent."""
    held = 0
    for e in events:
        name, args = e.op.name, e.op.args
        if name == "increment" and e.actor == actor:
            held += args[0]
        elif name == "decrement" and e.actor == actor:
            held -= args[0]
        elif name == "transfer":
            n, to = args
            if e.actor == actor:
                held -= n
            if to == actor:
                held += n
    return held


def bcounter_model(lower: int = 0) -> Callable[[Sequence[HistoryEvent]], int]:
    """Value = ``lower`` + applied increments - applied decrements; spends must be covered."""

    def model(events: Sequence[HistoryEvent]) -> int:
        by_id = {e.id: e for e in events}
        for e in events:
            if e.op.name in ("decrement", "transfer"):
                past = [by_id[i] for i in sorted(e.past)]
                held = _held(e.actor, past)
                assert e.op.args[0] <= held, (
                    f"event {e.id}: {e.actor} did {e.op!r} holding only {held} rights "
                    "(the type should have refused it)"
                )
        total = lower
        for e in events:
            if e.op.name == "increment":
                total += e.op.args[0]
            elif e.op.name == "decrement":
                total -= e.op.args[0]
        return total

    return model


BCOUNTER = register_spec(TypeSpec(
    BoundedCounter,
    ops=BCOUNTER_OPS,
    model=bcounter_model(0),
    rejects=(InsufficientRights,),
))
