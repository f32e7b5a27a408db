"""A replica process of the edge store-and-forward test: ``python -m tests.kafka._edge_worker CONFIG``.

``CONFIG`` is a JSON file. Two roles:

* ``cloud``: a Replica on a KafkaLog; writes batches (``per_batch`` counter increments
  and set adds) every ``pause`` seconds until ``stop_writing`` exists;
* ``edge``: a Replica on its own LocalLog (its outbox) and a
  :class:`~crdtsync.forwarder.ForwarderService` to the KafkaLog at the address in
  ``link_file``, read at every (re)connect (a dead port cuts the link). In its first life
  (no ``written`` marker in its data directory) it writes ``increments`` counter
  increments and a set add for every third (:func:`write_batch`) through write handles,
  in batches of ``per_batch`` increments.

Every batch appends a history line (JSON: start, end, the first element index, the
count) once its flush returned. Every 0.05 s the process writes ``status`` (digest,
context, what it wrote, the forwarder's stats); when ``report`` exists it reads the
counter and the whole set once and writes ``report_out``; it exits cleanly once
``stop`` exists.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

SET_KEYS = 20
ADD_EVERY = 3


def schema() -> list[Any]:
    from crdtsync import Feature, GCounter
    from crdtsync.types.collections import ORSet

    return [Feature("hits", GCounter), Feature("seen", ORSet)]


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(obj))
    os.replace(tmp, path)


class History:
    """Batches written, one JSON line each, appended after the batch's flush returned."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "a")

    def batch(self, start: float, end: float, first: int, n: int) -> None:
        self.f.write(json.dumps([start, end, first, n]) + "\n")
        self.f.flush()


async def write_batch(r: Any, name: str, first: int, n: int, hist: History) -> None:
    """Increments ``first .. first + n - 1`` of the counter, and a set add of the element
    ``name-i`` for every i divisible by ``ADD_EVERY`` (four events in three increments)."""
    inc, add = r.writer("hits", "increment"), r.writer("seen", "add")
    start = time.time()
    for i in range(first, first + n):
        inc("total", 1)
        if i % ADD_EVERY == 0:
            add(f"s{i % SET_KEYS}", f"{name}-{i}")
    await r.flush()
    hist.batch(start, time.time(), first, n)


def read_all(r: Any) -> dict[str, Any]:
    start = time.time()
    elements = [e for k in range(SET_KEYS) for e in (r.value("seen", f"s{k}") or ())]
    hits = r.value("hits", "total") or 0
    return {"start": start, "end": time.time(), "set": elements, "hits": hits}


async def report_until_stopped(cfg: dict[str, Any], r: Any, state: dict[str, Any]) -> None:
    """Write the status every 0.05 s (``state``: what the role adds), the final read once
    ``report`` exists (and nothing is being written), until ``stop`` exists."""
    reported = False
    digest, digest_context, digest_at = "", "", 0.0
    while not os.path.exists(cfg["stop"]):
        if time.monotonic() - digest_at > 0.25:  # a digest costs ~30 ms at 100k events
            digest, digest_context, digest_at = r.digest().hex(), repr(r.context), time.monotonic()
        if not reported and not state.get("writing") and os.path.exists(cfg["report"]):
            _write_json(cfg["report_out"], read_all(r))
            reported = True
        fwd = state.get("forwarder")
        _write_json(cfg["status"], {
            "name": cfg["name"], "actor": r.actor, "written": state["written"], "writing": state.get("writing", False),
            "digest": digest, "digest_context": digest_context, "context": repr(r.context), "hits": r.value("hits", "total") or 0,
            "duplicates": r.stats.events_duplicate, "pid": os.getpid(),
            "fwd": fwd.stats.to_json() if fwd is not None else None})
        await asyncio.sleep(0.05)


async def cloud(cfg: dict[str, Any]) -> None:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import Replica

    hist = History(cfg["history"])
    async with KafkaLog.open(cfg["bootstrap"], namespace=cfg["ns"], partitions=3) as kl:
        r = await Replica.open(cfg["data"], schema=schema(), log=kl, name=cfg["name"], control=False)
        state: dict[str, Any] = {"written": 0, "writing": True}

        async def writer() -> None:
            while not os.path.exists(cfg["stop_writing"]):
                await write_batch(r, cfg["name"], state["written"], cfg["per_batch"], hist)
                state["written"] += cfg["per_batch"]
                await asyncio.sleep(cfg["pause"])
            state["writing"] = False

        task = asyncio.create_task(writer())
        await report_until_stopped(cfg, r, state)
        await task
        await r.close()


async def edge(cfg: dict[str, Any]) -> None:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import Replica
    from crdtsync.forwarder import Backoff, Forwarder, ForwarderService

    data = Path(cfg["data"])
    r = await Replica.open(data, schema=schema(), name=cfg["name"], control=False)
    fwd = Forwarder(r.log, None, origin=r.actor, state_path=data / "forwarder.json", batch=cfg["fwd_batch"],
                    down_batch=64, max_batches=32)

    async def open_shared() -> Any:
        bootstrap = Path(cfg["link_file"]).read_text().strip()
        return await KafkaLog.open(bootstrap, namespace=cfg["ns"], partitions=3, request_timeout_ms=5000)

    service = ForwarderService(fwd, open_shared, interval=0.05, pass_timeout=20, connect_timeout=5,
                               backoff=Backoff(initial=0.05, cap=0.5), stats_interval=0.05)
    running = asyncio.create_task(service.run())
    marker = data / "written"
    hist = History(cfg["history"])
    written = 0
    if not marker.exists():
        for first in range(0, cfg["increments"], cfg["per_batch"]):
            await write_batch(r, cfg["name"], first, min(cfg["per_batch"], cfg["increments"] - first), hist)
        written = r.context.max_seq(r.actor)
        marker.write_text(str(written))
    else:
        written = int(marker.read_text())
    await report_until_stopped(cfg, r, {"written": written, "forwarder": fwd})
    service.stop()
    await running
    await r.close()


if __name__ == "__main__":
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(cloud(config) if config["role"] == "cloud" else edge(config))
