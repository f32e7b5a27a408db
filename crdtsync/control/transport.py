"""Control transports: how heartbeat bytes travel between the replicas of a fleet.

Two interfaces:

* :class:`ControlChannel` (one stream): ``start(name, deliver)`` registers the function
  that receives every peer's bytes; ``publish(data)`` sends this replica's. Every replica
  hears every other one: right for a handful of peers on one host.
* :class:`ControlTransport` (topics): ``subscribe(topic, deliver)`` and
  ``publish(topic, data)``. A fleet with hubs and edges (:mod:`crdtsync.control.topology`)
  needs it: edges publish their heartbeats on the hubs' topic and read only their own
  hub's aggregate topic, so nobody reads the whole fleet but the hubs.
  :class:`~crdtsync.adapters.kafka.KafkaControl` maps each topic to a key prefix on one
  partition of ``<ns>.control``.

Both deliver untrusted bytes: the receiver decodes and validates them (like a log).
Implementations: :class:`~crdtsync.control.memory.MemoryControl` (one process, both
interfaces), :class:`~crdtsync.control.directory.DirectoryControl` (processes of one host,
one stream), :class:`~crdtsync.adapters.kafka.KafkaControl` (machines sharing a Kafka
broker, topics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["ControlChannel", "ControlTransport", "Deliver"]

#: receives one message's bytes
Deliver = Callable[[bytes], None]


class ControlChannel(Protocol):
    """Where heartbeats travel, one stream heard by every replica. Implementations:
    :class:`MemoryControl` endpoints (one process), :class:`DirectoryControl` (one host)."""

    def start(self, name: str, deliver: Deliver) -> None:
        """Begin delivering peers' heartbeats to ``deliver`` (this replica is ``name``)."""
        ...

    async def publish(self, data: bytes) -> None:
        """Send this replica's heartbeat (the latest one replaces earlier ones)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ControlTransport(Protocol):
    """Publish/subscribe of bytes on named topics (what a hub/edge fleet needs).

    ``subscribe`` may be called for several topics; a message published on a topic is
    delivered to every *other* subscriber of that topic, in order per publisher (a lost
    message is allowed: receivers detect gaps by sequence number). A subscriber that joins
    late is given the last message of every publisher on that topic first (a compacted
    topic), so it learns the fleet before anyone speaks again.
    """

    def subscribe(self, name: str, topic: str, deliver: Deliver) -> None:
        """Deliver messages of ``topic`` (other than ``name``'s own) to ``deliver``."""
        ...

    async def publish_to(self, name: str, topic: str, data: bytes) -> None:
        """Publish ``data`` from replica ``name`` on ``topic``."""
        ...

    async def close(self) -> None: ...
