"""``crdtsync explain ID`` in a subprocess, on the bank scenario's data directories."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from crdtsync.inference.bank import run_bank_scenario

from ._tamper import alter_event

FACTORY = "crdtsync.inference.bank:credit_limit_model"


def _explain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from crdtsync.cli import main; main()", "explain", *args],
                          capture_output=True, text=True, timeout=120, env={"COLUMNS": "160", "PATH": ""})


def test_explain_command_rich_json_and_exit_status(tmp_path: Path) -> None:
    lines: list[str] = []
    rounds = asyncio.run(run_bank_scenario(tmp_path, lines.append))
    offline = rounds[0]
    assert offline.answers == {"cloud": 15_000, "branch": 10_000}
    assert rounds[1].answers == {"cloud": 15_000, "branch": 15_000} and rounds[1].agree
    branch = offline.predictions["branch"]
    res = _explain(branch.prediction_id, "--data", str(tmp_path / "branch"), "--json", "--model-factory", FACTORY)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["outputs_match"] and doc["output_values"] == {"credit_limit": 10_000}
    assert doc["values"] == {"income_monthly": 4200.0, "risk_score": 0.35, "credit_line_open": True}
    assert {e["field"] for e in doc["events"]} == {"income_monthly", "risk_score"}
    assert all(e["replica"] == "cloud" for e in doc["events"])

    res = _explain(branch.prediction_id, "--data", str(tmp_path / "branch"))
    assert res.returncode == 0, res.stderr
    assert "reproduced" in res.stdout and "not re-run" in res.stdout and "risk_score" in res.stdout

    # crdtsync compact honours the lineage horizon (a day here, from retention.json)
    comp = subprocess.run([sys.executable, "-c", "from crdtsync.cli import main; main()", "compact",
                           str(tmp_path / "branch")], capture_output=True, text=True, timeout=120)
    assert comp.returncode == 0, comp.stderr
    assert "lineage horizon" in comp.stdout and "86400" in comp.stdout
    assert list((tmp_path / "branch" / "lineage" / "checkpoints").glob("checkpoint-*.snap"))
    res = _explain(branch.prediction_id, "--data", str(tmp_path / "branch"), "--json", "--model-factory", FACTORY)
    assert res.returncode == 0 and json.loads(res.stdout)["ok"]

    res = _explain("branch~nope:1", "--data", str(tmp_path / "branch"))
    assert res.returncode != 0 and "LineageNotFound" in res.stderr

    assert alter_event(tmp_path / "branch" / "log", "risk_score", "cust-1", branch.record.context, 0.35, 0.05)
    res = _explain(branch.prediction_id, "--data", str(tmp_path / "branch"), "--json", "--model-factory", FACTORY)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert not doc["inputs_match"] and doc["values"]["risk_score"] == 0.05
    assert doc["output_values"] == {"credit_limit": 10_000}  # the altered input alone does not flip it


def test_explain_reads_a_running_replicas_directory(tmp_path: Path) -> None:
    from crdtsync.inference import Lineage
    from crdtsync.inference.bank import bank_fields, credit_limit_model, write_customer

    from crdtsync import Replica, Schema

    async def main() -> None:
        r = await Replica.open(tmp_path / "r", schema=Schema(bank_fields()), name="branch")
        lin = await Lineage.open(r)
        write_customer(r, "cust-9", 6_000, 0.1)
        pred = await lin.predictor(credit_limit_model()).predict("cust-9")
        await r.flush()
        await lin.log.flush()
        try:  # the replica keeps running (and holding its directory lock) meanwhile
            res = await asyncio.to_thread(_explain, pred.prediction_id, "--data", str(tmp_path / "r"), "--json",
                                          "--model-factory", FACTORY)
            assert res.returncode == 0, res.stderr
            assert json.loads(res.stdout)["output_values"] == {"credit_limit": 15_000}
        finally:
            await lin.close()
            await r.close()

    asyncio.run(main())
