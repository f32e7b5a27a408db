"""Causal metadata: dots, causal contexts (version vector + dot cloud) and the HLC.

A :class:`Dot` names one event: ``(replica, seq)`` with ``seq`` counting from 1 per
origin. A :class:`Context` is the set of dots a replica (or a state, or a read) has
seen, stored as a version vector (every seq up to ``vv[r]`` seen) plus a *dot cloud*
of dots seen beyond the contiguous prefix. Contexts are immutable: every change returns
a new object, so capturing the context of a read costs a reference, not a copy.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from threading import get_ident as _get_ident
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


def _normalize(vv: dict[str, int], cloud: Iterable[Dot]) -> tuple[dict[str, int], frozenset[Dot]]:
    """Fold cloud dots contiguous with the version vector into it; drop covered dots."""
    by_replica: dict[str, set[int]] = {}
    for r, s in cloud:
        if s > vv.get(r, 0):
            by_replica.setdefault(r, set()).add(s)
    if not by_replica:
        return vv, frozenset()
    rest: list[Dot] = []
    for r, seqs in by_replica.items():
        n = vv.get(r, 0)
        while n + 1 in seqs:
            n += 1
            seqs.discard(n)
        if n:
            vv[r] = n
        rest.extend(Dot(r, s) for s in seqs)
    return vv, frozenset(rest)


class Context:
    """An immutable set of dots: version vector plus dot cloud.

    ``Context()`` is empty. Build one with :meth:`from_dots` or :meth:`from_vv`, grow it
    with :meth:`add` and :meth:`join` (each returns a new context), and compare with
    ``<=``, ``<``, ``==`` or :meth:`compare`.
    """

    __slots__ = ("_vv", "_cloud", "_hash")

    _vv: dict[str, int]
    _cloud: frozenset[Dot]

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Dot] = ()) -> None:
        v = {r: int(n) for r, n in (vv or {}).items() if n > 0}
        self._vv, self._cloud = _normalize(v, (Dot(r, s) for r, s in cloud))
        self._hash: int | None = None

    @classmethod
    def _raw(cls, vv: dict[str, int], cloud: frozenset[Dot]) -> Context:
        ctx = cls.__new__(cls)
        ctx._vv = vv
        ctx._cloud = cloud
        ctx._hash = None
        return ctx

    @classmethod
    def from_dots(cls, dots: Iterable[Dot]) -> Context:
        """The context holding exactly ``dots``."""
        vv, cloud = _normalize({}, dots)
        return cls._raw(vv, cloud)

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
                            frozenset(d for d in self._cloud if d[0] not in drop))

    # -- queries ---------------------------------------------------------------
    @property
    def vv(self) -> Mapping[str, int]:
        """The contiguous prefix per replica (read-only view)."""
        return MappingProxyType(self._vv)

    @property
    def cloud(self) -> frozenset[Dot]:
        """Dots seen beyond the contiguous prefix."""
        return self._cloud

    def __contains__(self, dot: object) -> bool:
        if not isinstance(dot, tuple) or len(dot) != 2:
            return False
        r, s = dot
        return s <= self._vv.get(r, 0) or dot in self._cloud

    def contains(self, dot: Dot) -> bool:
        return dot in self

    def max_seq(self, replica: str) -> int:
        """The highest seq of ``replica`` in this context (0 if none)."""
        n = self._vv.get(replica, 0)
        for r, s in self._cloud:
            if r == replica and s > n:
                n = s
        return n

    def next_dot(self, replica: str) -> Dot:
        """The dot ``replica`` should use for its next event given this context."""
        return Dot(replica, self.max_seq(replica) + 1)

    def replicas(self) -> frozenset[str]:
        return frozenset(self._vv) | frozenset(r for r, _ in self._cloud)

    def dots(self) -> Iterator[Dot]:
        """Every dot in the context (beware: as many as the sum of the vector)."""
        for r, n in sorted(self._vv.items()):
            for s in range(1, n + 1):
                yield Dot(r, s)
        yield from sorted(self._cloud)

    def __len__(self) -> int:
        return sum(self._vv.values()) + len(self._cloud)

    def __bool__(self) -> bool:
        return bool(self._vv) or bool(self._cloud)

    def is_compact(self) -> bool:
        """True when there is no dot cloud (the context is a plain version vector)."""
        return not self._cloud

    # -- growth ----------------------------------------------------------------
    def add(self, dot: Dot) -> Context:
        """This context plus ``dot``."""
        r, s = dot
        n = self._vv.get(r, 0)
        if s <= n or dot in self._cloud:
            return self
        if s == n + 1:
            vv = dict(self._vv)
            vv[r] = s
            if any(d[0] == r for d in self._cloud):
                vv, cloud = _normalize(vv, self._cloud)
                return Context._raw(vv, cloud)
            return Context._raw(vv, self._cloud)
        return Context._raw(self._vv, self._cloud | {Dot(r, s)})

    def add_all(self, dots: Iterable[Dot]) -> Context:
        vv, cloud = _normalize(dict(self._vv), [*self._cloud, *dots])
        return Context._raw(vv, cloud)

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
        vv, cloud = _normalize(vv, self._cloud | other._cloud)
        return Context._raw(vv, cloud)

    __or__ = join

    def meet(self, other: Context) -> Context:
        """The intersection of two contexts (used for causal stability)."""
        vv = {r: min(n, other._vv.get(r, 0)) for r, n in self._vv.items()}
        cloud = {d for d in self._cloud if d in other} | {d for d in other._cloud if d in self}
        return Context(vv, cloud)

    def subtract_dots(self, dots: Iterable[Dot]) -> frozenset[Dot]:
        """The dots of ``dots`` that this context does not contain."""
        return frozenset(d for d in dots if d not in self)

    # -- order -----------------------------------------------------------------
    def __le__(self, other: object) -> bool:
        if not isinstance(other, Context):
            return NotImplemented
        ovv = other._vv
        for r, n in self._vv.items():
            if n > ovv.get(r, 0):
                # the prefix may still be covered by other's cloud
                m = ovv.get(r, 0)
                if any(Dot(r, s) not in other._cloud for s in range(m + 1, n + 1)):
                    return False
        return all(d in other for d in self._cloud)

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
        return self._vv == other._vv and self._cloud == other._cloud

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((frozenset(self._vv.items()), self._cloud))
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
        per: dict[str, list[int]] = {}
        for r, s in self._cloud:
            per.setdefault(r, []).append(s)
        rows = []
        for r in sorted(set(self._vv) | set(per)):
            rows.append([r, self._vv.get(r, 0), sorted(per.get(r, ()))])
        return rows

    @classmethod
    def from_payload(cls, rows: Any, what: str = "context") -> Context:
        if not isinstance(rows, list):
            corrupt(what, "expected a list of [replica, n, cloud] rows")
        vv: dict[str, int] = {}
        cloud: list[Dot] = []
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
                cloud.append(Dot(r, s))
            if n:
                vv[r] = n
            elif not seqs:
                corrupt(what, "empty row")
        vv2, cloud2 = _normalize(vv, cloud)
        if len(cloud2) != len(cloud):
            corrupt(what, "cloud is not normalized")
        return cls._raw(vv2, cloud2)

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
        if self._cloud:
            parts.append("cloud=" + ",".join(f"{r}:{s}" for r, s in sorted(self._cloud)))
        return f"Context({' '.join(parts)})"


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

    Fence: :attr:`fence`, when set, is called as ``fence(stamp_wall_ms)`` before a stamp
    whose wall part is new (at most once per millisecond) or is far ahead of this host's
    wall clock; it raises (e.g. :class:`~crdtsync.errors.ClockSkew`) to refuse the stamp,
    and the clock is left unchanged. A replica uses it to stop writing when its clock is
    ahead of its peers' (their apply would hold such events back).
    """

    __slots__ = ("_clock", "_last", "_lock", "_owner", "_peak", "_shared", "fence", "max_drift_ms", "rejected")

    def __init__(self, *, max_drift_ms: int = 60_000, clock: Callable[[], int] = _wall_ms) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._shared = False
        self._peak = 0  # _last as every locked call left it (the owner's plain write may lag it)
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
        if self._shared or _get_ident() != self._owner:
            return self._now_shared()
        wall = self._clock()
        ts = wall << _LOGICAL_BITS
        last = self._last
        if ts <= last:
            if (last - ts) >> _LOGICAL_BITS > self.max_drift_ms and self.fence is not None:
                self.fence((last + 1) >> _LOGICAL_BITS)
            ts = last + 1
        elif self.fence is not None:
            self.fence(wall)
        self._last = ts
        if self._shared:  # another thread appeared while we stamped: re-issue under the lock
            ts = self._reissue(ts)
        return ts

    def _reissue(self, ts: int) -> int:
        with self._lock:
            ts = self._last = self._peak = max(self._last, self._peak, ts) + 1
            return ts

    def _claim(self) -> None:
        """Under the lock: note which thread owns the clock, or that several use it."""
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
