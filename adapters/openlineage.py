"""OpenLineage: lineage records as OpenLineage run events (extra ``openlineage``).

Each :class:`~crdtsync.inference.LineageRecord` becomes one ``COMPLETE``
:class:`~openlineage.client.event_v2.RunEvent`:

* **run id**: a UUID derived from the prediction id (``uuid5``), so re-emitting a record
  names the same run;
* **job**: ``predict.<model name>`` in the emitter's namespace;
* **inputs**: one dataset per feature and flag read (namespace ``crdtsync://<namespace>``,
  name ``<field>``);
* **run facets**: ``crdtsync_versionVector`` (:class:`VersionVectorRunFacet`: the read's
  causal context as a version vector plus dot-cloud ranges, the replica, the entity key
  and the log positions of strong fields) and ``crdtsync_prediction``
  (:class:`PredictionRunFacet`: model name, version, sha256 and settings, input and output
  digests, read levels, staleness), both with their own schema URLs under
  ``https://crdtsync.dev/spec/facets/``.

:class:`OpenLineageEmitter` sends events through an ``OpenLineageClient`` (any transport:
HTTP to Marquez, Kafka, a file, the console).
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable
from typing import Any

import attr
from crdtsync.inference.record import LineageRecord  # type: ignore[import-not-found]  # package-dir: inference/
from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
from openlineage.client.generated.base import RunFacet

from crdtsync.clock import hlc_wall_ms

__all__ = ["VersionVectorRunFacet", "PredictionRunFacet", "to_run_event", "OpenLineageEmitter"]

PRODUCER = "https://github.com/crdtsync/crdtsync"
_NS = uuid.UUID("5b0c6c43-4e0c-4d0a-9d1e-6b7a3b1c2d11")


@attr.define
class VersionVectorRunFacet(RunFacet):
    """The causal context a prediction read: ``versionVector`` (replica -> contiguous
    seqs) and ``dotCloud`` (replica -> inclusive seq ranges seen beyond them)."""

    versionVector: dict[str, int] = attr.field(factory=dict)
    dotCloud: dict[str, list[list[int]]] = attr.field(factory=dict)
    replica: str = attr.field(default="")
    entityKey: str = attr.field(default="")
    strongPositions: dict[str, Any] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return "https://crdtsync.dev/spec/facets/1-0-0/VersionVectorRunFacet.json"


@attr.define
class PredictionRunFacet(RunFacet):
    """Which model answered and the digests that let the decision be checked later."""

    predictionId: str = attr.field(default="")
    modelName: str = attr.field(default="")
    modelVersion: str = attr.field(default="")
    modelSha256: str = attr.field(default="")
    modelSettings: dict[str, str] = attr.field(factory=dict)
    inputDigest: str = attr.field(default="")
    outputDigest: str = attr.field(default="")
    readLevels: dict[str, str] = attr.field(factory=dict)
    stalenessMs: float | None = attr.field(default=None)
    hlc: int = attr.field(default=0)

    @staticmethod
    def _get_schema() -> str:
        return "https://crdtsync.dev/spec/facets/1-0-0/PredictionRunFacet.json"


def run_id(prediction_id: str) -> str:
    """The OpenLineage run id of a prediction (stable)."""
    return str(uuid.uuid5(_NS, prediction_id))


def to_run_event(record: LineageRecord, namespace: str = "crdtsync") -> RunEvent:
    """The ``COMPLETE`` run event of one prediction (see the module doc)."""
    ctx = record.context
    vv = dict(ctx.vv)
    cloud = {r: [list(x) for x in ctx.cloud_ranges(r)] for r in sorted(ctx.replicas()) if ctx.cloud_ranges(r)}
    when = _dt.datetime.fromtimestamp(hlc_wall_ms(record.time) / 1000, _dt.timezone.utc).isoformat()
    facets: dict[str, RunFacet] = {
        "crdtsync_versionVector": VersionVectorRunFacet(
            versionVector=vv, dotCloud=cloud, replica=record.replica, entityKey=record.key,
            strongPositions=dict(record.strong_positions), producer=PRODUCER),
        "crdtsync_prediction": PredictionRunFacet(
            predictionId=record.prediction_id, modelName=record.model.name, modelVersion=record.model.version,
            modelSha256=record.model.sha256, modelSettings=dict(record.model.settings),
            inputDigest=record.input_digest.hex(), outputDigest=record.output_digest.hex(),
            readLevels=dict(record.read_levels), stalenessMs=record.staleness_ms, hlc=record.time,
            producer=PRODUCER),
    }
    inputs = [InputDataset(namespace=f"crdtsync://{namespace}", name=f) for f in record.fields]
    return RunEvent(eventType=RunState.COMPLETE, eventTime=when, producer=PRODUCER,
                    run=Run(runId=run_id(record.prediction_id), facets=facets),  # type: ignore[arg-type]
                    job=Job(namespace=namespace, name=f"predict.{record.model.name}"), inputs=inputs, outputs=[])


class OpenLineageEmitter:
    """Sends lineage records as run events through an ``OpenLineageClient``."""

    def __init__(self, client: Any, namespace: str = "crdtsync") -> None:
        self.client = client
        self.namespace = namespace
        self.emitted = 0

    def emit(self, record: LineageRecord) -> None:
        self.client.emit(to_run_event(record, self.namespace))
        self.emitted += 1

    def emit_all(self, records: Iterable[LineageRecord]) -> int:
        n = 0
        for r in records:
            self.emit(r)
            n += 1
        return n
