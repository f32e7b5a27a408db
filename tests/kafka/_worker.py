"""A replica process for the Kafka tests: ``python -m tests.kafka._worker ARGS``.

Opens a Replica (data directory of its own) on a KafkaLog, writes the operations pickled
in ``ops_file``, then reports its state every 0.1 s to ``status_file`` (JSON: digest,
context, own actor and seq) until ``stop_file`` exists; closes cleanly (final snapshot).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
from pathlib import Path


async def main(bootstrap: str, ns: str, name: str, data_dir: str, ops_file: str, status_file: str,
               stop_file: str) -> None:
    from crdtsync.adapters.kafka import KafkaLog

    from crdtsync import Replica

    from ._schema import SCHEMA, apply_ops

    ops = pickle.loads(Path(ops_file).read_bytes())
    async with KafkaLog.open(bootstrap, namespace=ns, partitions=3) as kl:
        r = await Replica.open(data_dir, schema=SCHEMA, log=kl, name=name, control=False)
        written = 0
        for i in range(0, len(ops), 25):
            written += apply_ops(r, ops[i:i + 25])
            await r.flush()
            await asyncio.sleep(0.01)
        while not os.path.exists(stop_file):
            status = {"name": name, "actor": r.actor, "written": written,
                      "own_seq": r.context.max_seq(r.actor), "digest": r.digest().hex(),
                      "context": repr(r.context), "dead_lettered": kl.stats.dead_lettered,
                      "quarantined": r.stats.records_quarantined,
                      "position": repr(r.position)}
            tmp = status_file + ".tmp"
            Path(tmp).write_text(json.dumps(status))
            os.replace(tmp, status_file)
            await asyncio.sleep(0.1)
        await r.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
