"""Removes inside an ORMap's values are monotone (issue 8, defect 8).

Once a replica has observed a remove of something inside a key's value, no later
remove may bring it back. Each test is the same history at a different nesting: a key
holds something, replica ``b`` copies the state, ``a`` removes the thing inside the
key while ``b`` concurrently updates the key (so ``b``'s update carries its stale
copy), and then ``a`` also removes the whole key. Before the fix, the key remove took
away the only entry that knew about the inner remove, and ``b``'s stale copy brought
the removed thing back.
"""

from __future__ import annotations

from typing import Any

import pytest

from crdtsync._encoding import packb, unpackb
from crdtsync.errors import CorruptRecord
from crdtsync.types.collections import ORMap, ORSet, _key_of
from crdtsync.types.counters import PNCounter
from crdtsync.types.flags import EnableWinsFlag, VariantFlag


def _race(base: ORMap, inner_remove: tuple[Any, ...], concurrent: tuple[Any, ...]) -> tuple[ORMap, ORMap, ORMap]:
    """``a`` runs ``inner_remove`` then removes key X; ``b`` runs ``concurrent`` from ``base``."""
    a, b = base, base
    a = a.join(a.update("X", *inner_remove, actor="a"))
    b = b.join(b.update("X", *concurrent, actor="b"))
    before = a.join(b)
    a = a.join(a.remove("X", actor="a"))
    return before, a.join(b), b.join(a)


def test_removing_a_key_does_not_bring_back_an_element_removed_earlier() -> None:
    """The issue's scenario: a removes 0 of X, b concurrently adds 1, a removes X."""
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="a"))
    before, ab, ba = _race(base, ("remove", 0), ("add", 1))
    assert before.value() == {"X": frozenset({1})}
    assert ab.value() == ba.value() == {"X": frozenset({1})}
    assert ab == ba


def test_two_levels_deep_an_inner_element_stays_removed() -> None:
    base = ORMap(value_type=lambda: ORMap(value_type=ORSet))
    base = base.join(base.update("X", "update", "p", "add", 0, actor="a"))
    before, ab, ba = _race(base, ("update", "p", "remove", 0), ("update", "p", "add", 1))
    assert before.value() == {"X": {"p": frozenset({1})}}
    assert ab.value() == ba.value() == {"X": {"p": frozenset({1})}}


def test_an_inner_key_removed_before_the_outer_key_stays_removed() -> None:
    base = ORMap(value_type=lambda: ORMap(value_type=ORSet))
    base = base.join(base.update("X", "update", "p", "add", 0, actor="a"))
    before, ab, ba = _race(base, ("remove", "p"), ("update", "q", "add", 1))
    assert before.value() == {"X": {"q": frozenset({1})}}
    assert ab.value() == ba.value() == {"X": {"q": frozenset({1})}}


def test_an_inner_counter_removed_before_the_outer_key_stays_removed() -> None:
    base = ORMap(value_type=lambda: ORMap(value_type=PNCounter))
    base = base.join(base.update("X", "update", "p", "increment", 5, actor="a"))
    before, ab, ba = _race(base, ("remove", "p"), ("update", "q", "increment", 1))
    assert before.value() == {"X": {"q": 1}}
    assert ab.value() == ba.value() == {"X": {"q": 1}}


def test_an_inner_flag_write_superseded_before_the_outer_remove_stays_superseded() -> None:
    base = ORMap(value_type=lambda: ORMap(value_type=EnableWinsFlag))
    base = base.join(base.update("X", "update", "p", "enable", actor="a"))
    before, ab, ba = _race(base, ("update", "p", "disable"), ("update", "q", "enable"))
    assert before.value() == {"X": {"p": False, "q": True}}
    # a's disable superseded its enable; the key remove must not revive the enable
    assert ab.value() == ba.value() == {"X": {"q": True}}


def test_removal_records_survive_encoding_and_stay_out_of_counter_maps() -> None:
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="a"))
    _, ab, _ = _race(base, ("remove", 0), ("add", 1))
    back = ORMap.decode(ab.encode())
    assert back == ab and back.value() == ab.value()
    # a map of counters records nothing: its removes leave no entry at all
    m = ORMap()
    m = m.join(m.update("k", "increment", 1, actor="a"))
    m = m.join(m.remove("k", actor="a"))
    assert m._payload()[1:] == [[], [["a", 1, []]], []]


def test_a_revive_of_a_variant_flag_stays_after_the_key_is_removed() -> None:
    """Maps of variant flags: a's revive superseded its kill; b's concurrent configure
    carries the old kill; a removing the key must not make the kill win again."""
    base = ORMap(value_type=VariantFlag)
    base = base.join(base.update("X", "kill", actor="a", ts=1 << 16))
    before, ab, ba = _race(base, ("revive",), ("configure", [("on", 1)], (), "on", "checkout"))
    assert before.get("X").killed is False
    assert ab.get("X").killed is False and ba.get("X").killed is False
    assert ab == ba


# -- removes made after a key remove ---------------------------------------------------
# The key's removal record names the element (or inner key) of each dot it still calls
# live, so an element remove made after the key remove takes the adds its writer saw
# there before the key remove (found by property_tests/test_monotone_removes.py).


def _send(states: dict[str, ORMap], src: str, op: tuple[Any, ...]) -> ORMap:
    """Run ``op`` (a mutator name and its arguments) at ``src``; return its delta."""
    delta = getattr(states[src], op[0])(*op[1:], actor=src, ts=1)
    states[src] = states[src].join(delta)
    return delta


def test_an_element_remove_after_a_key_remove_outlives_a_stale_concurrent_copy() -> None:
    """The property test's counterexample: r1 saw r0 add 0 at X/p, removed X, then
    removed 0 at X/p. r2's concurrent update of X/q carries a stale copy of that add;
    delivered to r1 it must not bring 0 back at X/p."""
    states = {r: ORMap(value_type=lambda: ORMap(value_type=ORSet)) for r in ("r0", "r1", "r2")}
    e0 = _send(states, "r0", ("update", "X", "update", "p", "add", 0))
    states["r1"] = states["r1"].join(e0)
    states["r2"] = states["r2"].join(e0)
    _send(states, "r0", ("update", "X", "update", "p", "add", 0))
    _send(states, "r0", ("update", "X", "update", "p", "add", 0))
    e3 = _send(states, "r2", ("update", "X", "remove", "q"))
    _send(states, "r1", ("remove", "X"))
    _send(states, "r1", ("update", "X", "update", "p", "remove", 0))
    assert states["r1"].value().get("X", {}).get("p", frozenset()) == frozenset()
    r1 = states["r1"].join(e3)
    assert r1.value().get("X", {}).get("p", frozenset()) == frozenset()
    # the whole of r2, either join order, and after a round trip through the encoding
    assert states["r1"].join(states["r2"]) == states["r2"].join(states["r1"])
    assert states["r1"].join(states["r2"]).value().get("X", {}).get("p", frozenset()) == frozenset()
    back = ORMap.decode(r1.encode())
    assert back == r1
    assert back.join(states["r2"]).value().get("X", {}).get("p", frozenset()) == frozenset()


def test_one_level_deep_an_element_removed_after_its_key_stays_removed() -> None:
    """The same race one level up: a removes X, then removes 0 from X, while b's
    concurrent add of 1 at X carries its copy of c's 0 and d's 2: 0 stays removed."""
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="c"))
    base = base.join(base.update("X", "add", 2, actor="d"))
    a, b = base, base
    b = b.join(b.update("X", "add", 1, actor="b"))
    a = a.join(a.remove("X", actor="a"))
    a = a.join(a.update("X", "remove", 0, actor="a"))
    assert a.join(b).value() == b.join(a).value() == {"X": frozenset({1, 2})}
    assert a.join(b) == b.join(a)


def test_an_inner_key_removed_after_the_outer_key_stays_removed() -> None:
    """The same race for a map of maps: a removes X, then removes p inside X, while b's
    concurrent update of X/q carries its copy of X/p: p stays removed, q is b's."""
    base = ORMap(value_type=lambda: ORMap(value_type=PNCounter))
    base = base.join(base.update("X", "update", "p", "increment", 5, actor="c"))
    a, b = base, base
    b = b.join(b.update("X", "update", "q", "increment", 1, actor="b"))
    a = a.join(a.remove("X", actor="a"))
    a = a.join(a.update("X", "remove", "p", actor="a"))
    assert a.join(b).value() == b.join(a).value() == {"X": {"q": 1}}
    assert a.join(b) == b.join(a)


def test_a_remove_without_a_stale_copy_is_unchanged_and_an_add_is_untouched() -> None:
    """What the record recalls is used by removes only: an add after the key remove
    starts from the empty set, and a concurrent copy still keeps the other elements."""
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="c"))
    a, b = base, base
    b = b.join(b.update("X", "add", 1, actor="b"))
    a = a.join(a.remove("X", actor="a"))
    a = a.join(a.update("X", "add", 0, actor="a"))
    assert a.value() == {"X": frozenset({0})}
    assert a.join(b).value() == {"X": frozenset({0, 1})}  # b's copy keeps c's 0 alive too
    assert a.join(b).get("X").dots_of(0) == {("c#0", 1), ("a#0", 1)}


def test_removes_after_racing_key_removes_leave_no_context_gap() -> None:
    """An adversarial schedule: a's update of X stays live while w re-adds 0 and r keeps
    removing only w's update, and a removes 0 after each round. a's nested context never
    holds w's earlier dots, so recording what a's removes take there would open a gap
    (one cloud entry a round); it is recorded in the key's record instead, whose context
    already holds it, and nothing grows with the rounds."""
    m = ORMap(value_type=ORSet)
    m = m.join(m.update("X", "add", 5, actor="a"))
    m = m.join(m.update("X", "add", 9, actor="w"))
    w_dots = {d for d in m.dots_of("X") if d.replica == "w"}
    m = m.join(m.remove("X", actor="r", observed=w_dots))
    sizes = []
    for _ in range(100):
        m = m.join(m.update("X", "add", 0, actor="w"))
        m = m.join(m.remove("X", actor="r", observed={d for d in m.dots_of("X") if d.replica == "w"}))
        m = m.join(m.update("X", "remove", 0, actor="a"))
        assert m.value() == {"X": frozenset({5})}
        (state,) = [e.state for d, e in m._entries[_key_of("X")].items() if d.replica == "a"]
        assert state.context.cloud_size() == 0
        record = m._resets[_key_of("X")]
        assert record.ctx.cloud_size() == 0 and len(record.live) <= 2
        sizes.append(len(m.encode()))
    assert max(sizes) - min(sizes) <= 8  # only the growing seq numbers' widths


def test_an_update_delta_carries_what_its_remove_took_from_the_record() -> None:
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="c"))
    a = base.join(base.remove("X", actor="a"))
    delta = a.update("X", "remove", 0, actor="a")
    record = delta._resets[_key_of("X")]
    assert record.removed(("c#0", 1)) and not record.live
    assert a.update("X", "add", 1, actor="a")._resets == {}  # adds take nothing


def test_records_name_each_live_dot_once_and_forget_what_a_later_remove_took() -> None:
    """A record's groups are its live dots by element, each listed once in the encoding;
    once the element remove's own entry is superseded, the record drops the add."""
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="c"))
    base = base.join(base.update("X", "add", 2, actor="d"))
    a = base.join(base.remove("X", actor="a"))
    record = a._resets[_key_of("X")]
    assert record.live == {("c#0", 1), ("d#0", 1)}
    assert record.by == {_key_of(0): {("c#0", 1)}, _key_of(2): {("d#0", 1)}}
    payload = record.to_payload(lambda k: k)
    assert payload[1] == [] and len(payload[3]) == 2  # no loose dots: all grouped once
    a = a.join(a.update("X", "remove", 0, actor="a"))
    a = a.join(a.remove("X", actor="a"))
    record = a._resets[_key_of("X")]
    assert record.live == {("d#0", 1)} and record.by == {_key_of(2): {("d#0", 1)}}


def test_a_format_2_record_decodes_to_the_same_value() -> None:
    """Records written by format 2 have no groups: they decode (every live dot loose) to
    the same value, and a remove made from them takes only what the state holds."""
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="c"))
    a, b = base, base
    b = b.join(b.update("X", "add", 1, actor="b"))
    a = a.join(a.remove("X", actor="a"))
    raw = unpackb(a.join(b).encode(), what="test")
    raw[1] = 2
    for _, rec in raw[2][3]:
        del rec[3]  # a format-2 record: [context, live dots, children]
        rec[1] = [["c#0", 1]]
    old = ORMap.decode(packb(raw))
    assert old.value() == a.join(b).value() == {"X": frozenset({0, 1})}
    assert old._resets[_key_of("X")].by == {}
    assert ORMap.decode(old.encode()) == old


@pytest.mark.parametrize("groups", [
    [[0, [["c#0", 1]]], [0, [["d#0", 1]]]],  # one element twice
    [[2, [["d#0", 1]]], [0, [["c#0", 1]]]],  # out of order
    [[0, [["c#0", 1]]], [2, [["c#0", 1]]]],  # one dot in two groups
    [[0, []]],  # an empty group
    [[0, [["z#0", 9]]]],  # a dot outside the record's context
])
def test_malformed_record_groups_are_refused(groups: list[Any]) -> None:
    base = ORMap(value_type=ORSet)
    base = base.join(base.update("X", "add", 0, actor="c"))
    base = base.join(base.update("X", "add", 2, actor="d"))
    a = base.join(base.remove("X", actor="a"))
    raw = unpackb(a.encode(), what="test")
    raw[2][3][0][1][3] = groups
    with pytest.raises(CorruptRecord):
        ORMap.decode(packb(raw))
