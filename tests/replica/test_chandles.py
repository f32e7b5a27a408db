"""The C write handles (``crdtsync._chandles``) against their reference, the closures of
:mod:`crdtsync.replica.handles`.

Two replicas with the same identity, the same frozen wall clock and their own MemoryLog
take the same calls, one through the C handles and one through the Python ones (chosen
with ``native=``, whatever :mod:`crdtsync.speedups` picked for this process): random and
hostile keys and values (non-str keys, bools where ints go, ints at and beyond the 64-bit
bounds, NaN, flat and nested lists, dicts, tuples), plain ``write`` calls in between,
flushes, a subscriber coming and going, a closed replica. After every call both raised
the same error (type and message) or none; at the end both hold the same state, context,
reads, queue and stats, and appended the same bytes. The clock's fast-path window is
either closed (every stamp through ``HLC.now``) or held open (the inlined fast path).

The extension is loaded from disk directly. It is needed exactly when the build report
says a C compiler was there at install (``speedups.must_compile``): then a missing or
stale extension fails these tests; without a compiler there is nothing to compare (the
comparisons say so) and the selection test checks that the closures are what runs.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Feature, Replica, speedups
from crdtsync.clock import HLC
from crdtsync.log import MemoryLog
from crdtsync.replica import handles
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

MUST, WHY = speedups.must_compile()
try:
    chandles = importlib.import_module("crdtsync._chandles")
except ImportError as exc:  # (a failure when a compiler was there: see the module docstring)
    chandles = None
    _MISSING = f"crdtsync._chandles is not built ({exc}) although {WHY}"
needs_c = pytest.mark.skipif(chandles is None and not MUST, reason=f"no C extension to compare with: {WHY}")

SCHEMA = [Feature("s", LWWRegister), Feature("c", GCounter)]
ID = ReplicaIdentity("a", "i1", "default", "default")
WALL = 1_000_000

SCALARS = st.one_of(
    st.integers(min_value=-(2**63) - 2, max_value=2**64 + 2), st.sampled_from([-(2**63), 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
    st.floats(allow_nan=True), st.text(max_size=4), st.booleans(), st.none(), st.binary(max_size=4),
)
BOUNDS = st.sampled_from([-(2**63) - 1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 2**64, True, 1.0, float("nan")])
VALUES = st.one_of(
    SCALARS, BOUNDS, st.lists(BOUNDS, min_size=1, max_size=2),
    st.lists(SCALARS, max_size=3),  # flat (or not, with an int beyond 64 bits)
    st.lists(SCALARS, max_size=3).map(tuple),
    st.lists(st.lists(st.integers(), max_size=2), max_size=2),  # nested
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2), st.just(object()),
)
KEYS = st.one_of(st.sampled_from(["k", "k2", "k3", ""]), st.text(max_size=3), st.integers(), st.none(), st.binary(max_size=2),
                 st.lists(st.integers(), max_size=1))
AMOUNTS = st.one_of(st.integers(min_value=-2, max_value=5), st.sampled_from([2**62, 2**63, 2**64]), st.booleans(),
                    st.floats(), st.none(), st.text(max_size=1))
OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("inc"), KEYS, AMOUNTS),
    st.tuples(st.just("inc_kw"), KEYS, AMOUNTS),
    st.tuples(st.just("write"), st.sampled_from(["k", "k2"]), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("flush"), st.none(), st.none()),
    st.tuples(st.just("listen"), st.none(), st.none()),
    st.tuples(st.just("close"), st.none(), st.none()),
), max_size=40)


async def _open(log: MemoryLog) -> Replica:
    return await Replica.open(schema=SCHEMA, log=log, follow=False, control=False, identity=ID,
                              hlc=HLC(clock=lambda: WALL))


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, str] | None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # (compared between the two implementations, never dropped)
        return type(exc).__name__, str(exc)
    return None


def _same_value(a: Any, b: Any) -> bool:
    """Exact equality of read values (NaN equals NaN, also inside a list; 1 is not 1.0)."""
    return type(a) is type(b) and msgpack.packb(a) == msgpack.packb(b)


async def _run(ops: list[tuple[str, Any, Any]], native: bool, window: bool) -> dict[str, Any]:
    log = MemoryLog()
    r = await _open(log)
    clk = r._writer.hlc
    if window:  # hold the fast path's window open (both runs alike)
        clk.now()
        clk._fast_from, clk._fast_to, clk._owner = 0, 2**62, threading.get_ident()
    w = r._writer
    saved = speedups.chandles
    speedups.chandles = chandles  # (the built module, also under CRDTSYNC_PURE=1)
    try:
        s = handles._lww_set(w, "s", native=native)
        c = handles._increment(w, "c", native=native)
    finally:
        speedups.chandles = saved
    assert (type(s).__module__ == "crdtsync._chandles") is native
    s("k", 0)  # the tables exist from here on: every later call may take the fast path
    c("k", 1)
    outcomes: list[Any] = []
    seen: list[Any] = []
    unsubscribe: Any = None
    closed = False
    for op, key, arg in ops:
        if op == "set":
            outcomes.append(_outcome(s, key, arg))
        elif op == "inc":
            outcomes.append(_outcome(c, key, arg))
        elif op == "inc_kw":
            outcomes.append(_outcome(c, key, n=arg))
        elif op == "write" and not closed:
            outcomes.append(_outcome(r.write, "c", key, "increment", arg))
        elif op == "flush" and not closed:
            await r.flush()
        elif op == "listen" and not closed:
            if unsubscribe is None:
                unsubscribe = r.subscribe(lambda ch: seen.append((ch.field, ch.key, ch.local, ch.event.seq)))
            else:
                unsubscribe()
                unsubscribe = None
        elif op == "close" and not closed:
            await r.flush()
            r._mark_closed()
            closed = True
    values = {(f, k): r.value(f, k) for f in ("s", "c") for k in ("k", "k2", "k3", "")}
    q = w.queue
    out = {
        "outcomes": outcomes, "seen": seen, "values": values,
        "queue": (q.first, list(q.keys), list(q.stamps), [q.entries[f] for f in q.fix], list(map(repr, q.items))),
        "events_local": r.stats.events_local, "last": clk.last,
        "state": repr(sorted((f, repr(t)) for f, t in r.export_state().items())),
        "context": r.context,
    }
    if not closed:
        await r.flush()
    out["records"] = [e.payload async for e in log.read(0)]
    if not closed:
        r._mark_closed()
    return out


def test_the_build_report_decides_whether_the_c_handles_run() -> None:
    if MUST:
        assert chandles is not None, _MISSING
        if speedups.PARTS["_chandles"] != "c":
            assert os.environ.get("CRDTSYNC_PURE", "") not in ("", "0"), speedups.describe()
    else:
        assert chandles is None and speedups.chandles is None, WHY

        async def main() -> None:
            r = await _open(MemoryLog())
            assert type(r.writer("s", "set")).__module__ != "crdtsync._chandles"
            r._mark_closed()

        asyncio.run(main())


@needs_c
@pytest.mark.parametrize("window", [False, True], ids=["window-closed", "window-open"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_c_handles_do_what_the_python_handles_do(window: bool, ops: list[tuple[str, Any, Any]]) -> None:
    if chandles is None:
        pytest.fail(_MISSING)
    ref = asyncio.run(_run(ops, native=False, window=window))
    got = asyncio.run(_run(ops, native=True, window=window))
    assert got["outcomes"] == ref["outcomes"]
    assert got["seen"] == ref["seen"]
    assert got["values"].keys() == ref["values"].keys()
    assert all(_same_value(got["values"][k], ref["values"][k]) for k in ref["values"]), (got["values"], ref["values"])
    for part in ("queue", "events_local", "last", "state", "context", "records"):
        assert got[part] == ref[part], part


@needs_c
def test_c_handles_take_the_fast_path_for_plain_writes() -> None:
    """The C handles really do the work (not a general-path call per write): a write
    through them queues its item without an event object and stamps from the window."""
    if chandles is None:
        pytest.fail(_MISSING)

    async def main() -> None:
        r = await _open(MemoryLog())
        w = r._writer
        saved = speedups.chandles
        speedups.chandles = chandles
        try:
            s = handles._lww_set(w, "s", native=True)
            c = handles._increment(w, "c", native=True)
        finally:
            speedups.chandles = saved
        s("k", 1.5)  # (the first write makes the table: general path)
        c("k", 2)
        calls: list[Any] = []
        real = w.write_raw
        w.write_raw = lambda *a, **kw: calls.append(a) or real(*a, **kw)  # type: ignore[method-assign]
        s("k", [1733.2, "xxxx"])
        s("k2", 7)
        c("k", 3)
        c("k2")
        assert calls == [], "the fast path never calls the general one"
        q = w.queue
        assert q.items[-4:][1:] == [7, 5, 1] and bytes(q.items[-4]) == b"\x92\xcb\x40\x9b\x14\xcc\xcc\xcc\xcc\xcd\xa4xxxx"
        assert r.value("s", "k") == [1733.2, "xxxx"] and r.value("c", "k") == 5 and r.value("c", "k2") == 1
        r._mark_closed()

    asyncio.run(main())


FLAT_EDGE = st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
                             -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
                             -(2**63) - 1, 2**64, 0.0, -0.0, float("inf"), float("nan"), True, False, None])
FLAT_ITEMS = st.one_of(
    SCALARS, FLAT_EDGE, st.text(min_size=28, max_size=40), st.text(alphabet="é", min_size=250, max_size=260),
    st.binary(min_size=250, max_size=260), st.sampled_from(["\ud800", "x" * 65_536, b"y" * 65_536]),
)


@needs_c
@settings(max_examples=600, deadline=None)
@given(value=st.one_of(st.lists(FLAT_ITEMS, max_size=20), st.lists(FLAT_ITEMS, min_size=15, max_size=17).map(tuple),
                       st.lists(st.one_of(FLAT_ITEMS, st.lists(st.integers(), max_size=1), st.just(object())),
                                max_size=4), FLAT_ITEMS))
def test_c_flat_packer_gives_the_bytes_of_the_reference_or_none(value: Any) -> None:
    """``_chandles.flat_packb`` against ``registers._flat`` + ``pack_small``: the same
    msgpack bytes for every flat list or tuple (ints at each width boundary, str and bytes
    at each length boundary, NaN, -0.0), None for everything else (nested, an int beyond
    64 bits, a lone surrogate, a scalar, another type)."""
    if chandles is None:
        pytest.fail(_MISSING)
    from crdtsync._encoding import pack_small
    from crdtsync.types.registers import _flat

    flat = type(value) in (list, tuple) and _flat(value)
    if flat:
        try:
            want: bytes | None = pack_small(value)
        except UnicodeEncodeError:
            want = None  # (a lone surrogate: the general path raises the store's error)
    else:
        want = None
    got = chandles.flat_packb(value)
    assert got == want
    assert got is None or type(got) is chandles.Packed  # the stored form itself


@needs_c
def test_a_column_of_flat_lists_decodes_to_the_same_stored_values_either_way() -> None:
    """``registers._flat_column`` with the C packer and without: the same stored bytes."""
    if chandles is None:
        pytest.fail(_MISSING)
    from crdtsync.types import registers

    values = [[float(i), f"v{i}", None, -i, 2**63 + i, b"\x00" * (i % 300)] for i in range(400)]
    native = registers._flat_column(values)
    with speedups.pure():
        pure = registers._flat_column(values)
    assert native is not None and pure is not None
    assert [bytes(v) for v in native] == [bytes(v) for v in pure]
    assert {type(v) for v in native} == {registers._Packed}
    assert registers._flat_column([[1], [[2]]]) is None
    with speedups.pure():
        assert registers._flat_column([[1], [[2]]]) is None


@needs_c
def test_stored_list_values_are_bytes_the_garbage_collector_does_not_track() -> None:
    """With the extension, the stored form of a list value (``registers._Packed``) is its
    ``Packed``: bytes in every way (equality, hash, msgpack, copies), and not tracked, so
    the values a replica queues and overlays cost the collector nothing."""
    if chandles is None:
        pytest.fail(_MISSING)
    import copy
    import gc

    from crdtsync.types import registers

    # (the extension's Packed is the stored form unless pure Python was asked for)
    assert registers._Packed is (chandles.Packed if speedups.chandles is not None else registers._PyPacked)
    raw = msgpack.packb([1.5, "x"])
    p = chandles.Packed(raw)
    assert not gc.is_tracked(p) and gc.is_tracked(registers._PyPacked(raw))
    assert isinstance(p, bytes) and p == raw and hash(p) == hash(raw) and bytes(p) == raw
    assert type(copy.deepcopy(p)) is chandles.Packed and copy.deepcopy(p) == p
    assert msgpack.packb([p]) == msgpack.packb([raw])
    assert registers.load_value(registers._Packed(raw)) == [1.5, "x"]  # (whichever form registers stores)


@needs_c
def test_the_overlay_pairs_a_c_handle_writes_are_not_tracked_unless_their_value_is() -> None:
    """The C handle's fast path puts ``(stamp, stored)`` into the table's overlay: for a
    scalar or a flat list (stored as untracked ``Packed`` bytes) the pair cannot be in a
    cycle, so it is untracked and the collector never scans the overlay of a busy writer."""
    if chandles is None:
        pytest.fail(_MISSING)
    import gc

    async def body() -> None:
        r = await _open(MemoryLog())
        saved = speedups.chandles
        speedups.chandles = chandles  # (the built module, also under CRDTSYNC_PURE=1)
        try:
            put = handles._lww_set(r._writer, "s", native=True)
        finally:
            speedups.chandles = saved
        put("first", 0.0)  # (the first write makes the table: the general path)
        values = [1.5, "x", 7, None, True, b"b", [1.5, "pad"], [2, 3]]
        for i, v in enumerate(values):
            put(f"k{i}", v)
        own = r.store.tables["s"].own
        pairs = [own[f"k{i}"] for i in range(len(values))]
        assert all(type(p) is tuple for p in pairs)
        assert [gc.is_tracked(p) for p in pairs] == [gc.is_tracked(p[1]) for p in pairs]
        assert not any(gc.is_tracked(p) for p in pairs[:6])  # (scalars; a list is untracked Packed bytes
        # unless pure Python was asked for, whose Packed is tracked)
        assert [r.value("s", f"k{i}") for i in range(len(values))] == values
        await r.close()

    asyncio.run(body())
