"""Where a record goes (its partition), and whether a record read from the topic is one.

Routing: a record goes to the partition of a stable hash (BLAKE2b, not Python's salted
``hash()``) of the field and entity key of its first event; a record that carries an event
of a strong field, or a sequenced operation (type tag ``seqop``), goes to partition 0, the strong partition,
whose order is the ``SEQUENCED`` order. A record that is not a crdtsync batch (only tests
append those) is routed by a hash of its bytes. The writer's batches (one origin,
contiguous seqs) are never split, so a group-committed batch with several keys lives on
the partition of its first event; every replica reads every partition, and joins commute,
so placement affects load spreading and ordering within the strong partition only.

Checking: :class:`RecordCheck` decides from a record's envelope whether a record read from
the topic is a crdtsync batch this build can take (within the size limit, a batch of a
known version with a valid origin, first seq and meta, its region in the topic's scope).
What fails goes to the dead-letter topic with the reason. The events themselves are not
decoded here: the replica decodes each record once, and files what it cannot decode
(quarantined, ``CorruptRecord``) or refuses (forged origin) in the same dead-letter topic
through :meth:`~crdtsync.adapters.kafka.KafkaLog.dead_letter`. Decoding here as well
cost every record a second full decode, and the writer's own records read back (which a
replica skips by their header) a first one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import Any

import msgpack

from crdtsync._encoding import unpackb
from crdtsync.errors import BadInput
from crdtsync.events import MsgpackCodec
from crdtsync.sequenced import SEQ_FIELD, SequencedOp

__all__ = ["EventRouter", "RecordCheck", "stable_partition"]


def stable_partition(data: bytes, partitions: int) -> int:
    """A partition in ``0..partitions-1`` from ``data``, the same in every process."""
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def _peek(record: bytes) -> tuple[list[str], list[str], str, str] | None:
    """(every field name, every type tag, first event's field, first event's key) of a
    batch record, or None if it is not one. A format-2 record is read only as far as its
    first key, skipping the columns it does not need (a full decode cost ~1 ms a record)."""
    try:
        up = msgpack.Unpacker(None, raw=False, strict_map_key=False, max_buffer_size=len(record) + 1)
        up.feed(record)
        parts = up.read_array_header()
        version = up.unpack() if parts else None
        if version == 2 and parts == 10:
            for _ in range(3):  # origin, first seq, meta
                up.skip()
            fields = up.unpack()
            up.skip()  # first stamp
            up.skip()  # stamp steps
            n_fix = up.read_array_header()
            first_ix = up.unpack() if n_fix else 0
            for _ in range(n_fix - 1 if n_fix else 0):
                up.skip()
            if not up.read_array_header():
                return None
            key = up.unpack()
            names = [f[0] for f in fields]
            return names, [f[2] for f in fields], names[first_ix], key
        if version == 1:
            obj: Any = unpackb(record, what="record")
            events = obj[4]
            return [e[1] for e in events], [e[4] for e in events], events[0][1], events[0][3]
    except (BadInput, IndexError, TypeError, KeyError, ValueError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, msgpack.OutOfData, RecursionError, OverflowError, MemoryError):
        return None
    return None


class EventRouter:
    """``router(records) -> partition`` for the records of one append."""

    def __init__(self, partitions: int, strong_fields: Collection[str] = ()) -> None:
        self.partitions = partitions
        self.strong = frozenset(strong_fields) | {SEQ_FIELD}

    def __call__(self, records: Sequence[bytes]) -> int:
        if self.partitions == 1 or not records:
            return 0
        first: tuple[str, str] | None = None
        for record in records:
            peek = _peek(record)
            if peek is None:
                if first is None:
                    return stable_partition(record, self.partitions)
                continue
            names, tags, field, key = peek
            if SequencedOp.TYPE_TAG in tags or not self.strong.isdisjoint(names):
                return 0
            if first is None:
                first = (field, key)
        assert first is not None
        return stable_partition(f"{first[0]}\x00{first[1]}".encode(), self.partitions)


class RecordCheck:
    """Why a record read from the topic cannot be applied (None: it can)."""

    def __init__(self, max_record_bytes: int, regions: Collection[str] | None) -> None:
        self.max_record_bytes = max_record_bytes
        self.regions = frozenset(regions) if regions is not None else None
        self._codec = MsgpackCodec()

    def reason(self, payload: bytes) -> str | None:
        if len(payload) > self.max_record_bytes:
            return f"oversized: {len(payload)} bytes > max_record_bytes {self.max_record_bytes}"
        try:
            _, _, meta = self._codec.envelope(payload)
        except BadInput as exc:
            return f"{type(exc).__name__}: {exc}"
        if self.regions is not None:
            region = meta.get("region")
            if region is not None and region not in self.regions:
                return f"forged region: {region!r} is outside this topic's scope {sorted(self.regions)}"
        return None
