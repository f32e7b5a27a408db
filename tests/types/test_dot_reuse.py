"""Two writes under one dot are refused, not silently merged (issue 8, defect 9).

Calling two mutators of one actor on the same stale state gives both deltas the same
dot: ``d1 = s.enable(actor="a"); d2 = s.disable(actor="a")``. Joining them used to keep
one write and drop the other without a word. Every type with dots that can tell the two
writes apart now raises :class:`~crdtsync.errors.DotReuse` on the join, in any order
and on both join paths (full, and a small delta into a large state), while a
re-delivered identical delta stays a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crdtsync._encoding import packb, unpackb
from crdtsync.errors import CorruptRecord, DotReuse, IncompatibleState
from crdtsync.types.collections import ORMap, ORSet
from crdtsync.types.flags import DisableWinsFlag, EnableWinsFlag
from crdtsync.types.registers import MVRegister

Mut = Callable[[Any], Any]


def _misuse(base: Any, first: Mut, second: Mut) -> None:
    d1, d2 = first(base), second(base)  # both from the same state: one dot, two writes
    for x, y in [(d1, d2), (d2, d1), (base.join(d1), d2), (base.join(d2), d1)]:
        with pytest.raises(DotReuse, match="apply each delta to the state before making the next one") as info:
            x.join(y)
        assert info.value.dot is not None
    # a re-delivered delta is not misuse
    once = base.join(d1)
    assert once.join(d1) == once and d1.join(once) == once
    # and the right way (each delta applied before the next) keeps both writes
    right = once.join(second(once))
    assert right.join(d1) == right


def test_a_flag_enabled_and_disabled_from_one_state() -> None:
    _misuse(EnableWinsFlag(), lambda s: s.enable(actor="a"), lambda s: s.disable(actor="a"))
    _misuse(DisableWinsFlag(), lambda s: s.disable(actor="a"), lambda s: s.enable(actor="a"))


def test_a_register_set_twice_from_one_state() -> None:
    _misuse(MVRegister(), lambda s: s.set(1, actor="a"), lambda s: s.set(2, actor="a"))


def test_a_set_given_two_elements_from_one_state() -> None:
    _misuse(ORSet(), lambda s: s.add("x", actor="a"), lambda s: s.add("y", actor="a"))


def test_a_large_set_given_two_elements_from_one_state() -> None:
    big = ORSet()
    for i in range(80):  # large enough for the small-delta join path
        big = big.join(big.add(i, actor="b"))
    _misuse(big, lambda s: s.add("x", actor="a"), lambda s: s.add("y", actor="a"))


def test_a_map_counter_incremented_twice_from_one_state() -> None:
    m = ORMap()
    _misuse(m, lambda s: s.update("k", "increment", 1, actor="a"), lambda s: s.update("k", "increment", 2, actor="a"))


def test_a_map_written_at_two_keys_from_one_state() -> None:
    m = ORMap()
    _misuse(m, lambda s: s.update("k1", "increment", 1, actor="a"), lambda s: s.update("k2", "increment", 1, actor="a"))


def test_a_large_map_written_at_two_keys_from_one_state() -> None:
    big = ORMap()
    for i in range(40):  # large enough for the small-delta join path
        big = big.join(big.update(i, "increment", 1, actor="b"))
    _misuse(big, lambda s: s.update("k1", "increment", 1, actor="a"), lambda s: s.update("k2", "increment", 1, actor="a"))


def test_a_map_of_sets_given_two_elements_from_one_state() -> None:
    m = ORMap(value_type=ORSet)
    _misuse(m, lambda s: s.update("k", "add", "x", actor="a"), lambda s: s.update("k", "add", "y", actor="a"))


def test_dot_reuse_is_an_incompatible_state_the_replica_already_refuses() -> None:
    assert issubclass(DotReuse, IncompatibleState)


def test_a_decoded_map_whose_nested_states_reuse_a_dot_is_a_corrupt_record() -> None:
    m = ORMap(value_type=ORSet)
    m = m.join(m.update("k", "add", "x", actor="a"))
    m = m.join(m.update("k", "add", "y", actor="b"))
    env = unpackb(m.encode())
    rows = env[2][1][0][1]  # the two entries of key "k": [replica, seq, inc, nested set]
    a_set = rows[0][3]
    b_set = rows[1][3]
    # forge b's nested set so that a's nested dot names element 0 there instead of "x"
    a_dots = a_set[0][0][1]
    b_set[0] = [[0, a_dots], *[e for e in b_set[0] if e[0] != "x"]]
    with pytest.raises(CorruptRecord, match="disagree"):
        ORMap.decode(packb(env))


def test_a_forged_nested_dot_under_another_writers_entry_is_refused_at_the_join() -> None:
    """Two entries of one key (different outer dots) whose nested sets use one nested
    dot for two elements: the join that brings them together raises, not a later read."""
    m = ORMap(value_type=ORSet)
    a = m.join(m.update("k", "add", "x", actor="a"))
    forged = m.join(m.update("k", "add", "y", actor="b"))
    # b's nested write, renamed to a's nested dot: same nested dot, another element
    nested = forged.get("k")
    (b_dot,) = nested.dots_of("y")
    (a_dot,) = a.get("k").dots_of("x")
    assert b_dot != a_dot
    env = unpackb(forged.encode())
    cell = env[2][1][0][1][0]
    cell[3] = [[["y", [[a_dot.replica, a_dot.seq]]]], [[a_dot.replica, a_dot.seq, []]]]
    bad = ORMap.decode(packb(env))
    with pytest.raises(DotReuse):
        a.join(bad)
    with pytest.raises(DotReuse):
        bad.join(a)
