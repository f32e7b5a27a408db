"""Broker data loss detection: an epoch marker record per partition, checked, never trusted away.

A broker can lose its data and reuse offsets from 0 under the same cluster id (a restarted
in-memory broker does; so does a topic deleted and re-created, or one past its retention).
Offsets alone cannot tell: a reader whose cursor is at 57 keeps waiting there while the new
broker writes records 0, 1, 2, ... that nobody reads. So at open, and again after each loss,
the log writes a *marker* record (no payload, header ``crdtsync-epoch`` = a random epoch id)
to every partition and remembers where it landed. :meth:`EpochGuard.check` (every
``check_interval`` seconds, and on demand) finds a loss when

* the topic is gone,
* a partition's end offset is below an offset this log already wrote or read there, or
* the record at a marker's offset is not that marker.

On a loss it counts it (``stats.broker_losses``), logs an ERROR alarm, records a typed
:class:`BrokerDataLoss` event for listeners (the replica's anti-entropy acts on it),
re-creates the topic if needed, writes new markers and bumps the log's *generation*: readers
re-seek every partition to its start, and positions of the new generation are never taken
as covered by the old ones (see :class:`~crdtsync.log.VectorPosition`). Readers skip markers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EPOCH_HEADER", "BrokerDataLoss", "EpochGuard"]

log = logging.getLogger("crdtsync.kafka")

#: header key of a marker record
EPOCH_HEADER = "crdtsync-epoch"


@dataclass(frozen=True)
class BrokerDataLoss:
    """The alarm: the broker lost records this log had written or read."""

    topic: str
    #: partitions where the loss was seen
    partitions: tuple[int, ...]
    #: what was seen, e.g. "end offset 0 < 57 already seen in partition 1"
    reason: str
    #: generation of the log after the loss (1 after the first)
    generation: int
    wall_time: float


class EpochGuard:
    """Markers of one log's partitions and the checks against them."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self.epoch = b""
        self.markers: list[int] = [-1] * partitions
        #: one past the highest offset written or read per partition (this generation)
        self.high: list[int] = [0] * partitions
        self.generation = 0
        self.losses: list[BrokerDataLoss] = []
        self.listeners: list[Callable[[BrokerDataLoss], None]] = []

    def seen(self, partition: int, offset: int) -> None:
        if offset >= self.high[partition]:
            self.high[partition] = offset + 1

    @staticmethod
    def is_marker(headers: Any) -> bool:
        return any(k == EPOCH_HEADER for k, _ in headers or ())

    def new_epoch(self) -> list[tuple[str, bytes]]:
        """Headers of the markers of a fresh epoch (after open or a loss)."""
        self.epoch = os.urandom(16)
        self.markers = [-1] * self.partitions
        return [(EPOCH_HEADER, self.epoch)]

    def placed(self, partition: int, offset: int) -> None:
        self.markers[partition] = offset
        self.seen(partition, offset)

    def ends_lost(self, end: list[int]) -> tuple[str, tuple[int, ...]] | None:
        """A loss shown by end offsets below what this log already saw (None: none)."""
        lost = tuple(p for p in range(self.partitions) if end[p] < self.high[p])
        if not lost:
            return None
        detail = ", ".join(f"partition {p}: end offset {end[p]} < {self.high[p]} already seen" for p in lost)
        return detail, lost

    async def markers_lost(self, fetch_at: Callable[[int, int], Any]) -> tuple[str, tuple[int, ...]] | None:
        """A loss shown by a marker that is no longer at its offset (None: all there)."""
        lost = []
        for p, m in enumerate(self.markers):
            if m < 0:
                continue
            msg = await fetch_at(p, m)
            if msg is None or msg.offset != m or (EPOCH_HEADER, self.epoch) not in tuple(msg.headers or ()):
                lost.append(p)
        if not lost:
            return None
        return f"the epoch markers of partitions {lost} are gone", tuple(lost)

    def alarm(self, reason: str, partitions: tuple[int, ...]) -> BrokerDataLoss:
        self.generation += 1
        self.high = [0] * self.partitions
        event = BrokerDataLoss(self.topic, partitions, reason, self.generation, time.time())
        self.losses.append(event)
        log.error("BROKER DATA LOSS on %s: %s; re-reading every partition from its start (generation %d)",
                  self.topic, reason, self.generation)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a broker-loss listener failed")
        return event


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False
