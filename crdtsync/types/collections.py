"""Collections: the add-wins observed-remove set and the observed-remove map of nested CRDTs.

Both are *causal* states (Almeida et al., "Delta State Replicated Data Types", 2018): a
dot store plus a :class:`~crdtsync.clock.Context` of every dot the state has seen (see
:mod:`crdtsync.types._dots`). An add or update writes a fresh dot; a remove writes no
entry at all, only a context holding the dots it observed. Joining keeps a dot that both
sides hold, or that one side holds and the other has never seen, so a remove takes away
exactly what its writer had observed and nothing that was concurrent with it. A removed
element leaves no tombstone: its dots survive only as numbers folded into the version
vector of the context. An ORMap whose values are causal types also keeps, per key, a
record of what its values had seen removed, so that removes stay monotone (see
:class:`ORMap`).

Elements (ORSet) and keys (ORMap) are ``str``, ``int`` (64-bit), ``bytes``, ``bool``,
``None``, finite ``float`` and tuples of those. Their identity is their canonical
msgpack encoding (:func:`crdtsync._encoding.value_key`), so ``1``, ``1.0`` and ``True``
are three different elements even though Python compares them equal (a frozenset
holding two of them shows only one).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeAlias

from .._encoding import check_envelope, corrupt, unpackb, value_key
from ..clock import Context, Dot, default_hlc
from ..errors import DotReuse
from ._base import CRDT, actor_of, register, type_for_tag, want_int, want_list, want_str
from ._dots import (
    Removals,
    check_dots_in_context,
    dots_from_payload,
    dots_to_payload,
    join_dotfun,
    join_dotmap,
    join_dotsets,
    reused,
)
from .counters import PNCounter

__all__ = ["Element", "ElementSet", "ORMap", "ORSet"]

Scalar: TypeAlias = str | int | float | bytes | bool | None
#: what an ORSet may hold and an ORMap may be keyed by
Element: TypeAlias = Scalar | tuple[Any, ...]

_MAX_TUPLE_DEPTH = 16
_KINDS = "str, int, float, bytes, bool, None or a tuple of those"


# -- elements -----------------------------------------------------------------------


def _element(x: Any, what: str, depth: int = 0) -> Element:
    """Validate ``x`` as an element or key and return its plain-Python form.

    Subclasses of the scalar types (``numpy.float64``, enum-backed strs) are converted
    to the base type so that every replica hashes and compares the same thing.
    """
    if x is None or isinstance(x, bool):
        return x  # type: ignore[no-any-return]
    if isinstance(x, int):
        v = int(x)
        if not -(2**63) <= v < 2**64:
            raise ValueError(f"{what} {v} does not fit in 64 bits; store it as a str or bytes")
        return v
    if isinstance(x, float):
        f = float(x)
        if not math.isfinite(f):
            raise ValueError(f"{what} {f!r} is not a finite float; NaN and infinities cannot be {what}s")
        return f
    if isinstance(x, str):
        return str(x)
    if isinstance(x, bytes):
        return bytes(x)
    if isinstance(x, tuple):
        if depth >= _MAX_TUPLE_DEPTH:
            raise ValueError(f"{what} tuples nest deeper than {_MAX_TUPLE_DEPTH} levels")
        return tuple(_element(v, what, depth + 1) for v in x)
    hint = "; use a tuple instead of a list" if isinstance(x, list) else ""
    raise TypeError(f"{what}s must be {_KINDS}; got {type(x).__name__}{hint}")


def _element_to_wire(e: Element) -> Any:
    if isinstance(e, tuple):
        return [_element_to_wire(v) for v in e]
    return e


def _element_from_wire(x: Any, what: str, depth: int = 0) -> Element:
    if isinstance(x, list):
        if depth >= _MAX_TUPLE_DEPTH:
            corrupt(what, f"tuple nests deeper than {_MAX_TUPLE_DEPTH} levels")
        return tuple(_element_from_wire(v, what, depth + 1) for v in x)
    if x is None or isinstance(x, (bool, int, str, bytes)):
        return x  # type: ignore[no-any-return]
    if isinstance(x, float):
        if not math.isfinite(x):
            corrupt(what, "non-finite float")
        return x
    corrupt(what, f"a {type(x).__name__} cannot be an element or key")


def _key_of(e: Element) -> bytes:
    return value_key(_element_to_wire(e))


def _check_dot(x: Any) -> Dot:
    if (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[0], str)
        and x[0]
        and isinstance(x[1], int)
        and not isinstance(x[1], bool)
        and x[1] >= 1
    ):
        return Dot(x[0], x[1])
    raise TypeError(f"observed must hold Dots (replica: str, seq: int >= 1), got {x!r:.60}")


def _observed(observed: Iterable[Dot]) -> frozenset[Dot]:
    if isinstance(observed, (str, bytes)) or not isinstance(observed, Iterable):
        raise TypeError(
            "observed must be an iterable of Dots, typically other.dots_of(element) read at "
            f"another replica; got {type(observed).__name__}"
        )
    return frozenset(_check_dot(d) for d in observed)


def _no_moved_dot(mine: Mapping[bytes, Collection[Dot]], joined: Mapping[bytes, Collection[Dot]],
                  index: Callable[[], Mapping[Dot, bytes]], what: str) -> None:
    """Raise :class:`~crdtsync.errors.DotReuse` if a dot of ``mine`` that the join dropped
    is live on the other side (whose ``index`` maps live dots to elements or keys): there
    it names a write of another element or key, so two writes share the dot."""
    other: Mapping[Dot, bytes] | None = None
    for k, ds in mine.items():
        kept = joined.get(k)
        if kept is ds:
            continue
        for d in ds:
            if kept is None or d not in kept:
                if other is None:
                    other = index()
                if d in other:
                    raise reused(what, d, "writes of two different elements or keys")


def _no_dot_twice(seen: set[Dot], dots: Iterable[Dot], what: str) -> None:
    for d in dots:
        if d in seen:
            corrupt(what, f"dot {d} names two different writes")
        seen.add(d)


# -- ORSet --------------------------------------------------------------------------


class ElementSet(frozenset[Element]):
    """The value of an :class:`ORSet`: a plain frozenset whose ``repr`` lists the
    elements in canonical order, so logs and golden vectors do not depend on the
    process's hash seed."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self:
            return "frozenset()"
        return "frozenset({" + ", ".join(repr(e) for e in sorted(self, key=_key_of)) + "})"



@register
class ORSet(CRDT[ElementSet]):
    """Add wins over a concurrent remove; a remove takes away only the adds it observed.

    Cost: one dot per live element per concurrent adder (re-adding an element replaces
    the adder's older dot), plus the context: one version-vector entry per writer and a
    dot cloud only while deltas arrive out of order. Removed elements are reclaimed
    whole: no tombstones, their dots are folded into the version vector.

    Payload: ``[[[element, [[replica, seq], ...]], ...], context rows]``; entries sorted
    by the canonical bytes of the element, each with its live dots sorted and non-empty;
    tuples are encoded as lists; context rows as in :meth:`Context.to_payload`. Every
    live dot lies inside the context and belongs to one element only.

    Same-dot rule: a mutator takes the writer's next dot from the state it is called on,
    so call it on the writer's current state (join each delta before making the next
    one; the Replica does). Joining two states that use one dot for two different writes
    raises :class:`~crdtsync.errors.DotReuse` (two elements under one dot); a
    re-delivered identical delta is a no-op. Not detectable: a stale delta whose dot the
    other side has already seen removed looks exactly like an observed remove and is
    dropped.
    """

    __slots__ = ("_ctx", "_dots", "_elems", "_index")
    TYPE_TAG: ClassVar[str] = "orset"
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("add", "remove")
    NEEDS_TIME: ClassVar[bool] = False
    RECORDS_REMOVALS: ClassVar[bool] = True

    _dots: dict[bytes, frozenset[Dot]]
    _elems: dict[bytes, Element]
    _ctx: Context

    _index: dict[Dot, bytes] | None

    def __init__(self) -> None:
        self._dots = {}
        self._elems = {}
        self._ctx = Context()
        self._index = None

    @classmethod
    def _make(
        cls, dots: dict[bytes, frozenset[Dot]], elems: dict[bytes, Element], ctx: Context,
        index: dict[Dot, bytes] | None = None,
    ) -> ORSet:
        s = cls.__new__(cls)
        s._dots = dots
        s._elems = elems
        s._ctx = ctx
        s._index = index
        return s

    def _dot_index(self) -> dict[Dot, bytes]:
        """Which element holds each live dot (built on first use, then carried along)."""
        if self._index is None:
            self._index = {d: k for k, ds in self._dots.items() for d in ds}
        return self._index

    # -- mutators ------------------------------------------------------------------
    def add(self, element: Element, *, actor: str) -> ORSet:
        """Delta adding ``element`` (it supersedes every add of it this state has seen)."""
        actor_of(actor)
        e = _element(element, "ORSet element")
        k = _key_of(e)
        d = self._ctx.next_dot(actor)
        ctx = Context.from_dots([d, *self._dots.get(k, ())])
        return ORSet._make({k: frozenset((d,))}, {k: e}, ctx)

    def remove(self, element: Element, *, actor: str, observed: Iterable[Dot] | None = None) -> ORSet:
        """Delta removing the adds of ``element`` that were observed.

        Without ``observed``, that is every add this state holds (for an ORMap's value
        written through :meth:`ORMap.update`, the map also takes the adds of the element
        that the key's removal record still calls live: see :meth:`_recalls`). With ``observed``
        (the dots another replica reported, e.g. ``other.dots_of(element)``), exactly
        those adds are removed, even if this replica has not received them yet; adds
        concurrent with that read survive.
        """
        actor_of(actor)
        k = _key_of(_element(element, "ORSet element"))
        dots = self._dots.get(k, frozenset()) if observed is None else _observed(observed)
        if not dots:
            return ORSet()
        return ORSet._make({}, {}, Context.from_dots(dots))

    # -- queries -------------------------------------------------------------------
    def dots_of(self, element: Element) -> frozenset[Dot]:
        """The live dots (one per concurrent add) of ``element``; empty if absent."""
        return self._dots.get(_key_of(_element(element, "ORSet element")), frozenset())

    @property
    def context(self) -> Context:
        """Every dot this state has seen."""
        return self._ctx

    def __contains__(self, element: object) -> bool:
        try:
            k = _key_of(_element(element, "ORSet element"))
        except (TypeError, ValueError):
            return False
        return k in self._dots

    def __len__(self) -> int:
        return len(self._dots)

    def __iter__(self) -> Iterator[Element]:
        """Elements in canonical (encoding) order."""
        return iter([self._elems[k] for k in sorted(self._dots)])

    def value(self) -> ElementSet:
        """The elements, as a frozenset (see :class:`ElementSet`)."""
        return ElementSet(self._elems[k] for k in self._dots)

    # -- lattice -------------------------------------------------------------------
    def join(self, other: ORSet) -> ORSet:
        if other.__class__ is not ORSet:
            self._check_joinable(other)
        if other is self:
            return self
        # joining a small delta into a large state must not cost the size of the state
        if len(self._dots) > 32 and len(other._dots) + len(other._ctx) * 2 < len(self._dots):
            return self._join_small(other)
        if len(other._dots) > 32 and len(self._dots) + len(self._ctx) * 2 < len(other._dots):
            return other._join_small(self)
        return self._join_full(other)

    def _join_full(self, other: ORSet) -> ORSet:
        ctx = self._ctx.join(other._ctx)
        dots = join_dotmap(self._dots, self._ctx, other._dots, other._ctx)
        _no_moved_dot(self._dots, dots, other._dot_index, "orset")
        _no_moved_dot(other._dots, dots, self._dot_index, "orset")
        if ctx == self._ctx and dots == self._dots:
            return self
        if ctx == other._ctx and dots == other._dots:
            return other
        elems = {k: self._elems[k] if k in self._elems else other._elems[k] for k in dots}
        return ORSet._make(dots, elems, ctx)

    def _join_small(self, small: ORSet) -> ORSet:
        """Join a state with few dots and a small context into this (large) one.

        Only elements the small side names, or whose live dots its context covers, can
        change; the reverse dot index finds the latter without a scan.
        """
        cs, co = self._ctx, small._ctx
        index = self._dot_index()
        affected = set(small._dots)
        for d in co.dots():
            k = index.get(d)
            if k is not None:
                affected.add(k)
        dots = self._dots
        changed: dict[bytes, frozenset[Dot]] = {}
        small_index = small._dot_index()
        for k in affected:
            mine = dots.get(k, frozenset())
            theirs = small._dots.get(k, frozenset())
            joined = join_dotsets(mine, cs, theirs, co)
            _no_moved_dot({k: mine}, {k: joined}, lambda: small_index, "orset")
            _no_moved_dot({k: theirs}, {k: joined}, lambda: index, "orset")
            if joined != mine:
                changed[k] = joined
        ctx = cs.join(co)
        if not changed:
            return self if ctx == cs else ORSet._make(dots, self._elems, ctx, index)
        new_dots = dict(dots)
        new_elems = dict(self._elems)
        new_index = dict(index)
        for k, joined in changed.items():
            for d in dots.get(k, ()):
                new_index.pop(d, None)
            if joined:
                new_dots[k] = joined
                if k not in new_elems:
                    new_elems[k] = small._elems[k]
                for d in joined:
                    new_index[d] = k
            else:
                new_dots.pop(k, None)
                new_elems.pop(k, None)
        return ORSet._make(new_dots, new_elems, ctx, new_index)

    # -- removal records (for ORMap) --------------------------------------------------
    def _removals(self) -> Removals:
        """The context and the live dots, grouped by element (see :class:`Removals`)."""
        return Removals(self._ctx, frozenset(d for ds in self._dots.values() for d in ds), by=self._dots)

    def _forget(self, removals: Removals) -> ORSet:
        dots: dict[bytes, frozenset[Dot]] = {}
        changed = False
        for k, ds in self._dots.items():
            keep = frozenset(d for d in ds if not removals.removed(d))
            changed = changed or len(keep) != len(ds)
            if keep:
                dots[k] = keep
        if not changed:
            return self
        return ORSet._make(dots, {k: self._elems[k] for k in dots}, self._ctx)

    def _seen(self, record: Removals, actor: str) -> ORSet:
        joined = self._ctx.join(Context.from_vv({actor: record.ctx.max_seq(actor)}))
        return self if joined == self._ctx else ORSet._make(self._dots, self._elems, joined, self._index)

    @staticmethod
    def _recalls(op_name: str, args: tuple[Any, ...], record: Removals) -> frozenset[Dot]:
        """A remove of an element takes the element's adds ``record`` still calls live."""
        if op_name != "remove" or not args:
            return frozenset()
        return record.recalled(_key_of(_element(args[0], "ORSet element")))

    # -- encoding ------------------------------------------------------------------
    def _payload(self) -> Any:
        rows = [[_element_to_wire(self._elems[k]), dots_to_payload(self._dots[k])] for k in sorted(self._dots)]
        return [rows, self._ctx.to_payload()]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> ORSet:
        top = want_list(payload, "orset")
        if len(top) != 2:
            corrupt("orset", "expected [entries, context]")
        ctx = Context.from_payload(top[1], "orset.context")
        dots: dict[bytes, frozenset[Dot]] = {}
        elems: dict[bytes, Element] = {}
        last: bytes | None = None
        seen: set[Dot] = set()
        for row in want_list(top[0], "orset.entries"):
            pair = want_list(row, "orset.entry")
            if len(pair) != 2:
                corrupt("orset.entry", "expected [element, dots]")
            e = _element_from_wire(pair[0], "orset.element")
            k = _key_of(e)
            if last is not None and not last < k:
                corrupt("orset.entries", "elements are not in strictly ascending canonical order")
            last = k
            ds = dots_from_payload(pair[1], "orset.dots")
            check_dots_in_context(ds, ctx, "orset")
            _no_dot_twice(seen, ds, "orset")
            dots[k] = ds
            elems[k] = e
        return cls._make(dots, elems, ctx)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ORSet):
            return NotImplemented
        return self._dots == other._dots and self._ctx == other._ctx

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        return f"ORSet({{{', '.join(repr(e) for e in self)}}})" if self._dots else "ORSet()"


# -- ORMap --------------------------------------------------------------------------

_DEPTH = threading.local()
_MAX_MAP_DEPTH = 16


class _Entry:
    """One update's nested state and the incarnation (nested actor) its writer used."""

    __slots__ = ("inc", "state")

    def __init__(self, inc: int, state: CRDT[Any]) -> None:
        self.inc = inc
        self.state = state

    @staticmethod
    def merge(dot: Dot, mine: _Entry, theirs: _Entry) -> _Entry:
        """The entry of a dot both sides hold: one write, possibly read two ways.

        A causal nested state may reach a replica both as written and as read by a later
        writer, without what the key's removal record says was removed; their join is the
        latter (and the nested join detects a nested dot used twice). Any other
        difference means two writes under one dot (:class:`~crdtsync.errors.DotReuse`).
        """
        if theirs is mine or (theirs.inc == mine.inc and theirs.state == mine.state):
            return mine
        if theirs.inc != mine.inc or not mine.state.RECORDS_REMOVALS:
            raise reused("ormap", dot, "two different nested states")
        return _Entry(mine.inc, mine.state.join(theirs.state))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Entry):
            return NotImplemented
        return self.inc == other.inc and self.state == other.state

    def __hash__(self) -> int:  # pragma: no cover - entries are never hashed
        return hash((self.inc, self.state))


def _nested_actor(actor: str, inc: int) -> str:
    return f"{actor}#{inc}"


ValueType = Callable[[], CRDT[Any]]


def _joined_resets(a: dict[bytes, Removals], b: dict[bytes, Removals]) -> dict[bytes, Removals]:
    """The per-key join of two maps' removal records (``a`` itself when ``b`` adds nothing)."""
    out = a
    for k, r in b.items():
        mine = a.get(k)
        joined = r if mine is None else mine.join(r)
        if joined is not mine:
            if out is a:
                out = dict(a)
            out[k] = joined
    return out


def _record_removed(resets: dict[bytes, Removals], original: dict[bytes, Removals], k: bytes,
                    before: Mapping[Dot, _Entry] | None, after: Mapping[Dot, _Entry]) -> dict[bytes, Removals]:
    """Add to the record of key ``k`` what every entry of ``before`` missing from ``after``
    had seen removed (copying ``resets`` first if it is still ``original``)."""
    if not before:
        return resets
    for d, e in before.items():
        if d in after:
            continue
        r = e.state._removals()
        assert r is not None
        mine = resets.get(k)
        joined = r if mine is None else mine.join(r)
        if joined is not mine:
            if resets is original:
                resets = dict(original)
            resets[k] = joined
    return resets


def _key_to_wire(k: bytes) -> Any:
    return unpackb(k, what="ormap key")


def _key_from_wire(x: Any) -> bytes:
    return _key_of(_element_from_wire(x, "ormap.removed key"))


@register
class ORMap(CRDT[dict[Element, Any]]):
    """Keys are add-wins: an update concurrent with a remove of its key survives, and an
    update after a remove starts from the empty nested value.

    Every update writes a fresh dot holding the key's *whole* nested state (the join of
    the key's live states with the nested operation applied) and supersedes only its
    writer's own earlier dot on that key; a remove supersedes every dot it observed.
    Cost: per key, one full nested state per replica that wrote the key since the last
    remove that observed its write, so each update delta carries the key's whole nested
    value (fine for small nested values; use top-level entity keys for big ones).

    Removes are monotone. When the value type records removals (ORSet, the flags,
    MVRegister, ORMap: the causal types), the map keeps per key a *removal record*
    (:class:`~crdtsync.types._dots.Removals`): what the nested states of the key's
    superseded dots had seen removed, i.e. their contexts and the dots live in them. A
    key's value is the join of its live states without anything its record says was
    removed, so a stale copy carried by a concurrent update cannot bring back what an
    earlier remove took, even after the dot that knew about that remove is gone (issue 8,
    defect 8). A record holds one context (a version-vector entry per writer of the key)
    and the dots that were live when the superseded states died, each under the element
    (ORSet) or key (ORMap) holding it; a removed key keeps it. A remove inside the key's
    value made through :meth:`update` also takes the dots of its element or inner key
    that the record still calls live (the update delta carries a record saying they are
    removed): a remove of the key took those adds out of the writer's state, but the
    writer has seen them, so a stale copy carried by an update concurrent with the key
    remove does not outlive the later remove.

    Nested identities: a writer that finds its own last write on the key removed starts
    a fresh nested identity, ``"<actor>#<seq>"``, for a value type without records (a
    counter), so that the nested state never reuses its retired counters; retired
    identities vanish with the states that hold them at the next remove that observes
    them. For a causal value type each writer keeps one identity, ``"<actor>#0"``: the
    key's record remembers every dot it wrote there, so its next write continues after
    them (and its own earlier writes it no longer holds count as removed).

    Payload (version 3): ``[value_type, entries, context rows, records]``.
    ``value_type`` is the empty nested state as ``[tag, version, payload]``; ``entries``
    is ``[[key, [[replica, seq, inc, nested payload], ...]], ...]`` sorted by the
    canonical bytes of the key, dots sorted and non-empty; ``inc`` (0 <= inc <= seq) is
    the seq that names the writer's nested identity (0: the writer's one identity for a
    causal value type); nested payloads use the version given in ``value_type``. Every
    dot lies inside the context and belongs to one key only. ``records`` is
    ``[[key, record], ...]`` sorted likewise, each record ``[context rows, loose dots,
    [[nested key, record], ...], [[element or nested key, [[replica, seq], ...]], ...]]``
    (see :class:`~crdtsync.types._dots.Removals`: the live dots inside the context, each
    listed once, grouped by the element or nested key holding them, loose for flags and
    registers; the nested records for a value type that is itself a map); always empty
    for a value type without records. Version 2 (still decoded, to the same value) had
    records of three items, ``[context rows, live dots, children]``, with no groups: a
    remove made from such a record takes only what the state holds (the behaviour of
    version 2). Version 1 (still decoded) had no ``records`` and ``inc >= 1``.

    Same-dot rule: a mutator takes the writer's next dot from the state it is called on,
    so call it on the writer's current state (join each delta before making the next
    one; the Replica does). Joining two states that use one dot for two different writes
    raises :class:`~crdtsync.errors.DotReuse` (one dot under two keys, with two nested
    states, or a nested dot reused inside a causal value); a re-delivered identical
    delta is a no-op. Not detectable: a stale delta whose dot the other side has already
    seen removed looks exactly like an observed remove and is dropped.
    """

    __slots__ = ("_cache", "_causal", "_ctx", "_empty", "_entries", "_index", "_keys", "_resets")
    TYPE_TAG: ClassVar[str] = "ormap"
    VERSION: ClassVar[int] = 3
    MUTATORS: ClassVar[tuple[str, ...]] = ("update", "remove")
    NEEDS_TIME: ClassVar[bool] = True
    RECORDS_REMOVALS: ClassVar[bool] = True

    _entries: dict[bytes, dict[Dot, _Entry]]
    _keys: dict[bytes, Element]
    _ctx: Context
    _empty: CRDT[Any]
    _cache: dict[bytes, CRDT[Any]]
    _resets: dict[bytes, Removals]
    _causal: bool

    def __init__(self, value_type: ValueType = PNCounter) -> None:
        """An empty map whose values are ``value_type()`` states.

        ``value_type`` is a CRDT class, or a zero-argument factory returning an empty
        state for parametrized nested types, e.g.
        ``ORMap(value_type=lambda: ORMap(value_type=GCounter))``.
        """
        if not callable(value_type):
            raise TypeError(f"value_type must be a CRDT class or a zero-argument factory, got {value_type!r}")
        empty = value_type()
        if not isinstance(empty, CRDT):
            raise TypeError(f"value_type() must return a CRDT state, got {type(empty).__name__}")
        self._entries = {}
        self._keys = {}
        self._ctx = Context()
        self._empty = empty
        self._cache = {}
        self._index: dict[Dot, bytes] | None = None
        self._resets = {}
        self._causal = empty.RECORDS_REMOVALS

    @classmethod
    def _make(
        cls,
        empty: CRDT[Any],
        entries: dict[bytes, dict[Dot, _Entry]],
        keys: dict[bytes, Element],
        ctx: Context,
        index: dict[Dot, bytes] | None = None,
        resets: dict[bytes, Removals] | None = None,
        causal: bool | None = None,
    ) -> ORMap:
        m = cls.__new__(cls)
        m._empty = empty
        m._entries = entries
        m._keys = keys
        m._ctx = ctx
        m._cache = {}
        m._index = index
        m._resets = resets if resets is not None else {}
        m._causal = empty.RECORDS_REMOVALS if causal is None else causal
        return m

    def _like(self, entries: dict[bytes, dict[Dot, _Entry]], keys: dict[bytes, Element], ctx: Context,
              index: dict[Dot, bytes] | None = None, resets: dict[bytes, Removals] | None = None) -> ORMap:
        """A map of this one's value type (and removal records unless given)."""
        return ORMap._make(self._empty, entries, keys, ctx, index,
                           self._resets if resets is None else resets, self._causal)

    def _dot_index(self) -> dict[Dot, bytes]:
        """Which key holds each live dot (built on first use, then carried along)."""
        if self._index is None:
            self._index = {d: k for k, fun in self._entries.items() for d in fun}
        return self._index

    def _join_small(self, small: ORMap) -> ORMap:
        """Join a map with few entries and a small context into this (large) one.

        Only keys the small side names, or whose live dots its context covers, can change;
        the reverse dot index finds the latter without visiting every key.
        """
        sc, oc = self._ctx, small._ctx
        index = self._dot_index()
        affected = set(small._entries)
        for d in oc.dots():
            k = index.get(d)
            if k is not None:
                affected.add(k)
        entries = dict(self._entries)
        keys = dict(self._keys)
        new_index = dict(index)
        resets = _joined_resets(self._resets, small._resets) if self._causal else self._resets
        for k in affected:
            a = self._entries.get(k)
            b = small._entries.get(k)
            if a is not None and b is not None:
                fun = join_dotfun(a, sc, b, oc, _Entry.merge)
            elif a is not None:
                fun = {d: e for d, e in a.items() if d not in oc}
            else:
                assert b is not None
                fun = {d: e for d, e in b.items() if d not in sc}
            if a is not None:
                _no_moved_dot({k: a}, {k: fun}, small._dot_index, "ormap")
            if b is not None:
                _no_moved_dot({k: b}, {k: fun}, lambda: index, "ormap")
            if self._causal:
                resets = _record_removed(resets, self._resets, k, a, fun)
                resets = _record_removed(resets, self._resets, k, b, fun)
            for d in a or ():
                new_index.pop(d, None)
            if fun:
                entries[k] = fun
                if k not in keys:
                    keys[k] = small._keys[k]
                for d in fun:
                    new_index[d] = k
            else:
                entries.pop(k, None)
                keys.pop(k, None)
        return self._checked(self._like(entries, keys, sc.join(oc), new_index, resets), affected, small)

    def params(self) -> Mapping[str, Any]:
        e = self._empty
        return {"value_type": f"{e.TYPE_TAG}{dict(e.params())!r}"}

    @property
    def value_type(self) -> type[CRDT[Any]]:
        return type(self._empty)

    # -- mutators ------------------------------------------------------------------
    def update(self, key: Element, op_name: str, *args: Any, actor: str, ts: int | None = None) -> ORMap:
        """Delta applying the nested mutator ``op_name(*args)`` to the value at ``key``.

        ``ts`` (an HLC timestamp) is passed on only if the nested type needs time; when
        it does and ``ts`` is None, the process-wide HLC stamps the write.
        """
        actor_of(actor)
        key = _element(key, "ORMap key")
        k = _key_of(key)
        nested_cls = type(self._empty)
        if not isinstance(op_name, str) or op_name not in nested_cls.MUTATORS:
            raise ValueError(
                f"{op_name!r} is not a mutator of {nested_cls.__name__}; "
                f"use one of {', '.join(nested_cls.MUTATORS)}"
            )
        if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool) or ts < 0):
            raise TypeError(f"ts must be a non-negative HLC timestamp int, got {ts!r}")
        d = self._ctx.next_dot(actor)
        live = self._entries.get(k, {})
        own = sorted(dot for dot in live if dot.replica == actor)
        # Reuse the nested identity while our own last write on this key is alive: then
        # the current nested state holds all of that identity's history. Otherwise a
        # value type without removal records (a counter) takes a fresh identity: a
        # concurrent update elsewhere may still carry the old one, and writing under the
        # old name again would collide with that copy. A causal value type keeps one
        # identity per writer ("<actor>#0"): the key's removal record holds every dot it
        # ever wrote there, and the write continues after them.
        if own:
            inc = live[own[-1]].inc
        else:
            inc = 0 if self._causal else d.seq
        current = self._get(k)
        nested = _nested_actor(actor, inc)
        record = self._resets.get(k)
        if record is not None:
            current = current._seen(record, nested)
        fn = getattr(current, op_name)
        if nested_cls.NEEDS_TIME:
            nd = fn(*args, actor=nested, ts=ts if ts is not None else default_hlc().now())
        else:
            nd = fn(*args, actor=nested)
        new = current.join(nd)
        ctx = Context.from_dots([d, *own])
        # A remove inside the value also takes what the key's removal record still calls
        # live there (the writer saw it before a remove of the key took it out of its
        # state): the delta carries that as a record saying those dots are removed. In the
        # record, whose context already holds them, they leave no gap; in the nested
        # state's context they would (see docs/types/collections.md).
        taken = current._recalls(op_name, args, record) if record is not None and record.by else frozenset()
        resets = {k: Removals(Context.from_dots(taken), frozenset())} if taken else {}
        return self._like({k: {d: _Entry(inc, new)}}, {k: self._keys.get(k, key)}, ctx, resets=resets)

    def remove(
        self, key: Element, *, actor: str, observed: Iterable[Dot] | None = None, ts: int | None = None
    ) -> ORMap:
        """Delta removing the updates of ``key`` that were observed (its value resets).

        ``observed`` works as in :meth:`ORSet.remove` (dots from ``other.dots_of(key)``;
        for a map nested in another map's key, the outer map also takes the updates of
        ``key`` that the outer key's removal record still calls live: see
        :meth:`_recalls`); ``ts`` is accepted for uniformity and unused.
        """
        actor_of(actor)
        k = _key_of(_element(key, "ORMap key"))
        dots = frozenset(self._entries.get(k, ())) if observed is None else _observed(observed)
        return self._like({}, {}, Context.from_dots(dots) if dots else Context(), resets={})

    # -- queries -------------------------------------------------------------------
    def get(self, key: Element) -> CRDT[Any]:
        """The nested state at ``key`` (the empty nested state if absent)."""
        return self._get(_key_of(_element(key, "ORMap key")))

    def _get(self, k: bytes) -> CRDT[Any]:
        cached = self._cache.get(k)
        if cached is not None:
            return cached
        live = self._entries.get(k)
        if not live:
            return self._empty
        it = iter(live.values())
        out = next(it).state
        for e in it:
            out = out.join(e.state)
        record = self._resets.get(k)
        if record is not None:
            out = out._forget(record)
        self._cache[k] = out
        return out

    def dots_of(self, key: Element) -> frozenset[Dot]:
        """The live dots of ``key`` (one per writer since its last observed remove)."""
        return frozenset(self._entries.get(_key_of(_element(key, "ORMap key")), ()))

    @property
    def context(self) -> Context:
        return self._ctx

    def keys(self) -> ElementSet:
        """The present keys, as a frozenset."""
        return ElementSet(self._keys[k] for k in self._entries)

    def __contains__(self, key: object) -> bool:
        try:
            k = _key_of(_element(key, "ORMap key"))
        except (TypeError, ValueError):
            return False
        return k in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Element]:
        """Keys in canonical (encoding) order."""
        return iter([self._keys[k] for k in sorted(self._entries)])

    def value(self) -> dict[Element, Any]:
        return {self._keys[k]: self._get(k).value() for k in sorted(self._entries)}

    # -- lattice -------------------------------------------------------------------
    def join(self, other: ORMap) -> ORMap:
        self._check_joinable(other)
        if other is self:
            return self
        # joining a small delta into a large map must not cost the size of the map
        if len(self._entries) > 16 and len(other._entries) + len(other._ctx) * 2 < len(self._entries):
            return self._join_small(other)
        if len(other._entries) > 16 and len(self._entries) + len(self._ctx) * 2 < len(other._entries):
            return other._join_small(self)
        return self._join_full(other)

    def _join_full(self, other: ORMap) -> ORMap:
        ctx = self._ctx.join(other._ctx)
        oc, sc = other._ctx, self._ctx
        causal = self._causal
        resets = _joined_resets(self._resets, other._resets) if causal else self._resets
        entries: dict[bytes, dict[Dot, _Entry]] = {}
        for k, a in self._entries.items():
            b = other._entries.get(k)
            if b is not None:
                fun = join_dotfun(a, sc, b, oc, _Entry.merge)
            elif any(d in oc for d in a):
                fun = {d: e for d, e in a.items() if d not in oc}
            else:
                fun = a
            if fun:
                entries[k] = fun
            if causal:
                resets = _record_removed(resets, self._resets, k, a, fun)
                resets = _record_removed(resets, self._resets, k, b, fun)
        for k, b in other._entries.items():
            if k not in self._entries:
                fun = {d: e for d, e in b.items() if d not in sc} if any(d in sc for d in b) else b
                if fun:
                    entries[k] = fun
                if causal:
                    resets = _record_removed(resets, self._resets, k, b, fun)
        _no_moved_dot(self._entries, entries, other._dot_index, "ormap")
        _no_moved_dot(other._entries, entries, self._dot_index, "ormap")
        if ctx == sc and entries == self._entries and resets == self._resets:
            return self
        if ctx == oc and entries == other._entries and resets == other._resets:
            return other
        keys = {k: self._keys[k] if k in self._keys else other._keys[k] for k in entries}
        return self._checked(self._like(entries, keys, ctx, resets=resets), entries, other)

    def _checked(self, joined: ORMap, keys: Iterable[bytes], other: ORMap) -> ORMap:
        """``joined``, after reading (and caching) the value of every key whose live
        states now come from both sides: for causal values that joins their nested
        states, which raises :class:`~crdtsync.errors.DotReuse` if two of them use one
        nested dot for two writes (forged or misused input), at the join rather than at a
        later read."""
        if self._causal:
            for k in keys:
                fun = joined._entries.get(k)
                if fun is None or len(fun) < 2:
                    continue
                mine, theirs = self._entries.get(k, {}), other._entries.get(k, {})
                if fun.keys() != mine.keys() and fun.keys() != theirs.keys():
                    joined._get(k)
        return joined

    # -- removal records (when nested in another ORMap) -------------------------------
    def _removals(self) -> Removals:
        children: dict[bytes, Removals] = {}
        if self._causal:
            for k in self._entries.keys() | self._resets.keys():
                record = self._resets.get(k)
                for e in self._entries.get(k, {}).values():
                    r = e.state._removals()
                    assert r is not None
                    record = r if record is None else record.join(r)
                assert record is not None
                children[k] = record
        by = {k: frozenset(fun) for k, fun in self._entries.items()}
        return Removals(self._ctx, frozenset(self._dot_index()), children, by)

    def _forget(self, removals: Removals) -> ORMap:
        entries: dict[bytes, dict[Dot, _Entry]] = {}
        changed = False
        for k, fun in self._entries.items():
            child = removals.children.get(k)
            kept: dict[Dot, _Entry] = {}
            for d, e in fun.items():
                if removals.removed(d):
                    changed = True
                    continue
                if child is not None:
                    state = e.state._forget(child)
                    if state is not e.state:
                        e = _Entry(e.inc, state)
                        changed = True
                kept[d] = e
            if kept:
                entries[k] = kept
        if not changed:
            return self
        return self._like(entries, {k: self._keys[k] for k in entries}, self._ctx)

    def _seen(self, record: Removals, actor: str) -> ORMap:
        joined = self._ctx.join(Context.from_vv({actor: record.ctx.max_seq(actor)}))
        resets = _joined_resets(self._resets, dict(record.children)) if self._causal else self._resets
        if joined == self._ctx and resets is self._resets:
            return self
        return self._like(self._entries, self._keys, joined, self._index, resets)

    @staticmethod
    def _recalls(op_name: str, args: tuple[Any, ...], record: Removals) -> frozenset[Dot]:
        """A remove of a key takes the key's updates ``record`` still calls live."""
        if op_name != "remove" or not args:
            return frozenset()
        return record.recalled(_key_of(_element(args[0], "ORMap key")))

    # -- encoding ------------------------------------------------------------------
    def _payload(self) -> Any:
        rows = []
        for k in sorted(self._entries):
            fun = self._entries[k]
            dots = [[d.replica, d.seq, fun[d].inc, fun[d].state._payload()] for d in sorted(fun)]
            rows.append([_element_to_wire(self._keys[k]), dots])
        e = self._empty
        resets = [[_key_to_wire(k), self._resets[k].to_payload(_key_to_wire)] for k in sorted(self._resets)]
        return [[e.TYPE_TAG, e.VERSION, e._payload()], rows, self._ctx.to_payload(), resets]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> ORMap:
        depth = getattr(_DEPTH, "n", 0)
        if depth >= _MAX_MAP_DEPTH:
            corrupt("ormap", f"maps nest deeper than {_MAX_MAP_DEPTH} levels")
        _DEPTH.n = depth + 1
        try:
            return cls._decode(payload, version)
        finally:
            _DEPTH.n = depth

    @classmethod
    def _decode(cls, payload: Any, version: int) -> ORMap:
        top = want_list(payload, "ormap")
        if version == 1 and len(top) != 3:
            corrupt("ormap", "expected [value_type, entries, context]")
        if version >= 2 and len(top) != 4:
            corrupt("ormap", "expected [value_type, entries, context, removal records]")
        vt = want_list(top[0], "ormap.value_type")
        if len(vt) != 3:
            corrupt("ormap.value_type", "expected [tag, version, payload]")
        nested_cls = type_for_tag(want_str(vt[0], "ormap.value_type"))
        nested_version, empty_payload = check_envelope(vt, nested_cls.TYPE_TAG, nested_cls.VERSION)
        empty = nested_cls._decode_payload(empty_payload, nested_version)
        params = empty.params()
        ctx = Context.from_payload(top[2], "ormap.context")
        entries: dict[bytes, dict[Dot, _Entry]] = {}
        keys: dict[bytes, Element] = {}
        last: bytes | None = None
        seen: set[Dot] = set()
        for row in want_list(top[1], "ormap.entries"):
            pair = want_list(row, "ormap.entry")
            if len(pair) != 2:
                corrupt("ormap.entry", "expected [key, dots]")
            key = _element_from_wire(pair[0], "ormap.key")
            k = _key_of(key)
            if last is not None and not last < k:
                corrupt("ormap.entries", "keys are not in strictly ascending canonical order")
            last = k
            fun: dict[Dot, _Entry] = {}
            prev: Dot | None = None
            for drow in want_list(pair[1], "ormap.dots"):
                cell = want_list(drow, "ormap.dot")
                if len(cell) != 4:
                    corrupt("ormap.dot", "expected [replica, seq, inc, nested payload]")
                r = want_str(cell[0], "ormap.dot")
                if not r:
                    corrupt("ormap.dot", "empty replica id")
                seq = want_int(cell[1], "ormap.dot", minimum=1)
                inc = want_int(cell[2], "ormap.inc", minimum=1 if version == 1 else 0)
                if inc > seq:
                    corrupt("ormap.inc", "the nested identity is named after a later write")
                d = Dot(r, seq)
                if prev is not None and not prev < d:
                    corrupt("ormap.dots", "dots are not sorted and unique")
                prev = d
                state = nested_cls._decode_payload(cell[3], nested_version)
                if state.params() != params:
                    corrupt("ormap", "a nested state's parameters differ from the map's value type")
                fun[d] = _Entry(inc, state)
            if not fun:
                corrupt("ormap.dots", "a key without live dots")
            check_dots_in_context(fun, ctx, "ormap")
            _no_dot_twice(seen, fun, "ormap")
            entries[k] = fun
            keys[k] = key
        causal = empty.RECORDS_REMOVALS
        resets: dict[bytes, Removals] = {}
        last = None
        for row in want_list(top[3], "ormap.removed") if version >= 2 else []:
            pair = want_list(row, "ormap.removed")
            if len(pair) != 2:
                corrupt("ormap.removed", "expected [key, record]")
            if not causal:
                corrupt("ormap.removed", f"a map of {nested_cls.__name__} keeps no removal records")
            k = _key_from_wire(pair[0])
            if last is not None and not last < k:
                corrupt("ormap.removed", "keys are not in strictly ascending canonical order")
            last = k
            resets[k] = Removals.from_payload(pair[1], "ormap.removed", _key_from_wire, version)
        m = cls._make(empty, entries, keys, ctx, resets=resets, causal=causal)
        if causal:  # a key's value joins its nested states: they must not reuse a dot
            for k in entries:
                try:
                    m._get(k)
                except DotReuse as exc:
                    corrupt("ormap", f"the nested states of one key disagree: {exc}")
        return m

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ORMap):
            return NotImplemented
        return (
            self._entries == other._entries
            and self._ctx == other._ctx
            and self._empty == other._empty
            and self._resets == other._resets
        )

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        return f"ORMap[{type(self._empty).__name__}]({self.value()!r})"
