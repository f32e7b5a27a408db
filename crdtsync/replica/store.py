"""The store: a replica's state tables, the context of what they hold, and its reads.

State is a map ``field -> entity key -> CRDT`` (LWW fields in a packed
:class:`~crdtsync._tables.LWWTable`). The context is every event folded into it; own
writes get contiguous seqs and are folded into the context lazily, when someone looks
(one version-vector entry), rather than on every write. ``position`` is the log position
of the last record applied. States are immutable values, so reads hand out references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

from .._tables import CounterTable, LWWTable, new_table
from ..clock import Context
from ..log._protocol import Position
from ..schema import SCHEMA_FIELD
from ..snapshots import state_digest
from ..types._base import CRDT
from .definitions import Definitions

__all__ = ["RowReader", "Store", "View"]

_ABSENT = object()
_new_tuple = tuple.__new__


class View(NamedTuple):
    """A consistent read: values of several fields of one entity and the context they come
    from (immutable; a named tuple, which a read path builds in a tenth of a dataclass's time)."""

    key: str
    values: Mapping[str, Any]
    context: Context
    position: Position | None
    hlc: int


class Store:
    """State tables, their context and log position."""

    def __init__(self, actor: str, definitions: Definitions) -> None:
        self.actor = actor
        self.definitions = definitions
        self.tables: dict[str, MutableMapping[str, CRDT[Any]]] = {}
        self._context = Context()
        #: the highest own seq written locally (the writer's); folded into the context lazily
        self.own_top: Callable[[], int] = lambda: 0
        #: called when :meth:`load` replaced every table (cached references go stale)
        self.on_load: Callable[[], None] = lambda: None
        #: position of the last log record applied
        self.position: Position | None = None
        #: events folded in (written or applied) since the last snapshot
        self.changed = 0
        #: the readers :meth:`view` reads with, per list of fields asked for (bounded)
        self._views: dict[tuple[str, ...], RowReader] = {}

    # -- context ---------------------------------------------------------------
    def ctx(self) -> Context:
        """The context, with this replica's own writes folded in."""
        top = self.own_top()
        c = self._context
        if top and c._vv.get(self.actor, 0) < top:
            c = self._context = c.add_range(self.actor, 1, top)
        return c

    def set_context(self, ctx: Context) -> None:
        self._context = ctx

    # -- tables ----------------------------------------------------------------
    def table(self, fname: str, tag: str | None) -> MutableMapping[str, CRDT[Any]]:
        """The table of ``fname``, created for type ``tag`` if new."""
        tbl = self.tables.get(fname)
        if tbl is None:
            tbl = self.tables[fname] = new_table(tag)
        return tbl

    def load(self, state: Mapping[str, Mapping[str, CRDT[Any]]], ctx: Context, position: Position | None) -> None:
        """Replace everything with a snapshot's state."""
        self.tables = {}
        for fname, rows in state.items():
            if rows:
                tag: str | None = next(iter(rows.values())).TYPE_TAG
            else:  # an empty table: the type its definition gives (the packed tables stay packed)
                d = self.definitions.find(fname)
                tag = d.type_tag if d is not None else None
            tbl = self.tables[fname] = new_table(tag)
            tbl.update(rows)
        self._context = ctx
        self.position = position
        self.on_load()

    # -- reads -----------------------------------------------------------------
    def state(self, fname: str, key: str) -> CRDT[Any]:
        s = self.tables.get(fname, {}).get(key)
        return s if s is not None else self.definitions.get(fname).empty()

    def value(self, fname: str, key: str) -> Any:
        tbl = self.tables.get(fname)
        if type(tbl) is LWWTable or type(tbl) is CounterTable:
            v = tbl.value_of(key, _ABSENT)
            if v is not _ABSENT:
                return v
        return self.state(fname, key).value()

    def row(self, key: str, fields: Sequence[str]) -> list[Any]:
        """The values of ``fields`` of ``key``, in that order (what :meth:`view` reads; for
        a caller that wants them as a list, such as a model's input row)."""
        tables = self.tables
        out: list[Any] = []
        put = out.append
        for f in fields:
            tbl = tables.get(f)
            if type(tbl) is LWWTable:  # the online-serving read: from the decoded-value cache
                if not tbl.own:
                    v = tbl.cache.get(key, _ABSENT)
                    if v is not _ABSENT:
                        put(v)
                        continue
                v = tbl.value_of(key, _ABSENT)
                put(v if v is not _ABSENT else self.value(f, key))
            else:
                put(self.value(f, key))
        return out

    def reader(self, fields: Sequence[str]) -> RowReader:
        """A :class:`RowReader` of ``fields``: :meth:`row` for a fixed list of fields, faster."""
        return RowReader(self, fields)

    def view(self, key: str, fields: Iterable[str], hlc: int) -> View:
        names = tuple(fields)
        read = self._views.get(names)
        if read is None:
            if len(self._views) >= self.VIEW_READERS:
                self._views.clear()
            read = self._views[names] = RowReader(self, names)
        values = dict(zip(names, read(key)))
        return _new_tuple(View, (key, values, self.ctx(), self.position, hlc))

    #: field lists whose :class:`RowReader` :meth:`view` keeps, at most (then it starts over)
    VIEW_READERS = 64

    def keys(self, fname: str) -> list[str]:
        return sorted(self.tables.get(fname, {}))

    def fields(self) -> list[str]:
        return sorted(f for f in self.tables if not f.startswith("_"))

    def digest(self) -> bytes:
        return state_digest({f: t for f, t in self.tables.items() if f != SCHEMA_FIELD})

    def export(self) -> dict[str, dict[str, CRDT[Any]]]:
        return {f: dict(t) for f, t in self.tables.items()}


class RowReader:
    """``reader(key)``: :meth:`Store.row` of a fixed list of fields (a model's input row,
    read once per prediction), with the table lookups done once.

    It keeps the fields' tables and, for LWW tables, their decoded-value caches and their
    own-write overlays (the dicts themselves: a table clears them, never replaces them);
    a row whose every LWW value is cached, while every one of those overlays is empty, is
    read with one pass over those caches. Anything else, and any change of the store's
    tables (a table created, a snapshot loaded), goes through :meth:`Store.row`, so both
    always return the same values.
    """

    __slots__ = ("_store", "_fields", "_tables", "_count", "_owns", "_caches", "_rest", "_prefix", "_order")

    def __init__(self, store: Store, fields: Sequence[str]) -> None:
        self._store = store
        self._fields = tuple(fields)
        self._tables: dict[str, Any] | None = None
        self._plan()

    def _plan(self) -> None:
        tables = self._store.tables
        owns, caches, rest, lww_ix = [], [], [], []
        for i, f in enumerate(self._fields):
            t = tables.get(f)
            if type(t) is LWWTable:
                owns.append(t.own)
                caches.append(t.cache)
                lww_ix.append(i)
            else:  # (a plain dict of states, or None: no table yet)
                rest.append((i, f, t if type(t) is dict else None))
        self._tables, self._count = tables, len(tables)
        self._owns, self._caches, self._rest = tuple(owns), tuple(caches), tuple(rest)
        #: whether the LWW fields come first (features before flags): then a row is their
        #: values followed by the others' without reordering
        self._prefix = lww_ix == list(range(len(lww_ix)))
        self._order = lww_ix

    def __call__(self, key: str) -> list[Any]:
        store = self._store
        tables = store.tables
        if tables is not self._tables or len(tables) != self._count:
            self._plan()
        if not any(self._owns):  # (an overlay with entries: the general path folds it first)
            try:
                head = [c[key] for c in self._caches]
            except KeyError:  # a value not decoded yet: the general path decodes (and caches) it
                return store.row(key, self._fields)
            if self._prefix:
                if self._rest:
                    head += [self._other(f, t, key) for _, f, t in self._rest]
                return head
            out: list[Any] = [None] * len(self._fields)
            for i, v in zip(self._order, head):
                out[i] = v
            for i, f, t in self._rest:
                out[i] = self._other(f, t, key)
            return out
        return store.row(key, self._fields)

    def _other(self, fname: str, table: dict[str, CRDT[Any]] | None, key: str) -> Any:
        """:meth:`Store.value` of a field whose table is not an LWW one (from the table
        itself when it is a plain dict holding ``key``)."""
        if table is not None:
            s = table.get(key)
            if s is not None:
                return s.value()
        return self._store.value(fname, key)
