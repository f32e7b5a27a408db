"""The predictor: read an entity's features and flags from one view, run a model, record lineage.

:meth:`Predictor.predict` reads every feature the model takes and every flag the predictor
was given for one entity key from **one** :meth:`~crdtsync.replica.Replica.view` (one
consistent moment: one context), after waiting for the strongest read level among those
fields (a field at ``MAX_STALENESS``/``QUORUM``/``LINEARIZABLE`` makes the read wait like
``replica.read`` would; state only grows, so the view taken afterwards meets every
field's level). It runs the model and returns a :class:`Prediction`: the outputs, the
values read, and a :class:`~crdtsync.inference.record.LineageRecord`, which it hands to a
:class:`~crdtsync.inference.lineage_log.LineageLog` (encoding happens later, in batches).

:meth:`Predictor.predict_batch` is the batch path: one view per entity and one model call
for the whole batch.

Prediction ids are ``<actor>:<hlc hex>``; the time is taken from the replica's clock
without issuing a stamp (:meth:`~crdtsync.clock.HLC.peek`, so a clock fenced for skew
never refuses a prediction) and made strictly increasing per replica, so ids are unique.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdtsync.errors import ModelInputError
from crdtsync.policy import LINEARIZABLE, LOCAL, SEQUENCED

from .digests import input_digest, output_digest
from .lineage_log import LineageLog
from .models import Model, Outputs
from .otel import prediction_tracer
from .record import LineageRecord, PredictorSpec, prediction_id

if TYPE_CHECKING:
    from crdtsync.replica import Replica

    from .cache import PredictionCache

__all__ = ["Prediction", "Predictor", "PredictorStats"]


@dataclass(slots=True)
class Prediction:
    """One prediction: outputs, the values read (features and flags) and its lineage."""

    key: str
    outputs: Outputs
    #: field -> value as read (features, then flags); do not modify
    values: Mapping[str, Any]
    record: LineageRecord
    cached: bool = False

    @property
    def prediction_id(self) -> str:
        return self.record.prediction_id


@dataclass
class PredictorStats:
    predictions: int = 0
    #: model calls (a batch is one)
    model_calls: int = 0
    #: calls refused because the values did not fit the model (ModelInputError)
    input_errors: int = 0


class _Stamps:
    """Strictly increasing prediction times per replica (shared by its predictors)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0


_STAMPS: weakref.WeakKeyDictionary[Any, _Stamps] = weakref.WeakKeyDictionary()


class Predictor:
    """Runs ``model`` on the features (and ``flags``) of entities of ``replica``.

    Args:
        replica: where features and flags are read.
        model: an :class:`~crdtsync.inference.OnnxModel`, a
            :class:`~crdtsync.inference.CallableModel` or any :class:`Model`.
        flags: flag (or other field) names read in the same view and recorded, not fed
            to the model (a kill switch the caller checks, a variant).
        lineage: where records go (``None``: records are returned but not logged).
        cache: a :class:`~crdtsync.inference.PredictionCache` (skips the model when no
            input of the entity changed since the last prediction).
        tracing: OpenTelemetry spans (``None``: when a tracer provider is configured;
            ``True``/``False``; or a ``TracerProvider`` to use).
    """

    def __init__(self, replica: Replica, model: Model, *, flags: Sequence[str] = (),
                 lineage: LineageLog | None = None, cache: PredictionCache | None = None,
                 tracing: Any = None) -> None:
        self.replica = replica
        self.model = model
        self.lineage = lineage
        self.flags = tuple(flags)
        self.features = tuple(model.features)
        self.fields = self.features + self.flags
        self._nf = len(self.features)
        levels: list[str] = []
        strong: list[str] = []
        gates: dict[str, str] = {}  # level repr -> a field read at it (one wait per level)
        for f in self.fields:
            res = replica.definitions.get(f).policy.resolve()
            levels.append(repr(res.read))
            if res.read != LOCAL:
                gates.setdefault(repr(res.read), f)
            if res.write == SEQUENCED or res.read == LINEARIZABLE:
                strong.append(f)
        self._gates = tuple(gates.values())
        self._strong = tuple(strong)
        self.spec = PredictorSpec(secrets.randbits(32), replica.actor, model.identity, self.fields,
                                  self._nf, tuple(levels), self._strong)
        self._levels = dict(zip(self.fields, levels))
        if lineage is not None:
            lineage.register(self.spec)
        self._tracer = prediction_tracer(tracing)
        stamps = _STAMPS.get(replica)
        if stamps is None:
            stamps = _STAMPS[replica] = _Stamps()
        self._stamps = stamps
        self.stats = PredictorStats()
        self.cache = cache
        if cache is not None:
            cache.attach(self)

    async def _gate(self, key: str) -> None:
        for f in self._gates:
            await self.replica.read(f, key)

    async def predict(self, key: str) -> Prediction:
        """Predict for one entity (see the module doc)."""
        if self._gates:
            await self._gate(key)
        return self.predict_now([key])[0]

    async def predict_batch(self, keys: Sequence[str]) -> list[Prediction]:
        """Predict for many entities: one view per entity, one model call for the batch."""
        if self._gates:
            for k in keys:
                await self._gate(k)
        return self.predict_now(keys)

    def predict_now(self, keys: Sequence[str]) -> list[Prediction]:
        """Predict from the replica's state now, without waiting for read levels (the
        ``LOCAL`` path; :meth:`predict` waits first when a field needs it)."""
        replica, fields, nf = self.replica, self.fields, self._nf
        views = [replica.view(k, fields) for k in keys]
        rows = [[v.values[f] for f in fields] for v in views]
        digests = [input_digest(r) for r in rows]
        cache = self.cache
        outs: list[Outputs | None]
        dout: list[bytes | None]
        batches: list[tuple[int, int, int] | None]
        if cache is not None:
            ident = self.model.identity
            hits = [cache.get(ident, k, d) for k, d in zip(keys, digests)]
            outs = [h[0] if h is not None else None for h in hits]
            dout = [h[1] if h is not None else None for h in hits]
            batches = [h[2] if h is not None else None for h in hits]
        else:
            hits = [None] * len(keys)
            outs, dout, batches = [None] * len(keys), [None] * len(keys), [None] * len(keys)
        todo = [i for i, o in enumerate(outs) if o is None]
        if todo:
            try:
                ran = self.model.run_batch([rows[i][:nf] for i in todo])
            except ModelInputError:
                self.stats.input_errors += 1
                raise
            self.stats.model_calls += 1
            bid = secrets.randbits(32) if len(todo) > 1 else None
            for j, (i, o) in enumerate(zip(todo, ran)):
                outs[i] = o
                d = dout[i] = output_digest(o)
                b = batches[i] = (bid, j, len(todo)) if bid is not None else None
                if cache is not None:
                    cache.put(self.model.identity, keys[i], digests[i], o, d, b)
        stale = replica.staleness_ms() if replica.control is not None else None
        stamps = self._stamps
        spec, model_id, actor = self.spec, self.model.identity, replica.actor
        strong = self._strong
        result = []
        self.stats.predictions += len(views)
        for i, v in enumerate(views):
            t = replica.hlc.peek()
            if t <= stamps.last:
                t = stamps.last + 1
            stamps.last = t
            rec = LineageRecord(prediction_id(actor, t), t, actor, model_id, self.features, self.flags, v.key,
                                v.context, {f: v.position for f in strong} if strong else {}, digests[i],
                                dout[i], self._levels, stale, spec, batches[i])  # type: ignore[arg-type]
            p = Prediction(v.key, outs[i], v.values, rec, hits[i] is not None)  # type: ignore[arg-type]
            result.append(p)
            if self.lineage is not None:
                self.lineage.submit(rec)
            if self._tracer is not None:
                self._tracer.emit(rec, {f: p.values[f] for f in self.flags})
        return result
