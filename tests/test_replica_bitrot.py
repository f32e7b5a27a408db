"""Bit flips in the segments of a replica's LocalLog: a replica replaying the damaged log
applies every event of every record whose frame was not touched, exactly as a replica
fed only those records does, and never one of a damaged record (fixed seeds)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdtsync import Feature, GCounter, LocalLog, LWWRegister, MemoryLog, ORSet, Replica
from crdtsync.clock import Dot
from crdtsync.events import Batch, MsgpackCodec
from crdtsync.log import LogEntry

from .log._bitflip import RATES, Damage, Frame, frames_of

SCHEMA = [Feature("clicks", GCounter), Feature("segment", LWWRegister), Feature("tags", ORSet)]


async def write(logdir: Path, rng: random.Random) -> list[tuple[int, bytes, int]]:
    log = await LocalLog.open(logdir, fsync="never", segment_bytes=16 * 1024)
    try:
        async with Replica.open(log=log, schema=SCHEMA, name="writer", follow=False, control=False) as w:
            for _ in range(300):
                for _ in range(rng.randint(1, 4)):
                    key = f"u{rng.randrange(20)}"
                    op = rng.randrange(3)
                    if op == 0:
                        w.write("clicks", key, "increment", rng.randint(1, 5))
                    elif op == 1:
                        w.write("segment", key, "set", rng.choice(["free", "pro", "vip"]))
                    else:
                        w.write("tags", key, "add", rng.choice("abcdef"))
                await w.flush()
        return [(e.position, e.payload, i) async for i, e in _numbered(log)]
    finally:
        await log.close()


async def _numbered(log: LocalLog) -> AsyncIterator[tuple[int, LogEntry]]:
    i = 0
    async for e in log.read(0):
        yield i, e
        i += 1


async def replay(log: LocalLog | MemoryLog) -> Replica:
    r = await Replica.open(log=log, schema=SCHEMA, name="reader", follow=False, control=False)
    await r.catch_up()
    return r


def values(r: Replica) -> dict[str, dict[str, object]]:
    """The user fields' values (each replica's own ``_schema`` entries differ)."""
    return {d.name: {k: r.value(d.name, k) for k in r.keys(d.name)} for d in SCHEMA}


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("seed", range(3))
def test_replica_applies_every_undamaged_record(tmp_path: Path, rate: float, seed: int) -> None:
    rng = random.Random(seed)
    logdir = tmp_path / "log"

    async def scenario() -> None:
        records = await write(logdir, rng)
        frames = frames_of(records, sorted(int(s.stem) for s in logdir.glob("*.seg")))
        hits = Damage(logdir, rate, rng)
        good = [f for f in frames if not hits.touched(f)]
        codec = MsgpackCodec()

        def dots(fs: list[Frame]) -> set[Dot]:
            out: set[Dot] = set()
            for f in fs:
                rec = codec.decode_record(f.payload)
                batch = rec if isinstance(rec, Batch) else rec.batch()
                out.update(e.dot for e in batch.events)
            return out

        log = await LocalLog.open(logdir, fsync="never", segment_bytes=16 * 1024)
        reference = MemoryLog()
        for f in good:
            await reference.append([f.payload])
        reader, ref = await replay(log), await replay(reference)
        try:
            assert reader.stats.records_quarantined == 0  # nothing false got through
            # (each reader also applies the record of definitions it published itself)
            assert reader.stats.records_applied == ref.stats.records_applied > len(good)
            assert reader.stats.events_applied == ref.stats.events_applied
            missing = [d for d in dots(good) if d not in reader.context]
            assert not missing, f"{len(missing)} events of undamaged records were not applied"
            damaged = [d for d in dots([f for f in frames if hits.touched(f)]) if d in reader.context]
            assert not damaged
            assert values(reader) == values(ref)
        finally:
            await reader.close()
            await ref.close()
            await log.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
