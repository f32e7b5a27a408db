"""Bit flips injected into segment files: detected, cut or quarantined, counted, never a
crash, and never a wrong record. Damage costs exactly the damaged frames: every frame
whose bytes were not touched is read back (by a plain read and by a follower), except
the frames of an unfinished batch at the uncertified end of the active segment, which
are cut as a torn write would be (see "Damage and resynchronisation" in
:mod:`crdtsync.log.local`). Every damaged frame lies in a reported range, and no
reported range covers an untouched frame it did not have to."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from crdtsync.log import CorruptRange, LocalLog, LogEntry
from crdtsync.log import local as local_mod
from crdtsync.log.local import FRAME_OVERHEAD, HEADER_SIZE

from ._bitflip import RATES, Damage, Frame, frames_of
from ._util import arun

SEGMENT_BYTES = 16 * 1024
AFTER = b"after the damage"


class Campaign:
    """A log written by LocalLog, then damaged; knows what each flip touched."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path = path
        self.rng = rng
        self.frames: list[Frame] = []
        self.flips: dict[int, list[int]] = {}  # segment base -> damaged file offsets
        self.bad_headers: set[int] = set()
        self.touched: Callable[[Frame], bool] = lambda f: False

    async def write(self) -> None:
        rng = self.rng
        positions: list[tuple[int, bytes, int]] = []
        async with LocalLog.open(self.path, fsync="never", segment_bytes=SEGMENT_BYTES) as log:
            for b in range(400):
                batch = [rng.randbytes(rng.randint(0, 400)) for _ in range(rng.randint(1, 3))]
                p = await log.append(batch)
                for payload in batch:  # later records' positions follow from the framing
                    positions.append((p, payload, b))
                    p += FRAME_OVERHEAD + len(payload)
        bases = self.bases()
        self.frames = frames_of(positions, bases)

    def bases(self) -> list[int]:
        return sorted(int(s.stem) for s in self.path.glob("*.seg"))

    def damage(self, rate: float) -> None:
        hits = Damage(self.path, rate, self.rng)
        self.flips, self.bad_headers, self.touched = hits.flips, hits.bad_headers, hits.touched

    def torn_tail(self) -> list[Frame]:
        """Without a checkpoint, the active segment's trailing damaged frames and the
        earlier frames of their batch: recovery cuts them as it would a torn write."""
        active = max(self.flips)
        mine = [f for f in self.frames if f.base == active]
        if active in self.bad_headers or not mine or not self.touched(mine[-1]):
            return []
        i = len(mine) - 1
        while i > 0 and self.touched(mine[i - 1]):
            i -= 1
        # The undamaged frames of that batch just before it go too (from where the
        # reader resynchronised, if an earlier frame of the batch was damaged as well).
        batch = mine[i].batch
        while i > 0 and mine[i - 1].batch == batch and not self.touched(mine[i - 1]):
            i -= 1
        return mine[i:]


def overlaps(f: Frame, r: CorruptRange) -> bool:
    start = r.position - f.base + HEADER_SIZE
    return r.segment == local_mod._segment_name(f.base) and start < f.stop and f.offset < start + r.length


async def follow_until_after(log: LocalLog, out: list[LogEntry]) -> None:
    async for e in log.read(0, follow=True):
        out.append(e)
        if e.payload == AFTER:
            return


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "no-checkpoint"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("seed", range(6))
def test_bit_flips(tmp_path: Path, rate: float, seed: int, checkpoint: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod, "_RECENT_CORRUPTION", 1_000_000)  # keep every range for the checks
    camp = Campaign(tmp_path, random.Random(seed))
    arun(camp.write())
    written = {f.position: f.payload for f in camp.frames}
    batch_end: dict[int, int] = {}  # record position -> end position of its batch
    for f in camp.frames:
        batch_end[f.position] = max(g.position + FRAME_OVERHEAD + len(g.payload) for g in camp.frames if g.batch == f.batch)
    camp.damage(rate)
    if not checkpoint:
        (tmp_path / "LOCK").write_bytes(b"")  # as after a crash: recovery scans the active segment
    first_damage: dict[int, int] = {}  # segment base -> position of its first damaged byte
    for base, flips in camp.flips.items():
        if flips:
            # Header damage invalidates the whole segment; count it from the base.
            first_damage[base] = base + flips[0] - HEADER_SIZE if flips[0] >= HEADER_SIZE else base
    bases = camp.bases()

    def segment_of(position: int) -> int:
        return max(b for b in bases if b <= position)

    cut = [] if checkpoint else camp.torn_tail()
    cut_positions = {f.position for f in cut}

    async def check() -> None:
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=SEGMENT_BYTES) as log:
            followed: list[LogEntry] = []
            follower = asyncio.create_task(follow_until_after(log, followed))
            try:
                got = await inspect(log)
                p = await log.append([AFTER])
                assert [e.payload async for e in log.read(p)] == [AFTER]
                await asyncio.wait_for(follower, 30)
            finally:
                follower.cancel()
            assert followed == [*got, LogEntry(p, AFTER)]
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=SEGMENT_BYTES) as log:
            again = [e async for e in log.read(0)]
            assert again[-1].payload == AFTER
            assert again[:-1] == got

    async def inspect(log: LocalLog) -> list[LogEntry]:
        """Read everything once and check it against what was written and damaged."""
        got = [e async for e in log.read(0)]
        # Never garbage: every record read is exactly one that was written, in order.
        for e in got:
            assert written.get(e.position) == e.payload, f"wrong record at {e.position}"
        positions = [e.position for e in got]
        assert positions == sorted(set(positions))
        # Records whose batch lies wholly before the first damage of their segment
        # survive.
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
        # Damage costs exactly the damaged frames: every untouched frame comes back,
        # no damaged one does (except the cut torn tail, nothing else is missing).
        untouched = {f.position for f in camp.frames if not camp.touched(f)}
        missing = sorted(untouched - cut_positions - seen)
        assert not missing, f"{len(missing)} undamaged frames were lost, first at {missing[:5]}"
        extra = sorted(seen - untouched)
        assert not extra, f"damaged frames were delivered at {extra[:5]}"
        assert not seen & cut_positions
        # Every damaged frame is reported: in a quarantined range, or in the cut tail.
        ranges = list(log.stats.recent)
        assert log.stats.corrupt_ranges == len(ranges)
        for f in camp.frames:
            if camp.touched(f) and f.position not in cut_positions:
                assert any(overlaps(f, rng) for rng in ranges), f"damage at {f.position} not reported"
        # ... and no reported range covers a frame that was not damaged.
        for rng in ranges:
            innocent = [f.position for f in camp.frames if overlaps(f, rng) and not camp.touched(f)]
            assert not innocent, f"{rng} covers {len(innocent)} undamaged frames, first at {innocent[:5]}"
        if cut:
            assert r.truncated_bytes == sum(FRAME_OVERHEAD + len(f.payload) for f in cut)
            assert await log.end() == cut[0].position
        else:
            assert r.truncated_bytes == 0
        return got

    arun(check())
