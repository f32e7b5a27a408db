"""``crdtsync demo --kafka``: the demo's scenario with three replica *processes* over a broker.

The parent process starts a tansu broker on a loopback port (or uses ``--bootstrap``),
then runs the cloud, on-prem and edge replicas as three child processes, each on its own
:class:`~crdtsync.adapters.kafka.KafkaLog` of one fresh namespace, and drives them
through the same three phases as the default demo (:mod:`crdtsync.demo`), one command per
line on each child's stdin, one JSON answer per line on its stdout:

1. connected: everyone writes and flushes; everyone syncs (reads every partition);
2. the edge is cut off: it neither flushes nor reads the topic (its replica does not
   follow the log), and on the control topic ``<ns>.control`` (heartbeats) it and the
   others stop hearing each other (:meth:`KafkaControl.block`); it keeps serving and writing
   locally, while the others write on, the cloud with a ``QUORUM`` write that cloud and
   on-prem acknowledge over the control topic;
3. the link returns: the edge flushes what it queued and catches up; all converge.

Over Kafka the edge's queue lives in memory (the durable edge outbox over Kafka is the
store-and-forward part of issue 10, not built yet): an edge that crashed while cut off
would lose what it had not flushed. The exit status is non-zero if the replicas did not
converge.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .demo import STATION, _Out, demo_schema, probe_values, show_table, write_purchases
from .policy import QUORUM

__all__ = ["run_kafka_demo"]

ROLES = {"cloud": "cloud", "onprem": "dc", "edge-7": "edge"}


# -- the child: one replica ---------------------------------------------------------
class _Worker:
    """One replica process: answers the parent's commands."""

    def __init__(self, replica: Any, log: Any, name: str, seed: int) -> None:
        self.r = replica
        self.log = log
        self.name = name
        self.rng = random.Random(f"{seed}/{name}")
        self.connected = True

    def _write(self, field: str, key: str, op: str, *args: Any) -> None:
        self.r.write(field, key, op, *args)

    async def phase1(self) -> None:
        if self.name == "cloud":
            self._write("segment", "cust-1", "set", "bargain-hunter")
            self._write("recs_model", "global", "configure", [["v2", 500], ["v1", 9500]], [], "v1", "recs_model")
        write_purchases(self.r, self.rng, 20)
        if self.name == "edge-7":
            self._write("defects", STATION, "increment", 2)
        await self.r.flush()

    async def cut(self) -> None:
        """The edge's uplink goes: on the control topic each side stops hearing the other."""
        control = self.r.control
        control.block(["cloud", "onprem"] if self.name == "edge-7" else ["edge-7"])

    async def phase2(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"done": "phase2"}
        if self.name == "cloud":
            self._write("checkout_v2", "global", "disable")  # the operator hits the kill switch
            # a QUORUM write: acknowledged by cloud and on-prem over the control topic
            started = time.perf_counter()
            ev = await self.r.at(write=QUORUM(), timeout=10.0).update("segment", "cust-1", "set", "premium")
            answer["quorum_ack_ms"] = round((time.perf_counter() - started) * 1000, 1)
            answer["acked"] = self.r.acknowledged(QUORUM(), ev.dot)
        if self.name == "edge-7":
            self.connected = False
            self._write("checkout_v2", "global", "enable")  # the store manager enables it for a test
            self._write("dark_mode", "global", "enable")
            self._write("segment", "cust-1", "set", "loyal-local")
            for _ in range(30):
                self._write("defects", STATION, "increment", 1)
        write_purchases(self.r, self.rng, 40)
        if self.connected:
            await self.r.flush()
        return answer

    async def reconnect(self) -> None:
        self.connected = True
        self.r.control.unblock()
        await self.r.flush()

    async def sync(self) -> None:
        if not self.connected:
            return
        await self.r.sync(timeout=30)  # the edge (not following): a catch-up

    def report(self) -> dict[str, Any]:
        return {"name": self.name, "probes": probe_values(self.r), "digest": self.r.digest().hex(),
                "context": repr(self.r.context), "pending": self.r.pending, "connected": self.connected,
                "position": repr(self.r.position), "dead_lettered": self.log.stats.dead_lettered}


async def _child(bootstrap: str, ns: str, name: str, data_dir: str, seed: int) -> None:
    from .adapters.kafka import KafkaLog  # type: ignore[import-not-found,unused-ignore]
    from .replica import Replica

    loop = asyncio.get_running_loop()
    async with KafkaLog.open(bootstrap, namespace=ns) as log:
        # the edge applies the log only when it syncs, so being cut off is real
        r = await Replica.open(data_dir, schema=demo_schema(), log=log, name=name, region="eu",
                               role=ROLES[name], follow=name != "edge-7")  # control: <ns>.control
        w = _Worker(r, log, name, seed)
        print(json.dumps({"ready": name}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.strip()
            if cmd in ("", "quit"):
                break
            if cmd == "report":
                answer = w.report()
            else:
                answer = await getattr(w, cmd)() or {"done": cmd}
            print(json.dumps(answer), flush=True)
        await r.close()


# -- the parent ----------------------------------------------------------------------
class _Fleet:
    """The three child processes and their command pipes."""

    def __init__(self, bootstrap: str, ns: str, data: Path, seed: int) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}
        for name in ROLES:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "crdtsync.demo_kafka", bootstrap, ns, name, str(data / name), str(seed)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name in ROLES:
            self._answer(name)

    def _answer(self, name: str) -> dict[str, Any]:
        proc = self.procs[name]
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {name} replica process exited with status {proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, name: str, cmd: str) -> dict[str, Any]:
        proc = self.procs[name]
        assert proc.stdin is not None
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        return self._answer(name)

    def all(self, cmd: str) -> dict[str, dict[str, Any]]:
        return {n: self.ask(n, cmd) for n in ROLES}

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write("quit\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _scenario(fleet: _Fleet, out: _Out, where: str) -> bool:
    def show(title: str) -> dict[str, dict[str, Any]]:
        reports = fleet.all("report")
        show_table(out, title, {n: [tuple(p) for p in rep["probes"]] for n, rep in reports.items()})
        return reports

    out.rule(f"1. connected: three replica processes write through Kafka ({where})")
    fleet.all("phase1")
    fleet.all("sync")
    show("after the first sync")

    out.rule("2. the edge loses its uplink; everyone keeps writing")
    fleet.all("cut")
    for name in ROLES:
        answer = fleet.ask(name, "phase2")
        if "acked" in answer:
            out.say(f"the cloud's QUORUM write segment\\[cust-1]=premium: acknowledged by cloud and on-prem "
                    f"over the control topic in {answer['quorum_ack_ms']} ms (2 of 3; the edge is unreachable)")
        time.sleep(0.002)
    fleet.all("sync")
    reports = show("while the edge is offline (values differ)")
    out.say(f"the edge holds [bold]{reports['edge-7']['pending']}[/bold] events it could not send; "
            "it keeps serving from its local state (in memory: no durable outbox over Kafka yet)")

    out.rule("3. the uplink returns: the edge sends its events and every replica converges")
    fleet.ask("edge-7", "reconnect")
    fleet.all("sync")
    fleet.all("sync")
    reports = show("after reconnecting")
    for n, rep in reports.items():
        out.say(f"  {n:7} context {rep['context']}  position {rep['position']}")
    converged = len({r["digest"] for r in reports.values()}) == 1 and len({r["context"] for r in reports.values()}) == 1
    if converged:
        out.say("[bold green]converged:[/bold green] same events seen, same state, in all three processes")
    else:
        out.say("[bold red]NOT converged[/bold red]")
    return converged


def run_kafka_demo(bootstrap: str | None = None, *, seed: int = 7) -> bool:
    """Run the three-process demo over ``bootstrap`` (or a tansu broker it starts)."""
    out = _Out()
    started = time.perf_counter()
    broker = None
    if bootstrap is None:
        from .testing.kafka import TansuBroker

        broker = TansuBroker()
        broker.start()
        bootstrap = broker.bootstrap
        where = f"a tansu broker at {bootstrap}, started for this demo"
    else:
        where = f"the broker at {bootstrap}"
    data = Path(tempfile.mkdtemp(prefix="crdtsync-kafka-demo-"))
    fleet = None
    try:
        fleet = _Fleet(bootstrap, f"demo-{uuid.uuid4().hex[:8]}", data, seed)
        return _scenario(fleet, out, where)
    finally:
        if fleet is not None:
            fleet.close()
        if broker is not None:
            broker.stop()
        shutil.rmtree(data, ignore_errors=True)
        out.say(f"demo finished in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    _, _bootstrap, _ns, _name, _data, _seed = sys.argv
    from ._loop import run as _run

    _run(_child(_bootstrap, _ns, _name, _data, int(_seed)))
