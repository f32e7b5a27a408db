"""The :class:`Forwarder`: bounded up and down passes between an edge's log and a shared one.

See :mod:`crdtsync.forwarder` for what a pass copies, when it checkpoints, and what a
crash re-sends. This module holds the passes; the state file is
:mod:`~crdtsync.forwarder.state`, the counters :mod:`~crdtsync.forwarder.stats`, the
long-running loop :mod:`~crdtsync.forwarder.service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CorruptRecord, UnsupportedVersion
from ..events import Codec, MsgpackCodec
from ..log._protocol import Log, Position, VectorPosition, read_range
from .state import ForwarderState
from .stats import ForwarderStats, OutboxGauge, records_behind

__all__ = ["ForwardReport", "Forwarder"]

log = logging.getLogger("crdtsync.forwarder")


@dataclass(frozen=True)
class ForwardReport:
    """What one :meth:`Forwarder.run_once` copied; ``complete``: both passes reached the
    end their source had when they began (no ``max_batches`` cut)."""

    shipped: int
    received: int
    complete: bool = True


class Forwarder:
    """Bridge ``local`` (the edge's log) and ``shared`` for replica actor ``origin``.

    ``batch`` records go in one append (split by partition on a partitioned shared log);
    ``down_batch`` (default: ``batch``) is the same for the down direction;
    ``max_batches`` (default: no limit) caps the batches of one pass, on top of the bound
    every pass has (the source's end when the pass started). Progress is checkpointed to
    ``state_path`` after every batch. ``shared`` may be None (not connected yet: passes
    copy nothing); :class:`~crdtsync.forwarder.service.ForwarderService` sets it.
    """

    def __init__(
        self,
        local: Log,
        shared: Log | None,
        *,
        origin: str,
        state_path: str | os.PathLike[str] | None = None,
        codec: Codec | None = None,
        batch: int = 256,
        max_batches: int | None = None,
        down_batch: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        if down_batch is not None and down_batch < 1:
            raise ValueError(f"down_batch must be at least 1 (or None: batch), got {down_batch}")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be at least 1 (or None), got {max_batches}")
        self.local = local
        self._shared: Log | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._reship = False
        self.origin = origin
        self.codec = codec or MsgpackCodec()
        self.state = ForwarderState(state_path)
        self.state_path = self.state.path
        self.batch = batch
        self.down_batch = down_batch or batch
        self.max_batches = max_batches
        self.clock = clock
        #: False: passes are no-ops (a link switched off by hand)
        self.connected = True
        self.stats = ForwarderStats()
        #: last local position acknowledged by the shared log; last shared position copied down
        self.shipped_pos, self.received_pos = self.state.load()
        self.outbox = OutboxGauge(local, self._is_own)
        self._caught_up_at: float | None = None
        self.shared = shared

    @property
    def shared(self) -> Log | None:
        """The shared log (None: not connected). Setting it subscribes to its data-loss
        alarm when it has one (``KafkaLog.on_loss``): after a loss the next up pass ships
        the whole outbox again, since the broker may have lost what it acknowledged."""
        return self._shared

    @shared.setter
    def shared(self, log_: Log | None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._shared = log_
        on_loss = getattr(log_, "on_loss", None)
        if on_loss is not None:
            self._unsubscribe = on_loss(self._broker_lost)

    def _broker_lost(self, event: Any) -> None:
        self.stats.broker_losses += 1
        self._reship = True
        log.error("forwarder %s: the shared log lost data (%s); shipping the whole outbox again", self.origin, event)

    # -- records -----------------------------------------------------------------------
    def _origin_of(self, payload: bytes, count: bool = True) -> str | None:
        """The origin of a record (None if its envelope does not decode: counted once, by
        the pass; a record whose events are damaged is copied, and replicas quarantine it)."""
        try:
            envelope = getattr(self.codec, "envelope", None)  # the origin alone, events not decoded
            if envelope is not None:
                return envelope(payload)[0]  # type: ignore[no-any-return]
            decode = getattr(self.codec, "decode_record", None)  # no Event objects for format 2
            rec = decode(payload) if decode is not None else self.codec.decode(payload)
            return rec.origin  # type: ignore[no-any-return]
        except (CorruptRecord, UnsupportedVersion):
            if count:
                self.stats.undecodable += 1
            return None  # not ours to judge: replicas quarantine it

    def _is_own(self, payload: bytes) -> bool:
        return self._origin_of(payload, count=False) == self.origin

    # -- gauges ------------------------------------------------------------------------
    async def outbox_depth(self) -> int:
        """Records of this origin in the local log not yet acknowledged by the shared log
        (also kept in ``stats.outbox_depth``)."""
        self.stats.outbox_depth = await self.outbox.refresh(self.shipped_pos)
        self._update_lag()
        return self.stats.outbox_depth

    def _update_lag(self) -> None:
        if self._caught_up_at is not None:
            self.stats.lag_s = max(0.0, self.clock() - self._caught_up_at)

    # -- passes ------------------------------------------------------------------------
    async def run_once(self) -> ForwardReport:
        """One pass up, then one pass down (no-op while disconnected).

        Each pass copies what its source held when the pass started (at most
        ``max_batches`` batches), checkpointing after every batch.
        """
        if not self.connected or self.shared is None:
            return ForwardReport(0, 0, False)
        began = self.clock()
        shipped, up_done = await self._pass(up=True)
        received, down_done = await self._pass(up=False)
        self.stats.passes += 1
        if up_done and down_done:
            self._caught_up_at = began
        self._update_lag()
        return ForwardReport(shipped, received, up_done and down_done)

    async def _pass(self, up: bool) -> tuple[int, bool]:
        """Copy the wanted records of the source (up: ``local``, own records; down:
        ``shared``, everyone else's) after the saved position and below the source's end
        now, checkpointing after every batch; returns (how many were copied, whether the
        pass reached that end)."""
        assert self.shared is not None
        if up and self._reship:
            self._reship = False
            self.shipped_pos = None
            self.outbox = OutboxGauge(self.local, self._is_own)
            self.stats.outbox_depth = None
        src, dst = (self.local, self.shared) if up else (self.shared, self.local)
        after = self.shipped_pos if up else self.received_pos
        end = await src.end()
        self._check_kind(after, end, up)
        if not up:
            self.stats.down_behind = records_behind(after, end)
        route = getattr(dst, "partition_of", None) if up else None
        size = self.batch if up else self.down_batch
        copied = batches = 0
        chunk: list[bytes] = []
        last = after
        async with contextlib.aclosing(read_range(src, after, end)) as entries:  # type: ignore[type-var]
            async for e in entries:
                origin = self._origin_of(e.payload)
                if origin is not None and (origin == self.origin) == up:
                    chunk.append(e.payload)
                last = e.position
                if len(chunk) >= size:
                    copied += await self._append(dst, chunk, route, up)
                    chunk = []
                    self._checkpoint(up, last)
                    batches += 1
                    if self.max_batches is not None and batches >= self.max_batches:
                        return copied, False
        if chunk:
            copied += await self._append(dst, chunk, route, up)
        if last != after:
            self._checkpoint(up, last)
        return copied, True

    async def _append(self, dst: Log, chunk: list[bytes], route: Callable[[Sequence[bytes]], int] | None,
                      up: bool) -> int:
        """Append ``chunk`` to ``dst`` and return once all of it is acknowledged.

        On a partitioned log (``route``: its ``partition_of``) every record goes to its
        own partition: the chunk is split into one append per partition (each keeping the
        chunk's order), sent concurrently, and all must succeed; if one fails the error is
        raised after the others finished, and the caller writes no checkpoint, so the
        whole chunk is sent again (at-least-once, nothing skipped)."""
        groups: list[list[bytes]]
        if route is None:
            groups = [chunk]
        else:
            by: dict[int, list[bytes]] = {}
            for record in chunk:
                by.setdefault(route([record]), []).append(record)
            groups = list(by.values())
        if len(groups) == 1:
            await dst.append(groups[0])
        else:
            results = await asyncio.gather(*(dst.append(g) for g in groups), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        self.stats.appends += len(groups)
        if up:
            self.stats.shipped += len(chunk)
        else:
            self.stats.received += len(chunk)
        return len(chunk)

    def _check_kind(self, after: Position | None, end: Position, up: bool) -> None:
        """A saved position must be of the log's kind (a state file written for another
        shared log is refused, not misread)."""
        if after is None:
            return
        vec_end, vec_after = isinstance(end, VectorPosition), isinstance(after, VectorPosition)
        mismatch = vec_end != vec_after or (
            vec_end and len(after.offsets) != len(end.offsets))  # type: ignore[union-attr]
        if mismatch:
            which = "shipped (local)" if up else "received (shared)"
            raise CorruptRecord(
                f"forwarder state {self.state_path}: the {which} position {after!r} is not a position of "
                f"this log (its end is {end!r}): the file was written for another log; delete it to copy "
                "everything again (replicas ignore the duplicates)")

    def _checkpoint(self, up: bool, position: Any) -> None:
        """Record ``position`` as done for one direction and save the state file."""
        if up:
            self.shipped_pos = position
            self.outbox.acknowledged(position)
            if self.stats.outbox_depth is not None:  # counted once: keep it current
                self.stats.outbox_depth = len(self.outbox)
        else:
            self.received_pos = position
        self.state.save(self.shipped_pos, self.received_pos)
        self.stats.checkpoints = self.state.saves

    def __repr__(self) -> str:
        return f"Forwarder(origin={self.origin!r}, shipped={self.shipped_pos!r}, received={self.received_pos!r})"
