"""The bank scenario: a credit-limit decision on the cloud and a branch, explained.

The demo's decision step and the inference guide use this module. A credit-limit model
(:func:`credit_limit_model`: 15,000 for a low-risk customer with a verified income of at
least 5,000 a month, 10,000 otherwise) runs on every replica of a fleet; while a branch
is cut off from the cloud the two can decide differently for the same customer, and
:class:`CreditDecisions` shows why: the inputs that differed and the events each replica
had seen that the other had not (from :func:`~crdtsync.inference.explain`). Once they
converge, they decide alike from the same context.

Use (a replica per name, each with a data directory)::

    decisions = await CreditDecisions.open({"cloud": cloud, "branch": branch})
    rnd = await decisions.decide("cust-1")
    for line in rnd.lines():
        print(line)
    await decisions.close()

:func:`bank_fields` are the fields the model reads (add them to a schema);
:func:`run_bank_scenario` runs the whole story on two fresh replicas and returns what
it printed (the guide's transcript).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdtsync.schema import Definition, Feature, Flag
from crdtsync.types.flags import DisableWinsFlag
from crdtsync.types.registers import LWWRegister

from .explain import Explanation
from .fold import EventRef
from .lineage import Lineage
from .models import CallableModel, Outputs
from .predictor import Prediction, Predictor

if TYPE_CHECKING:
    from crdtsync.replica import Replica

__all__ = ["bank_fields", "credit_limit_model", "write_customer", "CreditDecisions", "DecisionRound",
           "run_bank_scenario"]

FEATURES = ("income_monthly", "risk_score")
FLAG = "credit_line_open"


def bank_fields() -> list[Definition]:
    """The fields the credit-limit model reads: two features and a flag."""
    return [
        Feature("income_monthly", LWWRegister, description="verified monthly income"),
        Feature("risk_score", LWWRegister, description="risk score from the risk team, 0 (safe) to 1"),
        Flag(FLAG, lambda: DisableWinsFlag(default=True), description="credit line open (disable wins)"),
    ]


def _limit(d: dict[str, Any]) -> Outputs:
    income, risk = d["income_monthly"] or 0.0, d["risk_score"]
    risk = 1.0 if risk is None else risk
    return {"credit_limit": 15_000 if risk < 0.2 and income >= 5_000 else 10_000}


def credit_limit_model() -> CallableModel:
    """15,000 when ``risk_score < 0.2`` and ``income_monthly >= 5,000``; else 10,000."""
    return CallableModel(_limit, features=FEATURES, name="credit-limit", version="3")


def write_customer(replica: Replica, key: str, income_monthly: float, risk_score: float) -> None:
    """Write a customer's two features at ``replica`` (flush or replicate afterwards)."""
    replica.write("income_monthly", key, "set", float(income_monthly))
    replica.write("risk_score", key, "set", float(risk_score))


@dataclass
class DecisionRound:
    """One customer's decision on every replica, explained."""

    key: str
    predictions: dict[str, Prediction]
    explanations: dict[str, Explanation]
    #: replica -> events behind its decision that some other replica's context lacks
    only_seen_by: dict[str, list[EventRef]] = field(default_factory=dict)

    @property
    def answers(self) -> dict[str, Any]:
        return {n: p.outputs["credit_limit"] for n, p in self.predictions.items()}

    @property
    def agree(self) -> bool:
        return len(set(self.answers.values())) == 1

    @property
    def differing(self) -> dict[str, dict[str, Any]]:
        """field -> {replica: value}, for the inputs the replicas read differently."""
        names = list(self.predictions)
        fields = self.predictions[names[0]].record.fields
        out = {}
        for f in fields:
            vals = {n: self.predictions[n].values[f] for n in names}
            if len({repr(v) for v in vals.values()}) > 1:
                out[f] = vals
        return out

    def lines(self) -> list[str]:
        """What the demo prints."""
        out = [f"credit limit for {self.key}: " + ", ".join(f"{n} {v:,}" for n, v in self.answers.items())
               + ("  (agree)" if self.agree else "  (DISAGREE)")]
        for n, ex in self.explanations.items():
            out.append(f"  {n}: {self.predictions[n].prediction_id} reproduced={ex.ok} "
                       f"context={ex.record.context!r}")
        for f, vals in self.differing.items():
            out.append(f"  input {f} differs: " + ", ".join(f"{n}={v}" for n, v in vals.items()))
        for n, evs in self.only_seen_by.items():
            for e in evs:
                out.append(f"  only {n} had seen: {e.field} = {e.delta} (written by {e.replica}, dot {e.origin}:{e.seq})")
        return out


class CreditDecisions:
    """The credit-limit model on several replicas, with lineage on each."""

    def __init__(self, lineages: Mapping[str, Lineage], predictors: Mapping[str, Predictor]) -> None:
        self.lineages = dict(lineages)
        self.predictors = dict(predictors)

    @classmethod
    async def open(cls, replicas: Mapping[str, Replica], *, horizon: float = 86400) -> CreditDecisions:
        model = credit_limit_model()
        lineages = {n: await Lineage.open(r, horizon=horizon) for n, r in replicas.items()}
        return cls(lineages, {n: lin.predictor(model, flags=[FLAG]) for n, lin in lineages.items()})

    async def decide(self, key: str) -> DecisionRound:
        """Decide for ``key`` on every replica and explain each decision."""
        preds = {n: await p.predict(key) for n, p in self.predictors.items()}
        model = credit_limit_model()
        exps = {}
        for n, lin in self.lineages.items():
            ex = await lin.explainer([model])
            exps[n] = ex.explain_record(ex.reader.get(preds[n].prediction_id))
        only = {}
        for n, e in exps.items():
            others = [p.record.context for m, p in preds.items() if m != n]
            extra = [ev for ev in e.events if any((ev.origin, ev.seq) not in c for c in others)]
            if extra:
                only[n] = extra
        return DecisionRound(key, preds, exps, only)

    async def close(self) -> None:
        for lin in self.lineages.values():
            await lin.close()


async def run_bank_scenario(data_dir: str | Path, say: Callable[[str], None] = print) -> list[DecisionRound]:
    """Cloud and branch decide a credit limit while the branch is offline, then after it
    reconnects; returns the two rounds (and ``say``\\ s what the demo would print)."""
    from crdtsync.forwarder import Forwarder
    from crdtsync.replica import Replica
    from crdtsync.schema import Schema

    data = Path(data_dir)
    schema = Schema(bank_fields())
    cloud = await Replica.open(data / "cloud", schema=schema, name="cloud", region="eu", role="cloud")
    branch = await Replica.open(data / "branch", schema=schema, name="branch", region="eu", role="branch")
    fwd = Forwarder(branch.log, cloud.log, origin=branch.actor, state_path=data / "branch" / "forwarder.json")

    async def replicate() -> None:
        for r in (cloud, branch):
            await r.flush()
        for _ in range(2):
            await fwd.run_once()
        for r in (cloud, branch):
            await r.sync(timeout=60)

    decisions = await CreditDecisions.open({"cloud": cloud, "branch": branch})
    rounds = []
    try:
        write_customer(cloud, "cust-1", 4_200, 0.35)
        await replicate()
        fwd.connected = False  # the branch loses its uplink
        say("the branch is offline; the risk team re-scores cust-1 at the cloud")
        write_customer(cloud, "cust-1", 5_600, 0.12)  # new salary verified, re-scored
        await replicate()
        rnd = await decisions.decide("cust-1")
        rounds.append(rnd)
        for line in rnd.lines():
            say(line)
        fwd.connected = True
        await replicate()
        await replicate()
        say("the branch is back online and has applied everything")
        rnd = await decisions.decide("cust-1")
        rounds.append(rnd)
        for line in rnd.lines():
            say(line)
    finally:
        await decisions.close()
        await cloud.close()
        await branch.close()
    return rounds
