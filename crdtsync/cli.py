"""The ``crdtsync`` command line (needs the ``cli`` extra: click and rich).

Commands: ``demo`` (the main job on the embedded default), ``inspect`` (decode and page
through a log's events), ``status`` (a replica's identity, context and counters, and its forwarder's outbox
depth and stats) and
``compact`` (snapshot, then drop the log segments the snapshot covers) and ``explain``
(rebuild and re-run one prediction from its lineage; :mod:`crdtsync.inference.render`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

from ._loop import run as run_loop


def main() -> None:
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError:
        sys.stderr.write("the crdtsync command needs its extra: pip install 'crdtsync[cli]'\n")
        raise SystemExit(2) from None
    _cli()(prog_name="crdtsync")


def _log_dir(path: Path) -> Path:
    """Accept a replica data directory (holding log/) or a log directory; refuse others."""
    import click

    if (path / "log").is_dir():
        path = path / "log"
    if not any(path.glob("*.seg")):
        raise click.ClickException(f"{path} holds no crdtsync log (no *.seg files); give a replica's data directory")
    return path


def _replica_dir(path: str) -> str:
    import click

    if not (Path(path) / "identity.json").exists():
        raise click.ClickException(f"{path} is not a replica's data directory (no identity.json)")
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (set, frozenset, tuple)):
        return [_jsonable(x) for x in sorted(v, key=repr)] if isinstance(v, (set, frozenset)) else [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


async def _events(log_dir: Path, origin: str | None, field: str | None, key: str | None) -> AsyncIterator[dict[str, Any]]:
    from .clock import hlc_logical, hlc_wall_ms
    from .errors import CorruptRecord, UnsupportedVersion
    from .events import MsgpackCodec
    from .log.local import LocalLog

    codec = MsgpackCodec()
    log = await LocalLog.open(log_dir, fsync="never", create=False)
    try:
        reader = log.read(0)
        async with contextlib.aclosing(reader):  # type: ignore[type-var]
            async for entry in reader:
                try:
                    batch = codec.decode(entry.payload)
                except (CorruptRecord, UnsupportedVersion) as exc:
                    yield {"position": entry.position, "error": str(exc)}
                    continue
                for ev in batch.events:
                    if origin and not ev.origin.startswith(origin):
                        continue
                    if field and ev.field != field:
                        continue
                    if key and ev.key != key:
                        continue
                    yield {
                        "position": entry.position, "origin": ev.origin, "seq": ev.seq,
                        "time_ms": hlc_wall_ms(ev.hlc), "logical": hlc_logical(ev.hlc),
                        "field": ev.field, "key": ev.key, "type": ev.delta.TYPE_TAG,
                        "delta": _jsonable(ev.delta.value()),
                        "region": batch.meta.get("region"), "role": batch.meta.get("role"),
                    }
    finally:
        await log.close()


def _collect(agen: AsyncIterator[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        out = []
        async for e in agen:
            out.append(e)
            if limit is not None and len(out) >= limit:
                break
        return out

    return run_loop(run())


def _progress() -> tuple[Any, Callable[[int, int], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("replaying log"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeRemainingColumn(), transient=True)
    task = prog.add_task("replay", total=1)

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=max(total, 1))

    return prog, update


def _cli() -> Any:
    import click
    from rich.console import Console
    from rich.table import Table

    console = Console()

    @click.group(help="crdtsync: coherent ML features, flags and models across cloud, on-prem and edge.")
    @click.version_option(package_name="crdtsync")
    def cli() -> None:
        pass

    @cli.command(help="Run cloud, on-prem and edge replicas on local logs: diverge offline, then converge.")
    @click.option("--data", type=click.Path(file_okay=False), default=None,
                  help="Directory for the replicas' data (default: a temporary one, removed after).")
    @click.option("--seed", type=int, default=7, show_default=True, help="Seed of the simulated shoppers.")
    @click.option("--kafka", is_flag=True,
                  help="Three replica processes over Kafka (a tansu broker started for the demo).")
    @click.option("--bootstrap", default=None, metavar="HOST:PORT",
                  help="With --kafka: use this broker instead of starting one.")
    def demo(data: str | None, seed: int, kafka: bool, bootstrap: str | None) -> None:
        from .demo import run_demo

        if bootstrap is not None and not kafka:
            raise click.UsageError("--bootstrap goes with --kafka")
        if kafka:
            if data is not None:
                raise click.UsageError("--data is for the local-log demo; the Kafka demo keeps no data")
            from .demo_kafka import run_kafka_demo

            raise SystemExit(0 if run_kafka_demo(bootstrap, seed=seed) else 1)
        try:
            ok = run_demo(data, seed=seed, keep=data is not None)
        except FileExistsError as exc:
            raise click.ClickException(str(exc)) from None
        raise SystemExit(0 if ok else 1)

    @cli.command(help="Decode and page through the events in a replica's log (DIR: data or log directory).")
    @click.argument("directory", type=click.Path(exists=True, file_okay=False))
    @click.option("--origin", help="Only events whose origin starts with this.")
    @click.option("--field", "field_", help="Only events of this field.")
    @click.option("--key", help="Only events of this entity key.")
    @click.option("--limit", type=int, default=None, help="Stop after this many events.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per event per line.")
    def inspect(directory: str, origin: str | None, field_: str | None, key: str | None,
                limit: int | None, as_json: bool) -> None:
        events = _collect(_events(_log_dir(Path(directory)), origin, field_, key), limit)
        if as_json:
            for e in events:
                click.echo(json.dumps(e, sort_keys=True))
            return
        table = Table(title=f"{len(events)} events in {directory}")
        for col in ("pos", "origin", "seq", "time (ms)", "field", "key", "type", "delta"):
            table.add_column(col)
        for e in events:
            if "error" in e:
                table.add_row(str(e["position"]), "[red]corrupt[/red]", "", "", "", "", "", e["error"])
                continue
            table.add_row(str(e["position"]), e["origin"], str(e["seq"]), str(e["time_ms"]), e["field"],
                          e["key"], e["type"], json.dumps(e["delta"])[:60])
        if console.is_terminal and len(events) > console.height:
            with console.pager():
                console.print(table)
        else:
            console.print(table)

    def _open(directory: str) -> Any:
        """Open the replica of ``directory`` (locked: it must not be running elsewhere)."""
        from .errors import DataDirLocked
        from .replica import Replica

        prog, update = _progress()

        async def run(fn: Callable[[Any], Any]) -> Any:
            try:
                with prog:
                    r = await Replica.open(directory, follow=False, progress=update)
            except DataDirLocked as exc:
                raise click.ClickException(str(exc)) from None
            try:
                return await fn(r)
            finally:
                await r.close()

        return run

    def _view(directory: str) -> Any:
        """A read-only view of the replica of ``directory``, also while it runs: its
        snapshot and log replayed in memory, peers' last heartbeats from the log's
        ``control/`` directory. Writes nothing (no lock, no snapshot, no events)."""
        from .control import DirectoryControl
        from .log.local import LocalLog
        from .replica import Replica, ReplicaIdentity
        from .schema import Schema
        from .snapshots import FileSnapshotStore

        ddir = Path(directory)
        prog, update = _progress()

        async def run(fn: Callable[[Any], Any]) -> Any:
            ident = ReplicaIdentity.load_or_create(ddir, None, None, None)
            snaps = ddir / "snapshots" / ident.actor
            log = await LocalLog.open(_log_dir(ddir), fsync="never", create=False)
            try:
                r = Replica(ident, Schema(()), log, snapshots=FileSnapshotStore(snaps) if snaps.is_dir() else None,
                            snapshot_every=2**62, owns_log=False, control=None)
                with prog:
                    await r.persistence.recover(lambda: r.catch_up(progress=update))
                r.observe_heartbeat(r.heartbeat())
                if (log.path / "control").is_dir():
                    DirectoryControl(log.path / "control").poll(r.heartbeats.receive)
                return await fn(r)
            finally:
                await log.close()

        return run

    def _show_forwarder(r: Any, state: Path) -> Any:
        """The forwarder section of ``status`` (nothing when the replica has none)."""
        from .forwarder.status import forwarder_status

        async def show() -> None:
            f = await forwarder_status(state, r.log, r.actor, r.codec)
            if f is None:
                return
            t = Table(title=f"forwarder ({f['state']})")
            t.add_column("what")
            t.add_column("value")
            t.add_row("outbox depth (own records not yet shipped)", str(f["outbox_depth"]))
            t.add_row("shipped up to (local position)", repr(f["shipped"]))
            t.add_row("received up to (shared position)", repr(f["received"]))
            st = f["stats"]
            if st is not None:
                t.add_row("stats written", f"{f['stats_age_s']:.1f} s ago" if f["stats_age_s"] is not None else "?")
                t.add_row("connected", "yes" if st.get("connected") else "[yellow]no[/yellow]")
                for key in ("shipped", "received", "down_behind", "lag_s", "reconnects", "connect_failures",
                            "link_failures", "backoff_s", "last_error"):
                    value = st.get(key)
                    t.add_row(key.replace("_", " "), f"{value:.2f}" if isinstance(value, float) else str(value))
            else:
                t.add_row("stats", "no stats file (the forwarder does not run as a ForwarderService)")
            console.print(t)
            if f["error"]:
                console.print(f"[red]forwarder: {f['error']}[/red]")

        return show()

    @cli.command(help="Show a replica's identity, context, fields and counters (and its forwarder's).")
    @click.argument("directory", type=click.Path(exists=True, file_okay=False))
    @click.option("--forwarder-state", type=click.Path(dir_okay=False), default=None,
                  help="the replica's forwarder state file (default: DIRECTORY/forwarder.json)")
    def status(directory: str, forwarder_state: str | None) -> None:
        from ._dirlock import is_locked, read_holder

        async def show(r: Any) -> None:
            console.print(f"[bold]{r.actor}[/bold]  region={r.identity.region} role={r.identity.role}")
            if is_locked(Path(directory)):
                holder = read_holder(Path(directory)) or {}
                console.print(f"running: yes, pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                              "(shown: its snapshot and log, replayed read-only)")
            else:
                console.print("running: no")
            console.print(f"context: {r.context}")
            console.print(f"log position: {r.position}")
            t = Table(title="fields")
            t.add_column("field")
            t.add_column("keys")
            t.add_column("policy")
            for f in r.fields():
                d = r.schema.get(f) or r.definitions.find(f)
                t.add_row(f, str(len(r.keys(f))), d.policy.describe() if d is not None else "(not defined yet)")
            console.print(t)
            members = r.members()
            offsets = r.skew.offsets_ms(r.now_ms())
            if members:
                m = Table(title="fleet (from the log and the last heartbeats)")
                m.add_column("replica")
                m.add_column("region")
                m.add_column("last heartbeat")
                m.add_column("clock vs this host")
                for name in sorted(members):
                    hb = r.membership.get(name)
                    age = f"{(r.now_ms() - hb.wall_ms) / 1000:.1f} s ago" if hb is not None else "never heard"
                    off = offsets.get(name)
                    clock = "" if off is None else f"{off / 1000:+.1f} s"
                    if off is not None and abs(off) > r.hlc.max_drift_ms:
                        clock = f"[red]{clock} (beyond the {r.hlc.max_drift_ms / 1000:g} s drift bound)[/red]"
                    m.add_row(name, hb.region if hb is not None else r.fleet.roster.get(name, ("", "?"))[1], age, clock)
                console.print(m)
            skew = r.clock_skew_ms()
            if skew is not None and skew > r.hlc.max_drift_ms:
                console.print(f"[red]this host's clock is {skew / 1000:.1f} s ahead of the fleet's: "
                              "writes are refused (ClockSkew) until it is corrected[/red]")
            held = r.stats.events_held
            if held:
                console.print(f"[yellow]{held} events held back: stamped ahead of this host's clock[/yellow]")
            console.print(r.stats)
            await _show_forwarder(r, Path(forwarder_state) if forwarder_state else Path(directory) / "forwarder.json")

        run_loop(_view(_replica_dir(directory))(show))

    @cli.command(help="Snapshot a replica, then drop the log segments the snapshot covers.")
    @click.argument("directory", type=click.Path(exists=True, file_okay=False))
    def compact(directory: str) -> None:
        log_dir = _log_dir(Path(_replica_dir(directory)))

        def size() -> int:
            return sum(p.stat().st_size for p in log_dir.glob("*") if p.is_file())

        before = size()

        async def run(r: Any) -> None:
            if (Path(directory) / "lineage").is_dir():
                # keep what explain needs within the lineage horizon (crdtsync.inference)
                import importlib

                lineage_cls = importlib.import_module("crdtsync.inference.lineage").Lineage
                lin = await lineage_cls.open(r)
                try:
                    pos = await lin.compact()
                finally:
                    await lin.close()
                console.print(f"kept the log back to what the {lin.retention.horizon:g} s lineage horizon needs")
            else:
                pos = await r.compact()
            console.print(f"snapshot at position {pos}")

        run_loop(_open(directory)(run))
        console.print(f"log: {before:,} bytes -> {size():,} bytes")

    @cli.command(help="Explain a prediction: rebuild its inputs from the log, check them, re-run the model, "
                      "show the events behind it (exit status 1 if it does not reproduce).")
    @click.argument("prediction_id")
    @click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False),
                  help="The data directory of the replica that made the prediction.")
    @click.option("--model", "models", multiple=True, type=click.Path(exists=True, dir_okay=False),
                  help="An ONNX file of the model (when it is not archived with the lineage).")
    @click.option("--model-factory", "factories", multiple=True, metavar="MODULE:NAME",
                  help="A function returning the model (for a CallableModel), e.g. "
                       "crdtsync.inference.bank:credit_limit_model.")
    @click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
    def explain(prediction_id: str, data: str, models: tuple[str, ...], factories: tuple[str, ...],
                as_json: bool) -> None:
        import importlib

        from .errors import CrdtSyncError

        # crdtsync.inference lives in inference/ (package-dir): imported by name
        explain_command = importlib.import_module("crdtsync.inference.render").explain_command
        try:
            code = run_loop(explain_command(data, prediction_id, models, as_json, console, factories))
        except (CrdtSyncError, FileNotFoundError) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        raise SystemExit(code)

    return cli


if __name__ == "__main__":
    main()
