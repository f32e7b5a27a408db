"""Type specifications: what the shared law suite needs to know about a type.

A :class:`TypeSpec` bundles a type with a hypothesis strategy of its operations and a
*reference model*: a plain function from an operation history to the value the type
must show. The model is written the naive way (keep every operation, compute the value
from scratch), so a disagreement points at the optimized type, not the test.

Users point the law suite at their own type by writing a ``TypeSpec`` for it and
subclassing :class:`crdtsync.testing.CRDTLaws`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hypothesis import strategies as st

from ..types._base import CRDT

__all__ = ["Op", "HistoryEvent", "TypeSpec", "register_spec", "spec_for", "all_specs"]

T = TypeVar("T", bound=CRDT[Any])


@dataclass(frozen=True)
class Op:
    """One mutator call: the method name and its positional arguments."""

    name: str
    args: tuple[Any, ...] = ()

    def apply(self, state: CRDT[Any], *, actor: str, ts: int) -> CRDT[Any]:
        """Call the mutator on ``state`` and return its delta."""
        fn = getattr(state, self.name)
        if type(state).NEEDS_TIME:
            return fn(*self.args, actor=actor, ts=ts)  # type: ignore[no-any-return]
        return fn(*self.args, actor=actor)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(map(repr, self.args))})"


@dataclass(frozen=True)
class HistoryEvent:
    """An operation as the reference model sees it.

    ``past`` holds the ids of the events the issuing replica had seen when it issued
    this one (its causal past); events are given to models in issue order, which is
    always a linear extension of causality.
    """

    id: int
    actor: str
    ts: int
    op: Op
    past: frozenset[int] = frozenset()


Model = Callable[[Sequence[HistoryEvent]], Any]


@dataclass(frozen=True)
class TypeSpec(Generic[T]):
    """How the law suite drives and checks one type.

    Attributes:
        cls: the type.
        ops: strategy of operations valid on any state of the type.
        model: reference model, history -> expected ``value()``; ``None`` skips the
            value checks (the algebraic laws still run).
        make: builds the empty state (defaults to ``cls()``); use it to pick small
            parameters, e.g. short windows so that expiry is exercised.
        same_value: compares a type's value with the model's (defaults to ``==``).
        max_ms_step: the most simulated wall time that passes between two operations.
        rejects: exceptions an operation may raise as a legitimate refusal (a bounded
            decrement beyond its rights): the simulator records nothing and goes on.
    """

    cls: type[T]
    ops: st.SearchStrategy[Op]
    model: Model | None = None
    make: Callable[[], T] | None = None
    same_value: Callable[[Any, Any], bool] = operator.eq
    max_ms_step: int = 5
    name: str = field(default="")
    rejects: tuple[type[Exception], ...] = ()

    def empty(self) -> T:
        return self.make() if self.make is not None else self.cls()

    @property
    def label(self) -> str:
        return self.name or self.cls.__name__


_SPECS: dict[type[Any], TypeSpec[Any]] = {}


def register_spec(spec: TypeSpec[T]) -> TypeSpec[T]:
    """Make ``spec`` the default for its type (used by ``st.from_type`` and the laws)."""
    _SPECS[spec.cls] = spec
    return spec


def spec_for(cls: type[T]) -> TypeSpec[T]:
    _load_builtin_specs()
    try:
        return _SPECS[cls]
    except KeyError:
        raise LookupError(
            f"no TypeSpec registered for {cls.__qualname__}; call "
            "crdtsync.testing.register_spec(TypeSpec(...)) first"
        ) from None


def all_specs() -> dict[type[Any], TypeSpec[Any]]:
    _load_builtin_specs()
    return dict(_SPECS)


_loaded = False


def _load_builtin_specs() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import specs  # noqa: F401  (registers the built-in specs)
