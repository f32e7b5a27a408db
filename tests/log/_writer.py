"""A LocalLog writer run as a separate OS process by the multi-process and crash tests.

    python _writer.py DIR --writer N --batches K [--fsync P] [--segment-bytes B] [--seed S]

Appends K batches (forever if K is 0) of self-describing records (see ``_records.py``)
and prints ``ACK <position> <seq> <count>`` after each append returns, flushing, so a
test that kills the process knows exactly which appends were acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _import_log_layer_only() -> None:
    """Register a bare ``crdtsync`` package so importing ``crdtsync.log.local`` skips
    ``crdtsync/__init__.py`` (which loads pycrdt and every type, about a second). The
    crash test starts a process per run; the code under test is the same."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("crdtsync")
    assert spec is not None and spec.submodule_search_locations is not None
    pkg = types.ModuleType("crdtsync")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["crdtsync"] = pkg


_import_log_layer_only()

from _records import make_batch  # noqa: E402  (after the import shim above)

from crdtsync.log.local import LocalLog  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--writer", type=int, required=True)
    ap.add_argument("--batches", type=int, default=0)
    ap.add_argument("--fsync", default="group")
    ap.add_argument("--segment-bytes", type=int, default=64 * 1024)
    ap.add_argument("--max-len", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed * 1000 + args.writer)
    out = sys.stdout
    log = await LocalLog.open(args.dir, fsync=args.fsync, segment_bytes=args.segment_bytes)
    out.write(f"OPEN {log.recovery.truncated_bytes}\n")
    out.flush()
    seq = 0
    while args.batches == 0 or seq < args.batches:
        batch = make_batch(args.writer, seq, rng, max_len=args.max_len)
        position = await log.append(batch)
        out.write(f"ACK {position} {seq} {len(batch)}\n")
        out.flush()
        seq += 1
    await log.close()
    out.write("DONE\n")
    out.flush()


if __name__ == "__main__":
    asyncio.run(main())
