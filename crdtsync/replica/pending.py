"""The writer's queue of own events not yet in the log, kept column by column.

An event in the queue is four list entries: its entity key, HLC stamp, *entry* (which
field, field version, delta type and item kind) and *item*. Seqs are implicit: the event
at index ``i`` has seq ``first + i``, so the queue never holds an
:class:`~crdtsync.events.Event` or a dot per write. The item is the delta itself
(kind :data:`DELTA`, the general mutator path) or, for the specialised handles of
:mod:`crdtsync.replica.handles`, only what the delta is made of: an LWW ``set`` keeps
its stored value (:data:`LWW_SET`; the delta is ``LWWRegister(stamp, actor, value)``), a
GCounter ``increment`` this replica's new total (:data:`OWN_TOTAL`; the delta is
``GCounter({actor: total})``), an LWW ``set`` of a flat list of scalars its packed
stored form (:data:`LWW_PACKED`: a delta like :data:`LWW_SET`'s). Those travel in their
type's *stamped* form (see :mod:`crdtsync.events`): the payload column is the item
column itself (for :data:`LWW_PACKED`, the lists unpacked again).

:meth:`Pending.encode` turns a :class:`Chunk` taken off the queue into log records of at
most :data:`MAX_BATCH` events, straight from the columns: batch format 2
(:func:`crdtsync.events.encode_v2`) when the codec writes it, else through a
:class:`~crdtsync.events.Batch` for the codec's own format.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from typing import Any

from .._encoding import pack_small
from ..events import Batch, Codec, Event, MsgpackCodec, encode_v2
from ..types._base import CRDT
from ..types.counters import GCounter
from ..types.registers import LWWRegister, load_value

__all__ = ["Pending", "Chunk", "DELTA", "LWW_SET", "OWN_TOTAL", "LWW_PACKED", "MAX_BATCH"]

#: events per log record when flushing
MAX_BATCH = 1024
#: item kinds: the delta itself; the stored value of an LWW ``set`` stamped with the event
#: (a scalar); the new own total of a GCounter ``increment``; the stored value of an LWW
#: ``set`` of a flat list of scalars (its packed bytes: the payload is the list again)
DELTA, LWW_SET, OWN_TOTAL, LWW_PACKED = 0, 1, 2, 3

Entry = tuple[str, int, 'type[CRDT[Any]]', int]  # (field, field version, delta class, item kind)

_new_tuple = tuple.__new__


class Chunk:
    """Events taken off the queue for one append (columns of equal length)."""

    __slots__ = ("first", "keys", "stamps", "fix", "items")

    def __init__(self, first: int, keys: list[str], stamps: list[int], fix: list[int], items: list[Any]) -> None:
        self.first = first
        self.keys = keys
        self.stamps = stamps
        self.fix = fix
        self.items = items

    @property
    def last(self) -> int:
        return self.first + len(self.keys) - 1

    def __len__(self) -> int:
        return len(self.keys)


class Pending:
    """The columnar queue of one replica's own events (see the module docstring).

    The column lists are never replaced, only emptied, so a handle may keep their bound
    ``append`` methods.
    """

    def __init__(self, actor: str, meta: Mapping[str, str], codec: Codec) -> None:
        self.actor = actor
        self.meta = dict(meta)
        self.codec = codec
        self._v2 = type(codec) is MsgpackCodec and codec.write_version == 2
        self._stamped = self._v2 and codec.stamped  # type: ignore[attr-defined]
        #: seq of the event at index 0 (of the next write when the queue is empty)
        self.first = 1
        self.keys: list[str] = []
        self.stamps: list[int] = []
        self.fix: list[int] = []
        self.items: list[Any] = []
        self.entries: list[Entry] = []
        self._entry_ix: dict[Entry, int] = {}

    def entry(self, fname: str, version: int, cls: type[CRDT[Any]], kind: int) -> int:
        """The index of an entry (registered on first use; entries are never dropped)."""
        e = (fname, version, cls, kind)
        ix = self._entry_ix.get(e)
        if ix is None:
            ix = self._entry_ix[e] = len(self.entries)
            self.entries.append(e)
        return ix

    def push(self, entry: int, key: str, stamp: int, item: Any) -> None:
        self.keys.append(key)
        self.stamps.append(stamp)
        self.fix.append(entry)
        self.items.append(item)

    def __len__(self) -> int:
        return len(self.keys)

    # -- taking events off ---------------------------------------------------------
    def peek(self) -> Chunk:
        """A copy of everything queued, left in the queue."""
        return Chunk(self.first, self.keys[:], self.stamps[:], self.fix[:], self.items[:])

    def take(self, n: int) -> Chunk:
        """The first ``n`` queued events, removed from the queue."""
        chunk = Chunk(self.first, self.keys[:n], self.stamps[:n], self.fix[:n], self.items[:n])
        for col in (self.keys, self.stamps, self.fix, self.items):
            del col[:n]
        self.first += n
        return chunk

    def put_back(self, chunk: Chunk) -> None:
        """Return a chunk taken last (its append failed) to the front of the queue."""
        if chunk.last + 1 != self.first:
            raise RuntimeError("only the chunk taken last can go back to the queue")
        self.keys[:0] = chunk.keys
        self.stamps[:0] = chunk.stamps
        self.fix[:0] = chunk.fix
        self.items[:0] = chunk.items
        self.first = chunk.first

    # -- events and records --------------------------------------------------------
    def delta(self, entry: int, stamp: int, item: Any) -> CRDT[Any]:
        kind = self.entries[entry][3]
        if kind == LWW_SET or kind == LWW_PACKED:
            return LWWRegister._raw(stamp, self.actor, item)
        if kind == OWN_TOTAL:
            return GCounter._of({self.actor: item})
        return item  # type: ignore[no-any-return]

    def event(self, index: int) -> Event:
        """The queued event at ``index``."""
        fname, version, _, _ = self.entries[self.fix[index]]
        stamp = self.stamps[index]
        delta = self.delta(self.fix[index], stamp, self.items[index])
        return _new_tuple(Event, (self.actor, self.first + index, stamp, fname, self.keys[index], delta, version))

    def events(self, chunk: Chunk) -> tuple[Event, ...]:
        actor, first, delta, entries = self.actor, chunk.first, self.delta, self.entries
        return tuple(
            _new_tuple(Event, (actor, first + i, s, entries[f][0], k, delta(f, s, it), entries[f][1]))
            for i, (k, s, f, it) in enumerate(zip(chunk.keys, chunk.stamps, chunk.fix, chunk.items))
        )

    def encode(self, chunk: Chunk) -> list[bytes]:
        """Log records for ``chunk`` (contiguous seqs by construction: not checked again)."""
        n = len(chunk)
        if not self._v2:
            events = self.events(chunk)
            return [self.codec.encode(Batch._trusted(self.actor, chunk.first + i, events[i:i + MAX_BATCH], self.meta))
                    for i in range(0, n, MAX_BATCH)]
        return [self._encode_v2(chunk, i, min(n, i + MAX_BATCH)) for i in range(0, n, MAX_BATCH)]

    def _payloads(self, entry: int, stamps: list[int], items: list[Any]) -> list[Any]:
        kind = self.entries[entry][3]
        if kind == DELTA:
            return self.entries[entry][2]._payloads(items)
        if kind == LWW_PACKED:  # the wire value of a packed list is the list
            items = list(map(load_value, items))
        if self._stamped:
            return items  # the stamped form: the payloads are the items
        if kind == LWW_SET or kind == LWW_PACKED:  # the full form [ts, actor, value] (tuples pack as arrays)
            return list(zip(stamps, repeat(self.actor), items))
        return [[(self.actor, total)] for total in items]  # GCounter's [[actor, total]]

    def _wire(self, entry: int) -> tuple[str, int, str, int]:
        """The ``fields`` entry of a queue entry: (field, version, type tag, delta version)."""
        fname, version, cls, kind = self.entries[entry]
        stamped = cls.STAMPED_VERSION
        if kind == DELTA or stamped is None or not self._stamped:
            return fname, version, cls.TYPE_TAG, cls.VERSION
        return fname, version, cls.TYPE_TAG, stamped

    def _encode_v2(self, chunk: Chunk, lo: int, hi: int) -> bytes:
        fix = chunk.fix[lo:hi]
        stamps = chunk.stamps[lo:hi]
        items = chunk.items[lo:hi]
        f0 = fix[0]
        packed = False
        if fix.count(f0) == len(fix):
            fields: list[list[Any]] = [list(self._wire(f0))]
            wire_fix: list[int] = []
            if self._prepacked(f0):
                payloads, packed = items, True  # stored flat lists: their bytes are their wire form
            else:
                payloads = self._payloads(f0, stamps, items)
        else:
            # several entries, each listed once in order of first use
            wire: dict[tuple[str, int, str, int], int] = {}
            wire_fix = []
            for f in fix:
                w = self._wire(f)
                j = wire.get(w)
                if j is None:
                    j = wire[w] = len(wire)
                wire_fix.append(j)
            fields = [list(w) for w in wire]
            if len(fields) == 1:
                wire_fix = []
            used = set(fix)
            packed = any(map(self._prepacked, used))  # then every payload goes in packed
            payloads = [None] * len(fix)
            for f in used:
                where = [i for i, g in enumerate(fix) if g == f]
                if packed and self._prepacked(f):
                    column = [items[i] for i in where]
                else:
                    column = self._payloads(f, [stamps[i] for i in where], [items[i] for i in where])
                    if packed:
                        column = list(map(pack_small, column))
                for i, p in zip(where, column):
                    payloads[i] = p
        return encode_v2(self.actor, chunk.first + lo, self.meta, fields, stamps, wire_fix,
                         chunk.keys[lo:hi], payloads, packed)

    def _prepacked(self, entry: int) -> bool:
        """Whether the queued items of ``entry`` are their payloads' msgpack bytes already
        (stored flat lists, in the stamped form)."""
        return self._stamped and self.entries[entry][3] == LWW_PACKED
