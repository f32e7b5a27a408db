"""The predictor: read an entity's features and flags from one view, run a model, record lineage.

:meth:`Predictor.predict` reads every feature the model takes and every flag the predictor
was given for one entity key from **one** :meth:`~crdtsync.replica.Replica.view` (one
consistent moment: one context), after waiting for the strongest read level among those
fields (a field at ``MAX_STALENESS``/``QUORUM``/``LINEARIZABLE`` makes the read wait like
``replica.read`` would; state only grows, so the view taken afterwards meets every
field's level). It runs the model and returns a :class:`Prediction`: the outputs, the
values read, and its :class:`~crdtsync.inference.record.LineageRecord` (built when first
read); the prediction itself goes to the
:class:`~crdtsync.inference.lineage_log.LineageLog`, which digests and encodes it later,
in batches.

:meth:`Predictor.predict_batch` is the batch path: one view per entity and one model call
for the whole batch.

Prediction ids are ``<actor>:<hlc hex>``; the time is taken from the replica's clock
without issuing a stamp (:meth:`~crdtsync.clock.HLC.peek`, so a clock fenced for skew
never refuses a prediction) and made strictly increasing per replica, so ids are unique.
"""

from __future__ import annotations

import copy
import secrets
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from crdtsync import speedups
from crdtsync.clock import Context
from crdtsync.errors import ModelInputError
from crdtsync.policy import LINEARIZABLE, LOCAL, SEQUENCED

from .digests import input_digest, input_digests, output_digest, output_digests, output_plan
from .lineage_log import LineageLog
from .models import Model, Outputs
from .otel import prediction_tracer
from .record import LineageRecord, PredictorSpec, prediction_id

if TYPE_CHECKING:
    from crdtsync.replica import Replica

    from .cache import PredictionCache

__all__ = ["Prediction", "Predictor", "PredictorStats"]


class Prediction:
    """One prediction: outputs, the values read (features and flags) and its lineage.

    It is also what the predictor hands to a
    :class:`~crdtsync.inference.lineage_log.LineageLog` (a
    :class:`~crdtsync.inference.lineage_log.PendingRecord`: what the encoder reads of a
    record, and :meth:`build`): ``record`` is built on first use (by the caller or a
    tracer), and the lineage log's flush digests what it needs without building it. The
    digests are most of what a record costs, and most predictions are read for their
    outputs only. What they digest cannot change meanwhile: the values are the row read
    (containers are handed out as copies), and outputs are digested at once unless the
    model hands out read-only ones (:class:`~crdtsync.inference.OnnxModel`).
    """

    __slots__ = ("key", "outputs", "cached", "time", "context", "strong_positions", "staleness_ms", "batch",
                 "spec", "_by", "_row", "_din", "_dout", "_rec")

    def __init__(self, by: Predictor, t: int, key: str, ctx: Context, strong: Mapping[str, Any],
                 stale: float | None, batch: tuple[int, int, int] | None, row: list[Any], out: Outputs,
                 din: bytes | None, dout: bytes | None, cached: bool = False) -> None:
        self.key = key
        self.outputs = out
        self.cached = cached
        #: HLC time of the prediction (its id: see :attr:`prediction_id`)
        self.time = t
        self.context = ctx
        self.strong_positions = strong
        self.staleness_ms = stale
        self.batch = batch
        #: the predictor's spec (what the lineage log names the prediction's predictor by)
        self.spec: PredictorSpec = by.spec
        self._by, self._row, self._din, self._dout = by, row, din, dout
        self._rec: LineageRecord | None = None

    @property
    def values(self) -> Mapping[str, Any]:
        """field -> value as read (features, then flags)."""
        return _RowValues(self._by._ix, self._row)

    @property
    def replica(self) -> str:
        return self._by.spec.actor

    @property
    def prediction_id(self) -> str:
        return prediction_id(self._by.spec.actor, self.time)

    @property
    def input_digest(self) -> bytes:
        d = self._din
        if d is None:
            d = self._din = input_digest(self._row)
        return d

    @property
    def output_digest(self) -> bytes:
        d = self._dout
        if d is None:
            d = self._dout = output_digest(self.outputs)
        return d

    @property
    def record(self) -> LineageRecord:
        rec = self._rec
        return rec if rec is not None else self.build()

    def build(self) -> LineageRecord:
        """The :class:`LineageRecord` of this prediction (built once)."""
        rec = self._rec
        if rec is None:
            by, t = self._by, self.time
            actor = by.spec.actor
            rec = self._rec = LineageRecord(prediction_id(actor, t), t, actor, by.model.identity, by.features,
                                            by.flags, self.key, self.context, self.strong_positions,
                                            self.input_digest, self.output_digest, by._levels, self.staleness_ms,
                                            by.spec, self.batch)
        return rec

    @staticmethod
    def digests_of(preds: Sequence[Prediction]) -> tuple[list[bytes], list[bytes]]:
        """The input and output digests of many predictions (what a lineage flush needs),
        computed in bulk; the same bytes as their :attr:`input_digest`/:attr:`output_digest`
        (with ``_clineage``: both in one C pass over the predictions; this code is its
        reference)."""
        c = speedups.clineage
        if c is not None and preds:
            plist = preds if type(preds) is list else list(preds)
            c.track(plist)  # (held while queued: see _clineage.hold)
            return c.prediction_digests(plist, output_plan(plist[0].outputs), input_digest,  # type: ignore[no-any-return]
                                        output_digest)
        n = len(preds)
        din: list[bytes | None] = [p._din for p in preds]
        missing = din.count(None)
        if missing == n:  # (the usual flush: none taken yet)
            din = input_digests([p._row for p in preds])  # type: ignore[assignment]
        elif missing:
            todo = [i for i, d in enumerate(din) if d is None]
            for i, d in zip(todo, input_digests([preds[i]._row for i in todo])):
                din[i] = d
        dout: list[bytes | None] = [p._dout for p in preds]
        missing = dout.count(None)
        if missing == n:
            dout = output_digests([p.outputs for p in preds])  # type: ignore[assignment]
        elif missing:
            todo = [i for i, d in enumerate(dout) if d is None]
            for i, d in zip(todo, output_digests([preds[i].outputs for i in todo])):
                dout[i] = d
        return din, dout  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Prediction(key={self.key!r}, outputs={self.outputs!r}, cached={self.cached})"


@dataclass
class PredictorStats:
    predictions: int = 0
    #: model calls (a batch is one)
    model_calls: int = 0
    #: calls refused because the values did not fit the model (ModelInputError)
    input_errors: int = 0


_CONTAINERS = (list, dict)
#: the strong positions of a predictor that reads no strong field (shared, read-only)
_NO_STRONG: Mapping[str, Any] = MappingProxyType({})


class _RowValues(Mapping[str, Any]):
    """A prediction's values: a read-only mapping over the row the model was fed (field
    -> value), built without copying the row into a dict."""

    __slots__ = ("_ix", "_row")

    def __init__(self, ix: Mapping[str, int], row: Sequence[Any]) -> None:
        self._ix = ix
        self._row = row

    def __getitem__(self, field: str) -> Any:
        v = self._row[self._ix[field]]
        return v if type(v) not in _CONTAINERS else copy.deepcopy(v)  # (the row is digested later)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ix)

    def __len__(self) -> int:
        return len(self._ix)

    def __repr__(self) -> str:
        return repr(dict(self))


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
        #: the model's one-row path, when it has one (``run_batch([row])[0]``, bit for bit)
        self._run_one = getattr(model, "run_one", None)
        #: the model's outputs cannot change after the call (OnnxModel's are read-only
        #: arrays): their digest can wait until the record is built
        self._lazy_outputs = bool(getattr(model, "outputs_read_only", False))
        self._store = replica.store
        self._read = replica.store.reader(self.fields)
        #: untracks a queued prediction for the garbage collector (the flush tracks it
        #: again: Prediction.digests_of), when the C part is there
        self._hold = speedups.clineage.hold if speedups.clineage is not None else None
        self._ix = {f: i for i, f in enumerate(self.fields)}
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
        if self.cache is None and self._run_one is not None:
            return self._predict_one(key)
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
        replica, nf = self.replica, self._nf
        # one moment for every key: nothing below yields, so no event lands in between
        store = replica.store
        ctx, position = store.ctx(), store.position
        read = self._read
        rows = [read(k) for k in keys]
        cache = self.cache
        n = len(keys)
        outs: list[Outputs | None]
        digests: list[bytes | None]
        dout: list[bytes | None]
        batches: list[tuple[int, int, int] | None]
        if cache is not None:  # the cache is keyed by the input digest: computed now
            ident = self.model.identity
            digests = [input_digest(r) for r in rows]
            hits = [cache.get(ident, k, d) for k, d in zip(keys, digests)]  # type: ignore[arg-type]
            outs = [h[0] if h is not None else None for h in hits]
            dout = [h[1] if h is not None else None for h in hits]
            batches = [h[2] if h is not None else None for h in hits]
        else:
            hits = [None] * n
            outs, digests, dout, batches = [None] * n, [None] * n, [None] * n, [None] * n
        todo = [i for i, o in enumerate(outs) if o is None]
        if todo:
            try:
                if len(todo) == 1 and self._run_one is not None:
                    ran = [self._run_one(rows[todo[0]][:nf])]
                else:
                    ran = self.model.run_batch([rows[i][:nf] for i in todo])
            except ModelInputError:
                self.stats.input_errors += 1
                raise
            self.stats.model_calls += 1
            bid = secrets.randbits(32) if len(todo) > 1 else None
            eager = cache is not None or not self._lazy_outputs
            for j, (i, o) in enumerate(zip(todo, ran)):
                outs[i] = o
                b = batches[i] = (bid, j, len(todo)) if bid is not None else None
                if eager:  # outputs a caller could change: digested now
                    d = dout[i] = output_digest(o)
                    if cache is not None:
                        cache.put(self.model.identity, keys[i], digests[i], o, d, b)  # type: ignore[arg-type]
        stale = replica.staleness_ms() if replica.control is not None else None
        strong = {f: position for f in self._strong} if self._strong else _NO_STRONG
        self.stats.predictions += n
        return [self._finish(key, rows[i], outs[i], digests[i], dout[i], batches[i], hits[i] is not None,  # type: ignore[arg-type]
                             ctx, strong, stale) for i, key in enumerate(keys)]

    def _predict_one(self, key: str) -> Prediction:
        """:meth:`predict_now` of one key without a cache, through the model's one-row path
        (the online-serving call: the same reads, model call and record)."""
        replica = self.replica
        store = self._store
        ctx, position = store.ctx(), store.position
        row = self._read(key)
        try:
            out = self._run_one(row[:self._nf] if self.flags else row)  # type: ignore[misc]
        except ModelInputError:
            self.stats.input_errors += 1
            raise
        stats = self.stats
        stats.model_calls += 1
        stats.predictions += 1
        stale = replica.staleness_ms() if replica.control is not None else None
        strong = {f: position for f in self._strong} if self._strong else _NO_STRONG
        stamps = self._stamps
        t = replica.hlc.peek()
        if t <= stamps.last:
            t = stamps.last + 1
        stamps.last = t
        p = Prediction(self, t, key, ctx, strong, stale, None, row, out, None,
                       None if self._lazy_outputs else output_digest(out))
        lineage = self.lineage
        if lineage is not None:
            if self._hold is not None:
                self._hold(p)
            lineage.submit(p)
        if self._tracer is not None:
            self._tracer.emit(p.record, {f: p.values[f] for f in self.flags})
        return p

    def _finish(self, key: str, row: list[Any], out: Outputs, din: bytes | None, dout: bytes | None,
                batch: tuple[int, int, int] | None, cached: bool, ctx: Any, strong: Mapping[str, Any],
                stale: float | None) -> Prediction:
        """The prediction of one row: its time, logged (its record pending) and traced."""
        stamps = self._stamps
        t = self.replica.hlc.peek()
        if t <= stamps.last:
            t = stamps.last + 1
        stamps.last = t
        p = Prediction(self, t, key, ctx, strong, stale, batch, row, out, din, dout, cached)
        if self.lineage is not None:
            if self._hold is not None:
                self._hold(p)
            self.lineage.submit(p)
        if self._tracer is not None:
            self._tracer.emit(p.record, {f: p.values[f] for f in self.flags})
        return p
