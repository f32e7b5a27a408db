"""Feature aggregates: windowed counts and sums, means and distinct counts.

These are the aggregates ML features are built from ("clicks in the last hour", "mean
basket value", "distinct devices this week") as delta-state CRDTs, so every replica can
record observations locally and still agree on the aggregate once it has seen the same
events.

* :class:`WindowedCounter` and :class:`WindowedSum` keep one time bucket per
  ``bucket_ms`` of event time (the wall part of the writer's HLC timestamp) and retain the
  ``buckets`` newest buckets; older buckets are dropped whole.
* :class:`Mean` keeps a (count, sum) per actor.
* :class:`HyperLogLog` keeps ``2**p`` registers (a distinct-count sketch).

Wire formats (the ``payload`` inside the ``[tag, version, payload]`` envelope of
:mod:`crdtsync.types._base`), all version 1:

* ``wcounter``: ``[bucket_ms, buckets, newest, [[bucket, [[actor, count], ...]], ...]]``
* ``wsum``: ``[bucket_ms, buckets, newest, [[bucket, [[actor, updates, sum], ...]], ...]]``

  ``bucket`` is a bucket *index* (start ms // bucket_ms); ``newest`` is the newest bucket
  index the state has seen, or nil for the empty state. Buckets ascend, every one lies in
  the window ``newest - buckets < bucket <= newest``, none is empty; actors ascend within a
  bucket; counts and update counts are >= 1; sums are finite ints (64-bit) or floats, never
  ``-0.0``.
* ``mean``: ``[[actor, count, sum], ...]`` sorted by actor, same rules for count and sum.
* ``hll``: ``[p, registers]`` where ``registers`` is either a sparse list
  ``[[index, rank], ...]`` (ascending index, rank >= 1) when fewer than ``2**p // 8``
  registers are non-zero, or exactly ``2**p`` bytes (one rank per register) otherwise.
  The form is chosen by that rule alone, so one set of registers has one encoding.

A decoder rejects anything else (including a non-canonical form) with
:class:`~crdtsync.errors.CorruptRecord`.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .._encoding import corrupt, value_key
from ..clock import default_hlc, hlc_wall_ms
from ._base import CRDT, actor_of, check_sorted_unique, register, want_int, want_list, want_str

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["HyperLogLog", "Mean", "WindowedCounter", "WindowedSum"]

Number = int | float

# Sums and counts travel as signed 64-bit ints (msgpack and Avro ``long``).
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


# -- shared validation and arithmetic ----------------------------------------------


def _check_ts(ts: Any) -> int:
    if ts is None:
        return default_hlc().now()
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise TypeError(f"ts must be an HLC timestamp int (crdtsync.clock.make_hlc), got {type(ts).__name__}")
    if ts < 0:
        raise ValueError(f"ts must be >= 0, got {ts}")
    return ts


def _check_amount(x: Any, what: str) -> Number:
    """A finite int or float, normalized (plain float, no ``-0.0``)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(
            f"{what} must be an int or float, got {type(x).__name__}; convert numpy scalars with .item()"
        )
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{what} must be finite, got {x!r}; filter NaN and inf out before recording")
        return float(x) + 0.0
    if not _I64_MIN <= x <= _I64_MAX:
        raise ValueError(f"{what} {x} does not fit in 64 bits; record it as a float")
    return int(x)


def _add(a: Number, b: Number) -> Number:
    """``a + b`` for a running sum; refuses to leave what the wire format can carry."""
    s = a + b
    if isinstance(s, float):
        if not math.isfinite(s):
            raise ValueError("the running sum would overflow to infinity; rescale the amounts")
        return s + 0.0  # -0.0 -> 0.0, so equal sums encode equally
    if not _I64_MIN <= s <= _I64_MAX:
        raise ValueError("the running sum would not fit in 64 bits; record the amounts as floats")
    return s


def _total(xs: list[Number]) -> Number:
    """Order-independent total: exact for ints, correctly rounded (fsum) once a float is in."""
    if all(isinstance(x, int) for x in xs):
        return sum(xs)
    try:
        return math.fsum(xs) + 0.0
    except OverflowError:  # the exact total is beyond float range: +-inf, in a fixed order
        return sum(sorted(xs), 0.0)


def _sum_key(entry: tuple[int, Number]) -> tuple[int, Number, bool]:
    """Total order on (updates, sum) entries; join keeps the larger.

    An actor's own entry only grows in its update count, so the larger count is the later
    entry; the rest of the key only makes the join deterministic on data no honest
    writer produces (equal counts, different sums).
    """
    return (entry[0], entry[1], isinstance(entry[1], float))


def _want_sum(x: Any, what: str) -> Number:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        corrupt(what, f"sum is not a number ({type(x).__name__})")
    if isinstance(x, float):
        if not math.isfinite(x):
            corrupt(what, "sum is not finite")
        if x == 0.0 and math.copysign(1.0, x) < 0:
            corrupt(what, "sum is -0.0 (not canonical)")
    elif not _I64_MIN <= x <= _I64_MAX:
        corrupt(what, "sum does not fit in 64 bits")
    return x


def _want_actor(x: Any, what: str) -> str:
    if not want_str(x, what):
        corrupt(what, "empty actor id")
    return str(x)


def _check_param(x: Any, name: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if not 1 <= x <= _I64_MAX:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return x


# -- windowed aggregates ----------------------------------------------------------

E = TypeVar("E")  # what one actor holds in one bucket
V = TypeVar("V")


class _Windowed(CRDT[V], Generic[E, V]):
    """Time buckets of per-actor grow-only entries, the newest ``buckets`` of them retained.

    Subclasses say what an entry is (``_wins``, ``_amount``, ``_row``, ``_from_row``).
    """

    __slots__ = ("_bucket_ms", "_buckets", "_newest", "_retain")
    NEEDS_TIME: ClassVar[bool] = True
    #: number of payload columns of an entry after the actor
    _WIDTH: ClassVar[int]

    _bucket_ms: int
    _retain: int
    _newest: int | None
    _buckets: dict[int, dict[str, E]]

    def __init__(self, *, bucket_ms: int = 60_000, buckets: int = 60) -> None:
        self._bucket_ms = _check_param(bucket_ms, "bucket_ms")
        self._retain = _check_param(buckets, "buckets")
        self._newest = None
        self._buckets = {}

    @classmethod
    def _make(cls, bucket_ms: int, retain: int, newest: int | None,
              buckets: dict[int, dict[str, Any]]) -> Self:
        # Callers guarantee the invariants: every bucket non-empty and inside the window.
        s = cls.__new__(cls)
        s._bucket_ms = bucket_ms
        s._retain = retain
        s._newest = newest
        s._buckets = buckets
        return s

    def _with(self, newest: int | None, buckets: dict[int, dict[str, Any]]) -> Self:
        return type(self)._make(self._bucket_ms, self._retain, newest, buckets)

    # -- entry hooks -----------------------------------------------------------
    @staticmethod
    @abc.abstractmethod
    def _wins(new: E, old: E) -> bool:
        """True if ``new`` replaces ``old`` in a join (it is strictly later)."""

    @staticmethod
    @abc.abstractmethod
    def _amount(entry: E) -> Number:
        """What the entry adds to a total."""

    @staticmethod
    @abc.abstractmethod
    def _row(entry: E) -> list[Any]:
        """Payload columns after the actor."""

    @staticmethod
    @abc.abstractmethod
    def _from_row(cols: list[Any], what: str) -> E:
        """Validate and rebuild an entry from its payload columns."""

    @staticmethod
    @abc.abstractmethod
    def _totalize(amounts: list[Number]) -> V:
        """The total of some amounts, as this type's value."""

    # -- queries ---------------------------------------------------------------
    def params(self) -> Mapping[str, Any]:
        return {"bucket_ms": self._bucket_ms, "buckets": self._retain}

    def _bucket_of(self, ts: int) -> int:
        return hlc_wall_ms(ts) // self._bucket_ms

    def _expired(self, bucket: int) -> bool:
        return self._newest is not None and bucket <= self._newest - self._retain

    def accepts(self, ts: int) -> bool:
        """Whether an update stamped ``ts`` would still count here (its bucket is retained).

        Late updates are dropped (see the class docstring); call this first to count them.
        """
        return not self._expired(self._bucket_of(_check_ts(ts)))

    @property
    def window_start_ms(self) -> int | None:
        """Start (wall ms) of the oldest bucket the window still covers; None when empty."""
        if self._newest is None:
            return None
        return max(0, (self._newest - self._retain + 1) * self._bucket_ms)

    def _bucket_total(self, entries: Mapping[str, E]) -> list[Number]:
        return [self._amount(e) for e in entries.values()]

    def value(self) -> V:
        """The total over every retained bucket."""
        return self._totalize([a for es in self._buckets.values() for a in self._bucket_total(es)])

    def total_since(self, wall_ms: int) -> V:
        """The total over the retained buckets that start at or after ``wall_ms``.

        Use it to read "the last N minutes" relative to the reader's clock:
        ``total_since(now_ms - 10 * 60_000)``.
        """
        if not isinstance(wall_ms, int) or isinstance(wall_ms, bool):
            raise TypeError(f"wall_ms must be an int (milliseconds), got {type(wall_ms).__name__}")
        return self._totalize([
            a for b, es in self._buckets.items() if b * self._bucket_ms >= wall_ms
            for a in self._bucket_total(es)
        ])

    def buckets(self) -> Mapping[int, V]:
        """Retained buckets, oldest first: bucket start (wall ms) -> that bucket's total."""
        return MappingProxyType({
            b * self._bucket_ms: self._totalize(self._bucket_total(self._buckets[b]))
            for b in sorted(self._buckets)
        })

    # -- mutation --------------------------------------------------------------
    def _update(self, actor: str, ts: int | None, step: Callable[[E | None], E | None]) -> Self:
        """Delta replacing ``actor``'s entry in the bucket of ``ts`` by ``step(old)``."""
        actor_of(actor)
        bucket = self._bucket_of(_check_ts(ts))
        if self._expired(bucket):
            # Late data: the bucket was dropped here, and is dropped at every replica once it
            # has seen what this state has seen (the window came from there). Return the
            # empty delta so the late amount is never replicated, not even transiently.
            return self._with(None, {})
        entry = step(self._buckets.get(bucket, {}).get(actor))
        return self._with(bucket, {} if entry is None else {bucket: {actor: entry}})

    def join(self, other: Self) -> Self:
        self._check_joinable(other)
        if other._newest is None:
            return self
        if self._newest is None:
            return other
        newest = max(self._newest, other._newest)
        floor = newest - self._retain
        # join = prune(max newest, union with per-actor max). It is associative because
        # pruning commutes with the union (prune(t, a | b) == prune(t, a) | prune(t, b))
        # and prunes compose to the largest threshold (prune(t, prune(u, x)) == prune(max(t,
        # u), x)), and the threshold only depends on the max newest, itself associative.
        # So (a ⊔ b) ⊔ c and a ⊔ (b ⊔ c) are both prune(max newest, a | b | c). Dropping
        # whole buckets by index (never by wall clock at join time) is what makes this hold.
        changed = newest != self._newest
        merged: dict[int, dict[str, E]] = {}
        for b, entries in self._buckets.items():
            if b > floor:
                merged[b] = entries
            else:
                changed = True
        for b, entries in other._buckets.items():
            if b <= floor:
                continue
            mine = merged.get(b)
            if mine is None:
                merged[b] = entries
                changed = True
                continue
            out: dict[str, E] | None = None
            for actor, e in entries.items():
                old = mine.get(actor)
                if old is None or self._wins(e, old):
                    if out is None:
                        out = dict(mine)
                    out[actor] = e
            if out is not None:
                merged[b] = out
                changed = True
        if not changed:
            return self
        return self._with(newest, merged)

    # -- encoding --------------------------------------------------------------
    def _payload(self) -> Any:
        return [
            self._bucket_ms,
            self._retain,
            self._newest,
            [
                [b, [[a, *self._row(es[a])] for a in sorted(es)]]
                for b, es in sorted(self._buckets.items())
            ],
        ]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> Self:
        tag = cls.TYPE_TAG
        top = want_list(payload, tag)
        if len(top) != 4:
            raise ValueError("expected [bucket_ms, buckets, newest, rows]")
        bucket_ms = want_int(top[0], f"{tag}.bucket_ms", minimum=1)
        retain = want_int(top[1], f"{tag}.buckets", minimum=1)
        newest = None if top[2] is None else want_int(top[2], f"{tag}.newest", minimum=0)
        if max(bucket_ms, retain, newest or 0) > _I64_MAX:
            corrupt(tag, "parameters do not fit in 64 bits")
        rows = want_list(top[3], f"{tag}.rows")
        if newest is None and rows:
            corrupt(tag, "an empty window (newest is nil) cannot hold buckets")
        buckets: dict[int, dict[str, Any]] = {}
        for row in rows:
            pair = want_list(row, f"{tag}.bucket")
            if len(pair) != 2:
                raise ValueError("bucket is not [index, entries]")
            b = want_int(pair[0], f"{tag}.bucket", minimum=0)
            assert newest is not None
            if not newest - retain < b <= newest:
                corrupt(tag, f"bucket {b} lies outside the window of newest bucket {newest}")
            entries_rows = want_list(pair[1], f"{tag}.bucket")
            if not entries_rows:
                corrupt(tag, f"bucket {b} has no entries")
            entries: dict[str, Any] = {}
            for erow in entries_rows:
                cols = want_list(erow, f"{tag}.entry")
                if len(cols) != 1 + cls._WIDTH:
                    raise ValueError(f"entry has {len(cols)} columns, expected {1 + cls._WIDTH}")
                entries[_want_actor(cols[0], f"{tag}.actor")] = cls._from_row(cols[1:], f"{tag}.entry")
            check_sorted_unique([r[0] for r in entries_rows], f"{tag}.bucket")
            buckets[b] = entries
        check_sorted_unique([r[0] for r in rows], f"{tag}.rows")
        return cls._make(bucket_ms, retain, newest, buckets)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Windowed)
        return (self._bucket_ms == other._bucket_ms and self._retain == other._retain
                and self._newest == other._newest and self._buckets == other._buckets)

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.value()!r}, bucket_ms={self._bucket_ms}, "
                f"buckets={self._retain}, window_start_ms={self.window_start_ms})")


@register
class WindowedCounter(_Windowed[int, int]):
    """Concurrent increments all count, each in the time bucket of its timestamp, and a bucket
    older than the newest ``buckets`` buckets any replica has seen is dropped whole.

    Cost: one int per (retained bucket, actor that incremented in it), so at most
    ``buckets`` x actors ints; expired buckets are reclaimed by join itself. The window
    moves with the newest *event* time seen (``hlc_wall_ms(ts) // bucket_ms``), not with the
    reader's clock: use :meth:`total_since` for a reader-relative window.

    Late data: an increment whose bucket is already expired at the issuing state returns
    an empty delta (:meth:`accepts` tells beforehand). Every replica agrees once it has
    seen what the writer had seen: the window that expired the bucket comes from there.

    Payload: ``[bucket_ms, buckets, newest, [[bucket, [[actor, count], ...]], ...]]`` (see
    the module docstring).
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "wcounter"
    MUTATORS: ClassVar[tuple[str, ...]] = ("increment",)
    _WIDTH: ClassVar[int] = 1

    def increment(self, n: int = 1, *, actor: str, ts: int | None = None) -> WindowedCounter:
        """Delta adding ``n`` (>= 0) to the bucket of ``ts`` (default: now on the process HLC).

        ``n == 0`` only advances the window to ``ts`` (expiring older buckets).
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"counter amounts are ints, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"amount must be >= 0, got {n}; use a WindowedSum for amounts that go down")

        def step(old: int | None) -> int | None:
            total = (old or 0) + n
            if total > _I64_MAX:
                raise ValueError("the bucket count would not fit in 64 bits")
            return total or None

        return self._update(actor, ts, step)

    @staticmethod
    def _wins(new: int, old: int) -> bool:
        return new > old

    @staticmethod
    def _amount(entry: int) -> Number:
        return entry

    @staticmethod
    def _row(entry: int) -> list[Any]:
        return [entry]

    @staticmethod
    def _from_row(cols: list[Any], what: str) -> int:
        n = want_int(cols[0], what, minimum=1)
        if n > _I64_MAX:
            corrupt(what, "count does not fit in 64 bits")
        return n

    @staticmethod
    def _totalize(amounts: list[Number]) -> int:
        return sum(int(a) for a in amounts)


@register
class WindowedSum(_Windowed[tuple[int, Number], Number]):
    """Concurrent additions all count, each in the time bucket of its timestamp, and a bucket
    older than the newest ``buckets`` buckets any replica has seen is dropped whole.

    Amounts are ints or finite floats and may be negative. Each actor keeps, per bucket,
    ``(updates, running sum)``; join keeps the entry with more updates (an actor's own
    entry only grows), so float sums merge deterministically: the per-actor sums are
    rounded in the actor's own order, and totals use :func:`math.fsum`. Ints stay exact.

    Cost: two numbers per (retained bucket, actor); expired buckets are reclaimed by join.
    Late data is dropped as in :class:`WindowedCounter`.

    Payload: ``[bucket_ms, buckets, newest, [[bucket, [[actor, updates, sum], ...]], ...]]``
    (see the module docstring).
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "wsum"
    MUTATORS: ClassVar[tuple[str, ...]] = ("add",)
    _WIDTH: ClassVar[int] = 2

    def add(self, amount: Number, *, actor: str, ts: int | None = None) -> WindowedSum:
        """Delta adding ``amount`` (int or finite float) to the bucket of ``ts`` (default: now)."""
        x = _check_amount(amount, "amount")

        def step(old: tuple[int, Number] | None) -> tuple[int, Number]:
            updates, total = old if old is not None else (0, 0)
            return (updates + 1, _add(total, x))

        return self._update(actor, ts, step)

    def count(self) -> int:
        """How many additions the retained buckets hold (``value() / count()`` is a windowed mean)."""
        return sum(e[0] for es in self._buckets.values() for e in es.values())

    @staticmethod
    def _wins(new: tuple[int, Number], old: tuple[int, Number]) -> bool:
        return _sum_key(new) > _sum_key(old)

    @staticmethod
    def _amount(entry: tuple[int, Number]) -> Number:
        return entry[1]

    @staticmethod
    def _row(entry: tuple[int, Number]) -> list[Any]:
        return [entry[0], entry[1]]

    @staticmethod
    def _from_row(cols: list[Any], what: str) -> tuple[int, Number]:
        updates = want_int(cols[0], what, minimum=1)
        if updates > _I64_MAX:
            corrupt(what, "update count does not fit in 64 bits")
        return (updates, _want_sum(cols[1], what))

    @staticmethod
    def _totalize(amounts: list[Number]) -> Number:
        return _total(amounts)


# -- mean -------------------------------------------------------------------------


@register
class Mean(CRDT[float | None]):
    """Every observation counts once: the value is the sum of all observations over their count.

    Each actor keeps its own ``(count, sum)`` and join keeps the entry with the larger count
    (an actor's own entry only grows). Cost: two numbers per actor that ever observed;
    nothing is reclaimed by the type (use a :class:`WindowedSum` for a mean that forgets).

    Payload: ``[[actor, count, sum], ...]`` sorted by actor.
    """

    __slots__ = ("_entries",)
    TYPE_TAG: ClassVar[str] = "mean"
    MUTATORS: ClassVar[tuple[str, ...]] = ("observe",)

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, Number]] = {}

    @classmethod
    def _make(cls, entries: dict[str, tuple[int, Number]]) -> Mean:
        s = cls.__new__(cls)
        s._entries = entries
        return s

    def observe(self, x: Number, *, actor: str) -> Mean:
        """Delta recording one observation ``x`` (int or finite float)."""
        actor_of(actor)
        v = _check_amount(x, "observation")
        count, total = self._entries.get(actor, (0, 0))
        if count >= _I64_MAX:
            raise ValueError("the observation count would not fit in 64 bits")
        return Mean._make({actor: (count + 1, _add(total, v))})

    def join(self, other: Mean) -> Mean:
        self._check_joinable(other)
        out: dict[str, tuple[int, Number]] | None = None
        for actor, e in other._entries.items():
            old = self._entries.get(actor)
            if old is None or _sum_key(e) > _sum_key(old):
                if out is None:
                    out = dict(self._entries)
                out[actor] = e
        return self if out is None else Mean._make(out)

    def count(self) -> int:
        """How many observations were recorded."""
        return sum(c for c, _ in self._entries.values())

    def total(self) -> Number:
        """The sum of every observation (exact for ints, correctly rounded for floats)."""
        return _total([s for _, s in self._entries.values()])

    def value(self) -> float | None:
        """The mean, or None before the first observation."""
        n = self.count()
        if n == 0:
            return None
        return self.total() / n

    def _payload(self) -> Any:
        return [[a, *self._entries[a]] for a in sorted(self._entries)]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> Mean:
        rows = want_list(payload, "mean")
        entries: dict[str, tuple[int, Number]] = {}
        for row in rows:
            cols = want_list(row, "mean.entry")
            if len(cols) != 3:
                raise ValueError("entry is not [actor, count, sum]")
            count = want_int(cols[1], "mean.count", minimum=1)
            if count > _I64_MAX:
                corrupt("mean", "count does not fit in 64 bits")
            entries[_want_actor(cols[0], "mean.actor")] = (count, _want_sum(cols[2], "mean.sum"))
        check_sorted_unique([r[0] for r in rows], "mean")
        return cls._make(entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mean):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = CRDT.__hash__


# -- HyperLogLog ------------------------------------------------------------------

_MIN_P = 4
_MAX_P = 16
_HASH_BITS = 64
# 2**(64 - rank) for every possible register value: the estimator's sum of 2**-rank,
# scaled by 2**64 so it is computed exactly in integers.
_TERMS = [1 << (_HASH_BITS - r) for r in range(_HASH_BITS + 1)]


def _alpha(m: int) -> float:
    if m == 16:
        return 0.673
    if m == 32:
        return 0.697
    if m == 64:
        return 0.709
    return 0.7213 / (1 + 1.079 / m)


def _hash64(element: Any) -> int:
    """64-bit blake2b of the element's canonical msgpack bytes (stable across processes)."""
    try:
        key = value_key(element)
    except TypeError as exc:
        raise TypeError(f"HyperLogLog elements must be msgpack values: {exc}") from None
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _place(h: int, p: int) -> tuple[int, int]:
    """(register index, rank): the top ``p`` bits pick the register; the rank is one plus the
    number of leading zeros of the remaining ``64 - p`` bits (``65 - p`` if all are zero)."""
    q = _HASH_BITS - p
    w = h & ((1 << q) - 1)
    return h >> q, q - w.bit_length() + 1


Registers = dict[int, int] | bytes


@register
class HyperLogLog(CRDT[int]):
    """Adding the same element anywhere counts it once: join takes the register-wise maximum.

    An estimate of the number of distinct elements added, with relative standard error
    ``1.04 / sqrt(2**p)``: 1.6 % at the default ``p = 12`` (4096 registers), 26 % at
    ``p = 4``, 0.41 % at ``p = 16``; about 95 % of estimates fall within two standard
    errors. Small cardinalities (up to ``2.5 * 2**p``) use linear counting, which is much
    more accurate there. Elements are identified by their canonical msgpack encoding
    (:func:`crdtsync._encoding.value_key`), hashed with 64-bit blake2b, so every process
    and every version of Python agrees; ``1``, ``1.0`` and ``True`` are three elements.

    Cost: fixed, ``2**p`` one-byte registers at most; a sketch with few non-zero registers
    is kept (and encoded) sparse. Nothing grows with the number of elements or actors.

    Payload: ``[p, registers]``, registers sparse ``[[index, rank], ...]`` when fewer than
    ``2**p // 8`` are non-zero, else ``2**p`` bytes (see the module docstring).
    """

    __slots__ = ("_p", "_regs")
    TYPE_TAG: ClassVar[str] = "hll"
    MUTATORS: ClassVar[tuple[str, ...]] = ("add", "add_many")

    _p: int
    _regs: Registers

    def __init__(self, p: int = 12) -> None:
        if not isinstance(p, int) or isinstance(p, bool):
            raise TypeError(f"precision p must be an int, got {type(p).__name__}")
        if not _MIN_P <= p <= _MAX_P:
            raise ValueError(f"precision p must be in {_MIN_P}..{_MAX_P} (2**p registers), got {p}")
        self._p = p
        self._regs = {}

    @classmethod
    def _make(cls, p: int, regs: Registers) -> HyperLogLog:
        """A state with the canonical representation of ``regs`` (sparse below the threshold)."""
        m = 1 << p
        if isinstance(regs, dict):
            if len(regs) >= m // 8:
                dense = bytearray(m)
                for i, r in regs.items():
                    dense[i] = r
                regs = bytes(dense)
        elif m - regs.count(0) < m // 8:
            regs = {i: r for i, r in enumerate(regs) if r}
        s = cls.__new__(cls)
        s._p = p
        s._regs = regs
        return s

    @property
    def precision(self) -> int:
        """``p``: the sketch has ``2**p`` registers."""
        return self._p

    @property
    def standard_error(self) -> float:
        """Relative standard error of the estimate, ``1.04 / sqrt(2**p)``."""
        return 1.04 / math.sqrt(1 << self._p)

    def params(self) -> Mapping[str, Any]:
        return {"p": self._p}

    def registers(self) -> bytes:
        """Every register's rank, index order (``2**p`` bytes), whatever the representation."""
        if isinstance(self._regs, bytes):
            return self._regs
        dense = bytearray(1 << self._p)
        for i, r in self._regs.items():
            dense[i] = r
        return bytes(dense)

    def _rank_at(self, i: int) -> int:
        regs = self._regs
        return regs[i] if isinstance(regs, bytes) else regs.get(i, 0)

    # -- mutation --------------------------------------------------------------
    def add(self, element: Any, *, actor: str) -> HyperLogLog:
        """Delta raising the one register ``element`` hashes to (empty if it is already as high).

        ``element`` is any msgpack value (None, bool, int, float, str, bytes, list, dict).
        """
        actor_of(actor)
        i, rank = _place(_hash64(element), self._p)
        if self._rank_at(i) >= rank:
            return HyperLogLog._make(self._p, {})
        return HyperLogLog._make(self._p, {i: rank})

    def add_many(self, elements: Iterable[Any], *, actor: str) -> HyperLogLog:
        """Delta adding every element of ``elements`` (holding only the registers they raise)."""
        actor_of(actor)
        if isinstance(elements, (str, bytes, bytearray, Mapping)):
            raise TypeError(
                f"add_many takes an iterable of elements, got a {type(elements).__name__}; "
                "use add() for a single element"
            )
        raised: dict[int, int] = {}
        for element in elements:
            i, rank = _place(_hash64(element), self._p)
            if rank > raised.get(i, 0) and rank > self._rank_at(i):
                raised[i] = rank
        return HyperLogLog._make(self._p, raised)

    def join(self, other: HyperLogLog) -> HyperLogLog:
        self._check_joinable(other)
        a, b = self._regs, other._regs
        if not b:
            return self
        if not a:
            return other
        if isinstance(a, dict) and isinstance(b, dict):
            out: dict[int, int] | None = None
            for i, r in b.items():
                if r > a.get(i, 0):
                    if out is None:
                        out = dict(a)
                    out[i] = r
            return self if out is None else HyperLogLog._make(self._p, out)
        if isinstance(a, bytes) and isinstance(b, bytes):
            if a == b:
                return self
            merged = bytes(map(max, a, b))
            if merged == a:
                return self
            return other if merged == b else HyperLogLog._make(self._p, merged)
        # one dense, one sparse: raise the dense registers the sparse side beats
        dense, sparse, base = (a, b, self) if isinstance(a, bytes) else (b, a, other)
        assert isinstance(dense, bytes) and isinstance(sparse, dict)
        raise_to = {i: r for i, r in sparse.items() if r > dense[i]}
        if not raise_to:
            return base
        buf = bytearray(dense)
        for i, r in raise_to.items():
            buf[i] = r
        return HyperLogLog._make(self._p, bytes(buf))

    # -- estimate --------------------------------------------------------------
    def value(self) -> int:
        """The estimated number of distinct elements added (0 when empty)."""
        m = 1 << self._p
        regs = self._regs
        if isinstance(regs, dict):
            zeros = m - len(regs)
            scaled = zeros * _TERMS[0] + sum(_TERMS[r] for r in regs.values())
        else:
            hist = Counter(regs)
            zeros = hist.get(0, 0)
            scaled = sum(c * _TERMS[r] for r, c in hist.items())
        # sum(2**-rank) == scaled / 2**64 exactly; int / int rounds correctly once.
        z = scaled / (1 << _HASH_BITS)
        estimate = _alpha(m) * m * m / z
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)  # linear counting for small cardinalities
        return round(estimate)

    # -- encoding --------------------------------------------------------------
    def _payload(self) -> Any:
        regs = self._regs
        if isinstance(regs, bytes):
            return [self._p, regs]
        return [self._p, [[i, regs[i]] for i in sorted(regs)]]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> HyperLogLog:
        top = want_list(payload, "hll")
        if len(top) != 2:
            raise ValueError("expected [p, registers]")
        p = want_int(top[0], "hll.p")
        if not _MIN_P <= p <= _MAX_P:
            corrupt("hll", f"precision {p} outside {_MIN_P}..{_MAX_P}")
        m = 1 << p
        max_rank = _HASH_BITS - p + 1
        body = top[1]
        regs: Registers
        if isinstance(body, bytes):
            if len(body) != m:
                corrupt("hll", f"dense registers are {len(body)} bytes, expected {m}")
            if max(body) > max_rank:
                corrupt("hll", f"a register exceeds the largest rank {max_rank}")
            if m - body.count(0) < m // 8:
                corrupt("hll", "dense form with few non-zero registers (not canonical: must be sparse)")
            regs = body
        else:
            rows = want_list(body, "hll.registers")
            sparse: dict[int, int] = {}
            for row in rows:
                pair = want_list(row, "hll.register")
                if len(pair) != 2:
                    raise ValueError("register is not [index, rank]")
                i = want_int(pair[0], "hll.index", minimum=0)
                r = want_int(pair[1], "hll.rank", minimum=1)
                if i >= m or r > max_rank:
                    corrupt("hll", f"register [{i}, {r}] out of range for p={p}")
                sparse[i] = r
            check_sorted_unique([r[0] for r in rows], "hll.registers")
            if len(sparse) >= m // 8:
                corrupt("hll", "sparse form with many non-zero registers (not canonical: must be dense)")
            regs = sparse
        s = cls.__new__(cls)
        s._p = p
        s._regs = regs
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HyperLogLog):
            return NotImplemented
        # one canonical representation per set of registers, so compare directly
        return self._p == other._p and self._regs == other._regs

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        return f"HyperLogLog({self.value()}, p={self._p})"
