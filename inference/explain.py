"""``explain(prediction_id)``: rebuild a decision's inputs, check them, re-run it, show why.

:class:`Explainer` finds the lineage record, folds the events inside its recorded context
(:class:`~crdtsync.inference.fold.Fold`) to rebuild the values the prediction read,
compares their digest with the recorded input digest, re-runs the model (the one whose
identity the record names: given, or from a :class:`~crdtsync.inference.archive.ModelArchive`)
and compares the outputs' digest with the recorded one, and lists the events behind each
value (field, origin replica, dot, HLC time, log position). An event log altered after
the decision gives other inputs (digest mismatch) or lacks events of the context (a
typed :class:`~crdtsync.errors.LineageMismatch`); a context older than what compaction
kept raises :class:`~crdtsync.errors.BeyondHorizon`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crdtsync.clock import hlc_logical, hlc_wall_ms
from crdtsync.errors import LineageMismatch, ModelUnavailable

from .archive import ModelArchive
from .digests import input_digest, output_digest, plain_outputs
from .fold import EventRef, Fold
from .lineage_log import LineageReader
from .models import Model, ModelIdentity, Outputs
from .record import LineageRecord

__all__ = ["Explainer", "Explanation"]


@dataclass
class Explanation:
    """What :meth:`Explainer.explain` found."""

    record: LineageRecord
    #: the values rebuilt from the log, features then flags
    values: dict[str, Any]
    input_digest: bytes
    #: outputs of the re-run (``None`` when the model was not available)
    outputs: Outputs | None
    output_digest: bytes | None
    events: list[EventRef] = field(default_factory=list)
    #: the checkpoint the fold started from (``None``: the log from its start)
    base: str | None = None
    model_note: str = ""

    @property
    def inputs_match(self) -> bool:
        return self.input_digest == self.record.input_digest

    @property
    def outputs_match(self) -> bool | None:
        if self.output_digest is None:
            return None
        return self.output_digest == self.record.output_digest

    @property
    def ok(self) -> bool:
        """Inputs reproduced, and outputs too when the model could be re-run."""
        return self.inputs_match and self.outputs_match is not False

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "inputs_match": self.inputs_match,
            "outputs_match": self.outputs_match,
            "record": self.record.to_dict(),
            "values": self.values,
            "input_digest": self.input_digest.hex(),
            "outputs": _jsonable(plain_outputs(self.outputs)) if self.outputs is not None else None,
            "output_values": _values(self.outputs) if self.outputs is not None else None,
            "output_digest": self.output_digest.hex() if self.output_digest is not None else None,
            "base_checkpoint": self.base,
            "model_note": self.model_note,
            "events": [{"field": e.field, "replica": e.replica, "origin": e.origin, "dot": [e.origin, e.seq],
                        "hlc": e.hlc, "wall_ms": hlc_wall_ms(e.hlc), "logical": hlc_logical(e.hlc),
                        "position": e.position, "delta": _jsonable(e.delta)} for e in self.events],
        }


def _values(outputs: Outputs) -> dict[str, Any]:
    out = {}
    for k, v in outputs.items():
        out[k] = v.tolist() if hasattr(v, "tolist") else _jsonable(v)
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


class Explainer:
    """Explains predictions recorded in a lineage log (see the module doc)."""

    def __init__(self, reader: LineageReader, fold: Fold, *, models: Iterable[Model] = (),
                 archive: ModelArchive | None = None) -> None:
        self.reader = reader
        self.fold = fold
        self.archive = archive
        self._models: dict[ModelIdentity, Model] = {m.identity: m for m in models}

    def add_model(self, model: Model) -> None:
        self._models[model.identity] = model

    async def refresh(self) -> None:
        """Read what the lineage and event logs gained."""
        await self.reader.refresh()
        await self.fold.refresh()

    def _model(self, ident: ModelIdentity) -> tuple[Model | None, str]:
        m = self._models.get(ident)
        if m is not None:
            return m, ""
        if self.archive is not None:
            m = self.archive.load(ident)
            if m is not None:
                if m.identity != ident:
                    return None, (f"the archived model {ident.ref} rebuilds with other settings "
                                  f"({dict(m.identity.settings)}); not re-run")
                self._models[ident] = m
                return m, ""
        same = [k for k in self._models if k.sha256 == ident.sha256]
        if same:
            return None, f"model {ident.ref} is available only with other settings {dict(same[0].settings)}; not re-run"
        return None, f"model {ident.ref} is not available (give it, or archive it); outputs not re-run"

    async def explain(self, prediction_id: str, *, strict: bool = False, refresh: bool = True,
                      require_model: bool = False) -> Explanation:
        """Explain one prediction. ``strict``: raise :class:`LineageMismatch` unless it
        reproduced; ``require_model``: raise :class:`ModelUnavailable` if it cannot be re-run."""
        if refresh:
            await self.refresh()
        rec = self.reader.get(prediction_id)
        return self.explain_record(rec, strict=strict, require_model=require_model)

    def explain_record(self, rec: LineageRecord, *, strict: bool = False, require_model: bool = False) -> Explanation:
        """Explain a record already read (no refresh)."""
        fold = self.fold
        base = fold.base_for(rec.context)
        fold.check(rec.context, base)
        fields = rec.fields
        values = {f: fold.state(f, rec.key, rec.context, base).value() for f in fields}
        din = input_digest([values[f] for f in fields])
        model, note = self._model(rec.model)
        if model is None and require_model:
            raise ModelUnavailable(note)
        outputs = dout = None
        if model is not None:
            rows, at, batch_note = self._rows(rec, [values[f] for f in rec.features])
            outputs = model.run_batch(rows)[at]
            dout = output_digest(outputs)
            note = note or batch_note
        ex = Explanation(rec, values, din, outputs, dout, fold.events(fields, rec.key, rec.context),
                         str(base.path) if base is not None else None, note)
        if strict and not ex.ok:
            what = "inputs" if not ex.inputs_match else "outputs"
            raise LineageMismatch(f"prediction {rec.prediction_id}: the rebuilt {what} differ from the lineage "
                                  f"record (digest {ex.input_digest.hex() if what == 'inputs' else ex.output_digest!r} "
                                  f"vs recorded); the event log or the model was altered")
        return ex

    def _rows(self, rec: LineageRecord, row: list[Any]) -> tuple[list[list[Any]], int, str]:
        """The rows of the model call that computed ``rec``'s outputs, rebuilt, and the
        index of ``rec``'s row (a batch may round differently from a single row)."""
        if rec.batch is None:
            return [row], 0, ""
        bid, at, n = rec.batch
        members = self.reader.batch(bid)
        if len(members) != n or sorted(members) != list(range(n)):
            return [row], 0, f"only {len(members)} of the {n} records of its batch are in the lineage log; re-run alone"
        rows = []
        for i in range(n):
            other = self.reader.get(members[i])
            base = self.fold.base_for(other.context)
            self.fold.check(other.context, base)
            rows.append([self.fold.state(f, other.key, other.context, base).value() for f in other.features])
        rows[at] = row
        return rows, at, ""
