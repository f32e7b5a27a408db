"""The replica's hottest column loops: the reference, and the pure-Python path.

``crdtsync/_ccolumns.c`` has the same functions in C (built by ``pip install`` when a C
compiler is at hand, see ``setup.py``); :mod:`crdtsync.speedups` picks the C module or
this one (always this one under ``CRDTSYNC_PURE=1``) and binds this one to the C module
as its fallback: the C code runs only the common case it was written for and hands any
other input to the function of the same name here. ``tests/test_speedups.py`` drives
both with random and hostile inputs, so the compiled and the pure path cannot disagree
on a state, a context or an error: **a change here needs the same change in
``_ccolumns.c``** (the tests fail until it is made).

What lives here is only the innermost part of these paths, each planned and guarded by
its own module, which keeps everything else:

* the stamp steps a writer encodes (:func:`hlc_steps`, called by
  :func:`crdtsync.events.encode_v2`);
* the column checks of a batch-format-2 record and the accumulation of its stamps
  (:func:`keys_ok`, :func:`hlc_column`, :func:`hlc_check`, :func:`stamped_totals_ok`,
  :func:`scalar_column`, called by :mod:`crdtsync.events`,
  :mod:`crdtsync.types.counters` and :mod:`crdtsync.types.registers`);
* the unpacking of a record's msgpack in its common shapes (:func:`unpack_record`,
  called by :meth:`crdtsync.events.MsgpackCodec.decode_record`; only the C version
  does it);
* the joins of one writer's record: counters (:func:`raise_totals`, called by
  :class:`crdtsync._tables.CounterTable`) and LWW registers (:func:`strictly_rising`,
  :func:`overlay_put`, called by :class:`crdtsync._tables.LWWTable`);
* what a subscriber of a record is handed: the registers of an LWW column
  (:func:`lww_column`, called by ``LWWRegister._from_columns``) and the changes of a
  one-field record (:func:`one_field_changes`, called by :mod:`crdtsync.replica.apply`),
  and the loop of a record's changes through its one subscriber's filter and callback
  (:func:`call_each`, called by :meth:`crdtsync.replica.subscriptions.Subscriptions.notify_all`).

Rules for this file: no imports beyond the standard library (what a loop needs from
crdtsync is passed in); untrusted input is checked with ``type(x) is ...`` (bools are not
ints, subclasses are not their base).
"""

from __future__ import annotations

from itertools import count, islice, repeat
from typing import Any, Final

__all__ = ["hlc_steps", "keys_ok", "hlc_column", "hlc_check", "stamped_totals_ok", "scalar_column", "raise_totals", "strictly_rising", "overlay_put",
           "overlay_join", "unpack_record", "record_span", "lww_column", "one_field_changes", "call_each"]

U64_LIMIT: Final = 2**64
U64_MASK: Final = 2**64 - 1


def hlc_steps(hlcs: Any) -> list[Any]:
    """The steps between consecutive stamps of a record, modulo 2**64 when one goes back
    (a list or tuple of ints; the writer's side of :func:`hlc_column`)."""
    h: list[Any] = hlcs if type(hlcs) is list else list(hlcs)
    n = len(h)
    if n < 2:
        return []
    steps: list[Any] = [0] * (n - 1)
    back = False
    prev: int = h[0]
    for i in range(1, n):
        cur: int = h[i]
        d = cur - prev
        if d < 0:
            back = True
        steps[i - 1] = d
        prev = cur
    if back:
        return [x & U64_MASK for x in steps]
    return steps


def keys_ok(keys: list[Any], limit: int) -> bool:
    """Whether every entity key of a record is a str of at most ``limit`` characters."""
    for k in keys:
        if type(k) is not str:
            return False
        key: str = k
        if len(key) > limit:
            return False
    return True


def hlc_column(hlc0: int, steps: list[Any]) -> tuple[list[Any], bool] | None:
    """The stamps of a format-2 record from its start (a u64, checked by the caller) and
    its steps, and whether they rise (no step wrapped modulo 2**64); None if a step is not
    an int >= 0 (bools are not ints; any size: the sum is taken modulo 2**64)."""
    n = len(steps) + 1
    hlcs: list[Any] = [hlc0] * n
    h: int = hlc0
    i = 1
    for s in steps:
        if type(s) is not int:
            return None
        step: int = s
        if step < 0:
            return None
        h += step
        hlcs[i] = h
        i += 1
    if h < U64_LIMIT:
        return hlcs, True
    return [x & U64_MASK for x in hlcs], False


def hlc_check(hlc0: int, steps: list[Any]) -> tuple[int, bool] | None:
    """:func:`hlc_column` without the column: ``(the last stamp, whether the stamps
    rise)``, or None exactly when :func:`hlc_column` gives None (for a record whose
    stamps nothing but the clock needs: the column is built only if asked for)."""
    h: int = hlc0
    for s in steps:
        if type(s) is not int:
            return None
        step: int = s
        if step < 0:
            return None
        h += step
    if h < U64_LIMIT:
        return h, True
    return h & U64_MASK, False


def stamped_totals_ok(payloads: list[Any], limit: int) -> bool:
    """Whether ``payloads`` (not empty) are ints in ``[1, limit]`` (a stamped GCounter
    column: each a writer's new total; bools are not ints)."""
    if not payloads:
        return False
    for p in payloads:
        if type(p) is not int or p < 1 or p > limit:
            return False
    return True


def scalar_column(values: list[Any], lo: int, hi: int) -> int:
    """Of a column of LWW wire values: 1 if every value is a scalar (None, bool, int,
    float, str, bytes) and every int in ``[lo, hi)``; 0 if some value is not a scalar
    (whatever the ints); -1 if all are scalars but an int is out of range."""
    out_of_range = False
    for v in values:
        t = type(v)
        if t is int:
            if not out_of_range:
                i: int = v
                if i < lo or i >= hi:
                    out_of_range = True
        elif not (t is float or t is str or v is None or t is bool or t is bytes):
            return 0
    return -1 if out_of_range else 1


def raise_totals(rows: dict[Any, Any], keys: list[Any], totals: list[Any], start: int, actor: str) -> None:
    """``rows[key][actor] = max(rows[key][actor], total)`` for the events from ``start``
    on (one writer's record: keys are str and totals ints, validated by the decoder)."""
    if start:
        keys, totals = keys[start:], totals[start:]
    for key, total in zip(keys, totals):
        row: dict[Any, Any] | None = rows.get(key)
        if row is None:
            rows[key] = {actor: total}
        else:
            cur = row.get(actor)
            if cur is None or total > cur:
                row[actor] = total


def strictly_rising(ts: list[Any], start: int) -> bool:
    """Whether the stamps from ``start`` on rise strictly (ints, validated by the decoder)."""
    if start >= len(ts):
        return True
    prev: int = ts[start]
    for t in ts[start + 1:]:
        cur: int = t
        if cur <= prev:
            return False
        prev = cur
    return True


def overlay_put(own: dict[Any, Any], keys: list[Any], ts: list[Any], values: list[Any], start: int, ai: int) -> None:
    """``own[key] = (ts, value, ai)`` for the events from ``start`` on, in order (the LWW
    table's overlay of a record every event of which wins: see ``LWWTable.fold``)."""
    if start:
        keys, ts, values = keys[start:], ts[start:], values[start:]
    for key, t, v in zip(keys, ts, values):
        own[key] = (t, v, ai)


I64_LIMIT: Final = 2**63


def overlay_join(own: dict[Any, Any], rows: dict[Any, Any], names: list[Any], own_ai: int, keys: list[Any],
                 ts: list[Any], values: list[Any], start: int, ai: int) -> tuple[int, int]:
    """Join one writer's events (actor ``names[ai]``) into an LWW table's overlay, each
    against what the table holds for its key: the overlay's entry if there is one
    (``(ts, value, ai)``, or ``(ts, value)`` of the actor ``names[own_ai]``), else the
    packed row (stamp: int64 little-endian at byte 0; actor index: uint16 at byte 8).
    An event whose stamp is higher, or equal with a higher actor, wins and is put in the
    overlay as ``(ts, value, ai)``; one that loses changes nothing. Returns ``(next,
    top)``: the events from ``start`` to ``next`` (exclusive) are joined, ``top`` is the highest stamp put (-1:
    none). It stops at the first event it does not judge (``next`` is its index; the
    caller joins the rest the general way): a key that is not a str, a stamp that is not
    an int in ``[0, 2**63)``, an entry or row of another shape, an actor index beyond
    ``names``, and a tie (the same stamp and actor), which the values' bytes decide."""
    n = min(len(keys), len(ts), len(values))
    if not 0 <= ai < len(names) or type(names[ai]) is not str:
        return start, -1
    actor = names[ai]
    top = -1
    i = start
    while i < n:
        key, t = keys[i], ts[i]
        if type(key) is not str or type(t) is not int or not 0 <= t < I64_LIMIT:
            return i, top
        cur = own.get(key)
        if cur is not None:
            if type(cur) is not tuple or len(cur) not in (2, 3) or type(cur[0]) is not int or not 0 <= cur[0] < I64_LIMIT:
                return i, top
            cur_t = cur[0]
            cur_ai = cur[2] if len(cur) == 3 else own_ai
        else:
            row = rows.get(key)
            if row is None:
                cur_t = -1
                cur_ai = ai
            else:
                if type(row) is not bytes or len(row) < 11:
                    return i, top
                cur_t = int.from_bytes(row[0:8], "little", signed=True)
                cur_ai = int.from_bytes(row[8:10], "little")
        if cur_t >= 0:
            if t < cur_t:
                i += 1
                continue
            if t == cur_t:
                if type(cur_ai) is not int or not 0 <= cur_ai < len(names) or type(names[cur_ai]) is not str:
                    return i, top
                cur_a = names[cur_ai]
                if actor < cur_a:
                    i += 1
                    continue
                if actor == cur_a:
                    return i, top
        own[key] = (t, values[i], ai)
        if t > top:
            top = t
        i += 1
    return i, top


def unpack_record(data: Any) -> list[Any] | None:
    """A record's msgpack unpacked, or None: then the caller unpacks it with msgpack. The
    reference (pure Python) always says None. The C version unpacks the common shapes
    (arrays, ints, nil, bools, floats, str, bin; keys of up to 64 ASCII characters from a
    cache of str objects, whose hashes are then computed once) into exactly what
    ``msgpack.unpackb(data, raw=False, use_list=True)`` returns, and says None for
    anything else (tests/test_speedups.py compares it with msgpack)."""
    return None


def record_span(data: Any) -> tuple[str, int, int] | None:
    """``(origin, first seq, number of events)`` read from a batch-format-2 record's
    header, or None: then the caller reads it with msgpack (``MsgpackCodec.span``), which
    says what it says. The reference (pure Python) always says None. The C version reads
    the header in place (skipping the columns without building them) and says None for
    anything it does not take: it answers only where the msgpack reading gives the same
    answer, and never for a record that reading would refuse (tests/test_speedups.py)."""
    return None


def lww_column(cls: Any, ts: Any, actors: Any, values: Any) -> list[Any]:
    """One ``cls`` instance per event, made by ``cls.__new__(cls)`` (no ``__init__``) with
    its ``_ts``, ``_actor`` and ``_value`` set from the three columns (an LWW register's
    column form: ``LWWRegister._from_columns``). Columns of different lengths are a
    ValueError. The C version writes the three slots directly, for a class whose
    instances are exactly what this makes (slots of a plain ``object.__new__`` class)."""
    if not len(ts) == len(actors) == len(values):
        raise ValueError("lww_column: columns of different lengths")
    new = cls.__new__
    out: list[Any] = []
    add = out.append
    for t, a, v in zip(ts, actors, values):
        r = new(cls)
        r._ts = t
        r._actor = a
        r._value = v
        add(r)
    return out


def one_field_changes(change_t: Any, event_t: Any, origin: Any, first_seq: Any, hlcs: Any, field: Any, keys: Any,
                      deltas: Any, field_version: Any, start: Any) -> list[Any]:
    """The subscriber's changes of a record of one field, from event ``start`` on:
    ``change_t(field, key, event_t(origin, first_seq + i, hlcs[i], field, key, delta,
    field_version), False)`` for each event ``i >= start``, both made by ``tuple.__new__``
    (so both must be tuple subclasses: a TypeError names the one that is not). Columns of
    different lengths and a negative ``start`` are a ValueError; a ``start`` at or past the
    end gives ``[]``."""
    if not len(hlcs) == len(keys) == len(deltas):
        raise ValueError("one_field_changes: columns of different lengths")
    if start < 0:
        raise ValueError("one_field_changes: start < 0")
    if start:  # (islice, not a copy: the columns are read as they are at each step, as the C version reads them)
        hlcs, keys1, keys2, deltas = islice(hlcs, start, None), islice(keys, start, None), islice(keys, start, None), islice(deltas, start, None)
    else:
        keys1 = keys2 = keys
    new = tuple.__new__
    events = map(new, repeat(event_t),
                 zip(repeat(origin), count(first_seq + start), hlcs, repeat(field), keys1, deltas, repeat(field_version)))
    return list(map(new, repeat(change_t), zip(repeat(field), keys2, events, repeat(False))))


def call_each(cb: Any, items: Any, start: Any, token: Any, wanted: Any, skip: Any) -> tuple[Any, BaseException | None]:
    """A subscriber's loop over changes: ``cb(item)`` for each item from ``start`` on, in
    order, whose field (``item[0]``) is not ``skip`` and is in ``wanted`` (None: any), while
    ``token[0] is True`` (checked before each item: the owner of the token sets it to
    False to stop the loop, e.g. when the subscribers change). Returns ``(i, None)``:
    stopped before item ``i`` (``len(items)``: at the end); or ``(i, exc)``: ``cb(items[i])``
    raised ``exc``, an :class:`Exception` (anything else propagates), and nothing more was
    called. A negative ``start`` is a ValueError."""
    if start < 0:
        raise ValueError("call_each: start < 0")
    i = start
    while i < len(items):
        if token[0] is not True:
            return i, None
        item = items[i]
        f = item[0]
        if f != skip and (wanted is None or f in wanted):
            try:
                cb(item)
            except Exception as exc:  # (handed to the caller, which logs and counts it)
                return i, exc
        i += 1
    return i, None
