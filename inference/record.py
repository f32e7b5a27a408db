"""Lineage records and their compact wire format.

A :class:`LineageRecord` says what one prediction read and which model answered: the
prediction id, its HLC time, the replica, the model identity, the feature and flag names,
the entity key, the causal context of the read, the log position of strong fields, the
input and output digests, the read level of every field and the replica's staleness.

On the wire (a lineage log), what many predictions share is written once and referenced:

* a **spec** record per predictor: replica, model identity, field names, read levels,
  strong fields;
* a **base** record: a full context that later predictions of that replica are encoded
  against; a new one is logged when a prediction's context has drifted too far from the
  current base (more than ``max_delta_rows`` differing replica rows);
* a **prediction** record: spec id, base id, time, key, the context as the rows that
  differ from the base, strong positions, digests, staleness.

With 1,000 known replicas a context is several kilobytes as a full vector, but only the
few replicas that wrote since the base was logged differ, so a prediction record stays
around a hundred bytes. Layouts (msgpack lists, version 1)::

    spec:       [1, "S", spec_id, actor, model identity, fields, read levels, strong fields]
    base:       [1, "B", base_id, actor, context rows]
    prediction: [1, "P", spec_id, base_id, hlc, key, delta rows, strong positions,
                 input digest, output digest, staleness ms or None, batch]

A log record holds one or more of these rows back to back (a msgpack stream; the lineage
log packs up to ``rows_per_record`` per record), in the order they were encoded, so a
spec or base always precedes the predictions that name it.

``batch`` is ``None`` or ``[batch id, row, rows]`` for outputs computed by one model call
on several rows (explain re-runs that call: a batch may round differently from one row).

A delta row is ``[replica, n, cloud seqs]`` where ``replica`` is the index of a replica in
the base's sorted rows or, for a replica the base lacks, its name; ``n = 0`` with no cloud
drops the row. Ids are random 32-bit ints (a lineage log may be shared by many replicas).
Decoding validates the shape; anything else is :class:`~crdtsync.errors.CorruptRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crdtsync._encoding import corrupt
from crdtsync.clock import Context

from .models import ModelIdentity

__all__ = ["LineageRecord", "PredictorSpec", "context_delta", "apply_delta", "prediction_id"]

VERSION = 1


def prediction_id(actor: str, hlc: int) -> str:
    """The id of the prediction ``actor`` made at ``hlc`` (unique: see the predictor)."""
    return f"{actor}:{hlc:x}"


@dataclass(frozen=True)
class PredictorSpec:
    """What every prediction of one predictor shares (logged once per lineage log)."""

    spec_id: int
    actor: str
    model: ModelIdentity
    #: features first, then flags: the order of the input digest
    fields: tuple[str, ...]
    n_features: int
    read_levels: tuple[str, ...]
    strong: tuple[str, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return self.fields[: self.n_features]

    @property
    def flags(self) -> tuple[str, ...]:
        return self.fields[self.n_features:]

    def encode_row(self) -> list[Any]:
        return [VERSION, "S", self.spec_id, self.actor, self.model.to_list(), list(self.fields),
                self.n_features, list(self.read_levels), list(self.strong)]

    @classmethod
    def decode_row(cls, row: list[Any]) -> PredictorSpec:
        try:
            _, _, sid, actor, model, fields, nf, levels, strong = row
            spec = cls(int(sid), str(actor), ModelIdentity.from_list(model), tuple(map(str, fields)), int(nf),
                       tuple(map(str, levels)), tuple(map(str, strong)))
        except (TypeError, ValueError) as exc:
            corrupt("lineage spec", str(exc))
        if not (0 <= spec.n_features <= len(spec.fields) and len(spec.read_levels) == len(spec.fields)):
            corrupt("lineage spec", "field counts do not match")
        return spec


@dataclass(slots=True)
class LineageRecord:
    """What one prediction read and which model answered (see the module doc)."""

    prediction_id: str
    time: int
    replica: str
    model: ModelIdentity
    features: tuple[str, ...]
    flags: tuple[str, ...]
    key: str
    context: Context
    #: log position of the view, for each strong field read
    strong_positions: Mapping[str, int | None]
    input_digest: bytes
    output_digest: bytes
    #: field -> the read level it was read at (repr of the level)
    read_levels: Mapping[str, str]
    staleness_ms: float | None
    #: the spec this record belongs to (its id on the wire)
    spec: PredictorSpec | None = None
    #: ``(batch id, row, rows)`` when the outputs came from a model call on several rows
    #: (a batch can round differently from a single row: explain re-runs the same batch)
    batch: tuple[int, int, int] | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return self.features + self.flags

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (context as ``{replica: [n, [cloud seqs]]}``)."""
        return {
            "prediction_id": self.prediction_id,
            "time": self.time,
            "replica": self.replica,
            "model": {"name": self.model.name, "version": self.model.version, "sha256": self.model.sha256,
                      "settings": dict(self.model.settings)},
            "features": list(self.features),
            "flags": list(self.flags),
            "key": self.key,
            "context": {r: [n, seqs] for r, n, seqs in self.context.to_payload()},
            "strong_positions": dict(self.strong_positions),
            "input_digest": self.input_digest.hex(),
            "output_digest": self.output_digest.hex(),
            "read_levels": dict(self.read_levels),
            "staleness_ms": self.staleness_ms,
            "batch": list(self.batch) if self.batch is not None else None,
        }


# -- contexts relative to a base ------------------------------------------------------

def context_delta(base_rows: Sequence[list[Any]], base_index: Mapping[str, int], ctx: Context) -> list[list[Any]]:
    """The rows of ``ctx`` that differ from the base (``base_rows``: its ``to_payload()``,
    ``base_index``: replica -> row index)."""
    out: list[list[Any]] = []
    rows = ctx.to_payload()
    seen = 0
    for row in rows:
        r = row[0]
        i = base_index.get(r)
        if i is None:
            out.append(row)
            continue
        seen += 1
        if base_rows[i][1] != row[1] or base_rows[i][2] != row[2]:
            out.append([i, row[1], row[2]])
    if seen != len(base_rows):  # replicas of the base that this context lacks
        present = {row[0] for row in rows}
        out.extend([i, 0, []] for i, b in enumerate(base_rows) if b[0] not in present)
    return out


def apply_delta(base_rows: Sequence[list[Any]], delta: Any) -> Context:
    """The context a prediction record encodes: the base's rows with ``delta`` applied."""
    if not isinstance(delta, list):
        corrupt("lineage record", "context delta is not a list")
    rows = {b[0]: b for b in base_rows}
    for d in delta:
        if not (isinstance(d, list) and len(d) == 3):
            corrupt("lineage record", "bad context delta row")
        ref, n, seqs = d
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(base_rows):
                corrupt("lineage record", f"context delta names base row {ref} of {len(base_rows)}")
            name = base_rows[ref][0]
        elif isinstance(ref, str):
            name = ref
        else:
            corrupt("lineage record", "bad replica in a context delta row")
        if n == 0 and not seqs:
            rows.pop(name, None)
        else:
            rows[name] = [name, n, seqs]
    return Context.from_payload([rows[r] for r in sorted(rows)], what="lineage context")
