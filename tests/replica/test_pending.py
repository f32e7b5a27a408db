"""The columnar queue of own events: what it encodes is what was written.

Records are decoded with the codecs readers use (batch format 2 column by column and as
a :class:`~crdtsync.events.Batch`, format 1, Avro) and compared event by event with the
events the queue says it holds, for mixed queues: handle (stamped) and ``write()``
(general) entries of one field, several fields, more than ``MAX_BATCH`` events.
"""

from __future__ import annotations

from typing import Any

import pytest

from crdtsync.events import AvroCodec, Batch, Codec, Event, MsgpackCodec
from crdtsync.replica.handles import _pack_flat
from crdtsync.replica.pending import DELTA, LWW_PACKED, LWW_SET, MAX_BATCH, OWN_TOTAL, Pending
from crdtsync.types.collections import ORSet
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

ACTOR = "a~i1"
META = {"region": "eu", "role": "default"}
T0 = 1_000 << 16


def _fill(q: Pending, n: int) -> list[Event]:
    """``n`` events of every kind over three fields; the events they stand for."""
    s_fast = q.entry("s", 1, LWWRegister, LWW_SET)
    s_gen = q.entry("s", 1, LWWRegister, DELTA)
    s_packed = q.entry("s", 1, LWWRegister, LWW_PACKED)
    c_fast = q.entry("c", 2, GCounter, OWN_TOTAL)
    c_gen = q.entry("c", 2, GCounter, DELTA)
    t_gen = q.entry("tags", 1, ORSet, DELTA)
    totals: dict[str, int] = {}
    out = []
    values: list[Any] = [1, -5, 2.5, "x", None, True, b"\x01", 2**63, [1, {"a": 2}], [2.5, "x", None, -3],
                         (b"\x02", True, 2**63)]
    for i in range(n):
        ts = T0 + i * 3
        key = f"k{i % 7}"
        kind = i % 5
        seq = q.first + len(q)
        v = values[i % len(values)]
        if kind == 0 and type(v) is tuple or (type(v) is list and kind == 0 and len(v) == 4):
            stored = _pack_flat(v)  # a flat list as a handle stores it: its msgpack bytes
            q.push(s_packed, key, ts, stored)
            d: Any = LWWRegister._raw(ts, ACTOR, stored)
        elif kind == 0 and type(v) is not list:
            q.push(s_fast, key, ts, v)
            d = LWWRegister._raw(ts, ACTOR, v)
        elif kind <= 1:
            d = LWWRegister().set(values[i % len(values)], actor=ACTOR, ts=ts)
            q.push(s_gen, key, ts, d)
        elif kind == 2:
            totals[key] = totals.get(key, 0) + i + 1
            q.push(c_fast, key, ts, totals[key])
            d = GCounter._of({ACTOR: totals[key]})
        elif kind == 3:
            totals[key] = totals.get(key, 0) + 1
            d = GCounter._of({ACTOR: totals[key]})
            q.push(c_gen, key, ts, d)
        else:
            d = ORSet().add(f"e{i}", actor=ACTOR)
            q.push(t_gen, key, ts, d)
        out.append(Event(ACTOR, seq, ts, "s" if kind <= 1 else ("c" if kind <= 3 else "tags"), key, d,
                         2 if kind in (2, 3) else 1))
    return out


def _decoded(codec: Codec, records: list[bytes]) -> list[Event]:
    return [ev for rec in records for ev in codec.decode(rec).events]


@pytest.mark.parametrize("n", [1, 5, 37, MAX_BATCH, MAX_BATCH + 1, 2 * MAX_BATCH + 13])
def test_mixed_queues_round_trip_through_format_2(n: int) -> None:
    q = Pending(ACTOR, META, MsgpackCodec(write_version=2))
    q.first = 11
    want = _fill(q, n)
    chunk = q.peek()
    assert list(q.events(chunk)) == want
    assert [q.event(i) for i in range(len(q))] == want
    records = q.encode(chunk)
    assert len(records) == -(-n // MAX_BATCH)
    codec = MsgpackCodec()
    assert _decoded(codec, records) == want
    first = 11
    for rec in records:  # each record: contiguous seqs, the writer's meta, at most MAX_BATCH
        b = codec.decode(rec)
        assert b.first_seq == first and len(b) <= MAX_BATCH and dict(b.meta) == META
        assert codec.span(rec) == (ACTOR, first, len(b))
        first += len(b)


@pytest.mark.parametrize("codec", [MsgpackCodec(write_version=1), AvroCodec(), AvroCodec(registry_id=7)],
                         ids=["msgpack-v1", "avro", "avro-registry"])
def test_mixed_queues_round_trip_through_other_codecs(codec: Codec) -> None:
    q = Pending(ACTOR, META, codec)
    want = _fill(q, MAX_BATCH + 40)
    records = q.encode(q.peek())
    assert len(records) == 2
    assert _decoded(codec, records) == want


def test_one_field_written_both_ways_is_two_fields_entries_one_for_the_stamped_form() -> None:
    import msgpack

    q = Pending(ACTOR, META, MsgpackCodec(write_version=2))
    fast = q.entry("s", 1, LWWRegister, LWW_SET)
    gen = q.entry("s", 1, LWWRegister, DELTA)
    q.push(fast, "a", T0, 1)
    q.push(gen, "b", T0 + 1, LWWRegister().set(2, actor=ACTOR, ts=T0 + 1))
    q.push(fast, "c", T0 + 2, 3)
    (rec,) = q.encode(q.peek())
    obj = msgpack.unpackb(rec, raw=False)
    assert obj[4] == [["s", 1, "lww", LWWRegister.STAMPED_VERSION], ["s", 1, "lww", LWWRegister.VERSION]]
    assert obj[7] == [0, 1, 0]
    assert obj[9][0] == 1 and obj[9][2] == 3  # stamped payloads: the value alone
    assert [ev.delta.value() for ev in MsgpackCodec().decode(rec).events] == [1, 2, 3]


def test_take_and_put_back_keep_seqs_and_order() -> None:
    q = Pending(ACTOR, META, MsgpackCodec(write_version=2))
    q.first = 5
    want = _fill(q, 20)
    chunk = q.take(len(q))
    assert len(q) == 0 and q.first == 25 and chunk.first == 5 and chunk.last == 24
    extra = _fill(q, 3)  # written while the append was in flight
    assert [e.seq for e in extra] == [25, 26, 27]
    q.put_back(chunk)
    assert q.first == 5
    assert list(q.events(q.peek())) == want + extra
    part = q.take(4)
    q.take(2)
    with pytest.raises(RuntimeError):
        q.put_back(part)  # only the chunk taken last goes back


def test_a_batch_of_the_queue_equals_the_codec_encoding_of_its_events() -> None:
    """The writer's straight-from-columns format 2 decodes to what the codec's own
    format-2 encoder of the same events decodes to."""
    q = Pending(ACTOR, META, MsgpackCodec(write_version=2))
    want = _fill(q, 50)
    codec = MsgpackCodec(write_version=2)
    ours = codec.decode(q.encode(q.peek())[0])
    theirs = codec.decode(codec.encode(Batch.of(want, META)))
    assert ours.events == theirs.events and dict(ours.meta) == dict(theirs.meta)


@pytest.mark.parametrize("mixed", [False, True], ids=["flat-lists-only", "with-scalars"])
def test_stored_flat_lists_are_spliced_into_the_record_as_the_bytes_packing_them_makes(mixed: bool) -> None:
    """The queue puts the stored bytes of flat lists into a record as they are (no
    unpack and pack again): the record is byte for byte the one packing the values makes."""
    import msgpack

    from crdtsync.events import encode_v2

    q = Pending(ACTOR, META, MsgpackCodec(write_version=2))
    packed = q.entry("s", 1, LWWRegister, LWW_PACKED)
    fast = q.entry("s", 1, LWWRegister, LWW_SET)
    values: list[Any] = []
    for i in range(40):
        v: Any = 7 if mixed and i % 3 == 0 else [float(i), f"v{i}", None, -i, 2**63 + i, b"\x00" * (i % 3)]
        values.append(v)
        if type(v) is list:
            q.push(packed, f"k{i}", T0 + i, _pack_flat(v))
        else:
            q.push(fast, f"k{i}", T0 + i, v)
    (rec,) = q.encode(q.peek())
    # both entries are one wire field (the stamped LWW form): no per-event field column
    plain = encode_v2(ACTOR, 1, META, [["s", 1, "lww", LWWRegister.STAMPED_VERSION]], [T0 + i for i in range(40)],
                      [], [f"k{i}" for i in range(40)], values)
    assert rec == plain
    assert msgpack.unpackb(rec, raw=False)[9] == values
    assert [ev.delta.value() for ev in MsgpackCodec().decode(rec).events] == values


@pytest.mark.parametrize("n", [7, MAX_BATCH + 3])
def test_without_the_stamped_form_records_carry_only_delta_versions_old_readers_know(n: int) -> None:
    """``MsgpackCodec(write_version=2, stamped=False)`` (a fleet with readers of the
    previous release): handle writes of a field share its ``write()`` entry."""
    import msgpack

    q = Pending(ACTOR, META, MsgpackCodec(write_version=2, stamped=False))
    want = _fill(q, n)
    records = q.encode(q.peek())
    assert _decoded(MsgpackCodec(), records) == want
    for rec in records:
        fields = msgpack.unpackb(rec, raw=False)[4]
        assert {(f[2], f[3]) for f in fields} <= {("lww", LWWRegister.VERSION), ("gcounter", GCounter.VERSION),
                                                  ("orset", ORSet.VERSION)}
        assert len(fields) == len({tuple(f) for f in fields})  # each entry once
