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

from ._encoding import packb
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
            row = _HDR.pack(state._ts, ai, 0) + packb(v)
        self._rows[key] = row
        if self._objects is not None:
            self._objects.pop(key, None)

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
