"""Event batches and their codecs: exact round trips, frozen bytes, typed errors only."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync import GCounter, LWWRegister, ORSet
from crdtsync.clock import make_hlc
from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.events import AvroCodec, Batch, Event, MsgpackCodec, codec_for

CODECS = [MsgpackCodec(), AvroCodec(), AvroCodec(registry_id=42)]


def sample_batch() -> Batch:
    o = "edge-7~0a1b2c3d"
    ts = make_hlc(1_700_000_000_000)
    s = ORSet()
    return Batch.of([
        Event(o, 5, ts, "clicks", "cust-1", GCounter().increment(3, actor=o)),
        Event(o, 6, ts + 1, "segment", "cust-1", LWWRegister().set("premium", actor=o, ts=ts + 1), 2),
        Event(o, 7, ts + 2, "tags", "cust-2", s.add("vip", actor=o)),
    ], {"region": "eu", "role": "edge"})


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.name}")
def test_roundtrip_is_exact(codec):
    b = sample_batch()
    blob = codec.encode(b)
    back = codec.decode(blob)
    assert back == b
    assert codec.encode(back) == blob
    assert [e.dot for e in back] == [("edge-7~0a1b2c3d", s) for s in (5, 6, 7)]


# Frozen wire format of the sample batch: a change here is a batch format version bump.
GOLDEN_MSGPACK = (
    "9501af656467652d377e3061316232633364059292a6726567696f6ea2657592a4726f6c65a46564"
    "67659397cf018bcfe568000000a6636c69636b7301a6637573742d31a867636f756e746572019192"
    "af656467652d377e30613162326333640397cf018bcfe568000001a77365676d656e7402a6637573"
    "742d31a36c77770193cf018bcfe568000001af656467652d377e3061316232633364a77072656d69"
    "756d97cf018bcfe568000002a47461677301a6637573742d32a56f7273657401929192a376697091"
    "92af656467652d377e3061316232633364019193af656467652d377e30613162326333640190"
)


def test_msgpack_batch_bytes_are_frozen():
    blob = MsgpackCodec().encode(sample_batch())
    assert blob.hex() == GOLDEN_MSGPACK
    assert blob == MsgpackCodec().encode(MsgpackCodec().decode(blob))


def test_registry_framing_checks_the_schema_id():
    blob = AvroCodec(registry_id=42).encode(sample_batch())
    assert blob[0] == 0 and blob[1:5] == (42).to_bytes(4, "big")
    with pytest.raises(CorruptRecord, match="schema id"):
        AvroCodec(registry_id=7).decode(blob)
    with pytest.raises(CorruptRecord):
        AvroCodec().decode(blob)


def test_unknown_future_version_is_typed():
    obj = msgpack.unpackb(MsgpackCodec().encode(sample_batch()))
    obj[0] = 9
    with pytest.raises(UnsupportedVersion):
        MsgpackCodec().decode(msgpack.packb(obj))


def test_unknown_type_tag_is_corrupt():
    obj = msgpack.unpackb(MsgpackCodec().encode(sample_batch()))
    obj[4][0][4] = "no-such-type"
    with pytest.raises(CorruptRecord, match="unknown type tag"):
        MsgpackCodec().decode(msgpack.packb(obj))


def test_batches_must_be_contiguous_and_single_origin():
    b = sample_batch()
    with pytest.raises(ValueError):
        Batch("x", 1, b.events)
    with pytest.raises(ValueError):
        Batch.of([])


def test_codec_for():
    assert codec_for("msgpack").name == "msgpack" and codec_for("avro").name == "avro"
    with pytest.raises(ValueError, match="unknown codec"):
        codec_for("json")


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.name}")
@given(data=st.data())
def test_garbage_truncation_and_bit_flips_raise_only_typed_errors(codec, data):
    blob = codec.encode(sample_batch())
    mode = data.draw(st.sampled_from(["random", "truncate", "flip"]))
    if mode == "random":
        bad = data.draw(st.binary(max_size=200))
    elif mode == "truncate":
        bad = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        ba = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(ba) - 1))
            ba[i] ^= 1 << data.draw(st.integers(0, 7))
        bad = bytes(ba)
    try:
        batch = codec.decode(bad)
    except (CorruptRecord, UnsupportedVersion):
        return
    for ev in batch:  # whatever decodes is a usable batch
        ev.delta.value()
        ev.delta.join(ev.delta)


@given(st.recursive(st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4) | st.binary(max_size=4),
                    lambda x: st.lists(x, max_size=6), max_leaves=30))
def test_hostile_structures_are_corrupt_records(obj):
    try:
        MsgpackCodec().decode(msgpack.packb(obj))
    except (CorruptRecord, UnsupportedVersion):
        pass
