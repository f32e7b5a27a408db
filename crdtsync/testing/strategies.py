"""Hypothesis strategies for crdtsync types: operations and reachable states.

``st.from_type(crdtsync.ORSet)`` works once hypothesis has loaded crdtsync's entry point
(it does so automatically when both are installed): it draws states reachable by random
operations on three replicas with random joins, never hand-built payloads, so every
drawn state is one a real system could hold.
"""

from __future__ import annotations

from typing import Any, TypeVar

from hypothesis import strategies as st

from ..types._base import CRDT
from ._spec import Op, TypeSpec, all_specs, spec_for

__all__ = ["operations", "states", "register_type_strategies"]

T = TypeVar("T", bound=CRDT[Any])


class _DrawAdapter:
    """Gives a composite's ``draw`` the ``data.draw`` interface of ``st.data()``."""

    def __init__(self, draw: Any) -> None:
        self._draw = draw

    def draw(self, strategy: st.SearchStrategy[Any], label: str | None = None) -> Any:
        return self._draw(strategy)


def operations(cls: type[T]) -> st.SearchStrategy[Op]:
    """Operations valid on any state of ``cls`` (from its registered ``TypeSpec``)."""
    return spec_for(cls).ops


@st.composite
def _reachable(draw: Any, spec: TypeSpec[Any], replicas: int, max_steps: int) -> CRDT[Any]:
    from .laws import random_network

    net = random_network(_DrawAdapter(draw), spec, replicas=replicas, max_steps=max_steps, faults=False)  # type: ignore[arg-type]
    if draw(st.booleans()):
        picked: CRDT[Any] = net.states[draw(st.integers(0, replicas - 1))]
        return picked
    net.flush()
    return net.states[0]


def states(cls: type[T] | TypeSpec[T], *, replicas: int = 3, max_steps: int = 20) -> st.SearchStrategy[T]:
    """States of ``cls`` reachable through random operations and joins."""
    spec = cls if isinstance(cls, TypeSpec) else spec_for(cls)
    return _reachable(spec, replicas, max_steps)  # type: ignore[return-value]


def register_type_strategies() -> None:
    """Make ``st.from_type`` draw reachable states for every type with a ``TypeSpec``."""
    for cls, spec in all_specs().items():
        st.register_type_strategy(cls, _deferred_states(spec))


def _deferred_states(spec: TypeSpec[Any]) -> st.SearchStrategy[Any]:
    def build() -> st.SearchStrategy[Any]:
        return states(spec)

    return st.deferred(build)
