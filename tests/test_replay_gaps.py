"""Replaying a log in which one origin's seqs have a permanent gap (issue 8, defect 4).

A seq that a writer allocated and never logged leaves a hole no record will ever fill.
Every later record of that origin lands beyond the contiguous prefix, in the dot cloud.
The replay must still end with the exact state and context, and it must stay on the
cheap path: a record that is new after the gap is one range added to the context, never
a per-dot filter plus ``Context.add_all`` over the whole cloud (which made a fresh
replica spend more than 300 s on a 7 MB log).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from crdtsync import Feature, GCounter, LocalLog, LWWRegister, Replica
from crdtsync.clock import Context, Dot
from crdtsync.events import MsgpackCodec
from crdtsync.replica.apply import Applier

SCHEMA = [Feature("count", GCounter), Feature("score", LWWRegister)]
BATCH = 64
BATCHES = 30
SKIP_AFTER = 2  # the writer skips one seq after its second record


KEYS = [f"k{i}" for i in range(50)]


def _values(r: Replica) -> dict[tuple[str, str], Any]:
    return {(f, k): r.value(f, k) for f in ("count", "score") for k in KEYS}


async def _write_log(path: Path, codec: MsgpackCodec) -> tuple[str, int, int, dict[tuple[str, str], Any]]:
    """A LocalLog of BATCHES records by one writer, which skips one seq (allocated, never
    logged) after its record number SKIP_AFTER. Returns (writer, the skipped seq, the
    writer's last seq, the writer's values)."""
    log = await LocalLog.open(path, fsync="never")
    w = await Replica.open(schema=SCHEMA, log=log, name="writer", follow=False, control=False, codec=codec)
    hole = 0
    for b in range(BATCHES):
        for i in range(BATCH):
            k = KEYS[(b * BATCH + i) % len(KEYS)]
            w.write("count", k, "increment", 1)
            w.write("score", k, "set", b * BATCH + i)
        await w.flush()
        if b == SKIP_AFTER - 1:
            hole = w._writer.next_seq
            w._writer.next_seq += 1  # the defect-4 writer: a seq allocated and never logged
    out = (w.actor, hole, w.context.max_seq(w.actor), _values(w))
    await w.close()
    await log.close()
    return out


@pytest.mark.parametrize("version", [1, 2], ids=["batch-format-1", "batch-format-2"])
def test_replay_with_a_permanent_gap_ends_with_the_exact_state_and_context(tmp_path, monkeypatch, version):
    codec = MsgpackCodec(write_version=version)
    per = 2 * BATCH  # events per record: one increment and one set per write
    assert per <= 1024, "one flush, one record"

    async def scenario() -> None:
        actor, hole, last, values = await _write_log(tmp_path / "gap", codec)

        # the slow way of old: filter by dot, then Context.add_all over the cloud
        calls: dict[str, int] = {"add_all": 0, "apply_batch_after_gap": 0}
        real_add_all = Context.add_all
        real_apply_batch = Applier.apply_batch

        def add_all(self: Context, dots: Any) -> Context:
            calls["add_all"] += 1
            return real_add_all(self, dots)

        def apply_batch(self: Applier, batch: Any, *rest: Any) -> int:
            if batch.first_seq > hole:
                calls["apply_batch_after_gap"] += 1
            return real_apply_batch(self, batch, *rest)

        monkeypatch.setattr(Context, "add_all", add_all)
        monkeypatch.setattr(Applier, "apply_batch", apply_batch)
        log = await LocalLog.open(tmp_path / "gap")
        r = await Replica.open(schema=SCHEMA, log=log, name="reader", follow=False, control=False, codec=codec)
        monkeypatch.undo()

        assert r.context.replicas() == {actor, r.actor}
        gapped = Context({actor: hole - 1}, [Dot(actor, s) for s in range(hole + 1, last + 1)])
        expected = gapped.join(r.context.without([actor]))
        assert r.context == expected
        assert _values(r) == values
        digest = r.digest()
        assert r.stats.events_applied == last - 1 and r.stats.events_duplicate == 0  # all but the hole
        assert calls["add_all"] == 0, "a record after the gap took the per-dot slow path"
        if version == 2:
            assert calls["apply_batch_after_gap"] == 0, "a columnar record after the gap left the columnar path"
        assert r.context.cloud_ranges(actor) == ((hole + 1, last),), "one range, not a dot per seq"
        assert r.context.missing(actor, 1, last) == [(hole, hole)]

        # replaying the same records again (a second pass) finds every event a duplicate
        before = r.stats.events_applied
        async for entry in log.read(0):
            r.applier.apply_record(entry.position, entry.payload)
        assert r.stats.events_applied == before and r.context == expected and r.digest() == digest

        # and the context survives a snapshot round trip exactly (wire format 1 unchanged)
        assert Context.decode(expected.encode()) == expected
        await r.close()
        await log.close()

    asyncio.run(scenario())
