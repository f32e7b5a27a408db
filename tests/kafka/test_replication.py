"""Replicas replicate through KafkaLog on the real broker: in one process, then three OS processes.

Every built-in type is written (operations from each type's own strategy) by every replica
concurrently; all replicas must end with the same state digest and a context holding every
writer's events.
"""

from __future__ import annotations

import asyncio

from crdtsync import Replica
from crdtsync.adapters.kafka import KafkaLog

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
