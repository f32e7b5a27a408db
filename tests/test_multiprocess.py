"""Two OS processes replicate through one LocalLog directory and converge."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
    import asyncio, json, sys
    from crdtsync import Feature, GCounter, LocalLog, ORSet, Replica

    async def main(name, log_dir, data_dir, n):
        log = await LocalLog.open(log_dir)
        schema = [Feature("count", GCounter), Feature("members", ORSet)]
        r = await Replica.open(data_dir, schema=schema, log=log, name=name)
        for i in range(n):
            r.write("count", "k", "increment", 1)
            r.write("members", "k", "add", f"{name}-{i}")
            if i % 7 == 0:
                await r.flush()
        await r.flush()
        for _ in range(600):  # up to 30 s for the other process's events
            if r.value("count", "k") == 2 * n:
                break
            await asyncio.sleep(0.05)
        await r.sync(timeout=10)
        print(json.dumps({"digest": r.digest().hex(), "count": r.value("count", "k"),
                          "members": len(r.value("members", "k")), "context": repr(r.context)}))
        await r.close()
        await log.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
""")


def test_two_processes_converge_through_one_local_log(tmp_path):
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, name, str(tmp_path / "shared-log"), str(tmp_path / name), str(n)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("proc-a", "proc-b")
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    a, b = results
    assert a["count"] == b["count"] == 2 * n
    assert a["members"] == b["members"] == 2 * n
    assert a["context"] == b["context"]
    assert a["digest"] == b["digest"]
