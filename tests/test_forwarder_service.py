"""ForwarderService: capped jittered backoff, reconnects, a link lost mid-pass or stalled,
a clean stop, and the stats it keeps and writes.

Unit tests with injected sleep/clock and MemoryLogs (whose fault hooks make the shared
log fail or stall); the real broker: tests/kafka/test_forwarder_kafka.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from crdtsync import Forwarder, GCounter, MemoryLog
from crdtsync.clock import make_hlc
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.forwarder import Backoff, ForwarderService, read_stats_file, stats_path_for

EDGE = "edge~1"
CODEC = MsgpackCodec()


def record(origin: str, seq: int) -> bytes:
    ev = Event(origin, seq, make_hlc(1_000 + seq), "clicks", "u", GCounter().increment(1, actor=origin))
    return CODEC.encode(Batch.of([ev]))


def test_backoff_doubles_up_to_its_cap_with_jitter_below_each_ceiling() -> None:
    b = Backoff(initial=0.1, cap=1.0, factor=2.0, jitter=0.5, rng=random.Random(7))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    delays = [b.next() for _ in ceilings]
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, ceilings)), delays
    assert len(set(delays)) == len(delays), "jittered: no two delays alike"
    assert b.attempt == len(ceilings)
    b.reset()
    assert 0.05 <= b.next() <= 0.1
    still = Backoff(initial=0.5, cap=0.5, jitter=0.0)
    assert [still.next() for _ in range(3)] == [0.5, 0.5, 0.5]
    for bad in ({"initial": 0}, {"initial": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1.5}):
        with pytest.raises(ValueError):
            Backoff(**bad)


class _Script:
    """An injected sleep that notes each delay and stops the service when ``until``
    says so (called with the service after every sleep)."""

    def __init__(self, until: Any) -> None:
        self.delays: list[float] = []
        self.until = until
        self.service: ForwarderService | None = None

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)
        assert self.service is not None
        if self.until(self.service):
            self.service.stop()


def test_the_service_backs_off_while_the_broker_is_unreachable_then_reconnects_and_ships(tmp_path: Path) -> None:
    async def body() -> None:
        local, shared = MemoryLog(), MemoryLog()
        for s in range(1, 21):
            await local.append([record(EDGE, s)])
        await shared.append([record("cloud~1", 1)])
        arrived: list[bytes] = []

        async def note(batch: list[bytes]) -> None:
            arrived.extend(batch)

        shared.faults.before_append = note
        attempts: list[int] = []

        async def open_shared() -> MemoryLog:
            attempts.append(1)
            if len(attempts) <= 4:
                raise ConnectionError(f"broker unreachable (attempt {len(attempts)})")
            return shared

        fwd = Forwarder(local, None, origin=EDGE, state_path=tmp_path / "f.json", batch=4)
        sleep = _Script(lambda svc: svc.stats.shipped == 20)
        svc = ForwarderService(fwd, open_shared, backoff=Backoff(0.1, 0.3, jitter=0.5, rng=random.Random(1)),
                               sleep=sleep, interval=0.01, stats_interval=0.0)
        sleep.service = svc
        await asyncio.wait_for(svc.run(), 10)
        st = fwd.stats
        assert (st.connect_failures, st.reconnects, st.link_failures) == (4, 1, 0)
        assert "attempt 4" in (st.last_error or "") and st.last_error_at is not None
        assert st.shipped == 20 and st.received == 1 and st.outbox_depth == 0
        backoffs = sleep.delays[:4]
        assert all(c / 2 <= d <= c for d, c in zip(backoffs, [0.1, 0.2, 0.3, 0.3])), backoffs
        assert arrived == [record(EDGE, s) for s in range(1, 21)]
        assert not st.connected, "stopped: the shared log was closed"
        written = read_stats_file(stats_path_for(tmp_path / "f.json"))
        assert written is not None and written["shipped"] == 20 and written["reconnects"] == 1
        assert written["outbox_depth"] == 0 and written["lag_s"] is not None

    asyncio.run(body())


def test_a_link_lost_mid_pass_reconnects_and_loses_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        local = MemoryLog()
        for s in range(1, 41):
            await local.append([record(EDGE, s)])
        opened: list[MemoryLog] = []
        store: list[bytes] = []  # what "the broker" holds, across connections

        async def open_shared() -> MemoryLog:
            log = MemoryLog()
            for r in store:
                await log.append([r])
            calls = {"n": 0}

            async def flaky(batch: list[bytes]) -> None:
                calls["n"] += 1
                if len(opened) == 1 and calls["n"] == 3:  # the first connection dies on its third append
                    raise ConnectionResetError("broker went away")
                store.extend(batch)

            log.faults.before_append = flaky
            opened.append(log)
            return log

        fwd = Forwarder(local, None, origin=EDGE, state_path=tmp_path / "f.json", batch=5)
        sleep = _Script(lambda svc: svc.stats.outbox_depth == 0 and svc.stats.shipped >= 40)
        svc = ForwarderService(fwd, open_shared, backoff=Backoff(0.01, 0.01), sleep=sleep, interval=0.0)
        sleep.service = svc
        await asyncio.wait_for(svc.run(), 10)
        assert fwd.stats.link_failures == 1 and fwd.stats.reconnects == 1 and len(opened) == 2
        assert "ConnectionResetError" in (fwd.stats.last_error or "")
        assert sorted(set(store)) == sorted(record(EDGE, s) for s in range(1, 41)), "nothing lost"
        assert len(store) == 40, "the failed append landed nothing, so nothing was sent twice"

    asyncio.run(body())


def test_a_stalled_shared_log_is_declared_dead_after_pass_timeout(tmp_path: Path) -> None:
    async def body() -> None:
        local = MemoryLog()
        await local.append([record(EDGE, 1)])
        fwd = Forwarder(local, None, origin=EDGE)
        sleep = _Script(lambda svc: svc.stats.link_failures >= 2)

        async def open_shared() -> MemoryLog:  # a log that answers nothing (a paused broker)
            shared = MemoryLog()
            shared.faults.stall()
            return shared

        svc = ForwarderService(fwd, open_shared, pass_timeout=0.05, backoff=Backoff(0.01, 0.01), sleep=sleep)
        sleep.service = svc
        await asyncio.wait_for(svc.run(), 10)
        assert fwd.stats.link_failures == 2 and "TimeoutError" in (fwd.stats.last_error or "")
        assert fwd.shipped_pos is None and fwd.stats.outbox_depth == 1

    asyncio.run(body())


def test_stop_ends_a_backoff_wait_at_once_and_closes_the_shared_log(tmp_path: Path) -> None:
    async def body() -> None:
        local = MemoryLog()
        fwd = Forwarder(local, None, origin=EDGE, state_path=tmp_path / "f.json")

        async def never() -> MemoryLog:
            raise OSError("no route to host")

        svc = ForwarderService(fwd, never, backoff=Backoff(30.0, 30.0, jitter=0.0))
        task = asyncio.create_task(svc.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if fwd.stats.connect_failures:
                break
        assert fwd.stats.backoff_s == 30.0
        loop = asyncio.get_running_loop()
        began = loop.time()
        svc.stop()
        await asyncio.wait_for(task, 5)
        assert loop.time() - began < 1.0, "stop does not wait out a 30 s backoff"
        stats = json.loads(stats_path_for(tmp_path / "f.json").read_text())
        assert stats["connect_failures"] >= 1 and stats["connected"] is False

        shared = MemoryLog()

        async def up() -> MemoryLog:
            return shared

        svc2 = ForwarderService(fwd, up, interval=30.0)
        task = asyncio.create_task(svc2.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if fwd.stats.passes:
                break
        svc2.stop()
        await asyncio.wait_for(task, 5)
        assert fwd.shared is None
        with pytest.raises(Exception, match="closed"):
            await shared.append([b"x"])

    asyncio.run(body())


def test_lag_grows_while_cut_off_and_is_small_when_caught_up() -> None:
    async def body() -> None:
        now = [100.0]
        local, shared = MemoryLog(), MemoryLog()
        fwd = Forwarder(local, shared, origin=EDGE, clock=lambda: now[0], batch=2, max_batches=1)
        assert fwd.stats.lag_s is None, "never caught up yet"
        for s in range(1, 5):
            await local.append([record(EDGE, s)])
        report = await fwd.run_once()  # one batch of two: not caught up
        assert not report.complete and fwd.stats.lag_s is None
        await fwd.run_once()
        now[0] = 101.0
        report = await fwd.run_once()
        assert report.complete and fwd.stats.lag_s == 0.0
        fwd.connected = False  # cut off for 30 s
        now[0] = 131.0
        await fwd.run_once()
        await fwd.outbox_depth()
        assert fwd.stats.lag_s == 30.0
        fwd.connected = True
        await fwd.run_once()
        assert fwd.stats.lag_s == 0.0

    asyncio.run(body())


def test_a_state_file_for_another_log_stops_the_service_instead_of_retrying(tmp_path: Path) -> None:
    from crdtsync.errors import CorruptRecord
    from crdtsync.log._protocol import VectorPosition

    class _Vector(MemoryLog):
        async def end(self) -> VectorPosition:  # type: ignore[override]
            return VectorPosition([0, 0])

    async def body() -> None:
        (tmp_path / "f.json").write_text('{"shipped": null, "received": 40}')

        async def open_shared() -> MemoryLog:
            return _Vector()

        fwd = Forwarder(MemoryLog(), None, origin=EDGE, state_path=tmp_path / "f.json")
        svc = ForwarderService(fwd, open_shared, backoff=Backoff(0.01, 0.01))
        with pytest.raises(CorruptRecord, match="delete it"):
            await asyncio.wait_for(svc.run(), 5)
        assert fwd.shared is None and fwd.stats.link_failures == 0

    asyncio.run(body())


def test_crdtsync_status_shows_an_edges_forwarder(tmp_path: Path) -> None:
    """``crdtsync status EDGE_DIR`` reads the forwarder's state and stats files and counts
    the outbox in the edge's log itself (no forwarder running, no network)."""
    import os
    import subprocess
    import sys

    from crdtsync import Feature, LocalLog, Replica

    shipped_by_service: list[int] = []

    async def body() -> None:
        edge = await Replica.open(tmp_path / "edge", schema=[Feature("clicks", GCounter)], name="edge", control=False)
        shared = await LocalLog.open(tmp_path / "shared")
        fwd = Forwarder(edge.log, None, origin=edge.actor, state_path=tmp_path / "edge" / "forwarder.json")

        async def open_shared() -> LocalLog:
            return shared

        edge.write("clicks", "a", "increment", 1)
        await edge.flush()
        sleep = _Script(lambda svc: svc.stats.shipped >= 1)
        svc = ForwarderService(fwd, open_shared, sleep=sleep, stats_interval=0.0)
        sleep.service = svc
        await asyncio.wait_for(svc.run(), 10)
        shipped_by_service.append(fwd.stats.shipped)
        for _ in range(3):  # written after the forwarder stopped: the outbox
            edge.write("clicks", "a", "increment", 1)
            await edge.flush()
        await edge.close()

    asyncio.run(body())
    env = {**os.environ, "COLUMNS": "160"}
    res = subprocess.run([sys.executable, "-m", "crdtsync.cli", "status", str(tmp_path / "edge")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "forwarder" in out and "forwarder.json" in out, out
    row = next(line for line in out.splitlines() if "outbox depth" in line)
    assert row.rstrip(" │").split()[-1] == "3", row
    shipped = next(line for line in out.splitlines() if line.strip("│ ").startswith("shipped  "))
    assert shipped.rstrip(" │").split()[-1] == str(shipped_by_service[0]), shipped
    assert "reconnects" in out and "last error" in out
    (tmp_path / "edge" / "forwarder.json").write_text("{broken")
    res = subprocess.run([sys.executable, "-m", "crdtsync.cli", "status", str(tmp_path / "edge")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0 and "not JSON" in res.stdout and "delete it" in res.stdout, res.stdout + res.stderr


@pytest.mark.timeout(10)  # a busy loop never yields to wait_for
def test_a_forwarder_switched_off_by_hand_idles_at_the_interval() -> None:
    async def body() -> None:
        shared = MemoryLog()
        fwd = Forwarder(MemoryLog(), None, origin=EDGE)
        fwd.connected = False

        async def open_shared() -> MemoryLog:
            return shared

        sleep = _Script(lambda svc: len(sleep.delays) >= 5)
        svc = ForwarderService(fwd, open_shared, interval=0.25, sleep=sleep)
        sleep.service = svc
        await asyncio.wait_for(svc.run(), 5)
        assert sleep.delays == [0.25] * 5 and fwd.stats.passes == 0

    asyncio.run(body())
