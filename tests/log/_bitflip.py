"""Bit flips in segment files, and which written frames they touched (shared by the
LocalLog and replica bit-flip campaigns)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from crdtsync.log.local import FRAME_OVERHEAD, HEADER_SIZE

RATES = [1e-3, 1e-4, 1e-5]


def flip_bits(seg: Path, rate: float, rng: random.Random) -> list[int]:
    """Flip each bit with probability ``rate``; return the damaged byte offsets."""
    data = bytearray(seg.read_bytes())
    nbits = len(data) * 8
    flips = []
    # Geometric gaps between flips: the same distribution as a coin per bit, in O(flips).
    bit = int(rng.expovariate(rate))
    while bit < nbits:
        data[bit // 8] ^= 1 << (bit % 8)
        flips.append(bit // 8)
        bit += 1 + int(rng.expovariate(rate))
    seg.write_bytes(bytes(data))
    return sorted(set(flips))


@dataclass(frozen=True)
class Frame:
    """One record as written: where its frame lies, and which append carried it."""

    position: int
    payload: bytes
    batch: int
    base: int  # the segment holding it

    @property
    def offset(self) -> int:
        return self.position - self.base + HEADER_SIZE

    @property
    def stop(self) -> int:
        return self.offset + FRAME_OVERHEAD + len(self.payload)


def frames_of(records: list[tuple[int, bytes, int]], bases: list[int]) -> list[Frame]:
    """``(position, payload, batch)`` of each record written -> its frame."""
    return [Frame(p, pl, b, max(x for x in bases if x <= p)) for p, pl, b in records]


class Damage:
    """Bit flips at ``rate`` in every segment of the log in ``path``, and what they hit."""

    def __init__(self, path: Path, rate: float, rng: random.Random) -> None:
        self.flips: dict[int, list[int]] = {}  # segment base -> damaged file offsets
        self.bad_headers: set[int] = set()
        for seg in sorted(path.glob("*.seg")):
            base = int(seg.stem)
            self.flips[base] = flips = flip_bits(seg, rate, rng)
            if flips and flips[0] < HEADER_SIZE:
                self.bad_headers.add(base)

    def touched(self, f: Frame) -> bool:
        return f.base in self.bad_headers or any(f.offset <= o < f.stop for o in self.flips.get(f.base, ()))
