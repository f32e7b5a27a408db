"""Strong fields are linearizable (architecture invariant 5), checked on recorded histories.

Five replicas in one process share a log (a MemoryLog, or one LocalLog directory with a
handle per replica). Five concurrent clients, one per replica, run compare-and-set and
LINEARIZABLE reads on a ``Strong()`` LWWRegister (or conditional decrements and reads on
a ``Strong()`` PNCounter) while a fault task cuts replicas off the log and crashes and
restarts them. Every call is recorded in a :class:`History` and checked:

* ``ok``: the call returned (its result is what the client saw);
* ``fail``: definitely no effect (the replica's link was cut, so nothing was sent: a
  :class:`LogCut` is the cause; or a read that raised, which changes nothing);
* ``info``: anything else that raised (a timeout, a crash mid-call): the operation may
  or may not have happened, now or later.

The same scenario with reads served LOCAL (``replica.value``, no sync with the log) must
be caught by the checker: that is what shows the checker can fail on this workload.

The fleets run without heartbeats (``control=False``): strong operations do not use
them, and each heartbeat carries the replica's whole context, whose dot cloud grows with
every sequenced append that failed (its seq is burnt, leaving a gap that never fills),
which made heartbeat decoding most of the run time. That heartbeats work through a
:class:`CuttableLog` is tested on its own below.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdtsync import Feature, LocalLog, LWWRegister, MemoryLog, PNCounter, Replica, Strong
from crdtsync.errors import LogClosed, Unavailable
from crdtsync.log import Log
from crdtsync.replica import ReplicaIdentity
from crdtsync.testing.checkers import (
    CounterModel,
    History,
    Operation,
    RegisterModel,
    check_counter_bounds,
    check_linearizable,
)
from crdtsync.testing.faults import CuttableLog, LogCut, crash
from tests._wait import until

CLIENTS = 5
TIMEOUT = 1.0  # the strong fields' timeout: an op stuck behind a cut gives up after this
SCHEMA = [
    Feature("limit", LWWRegister, policy=Strong(timeout=TIMEOUT)),
    Feature("stock", PNCounter, policy=Strong(timeout=TIMEOUT)),
]
KEY = "acct-1"
#: small domains, so that a compare-and-set succeeds about one time in four
EXPECTED = (None, 0, 1, 2)
NEW = (0, 1, 2)
#: a search budget well above what these histories need (a few thousand configurations);
#: SearchLimitExceeded is raised, never taken for a pass
MAX_CONFIGURATIONS = 2_000_000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _cut_caused(exc: BaseException) -> bool:
    """Whether the error says the operation was never sent (the link was cut)."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, LogCut):
            return True
        e = e.__cause__
    return False


# ---------------------------------------------------------------------------------------
# A fleet of replicas over one shared log, with cuts and crashes
# ---------------------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    replica: Replica | None = None
    link: CuttableLog | None = None
    identity: ReplicaIdentity | None = None
    up: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Faults:
    cuts: int = 0
    crashes: int = 0


class Fleet:
    """Replicas named r0..r4, each with its own link to the shared log."""

    def __init__(self, backend: str, tmp: Path | None) -> None:
        self.backend = backend
        self.tmp = tmp
        self.shared: MemoryLog | None = MemoryLog() if backend == "memory" else None
        self.nodes = [Node(f"r{i}") for i in range(CLIENTS)]
        self.faults = Faults()
        self.links: list[CuttableLog] = []  # every link ever opened (restarts open new ones)

    async def _link(self, name: str) -> CuttableLog:
        if self.shared is not None:
            return CuttableLog(self.shared, name=name)
        assert self.tmp is not None
        inner: Log = await LocalLog.open(self.tmp / "log", fsync="never")
        return CuttableLog(inner, close_inner=True, name=name)

    async def open(self, node: Node) -> None:
        link = await self._link(node.name)
        if self.shared is not None:
            # in-memory: the whole state comes back from the log (same identity)
            r = await Replica.open(log=link, schema=SCHEMA, name=node.name, identity=node.identity,
                                   control=False)
        else:
            # LocalLog: identity and snapshots in the data directory; snapshots often,
            # so restarts recover from snapshot + tail
            assert self.tmp is not None
            r = await Replica.open(self.tmp / node.name, log=link, schema=SCHEMA, snapshot_every=25,
                                   control=False)
        node.replica, node.link, node.identity = r, link, r.identity
        self.links.append(link)
        node.up.set()

    async def start(self) -> None:
        for node in self.nodes:
            await self.open(node)

    async def crash(self, node: Node) -> None:
        assert node.replica is not None and node.link is not None
        node.up.clear()
        r, node.replica = node.replica, None
        await crash(r)
        await node.link.close()  # appends it had forwarded land before the restart
        self.faults.crashes += 1

    def refused(self) -> int:
        """Calls refused because a link was cut (LogCut), over the whole run."""
        return sum(link.refused for link in self.links)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.replica is not None]

    async def close(self) -> None:
        for node in self.nodes:
            if node.link is not None:
                node.link.restore()
            if node.replica is not None:
                await node.replica.close()
            if node.link is not None:
                await node.link.close()
        if self.shared is not None:
            await self.shared.close()


async def fault_loop(fleet: Fleet, rng: random.Random, history: History, stop: asyncio.Event) -> None:
    """After every 30 to 90 calls the clients start: cut one or two replicas off the log
    for a while, or crash one and restart it after a pause, or do nothing. The first
    two faults are a cut and a crash, so every run has both. Faults are paced by the
    clients' progress, not the clock, so a slow machine sees as many."""
    kinds = ["cut", "crash"]
    mark = 0
    while not stop.is_set():
        mark += rng.randint(30, 90)
        while len(history) < mark and not stop.is_set():
            await asyncio.sleep(0.005)
        if stop.is_set():
            return
        roll = rng.random()
        kind = kinds.pop(0) if kinds else "cut" if roll < 0.55 else "crash" if roll < 0.8 else "none"
        live = fleet.live()
        if kind == "cut" and live:
            victims = rng.sample(live, min(len(live), rng.choice((1, 1, 2))))
            for node in victims:
                assert node.link is not None
                node.link.cut()
            fleet.faults.cuts += 1
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            for node in victims:
                if node.link is not None:
                    node.link.restore()
        elif kind == "crash" and live:
            node = rng.choice(live)
            await fleet.crash(node)
            await asyncio.sleep(rng.uniform(0.02, 0.15))
            await fleet.open(node)


async def settle(fleet: Fleet) -> list[Replica]:
    """Heal everything, restart crashed replicas and sync every one to the log's end."""
    for node in fleet.nodes:
        if node.link is not None:
            node.link.restore()
        if node.replica is None:
            await fleet.open(node)
    replicas = [n.replica for n in fleet.nodes if n.replica is not None]
    for r in replicas:
        await r.sync_to_end(10.0)
    return replicas


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------
ClientOp = Callable[[Replica, random.Random, History, int], Any]


async def drive(fleet: Fleet, seed: int, ops: int, client_op: ClientOp) -> History:
    """Run ``CLIENTS`` clients of ``ops`` operations each, under faults; the history."""
    history = History()
    stop = asyncio.Event()

    async def client(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        node = fleet.nodes[i]
        for _ in range(ops):
            while node.replica is None:  # crashed: wait for the restart
                await node.up.wait()
            await client_op(node.replica, rng, history, i)
            await asyncio.sleep(rng.uniform(0, 0.002))  # think time: interleave the clients

    await fleet.start()
    faults = asyncio.ensure_future(fault_loop(fleet, random.Random(seed), history, stop))
    try:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    finally:
        stop.set()
        await faults
    return history


async def sequenced_call(history: History, process: int, f: str, arg: Any, call: Any) -> None:
    """Run one conditional operation and record how it ended."""
    tok = history.invoke(process, f, arg)
    try:
        result = await call
    except (Unavailable, LogClosed) as exc:
        # LogCut: refused before anything was sent. Anything else (a timeout, a crash
        # mid-call): unknown outcome
        if _cut_caused(exc):
            history.fail(tok)
        else:
            history.info(tok)
    else:
        history.ok(tok, result)


async def linearizable_read(r: Replica, field_name: str, history: History, process: int) -> None:
    tok = history.invoke(process, "read")
    try:
        value = await r.read(field_name, KEY)
    except (Unavailable, LogClosed):
        history.fail(tok)  # a read that raised returned nothing and changed nothing
    else:
        history.ok(tok, value)


def register_op(local_reads: bool) -> ClientOp:
    async def op(r: Replica, rng: random.Random, history: History, i: int) -> None:
        if rng.random() < 0.5:
            if local_reads:  # the bug under test: LOCAL, whatever the replica has applied
                history.ok(history.invoke(i, "read"), r.value("limit", KEY))
            else:
                await linearizable_read(r, "limit", history, i)
        else:
            expected, new = rng.choice(EXPECTED), rng.choice(NEW)
            await sequenced_call(history, i, "cas", (expected, new),
                                 r.compare_and_set("limit", KEY, expected, new))

    return op


def summary(history: History) -> dict[str, int]:
    ops = history.operations
    return {
        "ok": sum(op.kind == "ok" for op in ops),
        "fail": sum(op.kind == "fail" for op in ops),
        "info": sum(op.kind == "info" for op in ops),
        "pending": sum(op.kind == "invoke" for op in ops),
        "cas_true": sum(op.f == "cas" and op.kind == "ok" and op.result is True for op in ops),
        "cas_false": sum(op.f == "cas" and op.kind == "ok" and op.result is False for op in ops),
    }


async def register_scenario(backend: str, tmp: Path | None, seed: int, *,
                            local_reads: bool) -> tuple[History, Fleet, list[Any]]:
    """5 clients x 200 CAS/read calls under faults; the history, the fleet (for its fault
    counters) and every replica's final value once healed."""
    fleet = Fleet(backend, tmp)
    try:
        history = await drive(fleet, seed, 200, register_op(local_reads))
        replicas = await settle(fleet)
        finals = [r.value("limit", KEY) for r in replicas]
    finally:
        await fleet.close()
    return history, fleet, finals


def assert_strong_register_run(history: History, fleet: Fleet, finals: list[Any]) -> None:
    n = summary(history)
    assert len(history) == CLIENTS * 200 and n["pending"] == 0
    result = check_linearizable(history, RegisterModel(None), max_configurations=MAX_CONFIGURATIONS)
    assert result.ok, f"{result}\n{n}"
    # the run exercised what it claims to: most calls completed, CAS went both ways,
    # faults happened and were felt (calls refused during cuts, crashes)
    assert n["ok"] >= len(history) // 2, n
    assert n["cas_true"] >= 20 and n["cas_false"] >= 20, n
    # (a call refused by a cut link is the usual way a fault is felt, but on a loaded
    # machine the cut windows can fall between calls: a clean CI run had 1 failed call
    # and no refusal; failed calls plus the cut and crash counts below are the check)
    assert n["fail"] > 0, (n, fleet.refused())
    assert fleet.faults.cuts >= 1 and fleet.faults.crashes >= 1, fleet.faults
    # every replica ends with the same value: the last successful write in log order
    assert len(set(finals)) == 1, finals


def test_strong_register_is_linearizable_under_cuts_and_crashes_on_memory_log() -> None:
    assert_strong_register_run(*run(register_scenario("memory", None, seed=1, local_reads=False)))


def test_strong_register_is_linearizable_under_cuts_and_crashes_on_local_log(tmp_path: Path) -> None:
    """The same on a LocalLog directory, one handle per replica (fsync "never": a crash
    here is a process crash, which keeps what reached the OS); restarts recover from
    the replica's snapshot plus the log tail."""
    assert_strong_register_run(*run(register_scenario("local", tmp_path, seed=2, local_reads=False)))


def test_local_reads_of_a_strong_register_are_caught_by_the_checker() -> None:
    """The same workload with reads served from local state: replicas cut off the log
    (and the ordinary apply lag) return values that were overwritten before the read
    began, and the checker must say so."""
    history, _, _ = run(register_scenario("memory", None, seed=3, local_reads=True))
    n = summary(history)
    assert n["cas_true"] >= 20, n
    result = check_linearizable(history, RegisterModel(None), max_configurations=MAX_CONFIGURATIONS)
    assert not result.ok, f"LOCAL reads went undetected: {result}\n{n}"
    assert result.stuck is not None, result
    # the reads are to blame: the sequenced CAS calls of the same run are linearizable
    cas_only = check_linearizable([op for op in history if op.f != "read"], RegisterModel(None),
                                  max_configurations=MAX_CONFIGURATIONS)
    assert cas_only.ok, str(cas_only)


# ---------------------------------------------------------------------------------------
# Strong counter: decrement-if-enough never overdraws
# ---------------------------------------------------------------------------------------
STOCK = 400


def counter_op(r: Replica, rng: random.Random, history: History, i: int) -> Any:
    if rng.random() < 0.4:
        return linearizable_read(r, "stock", history, i)
    n = rng.choice((1, 2, 3))
    return sequenced_call(history, i, "decrement", n, r.decrement_if_enough("stock", KEY, n))


def as_adds(history: History) -> list[Operation]:
    """The decrements as the counter-bounds checker's adds: a confirmed decrement is
    ``add(-n)``, an indeterminate one is an indeterminate ``add(-n)``, a refused one (or
    one that returned False) added nothing."""
    out = []
    for op in history.operations:
        if op.f == "decrement":
            if op.kind == "fail" or (op.kind == "ok" and op.result is False):
                continue
            out.append(Operation(id=op.id, process=op.process, f="add", arg=-op.arg, kind=op.kind,
                                 start=op.start, end=op.end))
        else:
            out.append(op)
    return out


def test_strong_counter_decrement_if_enough_never_overdraws_under_faults() -> None:
    async def scenario() -> tuple[History, Fleet, list[int], int]:
        fleet = Fleet("memory", None)
        history = History()
        try:
            # the initial stock, through the log like everything else
            first = Node("r-init")
            await fleet.open(first)
            assert first.replica is not None
            await first.replica.update("stock", KEY, "increment", STOCK)
            await first.replica.close()
            assert first.link is not None
            await first.link.close()
            history = await drive(fleet, 4, 100, counter_op)
            replicas = await settle(fleet)
            # a replica that never took part replays the whole log to the same value
            fresh = Node("r-fresh")
            await fleet.open(fresh)
            assert fresh.replica is not None
            replicas.append(fresh.replica)
            fleet.nodes.append(fresh)
            finals = [r.value("stock", KEY) for r in replicas]
            refused = [r.stats.ops_refused for r in replicas]
            # every replica evaluated every operation in the same order: same refusals
            assert len(set(refused)) == 1, refused
        finally:
            await fleet.close()
        return history, fleet, finals, refused[-1]

    history, fleet, finals, refused_by_fresh = run(scenario())
    ops = history.operations
    confirmed = sum(op.arg for op in ops if op.f == "decrement" and op.kind == "ok" and op.result)
    maybe = sum(op.arg for op in ops if op.f == "decrement" and op.kind == "info")
    declined = sum(op.f == "decrement" and op.kind == "ok" and op.result is False for op in ops)
    assert declined > 0 and confirmed > 0, "the stock must run out during the run"
    assert refused_by_fresh >= declined

    result = check_linearizable(history, CounterModel(STOCK), max_configurations=MAX_CONFIGURATIONS)
    assert result.ok, str(result)
    bounds = check_counter_bounds(as_adds(history), initial=STOCK)
    assert bounds.valid and bounds.reads > 0, str(bounds)
    assert all(op.result >= 0 for op in ops if op.f == "read" and op.kind == "ok")
    # exact accounting: every replica agrees, never below zero, and the stock went down by
    # the confirmed decrements plus some of the indeterminate ones
    assert len(set(finals)) == 1, finals
    final = finals[0]
    assert final >= 0
    assert STOCK - confirmed - maybe <= final <= STOCK - confirmed
    assert fleet.faults.crashes >= 1 and fleet.faults.cuts >= 1


# ---------------------------------------------------------------------------------------
# The fault tools these tests rely on
# ---------------------------------------------------------------------------------------
def test_a_cut_link_refuses_calls_sends_nothing_and_holds_readers_without_losing_records() -> None:
    async def scenario() -> None:
        shared = MemoryLog()
        link = CuttableLog(shared, name="edge")
        assert isinstance(link, Log)
        assert await link.append([b"a"]) == 0
        got: list[tuple[int, bytes]] = []

        async def follow() -> None:
            async for entry in link.read(0, follow=True):
                got.append((entry.position, entry.payload))

        reader = asyncio.ensure_future(follow())
        await until(lambda: len(got) == 1)
        link.cut()
        for call in (link.append([b"x"]), link.end(), link.sync(), link.truncate_before(1)):
            try:
                await call
            except LogCut:
                pass
            else:
                raise AssertionError("a cut link must refuse")
        assert link.refused == 4 and len(shared) == 1, "a refused append sends nothing"
        await shared.append([b"b", b"c"])  # other replicas keep using the shared log
        await asyncio.sleep(0.05)
        assert got == [(0, b"a")], "a cut reader sees nothing new"
        link.restore()
        await until(lambda: len(got) == 3)
        assert got == [(0, b"a"), (1, b"b"), (2, b"c")], "nothing lost, nothing reordered"
        assert await link.end() == 3
        # closing the link ends its follower although the shared log stays open
        await link.close()
        await asyncio.wait_for(reader, 5)
        assert not shared.closed

    run(scenario())


def test_a_link_forwards_what_replica_open_looks_for_so_heartbeats_and_scope_work(tmp_path: Path) -> None:
    async def scenario() -> None:
        shared = MemoryLog(regions={"eu"})
        links = [CuttableLog(shared, name=n) for n in ("a", "b")]
        assert links[0].control is shared.control and links[0].regions == frozenset({"eu"})
        a, b = [await Replica.open(log=link, schema=SCHEMA, name=n, region="eu", heartbeat_interval=0.05)
                for link, n in zip(links, ("a", "b"))]
        try:
            assert a.scope == frozenset({"eu"})
            await until(lambda: {"a", "b"} <= a.membership.members() and {"a", "b"} <= b.membership.members())
        finally:
            for r in (a, b):
                await r.close()
            for link in links:
                await link.close()

        # LocalLog: one handle per replica; the control channel is found through ``path``
        handles = [CuttableLog(await LocalLog.open(tmp_path / "log"), close_inner=True, name=n) for n in "cd"]
        assert handles[0].path == tmp_path / "log" and handles[0].control is None
        c, d = [await Replica.open(tmp_path / n, log=link, schema=SCHEMA, name=n, heartbeat_interval=0.05)
                for link, n in zip(handles, "cd")]
        try:
            await until(lambda: {"c", "d"} <= c.membership.members())
            assert await c.compare_and_set("limit", KEY, None, 1)
            assert await d.read("limit", KEY) == 1
        finally:
            for r in (c, d):
                await r.close()
            for link in handles:
                await link.close()
        assert all(link.inner.closed for link in handles)  # type: ignore[attr-defined]

    run(scenario())


def test_a_crash_fails_the_call_in_flight_and_a_restart_recovers_from_the_log() -> None:
    async def scenario() -> None:
        shared = MemoryLog()
        link = CuttableLog(shared, name="a")
        a = await Replica.open(log=link, schema=SCHEMA, name="a", control=False)
        b = await Replica.open(log=shared, schema=SCHEMA, name="b", control=False)
        assert await a.compare_and_set("limit", KEY, None, 1)
        call = asyncio.ensure_future(a.compare_and_set("limit", KEY, 1, 2))
        await asyncio.sleep(0)  # the call is under way
        await crash(a)
        await link.close()  # waits for what the link had already sent
        try:
            await call
        except Unavailable:
            pass
        else:
            raise AssertionError("a call in flight at a crash has an unknown outcome")
        # restart under the same identity: the state comes back from the log, and
        # whatever happened to the call is the same at every replica
        a2 = await Replica.open(log=CuttableLog(shared), schema=SCHEMA, identity=a.identity, control=False)
        await b.sync_to_end()
        assert a2.value("limit", KEY) == b.value("limit", KEY) in (1, 2)
        current = a2.value("limit", KEY)
        assert await a2.compare_and_set("limit", KEY, current, 3)
        await b.sync_to_end()
        assert b.value("limit", KEY) == 3
        for r in (a2, b):
            await r.close()
        await a2.log.close()

    run(scenario())
