"""The store: a replica's state tables, the context of what they hold, and its reads.

State is a map ``field -> entity key -> CRDT`` (LWW fields in a packed
:class:`~crdtsync._tables.LWWTable`). The context is every event folded into it; own
writes get contiguous seqs and are folded into the context lazily, when someone looks
(one version-vector entry), rather than on every write. ``position`` is the log position
of the last record applied. States are immutable values, so reads hand out references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, NamedTuple

from .._tables import CounterTable, LWWTable, new_table
from ..clock import Context
from ..log._protocol import Position
from ..schema import SCHEMA_FIELD
from ..snapshots import state_digest
from ..types._base import CRDT
from .definitions import Definitions

__all__ = ["Store", "View"]

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

    def view(self, key: str, fields: Iterable[str], hlc: int) -> View:
        tables = self.tables
        values = {}
        for f in fields:
            tbl = tables.get(f)
            if type(tbl) is LWWTable:  # the online-serving read: from the decoded-value cache
                v = tbl.cache.get(key, _ABSENT) if not tbl.own else _ABSENT
                if v is _ABSENT:
                    v = tbl.value_of(key, _ABSENT)
                    if v is _ABSENT:
                        v = self.value(f, key)
                values[f] = v
            else:
                values[f] = self.value(f, key)
        return _new_tuple(View, (key, values, self.ctx(), self.position, hlc))

    def keys(self, fname: str) -> list[str]:
        return sorted(self.tables.get(fname, {}))

    def fields(self) -> list[str]:
        return sorted(f for f in self.tables if not f.startswith("_"))

    def digest(self) -> bytes:
        return state_digest({f: t for f, t in self.tables.items() if f != SCHEMA_FIELD})

    def export(self) -> dict[str, dict[str, CRDT[Any]]]:
        return {f: dict(t) for f, t in self.tables.items()}
