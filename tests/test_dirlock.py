"""One process per data directory (issue 8, defect 3): the second open is refused.

Two processes on one data directory were one actor twice; their seqs collided and 287
of 600 acknowledged writes vanished. Now ``Replica.open`` takes an OS lock on the
directory: a second open fails with ``DataDirLocked`` naming the holder, the lock goes
with ``close`` and with the holder's death (SIGKILL), a forked child does not keep it,
and ``crdtsync status`` still shows a running replica's directory (read-only).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crdtsync import Feature, GCounter, Replica
from crdtsync.errors import CrdtSyncError, DataDirLocked
from crdtsync.testing.faults import crash

SCHEMA = [Feature("count", GCounter)]

# Opens the replica in argv[1] as argv[2], writes argv[3] acknowledged increments, prints
# {"actor", "pid"} and then either holds the directory until killed ("hold") or closes.
HOLDER = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from crdtsync import Feature, GCounter, Replica

    async def main(data, name, n, mode):
        r = await Replica.open(data, schema=[Feature("count", GCounter)], name=name, fsync="always")
        for _ in range(n):
            await r.update("count", "k", "increment", 1)
        if mode == "fork":  # a forked child lives on without the lock
            pid = os.fork()
            if pid == 0:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)  # let the test read the parent's output to its end
                os.dup2(null, 2)
                time.sleep(60)
                os._exit(0)
            print(json.dumps({"child": pid}), flush=True)
        print(json.dumps({"actor": r.actor, "pid": os.getpid(), "count": r.value("count", "k"),
                          "top": r.context.max_seq(r.actor)}), flush=True)
        if mode == "close":
            await r.close()
            return
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
""")

# Tries to open the replica in argv[1]; prints what happened as JSON.
OPENER = textwrap.dedent("""
    import asyncio, json, sys
    from crdtsync import Feature, GCounter, Replica
    from crdtsync.errors import DataDirLocked

    async def main(data):
        try:
            r = await Replica.open(data, schema=[Feature("count", GCounter)])
        except DataDirLocked as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc), "pid": exc.pid,
                              "host": exc.host, "replica": exc.replica, "since": exc.since}))
            return
        await r.update("count", "k", "increment", 1)
        print(json.dumps({"actor": r.actor, "count": r.value("count", "k"), "next": r.context.max_seq(r.actor)}))
        await r.close()

    asyncio.run(main(sys.argv[1]))
""")


def _start_holder(data: Path, name: str, n: int, mode: str = "hold") -> tuple[subprocess.Popen[str], dict]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(data), name, str(n), mode],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    lines = [json.loads(p.stdout.readline() or "null") for _ in range(2 if mode == "fork" else 1)]
    if lines[-1] is None:
        p.kill()
        raise AssertionError(f"holder did not start: {p.communicate(timeout=10)[1]}")
    info = lines[-1]
    if mode == "fork":
        info["child"] = lines[0]["child"]
    return p, info


def _open_in_another_process(data: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", OPENER, str(data)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _kill(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=10)


def test_a_second_process_is_refused_with_the_holder_named_and_sigkill_frees_the_directory(tmp_path: Path) -> None:
    data = tmp_path / "replica"
    started = time.time()
    holder, info = _start_holder(data, "writer", 5)
    try:
        got = _open_in_another_process(data)
        assert got.get("error") == "DataDirLocked", f"the second open must be refused, it got {got}"
        assert got["pid"] == holder.pid == info["pid"]
        assert got["host"] == socket.gethostname()
        assert got["replica"] == "writer"
        assert started - 5 <= got["since"] <= time.time()
        assert f"pid {holder.pid}" in got["message"] and "'writer'" in got["message"]
    finally:
        _kill(holder)
    # the OS released the dead holder's lock: the directory opens, as the same actor,
    # and its next write continues after the holder's five (no seq reused)
    got = _open_in_another_process(data)
    assert got.get("actor") == info["actor"], got
    assert got["count"] == 6 and got["next"] == info["top"] + 1


def test_a_second_open_in_the_same_process_is_refused_until_close_or_crash(tmp_path: Path) -> None:
    async def scenario() -> None:
        data = tmp_path / "r"
        r = await Replica.open(data, schema=SCHEMA, name="a")
        with pytest.raises(DataDirLocked) as err:
            await Replica.open(data, schema=SCHEMA)
        assert isinstance(err.value, CrdtSyncError)
        assert err.value.pid == os.getpid() and err.value.replica == "a" and err.value.path == str(data)
        await r.close()
        r2 = await Replica.open(data, schema=SCHEMA)
        assert r2.actor == r.actor
        await crash(r2)  # a simulated process death releases the lock, as the OS would
        r3 = await Replica.open(data, schema=SCHEMA)
        await r3.close()

    asyncio.run(scenario())


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    async def scenario() -> None:
        data = tmp_path / "r"
        await (await Replica.open(data, schema=SCHEMA, name="a")).close()
        with pytest.raises(ValueError, match="belongs to replica 'a'"):
            await Replica.open(data, schema=SCHEMA, name="b")
        await (await Replica.open(data, schema=SCHEMA, name="a")).close()

    asyncio.run(scenario())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_does_not_keep_the_parents_lock(tmp_path: Path) -> None:
    """gunicorn --preload: workers forked from the process holding the directory must not
    hold it when that process dies (SyncReplica re-opens them in directories of their own)."""
    data = tmp_path / "replica"
    holder, info = _start_holder(data, "web", 1, mode="fork")
    try:
        assert _open_in_another_process(data).get("pid") == holder.pid, "the parent still holds it"
        _kill(holder)
        os.kill(info["child"], 0)  # the forked child lives on
        got = _open_in_another_process(data)
        assert got.get("actor") == info["actor"], f"the child kept the lock: {got}"
    finally:
        if holder.poll() is None:
            _kill(holder)
        try:
            os.kill(info["child"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_status_and_inspect_show_a_running_replica_and_compact_names_its_holder(tmp_path: Path) -> None:
    pytest.importorskip("click")
    data = tmp_path / "replica"
    env = {**os.environ, "COLUMNS": "160"}
    cli = [sys.executable, "-m", "crdtsync.cli"]
    holder, info = _start_holder(data, "svc", 3)
    try:
        before = sorted(p.relative_to(data) for p in data.rglob("*"))
        res = subprocess.run([*cli, "status", str(data)], capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        assert info["actor"] in res.stdout and f"running: yes, pid {holder.pid}" in res.stdout
        assert sorted(p.relative_to(data) for p in data.rglob("*")) == before, "status wrote into the directory"
        res = subprocess.run([*cli, "inspect", str(data), "--json", "--field", "count"], capture_output=True,
                             text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.splitlines()) == 3, "inspect shows the running replica's three writes"
        res = subprocess.run([*cli, "compact", str(data)], capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode != 0 and f"pid {holder.pid}" in res.stderr and "in use by" in res.stderr
    finally:
        _kill(holder)
    res = subprocess.run([*cli, "status", str(data)], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0 and "running: no" in res.stdout, res.stdout + res.stderr
