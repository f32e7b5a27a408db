"""The predict path's fast paths agree with the general ones: OnnxModel.run_one (struct
fill, one-row outputs) with run_batch, the bulk digests with the per-row ones, and the
lineage log's background flushes (armed only when due) still write every record."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from crdtsync.inference import LineageLog, LineageReader, Predictor, input_digest, output_digest
from crdtsync.inference._scenario import dataset, lr_model, schema
from crdtsync.inference.digests import input_digests, output_digests
from crdtsync.inference.predictor import Prediction

from crdtsync import MemoryLog, Replica
from crdtsync.errors import ModelInputError


def _bits(outputs: Any) -> dict[str, Any]:
    return {k: (np.asarray(v).dtype.str, np.asarray(v).shape, np.asarray(v).tobytes()) for k, v in outputs.items()}


def test_run_one_is_run_batch_bit_for_bit_on_edge_values_and_refuses_the_same_inputs() -> None:
    m = lr_model()
    X, _, _ = dataset()
    base = list(map(float, X[5]))
    rows = [base, [v * (1 + 1e-9) for v in base], [1e-46] + base[1:],  # rounds to a float32 subnormal/zero
            [float(np.float32(0.1)) + 1e-12] + base[1:], [True] + base[1:], [7] + base[1:], [2**60 + 2**36 + 1] + base[1:],
            ["1.5"] + base[1:],  # numpy parses a numeric string: struct refuses it, numpy's fill decides
            [1e39] + base[1:]]  # beyond float32: numpy makes it inf, struct refuses it
    for row in rows:
        one = m.run_one(row)
        batch = m.run_batch([row])[0]
        assert _bits(one) == _bits(batch), row[0]
        assert output_digest(one) == output_digest(batch)
    for bad in ([None] + base[1:], ["x"] + base[1:]):
        with pytest.raises(ModelInputError):
            m.run_one(bad)
        with pytest.raises(ModelInputError):
            m.run_batch([bad])
    assert math.isinf(float(np.float32(1e39)))  # (what the inf row above relies on)


def test_bulk_digests_equal_the_per_row_digests() -> None:
    m = lr_model()
    X, _, _ = dataset()
    outs = [m.run_one(list(map(float, X[i]))) for i in range(20)]
    mixed: list[Any] = outs[:3] + [{"label": 1.0, "probabilities": [0.25, 0.75]}, {"label": outs[0]["label"]},
                                   {"a": np.zeros(3), "b": np.ones(2), "c": np.int8(3)},
                                   {"label": np.float32(1), "probabilities": outs[1]["probabilities"]}]
    for case in (outs, mixed, mixed[::-1], [mixed[5]] * 3 + outs[:2], []):
        assert output_digests(case) == [output_digest(o) for o in case]
    rows: list[Sequence[Any]] = [list(map(float, X[i])) + [True] for i in range(5)]
    rows += [[[1.0, 2.0], {"b": 1, "a": 2}], ("t", 1), [None, "s"]]
    assert input_digests(rows) == [input_digest(r) for r in rows]
    with pytest.raises(TypeError):
        input_digest([object()])
    with pytest.raises(TypeError):
        input_digests([[1.0], [object()]])


def test_background_flushes_write_every_record_when_flushes_overlap_submits() -> None:
    class SlowLog(MemoryLog):
        async def append(self, records: Sequence[bytes]) -> int:
            await asyncio.sleep(0.01)  # records keep coming while a flush appends
            return await super().append(records)

    async def main() -> None:
        X, _, names = dataset()
        a = await Replica.open(schema=schema(names), log=MemoryLog(), name="a")
        for e in range(10):
            for f, v in zip(names, X[e]):
                a.write(f, f"e{e}", "set", float(v))
        ll = LineageLog(SlowLog(), batch_size=8, flush_interval=0.02, rows_per_record=5)
        p = Predictor(a, lr_model(), lineage=ll)
        preds: list[Prediction] = []
        for i in range(100):
            preds.append(await p.predict(f"e{i % 10}"))
            if i % 3 == 0:
                await asyncio.sleep(0)  # the loop runs the background flushes
        for _ in range(100):  # no explicit flush: the background ones (batch, then interval) write them all
            if ll.stats.records == 100:
                break
            await asyncio.sleep(0.01)
        assert ll.stats.records == 100 and ll.pending == 0 and ll.stats.batches > 1
        rd = LineageReader(ll.log)
        await rd.refresh()
        assert rd.ids() == [q.prediction_id for q in preds] and not rd.corrupt
        for q in preds:
            got = rd.get(q.prediction_id)
            assert (got.input_digest, got.output_digest) == (q.record.input_digest, q.record.output_digest)
            assert got.input_digest == input_digest([q.values[f] for f in p.fields])
        await ll.close()
        await a.close()

    asyncio.run(main())


def test_bulk_output_digests_of_strided_and_fortran_values_equal_the_per_row_ones() -> None:
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    rows = [{"p": grid[:, i], "q": np.asfortranarray(grid)} for i in range(4)]  # strided views, F order
    rows += [{"p": grid[0], "q": grid.copy()}, {"p": grid[1, ::2], "q": grid}, {"p": grid[2].copy(), "q": grid.T}]
    rows.append({"p": np.array(["a", None], dtype=object), "q": grid})
    for case in (rows, rows[::-1], rows[4:] + rows[:4]):
        assert output_digests(case) == [output_digest(o) for o in case]
