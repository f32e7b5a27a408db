"""Unit tests of crdtsync.inference: models, record format, lineage log, cache, divergence,
explain's typed errors, read levels, tracing, as_of. Replicas run on MemoryLog here (the
acceptance test uses LocalLogs in real directories)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from crdtsync.inference import (
    CallableModel,
    EventHistory,
    Explainer,
    Fold,
    LineageLog,
    LineageReader,
    OnnxModel,
    PredictionCache,
    Predictor,
    as_of,
    mirror,
)
from crdtsync.inference._scenario import lr_model
from crdtsync.inference.record import LineageRecord, prediction_id

from crdtsync import MemoryLog, Replica
from crdtsync.clock import Context, Dot
from crdtsync.errors import LineageNotFound, ModelInputError, ModelUnavailable
from crdtsync.policy import LOCAL, MAX_STALENESS, Strong, Tunable
from crdtsync.schema import Feature, Flag, Schema
from crdtsync.types.flags import EnableWinsFlag
from crdtsync.types.registers import LWWRegister


def run(coro: Any) -> Any:
    return asyncio.run(coro)


SCHEMA = Schema([Feature("income", LWWRegister), Feature("debt", LWWRegister), Flag("boost", EnableWinsFlag)])


def limit_model(version: str = "1") -> CallableModel:
    return CallableModel(lambda d: {"limit": d["income"] * 2 - d["debt"]}, features=["income", "debt"],
                         name="limit", version=version)


async def replica(log: MemoryLog, name: str, schema: Schema = SCHEMA) -> Replica:
    return await Replica.open(schema=schema, log=log, name=name, heartbeat_interval=0.05)


# -- models -----------------------------------------------------------------------------

def _onnx_two_inputs() -> bytes:
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    nodes = [helper.make_node("ReduceSum", ["a", "axes"], ["s"], keepdims=0), helper.make_node("Add", ["s", "b"], ["y"])]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    g = helper.make_graph(nodes, "g", [a, b], [y], initializer=[axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m.SerializeToString()  # type: ignore[no-any-return]


def test_onnx_model_maps_features_to_several_inputs_and_checks_them() -> None:
    blob = _onnx_two_inputs()
    m = OnnxModel(blob, name="sum", inputs={"a": ["x1", "x2"], "b": ["x3"]})
    assert m.features == ("x1", "x2", "x3")
    out = m.run_batch([[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]])
    assert [float(o["y"]) for o in out] == [6.0, 1.0]
    with pytest.raises(ModelInputError, match="takes 2 columns"):
        OnnxModel(blob, name="sum", inputs={"a": ["x1"], "b": ["x3"]})
    with pytest.raises(ModelInputError, match="not mapped"):
        OnnxModel(blob, name="sum", inputs={"a": ["x1", "x2"]})
    with pytest.raises(ModelInputError, match="map one feature"):
        OnnxModel(blob, name="sum", inputs={"a": ["x1", "x2"], "b": ["x3", "x4"]})
    with pytest.raises(ModelInputError, match="give features= or inputs="):
        OnnxModel(blob, name="sum", features=["x1"], inputs={"a": ["x1", "x2"], "b": ["x3"]})
    with pytest.raises(ModelInputError, match="needs numbers; feature 'x2' is None"):
        m.run_batch([[1.0, None, 3.0]])
    with pytest.raises(ModelInputError, match="needs numbers; feature 'x1' is 'high'"):
        m.run_batch([["high", 1.0, 3.0]])
    with pytest.raises(ModelInputError, match="no option"):
        OnnxModel(blob, name="sum", inputs={"a": ["x1", "x2"], "b": ["x3"]}, session_options={"nope": 1})


def test_model_identity_covers_bytes_and_settings() -> None:
    blob = _onnx_two_inputs()
    inputs = {"a": ["x1", "x2"], "b": ["x3"]}
    one = OnnxModel(blob, name="sum", inputs=inputs).identity
    assert one == OnnxModel(blob, name="sum", inputs=inputs).identity
    assert one != OnnxModel(blob, name="sum", inputs=inputs, intra_op_threads=2).identity
    assert one != OnnxModel(blob, name="sum", inputs=inputs, version="2").identity
    assert len(one.sha256) == 64 and one.sha256 == __import__("hashlib").sha256(blob).hexdigest()
    assert limit_model().identity.sha256 != CallableModel(lambda d: {"limit": d["income"]}, features=["income"],
                                                          name="limit").identity.sha256


# -- record format ---------------------------------------------------------------------

def _record(ctx: Context, spec: Any, t: int) -> LineageRecord:
    return LineageRecord(prediction_id(spec.actor, t), t, spec.actor, spec.model, spec.features, spec.flags, "k", ctx, {},
                         b"\x01" * 16, b"\x02" * 16, dict(zip(spec.fields, spec.read_levels)), 3.0, spec)


def _row_sizes(payloads: list[bytes]) -> list[tuple[str, int]]:
    """(kind, bytes) of every lineage row of the log records ``payloads``."""
    import msgpack

    out = []
    for payload in payloads:
        up = msgpack.Unpacker(raw=False)
        up.feed(payload)
        start = 0
        for row in up:
            out.append((row[1], up.tell() - start))
            start = up.tell()
    return out


def test_records_stay_small_with_1000_replicas_and_round_trip_exactly() -> None:
    async def main() -> None:
        from crdtsync.inference.record import PredictorSpec

        spec = PredictorSpec(7, "a~1", limit_model().identity, ("income", "debt", "boost"), 2,
                             ("LOCAL",) * 3, ())
        ll = LineageLog(MemoryLog())
        ll.register(spec)
        ctx = Context({f"site-{i:04d}~{i:08x}": 10 + i for i in range(1000)})
        recs = []
        for t in range(1, 200):
            # a few replicas move; one has a gap (a dot cloud); one replica disappears
            ctx = ctx.add(Dot(f"site-{t % 5:04d}~{t % 5:08x}", 10 + t % 5 + t)) if t % 3 else ctx.join(
                Context({f"site-{(t % 7) + 10:04d}~{(t % 7) + 10:08x}": 40 + t}))
            if t == 100:
                ctx = ctx.without(["site-0999~000003e7"])
            recs.append(_record(ctx, spec, t))
            ll.submit(recs[-1])
        await ll.flush()
        payloads = [e.payload async for e in ll.log.read(0)]
        assert len(payloads) == -(-(1 + ll.stats.bases + len(recs)) // ll.rows_per_record)  # rows packed per record
        pred_sizes = sorted(n for kind, n in _row_sizes(payloads) if kind == "P")
        assert len(pred_sizes) == ll.stats.records == len(recs)
        assert ll.stats.record_bytes / len(recs) < 256
        assert pred_sizes[len(pred_sizes) // 2] <= 256
        assert ll.stats.bases < 30, "the base is re-logged only when the drift grows"
        rd = LineageReader(ll.log)
        await rd.refresh()
        for r in recs:
            back = rd.get(r.prediction_id)
            assert back.context == r.context
            assert back.input_digest == r.input_digest and back.staleness_ms == 3.0
        with pytest.raises(LineageNotFound):
            rd.get("a:0")

    run(main())


class _FailingLog(MemoryLog):
    fail = True

    async def append(self, records: Sequence[bytes]) -> int:
        if self.fail:
            raise OSError("disk said no")
        return await super().append(records)


def test_a_failed_lineage_flush_keeps_its_records_for_the_next() -> None:
    async def main() -> None:
        log = MemoryLog()
        r = await replica(log, "a")
        r.write("income", "c", "set", 10.0)
        r.write("debt", "c", "set", 1.0)
        bad = _FailingLog()
        ll = LineageLog(bad)
        p = Predictor(r, limit_model(), lineage=ll)
        pred = await p.predict("c")
        with pytest.raises(OSError):
            await ll.flush()
        assert ll.stats.append_failures == 1 and ll.pending == 1
        bad.fail = False
        assert await ll.flush() == 1
        rd = LineageReader(bad)
        await rd.refresh()
        assert rd.get(pred.prediction_id).context == pred.record.context
        await r.close()

    run(main())


def test_closing_a_lineage_log_on_another_event_loop_is_a_clear_error() -> None:
    log = MemoryLog()
    ll = LineageLog(log, batch_size=1)

    async def use() -> None:
        r = await replica(log, "a")
        r.write("income", "c", "set", 10.0)
        r.write("debt", "c", "set", 1.0)
        await Predictor(r, limit_model(), lineage=ll).predict("c")  # starts a background flush
        await r.close()

    run(use())
    with pytest.raises(RuntimeError, match="another event loop"):
        run(ll.close())
    assert not ll.closed


# -- predictor, cache, levels ----------------------------------------------------------

def test_cache_hits_until_an_input_changes_locally_or_remotely_and_per_model() -> None:
    async def main() -> None:
        log = MemoryLog()
        a, b = await replica(log, "a"), await replica(log, "b")
        a.write("income", "c", "set", 10.0)
        a.write("debt", "c", "set", 1.0)
        await a.flush()
        calls = []

        def fn(d: dict[str, Any]) -> dict[str, Any]:
            calls.append(d)
            return {"limit": d["income"] * 2 - d["debt"]}

        cache = PredictionCache()
        p = Predictor(a, CallableModel(fn, features=["income", "debt"], name="limit"), cache=cache)
        assert (await p.predict("c")).outputs == {"limit": 19.0}
        hit = await p.predict("c")
        assert hit.cached and len(calls) == 1
        a.write("debt", "c", "set", 2.0)  # a local change
        assert (await p.predict("c")).outputs == {"limit": 18.0} and len(calls) == 2
        b.write("income", "c", "set", 20.0)  # a remote change
        await b.flush()
        await a.sync(timeout=5)
        assert (await p.predict("c")).outputs == {"limit": 38.0} and len(calls) == 3
        a.write("income", "other", "set", 1.0)  # another entity: still a hit
        assert (await p.predict("c")).cached
        p2 = Predictor(a, CallableModel(fn, features=["income", "debt"], name="limit", version="2"), cache=cache)
        assert not (await p2.predict("c")).cached
        assert cache.stats.hits == 2 and cache.stats.invalidations >= 2
        assert 0 < cache.stats.hit_rate < 1
        await a.close()
        await b.close()

    run(main())


def test_read_levels_and_strong_positions_are_recorded() -> None:
    async def main() -> None:
        log = MemoryLog()
        schema = Schema([Feature("income", LWWRegister, policy=Tunable(write=LOCAL, read=MAX_STALENESS(30))),
                         Feature("debt", LWWRegister, policy=Strong())])
        a = await replica(log, "a", schema)
        a.write("income", "c", "set", 10.0)
        await a.update("debt", "c", "set", 1.0)
        p = Predictor(a, limit_model())
        pred = await p.predict("c")
        assert pred.record.read_levels == {"income": "MAX_STALENESS(30.0)", "debt": "LINEARIZABLE"}
        assert pred.record.strong_positions == {"debt": a.position}
        fold = Fold(EventHistory(log), schema=schema)
        await fold.refresh()
        # the SEQUENCED field is replayed in log order (see the replay test below)
        assert fold.values(["debt", "income"], "c", pred.record.context) == {"debt": 1.0, "income": 10.0}
        await a.close()

    run(main())


def test_mirror_reports_disagreement_and_the_inputs_behind_it() -> None:
    async def main() -> None:
        la, lb = MemoryLog(), MemoryLog()  # two logs: b does not see a's writes
        a, b = await replica(la, "a"), await replica(lb, "b")
        for r, income in ((a, 10.0), (b, 12.0)):
            r.write("income", "c", "set", income)
            r.write("debt", "c", "set", 1.0)
        p = Predictor(a, limit_model())
        d = await mirror(p, b, "c")
        assert not d.agree and d.differing == {"income": (10.0, 12.0)}
        assert d.ordering.value == "concurrent"
        b.write("income", "c", "set", 10.0)
        d2 = await mirror(p, b, "c")
        assert d2.agree and d2.differing == {}
        await a.close()
        await b.close()

    run(main())


def test_explain_typed_errors_and_model_resolution() -> None:
    async def main() -> None:
        log = MemoryLog()
        a = await replica(log, "a")
        a.write("income", "c", "set", 10.0)
        a.write("debt", "c", "set", 1.0)
        await a.flush()
        ll = LineageLog(MemoryLog())
        pred = await Predictor(a, limit_model(), flags=["boost"], lineage=ll).predict("c")
        await ll.flush()
        ex = Explainer(LineageReader(ll.log), Fold(EventHistory(log), schema=SCHEMA))
        e = await ex.explain(pred.prediction_id)
        assert e.inputs_match and e.outputs_match is None and "not available" in e.model_note
        assert e.values == {"income": 10.0, "debt": 1.0, "boost": False}
        assert [(x.field, x.replica) for x in e.events] == [("income", "a"), ("debt", "a")]
        with pytest.raises(ModelUnavailable):
            await ex.explain(pred.prediction_id, require_model=True)
        ex.add_model(limit_model("2"))  # another identity: still not used
        assert (await ex.explain(pred.prediction_id)).outputs_match is None
        ex.add_model(limit_model())
        assert (await ex.explain(pred.prediction_id)).outputs_match is True
        with pytest.raises(LineageNotFound):
            await ex.explain("a~x:1")
        await a.close()

    run(main())


def test_as_of_a_context_and_an_event_time() -> None:
    async def main() -> None:
        log = MemoryLog()
        a = await replica(log, "a")
        a.write("income", "c", "set", 10.0)
        await a.flush()
        ctx1, t1 = a.context, a.hlc.last
        await asyncio.sleep(0.002)
        a.write("income", "c", "set", 20.0)
        await a.flush()
        assert (await as_of(a, ctx1)).value("income", "c") == 10.0
        assert (await as_of(a, t1)).value("income", "c") == 10.0
        assert (await as_of(a, a.context)).value("income", "c") == 20.0
        await a.close()

    run(main())


def test_a_span_per_prediction_with_flag_evaluations() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    async def main() -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        a = await replica(MemoryLog(), "a")
        a.write("income", "c", "set", 10.0)
        a.write("debt", "c", "set", 1.0)
        a.write("boost", "c", "enable")
        pred = await Predictor(a, limit_model(), flags=["boost"], tracing=provider).predict("c")
        (span,) = exporter.get_finished_spans()
        assert span.attributes["crdtsync.prediction_id"] == pred.prediction_id
        assert span.attributes["crdtsync.model.version"] == "1"
        (ev,) = span.events
        assert ev.name == "feature_flag.evaluation" and ev.attributes["feature_flag.key"] == "boost"
        assert ev.attributes["feature_flag.result.value"] == "True"
        assert Predictor(a, limit_model())._tracer is None  # no provider configured: no cost
        await a.close()

    run(main())


def test_lr_model_from_skl2onnx_batches_and_single_rows_are_each_reproducible(tmp_path: Path) -> None:
    m = lr_model()
    from crdtsync.inference._scenario import dataset

    X, _, _ = dataset()
    rows = [list(map(float, X[i])) for i in range(16)]
    again = lr_model()
    assert m.identity == again.identity
    for a, b in zip(m.run_batch(rows), again.run_batch(rows)):
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_refused_and_counted() -> None:
    async def main() -> None:
        a = await replica(MemoryLog(), "a")
        a.write("income", "c", "set", 10.0)  # debt never written: None
        model = OnnxModel(_onnx_two_inputs(), name="sum", inputs={"a": ["income", "debt"], "b": ["income"]})
        ll = LineageLog(MemoryLog())
        p = Predictor(a, model, lineage=ll)
        with pytest.raises(ModelInputError, match="'debt' is None"):
            await p.predict("c")
        assert p.stats.input_errors == 1 and p.stats.predictions == 0 and ll.pending == 0
        a.write("debt", "c", "set", 1.0)
        assert float((await p.predict("c")).outputs["y"]) == 21.0
        assert p.stats.predictions == 1 and p.stats.model_calls == 1
        await a.close()

    run(main())


def test_a_damaged_lineage_record_is_skipped_and_counted_and_missing_events_are_typed() -> None:
    async def main() -> None:
        log = MemoryLog()
        a = await replica(log, "a")
        ll = LineageLog(MemoryLog(), batch_size=1)
        p = Predictor(a, limit_model(), lineage=ll)
        preds = []
        for i in range(3):
            a.write("income", "c", "set", 10.0 + i)
            a.write("debt", "c", "set", 1.0)
            await a.flush()
            preds.append(await p.predict("c"))
            await ll.flush()
        records = [e.payload async for e in ll.log.read(0)]
        damaged = MemoryLog()
        await damaged.append([r if i != 2 else b"\xc1garbage" for i, r in enumerate(records)])
        rd = LineageReader(damaged)
        await rd.refresh()
        assert len(rd.corrupt) == 1 and len(rd) == 2
        # an event log that lost a record: the fold says so (typed), never answers from it
        events = [e.payload async for e in log.read(0)]
        lossy = MemoryLog()
        await lossy.append([r for i, r in enumerate(events) if i != len(events) - 2])
        ex = Explainer(LineageReader(ll.log), Fold(EventHistory(lossy), schema=SCHEMA), models=[limit_model()])
        from crdtsync.errors import LineageMismatch

        with pytest.raises(LineageMismatch, match="lacks events"):
            await ex.explain(preds[-1].prediction_id)
        assert (await ex.explain(preds[0].prediction_id, refresh=False)).ok
        await a.close()

    run(main())


def test_batch_predictions_explain_by_re_running_their_batch() -> None:
    from crdtsync.inference._scenario import dataset, schema

    async def main() -> None:
        X, _, names = dataset()
        log = MemoryLog()
        sch = schema(names)
        a = await replica(log, "a", sch)
        for e in range(64):
            for f, v in zip(names, X[e]):
                a.write(f, f"e{e}", "set", float(v))
        await a.flush()
        model = lr_model()
        ll = LineageLog(MemoryLog())
        p = Predictor(a, model, lineage=ll)
        keys = [f"e{e}" for e in range(64)]
        preds = await p.predict_batch(keys)
        assert p.stats.model_calls == 1 and {x.record.batch[2] for x in preds} == {64}  # type: ignore[index]
        await ll.flush()
        ex = Explainer(LineageReader(ll.log), Fold(EventHistory(log), schema=sch), models=[model])
        await ex.refresh()
        assert all(ex.explain_record(ex.reader.get(x.prediction_id)).ok for x in preds)
        await a.close()

    run(main())


# -- the one-row path and lazily built records ------------------------------------------

def test_run_one_is_run_batch_of_one_row_bit_for_bit_with_the_same_errors() -> None:
    from crdtsync.inference._scenario import dataset

    m = lr_model()
    X, _, _ = dataset()
    for i in range(40):
        row = list(map(float, X[i]))
        one, batch = m.run_one(row), m.run_batch([row])[0]
        assert set(one) == set(batch)
        for k in one:
            assert np.asarray(one[k]).tobytes() == np.asarray(batch[k]).tobytes()
            assert np.asarray(one[k]).dtype == np.asarray(batch[k]).dtype
    two = OnnxModel(_onnx_two_inputs(), name="sum", inputs={"a": ["x1", "x2"], "b": ["x3"]})
    assert float(two.run_one([1.0, 2.0, 3.0])["y"]) == 6.0  # columns picked per input
    assert float(two.run_one([0.5, 0.5, 0.0])["y"]) == 1.0  # the kept arrays are refilled
    with pytest.raises(ModelInputError, match="needs numbers; feature 'x2' is None"):
        two.run_one([1.0, None, 3.0])
    with pytest.raises(ModelInputError, match="needs numbers; feature 'x1' is 'high'"):
        two.run_one(["high", 1.0, 3.0])


def test_onnx_outputs_are_read_only() -> None:
    from crdtsync.inference._scenario import dataset

    X, _, _ = dataset()
    m = lr_model()
    for out in (m.run_one(list(map(float, X[0]))), m.run_batch([list(map(float, X[0]))] * 2)[1]):
        with pytest.raises(ValueError, match="read-only"):
            out["probabilities"] *= 100  # the lineage digest of these outputs is taken later


def test_a_record_built_later_digests_what_the_prediction_read_and_answered() -> None:
    """The record is built when first used (or by the lineage flush): its digests are
    those of the row read and the outputs returned, whatever happens in between."""
    from crdtsync.inference import input_digest, output_digest
    from crdtsync.inference._scenario import dataset, schema

    async def main() -> None:
        X, _, names = dataset()
        a = await Replica.open(schema=schema(names), log=MemoryLog(), name="a")
        for f, v in zip(names, X[3]):
            a.write(f, "e", "set", float(v))
        a.write("model_enabled", "e", "enable")
        ll = LineageLog(MemoryLog())
        p = Predictor(a, lr_model(), flags=["model_enabled"], lineage=ll)
        first = await p.predict("e")
        row = [first.values[f] for f in p.fields]
        a.write(names[0], "e", "set", 123.0)  # a later write does not reach the recorded row
        second = await p.predict("e")
        assert ll.pending == 2
        assert await ll.flush() == 2  # the flush builds and encodes both records
        rec = first.record
        assert rec is first.record  # built once
        assert rec.input_digest == input_digest(row) and rec.output_digest == output_digest(first.outputs)
        assert second.values[names[0]] == 123.0 and second.record.input_digest != rec.input_digest
        reader = LineageReader(ll.log)
        await reader.refresh()
        got = reader.get(rec.prediction_id)
        assert (got.input_digest, got.output_digest, got.key) == (rec.input_digest, rec.output_digest, "e")
        assert dict(first.values) == dict(zip(p.fields, row)) and len(first.values) == len(p.fields)
        await a.close()

    run(main())


def test_list_valued_features_are_handed_out_as_copies() -> None:
    schema = Schema([Feature("vec", LWWRegister), Feature("x", LWWRegister)])
    model = CallableModel(lambda d: {"n": len(d["vec"]) + d["x"]}, features=["vec", "x"], name="n")

    async def main() -> None:
        a = await replica(MemoryLog(), "a", schema)
        a.write("vec", "k", "set", [1.0, 2.0])
        a.write("x", "k", "set", 1.0)
        pred = await Predictor(a, model).predict("k")
        pred.values["vec"].append(99.0)  # a caller's change to what it was handed ...
        assert pred.values["vec"] == [1.0, 2.0]  # ... is not the prediction's
        from crdtsync.inference import input_digest

        assert pred.record.input_digest == input_digest([[1.0, 2.0], 1.0])
        await a.close()

    run(main())


def test_sequenced_inputs_are_replayed_in_log_order_and_explained() -> None:
    """Predictions that read SEQUENCED fields (a CAS-guarded limit, a counter decremented
    only if enough is left) on two replicas: each replica evaluated the operations in log
    order, some refused by their condition, one cancelled; explain rebuilds every read
    value by replaying the operations of the recorded context in log order, also from a
    checkpoint taken in between, and the same replay answers point-in-time reads."""
    from crdtsync.inference import CheckpointStore, Retention

    from crdtsync.events import Batch, Event, MsgpackCodec
    from crdtsync.sequenced import CANCEL, SequencedOp
    from crdtsync.types.counters import PNCounter

    schema = Schema([Feature("income", LWWRegister), Feature("limit", LWWRegister, policy=Strong()),
                     Feature("stock", PNCounter, policy=Strong())])
    model = CallableModel(lambda d: {"offer": min(d["limit"] or 0, d["income"] or 0) + (d["stock"] or 0)},
                          features=["income", "limit", "stock"], name="offer")

    async def main(tmp: Path) -> None:
        log = MemoryLog()
        a, b = await replica(log, "a", schema), await replica(log, "b", schema)
        ll = LineageLog(MemoryLog())
        pa, pb = Predictor(a, model, lineage=ll), Predictor(b, model, lineage=ll)
        preds = []

        async def both() -> None:
            await a.sync(timeout=5)
            await b.sync(timeout=5)
            preds.extend([await pa.predict("c"), await pb.predict("c")])

        a.write("income", "c", "set", 500.0)
        await a.update("limit", "c", "set", 100.0)
        await both()
        assert await b.compare_and_set("limit", "c", 100.0, 150.0)
        assert not await a.compare_and_set("limit", "c", 100.0, 120.0)  # refused in log order
        await b.update("stock", "c", "increment", 3)
        await both()
        cp_store = CheckpointStore(tmp / "cp")
        await Retention(a, cp_store, horizon=3600).checkpoint()  # a base the fold may start from
        assert await a.decrement_if_enough("stock", "c", 2)
        assert not await b.decrement_if_enough("stock", "c", 2)  # 1 left: refused
        # a writer's cancellation ordered before its operation: the dot counts where it
        # comes first (no effect); the operation after it is a duplicate, at the replicas
        # and in the replay
        codec = MsgpackCodec()
        for op in (SequencedOp("lww", CANCEL), SequencedOp("lww", "set", (7.0,))):
            ev = Event("z~i1/s", 1, a.hlc.now(), "limit", "c", op)
            await log.append([codec.encode(Batch.of([ev], {"region": "default", "role": "default"}))])
        await both()
        await a.update("limit", "c", "set", 90.0)
        a.write("income", "c", "set", 80.0)
        await both()
        await ll.flush()
        assert [p.values["limit"] for p in preds] == [100.0, 100.0, 150.0, 150.0, 150.0, 150.0, 90.0, 90.0]
        assert [p.values["stock"] for p in preds] == [0, 0, 3, 3, 1, 1, 1, 1]
        assert Dot("z~i1/s", 1) in preds[-1].record.context
        for cps in (None, cp_store):
            ex = Explainer(LineageReader(ll.log), Fold(EventHistory(log), cps, schema=schema))
            ex.add_model(model)
            for p in preds:
                e = await ex.explain(p.prediction_id)
                assert e.ok and e.inputs_match and e.outputs_match, (dict(p.values), e.values)
                assert e.values == dict(p.values)
        # the same replay answers point-in-time reads
        assert (await as_of(a, preds[2].record.context)).value("limit", "c") == 150.0
        assert (await as_of(a, preds[2].record.context)).value("stock", "c") == 3
        await a.close()
        await b.close()

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run(main(Path(d)))


def test_rows_are_packed_per_log_record_and_a_damaged_record_loses_only_its_rows() -> None:
    async def main() -> None:
        a = await replica(MemoryLog(), "a")
        a.write("income", "c", "set", 10.0)
        a.write("debt", "c", "set", 1.0)
        one, three = LineageLog(MemoryLog(), rows_per_record=1), LineageLog(MemoryLog(), rows_per_record=3)
        pids = {}
        for ll in (one, three):
            p = Predictor(a, limit_model(), lineage=ll)
            pids[id(ll)] = [(await p.predict("c")).prediction_id for _ in range(7)]
            await ll.flush()
        # spec + base + 7 predictions: 9 log records one row each, or 3 of 3 rows
        counts = []
        for ll in (one, three):
            counts.append(len([e async for e in ll.log.read(0)]))
        assert counts == [9, 3]
        for ll in (one, three):
            rd = LineageReader(ll.log)
            await rd.refresh()
            assert rd.ids() == pids[id(ll)] and not rd.corrupt
        payloads = [e.payload async for e in three.log.read(0)]
        damaged = MemoryLog()
        await damaged.append([payloads[0], payloads[1][:-3] + b"\xc1\xc1\xc1", payloads[2]])
        rd = LineageReader(damaged)
        await rd.refresh()
        # the damaged record's rows before the damage are read, the rest counted lost
        assert len(rd.corrupt) == 1 and rd.ids() == pids[id(three)][:3] + pids[id(three)][4:]
        with pytest.raises(ValueError, match="rows_per_record"):
            LineageLog(MemoryLog(), rows_per_record=0)
        await a.close()

    run(main())
