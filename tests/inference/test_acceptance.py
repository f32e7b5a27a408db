"""Issue 11 acceptance: a real model, three LocalLog replicas, 1,000 explainable predictions.

A StandardScaler + LogisticRegression trained on ``load_breast_cancer`` and converted
with skl2onnx at test time; its 30 features replicated across cloud, branch and edge
replicas, each on its own LocalLog in a real directory (the cloud's log is the shared
log; branch and edge reach it through forwarders); concurrent updates, an offline period
of the edge, 1,000 predictions spread over the three replicas. Then: explain reproduces
every input digest and output (0 mismatches), also after snapshots and log compaction
within the horizon; beyond the horizon it raises BeyondHorizon; an event log altered
in place (with a valid CRC) is detected; the point-in-time export of the 1,000
(entity, time) pairs equals what the predictions read.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from crdtsync.inference import Lineage, Timeline, point_in_time
from crdtsync.inference._scenario import dataset, lr_model, schema
from crdtsync.inference.lineage import open_explainer

from crdtsync import Replica
from crdtsync.errors import BeyondHorizon
from crdtsync.forwarder import Forwarder
from crdtsync.log.local import LocalLog

from ._tamper import alter_event

ENTITIES = 40
PREDICTIONS = 1000
SEGMENT = 16 * 1024


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class World:
    """Three replicas on LocalLogs with forwarders, and their lineage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.X, _, self.names = dataset()
        self.schema = schema(self.names)
        self.model = lr_model()
        self.rng = random.Random(11)

    async def open(self) -> None:
        self.logs: dict[str, LocalLog] = {}
        self.replicas: dict[str, Replica] = {}
        self.lineage: dict[str, Lineage] = {}
        for name in ("cloud", "branch", "edge"):
            d = self.root / name
            self.logs[name] = await LocalLog.open(d / "log", segment_bytes=SEGMENT)
            self.replicas[name] = await Replica.open(d, schema=self.schema, log=self.logs[name], name=name,
                                                     region="eu", role=name)
            self.lineage[name] = await Lineage.open(self.replicas[name], horizon=3600)
        cloud = self.logs["cloud"]
        self.fwd = {n: Forwarder(self.logs[n], cloud, origin=self.replicas[n].actor,
                                 state_path=self.root / n / "forwarder.json") for n in ("branch", "edge")}
        self.predictors = {n: lin.predictor(self.model, flags=["model_enabled"]) for n, lin in self.lineage.items()}

    async def replicate(self) -> None:
        for r in self.replicas.values():
            await r.flush()
        for _ in range(2):
            for f in self.fwd.values():
                await f.run_once()
        for r in self.replicas.values():
            await r.sync(timeout=60)

    def write_row(self, r: Replica, entity: int, row: Any, jitter: float = 0.0) -> None:
        for name, v in zip(self.names, row):
            r.write(name, f"patient-{entity}", "set", float(v) * (1 + jitter))

    def update(self, r: Replica) -> None:
        e = self.rng.randrange(ENTITIES)
        for _ in range(self.rng.randrange(1, 6)):
            i = self.rng.randrange(len(self.names))
            base = float(self.X[self.rng.randrange(len(self.X)), i])
            r.write(self.names[i], f"patient-{e}", "set", base)

    async def close(self) -> None:
        for lin in self.lineage.values():
            await lin.close()
        for r in self.replicas.values():
            await r.close()
        for log in self.logs.values():
            await log.close()


async def scenario(w: World) -> tuple[list[Any], dict[str, Any]]:
    await w.open()
    cloud = w.replicas["cloud"]
    for e in range(ENTITIES):
        w.write_row(cloud, e, w.X[e])
    await cloud.update("model_enabled", "global", "enable")
    for e in range(ENTITIES):  # the flag is read per entity: enable it for each
        cloud.write("model_enabled", f"patient-{e}", "enable")
    await w.replicate()
    # a checkpoint per replica before any prediction: the base compaction keeps
    cps = {n: await lin.checkpoint() for n, lin in w.lineage.items()}
    preds: list[Any] = []
    names = list(w.replicas)
    for step in range(PREDICTIONS // 10):
        if step == 30:
            w.fwd["edge"].connected = False  # the edge goes offline
        if step == 60:
            w.fwd["edge"].connected = True
        for n in names:  # concurrent updates on every replica
            w.update(w.replicas[n])
        for _ in range(10):
            n = w.rng.choice(names)
            preds.append(await w.predictors[n].predict(f"patient-{w.rng.randrange(ENTITIES)}"))
        if step % 5 == 4:
            await w.replicate()
        if step == 50:
            for r in w.replicas.values():
                await r.snapshot()
    await w.replicate()
    await w.replicate()
    return preds, cps


def test_explain_reproduces_every_prediction_after_snapshots_and_compaction(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def main() -> None:
        preds, cps = await scenario(w)
        assert len(preds) == PREDICTIONS
        by = {n: [p for p in preds if p.record.replica == w.replicas[n].actor] for n in w.replicas}
        assert all(len(v) > 200 for v in by.values())
        # the offline period made decisions differ between replicas for the same entity
        contexts = {p.record.context for p in preds}
        assert len(contexts) > 100
        edge, cloud_actor = w.replicas["edge"].actor, w.replicas["cloud"].actor
        offline = preds[300:600]
        assert any(a.record.context.concurrent(b.record.context) for a in offline if a.record.replica == edge
                   for b in offline if b.record.replica == cloud_actor)
        # the replicas converged afterwards
        assert len({r.digest() for r in w.replicas.values()}) == 1

        async def explain_all(tag: str) -> int:
            mismatches = 0
            for n, lin in w.lineage.items():
                ex = await lin.explainer()
                for p in by[n]:
                    e = ex.explain_record(ex.reader.get(p.prediction_id))
                    assert e.values == p.values, (tag, p.prediction_id)
                    assert e.outputs_match is not None
                    mismatches += (not e.inputs_match) + (not e.outputs_match)
            return mismatches

        assert await explain_all("before compaction") == 0
        for r in w.replicas.values():
            await r.snapshot()
        # compaction with the pre-prediction checkpoint as the kept base (horizon 0: the
        # newest checkpoint older than now), so the initial load's segments go
        sizes = {}
        for n, lin in w.lineage.items():
            lin.retention.horizon = 0
            before = sum(f.stat().st_size for f in (tmp_path / n / "log").glob("*.seg"))
            await lin.compact(w.logs[n])
            sizes[n] = (before, sum(f.stat().st_size for f in (tmp_path / n / "log").glob("*.seg")))
        assert all(after < before for before, after in sizes.values()), sizes
        assert await explain_all("after compaction") == 0
        for n, lin in w.lineage.items():
            ex = await lin.explainer()
            assert ex.fold.history.first_position and ex.fold.history.first_position > 0
            assert ex.fold.base_for(by[n][0].record.context) == cps[n]

        # point-in-time export of the 1,000 (entity, time) pairs (after compaction), each
        # replica's pairs through its timeline: equal to what each prediction read
        exported = 0
        for n in w.replicas:
            ex = await w.lineage[n].explainer()
            timeline = Timeline.from_lineage(ex.reader, w.replicas[n].actor)
            pairs = [(p.key, p.record.time) for p in by[n]]
            rows = point_in_time(ex.fold, pairs, w.predictors[n].fields, timeline=timeline)
            assert [{f: r[f] for f in w.predictors[n].fields} for r in rows] == [p.values for p in by[n]]
            exported += len(rows)
            frame = point_in_time(ex.fold, pairs[:50], w.predictors[n].fields, timeline=timeline, as_frame=True)
            assert list(frame["key"]) == [k for k, _ in pairs[:50]]
        assert exported == PREDICTIONS

        # beyond the horizon: a newer checkpoint becomes the base, older decisions go
        lin = w.lineage["cloud"]
        w.update(w.replicas["cloud"])
        await w.replicas["cloud"].flush()
        await lin.checkpoint()
        await lin.compact(w.logs["cloud"])
        ex = await lin.explainer()
        with pytest.raises(BeyondHorizon, match="no longer holds"):
            ex.explain_record(ex.reader.get(by["cloud"][0].prediction_id))

        await w.close()
        return None

    run(main())


def test_an_altered_event_log_is_detected(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def record() -> list[Any]:
        preds, _ = await scenario(w)
        await w.close()  # on the loop that opened them (a replica is bound to its loop)
        return preds

    preds = run(record())
    edge = [p for p in preds if p.record.replica.startswith("edge~")]
    # the last edge decision with a field whose value came from one unambiguous event:
    # change that event's value in place, re-computing the frame's CRC so the log accepts it
    done = False
    for target in reversed(edge):
        for field in w.names:
            done = alter_event(tmp_path / "edge" / "log", field, target.key, target.record.context,
                               target.values[field], target.values[field] + 1.5)
            if done:
                break
        if done:
            break
    assert done, "the winning event was not found in the edge's log"

    async def check() -> None:
        ex, logs = await open_explainer(tmp_path / "edge", schema=w.schema)
        try:
            e = await ex.explain(target.prediction_id)
            assert not e.inputs_match and not e.ok
            assert e.values[field] == target.values[field] + 1.5
            # every other edge prediction of another entity still reproduces
            other = [p for p in edge if p.key != target.key][:50]
            for p in other:
                assert (await ex.explain(p.prediction_id, refresh=False)).ok
        finally:
            for log in logs:
                await log.close()

    run(check())
