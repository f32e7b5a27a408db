"""st.from_type draws every built-in type (hypothesis entry point), and strategies compose."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crdtsync
from crdtsync.testing import Op, operations, spec_for, states


@pytest.mark.parametrize("cls", crdtsync.BUILTIN_TYPES, ids=lambda c: c.__name__)
def test_from_type_draws_reachable_states(cls):
    seen = []

    @settings(max_examples=15, database=None)
    @given(st.from_type(cls))
    def draw(state):
        assert type(state) is cls
        state.value()
        assert type(state).decode(state.encode()) == state
        seen.append(state)

    draw()
    assert seen


def test_every_builtin_type_has_a_spec_and_operations():
    for cls in crdtsync.BUILTIN_TYPES:
        assert spec_for(cls).cls is cls
        assert operations(cls) is spec_for(cls).ops


@settings(max_examples=30, database=None)
@given(st.data())
def test_operations_apply_to_drawn_states(data):
    cls = data.draw(st.sampled_from(crdtsync.BUILTIN_TYPES))
    state = data.draw(states(cls))
    op = data.draw(operations(cls))
    assert isinstance(op, Op)
    try:
        delta = op.apply(state, actor="tester", ts=(1_800_000_000_000 << 16))
    except spec_for(cls).rejects:  # a legitimate refusal (a BoundedCounter without rights)
        return
    assert state.join(delta).join(delta) == state.join(delta)
