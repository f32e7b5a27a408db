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

from crdtsync.types.collections import ORMap, ORSet
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
