"""Replicas replicate through KafkaLog on the real broker: in one process, then three OS processes.

Every built-in type is written (operations from each type's own strategy) by every replica
concurrently; all replicas must end with the same state digest and a context holding every
writer's events.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

from crdtsync.adapters.kafka import KafkaLog

from crdtsync import Replica
from crdtsync.log._protocol import VectorPosition, covers

from ._schema import SCHEMA, apply_ops, draw_ops
from ._util import arun, namespace


async def _converged(replicas: list[Replica], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        digests = {r.digest() for r in replicas}
        if len(digests) == 1:
            ctxs = {repr(r.context) for r in replicas}
            if len(ctxs) == 1:
                return
        if loop.time() > deadline:
            raise AssertionError(f"not converged after {timeout} s: {[r.context for r in replicas]}")
        await asyncio.sleep(0.1)


def test_two_replicas_in_one_process_converge_for_every_type(crdtsync_kafka: str) -> None:
    async def body() -> None:
        ns = namespace("rep")
        logs = [await KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=3) for _ in range(2)]
        try:
            replicas = [await Replica.open(None, schema=SCHEMA, log=kl, name=n, control=False)
                        for kl, n in zip(logs, ["a", "b"])]
            for seed, r in enumerate(replicas):
                ops = draw_ops(8, seed)
                for i in range(0, len(ops), 20):
                    apply_ops(r, ops[i:i + 20])
                    await r.flush()
            await _converged(replicas)
            for r in replicas:
                await r.sync(timeout=10)
            assert replicas[0].digest() == replicas[1].digest()
            for r in replicas:  # each holds every writer's events
                assert all(r.context.max_seq(w.actor) >= 60 for w in replicas)
            assert all(kl.stats.dead_lettered == 0 and kl.stats.broker_losses == 0 for kl in logs)
            assert all(r.stats.records_quarantined == 0 for r in replicas)
            for r in replicas:
                await r.close()
        finally:
            for kl in logs:
                await kl.close()

    arun(body(), 90)


def test_three_replica_processes_converge_for_every_type(crdtsync_kafka: str, tmp_path: Path) -> None:
    ns = namespace("proc")
    stop = tmp_path / "stop"
    procs, statuses = [], []
    root = Path(__file__).resolve().parents[2]
    try:
        for i, name in enumerate(["p1", "p2", "p3"]):
            ops_file = tmp_path / f"{name}.ops"
            ops_file.write_bytes(pickle.dumps(draw_ops(10, 100 + i)))  # kept for a failure's rerun
            status = tmp_path / f"{name}.json"
            statuses.append(status)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.kafka._worker", crdtsync_kafka, ns, name, str(tmp_path / name),
                 str(ops_file), str(status), str(stop)], cwd=root,
                stdout=open(tmp_path / f"{name}.out", "wb"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            got = [json.loads(s.read_text()) for s in statuses if s.exists()]
            if len(got) == 3 and len({g["digest"] for g in got}) == 1 and len({g["context"] for g in got}) == 1 \
                    and all(g["own_seq"] >= g["written"] > 0 for g in got):
                break
            for p in procs:
                assert p.poll() is None, f"a worker exited: {(tmp_path / 'p1.out').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not converged: {got}"
            time.sleep(0.1)
        for g in got:  # every process holds every writer's events, nothing dead-lettered
            assert all(f"{h['actor']}:" in g["context"] for h in got)
            assert g["dead_lettered"] == 0 and g["quarantined"] == 0
            assert g["position"].startswith("VectorPosition(")
        stop.touch()
        for p in procs:
            assert p.wait(30) == 0
    finally:
        stop.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_replica_reopened_from_its_snapshot_resumes_at_its_vector(crdtsync_kafka: str, tmp_path: Path) -> None:
    async def body() -> None:
        ns = namespace("snap")
        async with KafkaLog.open(crdtsync_kafka, namespace=ns) as kl_a, KafkaLog.open(crdtsync_kafka, namespace=ns) as kl_b:
            a = await Replica.open(tmp_path / "a", schema=SCHEMA, log=kl_a, name="a", control=False)
            b = await Replica.open(None, schema=SCHEMA, log=kl_b, name="b", control=False)
            apply_ops(a, draw_ops(4, 7))
            apply_ops(b, draw_ops(4, 8))
            await a.flush()
            await b.flush()
            await _converged([a, b])
            saved = a.position
            await a.close()  # writes a snapshot holding the position vector
            apply_ops(b, draw_ops(2, 9))  # written while a is away
            await b.flush()
        async with KafkaLog.open(crdtsync_kafka, namespace=ns) as kl_a2, KafkaLog.open(crdtsync_kafka, namespace=ns) as kl_b2:
            b2 = await Replica.open(None, schema=SCHEMA, log=kl_b2, name="b2", control=False)
            a2 = await Replica.open(tmp_path / "a", schema=SCHEMA, log=kl_a2, name="a", control=False)
            assert a2.stats.events_applied > 0
            await _converged([a2, b2])
            pos = a2.position
            assert isinstance(pos, VectorPosition) and isinstance(saved, VectorPosition)
            assert covers(pos, saved) and not covers(saved, pos)
            await a2.close()
            await b2.close()

    arun(body(), 90)
