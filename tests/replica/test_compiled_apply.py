"""The compiled apply path converges exactly with the pure one.

Records written by real replicas (counter increments and LWW sets of every kind of value,
in one and two fields a record), raw stamped records with hostile payloads, and damaged
copies of both (bytes overwritten, cut short, extended) are replayed in a random order
into two replicas, one running what :mod:`crdtsync.speedups` picked for this process
(the C column loops and record unpacking when they are built) and one inside
``speedups.pure()``. Both must end with the same state, context, reads and counters
(events applied, duplicates, refusals, records quarantined), and decoding each record
alone must give the same columns or the same error, type and message. Under
``CRDTSYNC_PURE=1``, or without a compiler, both sides are pure and this checks only
that replay is deterministic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Feature, Replica, speedups
from crdtsync.clock import HLC
from crdtsync.events import Columns, MsgpackCodec
from crdtsync.log import MemoryLog
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

SCHEMA = [Feature("s", LWWRegister), Feature("c", GCounter)]
WALL = 1_000_000
H0 = WALL << 16
V2 = MsgpackCodec(write_version=2)
VALUES: list[Any] = [0, -1, 2**63 - 1, 2**64 - 1, -(2**63), 1.5, float("nan"), "", "é", "x" * 70, None, True, False,
                     b"\x00b", [1, "a"], [1.5, None], {"a": 1}]


async def _writers() -> list[bytes]:
    log = MemoryLog()
    for w in range(2):
        r = await Replica.open(schema=SCHEMA, log=log, identity=ReplicaIdentity(f"w{w}", "i1", "default", "default"),
                               follow=False, control=False, hlc=HLC(clock=lambda: WALL))
        s, c = r.writer("s", "set"), r.writer("c", "increment")
        for i in range(60):
            s(f"k{i % 7}", VALUES[(i + w) % len(VALUES)])
            if i % 3:
                c(f"k{i % 5}", 1 + i % 4)
            if i % 9 == 8:
                await r.flush()
        await r.flush()
        r._mark_closed()
    return [e.payload async for e in log.read(0)]


def _stamped(origin: str, first: int, tag: str, payloads: list[Any]) -> bytes:
    n = len(payloads)
    return msgpack.packb([2, origin, first, [["region", "default"], ["role", "default"]], [["s" if tag == "lww" else "c", 1, tag, 2]],
                          H0, [1] * (n - 1), [], [f"k{i}" for i in range(n)], payloads])


RECORDS = asyncio.run(_writers()) + [
    _stamped("z~1", 1, "gcounter", [1, 2, 2**63 - 1]), _stamped("z~1", 4, "gcounter", [0]),
    _stamped("z~1", 5, "gcounter", [True]), _stamped("z~1", 6, "gcounter", [2**64 - 1]),
    _stamped("z~2", 1, "lww", [1, "a", None, [1, 2]]), _stamped("z~2", 5, "lww", [{"a": 1}]),
    _stamped("z~2", 6, "lww", [2**64 - 1, -(2**63)]),
]

PICKS = st.lists(st.tuples(st.integers(0, len(RECORDS) - 1),
                           st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                     st.integers(1, 9), st.binary(min_size=1, max_size=2))), max_size=25)


def _damaged(data: bytes, how: Any) -> bytes:
    if how is None:
        return data
    if isinstance(how, tuple):
        at, byte = how
        out = bytearray(data)
        out[at % len(out)] = byte
        return bytes(out)
    if isinstance(how, int):
        return data[:max(0, len(data) - how)]
    return data + how


def _decoded(data: bytes) -> Any:
    try:
        rec = V2.decode_record(data)
    except Exception as exc:  # (compared between the two paths, never dropped)
        return type(exc).__name__, str(exc)
    batch = rec.batch() if type(rec) is Columns else rec
    return repr(batch)


async def _replay(records: list[bytes]) -> dict[str, Any]:
    log = MemoryLog()
    r = await Replica.open(schema=SCHEMA, log=log, identity=ReplicaIdentity("rd", "i1", "default", "default"),
                           follow=False, control=False, hlc=HLC(clock=lambda: WALL))
    await log.append(records)
    await r.catch_up()
    st_ = r.stats
    out = {
        "state": repr(sorted((f, repr(t)) for f, t in r.export_state().items())),
        "context": r.context,
        "reads": repr([(f, k, r.value(f, k)) for f in ("s", "c") for k in ("k0", "k1", "k2", "k3", "k4", "k5", "k6")]),
        "counts": (st_.events_applied, st_.events_duplicate, st_.records_quarantined, repr(sorted(st_.events_rejected.items()))),
        "decoded": [_decoded(x) for x in records],
    }
    r._mark_closed()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=PICKS)
def test_replay_through_the_compiled_path_equals_the_pure_path(picks: list[tuple[int, Any]]) -> None:
    records = [_damaged(RECORDS[i], how) for i, how in picks]
    got = asyncio.run(_replay(records))
    with speedups.pure():
        ref = asyncio.run(_replay(records))
    for part in ("state", "context", "reads", "counts", "decoded"):
        assert got[part] == ref[part], part


def test_every_record_of_the_pool_replays_and_the_damaged_ones_are_quarantined() -> None:
    """The pool is what the comparison needs: real records that apply, and bad ones."""
    out = asyncio.run(_replay(list(RECORDS)))
    assert out["counts"][0] > 200 and out["counts"][2] == 3  # (the three bad stamped counter records)
    bad = asyncio.run(_replay([RECORDS[3][:-3], b"\xc1", RECORDS[4]]))
    assert bad["counts"][2] == 2
