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
from ..errors import DotReuse

K = TypeVar("K")
V = TypeVar("V")


def reused(what: str, dot: Dot, detail: str) -> DotReuse:
    """The error for one dot naming two different writes (issue 8, defect 9)."""
    return DotReuse(
        f"{what}: dot ({dot[0]!r}, {dot[1]}) names two different writes ({detail}), so joining "
        "would silently lose one. Each mutator takes its writer's next dot from the state it "
        "is called on: apply each delta to the state before making the next one "
        "(s = s.join(delta)), or use the Replica, which does",
        dot=dot,
    )


def join_dotfun(
    a: Mapping[Dot, V],
    ca: Context,
    b: Mapping[Dot, V],
    cb: Context,
    merge: Callable[[Dot, V, V], V] | None = None,
) -> dict[Dot, V]:
    """Join two dot functions (dot -> value) under their contexts.

    ``merge(dot, mine, theirs)`` combines the two values of a dot both sides hold; it
    raises :class:`~crdtsync.errors.DotReuse` when they are two different writes.
    """
    out: dict[Dot, V] = {}
    for d, v in a.items():
        if d in b:
            out[d] = merge(d, v, b[d]) if merge is not None else v
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


class Removals:
    """What a causal state has seen removed: the dots of its context that are not live.

    ``removed(d)`` holds for a dot ``d`` in ``ctx`` and not in ``live``. Joining two
    records is the causal join of their dot sets, which is exactly the union of what
    each has seen removed (a dot live on one side and removed on the other is removed;
    a dot live on one side and unseen on the other stays live). ``children`` holds the
    records of nested states by key (an ORMap's values; empty for flat types), so that
    a removal seen inside one key's value applies to that key only.

    ``by`` says, for a container (ORSet, ORMap), which element or key holds each live
    dot: it is the container's dot map (element or key -> its live dots), a partition of
    ``live`` (empty for flat types: flags, registers). It joins as a dot map under the
    two contexts, so a grouped dot leaves its group exactly when it leaves ``live``, and
    the groups stay as small as ``live``. A remove of an element made from a state read
    with the record (:meth:`recalled`) takes the element's dots the record still calls
    live: its writer has seen those adds, even though a remove of the enclosing key took
    them out of its state (see ``docs/types/collections.md``, "Removes are monotone").

    An ORMap keeps one record per key of everything it saw removed there, so that a
    remove of the key cannot bring back what an earlier remove took (issue 8, defect 8).

    Payload (ORMap format 3): ``[context rows, loose dots, children, groups]``: ``loose``
    the live dots in no group (those of flat types, and of records decoded from format
    2), sorted, possibly empty; ``children`` ``[[key, record], ...]`` sorted by key;
    ``groups`` ``[[element or key, [[replica, seq], ...]], ...]`` sorted by key, each
    non-empty. Every dot once, inside the context. Format 2 had no ``groups`` (three
    items, every live dot loose).
    """

    __slots__ = ("by", "children", "ctx", "live")

    def __init__(self, ctx: Context, live: frozenset[Dot],
                 children: Mapping[bytes, Removals] | None = None,
                 by: Mapping[bytes, frozenset[Dot]] | None = None) -> None:
        self.ctx = ctx
        self.live = live
        self.children: Mapping[bytes, Removals] = children if children is not None else {}
        self.by: Mapping[bytes, frozenset[Dot]] = by if by is not None else {}

    def removed(self, dot: Dot) -> bool:
        return dot in self.ctx and dot not in self.live

    def recalled(self, k: bytes) -> frozenset[Dot]:
        """The live dots the record says element or key ``k`` holds (empty if none)."""
        return self.by.get(k, frozenset())

    def join(self, other: Removals) -> Removals:
        if other is self or other == self:
            return self
        children = dict(self.children)
        for k, c in other.children.items():
            mine = children.get(k)
            children[k] = c if mine is None else mine.join(c)
        by = join_dotmap(self.by, self.ctx, other.by, other.ctx) if self.by or other.by else None
        return Removals(self.ctx.join(other.ctx), join_dotsets(self.live, self.ctx, other.live, other.ctx),
                        children, by)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Removals):
            return NotImplemented
        return (self.live == other.live and self.ctx == other.ctx and self.by == other.by
                and self.children == other.children)

    __hash__ = None  # type: ignore[assignment]

    def to_payload(self, key_to_wire: Callable[[bytes], Any]) -> list[Any]:
        kids = [[key_to_wire(k), self.children[k].to_payload(key_to_wire)] for k in sorted(self.children)]
        grouped = frozenset().union(*self.by.values()) if self.by else frozenset()
        loose = dots_to_payload(self.live - grouped)
        groups = [[key_to_wire(k), dots_to_payload(self.by[k])] for k in sorted(self.by)]
        return [self.ctx.to_payload(), loose, kids, groups]

    @classmethod
    def from_payload(cls, rows: Any, what: str, key_from_wire: Callable[[Any], bytes],
                     version: int = 3) -> Removals:
        """Decode a record of ORMap format ``version`` (2: no groups; 3: groups)."""
        size = 3 if version < 3 else 4
        if not isinstance(rows, list) or len(rows) != size:
            corrupt(what, "expected [context, live dots, children]" if size == 3
                    else "expected [context, loose dots, children, groups]")
        ctx = Context.from_payload(rows[0], f"{what}.context")
        live = dots_from_payload(rows[1], f"{what}.live") if rows[1] != [] else frozenset()
        if not isinstance(rows[2], list):
            corrupt(what, "children must be a list")
        children: dict[bytes, Removals] = {}
        last: bytes | None = None
        for kid in rows[2]:
            if not isinstance(kid, list) or len(kid) != 2:
                corrupt(what, "child is not [key, record]")
            k = key_from_wire(kid[0])
            if last is not None and not last < k:
                corrupt(what, "children are not in strictly ascending key order")
            last = k
            children[k] = cls.from_payload(kid[1], f"{what}.child", key_from_wire, version)
        by: dict[bytes, frozenset[Dot]] = {}
        if size == 4:
            if not isinstance(rows[3], list):
                corrupt(what, "groups must be a list")
            seen = set(live)
            last = None
            for group in rows[3]:
                if not isinstance(group, list) or len(group) != 2:
                    corrupt(what, "group is not [element or key, dots]")
                k = key_from_wire(group[0])
                if last is not None and not last < k:
                    corrupt(what, "groups are not in strictly ascending key order")
                last = k
                ds = dots_from_payload(group[1], f"{what}.group")
                if seen & ds:
                    corrupt(what, "a live dot is listed twice")
                seen |= ds
                by[k] = ds
            live = frozenset(seen)
        check_dots_in_context(live, ctx, what)
        return cls(ctx, live, children, by)

    def __repr__(self) -> str:
        return (f"Removals(ctx={self.ctx!r}, live={sorted(self.live)!r}, groups={len(self.by)}, "
                f"children={len(self.children)})")
