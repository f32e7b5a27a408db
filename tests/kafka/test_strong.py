"""Strong fields over Kafka are linearizable while the broker pauses (SIGSTOP/SIGCONT).

Five replicas in one process, each on its own KafkaLog of one topic (and the same
workload on three replica *processes*, at the end of this file); five concurrent
clients run compare-and-set and LINEARIZABLE reads on a ``Strong()`` LWWRegister while the
broker process is stopped and continued now and then (a broker that stops answering, then
answers again, as under a long GC pause or a network stall). The recorded history must
pass the linearizability checker, also on a replica that lags (it does not follow the log:
its LINEARIZABLE reads catch up first); the same workload with LOCAL reads must be caught.
The workload and its classification of outcomes are those of tests/test_strong_linearizable.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from typing import Any

from crdtsync.adapters.kafka import KafkaLog

from crdtsync import Replica
from crdtsync.testing.checkers import History, Operation, RegisterModel, check_linearizable
from crdtsync.testing.kafka import TansuBroker
from tests.test_strong_linearizable import (
    KEY,
    MAX_CONFIGURATIONS,
    SCHEMA,
    linearizable_read,
    register_op,
    summary,
)

from ._util import arun, namespace

CLIENTS = 5
OPS = 60


async def _scenario(broker: TansuBroker, seed: int, local_reads: bool,
                    ops: int = OPS, pause: tuple[float, float] = (0.2, 1.4)) -> tuple[History, int, list[Any]]:
    ns = namespace("strong")
    logs = [await KafkaLog.open(broker.bootstrap, namespace=ns, check_interval=60) for _ in range(CLIENTS)]
    history = History()
    pauses = 0
    try:
        # r4 lags: it applies the log only when a read of its own syncs with it (follow=False)
        rs = [await Replica.open(None, schema=SCHEMA, log=kl, name=f"r{i}", control=False, follow=i < CLIENTS - 1)
              for i, kl in enumerate(logs)]
        stop = asyncio.Event()
        rng = random.Random(seed)

        async def pauser() -> None:
            nonlocal pauses
            mark = 0
            while not stop.is_set():
                mark += rng.randint(20, 50)
                while len(history) < mark and not stop.is_set():
                    await asyncio.sleep(0.005)
                if stop.is_set():
                    return
                broker.pause()
                pauses += 1
                try:
                    await asyncio.sleep(rng.uniform(*pause))  # by default some calls outlast their 1 s timeout
                finally:
                    broker.resume()

        async def reader(r: Replica, crng: random.Random, history: History, i: int) -> None:
            if local_reads:
                history.ok(history.invoke(i, "read"), r.value("limit", KEY))
            else:
                await linearizable_read(r, "limit", history, i)

        async def client(i: int) -> None:
            crng = random.Random(seed * 100 + i)
            op = reader if i == CLIENTS - 1 else register_op(local_reads)  # the lagging r4 only reads
            for _ in range(ops):
                await op(rs[i], crng, history, i)
                await asyncio.sleep(crng.uniform(0, 0.002))

        faults = asyncio.ensure_future(pauser())
        try:
            await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        finally:
            stop.set()
            broker.resume()
            await faults
        for r in rs:
            await r.sync_to_end(10.0)
        finals = [r.value("limit", KEY) for r in rs]
        for r in rs:
            await r.close()
    finally:
        broker.resume()
        for kl in logs:
            await kl.close()
    return history, pauses, finals


def test_strong_register_over_kafka_is_linearizable_under_broker_pauses(crdtsync_tansu: TansuBroker) -> None:
    history, pauses, finals = arun(_scenario(crdtsync_tansu, seed=11, local_reads=False), 120)
    n = summary(history)
    assert len(history) == CLIENTS * OPS and n["pending"] == 0
    result = check_linearizable(history, RegisterModel(None), max_configurations=MAX_CONFIGURATIONS)
    assert result.ok, f"{result}\n{n}"
    assert pauses >= 2, pauses
    assert n["cas_true"] >= 10 and n["cas_false"] >= 10, n
    assert n["info"] + n["fail"] > 0, n  # the pauses were felt: some calls timed out



def test_local_reads_over_kafka_are_caught(crdtsync_tansu: TansuBroker) -> None:
    """A LOCAL read is stale when it falls between a CAS being applied somewhere and
    everywhere: a short window on the following replicas, and always on the lagging r4
    (which never syncs when its reads are LOCAL). Up to three runs (seeds), and at least
    one must be caught."""
    results = []
    for seed in (12, 13, 14):
        history, _, _ = arun(_scenario(crdtsync_tansu, seed=seed, local_reads=True, ops=2 * OPS,
                                             pause=(0.05, 0.3)), 120)
        result = check_linearizable(history, RegisterModel(None), max_configurations=MAX_CONFIGURATIONS)
        results.append((result.explanation, summary(history)))
        if not result.ok:
            assert result.stuck is not None, result
            return
    raise AssertionError(f"LOCAL reads went undetected in three runs: {results}")


# -- the same workload on three replica processes ----------------------------------------
#: replica process -> (its clients, whether it follows the log); the lagging one only reads
PROCESSES = {"p0": ("0,1", "follow"), "p1": ("2,3", "follow"), "p2": ("4", "lag")}


def _merge(reports: list[list[dict[str, Any]]]) -> History:
    """One History of every process's operations (their times share the host's monotonic clock)."""
    ops = []
    for rep in reports:
        for o in rep:
            arg = tuple(o["arg"]) if isinstance(o["arg"], list) else o["arg"]
            ops.append(Operation(id=len(ops), process=o["process"], f=o["f"], arg=arg, kind=o["kind"],
                                 result=o["result"], start=o["start"], end=o["end"]))
    return History(ops)


def test_strong_register_on_three_replica_processes_is_linearizable_under_broker_pauses(
        crdtsync_tansu: TansuBroker) -> None:
    ns, seed, rng = namespace("strongp"), 21, random.Random(21)
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "tests.kafka._strong_worker", crdtsync_tansu.bootstrap, ns, name, str(seed),
         str(OPS), clients, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name, (clients, mode) in PROCESSES.items()}

    def answer(name: str) -> dict[str, Any]:
        line = procs[name].stdout.readline()  # type: ignore[union-attr]
        assert line, f"replica process {name} exited with {procs[name].wait()}"
        got: dict[str, Any] = json.loads(line)
        return got

    def tell(name: str, cmd: str) -> None:
        procs[name].stdin.write(cmd + "\n")  # type: ignore[union-attr]
        procs[name].stdin.flush()  # type: ignore[union-attr]

    pauses = 0
    try:
        for name in procs:
            assert answer(name) == {"ready": name}
        for name in procs:
            tell(name, "go")
        reports: dict[str, list[dict[str, Any]]] = {}
        results: dict[str, dict[str, Any]] = {}

        def collect(name: str) -> None:
            results[name] = answer(name)

        readers = [threading.Thread(target=collect, args=(n,)) for n in procs]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 120
        while any(t.is_alive() for t in readers):  # the broker stops and continues meanwhile
            assert time.monotonic() < deadline, "the replica processes did not finish"
            time.sleep(rng.uniform(0.1, 0.4))
            if any(t.is_alive() for t in readers):
                crdtsync_tansu.pause()
                pauses += 1
                try:
                    time.sleep(rng.uniform(0.2, 1.4))
                finally:
                    crdtsync_tansu.resume()
        for t in readers:
            t.join()
        reports = {n: res["ops"] for n, res in results.items()}
        for name in procs:
            tell(name, "final")
        finals = [answer(name)["final"] for name in procs]
    finally:
        crdtsync_tansu.resume()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    history = _merge(list(reports.values()))
    n = summary(history)
    assert len(history) == CLIENTS * OPS and n["pending"] == 0, n
    result = check_linearizable(history, RegisterModel(None), max_configurations=MAX_CONFIGURATIONS)
    assert result.ok, f"{result}\n{n}"
    assert pauses >= 2, pauses
    assert n["cas_true"] >= 10 and n["cas_false"] >= 10, n
    assert n["info"] + n["fail"] > 0, n  # the pauses were felt: some calls timed out
    assert len(set(finals)) == 1, finals

