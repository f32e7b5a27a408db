"""Batch format 2 (columnar msgpack): frozen bytes, exact round trips, typed errors only.

Format 1 keeps its own frozen bytes in ``test_events.py``; every reader decodes both.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync import GCounter, LWWRegister, PNCounter
from crdtsync.clock import make_hlc
from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.events import Batch, Columns, Event, MsgpackCodec, codec_for
from tests.test_events import sample_batch

V1, V2 = MsgpackCodec(), MsgpackCodec(write_version=2)
ORIGIN = "edge-7~0a1b2c3d"
TS = make_hlc(1_700_000_000_000)

# Frozen wire format of test_events.sample_batch in format 2 (three fields entries).
GOLDEN_V2_MIXED = (
    "9a02af656467652d377e3061316232633364059292a6726567696f6ea2657592a4726f6c65a46564"
    "67659394a6636c69636b7301a867636f756e7465720194a77365676d656e7402a36c77770194a474"
    "61677301a56f7273657401cf018bcfe5680000009201019300010293a6637573742d31a663757374"
    "2d31a6637573742d32939192af656467652d377e30613162326333640393cf018bcfe568000001af"
    "656467652d377e3061316232633364a77072656d69756d929192a37669709192af656467652d377e"
    "3061316232633364019193af656467652d377e30613162326333640190"
)
# ... and of a one-field batch (the common case: empty field index column).
GOLDEN_V2_ONE_FIELD = (
    "9a02af656467652d377e3061316232633364019292a6726567696f6ea2657592a4726f6c65a46564"
    "67659194a6636c69636b7301a867636f756e74657201cf018bcfe5680000009201019093a6637573"
    "742d30a6637573742d31a6637573742d30939192af656467652d377e3061316232633364019192af"
    "656467652d377e3061316232633364029192af656467652d377e306131623263336403"
)


def one_field_batch() -> Batch:
    return Batch.of([Event(ORIGIN, 1 + i, TS + i, "clicks", f"cust-{i % 2}", GCounter().increment(i + 1, actor=ORIGIN))
                     for i in range(3)], {"region": "eu", "role": "edge"})


@pytest.mark.parametrize("build,golden", [(sample_batch, GOLDEN_V2_MIXED), (one_field_batch, GOLDEN_V2_ONE_FIELD)])
def test_format_2_bytes_are_frozen(build, golden):
    blob = V2.encode(build())
    assert blob.hex() == golden
    assert V2.decode(blob) == build()
    assert V2.encode(V2.decode(blob)) == blob
    # a format-1 codec reads format 2 too, and writes format 1
    assert V1.decode(blob) == build()
    assert V1.encode(V1.decode(blob)) == V1.encode(build())


def test_replicas_write_format_2_and_read_both():
    assert codec_for("msgpack").write_version == 2  # type: ignore[attr-defined]
    assert MsgpackCodec().write_version == 1
    with pytest.raises(ValueError):
        MsgpackCodec(write_version=3)
    assert type(V2.decode_record(V2.encode(sample_batch()))) is Columns
    assert type(V2.decode_record(V1.encode(sample_batch()))) is Batch


def _events(draw_hlcs, types):
    out = []
    for i, (h, t) in enumerate(zip(draw_hlcs, types)):
        if t == 0:
            d = GCounter().increment(i + 1, actor=ORIGIN if i % 3 else "other~1")
        elif t == 1:
            d = LWWRegister().set([i, {"b": 1, "a": None}] if i % 4 == 0 else f"v{i}", actor="w~2", ts=h)
        elif t == 2:
            d = PNCounter().decrement(i + 1, actor=ORIGIN)
        else:
            d = GCounter()  # an empty state is a valid delta too
        out.append(Event(ORIGIN, 10 + i, h, f"f{t}", f"k{i % 5}", d, 1 + (i % 2 if t == 1 else 0)))
    return out


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 3)), min_size=1, max_size=40))
def test_roundtrip_is_exact_for_any_mix(rows):
    batch = Batch.of(_events([h for h, _ in rows], [t for _, t in rows]), {"role": "x"})
    blob = V2.encode(batch)
    back = V2.decode(blob)
    assert back == batch
    assert V2.encode(back) == blob
    assert V1.decode(V1.encode(back)) == batch


@given(data=st.data())
def test_garbage_truncation_and_bit_flips_raise_only_typed_errors(data):
    blob = V2.encode(data.draw(st.sampled_from([sample_batch(), one_field_batch()])))
    mode = data.draw(st.sampled_from(["truncate", "flip"]))
    if mode == "truncate":
        bad = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        ba = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(ba) - 1))
            ba[i] ^= 1 << data.draw(st.integers(0, 7))
        bad = bytes(ba)
    try:
        batch = V2.decode(bad)
    except (CorruptRecord, UnsupportedVersion):
        return
    for ev in batch:  # whatever decodes is a usable batch
        ev.delta.value()
        ev.delta.join(ev.delta)


_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4) | st.binary(max_size=4)
_tree = st.recursive(_leaf, lambda x: st.lists(x, max_size=4), max_leaves=12)


@given(st.lists(_tree, max_size=9))
def test_hostile_structures_are_corrupt_records(tail):
    try:
        V2.decode(msgpack.packb([2, *tail]))
    except (CorruptRecord, UnsupportedVersion):
        pass


def _mutated(**changes):
    obj = msgpack.unpackb(V2.encode(sample_batch()))
    names = ["version", "origin", "first_seq", "meta", "fields", "hlc0", "steps", "fix", "keys", "payloads"]
    for k, v in changes.items():
        obj[names.index(k)] = v
    return msgpack.packb(obj)


@pytest.mark.parametrize("changes,match", [
    ({"fix": [0, 0, 1]}, "field index"),              # entry 2 unused
    ({"fix": [1, 0, 2]}, "not canonical"),            # not in order of first use
    ({"fix": [0, 1, 3]}, "not canonical"),            # out of range
    ({"fix": [0, 1]}, "field index"),                 # wrong length
    ({"fix": [0, True, 2]}, "field index"),
    ({"steps": [1]}, "hlc column"),
    ({"steps": [1, -1]}, "bad hlc step"),             # steps are u64 (wrapping)
    ({"hlc0": -1}, "bad hlc"),
    ({"keys": ["a", "b"]}, "payload column"),
    ({"keys": ["a", 1, "c"]}, "entity key"),
    ({"keys": ["a", "b", "c" * 5000]}, "entity key"),
    ({"keys": []}, "event list"),
    ({"fields": [["clicks", 1, "gcounter", 1]] * 3}, "repeated"),
    ({"fields": [["clicks", 1, "gcounter", 1], ["segment", 2, "lww", 1], ["tags", 0, "orset", 1]]}, "field version"),
    ({"fields": [["clicks", 1, "gcounter", 1], ["segment", 2, "nope", 1], ["tags", 1, "orset", 1]]}, "unknown type tag"),
    ({"first_seq": 0}, "first_seq"),
    ({"payloads": [[["x", 0]], [1, "a", None], []]}, "gcounter"),
])
def test_malformed_columns_are_corrupt(changes, match):
    with pytest.raises(CorruptRecord, match=match):
        V2.decode(_mutated(**changes))


def test_hlc_steps_wrap_modulo_2_64():
    top = 2**64 - 1
    batch = Batch.of([Event(ORIGIN, 1, top, "f", "k", GCounter().increment(1, actor=ORIGIN)),
                      Event(ORIGIN, 2, 0, "f", "k", GCounter().increment(2, actor=ORIGIN)),
                      Event(ORIGIN, 3, top, "f", "k", GCounter().increment(3, actor=ORIGIN))])
    obj = msgpack.unpackb(V2.encode(batch))
    assert obj[5:7] == [top, [1, top]]
    assert V2.decode(V2.encode(batch)) == batch


def test_one_entry_needs_an_empty_field_index():
    obj = msgpack.unpackb(V2.encode(one_field_batch()))
    obj[7] = [0, 0, 0]
    with pytest.raises(CorruptRecord, match="must be empty"):
        V2.decode(msgpack.packb(obj))


def test_newer_delta_version_is_unsupported():
    with pytest.raises(UnsupportedVersion):
        V2.decode(_mutated(fields=[["clicks", 1, "gcounter", 9], ["segment", 2, "lww", 1], ["tags", 1, "orset", 1]]))
    with pytest.raises(UnsupportedVersion):
        V2.decode(_mutated(version=3))


# -- the envelope (what a log checks before any replica decodes the events) ---------------


@pytest.mark.parametrize("codec", [V1, V2], ids=["format-1", "format-2"])
def test_envelope_reads_origin_seq_and_meta_of_both_formats(codec):
    batch = sample_batch()
    assert codec.envelope(codec.encode(batch)) == (batch.origin, batch.first_seq, dict(batch.meta))


@pytest.mark.parametrize(("data", "error", "match"), [
    (b"", CorruptRecord, "not a crdtsync batch"),
    (b"\xc1\x00\x01", CorruptRecord, "not a crdtsync batch"),
    (msgpack.packb({"a": 1}), CorruptRecord, "not a crdtsync batch"),
    (msgpack.packb([]), CorruptRecord, "bad batch version"),
    (msgpack.packb([True, "a", 1, [], []]), CorruptRecord, "bad batch version"),
    (msgpack.packb([99, "a", 1, [], []]), UnsupportedVersion, "newer than this build"),
    (msgpack.packb([7, "x"]), UnsupportedVersion, "newer than this build"),
    (msgpack.packb([2, "a", 1, [], []]), CorruptRecord, "expected 10 fields"),
    (msgpack.packb([1, "", 1, [], []]), CorruptRecord, "bad origin"),
    (msgpack.packb([1, "a", 0, [], []]), CorruptRecord, "bad first_seq"),
    (msgpack.packb([1, "a", 1, [["region"]], []]), CorruptRecord, "bad meta entry"),
    (msgpack.packb([1, "a", 1, [], []])[:-2], CorruptRecord, "not a crdtsync batch"),
])
def test_envelope_refuses_what_is_not_a_batch_with_typed_errors(data, error, match):
    with pytest.raises(error, match=match):
        V2.envelope(data)


@given(st.binary(max_size=200))
def test_envelope_raises_only_typed_errors_on_garbage(data):
    try:
        V2.envelope(data)
    except (CorruptRecord, UnsupportedVersion):
        pass  # the two verdicts a log files in its dead-letter topic
