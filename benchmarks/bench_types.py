"""Per-type mutate + join throughput, bytes per delta, and the LWW memory target.

Workload per type: replica A mutates (the mutator returns a delta), joins the delta into
its own state, and replica B joins the same delta: the full cost of one replicated write
minus the log. Peers do the same job in the same run:

* pycrdt (Yjs): ``Map`` set at doc A, ``get_update(state_vector)``, ``apply_update`` at doc B;
* loro: ``Counter.increment`` / ``Map.insert`` at doc A, commit, export updates since A's
  version vector, import at doc B;
* a bare ``dict`` + msgpack baseline: set in a dict, ``packb`` the change, ``unpackb`` and set
  in a second dict (no merge semantics at all: the floor of any replicated write).

Memory: a feature holding an LWW register per entity key, 100k keys each overwritten 10
times, measured as resident-set growth in a fresh subprocess (RSS sees pycrdt's Rust heap,
tracemalloc would not), with and without the key strings themselves. crdtsync is measured
twice: the packed per-field table a Replica keeps LWW features in (``LWWTable``), and a
plain dict of register objects (what you get using the type on its own).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import msgpack

from ._harness import Result, fmt_rate, measure, progress, table

ACTOR = "cloud~0a1b2c3d"


def _ts_gen() -> Callable[[], int]:
    t = [1_700_000_000_000 << 16]

    def nxt() -> int:
        t[0] += 1 << 16
        return t[0]

    return nxt


def _crdt_workload(make: Callable[[], Any], mutate: Callable[[Any, int], Any], n: int) -> Callable[[], int]:
    def run() -> int:
        a = make()
        b = make()
        for i in range(n):
            d = mutate(a, i)
            a = a.join(d)
            b = b.join(d)
        return n

    return run


def _delta_bytes(make: Callable[[], Any], mutate: Callable[[Any, int], Any], n: int = 200) -> float:
    a = make()
    total = 0
    for i in range(n):
        d = mutate(a, i)
        total += len(d.encode())
        a = a.join(d)
    return total / n


def type_workloads() -> list[tuple[str, Callable[[], Any], Callable[[Any, int], Any], int]]:
    import numpy as np

    import crdtsync as c

    ts = _ts_gen()
    vec = np.arange(64, dtype=np.float32)
    keys = [f"k{i}" for i in range(64)]
    return [
        ("GCounter.increment", c.GCounter, lambda s, i: s.increment(1, actor=ACTOR), 20_000),
        ("PNCounter.decrement", c.PNCounter, lambda s, i: s.decrement(1, actor=ACTOR), 20_000),
        ("LWWRegister.set", c.LWWRegister, lambda s, i: s.set(i, actor=ACTOR, ts=ts()), 20_000),
        ("MVRegister.set", c.MVRegister, lambda s, i: s.set(i, actor=ACTOR), 10_000),
        ("MaxRegister.set", c.MaxRegister, lambda s, i: s.set(i, actor=ACTOR), 20_000),
        ("MinRegister.set", c.MinRegister, lambda s, i: s.set(-i, actor=ACTOR), 20_000),
        ("ORSet.add (64 elems)", c.ORSet, lambda s, i: s.add(i % 64, actor=ACTOR), 10_000),
        ("ORMap[PNCounter].update", c.ORMap, lambda s, i: s.update(keys[i % 64], "increment", 1, actor=ACTOR), 5_000),
        ("EnableWinsFlag.enable", c.EnableWinsFlag, lambda s, i: s.enable(actor=ACTOR) if i % 2 else s.disable(actor=ACTOR), 10_000),
        ("DisableWinsFlag.disable", c.DisableWinsFlag, lambda s, i: s.disable(actor=ACTOR) if i % 2 else s.enable(actor=ACTOR), 10_000),
        ("VariantFlag.kill/revive", c.VariantFlag, lambda s, i: s.kill(actor=ACTOR) if i % 2 else s.revive(actor=ACTOR), 5_000),
        ("WindowedCounter.increment", c.WindowedCounter, lambda s, i: s.increment(1, actor=ACTOR, ts=ts()), 10_000),
        ("WindowedSum.add", c.WindowedSum, lambda s, i: s.add(1.5, actor=ACTOR, ts=ts()), 10_000),
        ("Mean.observe", c.Mean, lambda s, i: s.observe(float(i), actor=ACTOR), 20_000),
        ("HyperLogLog.add", c.HyperLogLog, lambda s, i: s.add(f"user-{i}", actor=ACTOR), 10_000),
        ("VectorRegister.set (64 f32)", lambda: c.VectorRegister(dim=(64,)), lambda s, i: s.set(vec, actor=ACTOR, ts=ts()), 5_000),
        ("Document.set", c.Document, lambda s, i: s.set(("cfg", keys[i % 64]), i, actor=ACTOR), 1_000),
        ("Text.insert", c.Text, lambda s, i: s.insert(0, "x", actor=ACTOR), 1_000),
    ]


# -- peers ---------------------------------------------------------------------------

def pycrdt_map_set(n: int) -> Callable[[], int]:
    import pycrdt

    def run() -> int:
        a, b = pycrdt.Doc(), pycrdt.Doc()
        ma = a.get("m", type=pycrdt.Map)
        b.get("m", type=pycrdt.Map)
        for i in range(n):
            sv = a.get_state()
            ma[f"k{i % 64}"] = i
            b.apply_update(a.get_update(sv))
        return n

    return run


def loro_counter_increment(n: int) -> Callable[[], int]:
    import loro

    def run() -> int:
        a, b = loro.LoroDoc(), loro.LoroDoc()
        ctr = a.get_counter("c")
        for _ in range(n):
            vv = a.oplog_vv
            ctr.increment(1)
            a.commit()
            b.import_(a.export(loro.ExportMode.Updates(vv)))
        return n

    return run


def loro_map_insert(n: int) -> Callable[[], int]:
    import loro

    def run() -> int:
        a, b = loro.LoroDoc(), loro.LoroDoc()
        m = a.get_map("m")
        for i in range(n):
            vv = a.oplog_vv
            m.insert(f"k{i % 64}", i)
            a.commit()
            b.import_(a.export(loro.ExportMode.Updates(vv)))
        return n

    return run


def dict_msgpack(n: int) -> Callable[[], int]:
    def run() -> int:
        a: dict[str, int] = {}
        b: dict[str, int] = {}
        for i in range(n):
            k = f"k{i % 64}"
            a[k] = i
            k2, v2 = msgpack.unpackb(msgpack.packb((k, i)))
            b[k2] = v2
        return n

    return run


def crdtsync_lww_map(n: int) -> Callable[[], int]:
    """LWW registers in a dict keyed like the peers' maps (64 keys)."""
    from crdtsync import LWWRegister

    def run() -> int:
        ts = _ts_gen()
        a: dict[str, LWWRegister] = {}
        b: dict[str, LWWRegister] = {}
        empty = LWWRegister()
        for i in range(n):
            k = f"k{i % 64}"
            cur = a.get(k, empty)
            d = cur.set(i, actor=ACTOR, ts=ts())
            a[k] = cur.join(d)
            b[k] = b.get(k, empty).join(d)
        return n

    return run


def crdtsync_counter(n: int) -> Callable[[], int]:
    from crdtsync import GCounter

    return _crdt_workload(GCounter, lambda s, i: s.increment(1, actor=ACTOR), n)


# -- memory ---------------------------------------------------------------------------

_MEM_SCRIPT = textwrap.dedent("""
    import gc, json, sys
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    which, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    before_keys = rss()
    keys = [f"user-{i:07d}" for i in range(n)]
    gc.collect()
    base = rss()
    if which in ("crdtsync", "crdtsync-objects"):
        from crdtsync import LWWRegister
        from crdtsync._tables import LWWTable
        empty = LWWRegister()
        tbl = LWWTable() if which == "crdtsync" else {}
        ts = 1_700_000_000_000 << 16
        for r in range(rounds):
            for k in keys:
                ts += 1
                cur = tbl.get(k, empty)
                tbl[k] = cur.join(cur.set(r * 1.5, actor="cloud~0a1b2c3d", ts=ts))
    elif which == "pycrdt":
        import pycrdt
        doc = pycrdt.Doc()
        m = doc.get("m", type=pycrdt.Map)
        for r in range(rounds):
            with doc.transaction():
                for k in keys:
                    m[k] = r * 1.5
    elif which == "dict":
        tbl = {}
        for r in range(rounds):
            for k in keys:
                tbl[k] = r * 1.5
    gc.collect()
    after = rss()
    print(json.dumps({"with_keys": (after - before_keys) / n, "state_only": (after - base) / n}))
""")


def memory_lww(n: int = 100_000, rounds: int = 10) -> dict[str, dict[str, float]]:
    """Bytes per key of an LWW feature, measured in fresh subprocesses (imports preloaded)."""
    out = {}
    for which in ("crdtsync", "crdtsync-objects", "pycrdt", "dict"):
        pre = "import pycrdt" if which == "pycrdt" else "import crdtsync" if which.startswith("crdtsync") else ""
        script = pre + "\n" + _MEM_SCRIPT
        res = subprocess.run([sys.executable, "-c", script, which, str(n), str(rounds)],
                             capture_output=True, text=True, check=True)
        out[which] = json.loads(res.stdout)
    return out


def memory_growth(n: int = 100_000) -> dict[str, float]:
    """Does the LWW feature grow with more overwrites? bytes/key after 10 and after 30 rounds."""
    r10 = memory_lww(n, 10)
    r30 = memory_lww(n, 30)
    return {
        "crdtsync_10": r10["crdtsync"]["state_only"], "crdtsync_30": r30["crdtsync"]["state_only"],
        "pycrdt_10": r10["pycrdt"]["state_only"], "pycrdt_30": r30["pycrdt"]["state_only"],
    }


# -- report ---------------------------------------------------------------------------

def run(quick: bool = False) -> str:
    scale = 5 if quick else 1
    repeat = 3 if quick else 5
    lines = []

    progress("types: per-type mutate + join")
    rows = []
    for name, make, mutate, n in type_workloads():
        n = max(200, n // scale)
        r = measure(name, _crdt_workload(make, mutate, n), repeat=repeat)
        rows.append([name, fmt_rate(r.ops_per_s) + " ops/s", f"{_delta_bytes(make, mutate):.0f}"])
        progress(f"  {name}: {fmt_rate(r.ops_per_s)} ops/s")
    lines.append("### Per-type mutate + join (A mutates and joins, B joins the delta)\n")
    lines.append(table(["type.op", "throughput (median)", "bytes per delta (msgpack)"], rows))

    progress("types: against peers")
    n = 20_000 // scale
    res: dict[str, Result] = {}
    for name, fn in [
        ("crdtsync LWWRegister (dict of 64 keys)", crdtsync_lww_map(n)),
        ("pycrdt Map set + apply_update", pycrdt_map_set(n)),
        ("loro Map insert + export/import", loro_map_insert(n)),
        ("crdtsync GCounter increment + join", crdtsync_counter(n)),
        ("loro Counter increment + export/import", loro_counter_increment(n)),
        ("dict + msgpack baseline", dict_msgpack(n)),
    ]:
        res[name] = measure(name, fn, repeat=repeat)
        progress(f"  {name}: {fmt_rate(res[name].ops_per_s)} ops/s")
    lww = res["crdtsync LWWRegister (dict of 64 keys)"].ops_per_s
    ctr = res["crdtsync GCounter increment + join"].ops_per_s
    base = res["dict + msgpack baseline"].ops_per_s
    rows = []
    for name, r in res.items():
        ref = ctr if "ounter" in name else lww
        rows.append([name, fmt_rate(r.ops_per_s) + " ops/s", f"{ref / r.ops_per_s:.1f}x" if r.ops_per_s != ref else "1.0x"])
    lines.append("\n### Replicated write without a log, against peers (same run)\n")
    lines.append(table(["workload", "throughput (median)", "crdtsync speed-up vs this row"], rows))
    lines.append(
        f"\nLWW set + join vs pycrdt Map: **{lww / res['pycrdt Map set + apply_update'].ops_per_s:.1f}x** "
        "(target >= 3x); counter increment + join vs loro Counter: "
        f"**{ctr / res['loro Counter increment + export/import'].ops_per_s:.1f}x** (target >= 5x); "
        f"LWW vs the bare dict + msgpack floor: {lww / base:.2f}x."
    )

    progress("types: LWW memory (subprocesses)")
    n_keys = 20_000 if quick else 100_000
    mem = memory_lww(n_keys, 10)
    grow = memory_growth(n_keys) if not quick else None
    labels = {
        "crdtsync": "crdtsync replica table (LWWTable, what a Replica uses for LWW fields)",
        "crdtsync-objects": "crdtsync, dict of LWWRegister objects",
        "pycrdt": "pycrdt Map (one Doc)",
        "dict": "plain dict of floats (no CRDT metadata: the floor)",
    }
    rows = [
        [labels[k], f"{v['state_only']:.0f}", f"{v['with_keys']:.0f}"] for k, v in mem.items()
    ]
    lines.append(f"\n### Memory: an LWW feature over {n_keys:,} entity keys, each overwritten 10 times\n")
    lines.append(table(["store", "bytes/key (state, keys preallocated)", "bytes/key (incl. key strings)"], rows))
    if grow is not None:
        lines.append(
            f"\nGrowth with more overwrites (bytes/key, state only): crdtsync {grow['crdtsync_10']:.0f} after 10 "
            f"rounds, {grow['crdtsync_30']:.0f} after 30; pycrdt {grow['pycrdt_10']:.0f} after 10, "
            f"{grow['pycrdt_30']:.0f} after 30 (Yjs keeps a tombstone per overwrite)."
        )
    return "\n".join(lines)
