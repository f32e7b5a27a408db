"""Edge store-and-forward over the real broker (issue 10, item 5 and its acceptance point).

An edge process, cut off from the broker (its forwarder points at a port nothing listens
on), writes 100k events (counter increments and set adds) into its LocalLog while two
replica processes on the KafkaLog keep writing. The link comes back (the address file
now names the broker): the forwarder reconnects, and the edge is SIGKILLed twice while it
drains its outbox, restarted each time. All three converge; the set-full and
counter-bounds checkers over every write and the final reads find nothing lost and
nothing duplicated. The edge then restarts with the link cut again and serves the same
state from its local log alone.

One process test here, plus the forwarder on a KafkaLog in-process: records of mixed keys
land on their own partitions, and the received position is a vector that survives a
restart through the state file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crdtsync.adapters.kafka import KafkaLog

from crdtsync import Forwarder, LocalLog
from crdtsync.log._protocol import VectorPosition
from crdtsync.testing.checkers import History, check_counter_bounds, check_set_full
from crdtsync.testing.kafka import free_port

from ._edge_worker import ADD_EVERY
from ._util import arun, batch_record, namespace

ROOT = Path(__file__).resolve().parents[2]
EDGE_INCREMENTS = 75_000  # and a set add for every third: 100k events
EDGE_EVENTS = EDGE_INCREMENTS + EDGE_INCREMENTS // ADD_EVERY


def test_forwarder_routes_each_record_to_its_partition_and_resumes_at_its_vector(crdtsync_kafka: str,
                                                                                  tmp_path: Path) -> None:
    async def body() -> None:
        ns = namespace("fwd")
        local = await LocalLog.open(tmp_path / "edge", fsync="never")
        for s in range(1, 61):  # sixty records of the edge, on thirty keys
            await local.append([batch_record("edge~1", s, key=f"k{s % 30}")])
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=3) as kl:
            for s in range(1, 11):
                await kl.append([batch_record("cloud~1", s, key=f"c{s}")])
            fwd = Forwarder(local, kl, origin="edge~1", state_path=tmp_path / "f.json", batch=8)
            report = await fwd.run_once()
            assert (report.shipped, report.received) == (60, 10)
            assert fwd.stats.appends > 60 // 8 + 1, "batches were split over partitions"
            placed = {}
            async for e in kl.read(0):
                assert isinstance(e.position, VectorPosition)
                placed[e.payload] = e.position.partition
            for s in range(1, 61):
                rec = batch_record("edge~1", s, key=f"k{s % 30}")
                assert placed[rec] == kl.partition_of([rec]), "every record on the partition the log routes it to"
            assert len(set(placed.values())) == 3
            saved = json.loads((tmp_path / "f.json").read_text())
            assert saved["version"] == 2 and isinstance(saved["received"], list)
            received = fwd.received_pos
            assert isinstance(received, VectorPosition)
            for s in range(11, 16):  # more upstream; a restarted forwarder copies only those down
                await kl.append([batch_record("cloud~1", s, key=f"c{s}")])
        async with KafkaLog.open(crdtsync_kafka, namespace=ns, partitions=3) as kl2:
            again = Forwarder(local, kl2, origin="edge~1", state_path=tmp_path / "f.json", batch=8)
            assert again.received_pos == received
            report = await again.run_once()
            assert (report.shipped, report.received) == (0, 5)
            down = [e.payload async for e in local.read(0)][60:]
            assert sorted(down) == sorted(batch_record("cloud~1", s, key=f"c{s}") for s in range(1, 16))
        await local.close()

    arun(body(), 60)


class _Procs:
    """The three worker processes of the store-and-forward test and their files."""

    def __init__(self, tmp: Path, bootstrap: str) -> None:
        self.tmp, self.bootstrap = tmp, bootstrap
        self.ns = namespace("edge")
        self.link = tmp / "link"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.common = {"ns": self.ns, "stop": str(tmp / "stop"), "stop_writing": str(tmp / "stop_writing"),
                       "report": str(tmp / "report")}

    def config(self, name: str) -> Path:
        return self.tmp / f"{name}.cfg"

    def start(self, name: str, **cfg: Any) -> None:
        path = self.config(name)
        if cfg:
            path.write_text(json.dumps({**self.common, "name": name, "data": str(self.tmp / name),
                                        "status": str(self.tmp / f"{name}.status"),
                                        "history": str(self.tmp / f"{name}.hist"),
                                        "report_out": str(self.tmp / f"{name}.read"), **cfg}))
        out = open(self.tmp / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "tests.kafka._edge_worker", str(path)],
                                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def status(self, name: str) -> dict[str, Any] | None:
        path = self.tmp / f"{name}.status"
        return json.loads(path.read_text()) if path.exists() else None

    def fresh_status(self, name: str) -> dict[str, Any] | None:
        """The status of the process running now (a killed one's file is stale)."""
        s = self.status(name)
        return s if s is not None and s["pid"] == self.procs[name].pid else None

    def wait(self, what: str, cond: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            for name, p in self.procs.items():
                if p.poll() is not None and p.returncode != -signal.SIGKILL:
                    raise AssertionError(f"{name} exited with {p.returncode}: "
                                         f"{(self.tmp / f'{name}.out').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: " + "; ".join(
                    f"{n}={self.status(n)!r:.600}" for n in self.procs))
            time.sleep(0.02)

    def kill(self, name: str) -> None:
        p = self.procs[name]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop_all(self) -> None:
        (self.tmp / "stop").touch()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def history(self, names: list[str]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, int]:
        """(set rows, counter rows, increments, set adds) for the checkers, from every
        process's batch lines and final read."""
        set_rows: list[tuple[Any, ...]] = []
        counter_rows: list[tuple[Any, ...]] = []
        incs = 0
        for name in names:
            for line in (self.tmp / f"{name}.hist").read_text().splitlines():
                start, end, first, n = json.loads(line)
                incs += n
                for i in range(first, first + n):
                    counter_rows.append((name, "add", 1, None, start, end))
                    if i % ADD_EVERY == 0:
                        set_rows.append((name, "add", f"{name}-{i}", None, start, end))
        adds = len(set_rows)
        for name in names:
            read = json.loads((self.tmp / f"{name}.read").read_text())
            set_rows.append((f"{name}-reader", "read", None, read["set"], read["start"], read["end"]))
            counter_rows.append((f"{name}-reader", "read", None, read["hits"], read["start"], read["end"]))
        return set_rows, counter_rows, incs, adds


def test_an_edge_cut_off_writes_100k_events_drains_through_two_kills_and_converges(crdtsync_kafka: str,
                                                                                    tmp_path: Path) -> None:
    t0 = time.monotonic()
    w = _Procs(tmp_path, crdtsync_kafka)
    w.link.write_text(f"127.0.0.1:{free_port()}")  # nothing listens there: the link is cut
    try:
        for name in ("cloud-a", "cloud-b"):
            w.start(name, role="cloud", bootstrap=crdtsync_kafka, per_batch=30, pause=0.05)
        w.start("edge", role="edge", link_file=str(w.link), increments=EDGE_INCREMENTS, per_batch=250, fwd_batch=2)

        # 1. cut off: the edge writes all 100k events into its outbox, retrying the broker
        def edge_wrote() -> bool:
            s = w.fresh_status("edge")
            return bool(s and s["written"] >= EDGE_EVENTS and s["fwd"]["connect_failures"] >= 2
                        and (s["fwd"]["outbox_depth"] or 0) >= EDGE_INCREMENTS // 250)  # a record per flush at least
        w.wait("the edge's writes", edge_wrote, 40)
        s = w.fresh_status("edge")
        assert s is not None and s["fwd"]["shipped"] == 0 and not s["fwd"]["connected"]
        assert "KafkaConnectionError" in (s["fwd"]["last_error"] or "")
        depth = s["fwd"]["outbox_depth"]
        clouds_before = [w.status(n)["written"] for n in ("cloud-a", "cloud-b")]  # type: ignore[index]

        # 2. the link comes back: the forwarder reconnects and drains; SIGKILL it twice mid-drain
        w.link.write_text(crdtsync_kafka)
        for fraction in (2 / 3, 1 / 3):
            def drained_to(f: float = fraction) -> bool:
                s = w.fresh_status("edge")
                return bool(s and s["fwd"]["connected"] and s["fwd"]["outbox_depth"] is not None
                            and s["fwd"]["outbox_depth"] <= depth * f)
            w.wait(f"the edge drained to {fraction:.2f} of its outbox", drained_to, 30)
            s = w.fresh_status("edge")
            assert s is not None and s["fwd"]["outbox_depth"] > 0, f"killed mid-drain (at {fraction:.2f})"
            if fraction > 0.5:  # the first life: it failed to connect, then reconnected
                assert s["fwd"]["reconnects"] >= 1 and s["fwd"]["shipped"] > 0, s["fwd"]
            w.kill("edge")
            w.start("edge")  # same config: no more writes, the forwarder resumes from its state file
        w.wait("the edge's outbox drained", lambda: bool((s := w.fresh_status("edge")) and s["fwd"]["connected"]
                                                          and s["fwd"]["outbox_depth"] == 0), 30)
        clouds_after = [w.status(n)["written"] for n in ("cloud-a", "cloud-b")]  # type: ignore[index]
        assert all(b > a for a, b in zip(clouds_before, clouds_after)), "the others kept writing"
        (tmp_path / "stop_writing").touch()

        # 3. all three converge
        names = ["cloud-a", "cloud-b", "edge"]

        def converged() -> bool:
            got = [w.fresh_status(n) for n in names]
            return all(g is not None and not g["writing"] for g in got) and \
                len({(g["digest"], g["digest_context"], g["context"]) for g in got}) == 1  # type: ignore[index]
        w.wait("convergence", converged, 40)
        (tmp_path / "report").touch()
        w.wait("the final reads", lambda: all((tmp_path / f"{n}.read").exists() for n in names), 20)
        final = [w.fresh_status(n) for n in names]
        edge_fwd = final[2]["fwd"]  # type: ignore[index]
        w.stop_all()

        # 4. the checkers: nothing lost, nothing duplicated
        set_rows, counter_rows, incs, adds = w.history(names)
        assert incs > EDGE_INCREMENTS and adds > EDGE_INCREMENTS // ADD_EVERY
        sets = check_set_full(History.from_ops(set_rows))
        assert sets.lost_count == 0 and sets.duplicated_count == 0 and not sets.unexpected, str(sets)
        assert sets.valid and sets.stable_count == adds, str(sets)
        bounds = check_counter_bounds(History.from_ops(counter_rows))
        assert bounds.valid and bounds.reads == 3, str(bounds)
        reads = [json.loads((tmp_path / f"{n}.read").read_text())["hits"] for n in names]
        lost = [max(0, incs - v) for v in reads]
        duplicated = [max(0, v - incs) for v in reads]
        assert lost == [0, 0, 0] and duplicated == [0, 0, 0], (reads, incs)
        assert edge_fwd["shipped"] > 0  # the last life shipped the rest
        # each kill re-sends at most the batch in flight: 2 records of <= 250 + 84 events
        assert all(f["duplicates"] <= 2 * 2 * (250 + 250 // ADD_EVERY + 1) for f in final), final

        # 5. cut off again, the edge restarts and serves the converged state from its own log
        w.link.write_text(f"127.0.0.1:{free_port()}")
        (tmp_path / "stop").unlink()
        w.procs = {"edge": w.procs["edge"]}
        w.start("edge")
        w.wait("the offline edge", lambda: bool((s := w.fresh_status("edge")) and s["digest"] == final[0]["digest"]
                                                 and s["fwd"]["connect_failures"] >= 1), 20)  # type: ignore[index]
        assert not w.fresh_status("edge")["fwd"]["connected"]  # type: ignore[index]
        w.stop_all()
    finally:
        (tmp_path / "stop").touch()
        for p in w.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"store-and-forward over Kafka: {time.monotonic() - t0:.1f} s; events re-sent after the kills "
          f"(duplicates the replicas ignored): {[f['duplicates'] for f in final]}", file=sys.stderr)


def test_a_paused_broker_is_a_dead_link_and_the_service_reconnects_when_it_answers(crdtsync_tansu: Any,
                                                                                   tmp_path: Path) -> None:
    """SIGSTOP of the broker mid-drain: connections stay open and nothing answers. The
    pass times out, the service backs off and reconnects once the broker runs again, and
    every record arrives (at least once)."""
    from crdtsync.forwarder import Backoff, ForwarderService

    broker = crdtsync_tansu
    ns = namespace("paused")
    records = [batch_record("edge~1", s, key=f"k{s % 40}") for s in range(1, 401)]

    async def body() -> tuple[list[bytes], int]:
        local = await LocalLog.open(tmp_path / "edge", fsync="never")
        for r in records:
            await local.append([r])
        fwd = Forwarder(local, None, origin="edge~1", state_path=tmp_path / "f.json", batch=4, max_batches=4)

        async def open_kafka() -> KafkaLog:
            return await KafkaLog.open(broker.bootstrap, namespace=ns, partitions=3, request_timeout_ms=1500)

        svc = ForwarderService(fwd, open_kafka, interval=0.02, pass_timeout=2.0, connect_timeout=2.0,
                               backoff=Backoff(0.05, 0.3), stats_interval=0.0)
        task = asyncio.create_task(svc.run())
        loop = asyncio.get_running_loop()

        async def until(what: str, cond: Any, timeout: float) -> None:
            deadline = loop.time() + timeout
            while not cond():
                assert not task.done(), task.exception() if task.done() else None
                assert loop.time() < deadline, f"timed out waiting for {what}: {fwd.stats}"
                await asyncio.sleep(0.005)

        await until("the drain to start", lambda: fwd.stats.shipped >= 40, 20)
        broker.pause()
        try:
            shipped_at_pause = fwd.stats.shipped
            await until("the dead link", lambda: fwd.stats.link_failures >= 1, 15)
            assert fwd.stats.shipped < len(records), "paused mid-drain"
            await asyncio.sleep(0.5)  # backing off against a broker that answers nothing
        finally:
            broker.resume()
        await until("the drain to finish", lambda: fwd.stats.outbox_depth == 0 and fwd.stats.connected, 30)
        assert fwd.stats.reconnects >= 1 and fwd.stats.shipped >= len(records) - shipped_at_pause
        err = fwd.stats.last_error or ""
        assert any(e in err for e in ("TimeoutError", "RequestTimedOutError", "KafkaConnectionError")), err
        svc.stop()
        await task
        await local.close()
        async with KafkaLog.open(broker.bootstrap, namespace=ns, partitions=3) as kl:
            return [e.payload async for e in kl.read(0)], fwd.stats.link_failures

    landed, failures = arun(body(), 90)
    assert set(landed) == set(records), "every record arrived"
    resent = len(landed) - len(records)
    assert resent <= 4 * failures, f"{resent} records sent twice: more than a batch per failed pass"
    print(f"paused broker: {resent} records sent twice", file=sys.stderr)
