"""Write handles: a writer specialised once per (field, op), for hot loops.

``replica.writer("score", "set")`` returns a function ``handle(key, *args)`` that does
what ``replica.write("score", key, "set", *args)`` does without building and returning
an :class:`~crdtsync.events.Event` (``replica.context`` has the dots). The permission check, the
mutator lookup and the table lookup are done once, when the handle is made, and again
only when something they depend on changes (a definition learned, the fleet or schema
changed, the store reloaded, subscribers came or went, the replica closed: the writer's
``generation``; a definition added to the schema in code: the schema's own generation,
which the writer is not told about).

``LWWRegister.set`` of a scalar value (int, float, str, bool, None, bytes) is specialised
further: no register object and no delta object is built; the value goes to the columnar
queue and to the packed table row directly
(:meth:`~crdtsync._tables.LWWTable.own_overlay`, packed in bulk). Anything else (other types and
mutators, list/dict values, a table holding a newer stamp than this clock's, subscribers
to notify) takes the general path of :meth:`~crdtsync.replica.writer.Writer.write_raw`,
so a handle never behaves differently from ``write``.

Both specialised handles inline the clock's fast path (:meth:`~crdtsync.clock.HLC.stamp_fast`:
``time_ns()`` inside the clock's window of the current millisecond, on the owner thread):
the test and ``last + 1`` cost less than half a call of :meth:`~crdtsync.clock.HLC.now`,
which they call otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import get_ident
from time import time_ns
from typing import Any

from .._tables import CounterTable, LWWTable
from ..types.counters import GCounter
from .pending import LWW_SET, OWN_TOTAL
from .writer import Writer

__all__ = ["WriteHandle", "make_handle"]

#: ``handle(key, *args, **kwargs)``: see the module docstring
WriteHandle = Callable[..., None]

_I64_MIN, _U64_LIMIT, _I64_LIMIT = -(2**63), 2**64, 2**63
_FAST_SCALARS = frozenset({float, str, bool, bytes, type(None)})


def _check_key(key: Any) -> None:
    """What :meth:`~crdtsync.replica.writer.Writer.write` checks of a key (``write_raw``,
    which the handles' general path calls, does not)."""
    if not isinstance(key, str):
        raise TypeError(f"entity keys are str, got {type(key).__name__}")


def make_handle(w: Writer, fname: str, op: str) -> WriteHandle:
    """A write handle for ``op`` on field ``fname`` (raises now if this replica may not
    write it at ``LOCAL``, or the field's type has no such mutator)."""
    empty, version, lww = w.plan(fname)
    cls = type(empty())
    if op not in cls.MUTATORS:
        raise ValueError(f"{cls.__name__} has no mutator {op!r}; it has {list(cls.MUTATORS)}")
    if lww and op == "set":
        return _lww_set(w, fname)
    if cls is GCounter and op == "increment":
        return _increment(w, fname)

    schema = w._definitions.schema
    gen, schema_gen = w.generation, schema._generation
    plan = (empty, version, lww)

    def handle(key: str, *args: Any, **kwargs: Any) -> None:
        if w.generation is not gen or schema._generation != schema_gen:
            refresh()
        _check_key(key)
        w.write_raw(fname, key, plan[0], op, args, kwargs, plan[1], plan[2])

    def refresh() -> None:
        nonlocal gen, schema_gen, plan
        g, sg = w.generation, schema._generation
        plan = w.plan(fname)  # (raises if writing is now refused: then the next call asks again)
        gen, schema_gen = g, sg

    return handle


def _lww_set(w: Writer, fname: str) -> WriteHandle:
    """The handle of ``set`` on an LWW field (see the module docstring)."""
    store, queue, stats, subs = w._store, w.queue, w._stats, w._subs
    clk = w.hlc
    now = clk.now
    keys = queue.keys
    push_key, push_stamp, push_fix, push_item = keys.append, queue.stamps.append, queue.fix.append, queue.items.append
    schema = w._definitions.schema
    gen: object = None
    schema_gen = -1
    tbl: LWWTable | None = None
    own: dict[str, tuple[int, Any]] | None = None
    entry = 0
    listening = False
    empty: Callable[[], Any] = LWWTable  # replaced by refresh()
    version = 1

    def refresh() -> None:
        """Re-plan after the writer's generation moved (raises if writing is now refused)."""
        nonlocal gen, schema_gen, tbl, own, entry, empty, version, listening
        if w.closed:
            raise RuntimeError("replica is closed")
        empty, version, _ = w.plan(fname)
        t = store.tables.get(fname)
        tbl = t if type(t) is LWWTable else None
        own = tbl.own_overlay(w.actor) if tbl is not None else None
        entry = queue.entry(fname, version, type(empty()), LWW_SET)
        listening = subs.active  # subscribers come and go through the generation too
        gen, schema_gen = w.generation, schema._generation

    def general(key: str, value: Any, ts: int | None = None) -> None:
        _check_key(key)
        w.write_raw(fname, key, empty, "set", (value,), {}, version, True, ts)
        if own is None and type(store.tables.get(fname)) is LWWTable:
            refresh()  # the first write made the table

    def handle(key: str, value: Any) -> None:
        if w.generation is not gen or schema._generation != schema_gen:
            refresh()
        t = type(value)
        if (own is None or type(key) is not str or listening
                or (t is not int and t not in _FAST_SCALARS) or (t is int and not _I64_MIN <= value < _U64_LIMIT)):
            general(key, value)
            return
        t = time_ns()
        if clk._fast_from <= t < clk._fast_to and get_ident() == clk._owner:
            ts = clk._last = clk._last + 1  # (HLC.stamp_fast, inlined)
            if clk._shared:
                ts = clk._reissue(ts)
        else:
            ts = now()
        if ts <= tbl.max_ts:  # type: ignore[union-attr]  # the table holds a stamp from beyond this clock
            general(key, value, ts)  # (with this stamp: the event write() would have made)
            return
        own[key] = (ts, value)
        tbl.max_ts = ts  # type: ignore[union-attr]
        push_key(key)
        push_stamp(ts)
        push_fix(entry)
        push_item(value)
        stats.events_local += 1

    refresh()
    return handle


def _increment(w: Writer, fname: str) -> WriteHandle:
    """The handle of ``increment`` on a GCounter field: the queue keeps the new own total
    (the stamped delta form) and the counter table raises it in place; no counter or
    delta object is made."""
    queue, stats, subs, actor, store = w.queue, w._stats, w._subs, w.actor, w._store
    clk = w.hlc
    now = clk.now
    push_key, push_stamp, push_fix, push_item = queue.keys.append, queue.stamps.append, queue.fix.append, queue.items.append
    schema = w._definitions.schema
    gen: object = None
    schema_gen = -1
    tbl: CounterTable | None = None
    rows: dict[str, dict[str, int]] = {}
    entry = 0
    empty: Callable[[], Any] = GCounter
    version = 1
    listening = False

    def refresh() -> None:
        nonlocal gen, schema_gen, tbl, rows, entry, empty, version, listening
        if w.closed:
            raise RuntimeError("replica is closed")
        empty, version, _ = w.plan(fname)
        t = store.tables.get(fname)
        tbl = t if type(t) is CounterTable else None
        rows = tbl.rows if tbl is not None else {}
        entry = queue.entry(fname, version, GCounter, OWN_TOTAL)
        listening = subs.active  # subscribers come and go through the generation too
        gen, schema_gen = w.generation, schema._generation

    def general(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        _check_key(key)
        w.write_raw(fname, key, empty, "increment", args, kwargs, version)
        if tbl is None and type(store.tables.get(fname)) is CounterTable:
            refresh()  # the first write made the table

    def handle(key: str, n: int = 1) -> None:
        # (no **kwargs: GCounter.increment takes none but ``actor``, which the handle
        # passes; a keyword raises TypeError here as it would in the mutator)
        if w.generation is not gen or schema._generation != schema_gen:
            refresh()
        row = rows.get(key)
        if (tbl is None or type(key) is not str or type(n) is not int or n < 1 or listening
                or (row is None and key in tbl)):
            general(key, (n,), {})
            return
        total = (row.get(actor, 0) if row is not None else 0) + n
        if total >= _I64_LIMIT:
            general(key, (n,), {})  # (it raises the general path's error)
            return
        t = time_ns()
        if clk._fast_from <= t < clk._fast_to and get_ident() == clk._owner:
            ts = clk._last = clk._last + 1  # (HLC.stamp_fast, inlined)
            if clk._shared:
                ts = clk._reissue(ts)
        else:
            ts = now()
        if row is None:
            rows[key] = {actor: total}
        else:
            row[actor] = total
        push_key(key)
        push_stamp(ts)
        push_fix(entry)
        push_item(total)
        stats.events_local += 1

    refresh()
    return handle
