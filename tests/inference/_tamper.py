"""Altering an event in a LocalLog in place, as an attacker with file access would: the
value changes, the frame's CRC is recomputed, so the log itself accepts the record."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from crdtsync._crc32c import crc32c
from crdtsync._encoding import packb
from crdtsync.clock import Context
from crdtsync.events import codec_for


def frames(seg: Path) -> list[tuple[int, bytes]]:
    """(file offset of the payload, payload) of every frame of a LocalLog segment."""
    data = seg.read_bytes()
    out, off = [], 32
    while off + 8 <= len(data):
        (word,) = struct.unpack_from("<I", data, off)
        n = word & 0x7FFFFFFF
        out.append((off + 8, data[off + 8: off + 8 + n]))
        off += 8 + n
    return out


def alter_event(log_dir: Path, field: str, key: str, ctx: Context, value: Any, new: Any) -> bool:
    """Change the value of the one event of ``field``/``key`` inside ``ctx`` whose value is
    ``value`` to ``new`` (same encoded length). Returns False, changing nothing, unless
    exactly one such event exists and its value's bytes occur once in its record (an
    unambiguous edit of the event the decision's value came from)."""
    codec = codec_for("msgpack")
    old_b, new_b = packb(value), packb(new)
    assert len(old_b) == len(new_b)
    hits = []
    for seg in sorted(log_dir.glob("*.seg")):
        for off, payload in frames(seg):
            for ev in codec.decode(payload).events:
                if ev.field == field and ev.key == key and ev.dot in ctx and ev.delta.value() == value:
                    hits.append((seg, off, payload))
    if len(hits) != 1 or hits[0][2].count(old_b) != 1:
        return False
    seg, off, payload = hits[0]
    altered = payload.replace(old_b, new_b)
    data = bytearray(seg.read_bytes())
    data[off: off + len(altered)] = altered
    word = bytes(data[off - 8: off - 4])
    data[off - 4: off] = struct.pack("<I", crc32c(word + altered))
    seg.write_bytes(bytes(data))
    return True
