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
list or dict (the register's stored form). Actor ids are interned in a per-table list;
a table with more than 65,535 distinct writers falls back to storing register objects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, MutableMapping
from typing import Any

import msgpack

from ._encoding import pack_small
from .types._base import CRDT
from .types.registers import LWWRegister, _Packed

__all__ = ["LWWTable", "new_table"]

_HDR = struct.Struct("<qHB")
_HSIZE = _HDR.size
_MAX_ACTORS = 0xFFFF


class LWWTable(MutableMapping[str, CRDT[Any]]):
    """A dict-like table of LWW registers stored packed (see module docstring)."""

    __slots__ = ("_rows", "_actors", "_actor_ix", "_objects")

    def __init__(self) -> None:
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
        row = self._rows.get(key)
        if row is None:
            if self._objects is not None and key in self._objects:
                return self._objects[key]
            raise KeyError(key)
        ts, ai, kind = _HDR.unpack_from(row)
        body = row[_HSIZE:]
        value: Any = _Packed(body) if kind else msgpack.unpackb(body, raw=False)
        return LWWRegister._raw(ts, self._actors[ai], value)

    def get(self, key: str, default: Any = None) -> Any:  # hot path: no exception
        if key in self._rows or (self._objects is not None and key in self._objects):
            return self[key]
        return default

    def __setitem__(self, key: str, state: CRDT[Any]) -> None:
        if type(state) is not LWWRegister or state._ts < 0:
            self._store_object(key, state)
            return
        ai = self._ix(state._actor)
        if ai is None:
            self._store_object(key, state)
            return
        v = state._value
        if type(v) is _Packed:
            row = _HDR.pack(state._ts, ai, 1) + bytes(v)
        else:
            row = _HDR.pack(state._ts, ai, 0) + pack_small(v)
        self._rows[key] = row
        if self._objects is not None:
            self._objects.pop(key, None)

    #: LWWRegister mutators whose delta does not depend on the state they are called on,
    #: so a writer need not rebuild the current register (see :meth:`join_in`)
    BLIND_MUTATORS = frozenset({"set"})

    def join_in(self, key: str, state: CRDT[Any]) -> None:
        """``self[key] = state if key not in self else self[key].join(state)``, comparing the
        packed stamp in place instead of rebuilding the current register."""
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
        ts, actors, values = cols
        rows = self._rows
        names = self._actors
        actor_ix = self._actor_ix
        unpack = _HDR.unpack_from
        pack = _HDR.pack
        raw = LWWRegister._raw
        refused: list[int] = []
        for i in range(start, len(keys)):
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
            v = values[i]
            if type(v) is _Packed:
                rows[key] = pack(t, ai, 1) + v
            else:
                rows[key] = pack(t, ai, 0) + pack_small(v)
        return len(keys) - start - len(refused), refused

    def _store_object(self, key: str, state: CRDT[Any]) -> None:
        if self._objects is None:
            self._objects = {}
        self._objects[key] = state
        self._rows.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if key in self._rows:
            del self._rows[key]
        elif self._objects is not None and key in self._objects:
            del self._objects[key]
        else:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from self._rows
        if self._objects is not None:
            yield from self._objects

    def __len__(self) -> int:
        return len(self._rows) + (len(self._objects) if self._objects is not None else 0)

    def __contains__(self, key: object) -> bool:
        return key in self._rows or (self._objects is not None and key in self._objects)


def new_table(type_tag: str | None) -> MutableMapping[str, CRDT[Any]]:
    """The table a field of type ``type_tag`` keeps its per-entity states in."""
    if type_tag == LWWRegister.TYPE_TAG:
        return LWWTable()
    return {}
