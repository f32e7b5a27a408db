"""Counters: grow-only and positive-negative.

Both are per-actor maps of monotonically growing totals: an actor only ever raises its
own entry, and join takes the pointwise maximum. Metadata is one integer per actor that
ever wrote; a removed actor's entry is reclaimed by causal-stability pruning in the
replica, never by the type itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping, Sequence
from operator import attrgetter, itemgetter
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from .. import speedups
from ._base import CRDT, actor_of, check_sorted_unique, register, want_int, want_list, want_str

__all__ = ["GCounter", "PNCounter"]

K = TypeVar("K")


_MAX_TOTAL = 2**63 - 1
_first, _second = itemgetter(0), itemgetter(1)
_counts_of = attrgetter("_counts")


def _check_amount(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"counter amounts are ints, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"amount must be >= 0, got {n}; use PNCounter.decrement to go down")
    return n


def _max_merge(a: Mapping[K, int], b: Mapping[K, int]) -> dict[K, int] | None:
    """Pointwise max of two count maps, or None if ``b`` adds nothing to ``a``."""
    out: dict[K, int] | None = None
    for k, v in b.items():
        if v > a.get(k, 0):
            if out is None:
                out = dict(a)
            out[k] = v
    return out


def _counts_payload(counts: Mapping[str, int]) -> list[list[Any]]:
    return [[k, counts[k]] for k in sorted(counts)]


def _counts_from_payload(rows: Any, what: str) -> dict[str, int]:
    if type(rows) is list and len(rows) == 1:  # a delta: one actor's total
        row = rows[0]
        if type(row) is list and len(row) == 2:
            a, n = row
            if type(a) is str and type(n) is int and n >= 1:
                return {a: n}
    out: dict[str, int] = {}
    for row in want_list(rows, what):
        pair = want_list(row, what)
        if len(pair) != 2:
            raise ValueError("entry is not [actor, count]")
        out[want_str(pair[0], what)] = want_int(pair[1], what, minimum=1)
    check_sorted_unique([r[0] for r in rows], what)
    return out


def _delta_columns(payloads: list[Any]) -> tuple[list[str], list[int]] | None:
    """Payloads all of the delta shape ``[[actor, total]]``, validated in bulk, or None."""
    if not payloads or set(map(type, payloads)) != {list} or set(map(len, payloads)) != {1}:
        return None
    rows = list(map(_first, payloads))
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {2}:
        return None
    actors = list(map(_first, rows))
    totals = list(map(_second, rows))
    if set(map(type, actors)) != {str} or set(map(type, totals)) != {int} or min(totals) < 1:
        return None
    return list(map(sys.intern, actors)), totals


@register
class GCounter(CRDT[int]):
    """Concurrent increments all count: the value is the sum of every actor's total.

    Cost: one int per actor that ever incremented. Payload: ``[[actor, total], ...]``
    sorted by actor.

    Same-actor rule (not detectable): an increment adds to the writer's total as this state knows it,
    so two increments by one actor computed from the same stale state give two totals of which
    the join keeps the larger: one is lost silently, and no type-level check can tell
    (a total carries no identity of the write). Apply each delta to the state before
    making the next one, or use the Replica, which does.
    """

    __slots__ = ("_counts",)
    TYPE_TAG: ClassVar[str] = "gcounter"
    MUTATORS: ClassVar[tuple[str, ...]] = ("increment",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = {k: v for k, v in (counts or {}).items() if v}

    @classmethod
    def _of(cls, counts: dict[str, int]) -> GCounter:
        """Adopt ``counts`` (already clean, never mutated afterwards) without copying."""
        g = cls.__new__(cls)
        g._counts = counts
        return g

    @property
    def counts(self) -> Mapping[str, int]:
        return MappingProxyType(self._counts)

    def increment(self, n: int = 1, *, actor: str) -> GCounter:
        """Delta adding ``n`` (>= 0) to ``actor``'s total."""
        if type(n) is not int or n < 0:  # fast path first; _check_amount explains
            _check_amount(n)
        if not actor or type(actor) is not str:
            actor_of(actor)
        if n == 0:
            return _EMPTY_G
        total = self._counts.get(actor, 0) + n
        if total > _MAX_TOTAL:
            raise ValueError(f"{actor}'s total would exceed 2**63 - 1; counters are 64-bit")
        return GCounter._of({actor: total})

    def join(self, other: GCounter) -> GCounter:
        if type(other) is not GCounter:
            self._check_joinable(other)
        a, b = self._counts, other._counts
        if len(b) == 1:  # the common case: joining a delta
            for k, v in b.items():
                if v <= a.get(k, 0):
                    return self
                merged = dict(a)
                merged[k] = v
                return GCounter._of(merged)
        m = _max_merge(a, b)
        return self if m is None else GCounter._of(m)

    def value(self) -> int:
        return sum(self._counts.values())

    def _payload(self) -> Any:
        return _counts_payload(self._counts)

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> GCounter:
        return cls._of(_counts_from_payload(payload, "gcounter"))

    # column form: the common delta shape [[actor, total]], as (actors, totals)
    @classmethod
    def _payloads(cls, states: Sequence[CRDT[Any]]) -> list[Any]:
        # a one-entry map is sorted already; (actor, total) packs like [actor, total]
        return [list(c.items()) if len(c) == 1 else _counts_payload(c) for c in map(_counts_of, states)]

    @classmethod
    def _columns(cls, payloads: list[Any], version: int) -> Any:
        return _delta_columns(payloads)

    # stamped form (delta version 2): the payload is the writer's new total, the actor is
    # the event's origin (what the replica's writer writes for ``increment``)
    STAMPED_VERSION = 2
    STAMPED_NEEDS_HLCS = False  # (the totals are the whole delta)

    @classmethod
    def _stamped_columns(cls, payloads: list[Any], hlcs: list[int] | None, origin: str) -> Any:
        if not speedups.hot.stamped_totals_ok(payloads, _MAX_TOTAL):
            return None
        return [sys.intern(origin)] * len(payloads), payloads

    @classmethod
    def _from_columns(cls, cols: Any) -> list[Any]:
        return [GCounter._of({a: n}) for a, n in zip(*cols)]

    @classmethod
    def _join_columns(cls, table: MutableMapping[str, CRDT[Any]], keys: list[str], cols: Any,
                      start: int) -> tuple[int, list[int]]:
        fast = getattr(table, "_join_gcounter", None)
        if fast is not None:  # the counter table of crdtsync._tables raises totals in place
            return fast(keys, cols, start)  # type: ignore[no-any-return]
        actors, totals = cols
        get = table.get
        new = object.__new__
        refused: list[int] = []
        for i in range(start, len(keys)):
            key = keys[i]
            a = actors[i]
            n = totals[i]
            cur = get(key)
            if cur is None:
                g = new(GCounter)
                g._counts = {a: n}
                table[key] = g
            elif type(cur) is GCounter:
                c = cur._counts
                if n > c.get(a, 0):  # join(delta) spelled out: this is the replay hot loop
                    m = c.copy()
                    m[a] = n
                    g = new(GCounter)
                    g._counts = m
                    table[key] = g
            else:
                refused.append(i)
        return len(keys) - start - len(refused), refused

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GCounter):
            return NotImplemented
        return self._counts == other._counts

    __hash__ = CRDT.__hash__


_EMPTY_G = GCounter()


@register
class PNCounter(CRDT[int]):
    """Concurrent increments and decrements all count: value = increments - decrements.

    Two grow-only counters (P and N). Cost: up to two ints per actor. Payload:
    ``[P rows, N rows]`` as in :class:`GCounter`.

    Same-actor rule (not detectable): an increment or decrement adds to the writer's total as this state knows it,
    so two increments (or decrements) by one actor computed from the same stale state give two totals of which
    the join keeps the larger: one is lost silently, and no type-level check can tell
    (a total carries no identity of the write). Apply each delta to the state before
    making the next one, or use the Replica, which does.
    """

    __slots__ = ("_p", "_n")
    TYPE_TAG: ClassVar[str] = "pncounter"
    MUTATORS: ClassVar[tuple[str, ...]] = ("increment", "decrement")

    def __init__(self, p: GCounter | None = None, n: GCounter | None = None) -> None:
        self._p = p if p is not None else GCounter()
        self._n = n if n is not None else GCounter()

    def increment(self, n: int = 1, *, actor: str) -> PNCounter:
        return PNCounter(self._p.increment(n, actor=actor), _EMPTY_G)

    def decrement(self, n: int = 1, *, actor: str) -> PNCounter:
        return PNCounter(_EMPTY_G, self._n.increment(n, actor=actor))

    def join(self, other: PNCounter) -> PNCounter:
        if type(other) is not PNCounter:
            self._check_joinable(other)
        p = self._p.join(other._p)
        n = self._n.join(other._n)
        if p is self._p and n is self._n:
            return self
        return PNCounter(p, n)

    def value(self) -> int:
        return self._p.value() - self._n.value()

    def _payload(self) -> Any:
        return [self._p._payload(), self._n._payload()]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> PNCounter:
        rows = want_list(payload, "pncounter")
        if len(rows) != 2:
            raise ValueError("expected [P, N]")
        return cls(GCounter(_counts_from_payload(rows[0], "pncounter.P")),
                   GCounter(_counts_from_payload(rows[1], "pncounter.N")))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PNCounter):
            return NotImplemented
        return self._p == other._p and self._n == other._n

    __hash__ = CRDT.__hash__
