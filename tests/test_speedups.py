"""The C column loops (``crdtsync._ccolumns``) against their reference, ``_hot.py`` run
as Python, and how :mod:`crdtsync.speedups` picks one.

Every function is driven with random and hostile inputs (bools where ints go, ints at and
beyond the 64-bit bounds, floats, None, str subclasses, long keys, empty columns, tuples
and dict or list subclasses where lists and dicts go, wrong argument counts, unhashable
keys, rows that are not dicts, totals that do not compare) and must return the same or
raise the same (type and message), with the same effect on the dicts it updates. The C
module is loaded from disk directly, whatever this process picked (so the comparison runs
also under ``CRDTSYNC_PURE=1``), and is needed exactly when the build report says a C
compiler was there at install (``speedups.must_compile``): then a missing or stale
extension is a failure; without a compiler the comparisons have nothing to compare and
say so, and the selection tests check that the pure path is what runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crdtsync import speedups

from ._speedups import (
    ANY,
    BOUNDS,
    HOT,
    INTS,
    MUST,
    PURE_RUN,
    REF,
    STARTS,
    U64,
    WHY,
    C,
    SubDict,
    _exact,
    _outcome,
    _same,
    built_when_it_must_be,
    columns,
    needs_c,
)

__all__ = ["built_when_it_must_be"]  # (the autouse fixture, imported)


def test_the_compiled_module_runs_unless_pure_python_was_asked_for_or_nothing_compiles() -> None:
    assert REF.__file__.endswith("_hot.py")
    if PURE_RUN or not MUST:
        assert speedups.PARTS["_ccolumns"] == "pure" and speedups.hot.__file__.endswith(".py"), speedups.describe()
        if not PURE_RUN:
            assert WHY in speedups.REASONS["_ccolumns"] or "no working C compiler" in speedups.REASONS["_ccolumns"]
    else:
        assert speedups.PARTS["_ccolumns"] == "c", speedups.describe()
        assert speedups.hot is not None and not speedups.hot.__file__.endswith(".py")


@needs_c
@settings(max_examples=400, deadline=None)
@given(hlc0=st.one_of(st.integers(min_value=0, max_value=U64 - 1), INTS, ANY), steps=columns(st.one_of(INTS, ANY)))
def test_hlc_column(hlc0: Any, steps: Any) -> None:
    _same("hlc_column", hlc0, steps)


@needs_c
@settings(max_examples=400, deadline=None)
@given(hlc0=st.one_of(st.integers(min_value=0, max_value=U64 - 1), INTS, ANY), steps=columns(st.one_of(INTS, ANY)))
def test_hlc_check(hlc0: Any, steps: Any) -> None:
    _same("hlc_check", hlc0, steps)
    column = _outcome(REF.hlc_column, hlc0, steps)
    checked = _outcome(REF.hlc_check, hlc0, steps)
    if column[0] == "ok" and checked[0] == "ok":  # (the check is the column's, without the column)
        assert (checked[1] is None) == (column[1] is None)
        if column[1] is not None:
            assert checked[1] == (column[1][0][-1], column[1][1])


@needs_c
@settings(max_examples=300, deadline=None)
@given(hlcs=st.lists(st.integers(min_value=0, max_value=U64 - 1), min_size=1, max_size=8), as_tuple=st.booleans())
def test_hlc_steps_and_their_column_round_trip(hlcs: list[int], as_tuple: bool) -> None:
    arg: Any = tuple(hlcs) if as_tuple else hlcs
    steps = HOT.hlc_steps(arg)
    assert steps == REF.hlc_steps(arg)
    column = HOT.hlc_column(hlcs[0], steps)
    assert column is not None and column[0] == hlcs


@needs_c
@settings(max_examples=400, deadline=None)
@given(hlcs=columns(st.one_of(st.integers(min_value=0, max_value=U64 - 1), INTS, ANY)))
def test_hlc_steps_of_hostile_columns(hlcs: Any) -> None:
    _same("hlc_steps", hlcs)


@needs_c
@settings(max_examples=400, deadline=None)
@given(keys=columns(st.one_of(st.text(max_size=6), ANY, st.just("x" * 4096), st.just("x" * 4097))),
       limit=st.one_of(st.just(4096), INTS, ANY))
def test_keys_ok(keys: Any, limit: Any) -> None:
    _same("keys_ok", keys, limit)


@needs_c
@settings(max_examples=400, deadline=None)
@given(payloads=columns(st.one_of(INTS, ANY)), limit=st.one_of(st.just(2**63 - 1), INTS, ANY))
def test_stamped_totals_ok(payloads: Any, limit: Any) -> None:
    _same("stamped_totals_ok", payloads, limit)


@needs_c
@settings(max_examples=400, deadline=None)
@given(values=columns(st.one_of(INTS, ANY, st.dictionaries(st.text(max_size=1), st.integers(), max_size=1))),
       lo=st.one_of(st.just(-(2**63)), INTS, st.just(-(2**130)), ANY), hi=st.one_of(st.just(2**64), INTS, st.just(2**130), ANY))
def test_scalar_column(values: Any, lo: Any, hi: Any) -> None:
    _same("scalar_column", values, lo, hi)


ROW_VALUES = st.one_of(st.integers(1, 9), INTS, st.none(), st.text(max_size=1), st.floats(allow_nan=True))


@needs_c
@settings(max_examples=400, deadline=None)
@given(rows=st.dictionaries(st.sampled_from("abcd"), st.one_of(
           st.dictionaries(st.sampled_from(["w", "x"]), ROW_VALUES, max_size=2),
           st.dictionaries(st.sampled_from(["w", "x"]), st.integers(1, 9), max_size=2).map(SubDict),
           st.integers(), st.none()), max_size=3),
       keys=columns(st.one_of(st.sampled_from("abcde"), st.sampled_from("abcde"), ANY)),
       totals=columns(st.one_of(st.integers(1, 2**63 - 1), INTS, ANY)), start=STARTS,
       actor=st.one_of(st.just("w"), st.just(["unhashable"]), st.just(1)), sub=st.booleans())
def test_raise_totals(rows: dict[str, Any], keys: Any, totals: Any, start: Any, actor: Any, sub: bool) -> None:
    _same("raise_totals", SubDict(rows) if sub else rows, keys, totals, start, actor, mutable=(0,))


@needs_c
@settings(max_examples=300, deadline=None)
@given(rows=st.dictionaries(st.sampled_from("abcdefgh"), st.one_of(
           st.dictionaries(st.sampled_from(["w", "x"]), st.integers(1, 99), max_size=2),
           st.dictionaries(st.sampled_from(["w", "x"]), st.integers(1, 9), max_size=2).map(SubDict),
           st.dictionaries(st.sampled_from(["w", "x"]), ROW_VALUES, max_size=2)), max_size=6),
       events=st.lists(st.tuples(st.one_of(st.sampled_from("abcdefghij"), st.sampled_from("abcdefghij"), ANY),
                                 st.one_of(st.integers(1, 99), st.integers(1, 99), ANY)), min_size=30, max_size=120),
       start=st.integers(0, 40))
def test_raise_totals_of_long_records(rows: dict[str, Any], events: list[tuple[Any, Any]], start: int) -> None:
    """Records longer than the C loop's lookahead (rows looked up 32 events ahead), with
    new keys, repeated keys, and hostile keys, rows and totals anywhere in them."""
    keys, totals = [k for k, _ in events], [t for _, t in events]
    _same("raise_totals", rows, keys, totals, start, "w", mutable=(0,))


@needs_c
@settings(max_examples=300, deadline=None)
@given(rows=st.dictionaries(st.sampled_from("abcd"), st.dictionaries(st.sampled_from(["w", "x"]), st.integers(1, 9)),
                            max_size=3),
       events=st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 2**63 - 1)), min_size=1, max_size=8),
       start=st.integers(0, 8))
def test_raise_totals_of_valid_records(rows: dict[str, dict[str, int]], events: list[tuple[str, int]], start: int) -> None:
    keys, totals = [k for k, _ in events], [t for _, t in events]
    _same("raise_totals", rows, keys, totals, min(start, len(keys)), "w", mutable=(0,))


@needs_c
@settings(max_examples=400, deadline=None)
@given(ts=columns(st.one_of(st.integers(min_value=0, max_value=U64 + 5), st.integers(min_value=0, max_value=U64 + 5), INTS, ANY)),
       start=STARTS)
def test_strictly_rising(ts: Any, start: Any) -> None:
    _same("strictly_rising", ts, start)


@needs_c
@settings(max_examples=400, deadline=None)
@given(keys=columns(st.one_of(st.sampled_from("abc"), ANY)), ts=columns(st.integers(0, U64 - 1)), values=columns(ANY),
       start=STARTS, before=st.dictionaries(st.sampled_from("abcd"), st.tuples(st.integers(0, 9), st.integers())),
       sub=st.booleans())
def test_overlay_put(keys: Any, ts: Any, values: Any, start: Any, before: dict[str, Any], sub: bool) -> None:
    _same("overlay_put", SubDict(before) if sub else before, keys, ts, values, start, 3, mutable=(0,))


def _row_bytes(t: int, ai: int) -> bytes:
    """A packed LWW row's header (stamp, actor index, kind) and a value byte."""
    import struct
    return struct.pack("<qHB", t, ai, 2) + b"\x00"


OWN_ENTRIES = st.one_of(
    st.tuples(st.integers(0, 12), st.integers(), st.integers(0, 3)),  # a remote record's entry
    st.tuples(st.integers(0, 12), st.integers()),  # an own write
    st.tuples(st.sampled_from(BOUNDS), st.integers(), st.one_of(st.integers(-2, 5), ANY)), ANY,
)
ROWS = st.one_of(st.builds(_row_bytes, st.integers(0, 12), st.integers(0, 3)),
                 st.builds(_row_bytes, st.sampled_from([-(2**63), -1, 2**63 - 1]), st.integers(0, 2**16 - 1)),
                 st.binary(max_size=12), ANY)


@needs_c
@settings(max_examples=600, deadline=None)
@given(own=st.dictionaries(st.sampled_from("abcd"), OWN_ENTRIES, max_size=4),
       rows=st.dictionaries(st.sampled_from("abcde"), ROWS, max_size=4),
       names=st.one_of(st.just(["a~1", "b~1", "c~1", "b~1"]), st.just(["z~1", "a~1"]), st.lists(ANY, max_size=3)),
       own_ai=st.one_of(st.integers(-1, 4), ANY), keys=columns(st.one_of(st.sampled_from("abcdef"), ANY)),
       ts=columns(st.one_of(st.integers(0, 12), st.integers(0, 12), INTS, ANY)), values=columns(ANY),
       start=STARTS, ai=st.one_of(st.integers(-1, 4), ANY), sub=st.booleans())
def test_overlay_join(own: dict[str, Any], rows: dict[str, Any], names: Any, own_ai: Any, keys: Any, ts: Any,
                      values: Any, start: Any, ai: Any, sub: bool) -> None:
    """Winners into the overlay, losers dropped, and a stop where the reference stops
    (ties, odd stamps, entries or rows of another shape), on valid and hostile columns."""
    _same("overlay_join", SubDict(own) if sub else own, rows, names, own_ai, keys, ts, values, start, ai, mutable=(0,))


def _span_by_msgpack(data: bytes) -> Any:
    from crdtsync.events import MsgpackCodec
    with speedups.pure():  # (the reference says None: MsgpackCodec.span reads it with msgpack)
        return MsgpackCodec().span(data)


def _records() -> st.SearchStrategy[bytes]:
    """Format-2 records (valid, from the encoder) and their mutations: bytes flipped,
    cut, extended; and arbitrary msgpack arrays of ten parts and random bytes."""
    from crdtsync.events import Batch, Event, MsgpackCodec
    from crdtsync.types.registers import LWWRegister

    def record(origin: str, first: int, n: int) -> bytes:
        evs = [Event(origin, first + i, 5 + i, "f", f"k{i}", LWWRegister().set([1.5, "x"], actor=origin, ts=5 + i))
               for i in range(n)]
        return MsgpackCodec(write_version=2).encode(Batch.of(evs))

    valid = st.builds(record, st.text(min_size=1, max_size=70).filter(lambda o: "~" not in o) | st.just("w~1"),
                      st.integers(1, 2**40), st.integers(1, 20))

    def mutate(data: bytes, at: int, byte: int, cut: int) -> bytes:
        b = bytearray(data)
        b[at % len(b)] = byte
        return bytes(b[: max(1, len(b) - cut)])

    small = st.integers(-(2**63), 2**64 - 1)
    ten = st.lists(st.one_of(small, st.text(max_size=3), st.binary(max_size=3), st.none(),
                             st.lists(small, max_size=3), st.dictionaries(st.text(max_size=2), small, max_size=2),
                             st.floats()),
                   min_size=10, max_size=10).map(lambda parts: msgpack.packb([2, *parts[1:]]))
    return st.one_of(valid, st.builds(mutate, valid, st.integers(0, 400), st.integers(0, 255), st.integers(0, 3)),
                     ten, st.binary(max_size=40))


@needs_c
@settings(max_examples=1500, deadline=None)
@given(data=_records())
def test_record_span_answers_only_as_msgpack_does(data: bytes) -> None:
    """The C header reader says what reading the record with msgpack says, or None (then
    msgpack is asked); on records the encoder wrote it always answers."""
    got = C.record_span(data)
    if got is not None:
        assert type(got[0]) is str and got == _span_by_msgpack(data)
    assert REF.record_span(data) is None


@needs_c
def test_record_span_answers_for_the_encoder_s_records() -> None:
    from crdtsync.events import Batch, Event, MsgpackCodec
    from crdtsync.types.counters import GCounter

    evs = [Event("w~1", 7 + i, 5 + i, "c", f"k{i}", GCounter().increment(1, actor="w~1")) for i in range(300)]
    data = MsgpackCodec(write_version=2).encode(Batch.of(evs, meta={"region": "eu"}))
    assert C.record_span(data) == ("w~1", 7, 300) == _span_by_msgpack(data)


@needs_c
@pytest.mark.parametrize("name", REF.__all__)
def test_wrong_argument_counts_and_keywords_raise_what_the_reference_raises(name: str) -> None:
    for args in ([], [[]], [[], 0, 0, 0, 0, 0, 0, 0]):
        _same(name, *args)
    got, ref = _outcome(lambda: getattr(HOT, name)([], bogus=1)), _outcome(lambda: getattr(REF, name)([], bogus=1))
    assert got == ref


@needs_c
def test_every_reference_function_has_its_c_twin() -> None:
    assert C is not None
    assert [n for n in REF.__all__ if not callable(getattr(C, n, None))] == []


def test_unusual_inputs_need_the_reference_bound() -> None:
    """Without a bound reference the C loops refuse what they would hand it, loudly."""
    if C is None:
        assert not MUST
        return
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('crdtsync._ccolumns', {C.__file__!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "assert m.keys_ok(['a'], 4) is True\n"
            "try:\n    m.keys_ok(('a',), 4)\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("refused: crdtsync._ccolumns: no reference module bound")


def _speedups_in(env: dict[str, str]) -> str:
    code = "import crdtsync.speedups as s; print(s.ACTIVE, s.PARTS['_ccolumns'], s.PARTS['_chandles'])"
    full = {k: v for k, v in os.environ.items() if k != "CRDTSYNC_PURE"} | env
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_crdtsync_pure_forces_pure_python_and_the_default_is_what_the_build_made() -> None:
    assert _speedups_in({"CRDTSYNC_PURE": "1"}) == "pure pure pure"
    if MUST:
        assert _speedups_in({}) == "compiled c c", f"pip install -e . did not build the extensions ({WHY})"
    else:
        assert _speedups_in({}) == "pure pure pure", WHY


def test_the_build_report_says_what_was_built() -> None:
    report = speedups.build_report()
    assert report is not None, "no build report: the package was not installed with `pip install -e .`"
    assert set(report["parts"]) == set(speedups.SOURCES)
    for name, part in report["parts"].items():
        if MUST:
            assert part["built"], f"{name} did not compile although {WHY}: {part['detail']}"
        else:
            assert not part["built"] and part["detail"]


def test_an_extension_built_from_another_source_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRDTSYNC_PURE", raising=False)
    monkeypatch.setattr(speedups, "source_digest", lambda name: "0" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in speedups.SOURCES:
            mod, why = speedups._extension(name)
            assert mod is None
            assert why.startswith("stale") or (not MUST and why.startswith("not built"))
    assert not MUST or any("built from another version" in str(w.message) for w in caught)


MSG_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1), st.sampled_from([b for b in BOUNDS if -(2**63) <= b < U64]),
    st.booleans(), st.none(),
    st.floats(allow_nan=True), st.floats(width=32, allow_nan=True), st.text(max_size=70),
    st.text(alphabet="abcdefgh-0123456789", min_size=60, max_size=70), st.binary(max_size=40),
)
MSG_VALUES = st.recursive(MSG_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=2)), max_leaves=20)


def _unpack_same(data: bytes) -> None:
    import msgpack
    got = HOT.unpack_record(data)
    try:
        ref = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception:  # (msgpack refuses it: the C reader must hand it back, never accept it)
        assert got is None
        return
    if got is not None:
        assert _exact(got) == _exact(ref)


@needs_c
@settings(max_examples=500, deadline=None)
@given(record=st.lists(MSG_VALUES, max_size=10), single=st.booleans())
def test_unpack_record_is_msgpacks_unpack_or_hands_the_record_back(record: list[Any], single: bool) -> None:
    import msgpack
    try:
        data = msgpack.packb(record, use_bin_type=True, use_single_float=single)
    except OverflowError:  # (a double beyond float32)
        assume(False)
    _unpack_same(data)
    if C is not None and _plain(record):
        assert HOT.unpack_record(data) is not None  # (the common shapes are unpacked in C)


def _plain(x: Any, depth: int = 0) -> bool:
    if isinstance(x, list):
        return depth < 8 and all(_plain(v, depth + 1) for v in x)
    return not isinstance(x, dict)


@needs_c
@settings(max_examples=500, deadline=None)
@given(record=st.lists(MSG_VALUES, min_size=1, max_size=6), cuts=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                                          max_size=3),
       trim=st.integers(0, 3), extra=st.binary(max_size=2))
def test_unpack_record_of_damaged_bytes(record: list[Any], cuts: list[tuple[int, int]], trim: int, extra: bytes) -> None:
    import msgpack
    data = bytearray(msgpack.packb(record, use_bin_type=True))
    for at, byte in cuts:
        data[at % len(data)] = byte
    out = bytes(data[:len(data) - trim] if trim < len(data) else data) + extra
    _unpack_same(out)


@needs_c
def test_unpack_record_keys_from_the_cache_are_equal_strs() -> None:
    import msgpack
    keys = [f"cust-{i:05d}" for i in range(9000)]  # (more than the cache holds: slots are reused)
    for _ in range(2):
        got = HOT.unpack_record(msgpack.packb([2, keys, ["é", "x" * 65, ""]]))
        assert got == [2, keys, ["é", "x" * 65, ""]] and all(type(k) is str for k in got[1])
    assert HOT.unpack_record(bytearray(b"\x91\x01")) is None  # (not bytes: the reference says None)
    assert HOT.unpack_record(b"\x81\x01\x02") is None and HOT.unpack_record(b"") is None
