"""``crdtsync explain ID``: the rich view and the JSON of an explanation.

:func:`explain_command` opens the explainer on a replica's data directory (the replica
may be running), explains one prediction and prints it: a summary (who decided, when,
with which model, at which read levels and staleness), the inputs as rebuilt with the
event each value came from, whether inputs and outputs were reproduced, and the events
behind the decision. ``--json`` prints :meth:`Explanation.to_dict` instead. The exit
status is 0 when the decision was reproduced, 1 when it was not (an altered log or
model), and the typed errors (unknown id, beyond the horizon) are reported as such.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crdtsync.clock import hlc_wall_ms

from .explain import Explanation
from .fold import EventRef
from .lineage import open_explainer
from .models import Model, OnnxModel

__all__ = ["explain_command", "render"]


def _when(hlc: int) -> str:
    ms = hlc_wall_ms(hlc)
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def render(ex: Explanation, console: Any) -> None:
    """Print ``ex`` with rich."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    rec = ex.record
    ok = "[bold green]reproduced[/]" if ex.ok else "[bold red]NOT reproduced[/]"
    lines = [
        f"prediction [bold]{escape(rec.prediction_id)}[/] for [bold]{escape(rec.key)}[/]: {ok}",
        f"made by {escape(rec.replica)} at {_when(rec.time)} with model {escape(rec.model.ref)}",
        f"staleness at read: {rec.staleness_ms if rec.staleness_ms is not None else 'unknown'} ms;"
        f" read levels: {escape(', '.join(sorted(set(rec.read_levels.values()))))}",
        f"context: {escape(repr(rec.context))}",
        f"input digest  {'[green]matches[/]' if ex.inputs_match else '[red]DIFFERS[/]'}"
        f" ({ex.input_digest.hex()} rebuilt vs {rec.input_digest.hex()} recorded)",
    ]
    if ex.outputs_match is None:
        lines.append(f"outputs       [yellow]not re-run[/]: {escape(ex.model_note)}")
    else:
        shown = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in (ex.outputs or {}).items()}
        lines.append(f"outputs       {'[green]match[/]' if ex.outputs_match else '[red]DIFFER[/]'}: {escape(str(shown))}")
    if ex.base:
        lines.append(f"folded from checkpoint {escape(Path(ex.base).name)} plus the log")
    console.print(Panel("\n".join(lines), title="crdtsync explain"))

    last: dict[str, EventRef] = {}
    count: dict[str, int] = {}
    for e in ex.events:
        last[e.field] = e
        count[e.field] = count.get(e.field, 0) + 1
    t = Table(title="inputs, as rebuilt from the events inside the recorded context")
    for c in ("field", "kind", "value", "events", "latest event (replica, dot, time)"):
        t.add_column(c)
    for f in rec.fields:
        latest = last.get(f)
        where = (f"{latest.replica}  {latest.origin}:{latest.seq}  {_when(latest.hlc)}" if latest is not None
                 else "(none: default value)")
        t.add_row(escape(f), "flag" if f in rec.flags else "feature", escape(_short(ex.values[f])),
                  str(count.get(f, 0)), escape(where))
    console.print(t)
    ev = Table(title=f"events behind the decision ({len(ex.events)}), oldest first")
    for c in ("time", "replica", "dot", "field", "value", "log position"):
        ev.add_column(c)
    for e in ex.events[-40:]:
        ev.add_row(_when(e.hlc), escape(e.replica), escape(f"{e.origin}:{e.seq}"), escape(e.field),
                   escape(_short(e.delta)), str(e.position))
    if len(ex.events) > 40:
        ev.caption = f"the {len(ex.events) - 40} older events are in --json"
    console.print(ev)


def _factory(spec: str) -> Model:
    import importlib

    mod, sep, name = spec.partition(":")
    if not sep:
        raise ValueError(f"--model-factory wants MODULE:NAME, got {spec!r}")
    model: Model = getattr(importlib.import_module(mod), name)()
    return model


async def explain_command(data_dir: str, prediction_id: str, model_paths: Sequence[str], as_json: bool,
                          console: Any, factories: Sequence[str] = ()) -> int:
    """Run ``crdtsync explain``; returns the exit status."""
    models: list[Model] = [_factory(f) for f in factories]
    ex_, logs = await open_explainer(data_dir)
    try:
        rec = ex_.reader.get(prediction_id)
        for p in model_paths:  # built with the recorded settings, so their identity can match
            models.append(OnnxModel(Path(p), name=rec.model.name, version=rec.model.version,
                                    features=rec.features))
        for m in models:
            ex_.add_model(m)
        ex = ex_.explain_record(rec)
    finally:
        for log in logs:
            await log.close()
    if as_json:
        print(json.dumps(ex.to_dict(), indent=2, default=str))
    else:
        render(ex, console)
    return 0 if ex.ok else 1
