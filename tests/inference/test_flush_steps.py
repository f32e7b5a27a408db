"""A lineage flush in steps (``records_per_append``): every record appended once and in
order; an append that fails keeps its step and the steps after it for the next flush; a
record that cannot be encoded is raised and leaves the encoder's bases as they were; and
queued predictions are kept out of the garbage collector's way while they wait (with
``_clineage``), tracked again once flushed, so cycles through them are still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Sequence
from typing import Any

import pytest
from crdtsync.inference import LineageLog, LineageReader, Predictor
from crdtsync.inference._scenario import dataset, lr_model, schema
from crdtsync.inference.record import LineageRecord

from crdtsync import MemoryLog, Replica, speedups


class _FailSecond(MemoryLog):
    """Refuses its second append (once)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def append(self, records: Sequence[bytes]) -> int:
        self.calls += 1
        if self.calls == 2:
            raise OSError("disk said no")
        return await super().append(records)


async def _replica(entities: int = 5) -> tuple[Replica, list[str]]:
    X, _, names = dataset()
    r = await Replica.open(schema=schema(names), log=MemoryLog(), name="a")
    for e in range(entities):
        for f, v in zip(names, X[e]):
            r.write(f, f"e{e}", "set", float(v))
        r.write("model_enabled", f"e{e}", "enable")
    return r, names


def test_a_flush_in_steps_appends_every_record_once_in_order_and_a_failed_step_waits_for_the_next() -> None:
    async def main() -> None:
        r, names = await _replica()
        log = _FailSecond()
        ll = LineageLog(log, records_per_append=3, rows_per_record=2)
        p = Predictor(r, lr_model(), flags=["model_enabled"], lineage=ll)
        preds = []
        for i in range(10):
            preds.append(await p.predict(f"e{i % 5}"))
            if i == 4:
                r.write(names[0], "e0", "set", 1.5)  # a new context mid-way
        with pytest.raises(OSError):
            await ll.flush()  # step 1 appended, step 2 refused
        assert ll.stats.append_failures == 1 and ll.stats.records == 3 and ll.pending == 7
        preds.append(await p.predict("e1"))
        assert await ll.flush() == 8  # the failed step and the one after it first, then the new record
        assert ll.pending == 0 and ll.stats.records == 11
        rd = LineageReader(log)
        await rd.refresh()
        assert rd.ids() == [q.prediction_id for q in preds] and not rd.corrupt
        for q in preds:
            got = rd.get(q.prediction_id)
            assert (got.input_digest, got.output_digest, got.context) == (
                q.record.input_digest, q.record.output_digest, q.record.context)
        with pytest.raises(ValueError, match="records_per_append"):
            LineageLog(MemoryLog(), records_per_append=0)
        await r.close()

    asyncio.run(main())


def test_a_record_that_cannot_be_encoded_is_raised_and_the_bases_stay_as_they_were() -> None:
    async def main() -> None:
        r, _ = await _replica()
        log = MemoryLog()
        ll = LineageLog(log, records_per_append=4)
        p = Predictor(r, lr_model(), lineage=ll)
        good = [await p.predict("e1") for _ in range(3)]
        bad = LineageRecord("x:1", 1, "a", p.model.identity, p.features, (), "e1", r.context, {}, b"d" * 16,
                            b"o" * 16, {}, None, None)  # no spec: cannot be encoded
        ll.submit(bad)
        with pytest.raises(ValueError, match="predictor spec"):
            await ll.flush()
        assert ll.pending == 0  # the failing step (its 3 predictions and the bad record) is dropped
        later = [await p.predict(f"e{i}") for i in range(3)]
        assert await ll.flush() == 3
        rd = LineageReader(log)
        await rd.refresh()
        # the spec and the base of the dropped step were not logged: the later records name
        # what the log holds
        assert rd.ids() == [q.prediction_id for q in later] and not rd.corrupt
        assert all(rd.get(q.prediction_id).input_digest == q.record.input_digest for q in later)
        assert good[0].record.input_digest  # (the caller's predictions are unaffected)
        await r.close()

    asyncio.run(main())


@pytest.mark.skipif(speedups.clineage is None, reason="pure Python cannot untrack objects")
def test_queued_predictions_are_untracked_while_they_wait_and_cycles_through_them_are_collected_after() -> None:
    class Holder:
        pass

    async def main() -> None:
        r, _ = await _replica()
        ll = LineageLog(MemoryLog())
        p = Predictor(r, lr_model(), lineage=ll)
        pred = await p.predict("e2")
        assert not gc.is_tracked(pred) and not gc.is_tracked(pred._row)
        assert await ll.flush() == 1
        assert gc.is_tracked(pred) and not gc.is_tracked(pred._row)  # (the row never needs it: see _clineage)
        h = Holder()
        h.pred = pred  # type: ignore[attr-defined]
        pred.outputs["holder"] = h  # a cycle through the prediction
        seen = weakref.ref(h)
        del h, pred
        gc.collect()
        assert seen() is None
        plain = await Predictor(r, lr_model()).predict("e2")  # not queued: tracked as any object
        assert gc.is_tracked(plain)
        await r.close()

    asyncio.run(main())


def test_dropping_the_queue_frees_held_predictions() -> None:
    async def main() -> Any:
        r, _ = await _replica()
        ll = LineageLog(MemoryLog())
        p = Predictor(r, lr_model(), lineage=ll)
        for _ in range(50):
            await p.predict("e3")
        assert ll.pending == 50
        ll._pending.clear()  # (what a lineage log that is dropped unflushed does to them)
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o).__name__ == "Prediction"]
        await r.close()

    asyncio.run(main())
