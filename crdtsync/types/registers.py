"""Registers: one value per field, and a rule for concurrent writes.

* :class:`LWWRegister`: the write with the highest HLC timestamp wins (ties: replica id).
* :class:`MVRegister`: concurrent writes are all kept and reported as a conflict.
* :class:`MaxRegister` / :class:`MinRegister`: the largest (smallest) number ever set wins.

Values of :class:`LWWRegister` and :class:`MVRegister` are JSON-like: ``None``, ``bool``,
``int`` (64-bit), ``float``, ``str``, ``bytes``, ``list`` (tuples become lists) and
``dict`` (keys ``str``, ``bytes``, ``int``, ``bool`` or ``None``). A scalar is stored as
itself; a list or dict is stored as its canonical msgpack bytes (dict keys sorted, see
:func:`crdtsync._encoding.canonical`), so a state can never be changed through a value a
caller still holds, and :meth:`value` hands out a fresh copy of containers. The
canonical bytes of a value are also the total order used for deterministic tie-breaks.

Wire format (inside the ``[tag, version, payload]`` envelope of :mod:`crdtsync.types._base`):

* ``lww`` v1: ``[]`` never set, else ``[ts: uint, actor: str, value]``.
* ``mvreg`` v1: ``[[[replica: str, seq: int, value], ...], context rows]``, entries sorted by
  dot, every dot inside the context (:meth:`crdtsync.clock.Context.to_payload`).
* ``maxreg`` / ``minreg`` v1: ``nil`` never set, else the number (int or float64).

``value`` is the canonical form: dict entries in canonical key order. Decoders reject
anything else with :class:`~crdtsync.errors.CorruptRecord`.
"""

from __future__ import annotations

import math
import operator
import struct
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from itertools import chain
from operator import itemgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import msgpack

from .. import speedups
from .._encoding import canonical, corrupt, is_finite_number, pack_small, packb
from ..clock import Context, Dot, default_hlc
from ._base import CRDT, actor_of, register, want_int, want_list, want_str
from ._dots import Removals, check_dots_in_context, join_dotfun, reused

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LWWRegister", "MVRegister", "MaxRegister", "MinRegister"]

_F64 = struct.Struct(">d")
_TS_LIMIT = 2**64
_INT_MIN, _INT_LIMIT = -(2**63), 2**64
_KEY_TYPES = (str, bytes, int, type(None))  # bool is an int
_first, _second, _third = itemgetter(0), itemgetter(1), itemgetter(2)


# -- shared helpers (also used by crdtsync.types.vectors) --------------------------


def intern_actor(actor: Any) -> str:
    """Validate an actor id and return the interned string, shared by every state."""
    actor_of(actor)
    return sys.intern(actor if type(actor) is str else str.__str__(actor))


def check_ts(ts: Any) -> int:
    """Validate an HLC timestamp; ``None`` stamps now on the process-wide clock."""
    if ts is None:
        return default_hlc().now()
    if isinstance(ts, bool):
        raise TypeError("ts must be an int HLC timestamp (e.g. HLC.now()), got a bool")
    try:
        t = operator.index(ts)
    except TypeError:
        raise TypeError(
            f"ts must be an int HLC timestamp (e.g. HLC.now()), got {type(ts).__name__}"
        ) from None
    if not 0 <= t < _TS_LIMIT:
        raise ValueError(f"ts must be in 0..2**64-1, got {t}; pass a timestamp from crdtsync.HLC")
    return t


def want_ts(x: Any, what: str) -> int:
    t = want_int(x, what, minimum=0)
    if t >= _TS_LIMIT:
        corrupt(what, "timestamp does not fit in 64 bits")
    return t


def want_actor(x: Any, what: str) -> str:
    a = want_str(x, what)
    if not a:
        corrupt(what, "empty actor id")
    return sys.intern(a)


# -- stored values ---------------------------------------------------------------
#
# A stored value is the value itself when it is a scalar (None, bool, int, float, str,
# bytes) and a _Packed (its canonical msgpack bytes) when it is a list or a dict. Scalars
# are stored unwrapped because most registers hold one, and a wrapper would cost an
# object per register.


class _PyPacked(bytes):
    """The canonical msgpack bytes of a list or dict value."""

    __slots__ = ()


#: the stored form of a list or dict value: with the C extension its ``Packed``, the same
#: bytes subclass but not tracked by the garbage collector (a subclass defined in Python
#: always is, and a replica holds one per queued list value until its flush)
_Packed: type[bytes] = _PyPacked if speedups.chandles is None else speedups.chandles.Packed


_FLAT_TYPES = frozenset({type(None), bool, float, str, bytes})
_SCALAR_TYPES = _FLAT_TYPES | {int}


def _flat(v: list[Any] | tuple[Any, ...]) -> bool:
    """Whether ``v`` is a list of plain scalars (ints within 64 bits): already canonical,
    so its stored form is just its msgpack bytes (the common ``[score, label]`` value)."""
    for x in v:
        t = type(x)
        if t in _FLAT_TYPES:
            continue
        if t is int and _INT_MIN <= x < _INT_LIMIT:
            continue
        return False
    return True


def _check_keys(v: Any, what: str) -> None:
    """Dict keys must survive a msgpack round trip and sort deterministically."""
    if isinstance(v, list):
        for x in v:
            _check_keys(x, what)
    elif isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, _KEY_TYPES):
                raise TypeError(
                    f"{what}: dict keys must be str, bytes, int, bool or None, got {type(k).__name__}"
                )
            _check_keys(x, what)


def _flat_column(values: list[list[Any]]) -> list[Any] | None:
    """:func:`stored_from_wire` of a column of lists when every one is flat (scalars only,
    ints within 64 bits), a column at a time: the same stored values, or None to take
    them one by one (a nested or out-of-range value among them). With the C extension
    each list is packed by ``flat_packb`` (the same bytes as ``pack_small``, as a ``Packed``)."""
    native = speedups.chandles
    if native is not None and native.Packed is _Packed:  # (its Packed is the stored form)
        packed = list(map(native.flat_packb, values))
        return None if None in packed else packed
    inner = set(map(type, chain.from_iterable(values)))
    if not inner <= _SCALAR_TYPES:
        return None
    if int in inner:
        ints = [x for x in chain.from_iterable(values) if type(x) is int]
        if min(ints) < _INT_MIN or max(ints) >= _INT_LIMIT:
            return None
    pack = msgpack.Packer(use_bin_type=True, use_single_float=False).pack  # (as pack_small packs)
    return list(map(_Packed, map(pack, values)))


def _stored_column(values: list[Any]) -> list[Any] | None:
    """Wire values of many registers as stored values (validated), or None if an
    integer does not fit in 64 bits."""
    verdict = speedups.hot.scalar_column(values, _INT_MIN, _INT_LIMIT)
    if verdict == 0:  # not all scalars
        if all(type(v) is list for v in values):
            flat = _flat_column(values)
            if flat is not None:
                return flat
        return [stored_from_wire(v, "lww.value") for v in values]
    return values if verdict == 1 else None


def store_value(value: Any, what: str = "register value") -> Any:
    """The stored form of a caller's value (validates it)."""
    t = type(value)
    if value is None or t is bool or t is str or t is float or t is bytes:
        return value
    if t is int:
        if not _INT_MIN <= value < _INT_LIMIT:
            raise ValueError(f"{what}: integer {value} does not fit in 64 bits; store it as a str")
        return value
    # subclasses of scalars (IntEnum, StrEnum, numpy.float64) become the plain type, so
    # that a decoded state equals the original
    if isinstance(value, int):
        return store_value(int(value), what)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes(value)
    if (t is list or t is tuple) and _flat(value):
        return _Packed(pack_small(value))
    if isinstance(value, (list, tuple, dict)):
        try:
            canon = canonical(value)
        except TypeError as exc:
            raise TypeError(f"{what}: {exc}") from None
        _check_keys(canon, what)
        try:
            return _Packed(packb(canon))
        except (OverflowError, ValueError) as exc:
            raise ValueError(f"{what}: cannot be encoded ({exc})") from None
    raise TypeError(
        f"{what}: {t.__name__} cannot be stored; use None, bool, int, float, str, bytes, list or dict"
    )


def load_value(stored: Any) -> Any:
    """The value applications see (a fresh copy for containers)."""
    if type(stored) is _Packed:
        return unpack_stored(stored)
    return stored


def unpack_stored(data: bytes) -> Any:
    """The list or dict whose stored bytes (a ``_Packed``, or those bytes in a table's row)
    are ``data``: a fresh copy."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def stored_key(stored: Any) -> bytes:
    """The canonical bytes of a stored value: the total order used for tie-breaks."""
    if type(stored) is _Packed:
        return bytes(stored)
    return packb(stored)  # type: ignore[no-any-return]


def same_stored(a: Any, b: Any) -> bool:
    """Exact equality of stored values (1, 1.0 and True differ; NaN equals itself)."""
    if a is b:
        return True
    t = type(a)
    if t is not type(b):
        return False
    if t is float:
        return _F64.pack(a) == _F64.pack(b)
    return bool(a == b)


def stored_from_wire(v: Any, what: str) -> Any:
    """The stored form of a decoded value; containers must be in canonical form."""
    if v is None or isinstance(v, (bool, str, float, bytes)):
        return v
    if isinstance(v, int):
        if not _INT_MIN <= v < _INT_LIMIT:
            corrupt(what, "integer does not fit in 64 bits")
        return v
    if type(v) is list and _flat(v):
        return _Packed(pack_small(v))
    if isinstance(v, (list, dict)):
        canon = canonical(v)  # TypeError (bad type, too deep) becomes CorruptRecord
        _check_keys(canon, what)
        raw = packb(v)
        if packb(canon) != raw:
            corrupt(what, "value is not in canonical form (dict keys out of order)")
        return _Packed(raw)
    corrupt(what, f"unsupported value type {type(v).__name__}")


def _stored_repr(stored: Any) -> str:
    return repr(load_value(stored))


# -- LWWRegister -----------------------------------------------------------------------


class StampReads:
    """``timestamp`` and ``writer`` of a last-writer-wins state (``_ts`` -1 means never set)."""

    __slots__ = ()
    _ts: int
    _actor: str

    @property
    def timestamp(self) -> int | None:
        """The HLC timestamp of the winning write (``None`` if never set)."""
        return self._ts if self._ts >= 0 else None

    @property
    def writer(self) -> str | None:
        """The actor (replica id) of the winning write (``None`` if never set)."""
        return self._actor if self._ts >= 0 else None


@register
class LWWRegister(StampReads, CRDT[Any]):
    """The write with the highest HLC timestamp wins; equal timestamps go to the higher actor id.

    Starts with value ``None``. Cost: one timestamp, one (shared, interned) actor id and the
    value; an overwritten value is dropped at once, nothing grows. Only an identical
    ``(ts, actor)`` pair (which a correct HLC never produces) falls back to the larger
    canonical value bytes, so join stays commutative even then.
    Payload: ``[]`` never set, else ``[ts, actor, value]``.
    """

    # exactly three slots and no __dict__: 100k keys of one feature hold 100k of these
    __slots__ = ("_actor", "_ts", "_value")
    TYPE_TAG: ClassVar[str] = "lww"
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("set",)
    NEEDS_TIME: ClassVar[bool] = True

    _ts: int
    _actor: str
    _value: Any

    def __init__(self) -> None:
        # never set: ts -1 sorts below every real timestamp (those are >= 0)
        self._ts = -1
        self._actor = ""
        self._value = None

    @classmethod
    def _raw(cls, ts: int, actor: str, stored: Any) -> LWWRegister:
        r = cls.__new__(cls)
        r._ts = ts
        r._actor = actor
        r._value = stored
        return r

    # -- reads -------------------------------------------------------------------------
    def value(self) -> Any:
        v = self._value
        if type(v) is _Packed:
            return load_value(v)
        return v

    # -- mutators ----------------------------------------------------------------------
    def set(self, value: Any, *, actor: str, ts: int | None = None) -> LWWRegister:
        """Delta writing ``value`` at HLC time ``ts`` (default: the process clock's now).

        Pass the replica's ``HLC.now()``: a write whose ``(ts, actor)`` is below the
        current one loses to it and changes nothing.
        """
        a = intern_actor(actor)
        return LWWRegister._raw(check_ts(ts), a, store_value(value, "LWWRegister value"))

    # -- lattice -----------------------------------------------------------------------
    def join(self, other: LWWRegister) -> LWWRegister:
        # lww_pick spelled out inline: this is the hottest join in the library
        if other.__class__ is not self.__class__:
            self._check_joinable(other)
        ots = other._ts
        sts = self._ts
        if ots > sts:
            return other
        if ots < sts:
            return self
        oa = other._actor
        sa = self._actor
        if oa > sa:
            return other
        if oa < sa or other is self:
            return self
        # same (ts, actor): only from a misbehaving clock; keep join commutative
        if stored_key(other._value) > stored_key(self._value):
            return other
        return self

    # -- encoding ----------------------------------------------------------------------
    def _payload(self) -> Any:
        if self._ts < 0:
            return []
        v = self._value
        return [self._ts, self._actor, load_value(v) if type(v) is _Packed else v]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> LWWRegister:
        rows = want_list(payload, "lww")
        if not rows:
            return cls()
        if len(rows) != 3:
            corrupt("lww", "expected [] or [ts, actor, value]")
        return cls._raw(
            want_ts(rows[0], "lww.ts"),
            want_actor(rows[1], "lww.actor"),
            stored_from_wire(rows[2], "lww.value"),
        )

    # column form: the set shape [ts, actor, value], as (timestamps, actors, stored values)
    @classmethod
    def _payloads(cls, states: Sequence[CRDT[Any]]) -> list[Any]:
        regs: Sequence[LWWRegister] = states  # type: ignore[assignment]
        return [
            [s._ts, s._actor, s._value] if type(s._value) is not _Packed and s._ts >= 0 else s._payload()
            for s in regs
        ]

    @classmethod
    def _columns(cls, payloads: list[Any], version: int) -> Any:
        if not payloads or set(map(type, payloads)) != {list} or set(map(len, payloads)) != {3}:
            return None
        ts = list(map(_first, payloads))
        actors = list(map(_second, payloads))
        values = list(map(_third, payloads))
        if set(map(type, ts)) != {int} or min(ts) < 0 or max(ts) >= _TS_LIMIT:
            return None
        if set(map(type, actors)) != {str} or min(map(len, actors)) < 1:
            return None
        stored = _stored_column(values)
        if stored is None:
            return None
        return ts, list(map(sys.intern, actors)), stored

    # stamped form (delta version 2): the payload is the stored value; ts is the event's
    # HLC and the actor its origin (what the replica's writer always writes for ``set``)
    STAMPED_VERSION = 2

    @classmethod
    def _stamped_columns(cls, payloads: list[Any], hlcs: list[int] | None, origin: str) -> Any:
        assert hlcs is not None  # (STAMPED_NEEDS_HLCS: the decoder builds the column for registers)
        values = _stored_column(payloads)
        if values is None:
            return None
        return hlcs, [sys.intern(origin)] * len(hlcs), values

    @classmethod
    def _from_columns(cls, cols: Any) -> list[Any]:
        # (what ``_raw`` makes, a column at a time: ``_hot.lww_column``, in C when compiled)
        ts, actors, values = cols
        return speedups.hot.lww_column(LWWRegister, ts, actors, values)  # type: ignore[no-any-return]

    @classmethod
    def _join_columns(cls, table: MutableMapping[str, CRDT[Any]], keys: list[str], cols: Any,
                      start: int) -> tuple[int, list[int]]:
        fast = getattr(table, "_join_lww", None)
        if fast is not None:  # the packed table of crdtsync._tables compares stamps in place
            return fast(keys, cols, start)  # type: ignore[no-any-return]
        ts, actors, values = cols
        raw = LWWRegister._raw
        refused: list[int] = []
        for i in range(start, len(keys)):
            key = keys[i]
            d = raw(ts[i], actors[i], values[i])
            cur = table.get(key)
            if cur is None:
                table[key] = d
            elif type(cur) is LWWRegister:
                table[key] = cur.join(d)
            else:
                refused.append(i)
        return len(keys) - start - len(refused), refused

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, LWWRegister):
            return NotImplemented
        return (
            self._ts == other._ts
            and self._actor == other._actor
            and same_stored(self._value, other._value)
        )

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        if self._ts < 0:
            return "LWWRegister(None)"
        return f"LWWRegister({_stored_repr(self._value)}, ts={self._ts}, writer={self._actor!r})"


_W = TypeVar("_W", bound="_Stamped")


class _Stamped(Protocol):
    _ts: int
    _actor: str


def lww_pick(a: _W, b: _W, tie_key: Callable[[_W], bytes]) -> _W:
    """The last-writer-wins winner of ``a`` and ``b``: higher (ts, actor), then higher ``tie_key``.

    ``tie_key`` only decides identical (ts, actor) stamps, which a correct HLC never
    produces; it keeps join commutative even then.
    """
    if b._ts != a._ts:
        return b if b._ts > a._ts else a
    if b._actor != a._actor:
        return b if b._actor > a._actor else a
    if b is a:
        return a
    return b if tie_key(b) > tie_key(a) else a


# -- MVRegister ------------------------------------------------------------------------


def _pick(dot: Dot, a: Any, b: Any) -> Any:
    """Two values under one dot are one write, or two writes made from one state."""
    if not same_stored(a, b):
        raise reused("mvreg", dot, "two different values")
    return a


@register
class MVRegister(CRDT[tuple[Any, ...]]):
    """Concurrent writes are all kept and reported as a conflict; a write replaces every value it has seen.

    Starts empty (value ``()``). Cost: one live value per concurrent writer (one once the
    conflict is resolved) plus the causal context, a version vector of one int per actor
    that ever wrote this register; overwritten values are dropped at once, with no
    tombstones. Payload: ``[[[replica, seq, value], ...], context rows]``, entries sorted
    by dot.

    Same-dot rule: a mutator takes the writer's next dot from the state it is called on,
    so call it on the writer's current state (join each delta before making the next
    one; the Replica does). Joining two states that use one dot for two different writes
    raises :class:`~crdtsync.errors.DotReuse` (two values under one dot); a re-delivered
    identical delta is a no-op. Not detectable: a stale delta whose dot the other side
    has already seen removed looks exactly like an observed remove and is dropped.
    """

    __slots__ = ("_ctx", "_entries")
    TYPE_TAG: ClassVar[str] = "mvreg"
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("set",)
    RECORDS_REMOVALS: ClassVar[bool] = True

    _entries: dict[Dot, Any]
    _ctx: Context

    def __init__(self) -> None:
        self._entries = {}
        self._ctx = Context()

    @classmethod
    def _raw(cls, entries: dict[Dot, Any], ctx: Context) -> MVRegister:
        r = cls.__new__(cls)
        r._entries = entries
        r._ctx = ctx
        return r

    # -- reads -------------------------------------------------------------------------
    def value(self) -> tuple[Any, ...]:
        """The concurrent values, distinct, ordered by their canonical bytes."""
        by_key: dict[bytes, Any] = {}
        for v in self._entries.values():
            by_key.setdefault(stored_key(v), v)
        return tuple(load_value(by_key[k]) for k in sorted(by_key))

    @property
    def conflict(self) -> bool:
        """True when concurrent writes left more than one distinct value."""
        if len(self._entries) < 2:
            return False
        first, *rest = self._entries.values()
        return not all(same_stored(first, v) for v in rest)

    @property
    def entries(self) -> Mapping[Dot, Any]:
        """The live writes: dot (writer, seq) -> value (read-only view)."""
        return MappingProxyType({d: load_value(v) for d, v in self._entries.items()})

    @property
    def context(self) -> Context:
        """Every write this state has seen (live or overwritten)."""
        return self._ctx

    # -- mutators ----------------------------------------------------------------------
    def set(self, value: Any, *, actor: str) -> MVRegister:
        """Delta writing ``value`` and overwriting every value currently visible here."""
        a = intern_actor(actor)
        stored = store_value(value, "MVRegister value")
        dot = self._ctx.next_dot(a)
        return MVRegister._raw({dot: stored}, Context.from_dots([dot, *self._entries]))

    # -- lattice -----------------------------------------------------------------------
    def join(self, other: MVRegister) -> MVRegister:
        if other is self:
            return self
        if other.__class__ is not self.__class__:
            self._check_joinable(other)
        ca, cb = self._ctx, other._ctx
        entries = join_dotfun(self._entries, ca, other._entries, cb, _pick)
        ctx = ca.join(cb)
        if ctx == ca and _same_entries(entries, self._entries):
            return self
        if ctx == cb and _same_entries(entries, other._entries):
            return other
        return MVRegister._raw(entries, ctx)

    # -- removal records (for ORMap) ----------------------------------------------------
    def _removals(self) -> Removals:
        return Removals(self._ctx, frozenset(self._entries))

    def _forget(self, removals: Removals) -> MVRegister:
        entries = {d: v for d, v in self._entries.items() if not removals.removed(d)}
        return self if len(entries) == len(self._entries) else MVRegister._raw(entries, self._ctx)

    def _seen(self, record: Removals, actor: str) -> MVRegister:
        joined = self._ctx.join(Context.from_vv({actor: record.ctx.max_seq(actor)}))
        return self if joined == self._ctx else MVRegister._raw(self._entries, joined)

    # -- encoding ----------------------------------------------------------------------
    def _payload(self) -> Any:
        rows = [[d[0], d[1], load_value(self._entries[d])] for d in sorted(self._entries)]
        return [rows, self._ctx.to_payload()]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> MVRegister:
        top = want_list(payload, "mvreg")
        if len(top) != 2:
            corrupt("mvreg", "expected [entries, context]")
        ctx = Context.from_payload(top[1], "mvreg.context")
        entries: dict[Dot, Any] = {}
        last: Dot | None = None
        for row in want_list(top[0], "mvreg.entries"):
            row = want_list(row, "mvreg.entries")
            if len(row) != 3:
                corrupt("mvreg.entries", "entry is not [replica, seq, value]")
            dot = Dot(want_actor(row[0], "mvreg.entries"), want_int(row[1], "mvreg.entries", minimum=1))
            if last is not None and not last < dot:
                corrupt("mvreg.entries", "entries are not sorted by dot and unique")
            last = dot
            entries[dot] = stored_from_wire(row[2], "mvreg.value")
        check_dots_in_context(entries, ctx, "mvreg")
        return cls._raw(entries, ctx)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, MVRegister):
            return NotImplemented
        return self._ctx == other._ctx and _same_entries(self._entries, other._entries)

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        return f"MVRegister({self.value()!r})"


def _same_entries(a: Mapping[Dot, Any], b: Mapping[Dot, Any]) -> bool:
    if len(a) != len(b):
        return False
    for d, v in a.items():
        w = b.get(d, _MISSING)
        if w is _MISSING or not same_stored(v, w):
            return False
    return True


_MISSING = object()


# -- Max / Min registers ------------------------------------------------------------------


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes an int or a float, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} takes finite numbers, got {value}")
        return float(value)
    v = int(value)
    if not _INT_MIN <= v < _INT_LIMIT:
        raise ValueError(f"{what}: integer {v} does not fit in 64 bits")
    return v


def _sign(x: float) -> float:
    return math.copysign(1.0, x)


class _ExtremumRegister(CRDT["int | float | None"]):
    """Shared machinery of MaxRegister and MinRegister (not a registered type)."""

    __slots__ = ("_value",)
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("set",)

    _value: float | None  # an int or a float

    def __init__(self) -> None:
        self._value = None

    @classmethod
    def _raw(cls, value: float | None) -> Self:
        r = cls.__new__(cls)
        r._value = value
        return r

    @staticmethod
    def _beats(a: float, b: float) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self) -> float | None:
        return self._value

    def set(self, value: float, *, actor: str) -> Self:
        """Delta proposing ``value`` (a finite int or float); it shows only if it wins."""
        actor_of(actor)
        return self._raw(_check_number(value, f"{type(self).__name__}.set"))

    def join(self, other: Self) -> Self:
        if other.__class__ is not self.__class__:
            self._check_joinable(other)
        b = other._value
        if b is None:
            return self
        a = self._value
        if a is None:
            return other
        return other if self._beats(b, a) else self

    def _payload(self) -> Any:
        return self._value

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> Self:
        if payload is None:
            return cls()
        if not is_finite_number(payload):
            corrupt(cls.TYPE_TAG, f"expected nil or a finite number, got {type(payload).__name__}")
        if isinstance(payload, int) and not _INT_MIN <= payload < _INT_LIMIT:
            corrupt(cls.TYPE_TAG, "integer does not fit in 64 bits")
        return cls._raw(payload)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return same_stored(self._value, other._value)

    __hash__ = CRDT.__hash__


@register
class MaxRegister(_ExtremumRegister):
    """The largest value ever set wins; an int beats an equal float (1 over 1.0), +0.0 beats -0.0.

    Starts at ``None``. Cost: one number; nothing grows. Values are finite ints (64-bit)
    or floats; numbers compare exactly (``2**53 + 1 > float(2**53)``).
    Payload: ``nil`` never set, else the number.
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "maxreg"

    @staticmethod
    def _beats(a: float, b: float) -> bool:
        if a != b:
            return a > b
        ai, bi = type(a) is int, type(b) is int
        if ai != bi:
            return ai
        return not ai and _sign(a) > _sign(b)

    def __repr__(self) -> str:
        return f"MaxRegister({self._value!r})"


@register
class MinRegister(_ExtremumRegister):
    """The smallest value ever set wins; an int beats an equal float (1 over 1.0), -0.0 beats +0.0.

    Starts at ``None``. Cost: one number; nothing grows. Values are finite ints (64-bit)
    or floats; numbers compare exactly.
    Payload: ``nil`` never set, else the number.
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "minreg"

    @staticmethod
    def _beats(a: float, b: float) -> bool:
        if a != b:
            return a < b
        ai, bi = type(a) is int, type(b) is int
        if ai != bi:
            return ai
        return not ai and _sign(a) < _sign(b)

    def __repr__(self) -> str:
        return f"MinRegister({self._value!r})"
