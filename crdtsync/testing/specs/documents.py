"""Specs and reference models for the Yjs-backed documents (Document, Text).

Yjs resolves some conflicts by its YATA integration order (concurrent writes of one map
key, concurrent inserts at one place), which depends on client ids and on which item each
write saw last. A naive model that reproduced it exactly would be a second Yjs, so the
models here are *partial*: they compute the exact value whenever the history determines
it without that order, and answer :data:`UNKNOWN` otherwise (the law suite then skips the
value check for that step; the algebraic laws and convergence still run).

* Document: for every flattened entry (map node or leaf, see
  :class:`~crdtsync.types.documents.Document`), the events that touched it and are not in
  the causal past of another such event decide it: all deletions -> absent; all writes of
  one identical entry -> that entry; anything else -> unknown.
* Text: a causally ordered history replays as plain string edits; otherwise, if every
  deletion was issued on a known text, the *multiset* of characters is known.

:func:`json_model` is the plain single-writer semantics (a nested dict edited in order),
used by the property tests for sequential histories.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from ...types.documents import Document, Text
from .._spec import HistoryEvent, Op, TypeSpec, register_spec

__all__ = [
    "DOCUMENT",
    "TEXT",
    "UNKNOWN",
    "Chars",
    "apply_json_op",
    "document_model",
    "document_ops",
    "json_model",
    "strict_equal",
    "text_model",
    "text_ops",
]


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


#: The model cannot say (the value depends on Yjs's integration order).
UNKNOWN: Any = _Unknown()


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that also compares types (so 1, 1.0 and True differ), recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _same_document(got: Any, want: Any) -> bool:
    return want is UNKNOWN or strict_equal(got, want)


# -- plain JSON semantics ----------------------------------------------------------------


def _keys(path: Any) -> tuple[str, ...]:
    return tuple(path.split(".")) if isinstance(path, str) else tuple(path)


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def apply_json_op(doc: dict[str, Any], op: Op) -> None:
    """Edit a nested dict the way a single writer's ``set``/``delete`` would."""
    keys = _keys(op.args[0])
    node = doc
    if op.name == "set":
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = _plain(op.args[1])
        return
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            return
        node = nxt
    node.pop(keys[-1], None)


def json_model(ops: Sequence[Op]) -> dict[str, Any]:
    """The value of a document after ``ops`` applied one after the other."""
    doc: dict[str, Any] = {}
    for op in ops:
        apply_json_op(doc, op)
    return doc


# -- Document: causal partial model over flattened entries --------------------------------

_MAP = ("map",)
_DELETE = ("delete",)
Path = tuple[str, ...]


def _typed(v: Any) -> Any:
    """A hashable, type-exact stand-in for a value (1, 1.0 and True all differ)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, int):
        return ("int", v)
    if isinstance(v, float):
        return ("float", v.hex())
    if isinstance(v, (list, tuple)):
        return ("list", tuple(_typed(x) for x in v))
    return ("dict", tuple(sorted((k, _typed(x)) for k, x in v.items())))


def _flat(path: Path, value: Any, out: dict[Path, Any]) -> None:
    if isinstance(value, dict):
        out[path] = _MAP
        for k, v in value.items():
            _flat((*path, k), v, out)
    else:
        out[path] = ("leaf", _typed(value), _plain(value))


def _below(view: dict[Path, Any], path: Path) -> list[Path]:
    n = len(path)
    return [k for k in view if len(k) > n and k[:n] == path]


def _effects(view: dict[Path, Any], op: Op) -> dict[Path, Any]:
    """What one operation does to each entry, given the entries its writer saw."""
    keys = _keys(op.args[0])
    if op.name == "delete":
        hit = _below(view, keys) + ([keys] if keys in view else [])
        return {k: _DELETE for k in hit}
    writes: dict[Path, Any] = {}
    _flat(keys, op.args[1], writes)
    out: dict[Path, Any] = {}
    for i in range(1, len(keys)):
        if view.get(keys[:i]) != _MAP:
            out.update((k, _DELETE) for k in _below(view, keys[:i]))
            for j in range(i, len(keys)):
                writes[keys[:j]] = _MAP
            break
    out.update((k, _DELETE) for k in _below(view, keys))
    out.update(writes)
    return out


# Effects of an event depend only on the event and the history before it, so they are
# cached by event identity (the simulation passes the same HistoryEvent objects at every
# step). The cache holds the event itself, so an id is never reused while cached.
_EFFECTS: OrderedDict[int, tuple[HistoryEvent, Any]] = OrderedDict()
_TEXT_VIEWS: OrderedDict[int, tuple[HistoryEvent, Any]] = OrderedDict()
_CACHE_SIZE = 20_000


def _cached(cache: OrderedDict[int, tuple[HistoryEvent, Any]], e: HistoryEvent) -> Any:
    hit = cache.get(id(e))
    if hit is not None and hit[0] is e:
        return hit[1]
    return None


def _store(cache: OrderedDict[int, tuple[HistoryEvent, Any]], e: HistoryEvent, v: Any) -> None:
    cache[id(e)] = (e, v)
    if len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _entries(events: Sequence[HistoryEvent], by_id: dict[int, HistoryEvent]) -> Any:
    touched: dict[Path, list[tuple[HistoryEvent, Any]]] = {}
    for e in events:
        eff = _event_effects(e, by_id)
        if eff is UNKNOWN:
            return UNKNOWN
        for k, what in eff.items():
            touched.setdefault(k, []).append((e, what))
    out: dict[Path, Any] = {}
    for k, touches in touched.items():
        last = [(e, w) for e, w in touches if not any(e.id in o.past for o, _ in touches if o is not e)]
        writes = {w[:2] for _, w in last if w is not _DELETE}
        if not writes:
            continue
        if len(writes) > 1 or any(w is _DELETE for _, w in last):
            return UNKNOWN
        out[k] = next(w for _, w in last if w is not _DELETE)
    return out


def _event_effects(e: HistoryEvent, by_id: dict[int, HistoryEvent]) -> Any:
    hit = _cached(_EFFECTS, e)
    if hit is not None:
        return hit
    view = _entries([by_id[i] for i in sorted(e.past)], by_id)
    eff = UNKNOWN if view is UNKNOWN else _effects(view, e.op)
    _store(_EFFECTS, e, eff)
    return eff


def _visible(entries: dict[Path, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    maps: dict[Path, dict[str, Any]] = {(): root}
    for path in sorted(entries, key=len):
        parent = maps.get(path[:-1])
        if parent is None:
            continue
        entry = entries[path]
        if entry == _MAP:
            maps[path] = parent[path[-1]] = {}
        else:
            parent[path[-1]] = _plain(entry[2])
    return root


_HISTORIES: OrderedDict[tuple[int, ...], tuple[tuple[HistoryEvent, ...], Any]] = OrderedDict()


def document_model(events: Sequence[HistoryEvent]) -> Any:
    """Expected ``Document.value()`` after ``events``, or :data:`UNKNOWN`."""
    ordered = tuple(sorted(events, key=lambda e: e.id))
    key = tuple(map(id, ordered))
    hit = _HISTORIES.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], ordered)):
        entries = hit[1]
    else:
        entries = _entries(ordered, {e.id: e for e in ordered})
        _HISTORIES[key] = (ordered, entries)  # holds the events: their ids stay unique
        if len(_HISTORIES) > 2_000:
            _HISTORIES.popitem(last=False)
    return UNKNOWN if entries is UNKNOWN else _visible(entries)


# -- Text ----------------------------------------------------------------------------------


class Chars:
    """Expected text known only up to order: the multiset of its characters."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts

    def __repr__(self) -> str:
        return f"Chars({''.join(sorted(self.counts.elements()))!r})"


def _same_text(got: Any, want: Any) -> bool:
    if want is UNKNOWN:
        return True
    if isinstance(want, Chars):
        return isinstance(got, str) and Counter(got) == want.counts
    return isinstance(got, str) and got == want


def _is_chain(events: Sequence[HistoryEvent]) -> bool:
    return all(a.id in b.past for a, b in itertools.pairwise(events))


def _replay(events: Sequence[HistoryEvent]) -> list[tuple[str, tuple[int, int]]]:
    """Characters with identities after applying a causally ordered history."""
    text: list[tuple[str, tuple[int, int]]] = []
    for e in events:
        if e.op.name == "insert":
            index, s = e.op.args
            text[index:index] = [(c, (e.id, i)) for i, c in enumerate(s)]
        else:
            index, length = e.op.args
            del text[index : index + length]
    return text


def _text_view(e: HistoryEvent, by_id: dict[int, HistoryEvent]) -> Any:
    """The text (with identities) ``e``'s writer saw, or None if its past was concurrent."""
    hit = _cached(_TEXT_VIEWS, e)
    if hit is not None:
        return hit
    past = [by_id[i] for i in sorted(e.past)]
    view = _replay(past) if _is_chain(past) else False
    _store(_TEXT_VIEWS, e, view)
    return view


def text_model(events: Sequence[HistoryEvent]) -> Any:
    """Expected ``Text.value()``: a str, a :class:`Chars` multiset, or :data:`UNKNOWN`."""
    ordered = sorted(events, key=lambda e: e.id)
    if _is_chain(ordered):
        return "".join(c for c, _ in _replay(ordered))
    by_id = {e.id: e for e in ordered}
    inserted: dict[tuple[int, int], str] = {}
    deleted: set[tuple[int, int]] = set()
    for e in ordered:
        if e.op.name == "insert":
            inserted.update(((e.id, i), c) for i, c in enumerate(e.op.args[1]))
        else:
            view = _text_view(e, by_id)
            if view is False:
                return UNKNOWN
            index, length = e.op.args
            deleted.update(ident for _, ident in view[index : index + length])
    return Chars(Counter(c for ident, c in inserted.items() if ident not in deleted))


# -- strategies ----------------------------------------------------------------------------

# Drawn from fixed pools: cheap to generate, easy to read when shrunk, and small enough
# that replicas keep colliding on the same keys.
_KEYS = ("a", "b", "c")
_PATHS: list[Any] = [(k,) for k in _KEYS]
_PATHS += [(k, j) for k in _KEYS for j in _KEYS]
_PATHS += [("a", "b", "c"), ("a", "a", "a"), ("c", "b", "a"), "a", "a.b", "b.a.c", "c.c"]
_VALUES: list[Any] = [
    None, True, False, 0, 1, -7, 2**53 + 1, 2**64 - 1, -(2**63), 1.0, -0.0, 0.1, 1e300,
    "", "x", "\u00fc\U0001f600", [], [1, 1.0, True], [{"a": 1}, None], {}, {"a": 1},
    {"b": 2.5, "c": "s"}, {"a": {"b": None}, "c": [2]}, {"a": {"a": {}}},
]
# Every operation is drawn from one precomputed list: a single cheap draw per operation
# (the law suite draws thousands), and shrinking moves towards the start of the list.
document_ops = st.sampled_from(
    [Op("delete", (p,)) for p in _PATHS] + [Op("set", (p, v)) for v in _VALUES for p in _PATHS]
)

_CHUNKS = ["a", "b", "ab", "\u00e9", "x\U0001f600", "\U0001f600\U0001f600y"]
text_ops = st.sampled_from(
    [Op("insert", (i, c)) for c in _CHUNKS for i in range(9)]
    + [Op("delete", (i, n)) for n in range(1, 5) for i in range(9)]
    + [Op("delete", (0, 0))]
)


DOCUMENT = register_spec(TypeSpec(Document, ops=document_ops, model=document_model, same_value=_same_document))
TEXT = register_spec(TypeSpec(Text, ops=text_ops, model=text_model, same_value=_same_text))
