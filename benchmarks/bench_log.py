"""Log layer throughput: MemoryLog vs LocalLog under each fsync policy.

    python benchmarks/bench_log.py [--quick] [--reps N] [--seconds S] [--dir DIR] [--uvloop]

Measures, in one run:

* append throughput (records/s, MB/s of payload) for 100-byte records in batches of 1
  and 64, with one appender (each append awaited before the next) and with 32
  concurrent appender tasks (what group commit is for);
* replay throughput: reading every record of a 200k-record log, for MemoryLog, for a
  LocalLog instance that wrote it, and for a freshly opened LocalLog (open time shown);

and prints medians of several repetitions as markdown tables, with each LocalLog
figure as a ratio to MemoryLog doing the same job. LocalLog directories are created in
``--dir`` (default: the system temp dir); fsync cost depends entirely on that disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from crdtsync import _crc32c
from crdtsync.log import LocalLog, Log, MemoryLog

RECORD = b"r" * 100
LOGS = ["memory", "local/never", "local/group", "local/always"]


def make_factory(kind: str, root: Path) -> Callable[[], Awaitable[Log]]:
    counter = iter(range(10**9))

    async def make() -> Log:
        if kind == "memory":
            return MemoryLog()
        return await LocalLog.open(root / f"{kind.replace('/', '-')}-{next(counter)}", fsync=kind.split("/")[1])

    return make


async def append_rate(make: Callable[[], Awaitable[Log]], batch: int, appenders: int, seconds: float) -> float:
    """Records per second appended by ``appenders`` tasks over about ``seconds``."""
    log = await make()
    records = [RECORD] * batch
    counts = [0] * appenders
    await log.append(records)  # warm up (first segment, first fsync)
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            await log.append(records)
            n += batch
        counts[k] = n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(appenders)))
    elapsed = time.perf_counter() - t0
    await log.close()
    return sum(counts) / elapsed


async def fill(log: Log, n: int) -> None:
    records = [RECORD] * 64
    for _ in range(n // 64):
        await log.append(records)


async def replay_rate(log: Log) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    async for _ in log.read(0):
        n += 1
    return n / (time.perf_counter() - t0), n


async def replay(root: Path, n: int, reps: int) -> dict[str, tuple[float, float]]:
    """name -> (median records/s, median open seconds)."""
    out: dict[str, tuple[float, float]] = {}
    mem = MemoryLog()
    await fill(mem, n)
    out["memory"] = (statistics.median([(await replay_rate(mem))[0] for _ in range(reps)]), 0.0)
    path = root / "replay"
    local = await LocalLog.open(path, fsync="never")
    await fill(local, n)
    out["local (same instance)"] = (statistics.median([(await replay_rate(local))[0] for _ in range(reps)]), 0.0)
    await local.close()
    rates, opens = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fresh = await LocalLog.open(path, fsync="never")
        opens.append(time.perf_counter() - t0)
        rates.append((await replay_rate(fresh))[0])
        await fresh.close()
    out["local (reopened)"] = (statistics.median(rates), statistics.median(opens))
    return out


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (median reported)")
    ap.add_argument("--seconds", type=float, default=None, help="duration of one append measurement")
    ap.add_argument("--records", type=int, default=None, help="records in the replay log")
    ap.add_argument("--dir", default=None, help="where LocalLog directories are created")
    ap.add_argument("--uvloop", action="store_true", help="(flag read before the loop starts)")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    seconds = args.seconds or (0.2 if args.quick else 0.5)
    n_replay = args.records or (50_000 if args.quick else 200_000)
    root = Path(tempfile.mkdtemp(prefix="bench-log-", dir=args.dir))
    try:
        print("# crdtsync log benchmark\n")
        print(f"- command: `python {' '.join(sys.argv)}`")
        print(f"- python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
        print(f"- event loop: {type(asyncio.get_running_loop()).__module__}; crc32c: {_crc32c.IMPLEMENTATION}")
        print(f"- LocalLog directory: {root}")
        print(f"- 100-byte records; median of {reps} runs of {seconds:g} s each\n")
        print("## Append\n")
        print("| log | batch | appenders | records/s | MB/s | vs MemoryLog |")
        print("|---|---:|---:|---:|---:|---:|")
        results: dict[tuple[str, int, int], float] = {}
        for batch in (1, 64):
            for appenders in (1, 32):
                for kind in LOGS:
                    make = make_factory(kind, root)
                    rate = statistics.median(
                        [await append_rate(make, batch, appenders, seconds) for _ in range(reps)]
                    )
                    results[(kind, batch, appenders)] = rate
                    ratio = rate / results[("memory", batch, appenders)]
                    print(
                        f"| {kind} | {batch} | {appenders} | {fmt_rate(rate)} | "
                        f"{rate * len(RECORD) / 1e6:,.1f} | {ratio:.3f} |",
                        flush=True,
                    )
                    for p in root.iterdir():
                        shutil.rmtree(p)
        print("\n## Replay (read every record)\n")
        print(f"{n_replay:,} records of 100 bytes, appended in batches of 64.\n")
        print("| log | records/s | MB/s | open s | vs MemoryLog |")
        print("|---|---:|---:|---:|---:|")
        rp = await replay(root, n_replay, reps)
        for name, (rate, opened) in rp.items():
            print(
                f"| {name} | {fmt_rate(rate)} | {rate * len(RECORD) / 1e6:,.1f} | {opened:.3f} | "
                f"{rate / rp['memory'][0]:.3f} |"
            )
        print("\n## LocalLog(group) / MemoryLog\n")
        for batch in (1, 64):
            for appenders in (1, 32):
                r = results[("local/group", batch, appenders)] / results[("memory", batch, appenders)]
                print(f"- append, batch {batch}, {appenders} appender(s): {r:.3f}")
        print(f"- replay (reopened): {rp['local (reopened)'][0] / rp['memory'][0]:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main())
