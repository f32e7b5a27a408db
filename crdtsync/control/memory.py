"""MemoryControl: the in-process control hub (tests, and replicas sharing a MemoryLog).

It offers both transport interfaces of :mod:`crdtsync.control.transport`: endpoints that
hear every other endpoint (:meth:`MemoryControl.endpoint`), and named topics
(:meth:`MemoryControl.topics`) for hub/edge fleets. ``partition``/``heal`` cut it like a
network; ``bytes_delivered`` counts what every subscriber read (for byte budgets).
"""

from __future__ import annotations

from collections.abc import Iterable

from .transport import Deliver

__all__ = ["MemoryControl"]


class MemoryControl:
    """An in-process control hub: every endpoint hears every other one.

    ``partition(groups)`` / ``heal()`` cut it like a network (the log may be cut
    separately); tests use them to starve acknowledgements. A :class:`MemoryLog` has one
    hub (``log.control``) so replicas sharing a MemoryLog hear each other by default.
    """

    def __init__(self) -> None:
        self._endpoints: dict[str, Deliver] = {}
        self._last: dict[str, bytes] = {}
        self._groups: list[frozenset[str]] | None = None
        self.published = 0

    def endpoint(self) -> _MemoryEndpoint:
        return _MemoryEndpoint(self)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Only replicas in the same group hear each other (names not listed: one more group)."""
        gs = [frozenset(g) for g in groups]
        rest = frozenset(self._endpoints) - frozenset().union(*gs)
        self._groups = [*gs, rest] if rest else gs

    def heal(self) -> None:
        self._groups = None
        for name, data in self._last.items():
            self._send(name, data)

    def connected(self, a: str, b: str) -> bool:
        return self._groups is None or any(a in g and b in g for g in self._groups)

    def _send(self, src: str, data: bytes) -> None:
        self._last[src] = data
        self.published += 1
        for dst, deliver in list(self._endpoints.items()):
            if dst != src and self.connected(src, dst):
                deliver(data)


class _MemoryEndpoint:
    def __init__(self, hub: MemoryControl) -> None:
        self._hub = hub
        self._name: str | None = None

    def start(self, name: str, deliver: Deliver) -> None:
        self._name = name
        self._hub._endpoints[name] = deliver
        for src, data in list(self._hub._last.items()):  # what peers said before we joined
            if src != name and self._hub.connected(src, name):
                deliver(data)

    async def publish(self, data: bytes) -> None:
        if self._name is None:
            raise RuntimeError("start() the control endpoint before publishing")
        self._hub._send(self._name, data)

    async def close(self) -> None:
        if self._name is not None:
            self._hub._endpoints.pop(self._name, None)
