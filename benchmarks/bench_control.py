"""Control traffic at fleet scale: bytes read per edge and per hub, encode/decode cost.

A :class:`~crdtsync.testing.control_fleet.ControlFleet` of ``N`` edges and 3 hubs (real
replicas' control code over a modelled data plane, deterministic from its seed): the
fleet starts as one that has run a while (``HISTORY`` writers' rows in every context),
each edge writes with probability ``WRITE_RATE`` per heartbeat round, 5 % of edges lag one
round. Two join rounds (every first message is full), then ``ROUNDS`` measured rounds.

Rows compare, in the same run and on the same contexts, today's full-context heartbeats
(every replica reads every other one: the sum of their encoded sizes) with the delta
streams and hub aggregates (bytes each node actually read). "full agg" is one full
aggregate (sent every ``full_period`` rounds, on joins and on request); "edge amortised"
spreads it over its period. Encode/decode: one edge heartbeat, full format vs the delta
message it sends in a round, median of repeated timings.
"""

from __future__ import annotations

import statistics
import time

from crdtsync.control import Heartbeat
from crdtsync.control.heartbeat import HEARTBEAT_SECTIONS
from crdtsync.control.stream import StreamDecoder, StreamEncoder
from crdtsync.testing.control_fleet import ControlFleet

from ._harness import git_rev, progress, table

HUBS = 3
WRITE_RATE = 0.001
HISTORY = 200
ROUNDS = 3


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def _time(fn, repeat: int = 200) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _codec_times(fleet: ControlFleet) -> tuple[float, float, float, float]:
    """(full encode, full decode, delta encode, delta decode) seconds for one edge."""
    r = fleet.replica(fleet.edges[1])
    hb = r.heartbeat()
    full = hb.encode()
    enc = StreamEncoder("hb", "probe", 1, full_every=10**9)
    dec = StreamDecoder({"hb": HEARTBEAT_SECTIONS})
    prev = Heartbeat(hb.actor, hb.name, hb.region, hb.role, fleet._previous if fleet._previous else hb.context,
                     hb.wall_ms - 1000, hb.hlc - 1, hb.positions, hb.models, 0, {}, hb.pruned)
    first = enc.encode(prev.to_state())
    dec.decode(first)
    delta = enc.encode(hb.to_state())
    held = dec._held[("hb", "probe")]

    def delta_encode() -> None:
        e = StreamEncoder("hb", "probe", 1, full_every=10**9)
        e._last, e.seq, e._want_full = dict(prev.to_state()), 1, False
        e.encode(hb.to_state())

    def delta_decode() -> None:
        dec._held[("hb", "probe")] = held
        dec.decode(delta)

    return (_time(hb.encode), _time(lambda: Heartbeat.decode(full)), _time(delta_encode), _time(delta_decode))


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> str:
    """The section's text; ``sizes`` (edge counts) overrides the default rows."""
    if sizes is None:
        sizes = (100, 1000) if quick else (100, 1000, 10_000)
    rows = []
    codec_rows = []
    for n in sizes:
        progress(f"control: {n} edges + {HUBS} hubs")
        fleet = ControlFleet(n, HUBS, seed=1, write_rate=WRITE_RATE, lag=0.05, regions=("eu", "us"))
        fleet.seed_history(min(HISTORY, n))
        join = fleet.run(2)
        t = time.perf_counter()
        measured = fleet.run(ROUNDS)
        per_round_s = (time.perf_counter() - t) / ROUNDS
        for h in fleet.hubs:
            fleet.replica(h).heartbeats.agg_encoder.request_full()
        full_round = fleet.round()
        period = fleet.replica(fleet.hubs[0]).heartbeats.topology.full_period
        total_full = sum(len(fleet.replica(x).heartbeat().encode()) for x in fleet.nodes)
        edge_max = max(r.edge_max for r in measured)
        hub_max = max(r.hub_max for r in measured)
        rows.append([
            f"{n:,}", _kb(total_full), _kb(edge_max),
            _kb((full_round.edge_max + (period - 1) * edge_max) / period),
            _kb(full_round.edge_max), _kb(hub_max), _kb(max(r.hub_max for r in join)),
            f"{total_full / max(edge_max, 1):,.0f}x / {total_full / max(hub_max, 1):,.1f}x",
            f"{per_round_s:.2f}",
        ])
        fe, fd, de, dd = _codec_times(fleet)
        codec_rows.append([f"{n:,}", f"{len(fleet.replica(fleet.edges[1]).heartbeat().encode()):,} B",
                           f"{fe * 1e6:.0f} / {fd * 1e6:.0f} µs", f"{de * 1e6:.0f} / {dd * 1e6:.0f} µs"])
    out = [
        f"Command: `python -m benchmarks --only control` (commit `{git_rev()}`, {time.strftime('%Y-%m-%d')}; "
        "the byte columns are deterministic, the seconds move with the machine's load). \"hub join round\" "
        "is the one round in which a hub first joins every edge's full context, not a steady-state round.",
        "",
        f"{HUBS} hubs, write rate {WRITE_RATE} per edge per round, {HISTORY} writers of history "
        f"(or N if fewer), {ROUNDS} measured rounds. Budgets: 8 KB per edge, 4 MB per hub, per round.",
        "",
        table(["edges", "today: read per replica", "edge read (max)", "edge amortised", "full agg",
               "hub read (max)", "hub join round", "saving edge / hub", "sim s/round"], rows),
        "",
        "Heartbeat codec, one edge (full-format size; encode / decode):",
        "",
        table(["edges", "full heartbeat", "full encode / decode", "delta encode / decode"], codec_rows),
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(run())
