"""Bit flips injected into segment files: detected, cut or quarantined, counted, never a
crash, and never a wrong record. Records before the first damaged byte survive."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crdtsync.log import LocalLog
from crdtsync.log.local import FRAME_OVERHEAD, HEADER_SIZE

from ._util import arun

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


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("seed", range(6))
def test_bit_flips(tmp_path: Path, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    seg_bytes = 16 * 1024

    batch_end: dict[int, int] = {}  # record position -> end position of its batch

    async def build() -> dict[int, bytes]:
        written: dict[int, bytes] = {}
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=seg_bytes) as log:
            for _i in range(400):
                batch = [rng.randbytes(rng.randint(0, 400)) for _ in range(rng.randint(1, 3))]
                p = await log.append(batch)
                # Positions of the later records of the batch follow from the framing.
                mine = []
                for payload in batch:
                    written[p] = payload
                    mine.append(p)
                    p += FRAME_OVERHEAD + len(payload)
                batch_end.update(dict.fromkeys(mine, p))
        return written

    written = arun(build())
    first_damage: dict[int, int] = {}  # segment base -> position of its first damaged byte
    for seg in sorted(tmp_path.glob("*.seg")):
        base = int(seg.stem)
        flips = flip_bits(seg, rate, rng)
        if flips:
            # Header damage invalidates the whole segment; count it from the base.
            first_damage[base] = base + max(flips[0] - HEADER_SIZE, 0) if flips[0] >= HEADER_SIZE else base
    bases = sorted(int(s.stem) for s in tmp_path.glob("*.seg"))

    def segment_of(position: int) -> int:
        return max(b for b in bases if b <= position)

    async def check() -> None:
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=seg_bytes) as log:
            got = [e async for e in log.read(0)]
            # Never garbage: every record read is exactly one that was written, in order.
            for e in got:
                assert written.get(e.position) == e.payload, f"wrong record at {e.position}"
            positions = [e.position for e in got]
            assert positions == sorted(set(positions))
            # Records whose batch lies wholly before the first damage of their segment
            # survive (damage quarantines the whole batch it hits: appends are atomic).
            seen = set(positions)
            for p in written:
                damage = first_damage.get(segment_of(p))
                if damage is None or batch_end[p] <= damage:
                    assert p in seen, f"undamaged record at {p} was lost"
            # Every loss is counted somewhere.
            lost = len(written) - len(got)
            r = log.recovery
            counted = (
                log.stats.corrupt_ranges + len(r.corrupt) + r.truncated_bytes + len(r.bad_segments) + len(r.removed_files)
            )
            if lost:
                assert counted > 0
            # The log keeps working after damage.
            p = await log.append([b"after the damage"])
            assert [e.payload async for e in log.read(p)] == [b"after the damage"]
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=seg_bytes) as log:
            again = [e async for e in log.read(0)]
            assert again[-1].payload == b"after the damage"

    arun(check())
