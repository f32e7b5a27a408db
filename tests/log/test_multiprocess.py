"""Real OS processes on one LocalLog directory: concurrent appenders, a tailing reader,
and SIGKILL crash recovery (issue 3 acceptance: every acknowledged append survives and a
torn tail never comes back).

``CRDTSYNC_CRASH_RUNS`` sets the number of crash runs (default 20; nightly: 500).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crdtsync.log import LocalLog, LogEntry
from crdtsync.log.local import HEADER_SIZE

from ._records import parse_record
from ._util import arun

WRITER = Path(__file__).with_name("_writer.py")
CRASH_RUNS = int(os.environ.get("CRDTSYNC_CRASH_RUNS", "20"))

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX processes")


def start_writer(path: Path, writer: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), "--writer", str(writer), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_batches(entries: list[LogEntry]) -> dict[tuple[int, int], int]:
    """Every record is intact, batches are whole and adjacent; returns (writer, seq) ->
    position of the batch's first record. Fails on any duplicate."""
    batches: dict[tuple[int, int], int] = {}
    k = 0
    while k < len(entries):
        writer, seq, index, count = parse_record(entries[k].payload)
        assert index == 0, f"batch {writer}/{seq} starts at record {index}: a partial batch is visible"
        for j in range(count):
            assert k + j < len(entries), f"batch {writer}/{seq} is cut short"
            assert parse_record(entries[k + j].payload) == (writer, seq, j, count)
        assert (writer, seq) not in batches, f"batch {writer}/{seq} appears twice"
        batches[(writer, seq)] = entries[k].position
        k += count
    return batches


def test_two_processes_append_and_one_tails(tmp_path: Path) -> None:
    """Two writer processes append to one directory (rolling segments as they go) while
    this process tails it; afterwards every batch is present exactly once, whole."""
    n = 150
    seg = str(16 * 1024)

    async def body() -> None:
        async with LocalLog.open(tmp_path, segment_bytes=int(seg), poll_interval=0.005) as log:
            procs = [start_writer(tmp_path, w, "--batches", str(n), "--segment-bytes", seg) for w in (1, 2)]
            tailed: set[tuple[int, int]] = set()

            async def tail() -> None:
                async for e in log.read(0, follow=True):
                    writer, seq, index, count = parse_record(e.payload)
                    if index == count - 1:
                        tailed.add((writer, seq))
                    if len(tailed) == 2 * n:
                        return

            task = asyncio.create_task(tail())
            outs = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=120) for p in procs))
            for p, (out, err) in zip(procs, outs):
                assert p.returncode == 0, err
                assert out.count("ACK") == n
            await asyncio.wait_for(task, 30)
            entries = [e async for e in log.read(0)]
            batches = check_batches(entries)
            assert set(batches) == {(w, s) for w in (1, 2) for s in range(n)}
            # The acknowledged positions are where the batches are.
            for w, (out, _) in zip((1, 2), outs):
                for line in out.splitlines():
                    if line.startswith("ACK"):
                        _, pos, seq, _ = line.split()
                        assert batches[(w, int(seq))] == int(pos)
            assert len(list(tmp_path.glob("*.seg"))) > 3

    arun(body(), timeout=180)


def crash_once(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    proc = start_writer(path, 1, "--fsync", "always", "--seed", str(seed), "--max-len", "400000", "--segment-bytes", "2000000")
    acked: list[tuple[int, int, int]] = []
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("OPEN"), proc.stderr.read() if proc.stderr else first

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ACK"):
                _, pos, seq, count = line.split()
                acked.append((int(pos), int(seq), int(count)))

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(rng.uniform(0.0, 0.25))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.join()

    async def verify() -> None:
        async with LocalLog.open(path, fsync="never", segment_bytes=2000000) as log:
            report = log.recovery
            entries = [e async for e in log.read(0)]
            batches = check_batches(entries)  # intact, whole, no duplicates
            for pos, seq, _ in acked:
                assert batches.get((1, seq)) == pos, f"acknowledged batch {seq} at {pos} lost ({report.summary()})"
            # At most the one batch in flight when the process died is extra.
            assert len(batches) in (len(acked), len(acked) + 1)
            seqs = sorted(s for _, s in batches)
            assert seqs == list(range(len(seqs)))
            # No torn tail is left on disk: the active segment ends at the last record.
            active = max(path.glob("*.seg"))
            end = await log.end()
            assert int(active.stem) + active.stat().st_size - HEADER_SIZE == end
            assert report.corrupt == [] and report.bad_segments == []
            # And the log takes appends again.
            p = await log.append([b"after the crash"])
            assert [e.payload async for e in log.read(p)] == [b"after the crash"]

    arun(verify())


def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    """A writer with fsync "always" is SIGKILLed at random moments; every append it
    acknowledged is present and intact after recovery, and no torn tail is visible."""
    seeds = range(CRASH_RUNS)
    workers = 4 if CRASH_RUNS > 20 else 2
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(crash_once, tmp_path / f"run{s}", s) for s in seeds]:
            f.result()
