"""Causal dot stores: the shared join of every observed-remove type.

A *causal* state is a dot store plus a :class:`~crdtsync.clock.Context` of every dot
it has seen. A dot present in the store is alive; a dot in the context but not in the
store was seen and removed. Joining keeps a dot if both sides have it, or if one side
has it and the other has never seen it. That one rule gives add-wins sets, multi-value
registers, enable/disable-wins flags and observed-remove maps, with no tombstones: a
removed dot lives on only as a number in the context's version vector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .._encoding import corrupt
from ..clock import Context, Dot

K = TypeVar("K")
V = TypeVar("V")


def join_dotfun(
    a: Mapping[Dot, V],
    ca: Context,
    b: Mapping[Dot, V],
    cb: Context,
    merge: Callable[[V, V], V] | None = None,
) -> dict[Dot, V]:
    """Join two dot functions (dot -> value) under their contexts."""
    out: dict[Dot, V] = {}
    for d, v in a.items():
        if d in b:
            out[d] = merge(v, b[d]) if merge is not None else v
        elif d not in cb:
            out[d] = v
    for d, v in b.items():
        if d not in a and d not in ca:
            out[d] = v
    return out


def join_dotsets(a: frozenset[Dot], ca: Context, b: frozenset[Dot], cb: Context) -> frozenset[Dot]:
    """Join two dot sets under their contexts."""
    if a == b:
        return a
    return (a & b) | frozenset(d for d in a if d not in cb) | frozenset(d for d in b if d not in ca)


def join_dotmap(
    a: Mapping[K, frozenset[Dot]], ca: Context, b: Mapping[K, frozenset[Dot]], cb: Context
) -> dict[K, frozenset[Dot]]:
    """Join two maps of dot sets (key -> dots), dropping keys left without dots."""
    out: dict[K, frozenset[Dot]] = {}
    for k in a.keys() | b.keys():
        da = a.get(k, frozenset())
        db = b.get(k, frozenset())
        dots = join_dotsets(da, ca, db, cb)
        if dots:
            out[k] = dots
    return out


def dots_to_payload(dots: frozenset[Dot]) -> list[list[Any]]:
    return [[r, s] for r, s in sorted(dots)]


def dots_from_payload(rows: Any, what: str) -> frozenset[Dot]:
    if not isinstance(rows, list) or not rows:
        corrupt(what, "expected a non-empty list of [replica, seq] dots")
    out = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
                and isinstance(row[1], int) and not isinstance(row[1], bool) and row[1] >= 1):
            corrupt(what, f"bad dot {row!r:.60}")
        out.append(Dot(row[0], row[1]))
    if len(set(out)) != len(out) or out != sorted(out):
        corrupt(what, "dots are not sorted and unique")
    return frozenset(out)


def check_dots_in_context(dots: Any, ctx: Context, what: str) -> None:
    """A well-formed causal state has every live dot inside its own context."""
    for d in dots:
        if d not in ctx:
            corrupt(what, f"live dot {d} is missing from the state's context")
