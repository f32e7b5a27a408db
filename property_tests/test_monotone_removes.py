"""Removes inside ORMap values stay removed, whatever the history (issue 8, defect 8).

Random histories of nested operations (adds and removes of elements, removes of inner
and outer keys) on 3-5 replicas of ``ORMap[ORSet]`` and ``ORMap[ORMap[ORSet]]``. The
replicas exchange their deltas (causally, in random order, some twice) and merge each
other's whole states in random order. After every step each replica is checked

* against the first-principles rule: an element shown at a place (key, or key and
  inner key) has an add there that no remove of that element there has in its causal
  past, i.e. an element removed by a remove that causally follows its add never comes
  back unless re-added (key removes are not element removes: an update concurrent with
  a key remove keeps what its writer saw, see docs/types/collections.md); the same for
  inner keys of ``ORMap[ORMap[ORSet]]``: an inner key shown has an update there that no
  remove of that inner key has in its causal past (also when the remove was made after
  a remove of the outer key);
* against the reference model (:mod:`crdtsync.testing.specs._nested`), which says what
  the value must be;

and at the end every replica, having merged every other, must equal every other and
the model of the whole history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from crdtsync.clock import make_hlc
from crdtsync.testing._spec import HistoryEvent, Op
from crdtsync.testing.specs.collections import ormap_of_ormap_of_orset_model, ormap_of_orset_model
from crdtsync.types.collections import ORMap, ORSet

KEYS = ["X", "Y"]
INNER = ["p", "q"]
ELEMENTS = [0, 1, 2]


@dataclass(frozen=True)
class Shape:
    """One nesting: how to build the map, draw operations and read values by place."""

    name: str
    make: Callable[[], ORMap]
    ops: st.SearchStrategy[Op]
    model: Callable[[Sequence[HistoryEvent]], Any]
    depth: int  # 1: key -> set; 2: key -> inner key -> set

    def places(self, value: dict[Any, Any]) -> list[tuple[tuple[Any, ...], Any]]:
        """(place, element) for every element shown."""
        if self.depth == 1:
            return [((k,), e) for k, s in value.items() for e in s]
        return [((k, p), e) for k, inner in value.items() for p, s in inner.items() for e in s]

    def key_places(self, value: dict[Any, Any]) -> list[tuple[tuple[Any, ...], Any]]:
        """(place, inner key) for every inner key shown (none for a map of sets)."""
        if self.depth == 1:
            return []
        return [((k,), p) for k, inner in value.items() for p in inner]


def _element_op(op: Op, depth: int) -> tuple[tuple[Any, ...], str, Any] | None:
    """(place, "add"/"remove", element) if ``op`` adds or removes an element."""
    args = op.args
    if op.name != "update":
        return None
    if depth == 1:
        return ((args[0],), args[1], args[2])
    if args[1] != "update":
        return None
    return ((args[0], args[2]), args[3], args[4])


def _inner_key_op(op: Op, depth: int) -> tuple[tuple[Any, ...], str, Any] | None:
    """(place, "add"/"remove", inner key) if ``op`` writes ("add") or removes an inner key."""
    args = op.args
    if depth == 1 or op.name != "update":
        return None
    return ((args[0],), "add" if args[1] == "update" else "remove", args[2])


_el = st.sampled_from(ELEMENTS)
_set_op = st.sampled_from(["add", "add", "remove"])
SHAPES = [
    Shape(
        "ORMap[ORSet]", lambda: ORMap(value_type=ORSet),
        st.one_of(
            st.builds(lambda k, n, e: Op("update", (k, n, e)), st.sampled_from(KEYS), _set_op, _el),
            st.builds(lambda k: Op("remove", (k,)), st.sampled_from(KEYS)),
        ),
        ormap_of_orset_model, 1,
    ),
    Shape(
        "ORMap[ORMap[ORSet]]", lambda: ORMap(value_type=lambda: ORMap(value_type=ORSet)),
        st.one_of(
            st.builds(lambda k, p, n, e: Op("update", (k, "update", p, n, e)),
                      st.sampled_from(KEYS), st.sampled_from(INNER), _set_op, _el),
            st.builds(lambda k, p: Op("update", (k, "remove", p)), st.sampled_from(KEYS), st.sampled_from(INNER)),
            st.builds(lambda k: Op("remove", (k,)), st.sampled_from(KEYS)),
        ),
        ormap_of_ormap_of_orset_model, 2,
    ),
]


@dataclass
class Fleet:
    shape: Shape
    n: int
    states: list[ORMap] = field(init=False)
    seen: list[frozenset[int]] = field(init=False)
    history: list[HistoryEvent] = field(default_factory=list)
    inflight: list[tuple[int, ORMap, int]] = field(default_factory=list)  # (dst, delta, event)

    def __post_init__(self) -> None:
        self.states = [self.shape.make() for _ in range(self.n)]
        self.seen = [frozenset() for _ in range(self.n)]

    def op(self, r: int, op: Op) -> None:
        s = self.states[r]
        delta = op.apply(s, actor=f"r{r}", ts=make_hlc(1_000 + len(self.history)))
        ev = HistoryEvent(len(self.history), f"r{r}", 0, op, self.seen[r])
        self.history.append(ev)
        self.states[r] = s.join(delta)
        self.seen[r] = self.seen[r] | {ev.id}
        self.inflight += [(d, delta, ev.id) for d in range(self.n) if d != r]

    def deliverable(self) -> list[int]:
        return [i for i, (d, _, e) in enumerate(self.inflight) if self.history[e].past <= self.seen[d]]

    def deliver(self, i: int, keep: bool) -> None:
        d, delta, e = self.inflight[i] if keep else self.inflight.pop(i)
        self.states[d] = self.states[d].join(delta)
        self.seen[d] = self.seen[d] | {e}

    def merge(self, dst: int, src: int) -> None:
        self.states[dst] = self.states[dst].join(self.states[src])
        self.seen[dst] = self.seen[dst] | self.seen[src]

    def check(self, r: int) -> None:
        events = [e for e in self.history if e.id in self.seen[r]]
        value = self.states[r].value()
        want = self.shape.model(events)
        assert value == want, f"r{r} shows {value!r}, the reference model says {want!r}"
        for what, read, shown in (("element", _element_op, self.shape.places(value)),
                                  ("inner key", _inner_key_op, self.shape.key_places(value))):
            by_place: dict[tuple[tuple[Any, ...], Any], tuple[list[HistoryEvent], list[HistoryEvent]]] = {}
            for ev in events:
                eop = read(ev.op, self.shape.depth)
                if eop is not None:
                    place, name, element = eop
                    adds, removes = by_place.setdefault((place, element), ([], []))
                    (adds if name == "add" else removes).append(ev)
            for place, element in shown:
                adds, removes = by_place.get((place, element), ([], []))
                assert any(not any(a.id in rm.past for rm in removes) for a in adds), (
                    f"r{r} shows {what} {element!r} at {place}, but every write of it there was removed "
                    "by a later remove"
                )


@given(st.data())
def test_nested_removes_are_monotone_under_any_merge_order(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from(SHAPES), label="shape")
    n = data.draw(st.integers(3, 5), label="replicas")
    fleet = Fleet(shape, n)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        kind = data.draw(st.sampled_from(["op", "op", "op", "deliver", "deliver", "dup", "merge"]), label="step")
        if kind == "op":
            r = data.draw(st.integers(0, n - 1), label="replica")
            op = data.draw(shape.ops, label="op")
            note(f"r{r}: {op!r}")
            fleet.op(r, op)
            touched = [r]
        elif kind in ("deliver", "dup"):
            ready = fleet.deliverable()
            if not ready:
                continue
            i = data.draw(st.sampled_from(ready), label="message")
            dst, _, ev = fleet.inflight[i]
            note(f"{kind} event {ev} to r{dst}")
            fleet.deliver(i, keep=kind == "dup")
            touched = [dst]
        else:
            dst, src = data.draw(st.permutations(range(n)), label="pair")[:2]
            note(f"r{dst} merges r{src}")
            fleet.merge(dst, src)
            touched = [dst]
        for r in touched:
            fleet.check(r)
    order = data.draw(st.permutations(range(n)), label="final order")
    for dst in order:
        for src in order:
            fleet.merge(dst, src)
    for dst in order:
        for src in order:
            fleet.merge(dst, src)
    first = fleet.states[0]
    for r in range(n):
        assert fleet.states[r] == first, f"r{r} did not converge with r0"
        fleet.check(r)
    assert first.value() == shape.model(fleet.history)
