"""What a forwarder reports: its counters, its outbox depth, how far behind it is.

:class:`ForwarderStats` is one plain dataclass (``forwarder.stats``), updated by the
passes (counts, lag) and by :class:`~crdtsync.forwarder.service.ForwarderService`
(connection state, errors, reconnects). A service also writes it, as JSON, to a stats
file beside the state file, which ``crdtsync status`` shows with the data directory it
belongs to (:func:`read_stats_file`).

:class:`OutboxGauge` counts the records of the edge's own origin in its local log that
the shared log has not acknowledged yet, incrementally: each refresh reads only what was
appended since the last one, and an acknowledged batch drops what it covered.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptRecord
from ..log._protocol import Log, Position, VectorPosition, covers, read_range

__all__ = ["ForwarderStats", "OutboxGauge", "read_stats_file", "records_behind", "stats_path_for"]


@dataclass
class ForwarderStats:
    """Counters and gauges of one forwarder (see docs/guides/edge.md for their meaning)."""

    #: records of this origin appended to the shared log (acknowledged), since start
    shipped: int = 0
    #: records of other origins copied into the local log, since start
    received: int = 0
    #: appends sent to the shared log (a batch is split by partition on a partitioned log)
    appends: int = 0
    #: passes run (one up and one down each) and state-file checkpoints written
    passes: int = 0
    checkpoints: int = 0
    #: records whose origin could not be decoded: copied in neither direction (replicas
    #: quarantine them where they are)
    undecodable: int = 0
    #: local records of this origin not acknowledged by the shared log (at the last
    #: refresh; None: not counted yet)
    outbox_depth: int | None = None
    #: records of the shared log past the received position when the last down pass
    #: began (partitioned logs: every partition's offsets, own records and markers
    #: included; None for a single-stream log, whose positions do not count records)
    down_behind: int | None = None
    #: seconds since the forwarder was last caught up: everything the two logs held when
    #: that pass began was copied (None: never caught up yet)
    lag_s: float | None = None
    #: data losses the shared log reported (each makes the next up pass ship the whole outbox)
    broker_losses: int = 0
    #: the link: whether the shared log is open, failed connects, connects after a failure
    connected: bool = False
    connect_failures: int = 0
    link_failures: int = 0
    reconnects: int = 0
    #: the last error (its repr), and when (Unix time)
    last_error: str | None = None
    last_error_at: float | None = None
    #: the delay of the backoff in progress (0 when the link is up)
    backoff_s: float = 0.0
    #: when this was last written (Unix time), by the service
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def records_behind(received: Position | None, end: Position) -> int | None:
    """How many records of a partitioned log lie at or past ``received``'s cursor and
    below ``end`` (None for a single-stream log: its positions do not count records)."""
    if not isinstance(end, VectorPosition):
        return None
    if not isinstance(received, VectorPosition) or received.generation != end.generation \
            or len(received.offsets) != len(end.offsets):
        return sum(end.offsets)
    return sum(max(0, e - n) for e, n in zip(end.offsets, received.after().offsets))


class OutboxGauge:
    """Positions of own-origin local records after the shipped position (see module doc)."""

    def __init__(self, local: Log, is_own: Callable[[bytes], bool]) -> None:
        self._local = local
        self._is_own = is_own
        self._pending: deque[Position] = deque()
        self._scanned: Position | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def acknowledged(self, shipped: Position | None) -> None:
        """Drop the records ``shipped`` covers (an acknowledged batch)."""
        if shipped is None:
            return
        while self._pending and covers(shipped, self._pending[0]):
            self._pending.popleft()

    async def refresh(self, shipped: Position | None) -> int:
        """Count what was appended since the last refresh; returns the depth."""
        self.acknowledged(shipped)
        start = self._scanned
        if start is None or (shipped is not None and covers(shipped, start)):
            start = shipped
        end = await self._local.end()
        last = start
        async with contextlib.aclosing(read_range(self._local, start, end)) as entries:  # type: ignore[type-var]
            async for e in entries:
                if self._is_own(e.payload):
                    self._pending.append(e.position)
                last = e.position
        self._scanned = last
        return len(self._pending)


def stats_path_for(state_path: Path) -> Path:
    """The stats file of a state file: ``forwarder.json`` -> ``forwarder.stats.json``."""
    return state_path.with_name(state_path.stem + ".stats" + state_path.suffix)


def read_stats_file(path: Path) -> dict[str, Any] | None:
    """A stats file's content (None when there is none); a damaged one is CorruptRecord."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"forwarder stats {path} is not JSON ({exc}); the running forwarder rewrites it") \
            from exc
    if not isinstance(d, dict):
        raise CorruptRecord(f"forwarder stats {path} is not a JSON object; the running forwarder rewrites it")
    return d
