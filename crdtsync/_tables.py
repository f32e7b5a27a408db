"""Per-field state tables: entity key -> CRDT state, with compact forms for hot types.

A replica keeps one table per field. The default is a plain dict of immutable CRDT
objects. A feature of last-writer-wins registers over many entity keys is the hot case
(one small value per customer, overwritten constantly), and a register object per key
costs about 110 bytes beyond the dict entry. :class:`LWWTable` stores each register as
one packed ``bytes`` instead and rebuilds the :class:`~crdtsync.types.registers.LWWRegister`
on access, so the table behaves exactly like the dict (same states in, same states out)
at about half the memory.

Packed record (in memory only; snapshots and the wire use the type's own encoding)::

    ts: i64 LE | actor index: u16 LE | kind: u8 | body

``kind`` 0: body is the msgpack of a scalar value; 1: body is the canonical msgpack of a
list or dict (the register's stored form); 2: body is a signed 64-bit integer (i64 LE);
3: body is a float (f64 LE). Kinds 2 and 3 are one ``struct`` call to build and read, the
hot case of numeric features. Actor ids are interned in a per-table list; a table with
more than 65,535 distinct writers falls back to storing register objects, and so does a
register stamped beyond the i64 of a row (a valid u64 stamp of 2**63 or more).

The table also keeps ``max_ts``, an upper bound of every stamp it holds. A batch of
writes from one writer whose stamps all exceed it and increase along the batch wins
against every row, so it is stored in bulk without a comparison per key
(:meth:`LWWTable._join_lww`); a replica's own writes, stamped by a clock that has
observed every stamp applied here, take the same shortcut one at a time
(:meth:`LWWTable.own_overlay`). Both go to the table's *overlay* (``own``: key -> the
stamp and stored value, unpacked), which is packed into rows in bulk when the table is
next read or joined into otherwise (:meth:`LWWTable.fold`): a key written many times
between two reads is packed once.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from itertools import islice, repeat
from typing import Any

import msgpack

from . import speedups
from ._encoding import pack_small
from .types._base import CRDT
from .types.counters import GCounter
from .types.registers import LWWRegister, _Packed, unpack_stored

__all__ = ["CounterTable", "LWWTable", "new_table"]

_HDR = struct.Struct("<qHB")
_HSIZE = _HDR.size
_INT_ROW = struct.Struct("<qHBq")
_FLOAT_ROW = struct.Struct("<qHBd")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_I64_MIN, _I64_LIMIT = -(2**63), 2**63
_MAX_ACTORS = 0xFFFF
_KIND_MSGPACK, _KIND_PACKED, _KIND_INT, _KIND_FLOAT = 0, 1, 2, 3
_MISSING = object()


def _row(ts: int, ai: int, v: Any) -> bytes:
    """The packed row of a register ``(ts, actor index, stored value)``."""
    t = type(v)
    if t is int and _I64_MIN <= v < _I64_LIMIT:
        return _INT_ROW.pack(ts, ai, _KIND_INT, v)
    if t is float:
        return _FLOAT_ROW.pack(ts, ai, _KIND_FLOAT, v)
    if t is _Packed:
        packed: bytes = _HDR.pack(ts, ai, _KIND_PACKED) + v
        return packed
    return _HDR.pack(ts, ai, _KIND_MSGPACK) + pack_small(v)


def _rows_of(stamps: Sequence[int], ais: Iterable[int], values: Sequence[Any]) -> Iterable[bytes]:
    """``map(_row, stamps, ais, values)``, a column at a time when every value is of one
    kind (the common record: the same bytes, without a Python call per row)."""
    kinds = set(map(type, values))
    if kinds == {_Packed}:
        return map(operator.add, map(_HDR.pack, stamps, ais, repeat(_KIND_PACKED)), values)
    if kinds == {float}:
        return map(_FLOAT_ROW.pack, stamps, ais, repeat(_KIND_FLOAT), values)
    if kinds == {int} and min(values) >= _I64_MIN and max(values) < _I64_LIMIT:
        return map(_INT_ROW.pack, stamps, ais, repeat(_KIND_INT), values)
    return map(_row, stamps, ais, values)


def _row_value(row: bytes, kind: int) -> Any:
    if kind == _KIND_INT:
        return _I64.unpack_from(row, _HSIZE)[0]
    if kind == _KIND_FLOAT:
        return _F64.unpack_from(row, _HSIZE)[0]
    if kind == _KIND_PACKED:
        return _Packed(row[_HSIZE:])
    return msgpack.unpackb(row[_HSIZE:], raw=False)


class LWWTable(MutableMapping[str, CRDT[Any]]):
    """A dict-like table of LWW registers stored packed (see module docstring)."""

    __slots__ = ("_rows", "_actors", "_actor_ix", "_objects", "max_ts", "own", "_own_ai", "_foreign", "cache")

    def __init__(self) -> None:
        #: decoded scalar values of rows read lately (every path that changes a row drops
        #: its entry; bounded by VALUE_CACHE), see :meth:`value_of`; valid while
        #: :attr:`own` is empty (reads fold it first)
        self.cache: dict[str, Any] = {}
        #: own writes not packed yet: key -> (ts, scalar value), see :meth:`own_overlay`
        #: and remote records joined in bulk: key -> (ts, stored value, actor index)
        self.own: dict[str, tuple[Any, ...]] = {}
        self._own_ai = 0
        self._foreign = False  # whether the overlay holds entries of the second form
        #: an upper bound of every stamp in the table (see the module docstring)
        self.max_ts = -1
        self._rows: dict[str, bytes] = {}
        self._actors: list[str] = []
        self._actor_ix: dict[str, int] = {}
        self._objects: dict[str, CRDT[Any]] | None = None  # fallback beyond 65,535 writers

    def _ix(self, actor: str) -> int | None:
        i = self._actor_ix.get(actor)
        if i is None:
            if len(self._actors) >= _MAX_ACTORS:
                return None
            i = len(self._actors)
            self._actors.append(actor)
            self._actor_ix[actor] = i
        return i

    def __getitem__(self, key: str) -> CRDT[Any]:
        if self.own:
            self.fold()
        row = self._rows.get(key)
        if row is None:
            if self._objects is not None and key in self._objects:
                return self._objects[key]
            raise KeyError(key)
        ts, ai, kind = _HDR.unpack_from(row)
        return LWWRegister._raw(ts, self._actors[ai], _row_value(row, kind))

    #: decoded values kept for reads, at most (the cache starts over when full)
    VALUE_CACHE = 65_536

    def value_of(self, key: str, default: Any = None) -> Any:
        """``self[key].value()`` (``default`` for a key not here), without building the
        register, and from the decoded-value cache when the row was read before."""
        if self.own:
            self.fold()
        v = self.cache.get(key, _MISSING)
        if v is not _MISSING:
            return v
        row = self._rows.get(key)
        if row is None:
            if self._objects is not None and key in self._objects:
                return self._objects[key].value()
            return default
        kind = row[_HSIZE - 1]
        if kind == _KIND_PACKED:  # a list or dict: a fresh copy per read, never cached
            return unpack_stored(row[_HSIZE:])
        if kind == _KIND_INT:
            v = _I64.unpack_from(row, _HSIZE)[0]
        elif kind == _KIND_FLOAT:
            v = _F64.unpack_from(row, _HSIZE)[0]
        else:
            v = msgpack.unpackb(row[_HSIZE:], raw=False)
        values = self.cache
        if len(values) >= self.VALUE_CACHE:
            values.clear()
        values[key] = v
        return v

    def own_overlay(self, actor: str) -> dict[str, tuple[int, Any]] | None:
        """The dict a writer puts its own ``set`` of a scalar into, as ``(ts, value)``,
        provided ``ts > self.max_ts`` (then it wins against every row; the writer raises
        ``max_ts`` to it). Rows are packed in bulk (:meth:`fold`) before the table is
        read or joined into, so the table behaves as if each write was stored at once.
        None if ``actor`` cannot be interned or the table holds register objects."""
        if self._objects is not None:
            return None
        ai = self._ix(actor)
        if ai is None:
            return None
        if ai != self._own_ai:
            self.fold()
            self._own_ai = ai
        return self.own

    #: overlay entries at most, after a remote record joined in bulk (then it is folded)
    OVERLAY_LIMIT = 65_536

    def fold(self) -> None:
        """Pack the overlay into rows: the own writes of :meth:`own_overlay` (``(ts,
        value)``, of the own actor) and the records joined in bulk by :meth:`_join_lww`
        (``(ts, value, actor index)``). Every entry won against every row and every
        earlier entry when it was put there (its stamp exceeded ``max_ts``), so a later
        entry for a key replacing an earlier one is the join."""
        own = self.own
        if not own:
            return
        ai = self._own_ai
        entries: Any = own.values()
        if self._foreign:
            self._foreign = False
            if set(map(len, entries)) == {3}:  # (a remote record's entries only)
                stamps, values, ais = zip(*entries)
                new = _rows_of(stamps, ais, values)
            else:
                new = [_row(e[0], e[2], e[1]) if len(e) == 3 else _row(e[0], ai, e[1]) for e in entries]
        else:
            stamps, values = zip(*entries)
            new = _rows_of(stamps, repeat(ai), values)
        self._rows.update(zip(own, new))
        cache = self.cache
        if cache:
            for key in own:
                cache.pop(key, None)
        if self._objects is not None:  # (register objects appeared since: rows win)
            for key in own:
                self._objects.pop(key, None)
        own.clear()

    def get(self, key: str, default: Any = None) -> Any:  # hot path: no exception
        if self.own:
            self.fold()
        if key in self._rows or (self._objects is not None and key in self._objects):
            return self[key]
        return default

    def __setitem__(self, key: str, state: CRDT[Any]) -> None:
        if self.own:
            self.fold()
        if type(state) is not LWWRegister or not 0 <= state._ts < _I64_LIMIT:
            self._store_object(key, state)  # (a stamp beyond the i64 of a packed row, too)
            return
        ai = self._ix(state._actor)
        if ai is None:
            self._store_object(key, state)
            return
        ts = state._ts
        if ts > self.max_ts:
            self.max_ts = ts
        self._rows[key] = _row(ts, ai, state._value)
        self.cache.pop(key, None)
        if self._objects is not None:
            self._objects.pop(key, None)

    #: LWWRegister mutators whose delta does not depend on the state they are called on,
    #: so a writer need not rebuild the current register (see :meth:`join_in`)
    BLIND_MUTATORS = frozenset({"set"})

    def join_in(self, key: str, state: CRDT[Any]) -> None:
        """``self[key] = state if key not in self else self[key].join(state)``, comparing the
        packed stamp in place instead of rebuilding the current register."""
        if self.own:
            self.fold()
        if type(state) is LWWRegister and state._ts >= 0:
            row = self._rows.get(key)
            if row is None and (self._objects is None or key not in self._objects):
                self[key] = state
                return
            if row is not None:
                ts, ai, _ = _HDR.unpack_from(row)
                if state._ts < ts:
                    return
                if state._ts == ts:
                    actor = self._actors[ai]
                    if state._actor < actor:
                        return
                    if state._actor == actor:  # same stamp twice: tie-break on the value
                        self[key] = self[key].join(state)
                        return
                self[key] = state
                return
        cur = self.get(key)
        self[key] = state if cur is None else cur.join(state)

    def _join_lww(self, keys: list[str], cols: Any, start: int) -> tuple[int, list[int]]:
        """``LWWRegister._join_columns`` for this table: compare stamps in the packed rows.

        Same result as ``self[k] = self[k].join(d)`` per delta (an unchanged row is left
        as it is), without building a register per delta or per current row.
        """
        cache = self.cache
        if cache:
            drop = cache.pop
            for key in islice(keys, start, None):
                drop(key, None)
        ts, actors, values = cols
        rows = self._rows
        n = len(keys)
        first = start  # the first event the loop below joins
        if self._objects is None and n > start:
            first_actor = actors[start]
            acts = actors[start:] if start else actors
            ai = self._ix(first_actor) if acts.count(first_actor) == n - start else None
            if ai is not None:  # (one writer)
                own = self.own
                hot = speedups.hot
                if self.max_ts < ts[start] and ts[-1] < _I64_LIMIT and hot.strictly_rising(ts, start):
                    # stamps rising along the record and above every row and overlay entry
                    # here: every delta wins, the last one per key (the highest stamp)
                    # stays; into the overlay, packed when the table is next read (fold)
                    hot.overlay_put(own, keys, ts, values, start, ai)
                    self._foreign = True
                    self.max_ts = ts[-1]
                    if len(own) > self.OVERLAY_LIMIT:
                        self.fold()
                    return n - start, []
                # else each delta against what is here for its key (the overlay's entry,
                # else the row): the winners into the overlay; a record of another
                # partition read after a later one, say. The loop below takes whatever
                # overlay_join leaves (a tie, an odd stamp)
                first, top = hot.overlay_join(own, rows, self._actors, self._own_ai, keys, ts, values, start, ai)
                if top >= 0:
                    self._foreign = True
                    if top > self.max_ts:
                        self.max_ts = top
                if first >= n:
                    if len(own) > self.OVERLAY_LIMIT:
                        self.fold()
                    return n - start, []
        if self.own:
            self.fold()
        names = self._actors
        actor_ix = self._actor_ix
        unpack = _HDR.unpack_from
        raw = LWWRegister._raw
        refused: list[int] = []
        top = self.max_ts
        for i in range(first, n):
            key = keys[i]
            t = ts[i]
            a = actors[i]
            row = rows.get(key)
            if row is not None:
                cur_t, cur_ai, _ = unpack(row)
                if t < cur_t:
                    continue
                if t == cur_t:
                    cur_a = names[cur_ai]
                    if a < cur_a:
                        continue
                    if a == cur_a:  # same stamp twice: the rare tie-break on the value
                        self[key] = self[key].join(raw(t, a, values[i]))
                        continue
            elif self._objects is not None and key in self._objects:
                cur = self._objects[key]
                if type(cur) is not LWWRegister:
                    refused.append(i)
                else:
                    self[key] = cur.join(raw(t, a, values[i]))
                continue
            ai = actor_ix.get(a)
            if ai is None:
                ai = self._ix(a)
                if ai is None:
                    self._store_object(key, raw(t, a, values[i]))
                    continue
            if t >= _I64_LIMIT:  # beyond a packed row's i64 stamp
                self._store_object(key, raw(t, a, values[i]))
                continue
            if t > top:
                top = t
            rows[key] = _row(t, ai, values[i])
        if top > self.max_ts:
            self.max_ts = top
        return n - start - len(refused), refused

    def _store_object(self, key: str, state: CRDT[Any]) -> None:
        if self.own:
            self.fold()
        ts = getattr(state, "_ts", -1)
        if type(ts) is int and ts > self.max_ts:
            self.max_ts = ts
        if self._objects is None:
            self._objects = {}
        self._objects[key] = state
        self._rows.pop(key, None)
        self.cache.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if self.own:
            self.fold()
        self.cache.pop(key, None)
        if key in self._rows:
            del self._rows[key]
        elif self._objects is not None and key in self._objects:
            del self._objects[key]
        else:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        if self.own:
            self.fold()
        yield from self._rows
        if self._objects is not None:
            yield from self._objects

    def __len__(self) -> int:
        if self.own:
            self.fold()
        return len(self._rows) + (len(self._objects) if self._objects is not None else 0)

    def __contains__(self, key: object) -> bool:
        if self.own:
            self.fold()
        return key in self._rows or (self._objects is not None and key in self._objects)


class CounterTable(MutableMapping[str, CRDT[Any]]):
    """A dict-like table of GCounters keeping each key's per-actor totals in a private,
    mutable dict: joining a delta raises one total in place instead of copying the
    counter, and a read hands out a fresh :class:`~crdtsync.types.counters.GCounter`
    (states stay immutable values for everyone outside). A state of another type put
    here is kept as an object (and refused by the joins, as a plain table would)."""

    __slots__ = ("rows", "_objects")

    def __init__(self) -> None:
        #: key -> {actor: total}; never handed out
        self.rows: dict[str, dict[str, int]] = {}
        self._objects: dict[str, CRDT[Any]] = {}

    def __getitem__(self, key: str) -> CRDT[Any]:
        row = self.rows.get(key)
        if row is None:
            return self._objects[key]
        return GCounter._of(dict(row))

    def get(self, key: str, default: Any = None) -> Any:  # hot path: no exception
        row = self.rows.get(key)
        if row is not None:
            return GCounter._of(dict(row))
        return self._objects.get(key, default) if self._objects else default

    def value_of(self, key: str, default: Any = None) -> Any:
        """``self[key].value()`` without building the counter."""
        row = self.rows.get(key)
        if row is not None:
            return sum(row.values())
        obj = self._objects.get(key) if self._objects else None
        return default if obj is None else obj.value()

    def __setitem__(self, key: str, state: CRDT[Any]) -> None:
        if type(state) is GCounter:
            self.rows[key] = dict(state._counts)
            if self._objects:
                self._objects.pop(key, None)
        else:
            self._objects[key] = state
            self.rows.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if key in self.rows:
            del self.rows[key]
        else:
            del self._objects[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.rows
        yield from self._objects

    def __len__(self) -> int:
        return len(self.rows) + len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self.rows or key in self._objects

    def _join_gcounter(self, keys: list[str], cols: Any, start: int) -> tuple[int, list[int]]:
        """``GCounter._join_columns`` for this table: raise totals in place."""
        actors, totals = cols
        rows = self.rows
        objects = self._objects
        n = len(keys)
        if not objects and n > start:
            first = actors[start]
            if (actors[start:] if start else actors).count(first) == n - start:  # one writer
                speedups.hot.raise_totals(rows, keys, totals, start, first)
                return n - start, []
        refused: list[int] = []
        for i in range(start, n):
            key = keys[i]
            row = rows.get(key)
            if row is None:
                if objects and key in objects:
                    refused.append(i)
                    continue
                rows[key] = {actors[i]: totals[i]}
            else:
                a = actors[i]
                if totals[i] > row.get(a, 0):
                    row[a] = totals[i]
        return n - start - len(refused), refused


def new_table(type_tag: str | None) -> MutableMapping[str, CRDT[Any]]:
    """The table a field of type ``type_tag`` keeps its per-entity states in."""
    if type_tag == LWWRegister.TYPE_TAG:
        return LWWTable()
    if type_tag == GCounter.TYPE_TAG:
        return CounterTable()
    return {}
