"""Causal metadata: dots, causal contexts (version vector + dot cloud) and the HLC.

A :class:`Dot` names one event: ``(replica, seq)`` with ``seq`` counting from 1 per
origin. A :class:`Context` is the set of dots a replica (or a state, or a read) has
seen, stored as a version vector (every seq up to ``vv[r]`` seen) plus a *dot cloud*
of dots seen beyond the contiguous prefix, kept in memory as sorted, merged seq ranges
per replica (so a gap that never fills costs one range, not one entry per later seq).
Contexts are immutable: every change returns a new object, so capturing the context of
a read costs a reference, not a copy.

Wire format of a context (``Context.encode``), deterministic::

    msgpack [1, [[replica: str, max_contiguous: int, [cloud seqs ascending]], ...]]

entries sorted by replica id, empty entries omitted. A decoder rejects anything else
with :class:`~crdtsync.errors.CorruptRecord`.

The :class:`HLC` (hybrid logical clock, Kulkarni et al.) orders last-writer-wins writes
and stamps lineage. A timestamp is one int: ``wall_ms << 16 | logical``. Remote times
further in the future than ``max_drift_ms`` are rejected with
:class:`~crdtsync.errors.FutureTimestamp` and do not move the clock.
"""

from __future__ import annotations

import enum
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from threading import get_ident as _get_ident
from time import time_ns as _time_ns
from types import MappingProxyType
from typing import Any, NamedTuple

from ._encoding import corrupt, packb, unpackb
from .errors import FutureTimestamp, UnsupportedVersion

__all__ = [
    "Dot",
    "Context",
    "Ordering",
    "HLC",
    "hlc_wall_ms",
    "hlc_logical",
    "make_hlc",
    "default_hlc",
]

_CONTEXT_VERSION = 1


class Dot(NamedTuple):
    """The identity of one event: the origin replica and its per-origin sequence number."""

    replica: str
    seq: int


class Ordering(enum.Enum):
    """How two contexts relate."""

    EQUAL = "equal"
    BEFORE = "before"  # self < other
    AFTER = "after"  # self > other
    CONCURRENT = "concurrent"


# A replica's dot cloud in memory: a flat tuple ``(s0, e0, s1, e1, ...)`` of half-open
# seq ranges ``[s, e)``, ascending, with at least one missing seq between two ranges
# (``e_i < s_{i+1}``) and the first starting above the contiguous prefix plus one
# (``s0 > vv[r] + 1``). This canonical form makes equality, hashing and encoding exact;
# a permanent gap followed by a million seqs is one range, not a million dots.
_Ranges = tuple[int, ...]


def _runs(seqs: Iterable[int]) -> list[int]:
    """The ranges (flat, half-open, canonical) covering exactly the positive ``seqs``."""
    out: list[int] = []
    for s in sorted(seqs):
        if s < 1:
            continue
        if out:
            if s < out[-1]:  # a duplicate
                continue
            if s == out[-1]:
                out[-1] = s + 1
                continue
        out += (s, s + 1)
    return out


def _union(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """The union of two canonical range lists, canonical (adjacent ranges merged)."""
    if not a:
        return list(b)
    if not b:
        return list(a)
    pairs = sorted([*zip(a[::2], a[1::2]), *zip(b[::2], b[1::2])])
    out: list[int] = []
    for s, e in pairs:
        if out and s <= out[-1]:
            if e > out[-1]:
                out[-1] = e
        else:
            out += (s, e)
    return out


def _intersection(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """The intersection of two canonical range lists, canonical."""
    out: list[int] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s = max(a[i], b[j])
        e = min(a[i + 1], b[j + 1])
        if s < e:
            if out and out[-1] == s:
                out[-1] = e
            else:
                out += (s, e)
        if a[i + 1] < b[j + 1]:
            i += 2
        else:
            j += 2
    return out


def _fold(n: int, ranges: Sequence[int]) -> tuple[int, _Ranges]:
    """Prefix ``n`` and canonical ``ranges`` as (new prefix, ranges above it): ranges
    the prefix covers are dropped, and one that overlaps or touches it extends it."""
    i = 0
    while i < len(ranges) and ranges[i] <= n + 1:
        if ranges[i + 1] - 1 > n:
            n = ranges[i + 1] - 1
        i += 2
    return n, tuple(ranges[i:])


def _set(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set ``key`` in ``d`` to ``value``, or drop it if ``value`` is falsy; returns ``d``."""
    if value:
        d[key] = value
    else:
        d.pop(key, None)
    return d


class Context:
    """An immutable set of dots: version vector plus dot cloud.

    ``Context()`` is empty. Build one with :meth:`from_dots` or :meth:`from_vv`, grow it
    with :meth:`add`, :meth:`add_range` and :meth:`join` (each returns a new context), and
    compare with ``<=``, ``<``, ``==`` or :meth:`compare`.

    The cloud is kept per replica as sorted, merged seq ranges, so its cost grows with the
    number of gaps, not the number of dots beyond them: adding a run of seqs after a
    permanent gap extends one range (a bisect and a copy of that replica's ranges).
    """

    __slots__ = ("_vv", "_ranges", "_hash")

    _vv: dict[str, int]
    _ranges: dict[str, _Ranges]

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Dot] = ()) -> None:
        v = {r: int(n) for r, n in (vv or {}).items() if n > 0}
        self._vv, self._ranges = v, {}
        self._hash: int | None = None
        if cloud:
            built = self.add_all(cloud)
            self._vv, self._ranges = built._vv, built._ranges

    @classmethod
    def _raw(cls, vv: dict[str, int], ranges: dict[str, _Ranges]) -> Context:
        ctx = cls.__new__(cls)
        ctx._vv = vv
        ctx._ranges = ranges
        ctx._hash = None
        return ctx

    @classmethod
    def from_dots(cls, dots: Iterable[Dot]) -> Context:
        """The context holding exactly ``dots``."""
        return _EMPTY.add_all(dots)

    @classmethod
    def from_vv(cls, vv: Mapping[str, int]) -> Context:
        """The context holding every seq up to ``vv[r]`` for each replica ``r``."""
        return cls(vv)

    def without(self, replicas: Iterable[str]) -> Context:
        """This context with every dot of ``replicas`` dropped (pruning removed replicas)."""
        drop = set(replicas)
        if not drop:
            return self
        return Context._raw({r: n for r, n in self._vv.items() if r not in drop},
                            {r: c for r, c in self._ranges.items() if r not in drop})

    # -- queries ---------------------------------------------------------------
    @property
    def vv(self) -> Mapping[str, int]:
        """The contiguous prefix per replica (read-only view)."""
        return MappingProxyType(self._vv)

    @property
    def cloud(self) -> frozenset[Dot]:
        """Dots seen beyond the contiguous prefix (built on each call: one object per
        dot; :meth:`cloud_size`, :meth:`cloud_ranges` and :meth:`missing` do not)."""
        return frozenset(Dot(r, s) for r, c in self._ranges.items()
                         for i in range(0, len(c), 2) for s in range(c[i], c[i + 1]))

    def cloud_size(self) -> int:
        """How many dots the cloud holds."""
        return sum(c[i + 1] - c[i] for c in self._ranges.values() for i in range(0, len(c), 2))

    def cloud_ranges(self, replica: str) -> tuple[tuple[int, int], ...]:
        """The cloud of ``replica`` as inclusive ``(first, last)`` seq ranges, ascending."""
        c = self._ranges.get(replica, ())
        return tuple((c[i], c[i + 1] - 1) for i in range(0, len(c), 2))

    def __contains__(self, dot: object) -> bool:
        if not isinstance(dot, tuple) or len(dot) != 2:
            return False
        r, s = dot
        if s <= self._vv.get(r, 0):
            return True
        c = self._ranges.get(r)
        if c is None:
            return False
        if len(c) == 2:
            return bool(c[0] <= s < c[1])
        return bisect_right(c, s) & 1 == 1

    def contains(self, dot: Dot) -> bool:
        return dot in self

    def missing(self, replica: str, first: int, last: int) -> list[tuple[int, int]]:
        """The seqs of ``replica`` in ``first..last`` this context lacks, as inclusive
        ``(first, last)`` ranges, ascending (empty when it has them all)."""
        cur = max(first, self._vv.get(replica, 0) + 1, 1)
        if cur > last:
            return []
        c = self._ranges.get(replica, ())
        i = bisect_right(c, cur)
        if i & 1:  # cur is inside the range ending at c[i]
            cur = c[i]
            i += 1
        out: list[tuple[int, int]] = []
        while cur <= last:
            if i < len(c) and c[i] <= last:
                out.append((cur, c[i] - 1))
                cur = c[i + 1]
                i += 2
            else:
                out.append((cur, last))
                break
        return out

    def max_seq(self, replica: str) -> int:
        """The highest seq of ``replica`` in this context (0 if none)."""
        c = self._ranges.get(replica)
        return c[-1] - 1 if c else self._vv.get(replica, 0)

    def next_dot(self, replica: str) -> Dot:
        """The dot ``replica`` should use for its next event given this context."""
        return Dot(replica, self.max_seq(replica) + 1)

    def replicas(self) -> frozenset[str]:
        return frozenset(self._vv) | frozenset(self._ranges)

    def dots(self) -> Iterator[Dot]:
        """Every dot in the context (beware: as many as the sum of the vector)."""
        for r, n in sorted(self._vv.items()):
            for s in range(1, n + 1):
                yield Dot(r, s)
        for r, c in sorted(self._ranges.items()):
            for i in range(0, len(c), 2):
                for s in range(c[i], c[i + 1]):
                    yield Dot(r, s)

    def __len__(self) -> int:
        return sum(self._vv.values()) + self.cloud_size()

    def __bool__(self) -> bool:
        return bool(self._vv) or bool(self._ranges)

    def is_compact(self) -> bool:
        """True when there is no dot cloud (the context is a plain version vector)."""
        return not self._ranges

    # -- growth ----------------------------------------------------------------
    def add(self, dot: Dot) -> Context:
        """This context plus ``dot``."""
        return self.add_range(dot[0], dot[1], dot[1])

    def add_range(self, replica: str, first: int, last: int) -> Context:
        """This context plus the seqs ``first..last`` of ``replica`` (returns ``self`` when
        it holds them all already)."""
        first = max(first, 1)
        n = self._vv.get(replica, 0)
        if last < first or last <= n:
            return self
        c = self._ranges.get(replica, ())
        if first <= n + 1:  # extends the prefix, and may reach ranges of the cloud
            if c and c[0] <= last + 1:
                n, rest = _fold(last, c)
                return Context._raw(_set(dict(self._vv), replica, n), _set(dict(self._ranges), replica, rest))
            return Context._raw(_set(dict(self._vv), replica, last), self._ranges)
        end = last + 1
        lo = bisect_left(c, first) >> 1  # first range ending at or after ``first``
        hi = (bisect_right(c, end) + 1) >> 1  # ranges starting at or before ``end``
        if hi > lo:
            if hi == lo + 1 and c[2 * lo] <= first and c[2 * hi - 1] >= end:
                return self  # inside one range already
            first, end = min(first, c[2 * lo]), max(end, c[2 * hi - 1])
        merged = (*c[:2 * lo], first, end, *c[2 * hi:])
        return Context._raw(self._vv, _set(dict(self._ranges), replica, merged))

    def add_all(self, dots: Iterable[Dot]) -> Context:
        """This context plus ``dots``."""
        by: dict[str, list[int]] = {}
        for r, s in dots:
            if r in by:
                by[r].append(s)
            else:
                by[r] = [s]
        if not by:
            return self
        vv, ranges = self._vv, self._ranges
        copied = False
        for r, seqs in by.items():
            n = vv.get(r, 0)
            old = ranges.get(r, ())
            if old:
                n2, rest = _fold(n, _union(old, _runs(seqs)))
            else:
                n2, rest = _fold(n, _runs(seqs))
            if n2 == n and rest == old:
                continue
            if not copied:
                vv, ranges, copied = dict(vv), dict(ranges), True
            _set(vv, r, n2)
            _set(ranges, r, rest)
        return Context._raw(vv, ranges) if copied else self

    def join(self, other: Context) -> Context:
        """The union of two contexts."""
        if other is self or other <= self:
            return self
        if self <= other:
            return other
        vv = dict(self._vv)
        for r, n in other._vv.items():
            if n > vv.get(r, 0):
                vv[r] = n
        if not self._ranges and not other._ranges:
            return Context._raw(vv, {})
        ranges: dict[str, _Ranges] = {}
        for r in self._ranges.keys() | other._ranges.keys():
            n, rest = _fold(vv.get(r, 0), _union(self._ranges.get(r, ()), other._ranges.get(r, ())))
            _set(vv, r, n)
            _set(ranges, r, rest)
        return Context._raw(vv, ranges)

    __or__ = join

    def meet(self, other: Context) -> Context:
        """The intersection of two contexts (used for causal stability)."""
        vv: dict[str, int] = {}
        ranges: dict[str, _Ranges] = {}
        for r in self.replicas() & other.replicas():
            both = _intersection(self._all(r), other._all(r))
            n, rest = _fold(0, both)
            _set(vv, r, n)
            _set(ranges, r, rest)
        return Context._raw(vv, ranges)

    def _all(self, replica: str) -> list[int]:
        """Every seq of ``replica`` here, as canonical ranges (prefix included)."""
        n = self._vv.get(replica, 0)
        c = self._ranges.get(replica, ())
        return [1, n + 1, *c] if n else list(c)

    def subtract_dots(self, dots: Iterable[Dot]) -> frozenset[Dot]:
        """The dots of ``dots`` that this context does not contain."""
        return frozenset(d for d in dots if d not in self)

    # -- order -----------------------------------------------------------------
    def __le__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        ovv = other._vv
        for r, n in self._vv.items():
            # canonical form: seq ovv[r] + 1 is never in other, so the prefix must fit
            if n > ovv.get(r, 0):
                return False
        for r, c in self._ranges.items():
            m = ovv.get(r, 0)
            oc = other._ranges.get(r, ())
            for i in range(0, len(c), 2):
                s, e = c[i], c[i + 1]
                if e <= m + 1:
                    continue
                j = bisect_right(oc, s)
                if not (j & 1) or oc[j] < e:
                    return False
        return True

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return other <= self

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self <= other and self != other

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return other <= self and self != other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        return self._vv == other._vv and self._ranges == other._ranges

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((frozenset(self._vv.items()), frozenset(self._ranges.items())))
        return self._hash

    def compare(self, other: Context) -> Ordering:
        le, ge = self <= other, other <= self
        if le and ge:
            return Ordering.EQUAL
        if le:
            return Ordering.BEFORE
        if ge:
            return Ordering.AFTER
        return Ordering.CONCURRENT

    def concurrent(self, other: Context) -> bool:
        return self.compare(other) is Ordering.CONCURRENT

    # -- encoding --------------------------------------------------------------
    def to_payload(self) -> list[Any]:
        if not self._ranges:
            return [[r, n, []] for r, n in sorted(self._vv.items())]
        rows = []
        for r in sorted(self._vv.keys() | self._ranges.keys()):
            c = self._ranges.get(r, ())
            seqs = [*range(c[0], c[1])] if len(c) == 2 else [s for i in range(0, len(c), 2) for s in range(c[i], c[i + 1])]
            rows.append([r, self._vv.get(r, 0), seqs])
        return rows

    @classmethod
    def from_payload(cls, rows: Any, what: str = "context") -> Context:
        if not isinstance(rows, list):
            corrupt(what, "expected a list of [replica, n, cloud] rows")
        vv: dict[str, int] = {}
        ranges: dict[str, _Ranges] = {}
        last = None
        for row in rows:
            if not (isinstance(row, list) and len(row) == 3):
                corrupt(what, "row is not [replica, n, cloud]")
            r, n, seqs = row
            if not isinstance(r, str) or not isinstance(n, int) or isinstance(n, bool) or n < 0:
                corrupt(what, f"bad row {row!r:.80}")
            if last is not None and r <= last:
                corrupt(what, "rows not sorted by replica id")
            last = r
            if not isinstance(seqs, list):
                corrupt(what, "cloud is not a list")
            prev = n + 1  # seq n+1 would belong to the prefix, so the cloud starts above it
            for s in seqs:
                if not isinstance(s, int) or isinstance(s, bool) or s <= prev:
                    corrupt(what, "cloud seqs must ascend, starting above the contiguous prefix plus one")
                prev = s
            if n:
                vv[r] = n
            elif not seqs:
                corrupt(what, "empty row")
            if seqs:
                ranges[r] = tuple(_runs(seqs))
        return cls._raw(vv, ranges)

    def row_delta(self, base: Context) -> tuple[list[Any], list[str]]:
        """What turns ``base`` into this context, replica by replica: the payload rows (as
        :meth:`to_payload`) of the replicas whose dots differ, and the replicas ``base``
        has and this context lacks (pruned). ``base.patch(*ctx.row_delta(base)) == ctx``."""
        mine = Context._raw(
            {r: n for r, n in self._vv.items() if base._vv.get(r, 0) != n
             or self._ranges.get(r, ()) != base._ranges.get(r, ())},
            {r: c for r, c in self._ranges.items() if c != base._ranges.get(r, ())
             or self._vv.get(r, 0) != base._vv.get(r, 0)},
        )
        gone = sorted(base.replicas() - self.replicas())
        return mine.to_payload(), gone

    def patch(self, rows: Any, dropped: Iterable[str], what: str = "context delta") -> Context:
        """This context with each replica of ``rows`` (payload rows, validated like
        :meth:`from_payload`) holding exactly that row's dots, and ``dropped`` removed."""
        change = Context.from_payload(rows, what=what)
        vv, ranges = dict(self._vv), dict(self._ranges)
        for r in change.replicas():
            _set(vv, r, change._vv.get(r, 0))
            _set(ranges, r, change._ranges.get(r, ()))
        for r in dropped:
            vv.pop(r, None)
            ranges.pop(r, None)
        return Context._raw(vv, ranges)

    def encode(self) -> bytes:
        return packb([_CONTEXT_VERSION, self.to_payload()])

    @classmethod
    def decode(cls, data: bytes) -> Context:
        obj = unpackb(data, what="context")
        if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int)):
            corrupt("context", "expected [version, rows]")
        if obj[0] != _CONTEXT_VERSION:
            if isinstance(obj[0], int) and obj[0] > _CONTEXT_VERSION:
                raise UnsupportedVersion(f"context: format version {obj[0]} is newer than this build understands")
            corrupt("context", f"bad version {obj[0]!r}")
        return cls.from_payload(obj[1])

    def __repr__(self) -> str:
        parts = [f"{r}:{n}" for r, n in sorted(self._vv.items())]
        if self._ranges:
            parts.append("cloud=" + ",".join(
                f"{r}:{s}" if s == e else f"{r}:{s}-{e}"
                for r in sorted(self._ranges) for s, e in self.cloud_ranges(r)))
        return f"Context({' '.join(parts)})"


_EMPTY = Context()


# -- hybrid logical clock ---------------------------------------------------------

_LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << _LOGICAL_BITS) - 1


def hlc_wall_ms(ts: int) -> int:
    """The physical (wall-clock milliseconds) part of an HLC timestamp."""
    return ts >> _LOGICAL_BITS


def hlc_logical(ts: int) -> int:
    """The logical counter part of an HLC timestamp."""
    return ts & _LOGICAL_MASK


def make_hlc(wall_ms: int, logical: int = 0) -> int:
    """Pack a wall time in ms and a logical counter into one HLC timestamp."""
    if not 0 <= logical <= _LOGICAL_MASK:
        raise ValueError(f"logical counter {logical} out of range 0..{_LOGICAL_MASK}")
    return (wall_ms << _LOGICAL_BITS) | logical


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HLC:
    """A hybrid logical clock; lock-free while one thread uses it, locked once several do.

    ``now()`` stamps a local event; ``update(remote)`` merges a received timestamp and
    returns a stamp after both. Timestamps never go backwards, even if the wall clock does.

    Threads: the first thread to stamp owns the clock and stamps without a lock (a
    replica's event loop). When another thread stamps, the clock switches to a lock for
    good; a stamp the owner was issuing during the switch is re-issued under the lock,
    so no two stamps are ever equal (CPython's GIL orders the plain reads and writes).

    Fast path: when the owner issues the first stamp of a wall millisecond (the wall part
    is new, no drift), the clock opens a *window*, ``[_fast_from, _fast_to)`` in
    ``time_ns`` units: that millisecond. While ``time_ns()`` stays inside it, the next
    stamp is ``last + 1`` whatever else the slow path would compute (the wall part is not
    new, so the fence is not asked; the clock is not ahead of the wall, so there is no
    drift to check), and the owner takes it without the division, the fence test or the
    branches: :meth:`stamp_fast` (inlined by the write handles). Everything else that can
    move the clock closes the window (``_fast_to = 0``): :meth:`update`, :meth:`observe`,
    :meth:`restore` and a second thread (all through ``_claim``); the window is only
    opened with the default wall clock and ``max_drift_ms >= 1`` (a rollover of the
    logical part into the next millisecond then needs 65,536 stamps in one millisecond
    before the slow path would differ).

    Fence: :attr:`fence`, when set, is called as ``fence(stamp_wall_ms)`` before a stamp
    whose wall part is new (at most once per millisecond) or is far ahead of this host's
    wall clock; it raises (e.g. :class:`~crdtsync.errors.ClockSkew`) to refuse the stamp,
    and the clock is left unchanged. A replica uses it to stop writing when its clock is
    ahead of its peers' (their apply would hold such events back).
    """

    __slots__ = ("_clock", "_wall_default", "_last", "_lock", "_owner", "_peak", "_shared", "_fast_from",
                 "_fast_to", "fence",
                 "max_drift_ms", "rejected")

    def __init__(self, *, max_drift_ms: int = 60_000, clock: Callable[[], int] = _wall_ms) -> None:
        self._clock = clock
        self._wall_default = clock is _wall_ms  # now() reads time_ns itself (no call of _wall_ms)
        self._last = 0
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._shared = False
        self._peak = 0  # _last as every locked call left it (the owner's plain write may lag it)
        #: the fast path's window, time_ns units (see the class doc); closed: _fast_to = 0
        self._fast_from = 0
        self._fast_to = 0
        #: called before a stamp with a new wall part; raises to refuse it (see the class doc)
        self.fence: Callable[[int], None] | None = None
        self.max_drift_ms = max_drift_ms
        #: how many remote timestamps were rejected as too far in the future
        self.rejected = 0

    @property
    def last(self) -> int:
        return self._last

    def _advance(self, floor: int) -> int:
        ts = max(make_hlc(self._clock()), floor + 1)
        self._last = ts
        return ts

    def wall_ms(self) -> int:
        """This clock's wall time in milliseconds (simulated in a test cluster)."""
        return self._clock()

    def now(self) -> int:
        """A timestamp for a local event, greater than every earlier one."""
        t = _time_ns()
        if self._fast_from <= t < self._fast_to and _get_ident() == self._owner:
            ts = self._last = self._last + 1  # (stamp_fast, inlined)
            if self._shared:
                ts = self._reissue(ts)
            return ts
        if self._shared or _get_ident() != self._owner:
            return self._now_shared()
        wall = t // 1_000_000 if self._wall_default else self._clock()
        ts = wall << _LOGICAL_BITS
        last = self._last
        if ts <= last:
            if (last - ts) >> _LOGICAL_BITS > self.max_drift_ms and self.fence is not None:
                self.fence((last + 1) >> _LOGICAL_BITS)
            ts = last + 1
        else:
            if self.fence is not None:
                self.fence(wall)
            if self._wall_default and self.max_drift_ms >= 1:  # open the window of this ms
                self._fast_from = wall * 1_000_000
                self._fast_to = self._fast_from + 1_000_000
        self._last = ts
        if self._shared:  # another thread appeared while we stamped: re-issue under the lock
            self._fast_to = 0
            ts = self._reissue(ts)
        return ts

    def stamp_fast(self) -> int:
        """The next stamp when the caller, the owner thread, has seen ``time_ns()`` inside
        the window (see the class doc): ``last + 1``, re-issued under the lock if another
        thread appeared meanwhile. A handle inlines the test and this body."""
        ts = self._last = self._last + 1
        if self._shared:
            ts = self._reissue(ts)
        return ts

    def _reissue(self, ts: int) -> int:
        with self._lock:
            ts = self._last = self._peak = max(self._last, self._peak, ts) + 1
            return ts

    def _claim(self) -> None:
        """Under the lock: note which thread owns the clock, or that several use it; the
        caller is about to move the clock, so the fast path's window closes."""
        self._fast_to = 0
        if self._owner is None:
            self._owner = _get_ident()
        elif not self._shared and _get_ident() != self._owner:
            self._shared = True

    def _now_shared(self) -> int:
        with self._lock:
            self._claim()
            wall = self._clock()
            ts = wall << _LOGICAL_BITS
            last = self._last
            if ts <= last:
                if (last - ts) >> _LOGICAL_BITS > self.max_drift_ms and self.fence is not None:
                    self.fence((last + 1) >> _LOGICAL_BITS)
                ts = last + 1
            elif self.fence is not None:
                self.fence(wall)
            self._last = self._peak = max(ts, self._peak + 1)
            return self._last

    def peek(self) -> int:
        """A time after every stamp issued so far, without issuing one: the clock does not
        move and the fence is not asked. For this replica's control messages (heartbeats),
        which must flow while writes are fenced and must not carry a wall clock that
        jumped ahead into later stamps."""
        return max(self._clock() << _LOGICAL_BITS, self._last + 1, self._peak + 1)

    def check(self, remote: int) -> None:
        """Raise :class:`FutureTimestamp` if ``remote`` is too far ahead of the wall clock."""
        if not isinstance(remote, int) or isinstance(remote, bool) or remote < 0:
            raise FutureTimestamp(f"HLC timestamp {remote!r} is not a non-negative integer")
        ahead = hlc_wall_ms(remote) - self._clock()
        if ahead > self.max_drift_ms:
            self.rejected += 1
            raise FutureTimestamp(
                f"remote timestamp is {ahead} ms ahead of this host's clock "
                f"(limit {self.max_drift_ms} ms); check NTP on both hosts"
            )

    def update(self, remote: int) -> int:
        """Merge a received timestamp; returns a local stamp after both."""
        self.check(remote)
        with self._lock:
            self._claim()
            ts = self._peak = self._advance(max(self._last, self._peak, remote))
            return ts

    def restore(self, ts: int) -> None:
        """Continue after a stamp this clock issued before a restart (no drift check)."""
        self._raise_to(ts)

    def observe(self, remote: int) -> None:
        """Like :meth:`update` but without producing a new stamp."""
        self.check(remote)
        self._raise_to(remote)

    def _raise_to(self, ts: int) -> None:
        with self._lock:
            self._claim()
            self._peak = max(self._peak, ts)
            if ts > self._last:
                self._last = ts


_DEFAULT_HLC = HLC()


def default_hlc() -> HLC:
    """The process-wide clock used when a mutator is called without an explicit ``ts``."""
    return _DEFAULT_HLC
