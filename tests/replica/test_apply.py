"""The apply path's handling of own records, the stamped delta form and bad records.

* ``MsgpackCodec.span`` reads a format-2 header and nothing else: garbage, other formats
  and truncated records give None, never an exception.
* A replica skips its own records by header only when it holds every dot in them: a
  record with its origin and seqs beyond what it wrote is decoded and judged like any.
* Readers that do not know the stamped form (format-1 rows, Avro, a type without one)
  see ``UnsupportedVersion``; stamped payloads with bad values are ``CorruptRecord``,
  quarantined, and the records after them are applied.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import Feature, Replica
from crdtsync.clock import HLC
from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.events import AvroCodec, Batch, Event, MsgpackCodec, encode_v2
from crdtsync.log import MemoryLog
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.types.collections import ORSet
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

from ._parts import sync

SCHEMA = [Feature("s", LWWRegister), Feature("c", GCounter), Feature("tags", ORSet)]
ID = ReplicaIdentity("a", "i1", "default", "default")
META = {"region": "default", "role": "default"}
V2 = MsgpackCodec(write_version=2)
WALL = 1_000_000
H0 = WALL << 16


async def _open(log: MemoryLog, identity: ReplicaIdentity = ID) -> Replica:
    return await Replica.open(schema=SCHEMA, log=log, identity=identity, follow=False, control=False,
                              hlc=HLC(clock=lambda: WALL))


def _stamped(origin: str, first: int, tag: str, payloads: list[Any], field: str = "s") -> bytes:
    """A format-2 record of stamped payloads, packed raw (so payloads may be anything)."""
    n = len(payloads)
    meta = [[k, META[k]] for k in sorted(META)]
    return msgpack.packb([2, origin, first, meta, [[field, 1, tag, 2]], H0, [1] * (n - 1), [],
                          [f"k{i}" for i in range(n)], payloads])


# -- span ---------------------------------------------------------------------------
def test_span_reads_the_header_of_format_2_records_only() -> None:
    b = Batch.of([Event("z~1", 4, H0, "s", "k", LWWRegister._raw(H0, "z~1", 1)),
                  Event("z~1", 5, H0 + 1, "s", "k", LWWRegister._raw(H0 + 1, "z~1", 2))], META)
    assert V2.span(V2.encode(b)) == ("z~1", 4, 2)
    assert V2.span(MsgpackCodec(write_version=1).encode(b)) is None
    assert V2.span(AvroCodec().encode(b)) is None
    rec = V2.encode(b)
    for cut in range(len(rec)):
        V2.span(rec[:cut])  # never raises
    weird = [b"", b"\xc1", msgpack.packb([2] * 10), msgpack.packb([2, 5, 1] + [[]] * 7),
             msgpack.packb([2, "o", "1"] + [[]] * 7), msgpack.packb([2, "o", 1, [], [], 0, [], [], [], []]),
             msgpack.packb([2, "o", 1, [], [], 0, [], [], {"a": 1}, []]), msgpack.packb({"a": 1}),
             b"\xdd\xff\xff\xff\xff", b"\x9a" * 5000]
    for data in weird:
        assert V2.span(data) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda tail: msgpack.packb(2)[:0] + b"\x9a\x02" + tail, st.binary(max_size=80)))
def test_span_never_raises_on_garbage(data: bytes) -> None:
    got = V2.span(data)
    assert got is None or (type(got[0]) is str and type(got[1]) is int and got[2] >= 1)


# -- own records --------------------------------------------------------------------
@sync
async def test_own_records_are_skipped_but_a_forged_one_beyond_what_this_replica_wrote_is_not() -> None:
    log = MemoryLog()
    r = await _open(log)
    r.writer("s", "set")("k", "mine")
    await r.flush()
    top = r.context.max_seq(r.actor)
    await r.catch_up()  # reads its own records back: nothing applied again
    assert r.stats.events_applied == 0 and r.stats.records_quarantined == 0
    # a record with this replica's origin, seqs it never wrote, and a corrupt body:
    # not skipped by its header, so decoded, so quarantined
    bad = _stamped(r.actor, top + 1, "lww", [msgpack.ExtType(5, b"x")])
    assert V2.span(bad) == (r.actor, top + 1, 1)
    # and one within what it wrote, whose body is just as corrupt: skipped unread
    held = _stamped(r.actor, top, "lww", [msgpack.ExtType(5, b"x")])
    # a record claiming seq 0 (invalid) is not taken for one already held either
    zero = _stamped(r.actor, 0, "lww", ["x"])
    assert V2.span(zero) is None
    await log.append([held, bad, zero])
    await r.catch_up()
    assert r.stats.records_quarantined == 2
    assert r.value("s", "k") == "mine"
    await r.close()


# -- old readers --------------------------------------------------------------------
@pytest.mark.parametrize("tag,payload", [("lww", 5), ("gcounter", 3)])
def test_the_stamped_form_in_format_1_rows_is_an_unsupported_version(tag: str, payload: Any) -> None:
    rows = [[H0, "s", 1, "k", tag, 2, payload]]
    rec = msgpack.packb([1, "z~1", 1, [], rows])
    with pytest.raises(UnsupportedVersion):
        MsgpackCodec().decode(rec)


def test_the_stamped_form_in_avro_is_an_unsupported_version() -> None:
    codec = AvroCodec()
    b = Batch.of([Event("z~1", 1, H0, "s", "k", LWWRegister._raw(H0, "z~1", 5))], META)
    rec = codec.encode(b)
    import io

    import fastavro

    obj: Any = fastavro.schemaless_reader(io.BytesIO(rec), codec._schema, None)
    obj["events"][0]["delta_version"] = 2
    obj["events"][0]["delta"] = msgpack.packb(5)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, codec._schema, obj)
    with pytest.raises(UnsupportedVersion):
        codec.decode(buf.getvalue())


def test_a_type_without_a_stamped_form_refuses_delta_version_2_in_format_2() -> None:
    rec = encode_v2("z~1", 1, META, [["tags", 1, "orset", 2]], [H0], [], ["k"], [[]])
    with pytest.raises(UnsupportedVersion):
        V2.decode(rec)


# -- bad stamped payloads -----------------------------------------------------------
BAD_STAMPED = [
    ("lww", [msgpack.ExtType(5, b"x")]), ("lww", [1, [msgpack.ExtType(1, b"")]]),
    ("lww", [{"b": 1, "a": 2}]), ("lww", ["ok", {"a": [1, {"z": 1, "y": 2}]}]),
    ("gcounter", [0]), ("gcounter", [-1]), ("gcounter", [2**63]), ("gcounter", [True]),
    ("gcounter", ["3"]), ("gcounter", [1.0]), ("gcounter", [None]), ("gcounter", [2, 0]),
]


@pytest.mark.parametrize("tag,payloads", BAD_STAMPED, ids=[f"{t}-{p!r}" for t, p in BAD_STAMPED])
def test_bad_stamped_payloads_are_corrupt_records(tag: str, payloads: list[Any]) -> None:
    rec = _stamped("z~1", 1, tag, payloads, "s" if tag == "lww" else "c")
    with pytest.raises(CorruptRecord):
        V2.decode(rec)
    with pytest.raises(CorruptRecord):
        V2.decode_record(rec)


@sync
async def test_a_replica_quarantines_bad_stamped_records_and_applies_what_follows() -> None:
    log = MemoryLog()
    r = await _open(log)
    good_first = _stamped("z~1", 1, "lww", ["ok", 2])
    bad = [_stamped("z~1", 3 + i, t, p, "s" if t == "lww" else "c") for i, (t, p) in enumerate(BAD_STAMPED)]
    after = _stamped("z~1", 3, "gcounter", [4, 6], "c")  # the seqs the bad ones claimed
    await log.append([good_first, *bad, after])
    await r.catch_up()
    assert r.stats.records_quarantined == len(BAD_STAMPED)
    assert r.value("s", "k0") == "ok" and r.value("s", "k1") == 2
    assert r.value("c", "k0") == 4 and r.value("c", "k1") == 6
    assert r.context.max_seq("z~1") == 4
    await r.close()


@sync
async def test_stamped_records_apply_as_the_general_form_does() -> None:
    """The same events written once stamped and once in the general form give the same state."""
    states = []
    for stamped in (True, False):
        log = MemoryLog()
        r = await _open(log)
        vals: list[Any] = [1, "x", None, 2.5, b"y", 2**63, True]
        if stamped:
            rec = _stamped("z~1", 1, "lww", vals)
        else:
            rec = encode_v2("z~1", 1, META, [["s", 1, "lww", 1]], [H0 + i for i in range(len(vals))], [],
                            [f"k{i}" for i in range(len(vals))], [[H0 + i, "z~1", v] for i, v in enumerate(vals)])
        await log.append([rec])
        await r.catch_up()
        states.append((r.export_state()["s"], r.context, [r.value("s", f"k{i}") for i in range(len(vals))]))
        await r.close()
    assert states[0] == states[1]
    assert states[0][2] == [1, "x", None, 2.5, b"y", 2**63, True]


@sync
async def test_a_register_stamped_beyond_i64_is_applied_not_a_crash() -> None:
    """Caught a bug: a valid u64 register stamp >= 2**63 could not be packed into a table
    row, and the struct error escaped the apply loop."""
    for version in (1, 2):
        log = MemoryLog()
        r = await _open(log)
        r.writer("s", "set")("k2", "mine")
        big = 2**63 + 5
        b = Batch.of([Event("z~1", 1, H0, "s", "k", LWWRegister._raw(big, "z~1", "far")),
                      Event("z~1", 2, H0 + 1, "s", "k2", LWWRegister._raw(big + 1, "z~1", "far2")),
                      Event("z~1", 3, H0 + 2, "s", "k3", LWWRegister._raw(H0, "z~1", "near"))], META)
        await log.append([MsgpackCodec(write_version=version).encode(b)])
        await r.catch_up()
        assert [r.value("s", k) for k in ("k", "k2", "k3")] == ["far", "far2", "near"]
        assert r.state("s", "k")._ts == big
        r.write("s", "k", "set", "later")  # a lower stamp: the far one stays
        r.writer("s", "set")("k3", "later")
        assert r.value("s", "k") == "far" and r.value("s", "k3") == "later"
        assert r.view("k2", ["s"]).values == {"s": "far2"}
        await r.close()


@sync
async def test_subscribers_see_the_same_changes_from_the_columnar_path_as_from_events(monkeypatch: Any) -> None:
    """A format-2 record is joined column by column also when someone subscribes: the
    changes offered are those of the event path (same events, record order, refused and
    duplicate events left out), and each is offered once the whole record is applied."""
    from crdtsync.replica.apply import Applier

    events = [Event("z~1", i + 1, H0 + i, "s" if i % 3 else "c", f"k{i % 4}",
                    LWWRegister._raw(H0 + i, "z~1", i) if i % 3 else GCounter._of({"z~1": i + 1}))
              for i in range(12)]
    per_path = {}
    for name, codec in (("events", MsgpackCodec(write_version=1)), ("columns", V2)):
        log = MemoryLog()
        r = await _open(log)
        seen: list[tuple[Any, ...]] = []
        r.subscribe(lambda c: seen.append((c.field, c.key, c.event.dot, c.event.hlc, c.event.delta.value(),
                                           c.local, c.event.dot in r.context, r.value(c.field, c.key))),
                    ["s", "c"])
        calls = []
        real = Applier.apply_batch
        monkeypatch.setattr(Applier, "apply_batch", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
        await log.append([codec.encode(Batch.of(events[:3], META))])  # a prefix, then the whole again
        await log.append([codec.encode(Batch.of(events, META))])
        await r.catch_up()
        monkeypatch.setattr(Applier, "apply_batch", real)
        per_path[name] = (seen, len(calls), r.export_state(), r.context)
        await r.close()
    (ev_seen, ev_calls, ev_state, ev_ctx), (col_seen, col_calls, col_state, col_ctx) = per_path["events"], per_path["columns"]
    assert col_calls == 0 and ev_calls == 2  # format 2 took the columnar path throughout
    assert col_seen == ev_seen and (col_state, col_ctx) == (ev_state, ev_ctx)
    assert [s[2].seq for s in col_seen] == list(range(1, 13))  # each event once, in record order
    assert all(s[6] for s in col_seen)  # the record's dots are in the context when offered
    # the value read in the callback is the one after the whole record
    assert [s[7] for s in col_seen if s[1] == "k0" and s[0] == "s"] == [8, 8]  # k0 set at seqs 5 and 9


@sync
async def test_the_garbage_collector_is_held_off_only_while_a_record_applies() -> None:
    """Collections wait for the end of a record (none inside it), the collector is on
    again after it, also when the record is refused or a subscriber raises, and a
    process that turned it off keeps it off."""
    import gc

    log = MemoryLog()
    r = await _open(log)
    seen: list[bool] = []

    def on_change(c: Any) -> None:
        seen.append(gc.isenabled())
        if c.key == "k1":
            raise RuntimeError("a subscriber's bug")

    r.subscribe(on_change, ["s"])
    await log.append([_stamped("z~1", 1, "lww", [[1.5, "x"], [2.5, "y"], 3]), b"\x93garbage",
                      _stamped("z~1", 4, "lww", ["after"])])
    assert gc.isenabled()
    await r.catch_up()
    assert gc.isenabled()
    assert seen == [False, False, False, False]  # inside the apply of a record: held off
    assert r.stats.records_quarantined == 1 and r.stats.subscriber_errors == 1
    assert r.value("s", "k1") == [2.5, "y"] and r.value("s", "k2") == 3 and r.value("s", "k0") == "after"
    gc.disable()
    try:
        await log.append([_stamped("z~1", 5, "lww", ["late"])])
        await r.catch_up()
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()
    assert seen == [False] * 5 and r.context.max_seq("z~1") == 5
    await r.close()
