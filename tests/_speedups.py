"""What the tests of the compiled parts share: the reference (``_hot.py`` from its
source) and the C module loaded from disk whatever this process picked (so that the
comparisons run also under ``CRDTSYNC_PURE=1``), whether the build had to make it
(``speedups.must_compile``), hostile values and the comparison of two outcomes.
Used by ``tests/test_speedups.py`` and ``tests/test_speedups_changes.py``."""

from __future__ import annotations

import copy
import importlib
import os
from typing import Any

import pytest
from hypothesis import strategies as st

from crdtsync import speedups

REF = speedups.load_pure("crdtsync._hot_reference")  # the source, whatever runs
PURE_RUN = os.environ.get("CRDTSYNC_PURE", "") not in ("", "0")
MUST, WHY = speedups.must_compile()
try:
    C: Any = importlib.import_module("crdtsync._ccolumns")
    C.bind(REF)
except ImportError as exc:
    C = None
    _MISSING = f"crdtsync._ccolumns is not built ({exc}) although {WHY}"
HOT: Any = C if C is not None else REF
needs_c = pytest.mark.skipif(C is None and not MUST, reason=f"no C extension to compare with: {WHY}")

U64 = 2**64
BOUNDS = [0, 1, -1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]


class Sub(str):
    """A str subclass: not a str for the decoder's checks."""


ANY = st.one_of(
    st.integers(), st.sampled_from(BOUNDS), st.booleans(), st.floats(allow_nan=True), st.none(),
    st.text(max_size=3), st.binary(max_size=3), st.lists(st.integers(), max_size=2), st.just(Sub("k")),
)
INTS = st.one_of(st.integers(min_value=-3, max_value=2**65), st.sampled_from(BOUNDS))


@pytest.fixture(autouse=True)
def built_when_it_must_be() -> None:
    """(autouse in the modules that import it) a missing extension fails when the build had to make it"""
    if C is None and MUST:
        pytest.fail(_MISSING)


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # (compared between the two implementations, never dropped)
        return type(exc).__name__, str(exc)


def _exact(x: Any) -> Any:
    """A value with every type spelled out (1 is not True, floats by their bits)."""
    import struct
    if isinstance(x, (list, tuple)):
        return [type(x).__name__, [_exact(v) for v in x]]
    if isinstance(x, dict):
        return ["dict", sorted((repr(k), _exact(v)) for k, v in x.items())]
    if isinstance(x, float):
        return ["float", struct.pack("<d", x)]
    return [type(x).__name__, x]


def _same(name: str, *args: Any, mutable: tuple[int, ...] = ()) -> None:
    """C and reference on deep copies of ``args``: the same result or error, and the same
    arguments afterwards (in the same order, for the dicts at ``mutable``)."""
    mine, theirs = copy.deepcopy(args), copy.deepcopy(args)
    got = _outcome(getattr(HOT, name), *mine)
    ref = _outcome(getattr(REF, name), *theirs)
    assert _exact(got) == _exact(ref), (name, args)  # (NaN is NaN)
    for i in mutable:
        assert type(mine[i]) is type(theirs[i]) and repr(mine[i]) == repr(theirs[i]), (name, args)


class SubList(list):  # type: ignore[type-arg]
    """A list subclass: the C loops take only exact lists (the reference takes the rest)."""


class SubDict(dict):  # type: ignore[type-arg]
    """A dict subclass whose ``get`` lies: the reference calls it, so must the C path."""

    def get(self, key: Any, default: Any = None) -> Any:
        return None


#: a column as the decoder hands it (a list), or something else in its place
def columns(elements: st.SearchStrategy[Any], max_size: int = 8) -> st.SearchStrategy[Any]:
    lists = st.lists(elements, max_size=max_size)
    return st.one_of(lists, lists, lists, lists.map(tuple), lists.map(SubList), ANY)


#: a start index: usually within the columns, sometimes past them, negative, a bool or junk
STARTS = st.one_of(st.integers(0, 9), st.integers(0, 9), st.integers(-3, -1), st.sampled_from([True, 2**64, 1.0, None]))
