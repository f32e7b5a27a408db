"""The law suite must be able to fail: each check catches a deliberately broken type."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync.testing import (
    Op,
    TypeSpec,
    check_convergence,
    check_delta_correctness,
    check_join_laws,
    check_roundtrip,
)
from crdtsync.testing.specs.counters import gcounter_model
from crdtsync.types.counters import GCounter

_ops = st.builds(Op, st.just("increment"), st.tuples(st.integers(0, 5)))


class AddingCounter(GCounter):
    """Broken: join adds the per-actor totals instead of taking the max (not idempotent)."""

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "test-adding-counter"

    def join(self, other: Any) -> Any:
        counts = dict(self._counts)
        for k, v in other._counts.items():
            counts[k] = counts.get(k, 0) + v
        return AddingCounter(counts)

    def increment(self, n: int = 1, *, actor: str) -> Any:
        return AddingCounter({actor: self._counts.get(actor, 0) + n})


class ForgetfulCounter(GCounter):
    """Broken: join keeps the left side whenever it is non-empty (not commutative, loses writes)."""

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "test-forgetful-counter"

    def join(self, other: Any) -> Any:
        return self if self._counts else other

    def increment(self, n: int = 1, *, actor: str) -> Any:
        return ForgetfulCounter({actor: self._counts.get(actor, 0) + n})


class OffByOneCounter(GCounter):
    """Broken mutator: increments by n+1 (the reference model disagrees)."""

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "test-off-by-one"

    def join(self, other: Any) -> Any:
        return OffByOneCounter(GCounter.join(self, other).counts)

    def increment(self, n: int = 1, *, actor: str) -> Any:
        return OffByOneCounter({actor: self._counts.get(actor, 0) + n + 1})


def _fails(check: Any, spec: TypeSpec[Any]) -> None:
    @settings(max_examples=300, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        check(data, spec)

    with pytest.raises(Exception) as info:
        run()
    # hypothesis reports several distinct failures as an exception group
    errors = getattr(info.value, "exceptions", (info.value,))
    assert all(isinstance(e, AssertionError) for e in errors), errors


def test_join_laws_catch_non_idempotent_join():
    _fails(check_join_laws, TypeSpec(AddingCounter, ops=_ops, model=gcounter_model))


def test_join_laws_catch_non_commutative_join():
    _fails(check_join_laws, TypeSpec(ForgetfulCounter, ops=_ops, model=gcounter_model))


def test_convergence_catches_lost_writes():
    _fails(check_convergence, TypeSpec(ForgetfulCounter, ops=_ops, model=gcounter_model))


def test_delta_correctness_catches_wrong_mutator():
    _fails(check_delta_correctness, TypeSpec(OffByOneCounter, ops=_ops, model=gcounter_model))


def test_roundtrip_catches_lossy_encoding():
    class Lossy(GCounter):
        __slots__ = ()
        TYPE_TAG: ClassVar[str] = "test-lossy"

        def increment(self, n: int = 1, *, actor: str) -> Any:
            return Lossy({actor: self._counts.get(actor, 0) + n})

        def join(self, other: Any) -> Any:
            return Lossy(GCounter.join(self, other).counts)

        def _payload(self) -> Any:
            return [[k, v] for k, v in sorted(self._counts.items())][:1]

    _fails(check_roundtrip, TypeSpec(Lossy, ops=_ops, model=gcounter_model))
