"""Lineage records as OpenLineage run events, through a real client and file transport."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from crdtsync.adapters.openlineage import OpenLineageEmitter, run_id
from crdtsync.inference import CallableModel, LineageLog, LineageReader, Predictor
from openlineage.client import OpenLineageClient
from openlineage.client.transport.file import FileConfig, FileTransport

from crdtsync import MemoryLog, Replica
from crdtsync.schema import Feature, Schema
from crdtsync.types.registers import LWWRegister


def test_records_become_run_events_with_a_version_vector_facet(tmp_path: Path) -> None:
    async def main() -> list[str]:
        log = MemoryLog()
        schema = Schema([Feature("income", LWWRegister), Feature("debt", LWWRegister)])
        a = await Replica.open(schema=schema, log=log, name="a")
        b = await Replica.open(schema=schema, log=log, name="b")
        a.write("income", "c", "set", 10.0)
        b.write("debt", "c", "set", 1.0)
        await b.flush()
        await a.sync(timeout=5)
        ll = LineageLog(MemoryLog())
        model = CallableModel(lambda d: {"y": d["income"] - d["debt"]}, features=["income", "debt"], name="m")
        p = await Predictor(a, model, lineage=ll).predict("c")
        await ll.flush()
        rd = LineageReader(ll.log)
        await rd.refresh()
        out = tmp_path / "events.jsonl"
        client = OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(out), append=True)))
        em = OpenLineageEmitter(client, namespace="bank")
        assert em.emit_all(rd.get(pid) for pid in rd.ids()) == 1
        ev = json.loads(out.read_text().splitlines()[0])
        assert ev["eventType"] == "COMPLETE" and ev["run"]["runId"] == run_id(p.prediction_id)
        assert (ev["job"]["namespace"], ev["job"]["name"]) == ("bank", "predict.m")
        facet = ev["run"]["facets"]["crdtsync_versionVector"]
        assert facet["versionVector"] == dict(p.record.context.vv)
        assert facet["entityKey"] == "c" and facet["_schemaURL"].endswith("VersionVectorRunFacet.json")
        pred = ev["run"]["facets"]["crdtsync_prediction"]
        assert pred["inputDigest"] == p.record.input_digest.hex() and pred["modelSha256"] == model.identity.sha256
        assert [d["name"] for d in ev["inputs"]] == ["income", "debt"]
        await a.close()
        await b.close()
        return []

    asyncio.run(main())
