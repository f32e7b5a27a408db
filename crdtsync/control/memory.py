"""MemoryControl: the in-process control hub (tests, and replicas sharing a MemoryLog).

It offers both transport interfaces of :mod:`crdtsync.control.transport`: endpoints that
hear every other endpoint (:meth:`MemoryControl.endpoint`), and named topics
(:meth:`MemoryControl.topics`) for hub/edge fleets. ``partition``/``heal`` cut it like a
network; ``bytes_delivered`` counts what every subscriber read (for byte budgets).
"""

from __future__ import annotations

from collections.abc import Iterable

from .stream import Retained
from .transport import Deliver

__all__ = ["MemoryControl", "MemoryTopics"]


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
        # topics: topic -> subscriber name -> deliver; topic -> publisher -> last message
        self._subs: dict[str, dict[str, Deliver]] = {}
        self._retained: dict[str, Retained] = {}
        #: bytes delivered to each subscriber (all topics), for byte budgets
        self.bytes_read: dict[str, int] = {}

    def endpoint(self) -> _MemoryEndpoint:
        """A one-stream endpoint (:class:`ControlChannel`): hears every other endpoint."""
        return _MemoryEndpoint(self)

    def topics(self) -> MemoryTopics:
        """A topic endpoint (:class:`ControlTransport`) for one replica of a hub/edge fleet."""
        return MemoryTopics(self)

    def _subscribe(self, name: str, topic: str, deliver: Deliver) -> None:
        self._subs.setdefault(topic, {})[name] = deliver
        for src, data in self._retained.get(topic, Retained()).replay():  # what was said before
            if src != name and self.connected(src, name):
                self._deliver(name, deliver, data)

    def _publish_to(self, src: str, topic: str, data: bytes) -> None:
        self._retained.setdefault(topic, Retained()).add(src, data)
        self.published += 1
        for dst, deliver in list(self._subs.get(topic, {}).items()):
            if dst != src and self.connected(src, dst):
                self._deliver(dst, deliver, data)

    def _deliver(self, dst: str, deliver: Deliver, data: bytes) -> None:
        self.bytes_read[dst] = self.bytes_read.get(dst, 0) + len(data)
        deliver(data)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Only replicas in the same group hear each other (names not listed: one more group)."""
        gs = [frozenset(g) for g in groups]
        rest = frozenset(self._endpoints) - frozenset().union(*gs)
        self._groups = [*gs, rest] if rest else gs

    def heal(self) -> None:
        self._groups = None
        for name, data in self._last.items():
            self._send(name, data)
        for topic, kept in self._retained.items():
            for name, data in kept.replay():
                for dst, deliver in list(self._subs.get(topic, {}).items()):
                    if dst != name:
                        self._deliver(dst, deliver, data)

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


class MemoryTopics:
    """One replica's topic endpoint on a :class:`MemoryControl` (a ``ControlTransport``)."""

    def __init__(self, hub: MemoryControl) -> None:
        self._hub = hub
        self._names: set[str] = set()

    def subscribe(self, name: str, topic: str, deliver: Deliver) -> None:
        self._names.add(name)
        self._hub._subscribe(name, topic, deliver)

    async def publish_to(self, name: str, topic: str, data: bytes) -> None:
        self._hub._publish_to(name, topic, data)

    async def close(self) -> None:
        for subs in self._hub._subs.values():
            for name in self._names:
                subs.pop(name, None)
