"""Shared laws for the feature aggregates, plus windowed updates with arbitrary event times.

The law suite stamps every operation with a fresh HLC time, later than everything its
replica has seen, so it never produces late data. ``test_late_and_out_of_order_times``
drives the windowed types with explicit timestamps anywhere in the past or future of
the issuing replica, under random causal delivery, and checks every replica against the
reference model after every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from crdtsync.clock import make_hlc
from crdtsync.testing import CRDTLaws, HistoryEvent, spec_for
from crdtsync.testing.specs.aggregates import BUCKET_MS, BUCKETS, windowed_model
from crdtsync.types.aggregates import HyperLogLog, Mean, WindowedCounter, WindowedSum


class TestWindowedCounterLaws(CRDTLaws):
    spec = spec_for(WindowedCounter)


class TestWindowedSumLaws(CRDTLaws):
    spec = spec_for(WindowedSum)


class TestMeanLaws(CRDTLaws):
    spec = spec_for(Mean)


class TestHyperLogLogLaws(CRDTLaws):
    spec = spec_for(HyperLogLog)


@given(st.data(), st.sampled_from([WindowedCounter, WindowedSum]))
def test_late_and_out_of_order_times(data: st.DataObject, cls: Any) -> None:
    spec = spec_for(cls)
    model = windowed_model(BUCKET_MS, BUCKETS)
    n = 3
    states = [spec.empty() for _ in range(n)]
    seen: list[set[int]] = [set() for _ in range(n)]
    history: list[HistoryEvent] = []
    deltas: list[Any] = []
    inflight: list[tuple[int, int]] = []  # (destination, event id)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        ready = [i for i, (dst, eid) in enumerate(inflight) if history[eid].past <= seen[dst]]
        deliver: bool = data.draw(st.booleans(), label="deliver?") if ready else False
        if deliver:
            i = data.draw(st.sampled_from(ready), label="message")
            dst, eid = inflight[i]
            if not data.draw(st.booleans(), label="keep duplicate"):
                inflight.pop(i)
            states[dst] = states[dst].join(deltas[eid])
            seen[dst].add(eid)
            note(f"deliver e{eid} to r{dst}")
        else:
            r = data.draw(st.integers(0, n - 1), label="replica")
            op = data.draw(spec.ops, label="op")
            wall = data.draw(st.integers(0, 60), label="wall_ms")
            ts = make_hlc(wall)
            eid = len(history)
            was_accepted = states[r].accepts(ts)
            delta = op.apply(states[r], actor=f"r{r}", ts=ts)
            history.append(HistoryEvent(eid, f"r{r}", ts, op, frozenset(seen[r])))
            deltas.append(delta)
            if not was_accepted:
                assert delta == spec.empty(), "a late update must return the empty delta"
            states[r] = states[r].join(delta)
            seen[r].add(eid)
            inflight.extend((dst, eid) for dst in range(n) if dst != r)
            note(f"r{r}: {op!r} at {wall} ms (accepted={was_accepted})")
        for r in range(n):
            got = states[r].value()
            want = model([e for e in history if e.id in seen[r]])
            assert got == want, f"r{r} shows {got!r}, reference model says {want!r}"
    final = spec.empty()
    for d in data.draw(st.permutations(deltas), label="order"):
        final = final.join(d)
    assert final.value() == model(history)
