"""Self-describing test records: a payload says who wrote it and can be re-derived.

Used by the multi-process and crash tests (and the writer subprocess) to check that a
record read back is exactly one that was appended, not garbage or a torn fragment.
"""

from __future__ import annotations

import random
import struct

_HEAD = struct.Struct("<IQIII")  # writer, batch seq, index in batch, batch size, body length


def make_record(writer: int, seq: int, index: int, count: int, length: int) -> bytes:
    body = random.Random(f"{writer}/{seq}/{index}").randbytes(length)
    return _HEAD.pack(writer, seq, index, count, length) + body


def make_batch(writer: int, seq: int, rng: random.Random, max_records: int = 4, max_len: int = 2000) -> list[bytes]:
    count = rng.randint(1, max_records)
    return [make_record(writer, seq, i, count, rng.randint(0, max_len)) for i in range(count)]


def parse_record(payload: bytes) -> tuple[int, int, int, int]:
    """Return ``(writer, seq, index, count)``; raise ``ValueError`` if not intact."""
    if len(payload) < _HEAD.size:
        raise ValueError(f"record of {len(payload)} bytes is shorter than its header")
    writer, seq, index, count, length = _HEAD.unpack_from(payload)
    if payload != make_record(writer, seq, index, count, length):
        raise ValueError(f"record {writer}/{seq}/{index} does not match its content")
    return writer, seq, index, count
