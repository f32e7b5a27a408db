"""Acceptance (issue 8, defect 2): a writer's clock jumps +1 h and back, in real processes.

Three OS processes replicate through one LocalLog directory and its ``control/``
heartbeats: a writer and two replicas. The writer's HLC reads a wall clock the test
moves with signals (SIGUSR1: +1 h, SIGUSR2: back to the host's time; its monotonic
clock, like a real host's, does not jump). Throughout, the writer writes at LOCAL
(``await replica.update(...)``) one ORSet element per write and records which writes were
acknowledged and which raised. Before the fix, peers refused every event stamped an hour
ahead (those of the jump and, since an HLC never goes back, those after it) and burned
their dots: acknowledged writes lost for good.

Asserted: every acknowledged element is in every process's final state (0 lost), the
three converge (same digest and context), a write is refused only with
``crdtsync.errors.ClockSkew``, and the writer counted the skew (``stats.clock_skew > 0``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PROC = textwrap.dedent("""
    import asyncio, collections, json, os, signal, sys, time
    from pathlib import Path
    from crdtsync import Feature, ORSet, Replica
    from crdtsync.clock import HLC, Context
    from crdtsync.errors import CrdtSyncError
    from crdtsync.log.local import LocalLog

    OFFSET = [0]  # ms added to this host's wall clock (the writer's jump)
    PHASE = ["before"]

    def wall_ms():
        return time.time_ns() // 1_000_000 + OFFSET[0]

    def jump(ms, phase):
        OFFSET[0] = ms
        PHASE[0] = phase

    async def main(role, root, name):
        root = Path(root)
        log = await LocalLog.open(root / "log")
        hlc = HLC(clock=wall_ms) if role == "writer" else None
        r = await Replica.open(root / name, schema=[Feature("items", ORSet)], log=log, name=name,
                               hlc=hlc, heartbeat_interval=0.1)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, jump, 3_600_000, "jumped")
        loop.add_signal_handler(signal.SIGUSR2, jump, 0, "after")
        print(json.dumps({"ready": name}), flush=True)
        out = {"name": name}
        if role == "writer":
            acked, refused, unexpected = [], collections.Counter(), []
            per_phase = collections.Counter()
            i = 0
            while not (root / "stop").exists():
                i += 1
                phase, elem = PHASE[0], f"e{i}"
                try:
                    await r.update("items", "k", "add", elem)
                except CrdtSyncError as exc:
                    refused[type(exc).__name__] += 1
                    per_phase[phase + " refused"] += 1
                except Exception as exc:  # a bug: reported to the test, which fails on it
                    unexpected.append(f"{type(exc).__name__}: {exc}")
                else:
                    acked.append(elem)
                    per_phase[phase + " acknowledged"] += 1
                await asyncio.sleep(0.02)
            await r.flush()
            (root / "target.tmp").write_bytes(r.context.encode())
            os.replace(root / "target.tmp", root / "target")
            out.update(acked=acked, refused=dict(refused), unexpected=unexpected, per_phase=dict(per_phase),
                       clock_skew=getattr(r.stats, "clock_skew", None))
        while not (root / "target").exists():
            await asyncio.sleep(0.05)
        target = Context.decode((root / "target").read_bytes())
        await r.sync(timeout=10)
        deadline = time.monotonic() + 15  # a wait for convergence, not a timing assertion
        while not (target <= r.context) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await r.sync(timeout=10)
        out.update(items=sorted(r.value("items", "k")), digest=r.digest().hex(), context=repr(r.context),
                   rejected=dict(r.stats.events_rejected))
        print(json.dumps(out), flush=True)
        await r.close()
        await log.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
""")


def _spawn(role: str, root: Path, name: str) -> subprocess.Popen[str]:
    # stderr to a file: nobody reads a pipe while the test paces the phases
    with open(root / f"{name}.stderr", "w") as err:
        return subprocess.Popen([sys.executable, "-c", PROC, role, str(root), name],
                                stdout=subprocess.PIPE, stderr=err, text=True)


def _stderr(root: Path, name: str) -> str:
    return (root / f"{name}.stderr").read_text()[-3000:]


def test_a_clock_jump_loses_no_acknowledged_write_and_the_writer_reports_the_skew(tmp_path: Path) -> None:
    procs = {"r1": _spawn("replica", tmp_path, "r1"), "r2": _spawn("replica", tmp_path, "r2")}
    procs["w"] = _spawn("writer", tmp_path, "w")
    try:
        for name, p in procs.items():
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line and json.loads(line) == {"ready": name}, _stderr(tmp_path, name)
        w = procs["w"]
        time.sleep(2)  # pacing, not an assertion: writes with every clock in agreement
        w.send_signal(signal.SIGUSR1)  # the writer's clock jumps an hour ahead
        time.sleep(3)
        w.send_signal(signal.SIGUSR2)  # and is corrected
        time.sleep(3)
        (tmp_path / "stop").touch()
        results = {}
        for name, p in procs.items():
            out, _ = p.communicate(timeout=40)
            assert p.returncode == 0, f"{name} failed:\n{_stderr(tmp_path, name)}"
            results[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    writer = results["w"]
    summary = f"writer: {writer['per_phase']}, refused {writer['refused']}"
    assert writer["unexpected"] == [], writer["unexpected"]
    assert writer["per_phase"].get("before acknowledged", 0) > 0, f"the writer never wrote: {summary}"
    acked = set(writer["acked"])
    for name, res in results.items():
        missing = acked - set(res["items"])
        assert not missing, (
            f"{len(missing)} of {len(acked)} acknowledged writes are lost at {name} "
            f"(e.g. {sorted(missing, key=lambda e: int(e[1:]))[:5]}; its rejections: {res['rejected']}); {summary}"
        )
    digests = {name: res["digest"] for name, res in results.items()}
    assert len(set(digests.values())) == 1, f"not converged: {digests}; contexts {[r['context'] for r in results.values()]}"
    assert len({res["context"] for res in results.values()}) == 1
    assert set(writer["refused"]) <= {"ClockSkew"}, f"writes refused with something else than ClockSkew: {summary}"
    assert isinstance(writer["clock_skew"], int) and writer["clock_skew"] > 0, (
        f"the writer did not report its skew (stats.clock_skew = {writer['clock_skew']!r}); {summary}"
    )
