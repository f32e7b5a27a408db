"""Column fast paths (batch format 2) give exactly what the one-event-at-a-time path gives.

A replica applies a format-2 record column by column (``Replica._apply_columns`` and the
types' ``_columns`` / ``_join_columns``) and a format-1 record event by event. Both must
reach the same state, context and counters for any records, including duplicates,
rejected events, states of another type, LWW ties and timestamps from the future.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtsync import Feature, GCounter, LWWRegister, MemoryLog, ORSet, PNCounter, Replica
from crdtsync._tables import LWWTable
from crdtsync.clock import HLC, make_hlc
from crdtsync.errors import CorruptRecord
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.replica import ReplicaIdentity
from crdtsync.types.registers import _Packed

SCHEMA = [
    Feature("clicks", GCounter),
    Feature("score", LWWRegister),
    Feature("net", PNCounter),
    Feature("eu_only", LWWRegister, residency={"eu"}),
    Feature("risk_only", GCounter, writers={"risk"}),
]
WALL = 10_000_000
ACTORS = ["a~1", "b~2", "c~3"]
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=2), st.none(), st.booleans(),
                   st.floats(allow_nan=False, width=64),
                   st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2))


@st.composite
def deltas(draw):
    kind = draw(st.sampled_from(["gc", "gc2", "lww", "lww_tie", "pn", "orset", "empty"]))
    actor = draw(st.sampled_from(ACTORS))
    if kind == "gc":
        return "gc", GCounter().increment(draw(st.integers(1, 5)), actor=actor)
    if kind == "gc2":  # several actors: not the column shape
        return "gc", GCounter({"a~1": draw(st.integers(1, 5)), "b~2": draw(st.integers(1, 5))})
    if kind in ("lww", "lww_tie"):
        ts = make_hlc(WALL, 7) if kind == "lww_tie" else make_hlc(WALL - draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        return "lww", LWWRegister().set(draw(VALUES), actor=actor, ts=ts)
    if kind == "pn":
        n = draw(st.integers(1, 4))
        return "pn", PNCounter().increment(n, actor=actor) if draw(st.booleans()) else PNCounter().decrement(n, actor=actor)
    if kind == "orset":
        return "orset", ORSet().add(draw(st.sampled_from("xy")), actor=actor)
    return "gc", GCounter()


FIELD_FOR = {
    "gc": ["clicks", "risk_only", "unknown_a", "unknown_b"],
    "lww": ["score", "eu_only", "clicks", "unknown_a", "unknown_b"],  # clicks: wrong type
    "pn": ["net", "unknown_a"],
    "orset": ["unknown_b"],
}


@st.composite
def records(draw):
    """Batches from a few origins; seqs may overlap earlier ones (duplicates) or leave gaps."""
    out = []
    next_seq = {"o1~1": 1, "o2~2": 1}
    for _ in range(draw(st.integers(1, 6))):
        origin = draw(st.sampled_from(sorted(next_seq)))
        first = max(1, next_seq[origin] + draw(st.integers(-3, 2)))
        n = draw(st.integers(1, 8))
        one_field = draw(st.booleans())
        events = []
        for i in range(n):
            kind, delta = draw(deltas())
            fname = draw(st.sampled_from(FIELD_FOR[kind]))
            if one_field and events:
                fname, delta = events[0].field, events[0].delta
            future = draw(st.integers(0, 19)) == 0
            ts = make_hlc(WALL + (3_600_000 if future else -draw(st.integers(0, 5))))
            events.append(Event(origin, first + i, ts, fname, f"k{draw(st.integers(0, 2))}", delta))
        next_seq[origin] = max(next_seq[origin], first + n)
        meta = {"region": draw(st.sampled_from(["eu", "us"])), "role": draw(st.sampled_from(["app", "risk"]))}
        out.append(Batch.of(events, meta))
    return out


async def _apply(batches, codec, subscribe=False):
    log = MemoryLog()
    r = await Replica.open(schema=SCHEMA, log=log, identity=ReplicaIdentity("r", "00000000", "eu"),
                           hlc=HLC(clock=lambda: WALL), follow=False)
    seen = []
    if subscribe:
        r.subscribe(lambda ch: seen.append((ch.field, ch.key, ch.event.dot)))
    await log.append([codec.encode(b) for b in batches])
    await r.catch_up()
    state = {f: {k: t[k] for k in t} for f, t in r.store.tables.items() if f != "_schema"}
    out = (state, r.context, r.stats.events_applied, r.stats.events_duplicate,
           dict(r.stats.events_rejected), r.stats.records_quarantined, r.hlc.last, seen)
    r._mark_closed()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_columns_and_events_reach_the_same_replica(batches):
    by_event = asyncio.run(_apply(batches, MsgpackCodec()))
    by_column = asyncio.run(_apply(batches, MsgpackCodec(write_version=2)))
    assert by_column == by_event
    # subscribers see every applied event (format 2 then takes the per-event path)
    with_subs = asyncio.run(_apply(batches, MsgpackCodec(write_version=2), subscribe=True))
    assert with_subs[:-1] == by_event[:-1]
    assert len(with_subs[-1]) == by_event[2]


def _payload_cases():
    leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=3) | st.floats(width=64)
    tree = st.recursive(leaf, lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=2), x, max_size=2),
                        max_leaves=8)
    return st.lists(tree, min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([GCounter, LWWRegister, PNCounter]), _payload_cases())
def test_column_forms_accept_exactly_what_the_decoder_accepts(cls, payloads):
    """``_columns`` is a faster spelling of ``_decode_payload`` over a list, never a laxer one."""
    try:
        one_by_one = [cls._decode_payload(p, 1) for p in payloads]
    except CorruptRecord:
        one_by_one = None
    try:
        cols = cls._columns(payloads, 1)
    except CorruptRecord:
        assert one_by_one is None
        return
    if cols is not None:
        assert one_by_one is not None
        assert cls._from_columns(cols) == one_by_one


def test_gcounter_column_form_of_deltas():
    payloads = [[["a~1", 3]], [["b~2", 1]]]
    cols = GCounter._columns(payloads, 1)
    assert cols == (["a~1", "b~2"], [3, 1])
    table = {"k": GCounter({"a~1": 5})}
    assert GCounter._join_columns(table, ["k", "k"], cols, 0) == (2, [])
    assert table["k"] == GCounter({"a~1": 5, "b~2": 1})
    table = {"k": LWWRegister()}
    assert GCounter._join_columns(table, ["k", "j"], cols, 0) == (1, [0])


def test_lww_table_joins_in_place_like_a_dict():
    ts = make_hlc(WALL)
    writes = [
        ("k", LWWRegister().set(1, actor="b~2", ts=ts)),
        ("k", LWWRegister().set(2, actor="a~1", ts=ts)),          # same ts, lower actor: loses
        ("k", LWWRegister().set(3, actor="c~3", ts=ts)),          # same ts, higher actor: wins
        ("k", LWWRegister().set(0, actor="c~3", ts=ts)),          # same stamp: value tie-break
        ("k", LWWRegister().set({"z": [1]}, actor="a~1", ts=ts + 1)),
        ("j", LWWRegister().set("x", actor="a~1", ts=ts - 5)),
        ("j", LWWRegister().set("y", actor="a~1", ts=ts - 6)),    # older: loses
    ]
    plain: dict = {}
    in_place = LWWTable()
    by_columns = LWWTable()
    cols = LWWRegister._columns([d._payload() for _, d in writes], 1)
    assert type(cols[2][4]) is _Packed
    keys = [k for k, _ in writes]
    for i, (k, d) in enumerate(writes):  # compare after every step: later writes hide mistakes
        cur = plain.get(k)
        plain[k] = d if cur is None else cur.join(d)
        in_place.join_in(k, d)
        step = tuple(c[: i + 1] for c in cols)
        assert LWWRegister._join_columns(by_columns, keys[: i + 1], step, i) == (1, [])
        assert dict(in_place) == plain == dict(by_columns)
    again = dict(plain)
    assert LWWRegister._join_columns(again, keys, cols, 0) == (len(writes), [])
    assert again == plain


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["packed", "float", "int", "mixed"]), n=st.integers(1, 30), data=st.data())
def test_lww_rows_packed_a_column_at_a_time_are_the_rows_packed_one_by_one(kind, n, data):
    """``_tables._rows_of`` (the fold's column path) against ``_row`` per entry."""
    from crdtsync._tables import _row, _rows_of

    values_of = {
        "packed": st.builds(lambda v: _Packed(__import__("msgpack").packb(v)), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)),
        "float": st.floats(allow_nan=True),
        "int": st.integers(-(2**63), 2**63 - 1),
        "mixed": st.one_of(st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=2), st.booleans(), st.none()),
    }[kind]
    values = data.draw(st.lists(values_of, min_size=n, max_size=n))
    stamps = data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n))
    ais = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n))
    assert list(_rows_of(stamps, ais, values)) == list(map(_row, stamps, ais, values))
