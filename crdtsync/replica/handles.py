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

from .. import speedups
from .._encoding import pack_small
from .._tables import CounterTable, LWWTable
from ..types.counters import GCounter
from ..types.registers import _flat, _Packed
from .pending import LWW_PACKED, LWW_SET, OWN_TOTAL
from .writer import Writer

__all__ = ["WriteHandle", "make_handle"]

#: ``handle(key, *args, **kwargs)``: see the module docstring
WriteHandle = Callable[..., None]

_I64_MIN, _U64_LIMIT, _I64_LIMIT = -(2**63), 2**64, 2**63


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


def _plan_lww(w: Writer, fname: str) -> tuple[Any, ...]:
    """What the ``set`` handle of an LWW field needs, planned now (raises if writing is
    now refused): ``(empty, version, table, own overlay, entry, packed entry,
    listening, writer generation, schema generation)``."""
    if w.closed:
        raise RuntimeError("replica is closed")
    empty, version, _ = w.plan(fname)
    t = w._store.tables.get(fname)
    tbl = t if type(t) is LWWTable else None
    own = tbl.own_overlay(w.actor) if tbl is not None else None
    cls, q = type(empty()), w.queue
    return (empty, version, tbl, own, q.entry(fname, version, cls, LWW_SET), q.entry(fname, version, cls, LWW_PACKED),
            w._subs.active,  # subscribers come and go through the generation too
            w.generation, w._definitions.schema._generation)


def _lww_general(w: Writer, fname: str, plan: list[Any], fast_ready: Callable[[], bool],
                 replan: Callable[[], None]) -> Callable[..., None]:
    """The general path of an LWW ``set`` handle: ``write``'s (``plan``: [empty, version])."""
    store = w._store

    def general(key: str, value: Any, ts: int | None = None) -> None:
        _check_key(key)
        w.write_raw(fname, key, plan[0], "set", (value,), {}, plan[1], True, ts)
        if not fast_ready() and type(store.tables.get(fname)) is LWWTable:
            replan()  # the first write made the table

    return general


def _lww_set(w: Writer, fname: str, native: bool | None = None) -> WriteHandle:
    """The handle of ``set`` on an LWW field (see the module docstring): the C fast path
    of :mod:`crdtsync._chandles` when it is built (``native``: force one or the other),
    else this closure, its reference."""
    plan: list[Any] = [LWWTable, 1]  # [empty, version], replaced by refresh
    if native if native is not None else speedups.chandles is not None:
        def plan_native(h: Any) -> None:
            plan[0], plan[1], tbl_, own_, entry_, packed_, listening_, gen_, sg_ = _plan_lww(w, fname)
            h.plan(gen_, sg_, tbl_, own_, entry_, packed_, listening_)

        native_mod = speedups.chandles
        # its own packer when its Packed is the stored form (else, e.g. under CRDTSYNC_PURE
        # with the extension forced on, the Python check and packer)
        flat, pack = (None, _Packed) if getattr(native_mod, "Packed", None) is _Packed else (_flat, _pack_flat)
        h = native_mod.LWWSetHandle(  # type: ignore[union-attr]
            w, w._definitions.schema, w.hlc, w._stats, w.queue, plan_native,
            _lww_general(w, fname, plan, lambda: h.own is not None, lambda: plan_native(h)), flat, pack)
        plan_native(h)
        return h  # type: ignore[no-any-return]

    queue, stats = w.queue, w._stats
    clk = w.hlc
    now = clk.now
    push_key, push_stamp, push_fix, push_item = queue.keys.append, queue.stamps.append, queue.fix.append, queue.items.append
    schema = w._definitions.schema
    gen: object = None
    schema_gen = -1
    tbl: LWWTable | None = None
    own: dict[str, tuple[int, Any]] | None = None
    entry = packed_entry = 0
    listening = False

    def refresh() -> None:
        """Re-plan after the writer's generation moved (raises if writing is now refused)."""
        nonlocal gen, schema_gen, tbl, own, entry, packed_entry, listening
        plan[0], plan[1], tbl, own, entry, packed_entry, listening, gen, schema_gen = _plan_lww(w, fname)

    general = _lww_general(w, fname, plan, lambda: own is not None, refresh)

    def handle(key: str, value: Any) -> None:
        if w.generation is not gen or schema._generation != schema_gen:
            refresh()
        if own is None or type(key) is not str or listening:
            general(key, value)
            return
        t = type(value)
        stored, e = value, entry
        if t is int:
            if not _I64_MIN <= value < _U64_LIMIT:
                general(key, value)
                return
        elif not (t is float or t is str or t is bool or value is None or t is bytes):
            if (t is list or t is tuple) and _flat(value):
                stored, e = _pack_flat(value), packed_entry
            else:
                general(key, value)
                return
        wall = time_ns()
        if clk._fast_from <= wall < clk._fast_to and get_ident() == clk._owner:
            ts = clk._last = clk._last + 1  # (HLC.stamp_fast, inlined)
            if clk._shared:
                ts = clk._reissue(ts)
        else:
            ts = now()
        if ts <= tbl.max_ts:  # type: ignore[union-attr]  # the table holds a stamp from beyond this clock
            general(key, value, ts)  # (with this stamp: the event write() would have made)
            return
        own[key] = (ts, stored)
        tbl.max_ts = ts  # type: ignore[union-attr]
        push_key(key)
        push_stamp(ts)
        push_fix(e)
        push_item(stored)
        stats.events_local += 1

    refresh()
    return handle


def _pack_flat(value: list[Any] | tuple[Any, ...]) -> bytes:
    """The stored form of a flat list of scalars (what ``store_value`` makes of it)."""
    return _Packed(pack_small(value))


def _plan_increment(w: Writer, fname: str) -> tuple[Any, ...]:
    """What the ``increment`` handle of a GCounter field needs, planned now (raises if
    writing is now refused): ``(empty, version, table, entry, listening, writer
    generation, schema generation)``."""
    if w.closed:
        raise RuntimeError("replica is closed")
    empty, version, _ = w.plan(fname)
    t = w._store.tables.get(fname)
    tbl = t if type(t) is CounterTable else None
    return (empty, version, tbl, w.queue.entry(fname, version, GCounter, OWN_TOTAL),
            w._subs.active,  # subscribers come and go through the generation too
            w.generation, w._definitions.schema._generation)


def _increment_general(w: Writer, fname: str, plan: list[Any], fast_ready: Callable[[], bool],
                       replan: Callable[[], None]) -> Callable[[Any, Any], None]:
    """The general path of an ``increment`` handle: ``write``'s (``plan``: [empty, version])."""
    store = w._store

    def general(key: str, n: Any) -> None:
        _check_key(key)
        w.write_raw(fname, key, plan[0], "increment", (n,), {}, plan[1])
        if not fast_ready() and type(store.tables.get(fname)) is CounterTable:
            replan()  # the first write made the table

    return general


def _increment(w: Writer, fname: str, native: bool | None = None) -> WriteHandle:
    """The handle of ``increment`` on a GCounter field: the queue keeps the new own total
    (the stamped delta form) and the counter table raises it in place; no counter or
    delta object is made. The C fast path of :mod:`crdtsync._chandles` when it is built
    (``native``: force one or the other), else this closure, its reference."""
    plan: list[Any] = [GCounter, 1]  # [empty, version], replaced by refresh
    if native if native is not None else speedups.chandles is not None:
        def plan_native(h: Any) -> None:
            plan[0], plan[1], tbl_, entry_, listening_, gen_, sg_ = _plan_increment(w, fname)
            h.plan(gen_, sg_, tbl_.rows if tbl_ is not None else None, tbl_._objects if tbl_ is not None else {},
                   entry_, listening_)

        h = speedups.chandles.IncrementHandle(  # type: ignore[union-attr]
            w, w._definitions.schema, w.hlc, w._stats, w.actor, w.queue, plan_native,
            _increment_general(w, fname, plan, lambda: h.rows is not None, lambda: plan_native(h)))
        plan_native(h)
        return h  # type: ignore[no-any-return]

    queue, stats, actor = w.queue, w._stats, w.actor
    clk = w.hlc
    now = clk.now
    push_key, push_stamp, push_fix, push_item = queue.keys.append, queue.stamps.append, queue.fix.append, queue.items.append
    schema = w._definitions.schema
    gen: object = None
    schema_gen = -1
    tbl: CounterTable | None = None
    rows: dict[str, dict[str, int]] = {}
    objects: dict[str, Any] = {}
    entry = 0
    listening = False

    def refresh() -> None:
        nonlocal gen, schema_gen, tbl, rows, objects, entry, listening
        plan[0], plan[1], tbl, entry, listening, gen, schema_gen = _plan_increment(w, fname)
        rows = tbl.rows if tbl is not None else {}
        objects = tbl._objects if tbl is not None else {}

    general = _increment_general(w, fname, plan, lambda: tbl is not None, refresh)

    def handle(key: str, n: int = 1) -> None:
        # (no **kwargs: GCounter.increment takes none but ``actor``, which the handle
        # passes; a keyword raises TypeError here as it would in the mutator)
        if w.generation is not gen or schema._generation != schema_gen:
            refresh()
        if tbl is None or type(key) is not str or type(n) is not int or n < 1 or listening:
            general(key, n)
            return
        row = rows.get(key)
        if row is None and key in objects:
            general(key, n)
            return
        total = (row.get(actor, 0) if row is not None else 0) + n
        if total >= _I64_LIMIT:
            general(key, n)  # (it raises the general path's error)
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
