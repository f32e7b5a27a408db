"""Specs and reference models for the collections (ORSet, ORMap).

The models work on the causal history only (which events each event had seen) and know
nothing of dots, contexts or nested identities:

* ORSet: an element is present iff some add of it is in the history and no remove of it
  has that add in its causal past.
* ORMap of counters: on a key ``k``, an update ``u`` by actor ``a`` is *superseded* in a set of events
  ``S`` when some event of ``S`` on ``k`` has ``u`` in its past and is either a remove
  of ``k`` or a later update of ``k`` by ``a``. The *live* updates of ``k`` in ``S``
  are those not superseded. An update carries the nested operations
  ``E(u) = {u} + union of E(v) for v live in past(u)``: its own operation applied to
  everything it could see of the key. A key is present iff it has live updates, and its
  value is the nested model applied to the union of ``E(u)`` over its live updates,
  where the nested model sees ``E(x) - {x}`` as the causal past of operation ``x``.
* ORMap of values that record removals (sets, nested maps): the same live updates and
  carried views, and in addition removes are monotone: what any superseded update's
  view had seen removed stays removed (see :mod:`._nested`, which replays the history
  on views made of event ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from ...types.collections import ORMap, ORSet
from .._spec import HistoryEvent, Op, TypeSpec, register_spec
from ._nested import MapKind, SetKind, nested_model

__all__ = [
    "ORMAP",
    "ORMAP_OF_ORMAP_OF_ORSET",
    "ORSET",
    "ormap_model",
    "ormap_of_ormap_of_orset_model",
    "ormap_of_orset_model",
    "orset_model",
]

#: small pools so that operations collide on the same elements and keys
_ELEMENTS = st.sampled_from(["a", "b", "c", 7, None, b"\x00", 2.5, ("t", 1)])
_KEYS = st.sampled_from(["x", ("k", 1)])
_AMOUNT = st.integers(min_value=0, max_value=100)


@dataclass(frozen=True)
class _Ev:
    """An operation at one nesting level: its id, writer and (nested) operation."""

    id: int
    actor: str
    op: Op


Past = Callable[[int], frozenset[int]]
Nested = Callable[[Sequence[_Ev], Past], Any]
Kills = dict[int, frozenset[int]]


def _set_value(events: Sequence[_Ev], past: Past) -> frozenset[Any]:
    """Add-wins set: present iff an add is not in the past of a remove of the element."""
    adds = [e for e in events if e.op.name == "add"]
    removes = [e for e in events if e.op.name == "remove"]
    return frozenset(
        a.op.args[0]
        for a in adds
        if not any(r.op.args[0] == a.op.args[0] and a.id in past(r.id) for r in removes)
    )


def _counter_value(events: Sequence[_Ev], past: Past) -> int:
    return sum(e.op.args[0] if e.op.name == "increment" else -e.op.args[0] for e in events)


def _map_value(events: Sequence[_Ev], past: Past, nested: Nested) -> dict[Any, Any]:
    """The observed-remove map over ``events`` (see the module docstring)."""
    by_key: dict[Any, list[_Ev]] = {}
    for e in sorted(events, key=lambda e: e.id):
        by_key.setdefault(e.op.args[0], []).append(e)
    out: dict[Any, Any] = {}
    for key, evs in by_key.items():
        on_key = {e.id: e for e in evs}
        # what each event on the key supersedes: every earlier update of the key it had
        # seen if it is a remove, its own writer's earlier updates if it is an update
        kills = {
            e.id: frozenset(
                i for i in past(e.id) if i in on_key and (e.op.name == "remove" or on_key[i].actor == e.actor)
            )
            for e in evs
        }

        def live(ids: Iterable[int], on_key: dict[int, _Ev] = on_key, kills: Kills = kills) -> list[_Ev]:
            s = [i for i in ids if i in on_key]
            dead: set[int] = set()
            for i in s:
                dead |= kills[i]
            return [on_key[i] for i in s if on_key[i].op.name == "update" and i not in dead]

        carried: dict[int, frozenset[int]] = {}
        for u in evs:  # in id order, a linear extension of causality
            if u.op.name == "update":
                below: set[int] = {u.id}
                for v in live(past(u.id)):
                    below |= carried[v.id]
                carried[u.id] = frozenset(below)
        alive = live(on_key)
        if not alive:
            continue
        ops: set[int] = set()
        for u in alive:
            ops |= carried[u.id]
        inner = [
            _Ev(i, on_key[i].actor, Op(on_key[i].op.args[1], tuple(on_key[i].op.args[2:])))
            for i in sorted(ops)
        ]
        out[key] = nested(inner, _past_within(carried))
    return out


def _past_within(carried: dict[int, frozenset[int]]) -> Past:
    """Inside a key, an operation has seen exactly the operations its update carried."""

    def past(i: int) -> frozenset[int]:
        return carried[i] - {i}

    return past


def _top(events: Sequence[HistoryEvent]) -> tuple[list[_Ev], Past]:
    pasts = {e.id: e.past for e in events}
    return [_Ev(e.id, e.actor, e.op) for e in events], pasts.__getitem__


def orset_model(events: Sequence[HistoryEvent]) -> frozenset[Any]:
    evs, past = _top(events)
    return _set_value(evs, past)


def ormap_model(events: Sequence[HistoryEvent]) -> dict[Any, int]:
    """ORMap of PNCounter."""
    evs, past = _top(events)
    return _map_value(evs, past, _counter_value)


_MAP_OF_MAP_OF_SET = nested_model(MapKind(MapKind(SetKind())))
_MAP_OF_SET = nested_model(MapKind(SetKind()))


def ormap_of_ormap_of_orset_model(events: Sequence[HistoryEvent]) -> dict[Any, dict[Any, frozenset[Any]]]:
    """Maps of maps of sets: values that record removals follow :mod:`._nested`."""
    return _MAP_OF_MAP_OF_SET(events)


def ormap_of_orset_model(events: Sequence[HistoryEvent]) -> dict[Any, frozenset[Any]]:
    """Maps of sets (see :mod:`._nested`)."""
    return _MAP_OF_SET(events)


ORSET = register_spec(TypeSpec(
    ORSet,
    ops=st.builds(Op, st.sampled_from(["add", "add", "remove"]), st.tuples(_ELEMENTS)),
    model=orset_model,
))

_counter_update = st.builds(
    lambda k, name, n: Op("update", (k, name, n)),
    _KEYS, st.sampled_from(["increment", "decrement"]), _AMOUNT,
)
_remove_key = st.builds(lambda k: Op("remove", (k,)), _KEYS)

ORMAP = register_spec(TypeSpec(
    ORMap,
    ops=st.one_of(_counter_update, _counter_update, _remove_key),
    model=ormap_model,
))

_INNER_KEYS = st.sampled_from(["p", "q"])
_set_update = st.builds(
    lambda k, ik, name, e: Op("update", (k, "update", ik, name, e)),
    _KEYS, _INNER_KEYS, st.sampled_from(["add", "add", "remove"]), st.sampled_from(["a", "b"]),
)
_inner_remove = st.builds(lambda k, ik: Op("update", (k, "remove", ik)), _KEYS, _INNER_KEYS)


def _map_of_map_of_set() -> ORMap:
    return ORMap(value_type=lambda: ORMap(value_type=ORSet))


#: A second ORMap spec (not the default of ``spec_for(ORMap)``): maps nested two deep
#: over sets, so that removes and resets interact at every level.
ORMAP_OF_ORMAP_OF_ORSET: TypeSpec[ORMap] = TypeSpec(
    ORMap,
    ops=st.one_of(_set_update, _set_update, _inner_remove, _remove_key),
    model=ormap_of_ormap_of_orset_model,
    make=_map_of_map_of_set,
    name="ORMap[ORMap[ORSet]]",
)
