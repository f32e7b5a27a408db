"""The compiled hot loops (``crdtsync._hot`` built by mypyc) against the same source run
as Python, and how :mod:`crdtsync.speedups` picks one.

The loops are compiled from the very file the pure path runs, but mypyc differs from the
interpreter in places (a narrower annotation becomes a run-time type check, ints are
unboxed): every function is driven here with random and hostile inputs (bools where ints
go, ints at and beyond the 64-bit bounds, floats, None, str subclasses, long keys) and
must return the same, with the same effect on the rows it updates. When the suite runs
under ``CRDTSYNC_PURE=1`` both sides are the source (the selection tests still check the
compiled build in a subprocess); otherwise the extension must be built: a checkout where
``pip install -e .`` could not compile it fails here, as it should for a default install.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import speedups

REF = speedups.load_pure("crdtsync._hot_reference")  # the source, whatever runs
HOT = speedups.hot
PURE_RUN = os.environ.get("CRDTSYNC_PURE", "") not in ("", "0")

U64 = 2**64
BOUNDS = [0, 1, -1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]


class Sub(str):
    """A str subclass: not a str for the decoder's checks."""


ANY = st.one_of(
    st.integers(), st.sampled_from(BOUNDS), st.booleans(), st.floats(allow_nan=True), st.none(),
    st.text(max_size=3), st.binary(max_size=3), st.lists(st.integers(), max_size=2), st.just(Sub("k")),
)
INTS = st.one_of(st.integers(min_value=-3, max_value=2**65), st.sampled_from(BOUNDS))


def test_the_compiled_module_runs_unless_pure_python_was_asked_for() -> None:
    if PURE_RUN:
        assert speedups.PARTS["_hot"] == "pure" and HOT.__file__.endswith(".py")
    else:
        assert speedups.PARTS["_hot"] == "mypyc", speedups.describe()
        assert not HOT.__file__.endswith(".py")
    assert REF.__file__.endswith("_hot.py")


@settings(max_examples=300, deadline=None)
@given(hlc0=st.integers(min_value=0, max_value=U64 - 1), steps=st.lists(st.one_of(INTS, ANY), max_size=8))
def test_hlc_column(hlc0: int, steps: list[Any]) -> None:
    assert HOT.hlc_column(hlc0, steps) == REF.hlc_column(hlc0, steps)


@settings(max_examples=300, deadline=None)
@given(hlcs=st.lists(st.integers(min_value=0, max_value=U64 - 1), min_size=1, max_size=8), as_tuple=st.booleans())
def test_hlc_steps_and_their_column_round_trip(hlcs: list[int], as_tuple: bool) -> None:
    arg: Any = tuple(hlcs) if as_tuple else hlcs
    steps = HOT.hlc_steps(arg)
    assert steps == REF.hlc_steps(arg)
    column = HOT.hlc_column(hlcs[0], steps)
    assert column is not None and column[0] == hlcs


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.one_of(st.text(max_size=6), ANY, st.just("x" * 4096), st.just("x" * 4097)), max_size=6))
def test_keys_ok(keys: list[Any]) -> None:
    assert HOT.keys_ok(keys, 4096) == REF.keys_ok(keys, 4096)


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.one_of(INTS, ANY), max_size=6))
def test_stamped_totals_ok(payloads: list[Any]) -> None:
    assert HOT.stamped_totals_ok(payloads, 2**63 - 1) == REF.stamped_totals_ok(payloads, 2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(INTS, ANY, st.dictionaries(st.text(max_size=1), st.integers(), max_size=1)), max_size=6))
def test_scalar_column(values: list[Any]) -> None:
    assert HOT.scalar_column(values, -(2**63), 2**64) == REF.scalar_column(values, -(2**63), 2**64)


@settings(max_examples=300, deadline=None)
@given(rows=st.dictionaries(st.sampled_from("abcd"), st.dictionaries(st.sampled_from(["w", "x"]), st.integers(1, 9)),
                            max_size=3),
       events=st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 2**63 - 1)), min_size=1, max_size=8),
       start=st.integers(0, 8))
def test_raise_totals(rows: dict[str, dict[str, int]], events: list[tuple[str, int]], start: int) -> None:
    keys, totals = [k for k, _ in events], [t for _, t in events]
    start = min(start, len(keys))
    mine, theirs = copy.deepcopy(rows), copy.deepcopy(rows)
    HOT.raise_totals(mine, keys, totals, start, "w")
    REF.raise_totals(theirs, keys, totals, start, "w")
    assert mine == theirs


def _speedups_in(env: dict[str, str]) -> str:
    code = "import crdtsync.speedups as s; print(s.ACTIVE, s.PARTS['_hot'], s.PARTS['_chandles'])"
    full = {k: v for k, v in os.environ.items() if k != "CRDTSYNC_PURE"} | env
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_crdtsync_pure_forces_pure_python_and_the_default_is_compiled() -> None:
    assert _speedups_in({"CRDTSYNC_PURE": "1"}) == "pure pure pure"
    assert _speedups_in({}) == "compiled mypyc c", "pip install -e . did not build the extensions"


def test_an_extension_built_from_another_source_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRDTSYNC_PURE", raising=False)
    monkeypatch.setattr(speedups, "source_digest", lambda name: "0" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod, why = speedups._extension("_chandles")
    assert mod is None and why.startswith("stale")
    assert any("built from another version" in str(w.message) for w in caught)


@settings(max_examples=300, deadline=None)
@given(ts=st.lists(st.integers(min_value=0, max_value=U64 + 5), max_size=8), start=st.integers(0, 9))
def test_strictly_rising(ts: list[int], start: int) -> None:
    assert HOT.strictly_rising(ts, start) == REF.strictly_rising(ts, start)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, U64 - 1), ANY), max_size=8),
       start=st.integers(0, 8), before=st.dictionaries(st.sampled_from("abcd"), st.tuples(st.integers(0, 9), st.integers())))
def test_overlay_put(events: list[tuple[str, int, Any]], start: int, before: dict[str, Any]) -> None:
    keys, ts, values = [e[0] for e in events], [e[1] for e in events], [e[2] for e in events]
    mine, theirs = dict(before), dict(before)
    HOT.overlay_put(mine, keys, ts, values, start, 3)
    REF.overlay_put(theirs, keys, ts, values, start, 3)
    assert list(mine.items()) == list(theirs.items())  # (same entries, same order)
