"""KafkaControl: the control channel over a Kafka topic (``<namespace>.control``).

A :class:`~crdtsync.control.transport.ControlTransport` (named topics), so peers, hubs and
edges all run over it exactly as over :class:`~crdtsync.control.memory.MemoryControl`. Each
control *topic* (``peers``, ``hubs``, ``agg.<hub>``: :mod:`crdtsync.control.topology`) is a
**key prefix on one partition** of ``<namespace>.control``; a record's key is
``<topic> NUL <sender>`` and its value the message's bytes. One topic, one partition, one
producer per sender: messages of one sender on one topic arrive in order.

Partitions (:func:`control_partition`): ``peers`` is partition 0, ``hubs`` partition 1 and
every hub's aggregate topic hashes onto partitions 2 and up, so with three partitions or
more an edge reads its hub's aggregate partition only, never the fleet's heartbeats
(``control_partitions`` on :class:`~crdtsync.adapters.kafka.KafkaSettings`, default 4;
records of topics it does not read that share its partition are skipped unread by value).

Joining late. A subscriber starts ``lookback`` records before each partition's end, so it
hears the recent messages of every sender there (the fleet, before anyone speaks again);
a delta whose base it never saw is a gap that the stream protocol repairs by asking the
sender for a full message (:mod:`crdtsync.control.stream`). Kafka may lose control records
(a broker restarted empty, retention): receivers detect that the same way. Nothing here is
trusted: every delivered message is validated by the replica, and a record whose key is not
``<topic> NUL <sender>`` (not written by crdtsync) is counted in ``stats.foreign`` and skipped.

Faults. ``block(names)`` / ``unblock()`` make this endpoint deaf to some senders (counted
in ``stats.blocked``): a control-only network partition over the real broker for tests,
while the event log keeps flowing. A broker that cannot be reached is retried with a capped
backoff; publishing then raises, and the replica's heartbeat loop logs it and beats again.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crdtsync.control.topology import HUBS_TOPIC, PEERS_TOPIC
from crdtsync.control.transport import Deliver

from ._kafka_send import send_one
from ._kafka_settings import KafkaSettings
from ._kafka_stop import stop_all
from ._kafka_topics import TopicAdmin

__all__ = ["KafkaControl", "KafkaControlStats", "control_partition"]

log = logging.getLogger("crdtsync.kafka")

_SEP = b"\x00"
_POLL_MS = 50
_BACKOFF_MAX = 5.0


def control_partition(topic: str, partitions: int) -> int:
    """The partition of ``<ns>.control`` that carries control topic ``topic``."""
    fixed = {PEERS_TOPIC: 0, HUBS_TOPIC: 1}
    if topic in fixed:
        return fixed[topic] % partitions
    h = zlib.crc32(topic.encode())
    return 2 + h % (partitions - 2) if partitions > 2 else h % partitions


def _check_name(what: str, value: str) -> None:
    if not value or "\x00" in value:
        raise ValueError(f"a control {what} must be a non-empty string without NUL, got {value!r}")


@dataclass
class KafkaControlStats:
    """Counters of one KafkaControl endpoint."""

    published: int = 0
    publish_errors: int = 0
    delivered: int = 0
    bytes_read: int = 0  # bytes of the messages delivered to subscribers
    skipped_own: int = 0
    skipped_other_topics: int = 0
    foreign: int = 0  # records not written by a KafkaControl
    blocked: int = 0
    deliver_errors: int = 0
    read_errors: int = 0


class KafkaControl:
    """A :class:`ControlTransport` over ``<namespace>.control``; see the module doc.

    ``KafkaControl(settings)`` costs nothing until used: the first ``subscribe`` starts
    the reader task, the first ``publish_to`` the producer (and the topic is created if
    missing and allowed, like the events topic). ``close()`` stops both.
    """

    #: the channel carries every message (not only each sender's latest): deltas are fine
    latest_only = False

    def __init__(self, settings: KafkaSettings, *, lookback: int = 512) -> None:
        if lookback < 0:
            raise ValueError(f"lookback must be >= 0, got {lookback}")
        self.settings = settings
        self.topic = settings.control_topic
        self.partitions = settings.control_partitions
        self.lookback = lookback
        self.stats = KafkaControlStats()
        self._subs: dict[str, dict[str, Deliver]] = {}
        self._blocked: frozenset[str] = frozenset()
        self._admin = TopicAdmin(settings)
        self._producer: Any = None
        self._consumer: Any = None
        self._ready_lock = asyncio.Lock()
        self._topic_ready = False
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # -- ControlTransport ---------------------------------------------------------------
    def subscribe(self, name: str, topic: str, deliver: Deliver) -> None:
        """Deliver the messages of ``topic`` (other than ``name``'s own) to ``deliver``."""
        _check_name("topic", topic)
        _check_name("sender name", name)
        self._check_open()
        self._subs.setdefault(topic, {})[name] = deliver
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"crdtsync-control-{self.topic}")

    async def publish_to(self, name: str, topic: str, data: bytes) -> None:
        """Publish ``data`` from ``name`` on ``topic`` (waits for the broker's ack)."""
        _check_name("topic", topic)
        _check_name("sender name", name)
        self._check_open()
        await self._start_producer()
        key = topic.encode() + _SEP + name.encode()
        try:
            fut = await send_one(self._producer, self.settings.max_request_size, self.topic,
                                 control_partition(topic, self.partitions), bytes(data), key=key)
            await fut
        except Exception:
            self.stats.publish_errors += 1
            self._topic_ready = False  # a lost topic (broker restarted empty) is created again
            raise
        self.stats.published += 1

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await stop_all(f"KafkaControl({self.topic})", [self._reader], [self._producer, self._consumer])
        await self._admin.close()

    # -- faults (tests) --------------------------------------------------------------------
    def block(self, names: Iterable[str]) -> None:
        """Stop delivering messages from ``names`` (a control-only partition)."""
        self._blocked = frozenset(names)

    def unblock(self) -> None:
        self._blocked = frozenset()

    # -- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            from crdtsync.errors import LogClosed

            raise LogClosed(f"KafkaControl({self.topic}) is closed; open a new one")

    async def _ensure_topic(self) -> None:
        if self._topic_ready:
            return
        if not self._admin.started:
            await self._admin.start()
        await self._admin.ensure(self.topic, self.partitions)
        self._topic_ready = True

    async def _start_producer(self) -> None:
        if self._producer is not None and self._topic_ready:
            return
        async with self._ready_lock:
            await self._ensure_topic()
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(**{**self.settings.producer(), "linger_ms": 0})
                await producer.start()
                self._producer = producer

    def _wanted(self) -> set[int]:
        return {control_partition(t, self.partitions) for t, subs in self._subs.items() if subs}

    async def _read(self) -> None:
        backoff = 0.1
        while not self._closed:
            try:
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.read_errors += 1
                log.warning("reading %s failed (%r); retrying in %.1f s", self.topic, exc, backoff)
                self._topic_ready = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _read_once(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async with self._ready_lock:
            await self._ensure_topic()
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**{**self.settings.consumer(), "auto_offset_reset": "earliest"})
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        assigned: set[int] = set()
        while not self._closed:
            wanted = self._wanted()
            if wanted != assigned:
                tps = [TopicPartition(self.topic, p) for p in sorted(wanted)]
                consumer.assign(tps)
                new = [tp for tp in tps if tp.partition not in assigned]
                if new:
                    ends = await consumer.end_offsets(new)
                    begins = await consumer.beginning_offsets(new)
                    for tp in new:
                        consumer.seek(tp, max(int(begins[tp]), int(ends[tp]) - self.lookback))
                assigned = wanted
            got = await consumer.getmany(timeout_ms=_POLL_MS)
            for tp in sorted(got, key=lambda t: t.partition):
                for msg in got[tp]:
                    self._dispatch(msg.key, msg.value)

    def _dispatch(self, key: bytes | None, value: bytes | None) -> None:
        if not key or _SEP not in key or value is None:
            self.stats.foreign += 1
            return
        raw_topic, _, raw_sender = key.partition(_SEP)
        try:
            topic, sender = raw_topic.decode(), raw_sender.decode()
        except UnicodeDecodeError:
            self.stats.foreign += 1
            return
        subs = self._subs.get(topic)
        if not subs:
            self.stats.skipped_other_topics += 1
            return
        if sender in self._blocked:
            self.stats.blocked += 1
            return
        for name, deliver in list(subs.items()):
            if name == sender:
                self.stats.skipped_own += 1
                continue
            self.stats.delivered += 1
            self.stats.bytes_read += len(value)
            try:
                deliver(value)
            except Exception:
                self.stats.deliver_errors += 1
                log.exception("a control subscriber of %s failed on a message from %s", topic, sender)

    def __repr__(self) -> str:
        return f"KafkaControl({self.topic}, partitions={self.partitions})"
