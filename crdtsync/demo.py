"""``crdtsync demo``: cloud, on-prem and edge replicas diverge offline and converge again.

Three replicas run in one process, each on its own LocalLog (the embedded default). The
cloud's log stands in for the fleet's shared log (Kafka in production); the on-prem and
edge replicas reach it through store-and-forward :class:`~crdtsync.forwarder.Forwarder`s.

1. Connected: every replica writes features; everything replicates.
2. The edge is cut off. All three keep writing; the cloud operator disables the
   ``checkout_v2`` kill switch while the store manager at the edge enables it. The edge
   keeps serving from its local state and queues its events in its outbox.
3. The link returns: the outbox drains, every replica applies every event, and the
   demo prints each replica's context and values and whether they converged (the exit
   status is non-zero if not).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._loop import run as run_loop
from .forwarder import Forwarder
from .replica import Replica
from .schema import Feature, Flag, Schema

__all__ = ["demo_schema", "run_demo"]

HOUR = 3_600_000
CUSTOMERS = ["cust-1", "cust-2", "cust-3"]
STATION = "line-4"


def demo_schema() -> Schema:
    from .inference.bank import bank_fields  # type: ignore[import-not-found]
    from .types.aggregates import Mean, WindowedCounter
    from .types.counters import GCounter
    from .types.flags import DisableWinsFlag, EnableWinsFlag, VariantFlag
    from .types.registers import LWWRegister

    return Schema([
        *bank_fields(),  # what the credit-limit decision reads (crdtsync.inference.bank)
        Feature("purchases_7d", lambda: WindowedCounter(bucket_ms=HOUR, buckets=168),
                description="purchases in the last 7 days (hourly buckets)"),
        Feature("basket_mean", Mean, description="mean basket value"),
        Feature("segment", LWWRegister, description="marketing segment, last writer wins"),
        Feature("defects", GCounter, description="defects seen by the inspection station"),
        Flag("checkout_v2", lambda: DisableWinsFlag(default=True),
             description="kill switch: disable wins over a concurrent enable"),
        Flag("dark_mode", EnableWinsFlag, description="opt-in: enable wins"),
        Flag("recs_model", VariantFlag, description="which recommendation model serves whom"),
    ])


class _Out:
    """Rich output when rich is installed, plain text otherwise."""

    def __init__(self) -> None:
        try:
            from rich.console import Console

            self.console: Any = Console()
        except ImportError:  # pragma: no cover - the cli extra brings rich
            self.console = None

    def rule(self, text: str) -> None:
        if self.console is not None:
            self.console.rule(f"[bold]{text}")
        else:
            print(f"\n== {text} ==")

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)
        else:
            import re

            print(re.sub(r"\[/?[a-z ]+\]", "", text))

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        if self.console is not None:
            from rich.markup import escape
            from rich.table import Table

            t = Table(title=escape(title))
            for c in columns:
                t.add_column(escape(c))
            for r in rows:
                t.add_row(*map(escape, r))
            self.console.print(t)
        else:
            print(title)
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
            print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
            for r in rows:
                print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, dict) and "killed" in v:
        return "killed" if v["killed"] else f"{len(v.get('variants') or [])} variants"
    return str(v)


def probe_values(r: Replica) -> list[tuple[str, str]]:
    """What the demo shows of one replica: (label, value) rows."""
    def flag(name: str) -> str:
        st = r.state(name, "global")
        return ("on" if st.value() else "off") + (" (conflict)" if getattr(st, "conflict", False) else "")

    return [
        ("events seen", str(len(r.context))),
        *[(f"purchases_7d[{c}]", _fmt(r.value("purchases_7d", c))) for c in CUSTOMERS],
        ("basket_mean[cust-1]", _fmt(r.value("basket_mean", "cust-1"))),
        ("segment[cust-1]", _fmt(r.value("segment", "cust-1"))),
        (f"defects[{STATION}]", _fmt(r.value("defects", STATION))),
        ("checkout_v2 (kill switch)", flag("checkout_v2")),
        ("dark_mode (opt-in)", flag("dark_mode")),
    ]


def show_table(out: _Out, title: str, values: dict[str, list[tuple[str, str]]]) -> None:
    """One row per probe, one column per replica; rows where replicas disagree get a *."""
    names = list(values)
    rows = []
    for i, (label, _) in enumerate(values[names[0]]):
        vals = [values[n][i][1] for n in names]
        mark = "" if len(set(vals)) == 1 else " *"
        rows.append([label + mark, *vals])
    out.table(title + "  (* = replicas disagree)", ["field[key]", *names], rows)


def write_purchases(r: Replica, rng: Any, n: int) -> None:
    """``n`` simulated purchases: a purchase count and a basket value per customer."""
    for _ in range(n):
        c = rng.choice(CUSTOMERS)
        r.write("purchases_7d", c, "increment", 1)
        r.write("basket_mean", c, "observe", round(rng.uniform(5, 120), 2))


async def _scenario(data: Path, out: _Out, seed: int) -> bool:
    import random

    rng = random.Random(seed)
    schema = demo_schema()
    cloud = await Replica.open(data / "cloud", schema=schema, name="cloud", region="eu", role="cloud")
    onprem = await Replica.open(data / "onprem", schema=schema, name="onprem", region="eu", role="dc")
    edge = await Replica.open(data / "edge-7", schema=schema, name="edge-7", region="eu", role="edge")
    replicas = {"cloud": cloud, "onprem": onprem, "edge-7": edge}
    from .inference.bank import CreditDecisions, write_customer

    decisions = await CreditDecisions.open({"cloud": cloud, "edge-7": edge})
    fwd = {
        "onprem": Forwarder(onprem.log, cloud.log, origin=onprem.actor, state_path=data / "onprem" / "forwarder.json"),
        "edge-7": Forwarder(edge.log, cloud.log, origin=edge.actor, state_path=data / "edge-7" / "forwarder.json"),
    }

    async def replicate() -> None:
        for r in replicas.values():
            await r.flush()
        for _ in range(2):  # up, then down with what the other forwarder brought
            for f in fwd.values():
                await f.run_once()
        for r in replicas.values():
            await r.sync(timeout=10)

    def show(title: str) -> None:
        show_table(out, title, {n: probe_values(r) for n, r in replicas.items()})

    async def shop(r: Replica, n: int) -> None:
        write_purchases(r, rng, n)
        await r.flush()

    try:
        out.rule("1. connected: cloud, on-prem and edge write, everything replicates")
        await cloud.update("segment", "cust-1", "set", "bargain-hunter")
        await cloud.update("recs_model", "global", "configure", [["v2", 500], ["v1", 9500]], [], "v1", "recs_model")
        for r in replicas.values():
            await shop(r, 20)
        await edge.update("defects", STATION, "increment", 2)
        write_customer(cloud, "cust-1", 4_200, 0.35)  # the bank's view of cust-1 today
        await replicate()
        show("after the first sync")

        out.rule("2. the edge loses its uplink; everyone keeps writing")
        fwd["edge-7"].connected = False
        await cloud.update("checkout_v2", "global", "disable")  # operator hits the kill switch
        await edge.update("checkout_v2", "global", "enable")  # store manager enables it for a test
        await edge.update("dark_mode", "global", "enable")
        await cloud.update("segment", "cust-1", "set", "premium")
        await asyncio.sleep(0.002)
        await edge.update("segment", "cust-1", "set", "loyal-local")
        for r in replicas.values():
            await shop(r, 40)
        for _ in range(30):
            edge.write("defects", STATION, "increment", 1)
        await edge.flush()
        await replicate()
        depth = await fwd["edge-7"].outbox_depth()
        out.say(f"edge outbox holds [bold]{depth}[/bold] records waiting for the uplink; "
                "the edge keeps serving from its local log")
        show("while the edge is offline (values differ)")
        out.rule("decision while they disagree: the credit-limit model on the cloud and at the edge")
        write_customer(cloud, "cust-1", 5_600, 0.12)  # verified income up, risk down: in the cloud only
        await replicate()
        apart = await decisions.decide("cust-1")
        for line in apart.lines():
            out.say(line)

        out.rule("3. the uplink returns: the outbox drains and every replica converges")
        fwd["edge-7"].connected = True
        await replicate()
        await replicate()
        show("after reconnecting")
        ctxs = {n: r.context for n, r in replicas.items()}
        digests = {n: r.digest() for n, r in replicas.items()}
        for n, c in ctxs.items():
            out.say(f"  {n:7} context {c}")
        converged = len(set(ctxs.values())) == 1 and len(set(digests.values())) == 1
        out.rule("decision after converging: both replicas see the same events")
        together = await decisions.decide("cust-1")
        for line in together.lines():
            out.say(line)
        converged = converged and together.agree
        flag = cloud.state("checkout_v2", "global")
        out.say(f"checkout_v2 is [bold]{'on' if flag.value() else 'off'}[/bold] everywhere: "
                "the kill switch's declared rule (disable wins) decided the concurrent toggle"
                + (", and the conflict is visible" if getattr(flag, "conflict", False) else ""))
        ev = edge.state("recs_model", "global")
        pick = ev.evaluate("cust-2") if hasattr(ev, "evaluate") else None
        if pick is not None:
            out.say(f"recs_model for cust-2 -> {pick.variant} ({pick.reason}), identical at every replica")
        if converged:
            out.say("[bold green]converged:[/bold green] same events seen, same state, at all three replicas")
        else:
            out.say("[bold red]NOT converged[/bold red]")
        return converged
    finally:
        await decisions.close()
        for r in replicas.values():
            await r.close()


def run_demo(data_dir: str | None = None, *, seed: int = 7, keep: bool = False,
             say: Callable[[str], None] | None = None) -> bool:
    """Run the demo; returns True when the three replicas converged."""
    out = _Out()
    tmp = data_dir is None
    data = Path(tempfile.mkdtemp(prefix="crdtsync-demo-")) if tmp else Path(data_dir)  # type: ignore[arg-type]
    if not tmp and data.exists() and any(data.iterdir()):
        raise FileExistsError(f"{data} is not empty; give a new directory to --data")
    started = time.perf_counter()
    try:
        ok = run_loop(_scenario(data, out, seed))
    finally:
        if tmp and not keep:
            shutil.rmtree(data, ignore_errors=True)
    out.say(f"demo finished in {time.perf_counter() - started:.1f} s; data in {data}"
            + (" (removed)" if tmp and not keep else ""))
    return ok
