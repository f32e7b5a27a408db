"""Reads never go stale: the write handles, the value cache and the own-write overlay.

Two replicas ``a`` and ``b`` share a MemoryLog, each with a wall clock the history moves
(so their stamps can be equal, or older than the other's), and run a random
interleaving of: handle writes and ``write()`` calls of LWW ``set`` (all value kinds:
ints in and beyond i64, floats, str, bytes, bools, None, lists, dicts) and GCounter
``increment``; flushes; catching up with the other's records; subscribers coming and
going; clocks moving; records of a third writer whose register stamps run ahead of its
event stamps (so tables hold stamps beyond the replicas' clocks); snapshots (also every
7 changes); crashes (no final flush or snapshot); close + reopen with a fresh clock.
Both replicas write batch format 2, or one of them format 1 or format 2 without the
stamped form.

After every step, for each replica ``x``: a fresh replica applies what ``x`` has (the
log up to ``x.position``, ``x``'s own records after it, and ``x.unlogged()``), and
``x.view``, ``x.value`` and ``x.state`` of every key equal that reference's
``state(...)``. At the end both replicas catch up and hold equal user fields in
``export_state()`` and equal contexts, equal to a fresh replica of the whole log.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Feature, Replica
from crdtsync.clock import HLC, make_hlc
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.log import MemoryLog
from crdtsync.testing.faults import crash
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister, store_value

SCHEMA = [Feature("s", LWWRegister), Feature("t", LWWRegister), Feature("c", GCounter)]
FIELDS = ("s", "t", "c")
LWW_FIELDS = ("s", "t")
KEYS = ("k0", "k1")
WHO = ("a", "b")
WALL = 1_000_000_000
CODEC = MsgpackCodec()
FOREIGN = "z~1"
FOREIGN_META = {"region": "default", "role": "default"}

values = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=3),
    st.binary(max_size=3), st.booleans(), st.none(),
    st.lists(st.integers(-2, 2), max_size=2), st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2),
)
who = st.sampled_from(WHO)
key = st.sampled_from(KEYS)
writes = st.one_of(
    st.tuples(st.just("hset"), who, st.sampled_from(LWW_FIELDS), key, values),
    st.tuples(st.just("wset"), who, st.sampled_from(LWW_FIELDS), key, values),
    st.tuples(st.just("hinc"), who, key, st.integers(1, 3)),
    st.tuples(st.just("winc"), who, key, st.integers(1, 3)),
)
others = st.one_of(
    st.tuples(st.just("sync"), who),  # flush, and the other replica catches up
    st.tuples(st.just("flush"), who),
    st.tuples(st.just("catch_up"), who),
    st.tuples(st.just("clock"), who, st.sampled_from([-2_000, -1, 0, 1, 3_000])),
    st.tuples(st.just("same_clock")),
    st.tuples(st.just("subscribe"), who),
    st.tuples(st.just("reopen"), who, st.booleans()),
    st.tuples(st.just("crash"), who),  # dies: no final flush or snapshot
    # a third writer whose register stamps run ahead of its event stamps (which the
    # replicas' clocks observe): tables then hold stamps beyond the clock
    st.tuples(st.just("foreign"), st.sampled_from(LWW_FIELDS), key, values, st.sampled_from([0, 2_000, 10**6])),
)
step = st.one_of(writes, writes, st.tuples(st.just("sync"), who), st.tuples(st.just("sync"), who), others)


def _codec(fmt: int) -> MsgpackCodec:
    return MsgpackCodec(write_version=2, stamped=False) if fmt == 0 else MsgpackCodec(write_version=fmt)


class World:
    """The two replicas, their clocks, handles and data directories."""

    def __init__(self, root: Path, formats: dict[str, int] | None = None) -> None:
        self.root = root
        #: the batch format each replica writes (1: no columns, no stamped form, no span;
        #: 0: format 2 without the stamped form)
        self.formats = formats or {w: 2 for w in WHO}
        self.log = MemoryLog()
        self.walls = {w: WALL for w in WHO}
        self.reps: dict[str, Replica] = {}
        self.handles: dict[str, dict[str, Any]] = {}
        self.unsub: dict[str, Any] = {}
        self.changes: list[Any] = []
        self.foreign_seq = 0

    def hlc(self, w: str) -> HLC:
        walls = self.walls
        return HLC(clock=lambda: walls[w])

    async def open(self, w: str) -> None:
        self.reps[w] = r = await Replica.open(self.root / w, schema=SCHEMA, log=self.log, name=w, follow=False,
                                              control=False, hlc=self.hlc(w), snapshot_every=7,
                                              codec=_codec(self.formats[w]))
        # handles are made once per incarnation of the replica object, before any write
        self.handles[w] = {f: r.writer(f, "set") for f in LWW_FIELDS}
        self.handles[w]["c"] = r.writer("c", "increment")

    async def run(self, s: tuple[Any, ...]) -> None:
        op = s[0]
        if op == "same_clock":
            top = max(self.walls.values())
            self.walls = {w: top for w in WHO}
            return
        if op == "foreign":
            self.foreign_seq += 1
            now = max(self.walls.values())
            reg = LWWRegister._raw(make_hlc(now + s[4]), FOREIGN, store_value(s[3]))
            ev = Event(FOREIGN, self.foreign_seq, make_hlc(now), s[1], s[2], reg)
            await self.log.append([MsgpackCodec(write_version=1).encode(Batch.of([ev], FOREIGN_META))])
            return
        w = s[1]
        r = self.reps[w]
        if op == "hset":
            self.handles[w][s[2]](s[3], s[4])
        elif op == "wset":
            r.write(s[2], s[3], "set", s[4])
        elif op == "hinc":
            self.handles[w]["c"](s[2], s[3])
        elif op == "winc":
            r.write("c", s[2], "increment", s[3])
        elif op == "flush":
            await r.flush()
        elif op == "sync":
            await r.flush()
            await self.reps[WHO[1 - WHO.index(w)]].catch_up()
        elif op == "catch_up":
            await r.catch_up()
        elif op == "clock":
            self.walls[w] += s[2]
        elif op == "subscribe":
            stop = self.unsub.pop(w, None)
            if stop is not None:
                stop()
            else:
                self.unsub[w] = r.subscribe(self.changes.append)
        elif op == "crash":
            self.unsub.pop(w, None)
            await crash(r)
            await self.open(w)
        elif op == "reopen":
            if s[2]:
                await r.snapshot()
            self.unsub.pop(w, None)
            await r.close()
            self.walls[w] -= 1_500  # a fresh clock, behind what the replica wrote before
            await self.open(w)

    async def records_of(self, r: Replica) -> list[bytes]:
        """What ``r`` has applied or written: the log up to its position, its own records
        after that, its unlogged events."""
        upto = r.position if r.position is not None else -1
        out = []
        async for e in self.log.read(0):
            if e.position <= upto or CODEC.decode(e.payload).origin == r.actor:
                out.append(e.payload)
        return out + r._writer.unlogged()


async def reference(records: list[bytes]) -> Replica:
    ref = await Replica.open(schema=SCHEMA, log=MemoryLog(), name="ref", follow=False, control=False)
    for i, payload in enumerate(records):
        ref.applier.apply_record(i, payload)
    assert ref.stats.records_quarantined == 0
    return ref


async def check(world: World, w: str) -> None:
    r = world.reps[w]
    ref = await reference(await world.records_of(r))
    try:
        for k in KEYS:
            want = {f: ref.state(f, k) for f in FIELDS}
            assert r.view(k, FIELDS).values == {f: s.value() for f, s in want.items()}, (w, k)
            for f in FIELDS:
                assert r.value(f, k) == want[f].value(), (w, f, k)
                assert r.state(f, k) == want[f], (w, f, k)
    finally:
        await ref.close()


def user(r: Replica) -> dict[str, Any]:
    return {f: t for f, t in r.export_state().items() if f in FIELDS}


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=8, max_size=40), st.sampled_from([(2, 2), (2, 2), (1, 2), (2, 1), (0, 2)]))
def test_reads_match_a_fresh_replica_of_the_same_records_after_every_step(
        steps: list[tuple[Any, ...]], formats: tuple[int, int]) -> None:
    shm = Path("/dev/shm")  # real files, without the disk's fsync cost per open and close
    root = Path(tempfile.mkdtemp(prefix="crdtsync-reads-", dir=shm if shm.is_dir() else None))

    async def main() -> None:
        world = World(root, dict(zip(WHO, formats)))
        for w in WHO:
            await world.open(w)
        try:
            for s in steps:
                await world.run(s)
                for w in WHO:
                    await check(world, w)
            a, b = world.reps["a"], world.reps["b"]
            for _ in range(2):
                await a.flush()
                await b.flush()
                await a.catch_up()
                await b.catch_up()
            assert user(a) == user(b)
            assert a.context == b.context
            ref = await reference([e.payload async for e in world.log.read(0)])
            assert user(ref) == user(a)
            await ref.close()
        finally:
            for r in world.reps.values():
                await r.close()  # (a crashed one was replaced by its reopened self)

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(root, ignore_errors=True)
