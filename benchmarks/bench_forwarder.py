"""Edge store-and-forward over Kafka: how fast an edge's outbox drains, and copies down.

One tansu broker (:class:`~crdtsync.testing.kafka.TansuBroker`, loopback, started and
killed here). An edge replica on its own LocalLog writes ``EVENTS`` events with no link
(three counter increments and one set add in four, through write handles, flushed every
``PER_FLUSH`` increments: one log record per flush, as in the acceptance test), then:

* **up**: a :class:`~crdtsync.forwarder.Forwarder` ships the outbox to a KafkaLog of
  three partitions, ``run_once`` until nothing is left; time from the first pass to the
  last acknowledged batch (state file fsynced after each batch, as in production);
* **down**: a second, empty edge forwards from the same topic: every record is someone
  else's, so all are copied into its LocalLog.

Rows per forwarder ``batch`` (records per append). Events/s count the events inside the
records (each record holds ``PER_FLUSH * 4 / 3`` events). Medians over ``REPEAT`` runs,
each on a fresh namespace.

Run as ``PYTHONPATH=. python -m benchmarks.bench_forwarder`` (``--quick``: fewer events
and runs). Timing targets live here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ._harness import progress, table

EVENTS = 100_000
PER_FLUSH = 250
BATCHES = (2, 16, 64)
REPEAT = 3


async def _write_edge(data: Path, events: int) -> tuple[int, int]:
    """An edge replica writes ``events`` events offline; returns (records, bytes) of its log."""
    from crdtsync import Feature, GCounter, Replica
    from crdtsync.types.collections import ORSet

    r = await Replica.open(data, schema=[Feature("hits", GCounter), Feature("seen", ORSet)], name="edge",
                           control=False)
    inc, add = r.writer("hits", "increment"), r.writer("seen", "add")
    increments = events * 3 // 4
    for first in range(0, increments, PER_FLUSH):
        for i in range(first, min(increments, first + PER_FLUSH)):
            inc("total", 1)
            if i % 3 == 0:
                add(f"s{i % 20}", f"e-{i}")
        await r.flush()
    records = size = 0
    async for e in r.log.read(0):
        records += 1
        size += len(e.payload)
    await r.close()
    return records, size


async def _one(bootstrap: str, edge: Path, batch: int, tmp: Path) -> dict[str, float]:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import LocalLog
    from crdtsync.forwarder import Forwarder

    ns = f"bench-fwd-{uuid.uuid4().hex[:8]}"
    local = await LocalLog.open(edge / "log")
    out: dict[str, float] = {}
    async with KafkaLog.open(bootstrap, namespace=ns, partitions=3) as kl:
        origin = next(iter(await _origins(local)))
        up = Forwarder(local, kl, origin=origin, state_path=tmp / f"up-{ns}.json", batch=batch)
        t = time.perf_counter()
        while (await up.run_once()).shipped:
            pass
        out["up_s"] = time.perf_counter() - t
        out["appends"] = up.stats.appends
        other = await LocalLog.open(tmp / f"down-{ns}")
        down = Forwarder(other, kl, origin="someone-else", state_path=tmp / f"down-{ns}.json", batch=batch)
        t = time.perf_counter()
        while (await down.run_once()).received:
            pass
        out["down_s"] = time.perf_counter() - t
        await other.close()
    await local.close()
    return out


async def _origins(local: Any) -> set[str]:
    from crdtsync.events import MsgpackCodec

    codec = MsgpackCodec()
    return {codec.decode_record(e.payload).origin async for e in local.read(0)}


def run(quick: bool = False) -> str:
    from crdtsync.testing.kafka import TansuBroker

    events = 20_000 if quick else EVENTS
    repeat = 1 if quick else REPEAT
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-bench-fwd-"))
    try:
        progress(f"forwarder: an edge writes {events} events offline")
        records, size = asyncio.run(_write_edge(tmp / "edge", events))
        per_record = events / records
        rows = []
        with TansuBroker(log_dir=tmp) as broker:
            for batch in BATCHES:
                runs = []
                for i in range(repeat):
                    progress(f"forwarder: batch {batch}, run {i + 1}/{repeat}")
                    runs.append(asyncio.run(_one(broker.bootstrap, tmp / "edge", batch, tmp)))
                up = statistics.median(r["up_s"] for r in runs)
                down = statistics.median(r["down_s"] for r in runs)
                rows.append([str(batch), f"{int(runs[0]['appends'])}", f"{up:.2f}",
                             f"{events / up:,.0f}", f"{records / up:,.0f}", f"{size / up / 1e6:.1f}",
                             f"{down:.2f}", f"{events / down:,.0f}"])
        head = (f"An edge's outbox of {events:,} events in {records} records ({size / 1e6:.1f} MB, "
                f"{per_record:.0f} events per record) drained to a 3-partition topic on a loopback tansu "
                f"broker, then copied down into an empty edge; median of {repeat}.\n\n")
        return head + table(["batch (records)", "appends", "up s", "up events/s", "up records/s", "up MB/s",
                             "down s", "down events/s"], rows) + "\n"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    print(run(ap.parse_args().quick))
