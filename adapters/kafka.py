"""KafkaLog: the :class:`~crdtsync.log.Log` protocol over a Kafka topic (aiokafka, extra ``kafka``).

Layout. A namespace and residency scope map to the topic ``<namespace>.events.<scope>``
with ``partitions`` partitions (a setting, checked against the topic at open; the topic is
created when missing and allowed, otherwise :class:`~crdtsync.errors.TopicUnavailable` or
:class:`~crdtsync.errors.TopicMismatch` say what to create). Each append goes to one
partition, chosen by :class:`~crdtsync.adapters._kafka_route.EventRouter`: a stable hash of
the (field, entity key) of the record's first event, and partition 0 (the strong partition,
whose order is the ``SEQUENCED`` order) for any record with a strong field or a sequenced op.

Positions. A partitioned topic has no single order, so a KafkaLog position is a
:class:`~crdtsync.log.VectorPosition`: one offset per partition. The replica treats
positions opaquely (``covers``/``reached``/``earliest`` in :mod:`crdtsync.log._protocol`)
and stores the vector in its snapshots, so one replica holds one KafkaLog, not a log per
partition. ``read(0)`` reads everything; ``read(position)`` resumes there. A read without
``follow`` drains the partitions in order (partition 0 first) up to the ends it saw when it
started, so two such reads of the same records agree on their order; a following read then
yields records as they arrive. Every reader assigns every partition by **manual
assignment** (never a consumer group) and keeps its own cursor.

Producing. ``acks="all"`` explicitly (aiokafka's default is 1); ``linger_ms``,
``max_batch_size`` and ``compression`` (gzip; lz4, zstd and snappy through cramjam) are
settings; a record above ``max_record_bytes`` (``max_request_size`` less room for headers)
is :class:`~crdtsync.errors.RecordTooLarge` before anything is sent. Each record travels as
its own Kafka record batch (the tansu test broker reports a wrong high watermark after
multi-record batches); the records of one append are queued together under the
partition's lock, so they are adjacent, and in order. An append is not atomic across a
failure (Kafka has no multi-batch atomicity without transactions): a prefix may land, and
the writer's retry repeats it, which is harmless because applying is idempotent by dot.
SASL (PLAIN, SCRAM-SHA-256/512) and TLS settings are passed to every client.

Broker loss. Epoch markers per partition detect a broker that lost its data (see
:mod:`crdtsync.adapters._kafka_epoch`): the loss is counted in :attr:`KafkaLog.stats`,
logged as an ERROR, kept as a typed :class:`BrokerDataLoss` event (``losses``, and
``on_loss`` listeners), and every reader re-reads every partition from its start.

Bad input. A record read from the topic that is not a crdtsync batch, has an unknown
version, is oversized or names a region outside the topic's scope goes to the dead-letter
topic ``<namespace>.dlq`` (headers ``crdtsync-reason``, ``crdtsync-topic``,
``crdtsync-partition``, ``crdtsync-offset``, ``crdtsync-reporter``), is counted
(``stats.dead_lettered``, ``stats.dead_letter_reasons``) and is not yielded; reading goes
on. Each reading process reports it, so a bad record appears once per reader in the DLQ.
The log judges the envelope only (:meth:`~crdtsync.events.MsgpackCodec.envelope`); a record
whose events do not decode is quarantined by the replica applying it, which files it here.
Origins forged against a replica's pins (a record claiming another region or role than its
origin's first claim, or this replica's own id) are judged by the replica's admission, which
files them here through :meth:`KafkaLog.dead_letter` (reasons ``forged origin``, ``forged
region``): the same DLQ, headers and counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from crdtsync.errors import LogClosed
from crdtsync.log._protocol import LogEntry, Opening, VectorPosition, check_records

from ._kafka_control import KafkaControl
from ._kafka_epoch import BrokerDataLoss, EpochGuard, sleep_or_stop
from ._kafka_route import EventRouter, RecordCheck
from ._kafka_send import send_many
from ._kafka_settings import KafkaSettings
from ._kafka_stop import stop_all
from ._kafka_topics import TopicAdmin

__all__ = ["BrokerDataLoss", "KafkaControl", "KafkaLog", "KafkaLogStats", "KafkaSettings"]

log = logging.getLogger("crdtsync.kafka")

_POLL_MS = 100
#: dead-lettered records remembered, so a re-read does not report one twice
_DEAD_REMEMBERED = 100_000


@dataclass
class KafkaLogStats:
    """Counters of one KafkaLog."""

    records_appended: int = 0
    records_read: int = 0
    markers_skipped: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    dead_letter_errors: int = 0
    broker_losses: int = 0
    loss_checks: int = 0
    loss_check_errors: int = 0


class KafkaLog:
    """A :class:`~crdtsync.log.Log` over one Kafka topic; open with :meth:`open`."""

    #: a broker can lose records (restarted empty, retention): replicas on it run
    #: anti-entropy (:mod:`crdtsync.replica.antientropy`)
    may_lose_records = True

    def __init__(self, settings: KafkaSettings, *, router: Callable[[Sequence[bytes]], int] | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic
        self.partitions = settings.partitions
        self.max_record_bytes = settings.max_record_bytes
        #: regions this log carries (its residency scope), or None for every region
        self.regions: frozenset[str] | None = frozenset(settings.regions) if settings.regions is not None else None
        self.stats = KafkaLogStats()
        self._router = router or EventRouter(settings.partitions, settings.strong_fields)
        self._check = RecordCheck(self.max_record_bytes, self.regions) if settings.dead_letters else None
        self._guard = EpochGuard(self.topic, settings.partitions)
        self._admin = TopicAdmin(settings)
        self._producer: Any = None
        self._probe: Any = None
        self._tps: list[Any] = []
        self._locks = [asyncio.Lock() for _ in range(settings.partitions)]
        self._check_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._closed = False
        self._reporter = f"{socket.gethostname()}:{os.getpid()}"
        #: (generation, partition, offset) of records this log dead-lettered (oldest first)
        self._dead: dict[tuple[int, int, int], None] = {}

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, bootstrap_servers: str | None = None, *, settings: KafkaSettings | None = None,
             router: Callable[[Sequence[bytes]], int] | None = None, **options: Any) -> Opening[KafkaLog]:
        """Open (``await`` or ``async with``) a log; ``options`` are :class:`KafkaSettings` fields."""
        if settings is None:
            if bootstrap_servers is None:
                raise ValueError("give bootstrap_servers='host:port' (or settings=KafkaSettings(...))")
            settings = KafkaSettings(bootstrap_servers, **options)
        elif bootstrap_servers is not None or options:
            raise ValueError("give either settings= or bootstrap_servers and options, not both")
        chosen = settings

        async def factory() -> KafkaLog:
            kl = cls(chosen, router=router)
            try:
                await kl._start()
            except BaseException:
                await kl.close()
                raise
            return kl

        return Opening(factory, lambda kl: kl.close())

    async def _start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        s = self.settings
        await self._admin.start()
        await self._admin.ensure(self.topic, self.partitions)
        if s.dead_letters:
            await self._admin.ensure(s.dlq_topic, 1)
        self._tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self._producer = AIOKafkaProducer(**s.producer())
        await self._producer.start()
        self._probe = AIOKafkaConsumer(**s.consumer())
        await self._probe.start()
        await self._place_markers()
        self._monitor = asyncio.get_running_loop().create_task(self._watch(), name=f"crdtsync-kafka-{self.topic}")

    def control_channel(self) -> KafkaControl:
        """A new control channel on this log's namespace (``<namespace>.control``): what a
        replica on this log uses for heartbeats by default (``Replica.open(control=True)``)."""
        return KafkaControl(self.settings)

    # -- Log protocol ----------------------------------------------------------------
    async def append(self, records: Sequence[bytes]) -> VectorPosition:
        batch = check_records(records, self.max_record_bytes)
        self._check_open()
        if not batch:
            return await self.end()
        p = self.partition_of(batch)
        generation = self._guard.generation
        first, last = await self._send(p, batch, [])
        if first < self._guard.high[p] and generation == self._guard.generation:
            # the broker handed out an offset this log already saw: offsets were reused
            await self.check_epoch()
        self._guard.seen(p, last)
        self.stats.records_appended += len(batch)
        offsets = [0] * self.partitions
        offsets[p] = first
        return VectorPosition(offsets, p, self._guard.generation)

    def partition_of(self, records: Sequence[bytes]) -> int:
        """The partition an append of ``records`` goes to (all of them: an append is never
        split). A forwarder shipping records of mixed keys splits its batch with this."""
        return self._router(records)

    def read(self, from_position: int | VectorPosition = 0, *, follow: bool = False) -> AsyncGenerator[LogEntry, None]:
        if isinstance(from_position, VectorPosition):
            if len(from_position.offsets) != self.partitions:
                raise ValueError(f"a position of {len(from_position.offsets)} partitions for a topic of "
                                 f"{self.partitions}")
            start = from_position
        elif type(from_position) is int:
            if from_position < 0:
                raise ValueError(f"from_position must be >= 0, got {from_position}")
            if from_position != 0:
                raise ValueError("a KafkaLog reads from 0 (everything) or from a VectorPosition it gave")
            start = None
        else:
            raise TypeError(f"not a log position: {from_position!r}")
        return self._read(start, follow)

    async def end(self) -> VectorPosition:
        self._check_open()
        return VectorPosition(await self._end_offsets(), None, self._guard.generation)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        await stop_all(f"KafkaLog({self.topic})", [self._monitor], [self._producer, self._probe])
        await self._admin.close()

    async def truncate_before(self, position: Any) -> None:
        """Keeps everything (allowed by the protocol): Kafka drops old records by the
        topic's retention, which the epoch markers and anti-entropy are there for."""
        self._check_open()

    # -- broker loss -----------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Broker data losses detected so far (positions carry it)."""
        return self._guard.generation

    @property
    def losses(self) -> list[BrokerDataLoss]:
        return list(self._guard.losses)

    def on_loss(self, listener: Callable[[BrokerDataLoss], None]) -> Callable[[], None]:
        """Call ``listener(event)`` on every detected loss; returns an unsubscribe function."""
        self._guard.listeners.append(listener)
        return lambda: self._guard.listeners.remove(listener)

    async def check_epoch(self) -> BrokerDataLoss | None:
        """Check the markers now; on a loss raise the alarm and recover (see module doc)."""
        self._check_open()
        async with self._check_lock:
            self.stats.loss_checks += 1
            try:
                found = await self._find_loss()
            except Exception as exc:  # broker unreachable: no verdict this time
                self.stats.loss_check_errors += 1
                log.warning("could not check %s for data loss: %r", self.topic, exc)
                return None
            if found is None:
                return None
            return await self._declare_loss(*found)

    async def report_loss(self, reason: str, partitions: tuple[int, ...]) -> BrokerDataLoss:
        """Raise the data-loss alarm for a loss found outside :meth:`check_epoch`."""
        async with self._check_lock:
            return await self._declare_loss(reason, partitions)

    async def _declare_loss(self, reason: str, partitions: tuple[int, ...]) -> BrokerDataLoss:
        event = self._guard.alarm(reason, partitions)
        self.stats.broker_losses += 1
        await self._recover()
        return event

    async def _find_loss(self) -> tuple[str, tuple[int, ...]] | None:
        if self.topic not in await self._admin.topics():
            return f"topic {self.topic} is gone", tuple(range(self.partitions))
        ends = await self._raw_end_offsets()
        guard = self._guard
        short = [p for p, m in enumerate(guard.markers) if m >= 0 and ends[p] <= m]
        if short:
            return (f"partitions {short} end below their epoch markers (ends {ends}, markers {guard.markers})",
                    tuple(short))
        return await guard.markers_lost(self._fetch_at)

    async def _recover(self) -> None:
        count = await self._admin.partition_count(self.topic)
        if count is None:
            await self._admin.ensure(self.topic, self.partitions)
        elif count < self.partitions:
            log.error("after the loss, topic %s has %d partitions, fewer than %d: recreate it",
                      self.topic, count, self.partitions)
        await self._place_markers()

    async def _watch(self) -> None:
        while not await sleep_or_stop(self._stop, self.settings.check_interval):
            try:
                await self.check_epoch()
            except LogClosed:
                return
            except Exception:
                log.exception("the data-loss check of %s failed", self.topic)

    async def _place_markers(self) -> None:
        headers = self._guard.new_epoch()
        for p in range(self.partitions):
            offset, _ = await self._send(p, [b""], headers)
            self._guard.placed(p, offset)

    async def _fetch_at(self, partition: int, offset: int) -> Any:
        tp = self._tps[partition]
        async with self._probe_lock:
            self._probe.assign([tp])
            self._probe.seek(tp, offset)
            for _ in range(3):
                got = await self._probe.getmany(tp, timeout_ms=1000, max_records=1)
                msgs = got.get(tp, [])
                if msgs:
                    return msgs[0]
            return None

    # -- internals -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed(f"KafkaLog({self.topic}) is closed; open a new one")

    async def _send(self, partition: int, values: Sequence[bytes], headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Produce ``values`` in order to ``partition``; (first, last) offset once acked."""
        async with self._locks[partition]:
            sent = await send_many(self._producer, self.settings.max_request_size, self.topic, partition, values,
                                   headers=headers)
        metas = await asyncio.gather(*(s.future for s in sent))
        return metas[0].offset, metas[-1].offset + sent[-1].records - 1

    async def _raw_end_offsets(self) -> list[int]:
        ends = await self._probe.end_offsets(self._tps)
        return [int(ends[tp]) for tp in self._tps]

    async def _end_offsets(self) -> list[int]:
        """End offsets, never below what this log already wrote or read (the tansu broker
        under-reports the end after a multi-record batch)."""
        raw = await self._raw_end_offsets()
        return [max(e, h) for e, h in zip(raw, self._guard.high)]

    def _accept(self, partition: int, msg: Any) -> bool:
        """Whether a fetched record is one to yield (markers and dead letters are not)."""
        self._guard.seen(partition, msg.offset)
        if EpochGuard.is_marker(msg.headers):
            self.stats.markers_skipped += 1
            return False
        if self._check is not None:
            where = (self._guard.generation, partition, msg.offset)
            if where in self._dead:
                return False  # dead-lettered already by an earlier read of this log
            reason = self._check.reason(msg.value or b"")
            if reason is not None:
                self._file(partition, msg.offset, msg.value or b"", reason)
                return False
        self.stats.records_read += 1
        return True

    def dead_letter(self, position: VectorPosition | int, payload: bytes, reason: str) -> None:
        """File the record at ``position`` (one this log yielded) in the DLQ: a reader
        refused it for good (e.g. the replica's admission, for a forged origin). Counted as
        the log's own dead letters are; a record is filed once per log however often it is
        reported. A no-op when dead letters are off."""
        if not self.settings.dead_letters:
            return
        if not isinstance(position, VectorPosition) or position.partition is None:
            raise ValueError(f"dead_letter needs a record position this log yielded, got {position!r}")
        if position.generation != self._guard.generation:
            return  # a lost generation's offsets name nothing now; the re-read reports it again
        self._file(position.partition, position.offsets[position.partition], payload, reason)

    def _file(self, partition: int, offset: int, value: bytes, reason: str) -> None:
        where = (self._guard.generation, partition, offset)
        if where in self._dead:
            return  # dead-lettered already by an earlier read or report
        self._dead[where] = None
        if len(self._dead) > _DEAD_REMEMBERED:
            del self._dead[next(iter(self._dead))]
        kind = reason.split(":", 1)[0]
        self.stats.dead_lettered += 1
        self.stats.dead_letter_reasons[kind] = self.stats.dead_letter_reasons.get(kind, 0) + 1
        log.warning("dead-lettering the record at %s/%d@%d: %s", self.topic, partition, offset, reason)
        headers = [("crdtsync-reason", reason.encode()), ("crdtsync-topic", self.topic.encode()),
                   ("crdtsync-partition", str(partition).encode()), ("crdtsync-offset", str(offset).encode()),
                   ("crdtsync-reporter", self._reporter.encode())]
        room = self.max_record_bytes - sum(len(k) + len(v) + 8 for k, v in headers) - 64
        if len(value) > room:  # the dead letter keeps the start of an oversized record
            value = value[: max(room, 0)]
            headers.append(("crdtsync-truncated", b"1"))

        async def send() -> None:
            try:
                await self._producer.send_and_wait(self.settings.dlq_topic, value, partition=0, headers=headers)
            except Exception as exc:
                self.stats.dead_letter_errors += 1
                log.error("could not write a dead letter to %s: %r", self.settings.dlq_topic, exc)

        asyncio.get_running_loop().create_task(send())

    async def _read(self, start: VectorPosition | None, follow: bool) -> AsyncGenerator[LogEntry, None]:
        from aiokafka import AIOKafkaConsumer

        self._check_open()
        consumer = AIOKafkaConsumer(**self.settings.consumer())
        await consumer.start()
        try:
            reader = _Reader(self, consumer, start)
            async for entry in reader.entries(follow):
                yield entry
        finally:
            await stop_all(f"KafkaLog({self.topic}) reader", [], [consumer])

    async def __aenter__(self) -> KafkaLog:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"KafkaLog({self.topic}, partitions={self.partitions}, generation={self._guard.generation})"


class _Reader:
    """One read of a KafkaLog: its consumer, its cursor (next offset per partition)."""

    def __init__(self, kl: KafkaLog, consumer: Any, start: VectorPosition | None) -> None:
        self.kl = kl
        self.consumer = consumer
        self.start = start
        # what the start position covers: the positions this reader yields cover it too,
        # so a consumer that skips the start's own record (read again first) still holds
        # a position that says it was read
        self.floor = [0] * kl.partitions

    async def _seek(self, start: VectorPosition | None) -> list[int]:
        kl = self.kl
        cursor = [0] * kl.partitions
        self.floor = [0] * kl.partitions
        if start is not None and start.generation == kl.generation:
            cursor = list(start.offsets)
            self.floor = list(start.after().offsets)
            ends = await kl._end_offsets()
            if any(c > e for c, e in zip(cursor, ends)):
                # a vector position is only ever issued by the log: one past the ends means
                # the broker lost what it had seen (e.g. a snapshot from before a restart)
                past = tuple(p for p, (c, e) in enumerate(zip(cursor, ends)) if c > e)
                await kl.report_loss(f"a read from {cursor} is past the ends {ends}", past)
                cursor = [0] * kl.partitions
                self.floor = [0] * kl.partitions
        self.consumer.assign(kl._tps)
        for tp, offset in zip(kl._tps, cursor):
            self.consumer.seek(tp, offset)
        return cursor

    def _entry(self, p: int, msg: Any, cursor: list[int], generation: int) -> LogEntry | None:
        if msg.offset < cursor[p]:
            return None  # re-delivered below the cursor
        cursor[p] = msg.offset
        keep = self.kl._accept(p, msg)
        entry = None
        if keep:
            offsets = [max(c, f) for c, f in zip(cursor, self.floor)]
            offsets[p] = msg.offset
            entry = LogEntry(VectorPosition(offsets, p, generation), msg.value or b"")
        cursor[p] = msg.offset + 1
        return entry

    async def entries(self, follow: bool) -> AsyncGenerator[LogEntry, None]:
        kl, consumer = self.kl, self.consumer
        start = self.start
        while True:
            cursor = await self._seek(start)
            generation = kl.generation
            ends = await kl._end_offsets()
            lost = False
            # the records there now: partition by partition, in a repeatable order
            for p, tp in enumerate(kl._tps):
                while cursor[p] < ends[p] and not lost:
                    got = await consumer.getmany(tp, timeout_ms=_POLL_MS)
                    msgs = got.get(tp, [])
                    for msg in msgs:
                        entry = self._entry(p, msg, cursor, generation)
                        if entry is not None:
                            yield entry
                    if not msgs:  # offsets without records (compaction, control records)
                        cursor[p] = max(cursor[p], int(await consumer.position(tp)))
                    if kl._closed:
                        return
                    lost = kl.generation != generation
            if lost:
                start = None  # the broker lost data: every partition again from its start
                continue
            if not follow:
                return
            # then whatever arrives, as it arrives
            while not lost:
                got = await consumer.getmany(*kl._tps, timeout_ms=_POLL_MS)
                for tp in sorted(got, key=lambda t: t.partition):
                    for msg in got[tp]:
                        entry = self._entry(tp.partition, msg, cursor, generation)
                        if entry is not None:
                            yield entry
                if kl._closed:
                    return
                lost = kl.generation != generation
            start = None  # the broker lost data: every partition again from its start
