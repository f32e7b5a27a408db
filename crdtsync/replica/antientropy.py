"""Anti-entropy: replicas exchange digests and re-publish the records a peer lacks.

A log can lose records a replica has already applied: a Kafka broker restarted empty,
a topic past its retention, a simulated link that dropped a message, a peer restored
from an old snapshot. Every replica keeps, in its state and context, what it applied;
this part makes the fleet converge again from that.

**Digest.** Every ``every`` heartbeats a replica publishes a :class:`Digest` on its
control channel, next to its heartbeat (same transport, same topic, plain bytes
starting with :data:`MAGIC`, so it travels unchanged over any
:class:`~crdtsync.control.ControlChannel` or :class:`~crdtsync.control.ControlTransport`):
its name, its context, and per field a hash of each of ``RANGES`` key ranges (keys
bucketed by a hash of the key; each range hashes the encoded states of its keys).

**Repair.** On a peer's digest, a replica looks for the records it holds whose dots
are in *its own* context but not in the peer's: of any origin, this one's or another's
(a replica may hold events of an origin long gone). It re-appends those records, byte
for byte, to its log (:meth:`AntiEntropy.repair`, at most ``max_records`` per round,
one round per heartbeat). Re-applying is idempotent by dot, and the receiver's
admission checks a re-published record exactly like the original: same origin, same
claimed region and role, same definitions. Republishing is therefore no new way in: a
replica can only re-send what it admitted itself (a refused or forged record never
enters its context, so it is never re-published), and anyone who can append to the log
could already append those bytes.

**Where records come from.** The :class:`Journal`: the bytes of the records this
replica applied (read from its log by the follower) and of the records it appended
itself (:class:`JournaledLog`, the writer's log), bounded by ``journal_bytes``
(oldest first out). Dots a peer lacks that no journal entry covers any more are
counted as ``unrepairable`` (a replica that lost them as well as its log needs a peer
whose journal still holds them, or a snapshot).

**Hash ranges** catch divergence the contexts cannot: two replicas with equal contexts
whose states differ in a range (state lost but context kept) are counted in
``divergent_ranges`` and logged; they cannot be repaired by dots (the receiver already
counts every dot as applied) and need a rebuild from a snapshot or the log.

The simulated :class:`~crdtsync.testing.Cluster` runs this same code: digests go with
the heartbeats it plays, and every step awaits each node's :meth:`AntiEntropy.repair`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._encoding import corrupt, packb, unpackb
from ..clock import Context
from ..errors import BadInput
from ..events import Codec, MsgpackCodec
from ..log._protocol import Log
from ..schema import SCHEMA_FIELD
from .store import Store

__all__ = ["MAGIC", "AntiEntropy", "AntiEntropySettings", "AntiEntropyStats", "Digest", "Journal", "JournaledLog", "is_digest"]

log = logging.getLogger("crdtsync.replica")

#: first bytes of a digest message (never the start of a heartbeat or stream message)
MAGIC = b"\x00crdtsync-ae\x01"
DIGEST_VERSION = 1
#: key ranges hashed per field
RANGES = 16
_TAG = "digest"
#: refuse digests naming more fields than this (hostile sizes)
MAX_FIELDS = 10_000


def is_digest(data: bytes) -> bool:
    return bytes(data[: len(MAGIC)]) == MAGIC


def _bucket(key: str, ranges: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % ranges


def range_hashes(tables: Mapping[str, Mapping[str, Any]], ranges: int = RANGES) -> dict[str, tuple[bytes, ...]]:
    """Per field, a 8-byte hash of each key range's (key, encoded state) pairs, in key order."""
    out: dict[str, tuple[bytes, ...]] = {}
    for fname in sorted(tables):
        if fname == SCHEMA_FIELD:
            continue
        rows = tables[fname]
        hs = [hashlib.blake2b(digest_size=8) for _ in range(ranges)]
        for key in sorted(rows):
            h = hs[_bucket(key, ranges)]
            kb = key.encode()
            h.update(len(kb).to_bytes(4, "big") + kb)
            state = rows[key].encode()
            h.update(len(state).to_bytes(4, "big") + state)
        out[fname] = tuple(h.digest() for h in hs)
    return out


@dataclass(frozen=True)
class Digest:
    """What one replica holds, compactly: its context and per-field range hashes."""

    name: str
    context: Context
    ranges: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)

    def encode(self) -> bytes:
        rows = [[f, list(hs)] for f, hs in sorted(self.ranges.items())]
        return MAGIC + packb([DIGEST_VERSION, self.name, self.context.to_payload(), rows])

    @classmethod
    def decode(cls, data: bytes) -> Digest:
        """Parse a digest's bytes; anything malformed is a :class:`~crdtsync.errors.CorruptRecord`."""
        if not is_digest(data):
            corrupt(_TAG, "not a digest message")
        try:
            obj = unpackb(bytes(data[len(MAGIC):]))
        except BadInput:
            raise
        except Exception as exc:  # msgpack raises several types for garbage
            corrupt(_TAG, f"undecodable: {type(exc).__name__}")
        if not (isinstance(obj, list) and len(obj) == 4):
            corrupt(_TAG, "not a 4-element list")
        version, name, ctx_rows, rows = obj
        if version != DIGEST_VERSION:
            corrupt(_TAG, f"unknown digest version {version!r:.20}")
        if not isinstance(name, str) or not name:
            corrupt(_TAG, "bad sender name")
        ctx = Context.from_payload(ctx_rows, "digest context")
        if not isinstance(rows, list) or len(rows) > MAX_FIELDS:
            corrupt(_TAG, "bad range rows")
        ranges: dict[str, tuple[bytes, ...]] = {}
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
                    and isinstance(row[1], list)
                    and all(isinstance(h, bytes) and len(h) == 8 for h in row[1])):
                corrupt(_TAG, f"bad range row {row!r:.60}")
            ranges[row[0]] = tuple(row[1])
        return cls(name, ctx, ranges)


class Journal:
    """The bytes of records this replica applied, by (origin, first seq, count), bounded
    by total bytes (the oldest go first)."""

    def __init__(self, max_bytes: int, codec: Codec | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"journal_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._codec = codec if codec is not None else MsgpackCodec()
        self._records: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def _span(self, payload: bytes) -> tuple[str, int, int] | None:
        span = getattr(self._codec, "span", None)
        got: tuple[str, int, int] | None = span(payload) if span is not None else None
        if got is not None:
            return got
        try:
            batch = self._codec.decode(payload)
        except BadInput:
            return None  # quarantined by the applier; nothing to re-publish
        return batch.origin, batch.first_seq, len(batch)

    def add(self, payload: bytes) -> None:
        if self.max_bytes == 0:
            return
        sp = self._span(payload)
        if sp is None or sp in self._records:
            return
        self._records[sp] = payload
        self.bytes += len(payload)
        while self.bytes > self.max_bytes and self._records:
            _, old = self._records.popitem(last=False)
            self.bytes -= len(old)
            self.evicted += 1

    def lacking(self, mine: Context, peer: Context) -> list[tuple[tuple[str, int, int], bytes]]:
        """Records with a dot in ``mine`` that ``peer`` lacks, oldest first."""
        out = []
        for sp, payload in self._records.items():
            origin, first, n = sp
            last = first + n - 1
            gaps = peer.missing(origin, first, last)
            if not gaps:
                continue
            held = sum(b - a + 1 for a, b in gaps) - sum(b - a + 1 for a, b in _missing_in(mine, origin, gaps))
            if held > 0:
                out.append((sp, payload))
        return out

    def covered(self, origin: str, first: int, last: int) -> int:
        """How many of ``origin``'s dots ``first..last`` some journal record holds."""
        n = 0
        for (o, f, c) in self._records:
            if o == origin:
                lo, hi = max(f, first), min(f + c - 1, last)
                if lo <= hi:
                    n += hi - lo + 1
        return n


def _missing_in(ctx: Context, origin: str, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        out.extend(ctx.missing(origin, a, b))
    return out


def lacked(mine: Context, peer: Context) -> dict[str, list[tuple[int, int]]]:
    """Per origin, the seq ranges in ``mine`` that ``peer`` lacks."""
    out: dict[str, list[tuple[int, int]]] = {}
    for origin in sorted(mine.replicas()):
        top = mine.max_seq(origin)
        if top <= 0:
            continue
        gaps = peer.missing(origin, 1, top)
        if not gaps:
            continue
        holes = _missing_in(mine, origin, gaps)
        have = _subtract(gaps, holes)
        if have:
            out[origin] = have
    return out


def _subtract(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a, b in ranges:
        cur = a
        for c, d in holes:
            if d < cur or c > b:
                continue
            if c > cur:
                out.append((cur, c - 1))
            cur = max(cur, d + 1)
        if cur <= b:
            out.append((cur, b))
    return out


@dataclass
class AntiEntropyStats:
    """Anti-entropy counters (exported with the replica's stats)."""

    digests_sent: int = 0
    digests_received: int = 0
    digests_bad: int = 0
    #: rounds that re-published at least one record
    repairs: int = 0
    records_republished: int = 0
    events_republished: int = 0
    #: dots a peer lacked that no journal record held any more
    unrepairable: int = 0
    #: key ranges whose hash differed from a peer with the same context
    divergent_ranges: int = 0


class JournaledLog:
    """A log whose appends are also recorded in a :class:`Journal` (given to the writer,
    so this replica's own records are journaled even if the log loses them before the
    follower reads them back). Everything else is the wrapped log's."""

    def __init__(self, inner: Log, journal: Journal) -> None:
        self._inner = inner
        self._journal = journal

    async def append(self, records: Any) -> Any:
        pos = await self._inner.append(records)
        for payload in records:
            self._journal.add(payload)
        return pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass(frozen=True)
class AntiEntropySettings:
    """How a replica runs anti-entropy (``Replica.open(antientropy=...)``).

    Attributes:
        enabled: ``None`` (default): on for logs that can lose records
            (``may_lose_records``: a KafkaLog), off for a LocalLog or MemoryLog, the one
            durable copy their replicas share. ``True``/``False`` force it.
        every: publish a digest every this many heartbeats.
        max_records: records re-published per heartbeat round at most (the rest next round).
        journal_bytes: the in-memory journal of applied and appended records that repairs
            are drawn from, oldest out first.
    """

    enabled: bool | None = None
    every: int = 5
    max_records: int = 256
    journal_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {self.max_records}")
        if self.journal_bytes < 0:
            raise ValueError(f"journal_bytes must be >= 0, got {self.journal_bytes}")

    def active(self, log_: Log) -> bool:
        """Whether anti-entropy runs for a replica on ``log_``."""
        if self.enabled is not None:
            return self.enabled
        return bool(getattr(log_, "may_lose_records", False))


class AntiEntropy:
    """Digests out, digests in, and re-publishing what peers lack (see the module doc)."""

    def __init__(self, name: str, store: Store, log_: Log, codec: Codec, *, every: int = 5,
                 max_records: int = 256, journal_bytes: int = 64 << 20, ranges: int = RANGES,
                 enabled: bool = True) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self.name = name
        self._store = store
        self._log = log_
        self.every = every
        self.max_records = max_records
        self.ranges = ranges
        self.journal = Journal(journal_bytes, codec)
        #: whether digests are published (the replica enables it on logs that can lose
        #: records, see ``may_lose_records``); peers' digests are taken in either way
        self.enabled = enabled
        self.stats = AntiEntropyStats()
        self._beats = 0
        # records queued for re-publishing: span -> bytes (a dict: each once)
        self._queue: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()

    # -- the follower's tap ------------------------------------------------------
    def tap(self, payload: bytes) -> None:
        """A record was read from the log (and applied, or found a duplicate)."""
        self.journal.add(payload)

    # -- digests out ---------------------------------------------------------------
    def digest(self) -> Digest:
        return Digest(self.name, self._store.ctx(), range_hashes(self._store.tables, self.ranges))

    def message(self) -> bytes | None:
        """This replica's digest bytes when one is due (every ``every`` calls), else None."""
        if not self.enabled:
            return None
        self._beats += 1
        if (self._beats - 1) % self.every:
            return None
        self.stats.digests_sent += 1
        return self.digest().encode()

    # -- digests in ------------------------------------------------------------------
    def observe(self, data: bytes | Digest) -> int:
        """Take in a peer's digest: queue the records it lacks; returns how many were
        queued. Bad bytes are counted and dropped (the control channel is untrusted)."""
        try:
            d = data if isinstance(data, Digest) else Digest.decode(bytes(data))
        except BadInput as exc:
            self.stats.digests_bad += 1
            log.warning("%s dropped a digest: %s", self.name, exc)
            return 0
        if d.name == self.name:
            return 0
        self.stats.digests_received += 1
        mine = self._store.ctx()
        if mine == d.context:
            self._compare_ranges(d)
            return 0
        wanted = lacked(mine, d.context)
        if not wanted:
            return 0
        queued = 0
        for sp, payload in self.journal.lacking(mine, d.context):
            if sp not in self._queue:
                self._queue[sp] = payload
                queued += 1
        for origin, rs in wanted.items():
            for a, b in rs:
                short = (b - a + 1) - self.journal.covered(origin, a, b)
                if short > 0:
                    self.stats.unrepairable += short
        return queued

    def _compare_ranges(self, d: Digest) -> None:
        mine = range_hashes(self._store.tables, self.ranges)
        diff = 0
        for fname in set(mine) | set(d.ranges):
            a, b = mine.get(fname), d.ranges.get(fname)
            if a is None or b is None or len(a) != len(b):
                # a field one side has no rows of (or a different range count): differs
                # if the other side holds anything
                diff += any(h != _EMPTY_HASH for h in (a or b or ()))
                continue
            diff += sum(1 for x, y in zip(a, b) if x != y)
        if diff:
            self.stats.divergent_ranges += diff
            log.warning("%s and %s have the same context but %d key ranges differ: state was lost "
                        "with its context kept; rebuild the diverged replica from its log or a snapshot",
                        self.name, d.name, diff)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- repair ------------------------------------------------------------------------
    async def repair(self) -> int:
        """Re-append up to ``max_records`` queued records to the log; returns how many
        (the rest wait for the next round; re-applying is idempotent by dot)."""
        if not self._queue:
            return 0
        take: list[tuple[tuple[str, int, int], bytes]] = []
        while self._queue and len(take) < self.max_records:
            take.append(self._queue.popitem(last=False))
        await self._log.append([p for _, p in take])
        self.stats.repairs += 1
        self.stats.records_republished += len(take)
        self.stats.events_republished += sum(n for (_, _, n), _ in take)
        log.info("%s re-published %d records a peer lacked", self.name, len(take))
        return len(take)


_EMPTY_HASH = hashlib.blake2b(digest_size=8).digest()
