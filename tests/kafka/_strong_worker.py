"""One replica process of the strong-field test over Kafka: ``python -m tests.kafka._strong_worker``.

Arguments: bootstrap, namespace, replica name, seed, operations per client, client ids (comma separated), and
``lag`` or ``follow``. Opens one replica on its own KafkaLog, prints ``{"ready": name}``,
waits for ``go`` on stdin, runs its clients (compare-and-set and LINEARIZABLE reads on the
``Strong()`` register of tests/test_strong_linearizable.py; a lagging replica only reads)
recording a History on ``time.monotonic`` (one clock for every process of the host), prints
``{"ops": [...]}``, then on ``final`` syncs to the log's end and prints ``{"final": value}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


async def main(bootstrap: str, ns: str, name: str, seed: str, ops: str, clients: str, mode: str) -> None:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import Replica
    from crdtsync.testing.checkers import History
    from tests.test_strong_linearizable import KEY, SCHEMA, linearizable_read, register_op

    loop = asyncio.get_running_loop()
    ids = [int(c) for c in clients.split(",")]
    history = History(clock=time.monotonic)
    async with KafkaLog.open(bootstrap, namespace=ns, check_interval=60) as kl:
        r = await Replica.open(None, schema=SCHEMA, log=kl, name=name, control=False, follow=mode == "follow")
        print(json.dumps({"ready": name}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # go

        async def reader(rep: Replica, _rng: random.Random, h: History, i: int) -> None:
            await linearizable_read(rep, "limit", h, i)

        async def client(i: int) -> None:
            crng = random.Random(int(seed) * 100 + i)
            op = reader if mode == "lag" else register_op(False)
            for _ in range(int(ops)):
                await op(r, crng, history, i)
                await asyncio.sleep(crng.uniform(0, 0.002))

        await asyncio.gather(*(client(i) for i in ids))
        out = [{"process": o.process, "f": o.f, "arg": list(o.arg) if isinstance(o.arg, tuple) else o.arg,
                "kind": o.kind, "result": o.result, "start": o.start, "end": o.end} for o in history.operations]
        print(json.dumps({"ops": out}), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # final
        await r.sync_to_end(30.0)
        print(json.dumps({"final": r.value("limit", KEY)}), flush=True)
        await r.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
