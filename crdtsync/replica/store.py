"""The store: a replica's state tables, the context of what they hold, and its reads.

State is a map ``field -> entity key -> CRDT`` (LWW fields in a packed
:class:`~crdtsync._tables.LWWTable`). The context is every event folded into it; own
writes get contiguous seqs and are folded into the context lazily, when someone looks
(one version-vector entry), rather than on every write. ``position`` is the log position
of the last record applied. States are immutable values, so reads hand out references.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .._tables import new_table
from ..clock import Context
from ..log._protocol import Position
from ..schema import SCHEMA_FIELD
from ..snapshots import state_digest
from ..types._base import CRDT
from .definitions import Definitions

__all__ = ["Store", "View"]


@dataclass(frozen=True)
class View:
    """A consistent read: values of several fields of one entity and the context they come from."""

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
        self.own_top = 0  # highest own seq written locally; folded into the context lazily
        #: position of the last log record applied
        self.position: Position | None = None
        #: events folded in (written or applied) since the last snapshot
        self.changed = 0

    # -- context ---------------------------------------------------------------
    def ctx(self) -> Context:
        """The context, with this replica's own writes folded in."""
        top = self.own_top
        if top:
            c = self._context
            if c._vv.get(self.actor, 0) < top:
                c = c.add_range(self.actor, 1, top)
                self._context = c
            self.own_top = 0
        return self._context

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
            tbl = self.tables[fname] = new_table(next(iter(rows.values())).TYPE_TAG if rows else None)
            tbl.update(rows)
        self._context = ctx
        self.own_top = 0
        self.position = position

    # -- reads -----------------------------------------------------------------
    def state(self, fname: str, key: str) -> CRDT[Any]:
        s = self.tables.get(fname, {}).get(key)
        return s if s is not None else self.definitions.get(fname).empty()

    def value(self, fname: str, key: str) -> Any:
        return self.state(fname, key).value()

    def view(self, key: str, fields: Iterable[str], hlc: int) -> View:
        values = {f: self.value(f, key) for f in fields}
        return View(key, values, self.ctx(), self.position, hlc)

    def keys(self, fname: str) -> list[str]:
        return sorted(self.tables.get(fname, {}))

    def fields(self) -> list[str]:
        return sorted(f for f in self.tables if not f.startswith("_"))

    def digest(self) -> bytes:
        return state_digest({f: t for f, t in self.tables.items() if f != SCHEMA_FIELD})

    def export(self) -> dict[str, dict[str, CRDT[Any]]]:
        return {f: dict(t) for f, t in self.tables.items()}
