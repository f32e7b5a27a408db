"""The Forwarder on real LocalLogs: bounded passes, a checkpoint per batch, crash re-sends.

Issue 8, defect 5: the forwarder checkpointed only at the end of a pass, and under
sustained upstream writes a pass never ended (18 minutes with ``received: null``); a
crash then re-copied everything. These tests pin the fix: a pass copies what its source
held when it started, progress reaches the state file after every batch, and a process
SIGKILLed mid-copy re-sends at most one batch after a restart.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from crdtsync import Forwarder, GCounter, LocalLog
from crdtsync.clock import make_hlc
from crdtsync.errors import CorruptRecord
from crdtsync.events import Batch, Event, MsgpackCodec

EDGE = "edge~1"
CODEC = MsgpackCodec()
ROOT = Path(__file__).resolve().parent.parent


def record(origin: str, seq: int) -> bytes:
    """One log record: a batch of one increment by ``origin`` with seq ``seq`` (unique bytes)."""
    ev = Event(origin, seq, make_hlc(1_000 + seq), "clicks", f"u{seq % 7}", GCounter().increment(1, actor=origin))
    return CODEC.encode(Batch.of([ev]))


async def _records(log: LocalLog) -> list[bytes]:
    return [e.payload async for e in log.read(0)]


class _Spy:
    """A log that hands appends to ``inner`` and notes the state file's content at each.

    Each append yields to the event loop first, as an append to a network log (Kafka)
    does; a small append to a LocalLog runs inline, and other tasks would never run
    during a pass.
    """

    def __init__(self, inner: LocalLog, state: Path) -> None:
        self.inner, self.state = inner, state
        self.seen: list[Any] = []
        self.appended = asyncio.Event()

    async def append(self, records: Sequence[bytes]) -> int:
        self.seen.append(json.loads(self.state.read_text()) if self.state.exists() else None)
        await asyncio.sleep(0)
        position = await self.inner.append(records)
        self.appended.set()
        return position

    def read(self, from_position: int = 0, *, follow: bool = False) -> Any:
        return self.inner.read(from_position, follow=follow)

    async def end(self) -> int:
        return await self.inner.end()

    async def close(self) -> None:
        await self.inner.close()

    async def truncate_before(self, position: int) -> None:
        await self.inner.truncate_before(position)


def test_a_pass_ends_under_sustained_upstream_writes_and_checkpoints_every_batch(tmp_path):
    async def scenario() -> None:
        shared = await LocalLog.open(tmp_path / "shared", fsync="never")
        local = await LocalLog.open(tmp_path / "local", fsync="never")
        state = tmp_path / "forwarder.json"
        for s in range(1, 441):  # the backlog a pass starts with: 440 records of another origin
            await shared.append([record("cloud~1", s)])
        written = [440]
        stop = asyncio.Event()
        pool = [record("cloud~1", s) for s in range(441, 2_441)]
        spy = _Spy(local, state)

        async def upstream() -> None:
            # sustained writes: 200 new records upstream for every batch the forwarder
            # copies down, so a pass that follows the log's end never catches up. The cap
            # only ends the test if a pass runs until the writer stops.
            while not stop.is_set() and written[0] < 40_000:
                await spy.appended.wait()
                spy.appended.clear()
                i = (written[0] - 440) % 2_000
                await shared.append(pool[i:i + 200])
                written[0] += 200

        writer = asyncio.create_task(upstream())
        fwd = Forwarder(spy, shared, origin=EDGE, state_path=state, batch=8)  # type: ignore[arg-type]
        report = await fwd.run_once()
        still_writing = not writer.done()
        stop.set()
        spy.appended.set()
        await writer
        assert still_writing, "the pass ran until upstream stopped writing"
        saved = json.loads(state.read_text())
        assert saved["received"] is not None and saved["received"] == fwd.received_pos
        copied = await _records(local)
        assert report.received == len(copied) == 440 and report.shipped == 0
        below = [e.payload async for e in shared.read(0) if e.position <= saved["received"]]
        assert copied == below, "exactly the records up to the checkpoint, in order, once"
        # a checkpoint after every batch: each append after the first finds the state file
        # holding the previous batch's progress
        marks = [s["received"] if s else None for s in spy.seen]
        assert len(marks) == -(-report.received // 8)
        assert marks[0] is None and all(b is not None and (a is None or b > a) for a, b in zip(marks, marks[1:]))
        # the next pass continues where this one stopped, and only that
        again = await fwd.run_once()
        assert again.received == written[0] - len(copied)
        assert await _records(local) == await _records(shared)
        await shared.close()
        await local.close()

    asyncio.run(scenario())


def test_max_batches_bounds_a_pass_and_the_rest_follows(tmp_path):
    async def scenario() -> None:
        local = await LocalLog.open(tmp_path / "local", fsync="never")
        shared = await LocalLog.open(tmp_path / "shared", fsync="never")
        for s in range(1, 26):
            await local.append([record(EDGE, s)])
        await local.append([record("cloud~1", 1)])  # not ours: never shipped up
        fwd = Forwarder(local, shared, origin=EDGE, state_path=tmp_path / "f.json", batch=4, max_batches=2)
        shipped = [(await fwd.run_once()).shipped for _ in range(5)]
        assert shipped == [8, 8, 8, 1, 0]
        assert await _records(shared) == [record(EDGE, s) for s in range(1, 26)]
        reopened = Forwarder(local, shared, origin=EDGE, state_path=tmp_path / "f.json")
        assert reopened.shipped_pos == fwd.shipped_pos == (await _records_positions(local))[-1]
        assert await reopened.outbox_depth() == 0
        await local.close()
        await shared.close()

    asyncio.run(scenario())


async def _records_positions(log: LocalLog) -> list[int]:
    return [e.position async for e in log.read(0)]


def test_a_damaged_state_file_is_a_typed_error(tmp_path):
    async def scenario() -> None:
        local = await LocalLog.open(tmp_path / "local")
        state = tmp_path / "f.json"
        for text in ["{not json", '{"shipped": "7", "received": null}', "[1, 2]"]:
            state.write_text(text)
            with pytest.raises(CorruptRecord, match="delete it"):
                Forwarder(local, local, origin=EDGE, state_path=state)
        await local.close()

    asyncio.run(scenario())


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from crdtsync import Forwarder, LocalLog

    async def main():
        local = await LocalLog.open(sys.argv[1])
        shared = await LocalLog.open(sys.argv[2], fsync="always")  # slow appends: time to kill
        fwd = Forwarder(local, shared, origin=sys.argv[4], state_path=sys.argv[3], batch=int(sys.argv[5]))
        while True:
            await fwd.run_once()

    asyncio.run(main())
""")


def test_sigkill_mid_copy_re_sends_at_most_one_batch(tmp_path):
    n, batch = 6_000, 25

    async def prepare() -> None:
        local = await LocalLog.open(tmp_path / "local", fsync="never")
        for start in range(1, n + 1, 500):  # one record per event, appended 500 at a time
            await local.append([record(EDGE, s) for s in range(start, min(n, start + 499) + 1)])
        await local.sync()
        await local.close()

    asyncio.run(prepare())
    state = tmp_path / "forwarder.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", _CHILD, str(tmp_path / "local"), str(tmp_path / "shared"), str(state), EDGE,
            str(batch)]

    async def shipped_so_far() -> int:
        shared = await LocalLog.open(tmp_path / "shared")
        try:
            return len(await _records(shared))
        finally:
            await shared.close()

    child = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    try:
        async def wait_mid_copy() -> int:
            seen = 0
            for _ in range(6_000):
                if child.poll() is not None:
                    break
                seen = await shipped_so_far() if (tmp_path / "shared").exists() else 0
                if seen >= 20 * batch:
                    return seen
                await asyncio.sleep(0.01)
            raise AssertionError(f"the child shipped {seen} records, then: {child.poll()!r} "
                                 f"{child.stderr.read().decode()[-2000:] if child.poll() is not None else ''}")

        seen = asyncio.run(wait_mid_copy())
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        assert child.stderr is not None
        child.stderr.close()
    killed_at = asyncio.run(shipped_so_far())
    assert seen <= killed_at < n, "killed mid-copy"
    saved = json.loads(state.read_text()) if state.exists() else None

    async def restart() -> list[bytes]:
        local = await LocalLog.open(tmp_path / "local")
        shared = await LocalLog.open(tmp_path / "shared")
        fwd = Forwarder(local, shared, origin=EDGE, state_path=state, batch=batch)
        while (await fwd.run_once()).shipped:
            pass
        out = await _records(shared)
        await local.close()
        await shared.close()
        return out

    shipped = asyncio.run(restart())
    counts = collections.Counter(shipped)
    assert set(counts) == {record(EDGE, s) for s in range(1, n + 1)}, "every record arrived"
    resent = sum(c - 1 for c in counts.values())
    assert resent <= batch, f"{resent} records re-sent after the crash (at most one batch of {batch})"
    assert shipped[:killed_at] == [record(EDGE, s) for s in range(1, killed_at + 1)], "in order, once, until the kill"
    assert saved is not None and saved["shipped"] is not None, "progress reached the state file before the kill"
