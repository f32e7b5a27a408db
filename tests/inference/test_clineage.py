"""``crdtsync._clineage`` (the C digests and prediction rows of a lineage flush) against
its Python references: BLAKE2b against hashlib, the bulk digests against the per-row
definitions (:func:`input_digest`, :func:`output_digest`), ``pack_predictions`` against
:func:`~crdtsync.inference.encoder.pack_run`, and whole flushes encoded with and without
the extension, byte for byte, on random and hostile inputs.

With a C compiler at install (the build report) the extension must be there; without
one these tests check the pure path alone (there is nothing else to compare)."""

from __future__ import annotations

import hashlib
import importlib
import itertools
import math
import os
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pytest
from crdtsync.inference import LineageLog, LineageReader, Predictor, input_digest, output_digest
from crdtsync.inference import encoder as encoder_mod
from crdtsync.inference._scenario import dataset, lr_model, schema
from crdtsync.inference.digests import input_digests, output_digests
from crdtsync.inference.encoder import FlushEncoder, pack_run
from crdtsync.inference.lineage_log import LineageStats
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import MemoryLog, Replica, speedups
from crdtsync.clock import Context

MUST, WHY = speedups.must_compile()
try:  # (imported whatever CRDTSYNC_PURE says: these tests compare it with the pure path)
    C: Any = importlib.import_module("crdtsync._clineage")
except ImportError:
    C = None
needs_c = pytest.mark.skipif(C is None and not MUST, reason=f"no C extension to compare with: {WHY}")

BOUNDS = [0, 1, -1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -32, -33, -128, -129, -32768,
          -32769, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30]


def test_the_extension_is_there_when_the_build_had_a_compiler() -> None:
    if MUST:
        assert C is not None, f"crdtsync._clineage is not built although {WHY}: {speedups.REASONS['_clineage']}"
        pure = os.environ.get("CRDTSYNC_PURE", "") not in ("", "0")
        assert (speedups.clineage is None) == pure, speedups.describe()
    else:
        assert C is None and speedups.clineage is None


# -- BLAKE2b -----------------------------------------------------------------------

@needs_c
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.integers(0, 8).flatmap(
    lambda k: st.binary(min_size=max(0, 128 * k - 1), max_size=128 * k + 1))))
def test_blake16_is_hashlibs_blake2b_of_16_bytes(data: bytes) -> None:
    assert C.blake16(data) == hashlib.blake2b(data, digest_size=16).digest()
    assert C.blake16(bytearray(data)) == C.blake16(memoryview(data)) == C.blake16(data)


# -- input digests -----------------------------------------------------------------

class _Float(float):
    pass


class _Str(str):
    pass


SCALARS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**65), st.sampled_from(BOUNDS), st.booleans(), st.none(),
    st.floats(allow_nan=True), st.text(max_size=40), st.text(min_size=250, max_size=300), st.binary(max_size=40),
    st.binary(min_size=250, max_size=260), st.just("\ud800"), st.builds(_Float, st.floats()),
    st.builds(_Str, st.text(max_size=3)), st.builds(np.float64, st.floats()), st.builds(np.int64, st.integers(-5, 5)),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner), st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=12)
ROWS = st.one_of(st.lists(VALUES, max_size=35), st.lists(SCALARS, min_size=16, max_size=40),
                 st.tuples(SCALARS, SCALARS), st.lists(st.floats(), min_size=30, max_size=31))


def _digest_or_error(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # (the same exception type both ways is what is compared)
        return type(exc)


@needs_c
@settings(max_examples=400, deadline=None)
@given(st.lists(ROWS, max_size=6))
def test_bulk_input_digests_in_c_are_the_per_row_definition(rows: list[Any]) -> None:
    want = [_digest_or_error(input_digest, r) for r in rows]
    if any(isinstance(w, type) for w in want):  # a row the definition refuses: the bulk call raises it
        first = next(w for w in want if isinstance(w, type))
        with pytest.raises(first):
            input_digests(rows)
    else:
        assert input_digests(rows) == want
        assert C.digests([speedups.chandles.flat_packb(r) if speedups.chandles else None for r in rows], rows,
                         input_digest) == want


@needs_c
def test_c_digests_refuse_bad_arguments_and_bad_fallbacks() -> None:
    with pytest.raises(TypeError):
        C.digests([b"a"], [], input_digest)
    with pytest.raises(TypeError):
        C.digests((b"a",), [[1]], input_digest)
    with pytest.raises(TypeError, match="not bytes"):
        C.digests([None], [[1]], lambda row: "no")
    with pytest.raises(TypeError):
        C.digests([object()], [[1]], input_digest)  # (not bytes-like)
    with pytest.raises(TypeError):
        C.digests([b"a"], [[1]])


# -- output digests ----------------------------------------------------------------

def _outputs(draw: Any) -> dict[str, Any]:
    grid = np.arange(24, dtype=draw(st.sampled_from([np.float32, np.float64, np.int64, np.int32, ">f4", "<i2"])))
    grid = grid.reshape(4, 6)
    pick = draw(st.sampled_from(["row", "strided", "fortran", "scalar", "copy", "object", "py", "other-dtype",
                                 "other-shape", "list", "readonly"]))
    i = draw(st.integers(0, 3))
    value: Any
    if pick == "row":
        value = grid[i]
    elif pick == "strided":
        value = grid[:, i]
    elif pick == "fortran":
        value = np.asfortranarray(grid)
    elif pick == "scalar":
        value = grid[i, 0]
    elif pick == "copy":
        value = grid[i].copy()
    elif pick == "object":
        value = np.array(["a", None], dtype=object)
    elif pick == "py":
        value = draw(st.one_of(st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=3)))
    elif pick == "other-dtype":
        value = grid[i].astype(np.float16)
    elif pick == "other-shape":
        value = grid[:2]
    elif pick == "list":
        value = [1.0, 2.0]
    else:
        value = grid[i].copy()
        value.setflags(write=False)
    out = {"label": np.array([i], dtype=np.int64)[0], "probabilities": value}
    if draw(st.booleans()):
        out["extra"] = grid[0]
    if draw(st.integers(0, 9)) == 0:
        del out["label"]
    return out


OUTPUTS = st.composite(_outputs)()


@needs_c
@settings(max_examples=400, deadline=None)
@given(st.lists(OUTPUTS, min_size=1, max_size=8))
def test_bulk_output_digests_in_c_are_the_per_row_definition(outs: list[dict[str, Any]]) -> None:
    assert output_digests(outs) == [output_digest(o) for o in outs]
    with speedups.pure():
        assert output_digests(outs) == [output_digest(o) for o in outs]


@needs_c
def test_bulk_output_digests_of_non_dict_mappings_and_numpy_outputs_of_a_model() -> None:
    from types import MappingProxyType

    m = lr_model()
    X, _, _ = dataset()
    outs: list[Any] = [m.run_one(list(map(float, X[i]))) for i in range(20)]
    outs += m.run_batch([list(map(float, X[i])) for i in range(5)])
    outs.insert(3, MappingProxyType(dict(outs[0])))
    assert output_digests(outs) == [output_digest(o) for o in outs]


@needs_c
def test_c_output_digests_refuse_a_bad_plan() -> None:
    a = np.zeros(2)
    good = (("p",), (b"h",), (np.ndarray,), (a.dtype,), (a.shape,))
    assert C.output_digests([{"p": a}], *good, output_digest) == [
        hashlib.blake2b(b"h" + a.tobytes(), digest_size=16).digest()]
    with pytest.raises(ValueError):
        C.output_digests([{"p": a}], (), (), (), (), (), output_digest)
    with pytest.raises(TypeError):
        C.output_digests([{"p": a}], ("p",), ("h",), (np.ndarray,), (a.dtype,), (a.shape,), output_digest)
    with pytest.raises(TypeError):
        C.output_digests(({"p": a},), *good, output_digest)


# -- prediction rows ---------------------------------------------------------------

@dataclass
class _Rec:
    spec: Any
    context: Any
    time: Any
    key: Any
    strong_positions: Any
    staleness_ms: Any
    batch: Any


class _Spec:
    def __init__(self, spec_id: int, strong: tuple[str, ...]) -> None:
        self.spec_id = spec_id
        self.strong = strong
        self.actor = "a"


HOSTILE_INTS = st.one_of(st.integers(-(2**64), 2**65), st.sampled_from(BOUNDS), st.booleans())
STALE = st.one_of(st.none(), st.floats(allow_nan=True), st.sampled_from([2.0**63, -(2.0**63), 2.0**63 - 1024, -0.0, 12.7]),
                  HOSTILE_INTS, st.builds(_Float, st.floats(-5, 5)))
BATCH = st.one_of(st.none(), st.tuples(HOSTILE_INTS, HOSTILE_INTS, HOSTILE_INTS), st.lists(st.integers(0, 3), max_size=4),
                  st.tuples(st.integers(0, 3)))
STRONG = st.one_of(st.dictionaries(st.sampled_from(["s", "t", "u"]), st.one_of(st.none(), HOSTILE_INTS), max_size=3),
                   st.just({}))
KEYS = st.one_of(st.text(max_size=40), st.text(min_size=31, max_size=33), st.text(min_size=255, max_size=257),
                 st.just("\udc80"), st.builds(_Str, st.text(max_size=3)), st.integers(0, 3))
DIGESTS = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=300), st.just(bytearray(b"x" * 16)))


@st.composite
def _runs(draw: Any) -> tuple[list[_Rec], tuple[Any, ...], list[Any], list[Any], int, int]:
    strong = draw(st.sampled_from([(), ("s",), ("s", "t")]))
    spec, other = _Spec(draw(st.integers(0, 2**32 - 1)), strong), _Spec(7, strong)
    ctx, other_ctx = Context(), Context()
    n = draw(st.integers(1, 12))
    recs = [_Rec(draw(st.sampled_from([spec, spec, spec, other])), draw(st.sampled_from([ctx, ctx, ctx, other_ctx])),
                 draw(st.one_of(st.integers(0, 2**62), HOSTILE_INTS)), draw(KEYS),
                 draw(STRONG), draw(STALE), draw(BATCH)) for _ in range(n)]
    delta = draw(st.sampled_from([[], [[0, 3, []]], [["x", 1, [2, 3]], [1, 0, []]]]))
    base_id = draw(st.integers(0, 2**32 - 1))
    head = b"\x9c" + msgpack.packb([1, "P", spec.spec_id, base_id])[1:]
    run = (spec, ctx, head, msgpack.packb(delta), strong, base_id, delta)
    dins = [draw(DIGESTS) for _ in range(n)]
    douts = [draw(DIGESTS) for _ in range(n)]
    start = draw(st.integers(0, n))
    stop = draw(st.integers(start, n))
    return recs, run, dins, douts, start, stop


@needs_c
@settings(max_examples=600, deadline=None)
@given(_runs())
def test_pack_predictions_in_c_packs_what_pack_run_packs_and_stops_where_it_must(case: Any) -> None:
    recs, run, dins, douts, start, stop = case
    end, blob = C.pack_predictions(recs, start, stop, run, dins, douts)
    assert start <= end <= stop
    ref_end, ref_blob = pack_run(recs, start, end, run, dins, douts)
    assert (ref_end, ref_blob) == (end, blob)  # the rows the C code packed are the reference's, byte for byte
    if end < stop:  # it stopped: the run ends there, or at a record it was not written for
        rec = recs[end]
        if rec.spec is run[0] and rec.context is run[1]:
            assert not _plain(rec, dins[end], douts[end], run[4]), rec  # (the C code packs every plain row)
            got = _digest_or_error(pack_run, recs, end, end + 1, run, dins, douts)
            assert isinstance(got, type) or got[0] == end + 1  # the reference packs it, or refuses it
        else:
            assert pack_run(recs, end, stop, run, dins, douts) == (end, b"")
    else:
        assert pack_run(recs, start, stop, run, dins, douts) == (stop, blob)


def _int64(v: Any) -> bool:
    return type(v) is int and -(2**63) <= v < 2**64


def _plain(rec: _Rec, din: Any, dout: Any, strong: tuple[str, ...]) -> bool:
    """A row the C packer is written for (exact types, 64-bit ints, encodable strings)."""
    try:
        rec.key.encode() if type(rec.key) is str else None
    except UnicodeEncodeError:
        return False
    stale = rec.staleness_ms
    return (_int64(rec.time) and type(rec.key) is str and type(din) is bytes and type(dout) is bytes
            and (not strong or (type(rec.strong_positions) is dict
                                and all(v is None or _int64(v) for v in map(rec.strong_positions.get, strong))))
            and (stale is None or _int64(stale) or (type(stale) is float and -(2.0**63) <= stale < 2.0**63))
            and (rec.batch is None or (type(rec.batch) is tuple and len(rec.batch) == 3 and all(map(_int64, rec.batch)))))


@needs_c
def test_pack_predictions_refuses_bad_arguments() -> None:
    spec, ctx = _Spec(1, ()), Context()
    run = (spec, ctx, b"\x9c", b"\x90", (), 0, [])
    rec = _Rec(spec, ctx, 1, "k", {}, None, None)
    assert C.pack_predictions([rec], 0, 1, run, [b"d"], [b"e"])[0] == 1
    for bad in ((rec,), 0, 1, run, [b"d"], [b"e"]), ([rec], 0, 2, run, [b"d"], [b"e"]), \
               ([rec], 1, 0, run, [b"d"], [b"e"]), ([rec], 0, 1, run[:4], [b"d"], [b"e"]), \
               ([rec], 0, 1, run, [], [b"e"]), ([rec], 0, 1, (spec, ctx, "h", b"", ()), [b"d"], [b"e"]):
        with pytest.raises((TypeError, ValueError)):
            C.pack_predictions(*bad)
    with pytest.raises(AttributeError):
        C.pack_predictions([object()], 0, 1, run, [b"d"], [b"e"])


# -- whole flushes -----------------------------------------------------------------

@needs_c
def test_a_flush_encodes_the_same_bytes_with_and_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real predictions (flags, strong-free and batch rows, staleness, several contexts and
    a drifting base), encoded by the C path and by the pure one: identical payloads."""
    import asyncio

    async def main() -> list[list[bytes]]:
        X, _, names = dataset()
        r = await Replica.open(schema=schema(names), log=MemoryLog(), name="a")
        for e in range(6):
            for f, v in zip(names, X[e]):
                r.write(f, f"e{e}", "set", float(v))
            r.write("model_enabled", f"e{e}", "enable")
        ll = LineageLog(MemoryLog())
        p = Predictor(r, lr_model(), flags=["model_enabled"], lineage=ll)
        preds: list[Any] = []
        for i in range(40):
            preds.append(await p.predict(f"e{i % 6}"))
            if i % 7 == 0:
                r.write(names[i % 30], f"e{i % 6}", "set", float(i))  # a new context from here on
        preds += await p.predict_batch([f"e{i}" for i in range(6)])
        assert preds[5].record.input_digest  # (digests taken by the caller first: the flush reuses them)
        payloads = []
        for pure in (False, True):
            ids = itertools.count(1000)
            monkeypatch.setattr(encoder_mod.secrets, "randbits", lambda bits, ids=ids: next(ids))
            enc = FlushEncoder(LineageStats(), max_delta_rows=2, rows_per_record=5)
            if pure:
                with speedups.pure():
                    payloads.append(enc.encode(preds, [p.spec]))
            else:
                payloads.append(enc.encode(preds, [p.spec]))
        log = MemoryLog()
        await log.append(payloads[0])
        rd = LineageReader(log)
        await rd.refresh()
        assert rd.ids() == [q.prediction_id for q in preds] and not rd.corrupt
        for q in preds:
            got = rd.get(q.prediction_id)
            assert (got.input_digest, got.output_digest, got.batch, got.context) == (
                q.record.input_digest, q.record.output_digest, q.batch, q.context)
        await r.close()
        return payloads

    c_path, pure_path = asyncio.run(main())
    assert c_path == pure_path and len(c_path) > 5


def test_staleness_beyond_an_int_is_refused_as_the_reference_refuses_it() -> None:
    spec, ctx = _Spec(1, ()), Context()
    run = (spec, ctx, b"\x9c" + msgpack.packb([1, "P", 1, 0])[1:], b"\x90", (), 0, [])
    for stale in (math.nan, math.inf):
        with pytest.raises(ValueError if math.isnan(stale) else OverflowError):
            pack_run([_Rec(spec, ctx, 1, "k", {}, stale, None)], 0, 1, run, [b"d"], [b"e"])


# -- both digests of predictions, in one pass ----------------------------------------

class _By:
    spec = None


@st.composite
def _predictions(draw: Any) -> list[Any]:
    from crdtsync.inference.predictor import Prediction

    n = draw(st.integers(1, 8))
    preds = []
    for _ in range(n):
        row = draw(ROWS)
        out = draw(OUTPUTS)
        din = draw(st.sampled_from([None, None, None, b"taken-in-advance"]))
        dout = draw(st.sampled_from([None, None, None, b"taken-out-advnce"]))
        preds.append(Prediction(_By(), 1, "k", Context(), {}, None, None, row, out, din, dout))  # type: ignore[arg-type]
    return preds


@needs_c
@settings(max_examples=400, deadline=None)
@given(_predictions())
def test_prediction_digests_in_c_are_digests_of_in_python(preds: list[Any]) -> None:
    from crdtsync.inference.predictor import Prediction

    want_in = [_digest_or_error(lambda p: p._din if p._din is not None else input_digest(p._row), p) for p in preds]
    want_out = [p._dout if p._dout is not None else output_digest(p.outputs) for p in preds]
    refused = [w for w in want_in if isinstance(w, type)]
    for pure in (False, True):
        if refused:
            with pytest.raises(refused[0]):
                if pure:
                    with speedups.pure():
                        Prediction.digests_of(preds)
                else:
                    Prediction.digests_of(preds)
            continue
        if pure:
            with speedups.pure():
                got = Prediction.digests_of(preds)
        else:
            got = Prediction.digests_of(preds)
        assert got == (want_in, want_out)


@needs_c
def test_prediction_digests_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError):
        C.prediction_digests((), None, input_digest, output_digest)
    with pytest.raises(TypeError):
        C.prediction_digests([], ("p",), input_digest, output_digest)
    with pytest.raises(AttributeError):
        C.prediction_digests([object()], None, input_digest, output_digest)
