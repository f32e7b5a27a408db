"""What each consistency level costs: latency and throughput relative to ``LOCAL``.

Per backend, three replicas run in one process with their real background tasks (apply
loop and heartbeats, ``follow=True``, ``heartbeat_interval`` 50 ms):

* MemoryLog: the three share one ``MemoryLog``; heartbeats travel through its in-process
  hub (``log.control``);
* LocalLog: each replica opens its own ``LocalLog`` handle (``fsync="group"``) on one
  shared directory, as processes of one host would; heartbeats are files in
  ``<dir>/control`` (``DirectoryControl``, polled every 5 ms), and appends by another
  handle are noticed by polling (1 ms backing off to 10 ms).

One LWW field per level (``Tunable(write=X, read=LOCAL)``, ``Tunable(write=LOCAL,
read=X)``, ``Strong()`` for ``SEQUENCED`` / ``LINEARIZABLE``). Every operation is issued at
replica ``r0``:

* latency: one client, ``n`` sequential operations, each timed (p50 and p99);
* throughput: ``CLIENTS`` concurrent clients (asyncio tasks, one key each) for a fixed
  time, repeated; the median ops/s is reported.

Writes are ``await replica.update(...)`` (``compare_and_set`` for the conditional row);
reads are ``await replica.read(...)`` (``session.read`` for ``SESSION``) while the cluster
is otherwise idle, so they show what the level itself costs, not catching up with a
backlog. Ratios compare each row with ``LOCAL`` of the same backend, in the same run.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._harness import fmt_rate, machine, progress, table

HEARTBEAT = 0.05  # seconds between heartbeats (prompt ones come on top)
REPLICAS = 3
CLIENTS = 8

# an operation: (client index, iteration) -> awaitable; returns False when it did not do
# what was asked (a compare_and_set whose condition failed)
Op = Callable[[int, int], Awaitable[Any]]


@dataclass
class Row:
    kind: str  # "write" | "read"
    level: str
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    errors: int = 0

    def pct(self, q: int) -> float:
        """The q-th percentile of the latencies (seconds)."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def _schema() -> list[Any]:
    from crdtsync import ACKS, ALL, LOCAL, LOG, MAX_STALENESS, QUORUM, Feature, LWWRegister, Strong, Tunable

    return [
        Feature("local", LWWRegister, policy=Tunable(write=LOCAL, read=LOCAL)),
        Feature("log", LWWRegister, policy=Tunable(write=LOG, read=LOCAL)),
        Feature("acks2", LWWRegister, policy=Tunable(write=ACKS(2), read=LOCAL)),
        Feature("quorum", LWWRegister, policy=Tunable(write=QUORUM(), read=LOCAL)),
        Feature("all", LWWRegister, policy=Tunable(write=ALL(), read=LOCAL)),
        Feature("stale", LWWRegister, policy=Tunable(write=LOCAL, read=MAX_STALENESS(5))),
        Feature("qread", LWWRegister, policy=Tunable(write=LOCAL, read=QUORUM())),
        Feature("strong", LWWRegister, policy=Strong()),
    ]


async def _open_cluster(backend: str, tmp: Path) -> tuple[list[Any], list[Any]]:
    """Three following replicas on one backend; returns (replicas, logs to close)."""
    from crdtsync import LocalLog, MemoryLog, Replica

    logs: list[Any]
    if backend == "MemoryLog":
        logs = [MemoryLog()] * REPLICAS
    else:
        d = tmp / "log"
        logs = [await LocalLog.open(d, fsync="group") for _ in range(REPLICAS)]
    replicas = [
        await Replica.open(schema=_schema(), log=logs[i], name=f"r{i}", follow=True, heartbeat_interval=HEARTBEAT)
        for i in range(REPLICAS)
    ]
    # every replica must know the whole fleet before QUORUM()/ALL() mean "of three"
    deadline = time.monotonic() + 10
    while not all(len(r.membership) == REPLICAS for r in replicas):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{backend}: replicas did not hear each other within 10 s")
        await asyncio.sleep(0.01)
    return replicas, list({id(lg): lg for lg in logs}.values())


async def _close_cluster(replicas: list[Any], logs: list[Any]) -> None:
    for r in replicas:
        await r.close()
    for lg in logs:
        await lg.close()


async def _ops(r: Any) -> list[tuple[str, str, Op]]:
    """(kind, level label, operation) for every row, with the keys the ops need seeded."""
    keys = [f"k{c}" for c in range(CLIENTS + 1)]  # client CLIENTS is the latency client
    cas_keys = [f"cas{c}" for c in range(CLIENTS + 1)]  # only compare_and_set writes these
    for k in keys:
        for fname in ("local", "stale", "qread"):
            await r.update(fname, k, "set", 0)
        await r.update("strong", k, "set", 0)
    for k in cas_keys:
        await r.update("strong", k, "set", 0)
    sessions = []
    for k in keys:
        s = r.session()
        await s.update("local", k, "set", 0)  # the token holds a write of this client
        sessions.append(s)
    cas_value = dict.fromkeys(cas_keys, 0)

    def upd(fname: str) -> Op:
        return lambda c, i: r.update(fname, keys[c], "set", i)

    async def cas(c: int, i: int) -> bool:
        k = cas_keys[c]
        ok: bool = await r.compare_and_set("strong", k, cas_value[k], cas_value[k] + 1)
        cas_value[k] = r.value("strong", k)  # the outcome is applied here when the call returns
        return ok

    def rd(fname: str) -> Op:
        return lambda c, i: r.read(fname, keys[c])

    return [
        ("write", "LOCAL", upd("local")),
        ("write", "LOG", upd("log")),
        ("write", "ACKS(2)", upd("acks2")),
        ("write", "QUORUM()", upd("quorum")),
        ("write", "ALL()", upd("all")),
        ("write", "SEQUENCED (update)", upd("strong")),
        ("write", "SEQUENCED (compare_and_set)", cas),
        ("read", "LOCAL", rd("local")),
        ("read", "MAX_STALENESS(5)", rd("stale")),
        ("read", "SESSION(token)", lambda c, i: sessions[c].read("local", keys[c])),
        ("read", "QUORUM()", rd("qread")),
        ("read", "LINEARIZABLE", rd("strong")),
    ]


async def _call(op: Op, c: int, i: int, row: Row) -> None:
    from crdtsync.errors import StaleRead, Unavailable

    try:
        if await op(c, i) is not False:
            return
    except (Unavailable, StaleRead):
        pass
    row.errors += 1
    # a level that fails fast raises without awaiting anything: let the background tasks
    # (heartbeats) run, or a client retrying in a loop would starve them
    await asyncio.sleep(0)


async def _latency(op: Op, row: Row, n: int, cap_s: float) -> None:
    for i in range(min(20, n)):  # warm up
        await _call(op, CLIENTS, i, row)
    row.errors = 0
    gc.collect()
    stop = time.perf_counter() + cap_s
    for i in range(n):
        await asyncio.sleep(0)  # between requests the loop serves the background tasks
        t = time.perf_counter()
        await _call(op, CLIENTS, i, row)
        row.latencies.append(time.perf_counter() - t)
        if t > stop and len(row.latencies) >= 100:
            break


async def _throughput(op: Op, row: Row, seconds: float, replicas: list[Any]) -> None:
    """Ops/s of ``CLIENTS`` concurrent clients; the clock stops when every replica has
    applied every write (the peers share this process: a level that returns before they
    apply must not leave their work for the next measurement)."""
    gc.collect()
    done = [0] * CLIENTS
    stop = time.perf_counter() + seconds

    async def client(c: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            # a request that completes without a real await (LOCAL on MemoryLog) would
            # otherwise keep the loop: yield as a server would between requests
            await asyncio.sleep(0)
            await _call(op, c, i, row)
            i += 1
        done[c] = i

    t = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    await asyncio.wait_for(asyncio.gather(*(r.sync() for r in replicas)), 60)
    row.rates.append(sum(done) / (time.perf_counter() - t))


async def _settle(replicas: list[Any]) -> None:
    """Wait (untimed) until every replica applied the whole log and heard every peer since.

    Replicas that fell behind during a throughput run catch up here, so one row's backlog
    is not charged to the next row, and ack levels do not fail fast on peers whose last
    heartbeat is older than the liveness window only because the loop was busy.
    """
    await asyncio.wait_for(asyncio.gather(*(r.sync() for r in replicas)), 60)
    since = replicas[0].now_ms()
    deadline = time.monotonic() + 10
    while not all(
        all(hb.wall_ms > since for hb in r.membership) and len(r.membership) == REPLICAS for r in replicas
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("replicas did not exchange heartbeats within 10 s")
        await asyncio.sleep(HEARTBEAT / 5)


async def _backend(backend: str, quick: bool, tmp: Path) -> list[Row]:
    n = 200 if quick else 1000
    cap_s = 1.0 if quick else 5.0
    seconds, repeat = (0.3, 3) if quick else (1.0, 5)
    replicas, logs = await _open_cluster(backend, tmp)
    rows = []
    try:
        for kind, level, op in await _ops(replicas[0]):
            row = Row(kind, level)
            await _settle(replicas)
            await _latency(op, row, n, cap_s)
            for _ in range(repeat):
                await _settle(replicas)
                await _throughput(op, row, seconds, replicas)
            progress(f"  {backend} {kind} {level}: p50 {row.pct(50) * 1e3:.2f} ms, "
                     f"p99 {row.pct(99) * 1e3:.2f} ms, {fmt_rate(row.rate)} ops/s, {row.errors} errors")
            rows.append(row)
    finally:
        await _close_cluster(replicas, logs)
    return rows


def _ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"


def _report(backend: str, rows: list[Row]) -> tuple[str, list[str]]:
    base = {kind: next(r for r in rows if r.kind == kind and r.level == "LOCAL") for kind in ("write", "read")}
    out = []
    for r in rows:
        b = base[r.kind]
        out.append([
            f"{r.kind} {r.level}", _ms(r.pct(50)), _ms(r.pct(99)), f"{r.pct(50) / b.pct(50):.1f}x",
            fmt_rate(r.rate) + " ops/s", f"{r.rate / b.rate:.3f}x", str(r.errors),
        ])
    flags = []
    for r in rows:
        if r.errors:
            flags.append(f"{backend}: {r.kind} {r.level} had {r.errors} failed operations (Unavailable, "
                         "StaleRead or a failed compare_and_set)")
        if r.level != "LOCAL" and r.pct(50) >= HEARTBEAT / 2:
            flags.append(f"{backend}: {r.kind} {r.level} p50 {_ms(r.pct(50))} is of the order of the "
                         f"heartbeat interval ({HEARTBEAT * 1e3:.0f} ms): prompt heartbeats are not working")
    return table(["operation", "latency p50", "p99", "p50 vs LOCAL", f"throughput, {CLIENTS} clients",
                  "vs LOCAL", "failed"], out), flags


def run(quick: bool = False) -> str:
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="crdtsync-bench-policy-"))
    results: dict[str, list[Row]] = {}
    try:
        for backend in ("MemoryLog", "LocalLog"):
            progress(f"policy: {backend}, {REPLICAS} replicas, {CLIENTS} clients")
            results[backend] = asyncio.run(_backend(backend, quick, tmp / backend))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"Run as part of `python -m benchmarks{' --quick' if quick else ''}`; alone: "
        f"`python -m benchmarks --only policy{' --quick' if quick else ''}` "
        f"({time.strftime('%Y-%m-%d')}, {(time.time() - started) / 60:.1f} min).",
        "",
        f"Machine: {machine()}.",
        "",
        f"{REPLICAS} replicas in one process with their background apply loops and heartbeats "
        f"(every {HEARTBEAT * 1e3:.0f} ms, and promptly after applying remote events or when pinged). "
        "MemoryLog: one shared log, heartbeats through its in-process hub. LocalLog: one handle per "
        "replica on one directory (fsync group), heartbeats as files in `<dir>/control` "
        "(DirectoryControl, polled every 5 ms). Every operation goes to one replica; latency is one "
        f"client issuing operations one after another, throughput is {CLIENTS} concurrent clients, "
        "the clock stopping when every replica has applied every write (median of repeated runs). Reads run on an otherwise idle cluster. Ratios compare with LOCAL "
        "of the same kind (write or read) on the same backend, in the same run.",
    ]
    flags: list[str] = []
    for backend, rows in results.items():
        n = len(rows[0].latencies)
        lines += ["", f"### {backend} ({n:,} sequential ops per row)", ""]
        text, f = _report(backend, rows)
        lines.append(text)
        flags += f
    lines += ["", "### What the numbers say", ""]
    lines += _interpret(results)
    if flags:
        lines += ["", "Flagged in this run:", ""]
        lines += [f"- {f}" for f in flags]
    return "\n".join(lines)


def _interpret(results: dict[str, list[Row]]) -> list[str]:
    def p50(backend: str, kind: str, level: str) -> str:
        return _ms(next(r for r in results[backend] if r.kind == kind and r.level == level).pct(50))

    m, lo = "MemoryLog", "LocalLog"
    acks = [r.pct(50) for rows in results.values() for r in rows if r.kind == "write"
            and r.level in ("ACKS(2)", "QUORUM()", "ALL()")]
    prompt = (f"every ack level's p50 is below half the {HEARTBEAT * 1e3:.0f} ms heartbeat interval, so "
              "acknowledgements come from prompt heartbeats, not the periodic ones"
              if max(acks) < HEARTBEAT / 2 else
              f"some ack level's p50 reaches half the {HEARTBEAT * 1e3:.0f} ms heartbeat interval: "
              "acknowledgements are waiting for periodic heartbeats (see the flags below)")
    return [
        f"- **Ack levels** (ACKS(2), QUORUM(), ALL()) cost one log delivery to the peers plus one heartbeat "
        f"back: QUORUM() p50 {p50(m, 'write', 'QUORUM()')} on MemoryLog, {p50(lo, 'write', 'QUORUM()')} on "
        f"LocalLog; {prompt}. On LocalLog both hops are polled (a peer's handle notices another handle's "
        "append within 1-10 ms; heartbeat files are read every 5 ms), and that is most of the cost.",
        f"- **SEQUENCED** is one append plus the writer applying its own record, no peer is waited for: "
        f"{p50(m, 'write', 'SEQUENCED (update)')} on MemoryLog, {p50(lo, 'write', 'SEQUENCED (update)')} on "
        f"LocalLog; compare_and_set costs about the same ({p50(m, 'write', 'SEQUENCED (compare_and_set)')} / "
        f"{p50(lo, 'write', 'SEQUENCED (compare_and_set)')}).",
        f"- **LOG** adds a log sync to LOCAL ({p50(lo, 'write', 'LOG')} vs {p50(lo, 'write', 'LOCAL')} on "
        "LocalLog with fsync group).",
        "- **Reads**: MAX_STALENESS and SESSION are checks against heartbeats and the context already "
        f"held, within a small factor of LOCAL. QUORUM() reads ping the group and wait for fresh answers "
        f"({p50(m, 'read', 'QUORUM()')} on MemoryLog, {p50(lo, 'read', 'QUORUM()')} on LocalLog: a heartbeat "
        "file written, polled, answered, polled). LINEARIZABLE asks the log for its end and waits to apply "
        f"up to it ({p50(m, 'read', 'LINEARIZABLE')} / {p50(lo, 'read', 'LINEARIZABLE')} with nothing new "
        "to apply).",
        "- **Throughput on LocalLog** is bounded by fsync for LOCAL and LOG (8 concurrent writers share "
        "group commits), and by polling for every level that waits on peers or on the log (a handle "
        "notices another handle's append within 1-10 ms; heartbeat files are read every 5 ms). MemoryLog "
        "shows the cost of the levels themselves.",
    ]
