"""What a subscriber of a record is handed, compiled and pure: ``lww_column`` (the
registers of an LWW column), ``one_field_changes`` (the events and changes of a one-field
record) and ``call_each`` (the loop through one subscriber's filter and callback) of
``crdtsync._ccolumns`` against their reference in ``_hot.py``.

Random and hostile inputs (classes that are not what the C code builds: subclasses with a
``__dict__``, other slots, their own ``__new__`` or ``__setattr__``, descriptors under
another name or of another class, abstract classes, non-tuple classes, struct sequences;
columns of the wrong kind or length; junk starts and tokens; callbacks that raise, stop
the loop or change the columns) must give the same result, object for object, or the same
error. The objects built hold the very objects of the columns, and the references they
take are dropped with them (refcounts, tracemalloc over repeated calls). Then the callers:
a replica applying real records tells its subscribers the same changes compiled and pure,
and ``notify_all`` delivers as one ``notify`` per change would (failing callbacks,
subscribers coming and going mid-record).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import gc
import os
import sys
import tracemalloc
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Feature, Replica, speedups
from crdtsync.clock import HLC
from crdtsync.events import Event
from crdtsync.log import MemoryLog
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.replica.stats import ReplicaStats
from crdtsync.replica.subscriptions import Change, Subscriptions
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister, store_value

from ._speedups import ANY, HOT, INTS, REF, STARTS, Sub, SubList, _exact, built_when_it_must_be, needs_c

__all__ = ["built_when_it_must_be"]  # (the autouse fixture, imported)

SLOTS = ("_ts", "_actor", "_value")
MISSING = object()


# ---- classes the C code builds, and classes it must hand to the reference -------------

class PlainSub(LWWRegister):
    """No new slots, no dict: built in C like LWWRegister."""

    __slots__ = ()


class WithDict(LWWRegister):
    """A subclass with a ``__dict__``."""


class ExtraSlot(LWWRegister):
    __slots__ = ("extra",)


class Reordered:
    """The same names, other offsets, not a register at all."""

    __slots__ = ("_value", "_ts", "_actor")


class OwnNew(LWWRegister):
    __slots__ = ()

    def __new__(cls) -> OwnNew:
        r = super().__new__(cls)
        r._value = "from __new__"
        return r


class Spy(LWWRegister):
    """Records every attribute set (the reference's calls must be what runs)."""

    __slots__ = ()
    log: list[tuple[str, Any]] = []

    def __setattr__(self, name: str, value: Any) -> None:
        Spy.log.append((name, value))
        object.__setattr__(self, name, value)


class PropTs(LWWRegister):
    __slots__ = ()

    @property
    def _ts(self) -> Any:  # type: ignore[override]
        return "a property"


class Alias(LWWRegister):
    """``_actor`` names the slot of ``_ts``: each set replaces the other."""

    __slots__ = ()
    _actor = LWWRegister.__dict__["_ts"]


class Foreign:
    __slots__ = ("_ts", "_actor", "_value")


class Thief:
    """Another class's slot descriptors: the reference raises, the C code must not write."""

    __slots__ = ()
    _ts = Foreign.__dict__["_ts"]
    _actor = Foreign.__dict__["_actor"]
    _value = Foreign.__dict__["_value"]


class Abstract(abc.ABC):
    __slots__ = ("_ts", "_actor", "_value")

    @abc.abstractmethod
    def f(self) -> None: ...


class ReadOnly(LWWRegister):
    __slots__ = ()
    _value = property(lambda self: None)  # type: ignore[assignment]


REG_CLASSES: list[Any] = [LWWRegister, LWWRegister, PlainSub, WithDict, ExtraSlot, Reordered, OwnNew, Spy, PropTs, Alias,
                          Foreign, Thief, Abstract, ReadOnly, GCounter, int, object, tuple, None, "LWWRegister"]


class Pair(NamedTuple):
    a: Any
    b: Any


class ChangeWithDict(Change):
    """A NamedTuple subclass without ``__slots__``: it has a ``__dict__``."""


class Mixin:
    __slots__ = ()


class Mixed(Mixin, tuple):  # type: ignore[misc]
    __slots__ = ()


class Refusing(tuple):  # type: ignore[type-arg]
    """Its own ``__new__`` (which tuple.__new__ bypasses)."""

    __slots__ = ()

    def __new__(cls, *a: Any) -> Refusing:
        raise AssertionError("never called by tuple.__new__")


TUPLE_CLASSES: list[Any] = [Change, Event, Change, Event, Pair, collections.namedtuple("Plain", "a b"), ChangeWithDict,
                            Mixed, Refusing, tuple, list, os.stat_result, type(sys.version_info), int, None, "Change"]


# ---- comparing outcomes object for object ---------------------------------------------

def _view(x: Any, given: dict[int, int]) -> Any:
    """``x`` spelled out: the type of every object, the contents of tuples and slot
    objects, and which objects are the very ones of the arguments (``given``: their id ->
    position)."""
    if id(x) in given:
        return ["given", given[id(x)]]
    if isinstance(x, BaseException):
        return [type(x).__name__, str(x)]
    if isinstance(x, (list, tuple)):
        return [type(x).__qualname__, [_view(v, given) for v in x]]
    if type(x) is GCounter:
        return ["GCounter", repr(x)]
    if hasattr(type(x), "__slots__") and not isinstance(x, (int, str, bytes, float)):
        slots = [getattr(x, s, MISSING) for s in SLOTS]
        extra = sorted(vars(x).items()) if hasattr(x, "__dict__") else None
        return [type(x).__qualname__, [_view(v, given) if v is not MISSING else "unset" for v in slots], repr(extra)]
    return _exact(x)


def _given(*args: Any) -> dict[int, int]:
    seen: dict[int, int] = {}
    for a in args:
        for x in ([a] + list(a) if isinstance(a, (list, tuple, SubList)) else [a]):
            seen.setdefault(id(x), len(seen))
    return seen


def _run(fn: Any, *args: Any) -> Any:
    try:
        return ["ok", fn(*args)]
    except Exception as exc:  # (compared between the two implementations, never dropped)
        return [type(exc).__name__, str(exc)]


def _both(name: str, *args: Any) -> tuple[Any, Any]:
    """The C function and the reference on the same arguments, each spelled out."""
    given = _given(*args)
    got, ref = _run(getattr(HOT, name), *args), _run(getattr(REF, name), *args)
    return _view(got, given), _view(ref, given)


def _reference_calls(fn: Any, *args: Any) -> list[str]:
    """The Python functions of ``_hot.py`` that ``fn(*args)`` runs."""
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename == REF.__file__:
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        fn(*args)
    except Exception:  # (only which functions ran is looked at here)
        calls.append("raised")
    finally:
        sys.setprofile(None)
    return calls


def columns_of(n: int, elements: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A column of ``n`` items as the decoder hands it (a list), usually; sometimes one of
    another length or kind."""
    exact = st.lists(elements, min_size=n, max_size=n)
    return st.one_of(exact, exact, exact, exact, exact, st.lists(elements, max_size=4), exact.map(tuple),
                     exact.map(SubList), ANY)


# ---- lww_column -----------------------------------------------------------------------

@needs_c
@settings(max_examples=400, deadline=None)
@given(data=st.data(), n=st.integers(0, 6), cls=st.sampled_from(REG_CLASSES))
def test_lww_column_is_the_reference_object_for_object(data: st.DataObject, n: int, cls: Any) -> None:
    ts, actors, values = (data.draw(columns_of(n, ANY)) for _ in range(3))
    Spy.log.clear()
    got, ref = _both("lww_column", cls, ts, actors, values)
    assert got == ref, (cls, ts, actors, values)
    sets = list(Spy.log)
    assert sets[: len(sets) // 2] == sets[len(sets) // 2:]  # (the same sets, in the same order)


@needs_c
def test_lww_column_runs_in_c_for_registers_and_hands_anything_else_to_the_reference() -> None:
    ts, actors, values = [1, 2], ["a", "b"], ["x", b"y"]
    for cls in (LWWRegister, PlainSub, ExtraSlot, Reordered, Foreign):  # (plain slot classes: what C builds is exact)
        assert _reference_calls(HOT.lww_column, cls, ts, actors, values) == [], cls
        out = HOT.lww_column(cls, ts, actors, values)
        assert [type(r) for r in out] == [cls, cls]
        assert all(r._ts is t and r._actor is a and r._value is v for r, t, a, v in zip(out, ts, actors, values))
    reg = HOT.lww_column(LWWRegister, ts, actors, values)
    assert reg[0].value() == "x" and reg[1].timestamp == 2
    assert not hasattr(HOT.lww_column(ExtraSlot, ts, actors, values)[0], "extra")
    for cls in (WithDict, OwnNew, Spy, PropTs, Alias, Thief, Abstract, ReadOnly):
        assert _reference_calls(HOT.lww_column, cls, ts, actors, values)[:1] == ["lww_column"], cls
    assert _reference_calls(HOT.lww_column, LWWRegister, ts, actors, ("x", "y")) == ["lww_column"]
    with pytest.raises(ValueError, match="columns of different lengths"):
        HOT.lww_column(LWWRegister, ts, actors, ["x"])
    with pytest.raises(TypeError, match="Can't instantiate abstract class"):
        HOT.lww_column(Abstract, ts, actors, values)
    with pytest.raises(TypeError, match="doesn't apply to a 'Thief' object"):
        HOT.lww_column(Thief, ts, actors, values)
    alias = HOT.lww_column(Alias, [1], ["a"], ["v"])[0]
    assert alias._ts == "a" and alias._value == "v"  # (the actor's set replaced the stamp, as in the reference)


def test_registers_from_columns_are_what_raw_makes_on_either_path() -> None:
    cols = ([5, 6, 7], [sys.intern("w~1")] * 3, [None, 1.5, "x"])
    want = [LWWRegister._raw(t, a, v) for t, a, v in zip(*cols)]
    got = LWWRegister._from_columns(cols)
    with speedups.pure():
        pure = LWWRegister._from_columns(cols)
    assert got == want == pure and {type(r) for r in got + pure} == {LWWRegister}


# ---- one_field_changes ------------------------------------------------------------------

@needs_c
@settings(max_examples=400, deadline=None)
@given(data=st.data(), n=st.integers(0, 6), change_t=st.sampled_from(TUPLE_CLASSES), event_t=st.sampled_from(TUPLE_CLASSES),
       first=st.one_of(st.integers(1, 10**6), INTS, st.sampled_from([2**63 - 3, 2**63 - 1, 2**63]), ANY),
       start=st.one_of(STARTS, st.just(0), st.just(0)), origin=st.one_of(st.just("w~1"), ANY),
       field=st.one_of(st.just("f"), ANY), fversion=st.one_of(st.just(1), ANY))
def test_one_field_changes_is_the_reference_object_for_object(data: st.DataObject, n: int, change_t: Any, event_t: Any,
                                                               first: Any, start: Any, origin: Any, field: Any,
                                                               fversion: Any) -> None:
    hlcs = data.draw(columns_of(n, st.one_of(st.integers(0, 2**64 - 1), ANY)))
    keys = data.draw(columns_of(n, st.one_of(st.text(max_size=3), ANY)))
    deltas = data.draw(columns_of(n, ANY))
    got, ref = _both("one_field_changes", change_t, event_t, origin, first, hlcs, field, keys, deltas, fversion, start)
    assert got == ref, (change_t, event_t, first, start, hlcs, keys, deltas)


@needs_c
def test_one_field_changes_runs_in_c_for_named_tuples_and_hands_anything_else_to_the_reference() -> None:
    delta = LWWRegister._raw(5, "w", "x")
    args = ["w~1", 7, [10, 11, 12], "f", ["a", "b", "c"], [delta, delta, delta], 1]
    if sys.version_info < (3, 14):  # (from 3.14 on the reference builds them: see _ccolumns.c)
        assert _reference_calls(HOT.one_field_changes, Change, Event, *args, 1) == []
    out = HOT.one_field_changes(Change, Event, *args, 1)
    assert out == [Change("f", "b", Event("w~1", 8, 11, "f", "b", delta, 1), False),
                   Change("f", "c", Event("w~1", 9, 12, "f", "c", delta, 1), False)]
    assert [type(c) for c in out] == [Change, Change] and [type(c.event) for c in out] == [Event, Event]
    assert out[0].event.dot.seq == 8
    plain = HOT.one_field_changes(Change, Event, "w~1", 7, [10], "f", ["a"], ["d"], 1, 0)[0]
    assert hash(plain) == hash(tuple(plain)) and plain == ("f", "a", ("w~1", 7, 10, "f", "a", "d", 1), False)
    for fine in (Pair, Mixed, Refusing):  # (tuple.__new__ bypasses a __new__ of the class)
        if sys.version_info < (3, 14):
            assert _reference_calls(HOT.one_field_changes, fine, Event, *args, 0) == [], fine
        assert type(HOT.one_field_changes(fine, Event, *args, 0)[0]) is fine
    for bad in (ChangeWithDict, tuple, list, os.stat_result, type(sys.version_info)):
        assert _reference_calls(HOT.one_field_changes, bad, Event, *args, 0)[:1] == ["one_field_changes"], bad
    with pytest.raises(TypeError, match=r"tuple.__new__\(list\): list is not a subtype of tuple"):
        HOT.one_field_changes(list, Event, *args, 0)
    with pytest.raises(TypeError, match="is not safe"):
        HOT.one_field_changes(os.stat_result, Event, *args, 0)
    assert HOT.one_field_changes(list, Event, *args, 3) == []  # (nothing to build: nothing refused)
    with pytest.raises(ValueError, match="columns of different lengths"):
        HOT.one_field_changes(Change, Event, "w~1", 7, [10], "f", ["a", "b", "c"], [delta] * 3, 1, 0)
    with pytest.raises(ValueError, match="start < 0"):
        HOT.one_field_changes(Change, Event, *args, -1)
    big = HOT.one_field_changes(Change, Event, "w~1", 2**63 - 2, [1, 2, 3], "f", ["a", "b", "c"], [delta] * 3, 1, 0)
    assert [c.event.seq for c in big] == [2**63 - 2, 2**63 - 1, 2**63]


# ---- call_each --------------------------------------------------------------------------

class Halt(BaseException):
    """Not an Exception: call_each lets it through."""


class OddTuple(tuple):  # type: ignore[type-arg]
    """A tuple whose ``[0]`` is not its first item: the reference's subscript must run."""

    __slots__ = ()

    def __getitem__(self, i: Any) -> Any:
        return "t" if i == 0 else tuple.__getitem__(self, i)


NAN = float("nan")
FIELDS = st.sampled_from(["s", "s", "s", "t", "_schema", Sub("s"), Sub("_schema"), 1, None, NAN])
ITEMS = st.one_of(st.tuples(FIELDS, st.integers(0, 9)), st.tuples(FIELDS, st.integers(0, 9)),
                  st.tuples(FIELDS, st.integers(0, 9)).map(lambda t: Pair(*t)),
                  st.tuples(FIELDS, st.integers(0, 9)).map(OddTuple), st.just(()), st.integers(0, 9),
                  st.just(([], 0)))


def _call_each_run(impl: Any, items: list[Any], start: Any, token_kind: str, wanted: Any, skip: Any,
                   plan: dict[int, str]) -> Any:
    """``impl.call_each`` over a fresh copy of ``items`` and a token of ``token_kind``, with
    a callback that does what ``plan`` says at each item's value; what it called, returned
    or raised, and the items afterwards."""
    items = list(items)
    token: Any = {"list": [True], "false": [False], "one": [1], "empty": [], "tuple": (True,), "sub": SubList([True]),
                  "str": "x"}[token_kind]
    called: list[Any] = []

    def cb(x: Any) -> Any:
        called.append(x)
        what = plan.get(x[1] if isinstance(x, tuple) and len(x) > 1 else -1, "")
        if what == "raise":
            raise ValueError(f"bug at {x}")
        if what == "halt":
            raise Halt(x)
        if what == "stop" and isinstance(token, list) and token:
            token[0] = False
        if what == "empty" and isinstance(token, list):
            token.clear()
        if what == "pop" and items:
            items.pop()
        if what == "grow" and len(items) < 12:
            items.append(("s", 9))
        return what

    try:
        out: Any = impl.call_each(cb, items, start, token, wanted, skip)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], BaseException):
            out = (out[0], type(out[1]).__name__, str(out[1]), out[1].__traceback__ is not None)
    except (Exception, Halt) as exc:  # (compared between the two implementations, never dropped)
        out = (type(exc).__name__, str(exc))
    return _exact(out), _exact(called), _exact(items)


@needs_c
@settings(max_examples=500, deadline=None)
@given(items=st.lists(ITEMS, max_size=8), start=st.one_of(STARTS, st.just(0), st.just(0)),
       token_kind=st.sampled_from(["list", "list", "list", "false", "one", "empty", "tuple", "sub", "str"]),
       wanted=st.sampled_from([None, frozenset({"s"}), frozenset({"s", "t", "_schema"}), frozenset(), {"s"}, ["s"], 3]),
       skip=st.sampled_from(["_schema", "_schema", Sub("_schema"), None, [], NAN]),
       plan=st.dictionaries(st.integers(0, 9), st.sampled_from(["raise", "halt", "stop", "empty", "pop", "grow"]),
                            max_size=3))
def test_call_each_is_the_reference_call_for_call(items: list[Any], start: Any, token_kind: str, wanted: Any, skip: Any,
                                                  plan: dict[int, str]) -> None:
    got = _call_each_run(HOT, items, start, token_kind, wanted, skip, plan)
    assert got == _call_each_run(REF, items, start, token_kind, wanted, skip, plan)


@needs_c
def test_call_each_runs_in_c_and_hands_back_each_failure() -> None:
    seen: list[Any] = []
    changes = [("s", 1), ("_schema", 2), ("t", 3), ("s", 4)]
    assert _reference_calls(HOT.call_each, seen.append, changes, 0, [True], frozenset({"s"}), "_schema") == []
    assert seen == [("s", 1), ("s", 4)]
    seen.clear()
    assert HOT.call_each(seen.append, changes, 0, [True], None, "_schema") == (4, None)
    assert seen == [("s", 1), ("t", 3), ("s", 4)]

    def cb(x: Any) -> None:
        if x[1] == 3:
            raise KeyError(x)

    i, exc = HOT.call_each(cb, changes, 0, [True], None, "_schema")
    assert (i, type(exc)) == (2, KeyError) and exc.__traceback__ is not None
    assert HOT.call_each(cb, changes, 3, [True], None, "_schema") == (4, None)
    assert HOT.call_each(cb, changes, 0, [False], None, "_schema") == (0, None)
    with pytest.raises(Halt):
        HOT.call_each(lambda x: (_ for _ in ()).throw(Halt()), changes, 0, [True], None, "_schema")
    with pytest.raises(TypeError, match="unhashable"):
        HOT.call_each(cb, [([], 1)], 0, [True], frozenset({"s"}), "_schema")
    assert _reference_calls(HOT.call_each, cb, [OddTuple(("s", 1))], 0, [True], None, "_schema") == ["call_each"]
    seen.clear()
    assert HOT.call_each(seen.append, [(NAN, 1)], 0, [True], None, NAN) == (1, None) and len(seen) == 1  # (NaN != NaN)


# ---- references, leaks, columns changed under the loop ----------------------------------

def _calls(impl: Any, shared: dict[str, Any], keys: list[str], deltas: list[Any]) -> list[Any]:
    out = [impl.lww_column(LWWRegister, shared["ts"], shared["actors"], shared["values"]),
           impl.one_field_changes(Change, Event, shared["origin"], 1, shared["hlcs"], shared["field"], keys, deltas,
                                  shared["fversion"], 1)]
    for bad in ((WithDict, shared["ts"], shared["actors"], shared["values"]), (LWWRegister, [1], [], [])):
        try:
            out.append(impl.lww_column(*bad))
        except ValueError as exc:
            out.append(str(exc))  # (not the exception: its traceback holds this frame, which holds out)
    seen: list[Any] = []
    i, exc = impl.call_each(lambda c: seen.append(c) if c.key != "k3" else 1 / 0, out[1], 0, [True], None, "_schema")
    out.append((i, type(exc).__name__))  # (as above)
    del exc
    out.append(seen)
    return out


@needs_c
def test_the_objects_built_hold_one_reference_per_place_and_drop_them_with_themselves() -> None:
    n = 50
    shared = {"ts": list(range(10**12, 10**12 + n)), "actors": [sys.intern("w~shared")] * n, "values": ["v" * 41] * n,
              "origin": "o~shared", "hlcs": [2**40 + i for i in range(n)], "field": "f-shared", "fversion": 1}
    keys = [f"k{i}" for i in range(n)]
    delta = LWWRegister._raw(1, "w", "x")
    deltas = [delta] * n
    watched = [shared["actors"][0], shared["values"][0], shared["origin"], shared["field"], keys[3], delta,
               shared["ts"][7], shared["hlcs"][9]]
    before = [sys.getrefcount(x) for x in watched]
    held = {}
    for name, impl in (("c", HOT), ("ref", REF)):
        result = _calls(impl, shared, keys, deltas)
        held[name] = [sys.getrefcount(x) - b for x, b in zip(watched, before)]
        del result
        assert [sys.getrefcount(x) for x in watched] == before, name
    assert held["c"] == held["ref"]
    # per event: the actor and the value in each register (n + 2n of the bad calls' one class
    # that builds), the origin and the field in each event, the field in each change too,
    # a key twice (event and change)
    assert held["c"][0] >= n and held["c"][4] >= 2


@needs_c
def test_repeated_calls_leak_nothing() -> None:
    n = 200
    shared = {"ts": list(range(n)), "actors": ["w"] * n, "values": [b"x"] * n, "origin": "o", "hlcs": list(range(n)),
              "field": "f", "fversion": 1}
    keys, deltas = [f"k{i}" for i in range(n)], [LWWRegister._raw(1, "w", "x")] * n
    for _ in range(20):
        _calls(HOT, shared, keys, deltas)
    gc.collect()
    tracemalloc.start()
    try:
        first = tracemalloc.take_snapshot()
        for _ in range(300):
            _calls(HOT, shared, keys, deltas)
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(first, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # (300 calls of ~1,000 objects each: a leak would be megabytes)


@needs_c
@pytest.mark.parametrize("how", ["shrink", "grow", "clear"])
def test_columns_changed_by_code_run_mid_loop_give_well_formed_results(how: str) -> None:
    """A collection during an allocation runs Python code (here a gc callback) that may
    change the columns: the loops read them as they are then, never freed memory."""
    n = 400
    cols: dict[str, list[Any]] = {}
    fired = [0]

    def meddle(phase: str, info: dict[str, Any]) -> None:
        if phase != "start" or not cols:
            return
        fired[0] += 1
        for col in cols.values():
            if how == "shrink":
                del col[-3:]
            elif how == "grow":
                col.extend(col[:2])
            elif fired[0] == 3:
                col.clear()

    def fresh() -> None:
        cols.clear()
        cols.update(ts=list(range(n)), actors=["w"] * n, values=["v"] * n, hlcs=list(range(n)),
                    keys=[f"k{i}" for i in range(n)], deltas=[LWWRegister._raw(1, "w", "x")] * n)
        fired[0] = 0

    old = gc.get_threshold()
    gc.callbacks.append(meddle)
    gc.set_threshold(5)
    try:
        fresh()
        regs = HOT.lww_column(LWWRegister, cols["ts"], cols["actors"], cols["values"])
        fired_regs = fired[0]
        fresh()
        changes = HOT.one_field_changes(Change, Event, "o", 1, cols["hlcs"], "f", cols["keys"], cols["deltas"], 1, 2)
        fired_changes = fired[0]
    finally:
        gc.callbacks.remove(meddle)
        gc.set_threshold(*old)
        cols.clear()
    assert fired_regs >= 3 and fired_changes >= 3
    assert all(type(r) is LWWRegister and r._actor == "w" and r._value == "v" and type(r._ts) is int for r in regs)
    assert all(type(c) is Change and type(c.event) is Event and c.key == c.event.key for c in changes)
    assert [c.event.seq for c in changes] == list(range(3, 3 + len(changes)))
    if how != "grow":  # (the items before the end are the ones there from the start)
        assert all(c.key == f"k{c.event.seq - 1}" for c in changes)
    if how == "grow":
        assert len(regs) > n and len(changes) > n - 2
    else:
        assert len(regs) < n and len(changes) < n - 2


@needs_c
def test_what_holds_only_leaves_is_not_tracked_by_the_collector_and_what_may_be_in_a_cycle_is() -> None:
    """The C functions leave untracked what can be in no reference cycle (as CPython does
    for tuples of atoms), so that a collection does not walk a record's changes."""
    packed = store_value([1, "a"])
    atoms = HOT.lww_column(LWWRegister, [1, 2], ["w", "w"], ["x", packed])
    assert [gc.is_tracked(r) for r in atoms] == [False, gc.is_tracked(packed)]  # (str; the stored list: C's Packed is not tracked)
    held = HOT.lww_column(LWWRegister, [1, 2, 3], ["w", "w", "w"], [[1], {}, {"a": 1}])
    assert [gc.is_tracked(r) for r in held] == [True, True, True]  # (a container, an empty dict: tracked)
    counter = GCounter().increment(1, actor="w")
    changes = HOT.one_field_changes(Change, Event, "o", 1, [5, 6, 7], "f", ["a", "b", "c"], [atoms[0], counter, held[0]],
                                    1, 0)
    assert [(gc.is_tracked(c), gc.is_tracked(c.event)) for c in changes] == [(False, False), (True, True), (True, True)]
    odd = HOT.one_field_changes(Change, Event, ["o"], 1, [5], "f", ["a"], [atoms[0]], 1, 0)  # (a list as the origin)
    assert gc.is_tracked(odd[0]) and gc.is_tracked(odd[0].event)

    class Witness:
        freed = False

        def __del__(self) -> None:
            Witness.freed = True

    # a register holding a dict is tracked: a cycle through it is collected
    reg = held[1]
    reg._value["back"] = [reg, Witness()]
    del reg, held
    gc.collect()
    assert Witness.freed


# ---- the callers: notify_all, and a replica's subscribers ------------------------------

def _change(seq: int, fname: str = "s") -> Change:
    d = LWWRegister._raw(seq, "b~1", seq)
    return Change(fname, f"k{seq}", Event("b~1", seq, seq, fname, f"k{seq}", d), False)


def _deliveries(all_at_once: bool) -> tuple[Any, ...]:
    """A record's changes (three fields, a definition among them) through ``notify_all`` or
    through one ``notify`` each, with the first subscriber failing at seq 1, subscribing a
    callback and a stream at seq 3, unsubscribing itself at seq 5; then again to two
    subscribers."""
    stats = ReplicaStats()
    subs = Subscriptions(stats)
    fields = ["s", "t", "s", "_schema", "s", "u", "s", "s"]
    batch = [_change(i, f) for i, f in enumerate(fields, 1)]
    seen: list[Change] = []
    late: list[Change] = []
    streams: list[Any] = []

    def first(c: Change) -> None:
        seen.append(c)
        if c.event.seq == 1:
            raise RuntimeError("subscriber bug")
        if c.event.seq == 3:
            subs.subscribe(late.append, ["s", "u"])
            streams.append(subs.stream(["s"]))
        if c.event.seq == 5:
            off()

    def offer(changes: list[Change]) -> None:
        if all_at_once:
            subs.notify_all(changes)
        else:
            for c in changes:
                subs.notify(c)

    off = subs.subscribe(first, ["s", "t"])
    offer(batch)
    queued = [streams[0]._queue.get_nowait().event.seq for _ in range(streams[0]._queue.qsize())]
    other: list[Change] = []
    off2 = subs.subscribe(other.append, ["t"])  # (two callbacks now)
    offer(batch)
    off2()
    return ([c.event.seq for c in seen], [c.event.seq for c in late], queued, [c.event.seq for c in other],
            stats.subscriber_errors)


@pytest.mark.parametrize("pure", [False, True])
def test_notify_all_delivers_as_one_notify_each_would(pure: bool) -> None:
    """The same deliveries as a ``notify`` per change, but for a stream opened by a callback:
    one notify offers it the change being delivered (streams are fed after callbacks),
    ``notify_all`` from the next change on (as it did before ``call_each``)."""
    def run() -> Any:
        return _deliveries(True), _deliveries(False)

    if pure:
        with speedups.pure():
            at_once, each = run()
    else:
        at_once, each = run()
    assert at_once == ([1, 2, 3, 5], [5, 6, 7, 8, 1, 3, 5, 6, 7, 8], [5, 7, 8], [2], 1)
    assert each == (at_once[0], at_once[1], [3, *at_once[2]], at_once[3], at_once[4])


WALL = 1_000_000
SCHEMA = [Feature("s", LWWRegister), Feature("c", GCounter)]
VALUES: list[Any] = [0, -1, 2**63 - 1, 1.5, "", "é", None, True, b"\x00", [1, "a"], {"a": 1}]


async def _records() -> list[bytes]:
    log = MemoryLog()
    for w in range(2):
        r = await Replica.open(schema=SCHEMA, log=log, identity=ReplicaIdentity(f"w{w}", "i1", "default", "default"),
                               follow=False, control=False, hlc=HLC(clock=lambda: WALL))
        s, c = r.writer("s", "set"), r.writer("c", "increment")
        for i in range(40):
            s(f"k{i % 7}" if w else f"n{i}", VALUES[(i + w) % len(VALUES)])
            if w and i % 3:
                c(f"k{i % 5}", 1 + i % 4)
            if i % 9 == 8:
                await r.flush()
        await r.flush()
        r._mark_closed()
    return [e.payload async for e in log.read(0)]


async def _told(records: list[bytes], fields: list[str] | None) -> tuple[list[Any], int]:
    log = MemoryLog()
    r = await Replica.open(schema=SCHEMA, log=log, identity=ReplicaIdentity("rd", "i1", "default", "default"),
                           follow=False, control=False, hlc=HLC(clock=lambda: WALL))
    told: list[Any] = []

    def cb(c: Change) -> None:
        told.append(c)
        if c.key == "k3":
            raise RuntimeError("a subscriber's bug")

    r.subscribe(cb, fields)
    await log.append(records[:3] + records)  # (a record again: only the new part is told)
    await r.catch_up()
    errors = r.stats.subscriber_errors
    r._mark_closed()
    return [_view(c, {}) for c in told], errors


@pytest.mark.parametrize("fields", [None, ["s"], ["c"]])
def test_a_replica_tells_its_subscriber_the_same_changes_compiled_and_pure(fields: list[str] | None) -> None:
    records = asyncio.run(_records())
    got = asyncio.run(_told(records, fields))
    with speedups.pure():
        ref = asyncio.run(_told(records, fields))
    assert got == ref and len(got[0]) > 20 and got[1] > 0
    assert all(v[0] == "Change" and v[1][2][0] == "Event" for v in got[0])
