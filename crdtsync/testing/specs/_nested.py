"""Reference model of ORMaps whose values record removals (sets, nested maps).

The model replays a history on *views*: what the writer of each event had seen, as
plain sets of event ids, with no dots, contexts, version vectors or nested identities.
One event id names the event's write at every nesting level. The rules it encodes:

* A set view is the ids of the adds it has *seen* and those still *live*; an add kills
  the live adds of its element, a remove kills them; two views join causally (an id
  stays live if live on both sides, or live on one and unseen by the other).
* A map view holds, per live update, its key and the nested view its writer had after
  the update (the writer's whole view of the key: survivors of a concurrent remove carry
  what they saw). An update supersedes its writer's own earlier live updates of the
  key, a remove of a key every update of it the view holds.
* **Removes are monotone**: per key, a map remembers everything the nested views of its
  superseded updates had seen removed, and a key's value is the join of its live
  updates' views *without* anything so remembered. So once a view has seen a remove of
  something, no later remove (of a key holding it) can bring it back.
* A writer's nested write counts its own earlier writes at that place as seen (it never
  forgets its own history): its own earlier adds that it no longer holds stay removed.
* **A remove inside a key's value takes everything of it its writer has seen**: a remove
  of an element (or of an inner key) made from a view that the key's memory was claimed
  into also kills the adds (updates) of that element (inner key) the memory still calls
  live, i.e. those a remove of the enclosing key took out of the view. Key removes are
  not element removes (an update concurrent with one keeps what its writer saw), but an
  element remove that causally follows an add is one, whatever happened to the key.

The model of the whole history is the join of every event's *delta*, each computed from
the join of the deltas of the events in its causal past.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._spec import HistoryEvent, Op

__all__ = ["MapKind", "SetKind", "nested_model"]

Path = tuple[Any, ...]


def _live(la: frozenset[int], sa: frozenset[int], lb: frozenset[int], sb: frozenset[int]) -> frozenset[int]:
    return (la & lb) | (la - sb) | (lb - sa)


@dataclass(frozen=True)
class Facts:
    """What a view has seen removed: ``seen - live``, plus the same per nested key."""

    seen: frozenset[int]
    live: frozenset[int]
    children: Mapping[Any, Facts] = field(default_factory=dict)

    def removed(self, i: int) -> bool:
        return i in self.seen and i not in self.live

    def join(self, o: Facts) -> Facts:
        return Facts(self.seen | o.seen, _live(self.live, self.seen, o.live, o.seen),
                     _join_facts(self.children, o.children))


def _join_facts(a: Mapping[Any, Facts], b: Mapping[Any, Facts]) -> dict[Any, Facts]:
    out = dict(a)
    for k, f in b.items():
        out[k] = f if k not in out else out[k].join(f)
    return out


@dataclass(frozen=True)
class World:
    """What every view may look up: the events by id."""

    events: Mapping[int, HistoryEvent]

    def at(self, i: int, path: Path) -> Op:
        """Event ``i``'s operation at ``path`` (``i`` is a nested write there)."""
        op = self.events[i].op
        for _ in path:
            op = Op(op.args[1], tuple(op.args[2:]))
        return op

    def own_writes(self, path: Path, actor: str, before: int, creates: Callable[[Op], bool]) -> list[int]:
        """Ids of ``actor``'s writes at ``path`` (nested ops only) issued before ``before``."""
        out = []
        for i, e in self.events.items():
            if i >= before or e.actor != actor:
                continue
            op = e.op
            ok = True
            for k in path:
                if op.name != "update" or op.args[0] != k:
                    ok = False
                    break
                op = Op(op.args[1], tuple(op.args[2:]))
            if ok and creates(op):
                out.append(i)
        return out


class SetKind:
    """Views of an add-wins set."""

    def empty(self) -> SetView:
        return SetView()

    @staticmethod
    def creates(op: Op) -> bool:
        return op.name == "add"


class MapKind:
    """Views of an observed-remove map whose values are views of ``inner``."""

    def __init__(self, inner: SetKind | MapKind) -> None:
        self.inner = inner

    def empty(self) -> MapView:
        return MapView(self)

    @staticmethod
    def creates(op: Op) -> bool:
        return op.name == "update"


@dataclass(frozen=True)
class SetView:
    seen: frozenset[int] = frozenset()
    live: frozenset[int] = frozenset()
    elems: Mapping[int, Any] = field(default_factory=dict)
    #: adds the claimed memory still calls live (only between claim and apply)
    recalled: frozenset[int] = frozenset()

    def join(self, o: SetView) -> SetView:
        return SetView(self.seen | o.seen, _live(self.live, self.seen, o.live, o.seen), {**self.elems, **o.elems})

    def facts(self) -> Facts:
        return Facts(self.seen, self.live)

    def forget(self, f: Facts) -> SetView:
        return replace(self, live=frozenset(i for i in self.live if not f.removed(i)))

    def claim(self, f: Facts, own: Sequence[int]) -> SetView:
        return replace(self, seen=self.seen | _claimed(f, own), recalled=f.live)

    def apply(self, i: int, op: Op, path: Path, actor: str, world: World) -> SetView:
        e = op.args[0]
        same = frozenset(j for j in self.live if self.elems[j] == e)
        if op.name == "add":
            return SetView(self.seen | {i}, (self.live - same) | {i}, {**self.elems, i: e})
        gone = frozenset(j for j in self.recalled if world.at(j, path).args[0] == e)
        return SetView(self.seen | gone, self.live - same, self.elems)

    def value(self) -> frozenset[Any]:
        return frozenset(self.elems[i] for i in self.live)


def _claimed(f: Facts, own: Sequence[int]) -> frozenset[int]:
    """The writer's own earlier writes up to the last one the record has seen."""
    known = [i for i in own if i in f.seen]
    return frozenset(i for i in own if known and i <= max(known))


@dataclass(frozen=True)
class MapView:
    kind: MapKind
    seen: frozenset[int] = frozenset()
    entries: Mapping[int, tuple[Any, Any]] = field(default_factory=dict)
    recs: Mapping[Any, Facts] = field(default_factory=dict)
    #: updates the claimed memory still calls live (only between claim and delta)
    recalled: frozenset[int] = frozenset()

    def join(self, o: MapView) -> MapView:
        entries = {i: kv for i, kv in self.entries.items() if i in o.entries or i not in o.seen}
        entries.update({i: kv for i, kv in o.entries.items() if i not in self.seen})
        recs = _join_facts(self.recs, o.recs)
        for i, (k, v) in [*self.entries.items(), *o.entries.items()]:
            if i not in entries:  # superseded here: remember what its view had seen removed
                recs = _join_facts(recs, {k: v.facts()})
        return MapView(self.kind, self.seen | o.seen, entries, recs)

    def facts(self) -> Facts:
        children = dict(self.recs)
        for k, v in self.entries.values():
            children = _join_facts(children, {k: v.facts()})
        return Facts(self.seen, frozenset(self.entries), children)

    def forget(self, f: Facts) -> MapView:
        entries = {}
        for i, (k, v) in self.entries.items():
            if f.removed(i):
                continue
            entries[i] = (k, v.forget(f.children[k]) if k in f.children else v)
        return replace(self, entries=entries)

    def claim(self, f: Facts, own: Sequence[int]) -> MapView:
        return replace(self, seen=self.seen | _claimed(f, own), recs=_join_facts(self.recs, f.children),
                       recalled=f.live)

    def get(self, k: Any) -> Any:
        views = [v for kk, v in self.entries.values() if kk == k]
        if not views:
            return self.kind.inner.empty()
        out = views[0]
        for v in views[1:]:
            out = out.join(v)
        return out.forget(self.recs[k]) if k in self.recs else out

    def apply(self, i: int, op: Op, path: Path, actor: str, world: World) -> MapView:
        return self.join(self.delta(i, op, path, actor, world))

    def delta(self, i: int, op: Op, path: Path, actor: str, world: World) -> MapView:
        k = op.args[0]
        at_k = frozenset(j for j, (kk, _) in self.entries.items() if kk == k)
        if op.name == "remove":
            return MapView(self.kind, at_k | {j for j in self.recalled if world.at(j, path).args[0] == k})
        current = self.get(k)
        if k in self.recs:
            own = world.own_writes((*path, k), actor, i, self.kind.inner.creates)
            current = current.claim(self.recs[k], own)
        nested = Op(op.args[1], tuple(op.args[2:]))
        new = current.apply(i, nested, (*path, k), actor, world)
        mine = frozenset(j for j in at_k if world.events[j].actor == actor)
        return MapView(self.kind, mine | {i}, {i: (k, new)})

    def value(self) -> dict[Any, Any]:
        return {k: self.get(k).value() for k in {kk for kk, _ in self.entries.values()}}


def nested_model(kind: MapKind) -> Callable[[Sequence[HistoryEvent]], dict[Any, Any]]:
    """The model of a top-level ORMap of ``kind``: history -> value."""

    def model(events: Sequence[HistoryEvent]) -> dict[Any, Any]:
        world = World({e.id: e for e in events})
        deltas: dict[int, MapView] = {}
        for e in sorted(events, key=lambda e: e.id):  # ids are a linear extension of causality
            state = kind.empty()
            for j in sorted(e.past):
                if j in deltas:
                    state = state.join(deltas[j])
            deltas[e.id] = state.delta(e.id, e.op, (), e.actor, world)
        out = kind.empty()
        for d in deltas.values():
            out = out.join(d)
        return out.value()

    return model
