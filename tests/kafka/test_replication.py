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


def test_catch_up_and_sync_cover_every_partition(crdtsync_kafka: str) -> None:
    from crdtsync import Feature, GCounter

    schema = [Feature("count", GCounter)]

    async def body() -> None:
        ns = namespace("sync")
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=4) as la, \
                KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=4) as lb, \
                KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=4) as lc:
            a = await Replica.open(None, schema=schema, log=la, name="a", control=False)
            b = await Replica.open(None, schema=schema, log=lb, name="b", control=False, follow=False)
            c = await Replica.open(None, schema=schema, log=lc, name="c", control=False)
            keys = [f"k{i}" for i in range(40)]
            for rnd in range(3):
                for k in keys:  # one record per key: they spread over the four partitions
                    a.write("count", k, "increment", 1)
                    await a.flush()
                partitions = {e.position.partition async for e in la.read(0)}  # type: ignore[union-attr]
                assert partitions == {0, 1, 2, 3}
                await b.catch_up()  # no follower: everything in the log now, every partition
                assert [b.value("count", k) for k in keys] == [rnd + 1] * len(keys)
                await c.sync(timeout=10)  # following: returns once every partition is applied
                assert [c.value("count", k) for k in keys] == [rnd + 1] * len(keys)
            # while a keeps writing (records past the end land on every partition), catch-up
            # and sync still apply everything that was in the log when they started
            stop = asyncio.Event()
            flushed = {k: a.value("count", k) for k in keys}  # what the log holds

            async def keep_writing() -> None:
                i = 0
                while not stop.is_set():
                    key = keys[i % len(keys)]
                    a.write("count", key, "increment", 1)
                    await a.flush()
                    flushed[key] += 1
                    i += 7

            writer = asyncio.create_task(keep_writing())
            try:
                for _ in range(5):
                    before = dict(flushed)
                    await b.catch_up()
                    assert all(b.value("count", k) >= before[k] for k in keys), [(k, b.value("count", k), before[k], a.value("count", k)) for k in keys if b.value("count", k) < before[k]]
                    before = dict(flushed)
                    await c.sync(timeout=10)
                    assert all(c.value("count", k) >= before[k] for k in keys)
            finally:
                stop.set()
                await writer
            for r in (a, b, c):
                await r.close()

    arun(body(), 90)


def test_sequenced_operations_are_ordered_by_the_strong_partition(crdtsync_kafka: str) -> None:
    from crdtsync import Feature, LWWRegister, PNCounter, Strong

    schema = [Feature("limit", LWWRegister, policy=Strong(timeout=10.0)),
              Feature("stock", PNCounter, policy=Strong(timeout=10.0)),
              Feature("views", PNCounter)]

    async def body() -> None:
        ns = namespace("seq")
        logs = [await KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=4) for _ in range(3)]
        try:
            rs = [await Replica.open(None, schema=schema, log=kl, name=f"r{i}", control=False)
                  for i, kl in enumerate(logs)]
            await rs[0].conditional("stock", "item", "increment", (10,), cond=None)
            # rounds of racing compare-and-sets: exactly one wins each round, the same everywhere
            current = None
            for rnd in range(5):
                results = await asyncio.gather(*(r.compare_and_set("limit", "k", current, f"{r.actor}/{rnd}")
                                                 for r in rs))
                assert sum(results) == 1, results
                current = f"{rs[results.index(True)].actor}/{rnd}"
                # a Strong field reads at LINEARIZABLE: every replica sees the winner at once
                assert [await r.read("limit", "k") for r in rs] == [current] * 3
                for r in rs:
                    r.write("views", f"v{rnd}", "increment", 1)  # eventual writes on other partitions
                    await r.flush()
            # 15 bounded decrements of a stock of 10: exactly 10 succeed
            wins = await asyncio.gather(*(r.decrement_if_enough("stock", "item", 1) for r in rs for _ in range(5)))
            assert sum(wins) == 10
            await _converged(rs)
            assert {r.value("limit", "k") for r in rs} == {current}
            assert {r.value("stock", "item") for r in rs} == {0}
            # every sequenced record is on the strong partition
            entries = [e async for e in logs[0].read(0)]
            seq_parts = {e.position.partition for e in entries  # type: ignore[union-attr]
                         if b"seqop" in e.payload}
            assert seq_parts == {0}
            assert len({e.position.partition for e in entries}) > 1  # type: ignore[union-attr]
            for r in rs:
                await r.close()
        finally:
            for kl in logs:
                await kl.close()

    arun(body(), 90)
