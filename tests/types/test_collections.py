"""Example tests of ORSet and ORMap: the behaviour applications rely on."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest

from crdtsync._encoding import packb, unpackb
from crdtsync.clock import Dot
from crdtsync.errors import CorruptRecord, IncompatibleState
from crdtsync.types._base import CRDT, decode_any
from crdtsync.types.collections import ORMap, ORSet
from crdtsync.types.counters import GCounter, PNCounter


def apply(state: Any, delta: Any) -> Any:
    return state.join(delta)


# -- ORSet ---------------------------------------------------------------------------


def test_add_wins_over_a_concurrent_remove():
    base = ORSet()
    base = base.join(base.add("gpu", actor="a"))
    a, b = base, base
    b = b.join(b.remove("gpu", actor="b"))  # b removes the add it saw...
    a = a.join(a.add("gpu", actor="a"))  # ...while a adds it again
    assert "gpu" not in b
    assert a.join(b).value() == b.join(a).value() == frozenset({"gpu"})


def test_remove_takes_away_what_it_observed():
    s = ORSet()
    s = s.join(s.add("x", actor="a"))
    s = s.join(s.add("y", actor="a"))
    s2 = s.join(s.remove("x", actor="b"))
    assert s2.value() == frozenset({"y"})
    s3 = s2.join(s2.add("x", actor="b"))
    assert s3.value() == frozenset({"x", "y"})


def test_remove_of_an_absent_element_is_an_empty_delta():
    s = ORSet()
    assert s.remove("nope", actor="a") == ORSet()


def test_remove_with_another_replicas_observation_removes_unreceived_adds():
    a, b, c = ORSet(), ORSet(), ORSet()
    a = a.join(a.add("model-v2", actor="a"))
    b = b.join(b.add("model-v2", actor="b"))  # concurrent with c's read
    # c read a's state, then removes what it saw at a -- c itself holds nothing yet
    delta = c.remove("model-v2", actor="c", observed=a.dots_of("model-v2"))
    c = c.join(delta)
    assert c.context.vv == {"a": 1}
    merged = a.join(b).join(c)
    assert merged.dots_of("model-v2") == b.dots_of("model-v2")  # b's add survives
    # once b's add is gone too, the element is gone everywhere, in any join order
    d = merged.remove("model-v2", actor="c", observed=b.dots_of("model-v2"))
    assert "model-v2" not in merged.join(d)
    assert "model-v2" not in a.join(d).join(b).join(c)


def test_observed_must_be_dots():
    s = ORSet()
    with pytest.raises(TypeError, match="iterable of Dots"):
        s.remove("x", actor="a", observed="a1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Dots"):
        s.remove("x", actor="a", observed=[("a", 0)])
    assert s.remove("x", actor="a", observed=[("a", 3)]).context.cloud == {Dot("a", 3)}


def test_readd_replaces_the_adders_older_dot():
    s = ORSet()
    for _ in range(5):
        s = s.join(s.add("x", actor="a"))
    assert s.dots_of("x") == {Dot("a", 5)}
    s = s.join(s.add("x", actor="b"))
    assert s.dots_of("x") == {Dot("b", 1)}


def test_element_kinds_round_trip():
    elems = ["s", b"\x00", 7, -(2**63), 2**64 - 1, 2.5, True, None, ("t", (1, b"x"), None), ()]
    s = ORSet()
    for e in elems:
        s = s.join(s.add(e, actor="a"))
    back = ORSet.decode(s.encode())
    assert back == s
    assert back.value() == s.value()
    assert ("t", (1, b"x"), None) in back.value()
    assert isinstance(next(e for e in back if isinstance(e, tuple) and e), tuple)


def test_one_float_and_true_are_distinct_elements():
    s = ORSet()
    for e in (1, 1.0, True):
        s = s.join(s.add(e, actor="a"))
    assert len(s) == 3
    s = s.join(s.remove(True, actor="a"))
    assert len(s) == 2 and 1 in s and 1.0 in s


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, {1}, bytearray(b"x"), object()])
def test_unsupported_elements_are_rejected_with_a_type_error(bad):
    s = ORSet()
    with pytest.raises(TypeError, match="tuple of those"):
        s.add(bad, actor="a")
    with pytest.raises(TypeError):
        s.remove(bad, actor="a")
    assert bad not in s


def test_lists_are_pointed_at_tuples():
    with pytest.raises(TypeError, match="use a tuple"):
        ORSet().add(["a"], actor="a")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1, ("ok", math.nan)])
def test_out_of_range_elements_are_rejected_with_a_value_error(bad):
    with pytest.raises(ValueError):
        ORSet().add(bad, actor="a")


def test_actor_is_checked():
    with pytest.raises(TypeError, match="actor"):
        ORSet().add("x", actor="")


def test_float_subclasses_are_stored_as_plain_floats():
    class F(float):
        pass

    s = ORSet()
    s = s.join(s.add(F(1.5), actor="a"))
    (e,) = s.value()
    assert type(e) is float


def test_encoding_does_not_depend_on_insertion_order():
    a, b = ORSet(), ORSet()
    for e in ["z", 3, b"b", ("t",)]:
        a = a.join(a.add(e, actor="r"))
    b1 = ORSet()
    for e in [("t",), b"b", 3, "z"]:
        b1 = b1.join(b1.add(e, actor="r"))
    # same elements, different dots: compare the element order inside the payload
    assert [row[0] for row in a._payload()[0]] == [row[0] for row in b1._payload()[0]]
    assert a.join(b).encode() == b.join(a).encode()


def test_thousand_add_remove_cycles_leave_a_compact_context_and_no_entries():
    replicas = [ORSet(), ORSet(), ORSet()]
    names = ["edge-1", "edge-2", "cloud"]
    for i in range(1000):
        adder, remover = i % 3, (i + 1) % 3
        delta = replicas[adder].add("hot", actor=names[adder])
        replicas = [r.join(delta) for r in replicas]  # delta delivered everywhere
        delta = replicas[remover].remove("hot", actor=names[remover])
        replicas = [r.join(delta) for r in replicas]
    full = replicas[0].join(replicas[1]).join(replicas[2])
    for s in [*replicas, full]:
        assert len(s) == 0 and s.value() == frozenset()
        assert s.context.is_compact()
        assert dict(s.context.vv) == {"edge-1": 334, "edge-2": 333, "cloud": 333}
        assert s._payload()[0] == []
    assert len(full.encode()) < 64


def test_out_of_order_deltas_leave_a_cloud_that_closes_when_the_gap_fills():
    a = ORSet()
    d1 = a.add("x", actor="a")
    a = a.join(d1)
    d2 = a.add("y", actor="a")
    b = ORSet().join(d2)
    assert not b.context.is_compact()
    b = b.join(d1)
    assert b.context.is_compact() and b.value() == frozenset({"x", "y"})


def _orset_blob(rows: Any, ctx: Any) -> bytes:
    return packb(["orset", 1, [rows, ctx]])


@pytest.mark.parametrize(
    "rows,ctx",
    [
        ([["x", [["a", 2]]]], [["a", 1, []]]),  # live dot outside the context
        ([["y", [["a", 1]]], ["x", [["a", 2]]]], [["a", 2, []]]),  # unsorted elements
        ([["x", [["a", 1]]], ["y", [["a", 1]]]], [["a", 1, []]]),  # one dot, two elements
        ([["x", []]], [["a", 1, []]]),  # element without dots
        ([["x", [["a", 1]]], ["x", [["a", 2]]]], [["a", 2, []]]),  # duplicate element
        ([[{"k": 1}, [["a", 1]]]], [["a", 1, []]]),  # a map cannot be an element
        ([[float("nan"), [["a", 1]]]], [["a", 1, []]]),
    ],
)
def test_malformed_orset_payloads_are_corrupt_records(rows, ctx):
    with pytest.raises(CorruptRecord):
        ORSet.decode(_orset_blob(rows, ctx))


# -- ORMap ---------------------------------------------------------------------------


def test_concurrent_updates_of_one_key_all_count():
    a, b = ORMap(), ORMap()
    a = a.join(a.update("user:1", "increment", 3, actor="edge-1"))
    b = b.join(b.update("user:1", "increment", 4, actor="edge-2"))
    b = b.join(b.update("user:1", "decrement", 1, actor="edge-2"))
    assert a.join(b).value() == b.join(a).value() == {"user:1": 6}


def test_an_update_concurrent_with_a_remove_survives():
    base = ORMap()
    base = base.join(base.update("k", "increment", 5, actor="a"))
    a = base.join(base.remove("k", actor="a"))
    b = base.join(base.update("k", "increment", 1, actor="b"))
    assert a.value() == {}
    # b's update carries everything b saw of the key: the 5 it had observed, plus its 1
    assert a.join(b).value() == b.join(a).value() == {"k": 6}


def test_an_update_after_a_remove_starts_from_empty():
    m = ORMap()
    m = m.join(m.update("k", "increment", 5, actor="a"))
    m = m.join(m.remove("k", actor="b"))
    assert "k" not in m and m.get("k") == PNCounter()
    m = m.join(m.update("k", "increment", 2, actor="a"))
    assert m.value() == {"k": 2}


def test_minimized_reset_keeps_a_later_increment():
    """Minimized from a hand-made history: an increment after a remove is never lost.

    a increments by 5; b sees it and adds 1; a (not having seen b) removes the key and
    adds 2. b's update survives the remove with the 5 it had seen; a's 2 must count too.
    If a kept writing under its old nested counter, its fresh total (2) would lose the
    pointwise max against the 5 surviving in b's state.
    """
    a = ORMap()
    a = a.join(a.update("k", "increment", 5, actor="a"))
    b = a.join(a.update("k", "increment", 1, actor="b"))
    a = a.join(a.remove("k", actor="a"))
    a = a.join(a.update("k", "increment", 2, actor="a"))
    assert a.join(b).value() == {"k": 8}


def test_minimized_reset_of_a_nested_set_keeps_later_adds():
    """Minimized from the same history over maps of sets: a fresh nested identity after
    a reset keeps a's new element from reusing a dot that b's surviving state holds."""

    def make() -> ORMap:
        return ORMap(value_type=lambda: ORMap(value_type=ORSet))

    a = make()
    a = a.join(a.update("x", "update", "p", "add", "a", actor="A"))
    b = a.join(a.update("x", "update", "p", "add", "b", actor="B"))
    a = a.join(a.remove("x", actor="A"))
    a = a.join(a.update("x", "update", "q", "add", "b", actor="A"))
    want = {"x": {"p": frozenset({"a", "b"}), "q": frozenset({"b"})}}
    assert a.join(b).value() == b.join(a).value() == want


def test_metadata_per_key_is_one_state_per_writer_and_removes_reclaim_it():
    m = ORMap()
    for i in range(50):
        m = m.join(m.update("k", "increment", 1, actor=["a", "b", "c"][i % 3]))
    assert {d.replica for d in m.dots_of("k")} == {"a", "b", "c"} and len(m.dots_of("k")) == 3
    assert m.value() == {"k": 50}
    m = m.join(m.remove("k", actor="a"))
    assert len(m) == 0 and m._payload()[1] == [] and m.context.is_compact()


def test_update_and_remove_cycles_leave_no_entries():
    replicas = [ORMap(), ORMap(), ORMap()]
    for i in range(300):
        w = replicas[i % 3]
        delta = w.update(("user", 7), "increment", 1, actor=f"r{i % 3}")
        replicas = [r.join(delta) for r in replicas]
        delta = replicas[(i + 1) % 3].remove(("user", 7), actor=f"r{(i + 1) % 3}")
        replicas = [r.join(delta) for r in replicas]
    for r in replicas:
        assert r.value() == {} and r.context.is_compact()
        assert len(r.encode()) < 80


def test_get_keys_len_and_contains():
    m = ORMap(value_type=GCounter)
    m = m.join(m.update(("user", 1), "increment", 2, actor="a"))
    m = m.join(m.update("b", "increment", 0, actor="a"))
    assert len(m) == 2 and ("user", 1) in m and ["user", 1] not in m
    assert m.keys() == frozenset({("user", 1), "b"})
    assert m.get(("user", 1)).value() == 2 and m.get("missing") == GCounter()
    assert m.value() == {"b": 0, ("user", 1): 2}
    assert m.value_type is GCounter


def test_nested_maps():
    m = ORMap(value_type=lambda: ORMap(value_type=GCounter))
    m = m.join(m.update("user:1", "update", "clicks", "increment", 3, actor="a"))
    m = m.join(m.update("user:1", "update", "views", "increment", 9, actor="a"))
    m = m.join(m.update("user:1", "remove", "views", actor="a"))
    assert m.value() == {"user:1": {"clicks": 3}}
    back = decode_any(m.encode())
    assert back == m and back.value() == m.value()
    assert back.get("user:1").value_type is GCounter


def test_different_value_types_do_not_join():
    with pytest.raises(IncompatibleState, match="value_type"):
        ORMap(value_type=PNCounter).join(ORMap(value_type=GCounter))
    nested_g = ORMap(value_type=lambda: ORMap(value_type=GCounter))
    nested_p = ORMap(value_type=lambda: ORMap(value_type=PNCounter))
    with pytest.raises(IncompatibleState):
        nested_g.join(nested_p)
    assert ORMap(value_type=PNCounter) != ORMap(value_type=GCounter)


def test_decode_rebuilds_the_value_type():
    m = ORMap.decode(ORMap(value_type=GCounter).encode())
    assert m.value_type is GCounter
    m = m.join(m.update("k", "increment", 1, actor="a"))
    assert m.value() == {"k": 1}


def test_update_argument_errors():
    m = ORMap()
    with pytest.raises(ValueError, match="increment, decrement"):
        m.update("k", "add", 1, actor="a")
    with pytest.raises(TypeError, match="tuple"):
        m.update(["k"], "increment", 1, actor="a")
    with pytest.raises(TypeError, match="ts"):
        m.update("k", "increment", 1, actor="a", ts=-1)
    with pytest.raises(ValueError, match=">= 0"):
        m.update("k", "increment", -1, actor="a")
    with pytest.raises(TypeError, match="actor"):
        m.update("k", "increment", 1, actor="")


def test_value_type_must_build_a_crdt():
    with pytest.raises(TypeError, match="CRDT"):
        ORMap(value_type=dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="factory"):
        ORMap(value_type=PNCounter())  # type: ignore[arg-type]


class _Stamp(CRDT[int]):
    """Largest timestamp written (a tiny time-needing type, not registered)."""

    __slots__ = ("ts",)
    TYPE_TAG: ClassVar[str] = "test-stamp"
    MUTATORS: ClassVar[tuple[str, ...]] = ("touch",)
    NEEDS_TIME: ClassVar[bool] = True

    def __init__(self, ts: int = 0) -> None:
        self.ts = ts

    def touch(self, *, actor: str, ts: int) -> _Stamp:
        return _Stamp(ts)

    def join(self, other: _Stamp) -> _Stamp:
        return self if self.ts >= other.ts else other

    def value(self) -> int:
        return self.ts

    def _payload(self) -> Any:
        return self.ts

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> _Stamp:
        return cls(payload)


def test_ts_reaches_nested_types_that_need_time():
    m = ORMap(value_type=_Stamp)
    m = m.join(m.update("k", "touch", actor="a", ts=123))
    assert m.value() == {"k": 123}
    m = m.join(m.update("k", "touch", actor="a"))  # stamped by the process-wide HLC
    assert m.value()["k"] > 123
    # and is not passed to types that do not take it
    c = ORMap()
    assert c.join(c.update("k", "increment", 1, actor="a", ts=5)).value() == {"k": 1}


def _ormap_env(data: bytes) -> list[Any]:
    env = unpackb(data)
    assert env[0] == "ormap"
    return env  # type: ignore[no-any-return]


def test_malformed_ormap_payloads_are_corrupt_records():
    m = ORMap()
    m = m.join(m.update("k", "increment", 1, actor="a"))
    good = _ormap_env(m.encode())
    vt, rows, ctx = good[2][:3]  # the cases below are version-1 payloads (no removal records)
    cases = [
        [vt, rows, []],  # live dot outside the context
        [vt, [["k", [["a", 1, 2, rows[0][1][0][3]]]]], ctx],  # identity named after a later write
        [["gcounter", 1, []], rows, ctx],  # nested payload is not a GCounter's
        [["nope", 1, []], rows, ctx],  # unknown nested type
        [vt, [["k", []]], ctx],  # key without dots
        [vt, rows + rows, ctx],  # duplicate key
    ]
    for payload in cases:
        with pytest.raises(CorruptRecord):
            ORMap.decode(packb(["ormap", 1, payload]))


def test_hostile_nesting_depth_is_a_corrupt_record():
    inner: list[Any] = ["pncounter", 1, [[], []]]
    for _ in range(400):
        inner = ["ormap", 1, [inner, [], []]]
    with pytest.raises(CorruptRecord, match="nest deeper"):
        decode_any(packb(inner))


def test_repr_names_the_value_type():
    m = ORMap(value_type=GCounter)
    m = m.join(m.update("k", "increment", 1, actor="a"))
    assert repr(m) == "ORMap[GCounter]({'k': 1})"
    s = ORSet()
    assert repr(s.join(s.add("x", actor="a"))) == "ORSet({'x'})"
