"""Store reads through the LWW tables' decoded-value cache and own-write overlay.

Every path that changes a row (own writes fast and general, remote records in bulk and
one by one, tie-breaks, snapshots loaded, rows deleted) must leave ``value`` and ``view``
equal to ``state(...).value()``; a list or dict read is the caller's own copy.
"""

from __future__ import annotations

from typing import Any

from crdtsync import Feature, Replica
from crdtsync._tables import LWWTable
from crdtsync.clock import HLC
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.log import MemoryLog
from crdtsync.replica.definitions import Definitions
from crdtsync.replica.identity import ReplicaIdentity
from crdtsync.replica.stats import ReplicaStats
from crdtsync.replica.store import Store, View
from crdtsync.schema import Schema
from crdtsync.types import registers
from crdtsync.types.counters import GCounter
from crdtsync.types.registers import LWWRegister

from ._parts import sync

SCHEMA = [Feature("s", LWWRegister), Feature("t", LWWRegister), Feature("c", GCounter)]
FIELDS = ("s", "t", "c")
META = {"region": "default", "role": "default"}
WALL = 1_000_000


def _store() -> Store:
    return Store("a~i1", Definitions(Schema(SCHEMA), ReplicaStats()))


def _agree(st: Store, keys: Any) -> None:
    for k in keys:
        view = st.view(k, FIELDS, 0)
        want = {f: st.state(f, k).value() for f in FIELDS}
        assert view.values == want, k
        assert {f: st.value(f, k) for f in FIELDS} == want, k
        assert st.reader(FIELDS)(k) == st.row(k, FIELDS) == [want[f] for f in FIELDS], k


def test_every_row_change_reaches_cached_reads() -> None:
    st = _store()
    t = st.table("s", "lww")
    assert isinstance(t, LWWTable)
    keys = [f"k{i}" for i in range(6)]
    for i, k in enumerate(keys):
        t[k] = LWWRegister._raw(100 + i, "b~1", i)
    _agree(st, keys)  # fills the cache
    t.join_in("k0", LWWRegister._raw(200, "b~1", "joined"))  # wins
    t.join_in("k1", LWWRegister._raw(50, "b~1", "older"))  # loses
    t.join_in("k2", LWWRegister._raw(102, "z~1", "tie-by-actor"))  # equal stamp, larger actor
    t["k3"] = LWWRegister._raw(300, "c~1", [1, 2])
    t._join_lww(["k4", "k5"], ([400, 401], ["d~1", "d~1"], [4.5, None]), 0)  # bulk, all win
    _agree(st, keys)
    assert [st.value("s", k) for k in keys] == ["joined", 1, "tie-by-actor", [1, 2], 4.5, None]
    t._join_lww(["k4", "k0", "k5"], ([399, 500, 10], ["e~1", "a~1", "a~1"], ["lose", 7, "lose"]), 0)  # mixed
    _agree(st, keys)
    assert [st.value("s", k) for k in ("k4", "k0", "k5")] == [4.5, 7, None]
    del t["k1"]
    _agree(st, keys)
    assert st.value("s", "k1") is None and "k1" not in t


def test_own_overlay_writes_are_read_and_folded_before_anything_else_looks() -> None:
    st = _store()
    t = st.table("s", "lww")
    assert isinstance(t, LWWTable)
    t["k"] = LWWRegister._raw(10, "b~1", "remote")
    assert st.view("k", ["s"], 0).values == {"s": "remote"}  # cached
    own = t.own_overlay("a~1")
    assert own is not None
    own["k"] = (t.max_ts + 1, "mine")
    own["n"] = (t.max_ts + 2, 2**63)  # beyond i64 value: a msgpack row
    t.max_ts += 2
    assert st.view("k", ["s"], 0).values == {"s": "mine"}
    assert st.value("s", "n") == 2**63 and not t.own
    own["k"] = (t.max_ts + 1, 3)
    t.max_ts += 1
    assert t["k"] == LWWRegister._raw(t.max_ts, "a~1", 3)
    assert sorted(t) == ["k", "n"] and len(t) == 2


def test_list_and_dict_reads_are_copies() -> None:
    st = _store()
    t = st.table("s", "lww")
    t["k"] = LWWRegister().set({"a": [1]}, actor="b~1", ts=5)
    got = st.value("s", "k")
    got["a"].append(2)
    st.view("k", ["s"], 0).values["s"]["b"] = 1
    assert st.value("s", "k") == {"a": [1]} and st.state("s", "k").value() == {"a": [1]}


def test_the_cache_starts_over_when_full_and_stays_right(monkeypatch: Any) -> None:
    monkeypatch.setattr(LWWTable, "VALUE_CACHE", 8)
    st = _store()
    t = st.table("s", "lww")
    assert isinstance(t, LWWTable)
    for i in range(20):
        t[f"k{i}"] = LWWRegister._raw(i + 1, "b~1", i)
    for i in range(20):
        assert st.value("s", f"k{i}") == i
    assert len(t.cache) <= 8
    for i in range(20):
        t[f"k{i}"] = LWWRegister._raw(i + 100, "b~1", -i)
    assert [st.value("s", f"k{i}") for i in range(20)] == [-i for i in range(20)]


def test_a_loaded_snapshot_replaces_cached_values() -> None:
    st = _store()
    t = st.table("s", "lww")
    t["k"] = LWWRegister._raw(10, "b~1", "old")
    assert st.value("s", "k") == "old"
    st.load({"s": {"k": LWWRegister._raw(5, "b~1", "loaded")}, "c": {"k": GCounter._of({"b~1": 3})}}, st.ctx(), 7)
    assert st.view("k", FIELDS, 0).values == {"s": "loaded", "t": None, "c": 3}
    assert st.position == 7


def test_view_is_an_immutable_named_tuple_with_the_context_and_position() -> None:
    st = _store()
    v = st.view("k", ["s"], 42)
    assert isinstance(v, View) and v.key == "k" and v.hlc == 42 and v.position is None
    assert v == View("k", {"s": None}, st.ctx(), None, 42)


@sync
async def test_reads_between_remote_records_and_own_writes_of_a_replica() -> None:
    log = MemoryLog()
    r = await Replica.open(schema=SCHEMA, log=log, identity=ReplicaIdentity("a", "i1", "default", "default"),
                           follow=False, control=False, hlc=HLC(clock=lambda: WALL))
    h = r.hlc.now()
    s = r.writer("s", "set")
    s("k", "mine")
    assert r.view("k", FIELDS).values["s"] == "mine"
    codec = MsgpackCodec(write_version=2)
    later = Batch.of([Event("z~1", 1, h + 10, "s", "k", LWWRegister._raw(h + 10, "z~1", "theirs")),
                      Event("z~1", 2, h + 11, "t", "k", LWWRegister._raw(h + 11, "z~1", 1))], META)
    await log.append([codec.encode(later)])
    await r.catch_up()
    assert r.view("k", FIELDS).values == {"s": "theirs", "t": 1, "c": 0}
    s("k", "mine again")  # the clock saw h + 11: this stamp wins
    assert r.view("k", FIELDS).values["s"] == "mine again" == r.state("s", "k").value()
    older = Batch.of([Event("z~1", 3, h + 12, "s", "k", LWWRegister._raw(h + 1, "z~1", "stale"))], META)
    await log.append([codec.encode(older)])
    await r.catch_up()
    assert r.value("s", "k") == "mine again" == r.view("k", ["s"]).values["s"]
    await r.close()


def test_registers_stamped_beyond_i64_are_kept_and_read_on_every_join_path() -> None:
    big = 2**63
    for path in ("setitem", "join_in", "bulk", "per-key"):
        st = _store()
        t = st.table("s", "lww")
        assert isinstance(t, LWWTable)
        t["old"] = LWWRegister._raw(5, "b~1", "row")
        assert st.value("s", "old") == "row"  # cached
        if path == "setitem":
            t["old"] = LWWRegister._raw(big, "b~1", "far")
        elif path == "join_in":
            t.join_in("old", LWWRegister._raw(big, "b~1", "far"))
        elif path == "bulk":  # one writer, rising stamps above every row
            t._join_lww(["x", "old"], ([big - 1, big], ["c~1", "c~1"], ["near", "far"]), 0)
        else:  # the per-key loop (a lower stamp first)
            t._join_lww(["x", "old"], ([1, big], ["c~1", "d~1"], ["near", "far"]), 0)
        assert st.value("s", "old") == "far" and st.state("s", "old")._ts == big
        assert st.view("old", ["s"], 0).values == {"s": "far"}
        t.join_in("old", LWWRegister._raw(big - 10, "e~1", "lower"))  # loses
        t._join_lww(["old"], ([7], ["e~1"], ["lower"]), 0)  # loses
        assert st.value("s", "old") == "far" and t.max_ts >= big
        t.join_in("old", LWWRegister._raw(big + 1, "e~1", "higher"))
        assert st.value("s", "old") == "higher" and sorted(t) == sorted(set(t))


def test_remote_bulk_joins_and_own_writes_share_the_overlay_like_joins_one_by_one() -> None:
    """Records joined in bulk wait in the overlay with the own writes (unpacked); every
    read, iteration and slow join sees the same states as joining each delta into a dict."""
    import random

    rng = random.Random(9)
    st = _store()
    t = st.table("s", "lww")
    assert isinstance(t, LWWTable)
    ref: dict[str, LWWRegister] = {}
    keys = [f"k{i}" for i in range(12)]
    own = t.own_overlay("a~1")
    assert own is not None
    for step in range(400):
        move = rng.random()
        if move < 0.4:  # a remote record whose stamps all win: the bulk path
            n = rng.randint(1, 6)
            actor = rng.choice(["b~1", "c~1"])
            ks = [rng.choice(keys) for _ in range(n)]
            ts = list(range(t.max_ts + 1, t.max_ts + 1 + n))
            vals = [rng.choice([step, float(step), f"v{step}", None, 2**63 + step]) for _ in range(n)]
            t._join_lww(ks, (ts, [actor] * n, vals), 0)
            for k, s, v in zip(ks, ts, vals):
                d = LWWRegister._raw(s, actor, v)
                ref[k] = d if k not in ref else ref[k].join(d)
        elif move < 0.7:  # an own write through the overlay (as the set handle does)
            k, s = rng.choice(keys), t.max_ts + 1
            own[k] = (s, step)
            t.max_ts = s
            d = LWWRegister._raw(s, "a~1", step)
            ref[k] = d if k not in ref else ref[k].join(d)
        elif move < 0.8:  # a remote record with a losing stamp: the slow path (folds first)
            k = rng.choice(keys)
            t._join_lww([k], ([5], ["d~1"], ["old"]), 0)
            d = LWWRegister._raw(5, "d~1", "old")
            ref[k] = d if k not in ref else ref[k].join(d)
        else:  # reads
            k = rng.choice(keys)
            want = ref[k].value() if k in ref else None
            assert st.value("s", k) == want and t.value_of(k) == want
            assert (t.get(k) == ref.get(k)) and not t.own
    assert sorted(t) == sorted(ref)
    assert {k: t[k] for k in t} == ref


def test_records_of_one_writer_in_any_stamp_order_join_like_joins_one_by_one() -> None:
    """Records of one writer whose stamps are not above the table's (records of several
    partitions read out of order, a record of an old writer) take the per-key overlay
    join: each delta wins or loses against the overlay's entry or the row for its key,
    ties (the same stamp and writer) go the general way; reads, iteration and every later
    join see what joining each delta into a dict gives."""
    import random

    for seed in range(6):
        rng = random.Random(seed)
        st = _store()
        t = st.table("s", "lww")
        assert isinstance(t, LWWTable)
        ref: dict[str, LWWRegister] = {}
        keys = [f"k{i}" for i in range(10)]
        own = t.own_overlay("a~1")
        assert own is not None
        for step in range(300):
            move = rng.random()
            if move < 0.6:  # a record of one writer, stamps anywhere (repeats, ties included)
                n = rng.randint(1, 7)
                actor = rng.choice(["b~1", "c~1", "a~1"])
                ks = [rng.choice(keys) for _ in range(n)]
                ts = [rng.randint(1, 40) for _ in range(n)]
                vals = [rng.choice([step, float(step), f"v{step}", None, [step, "x"]]) for _ in range(n)]
                stored = [registers.store_value(v) for v in vals]
                start = rng.choice([0, 0, 0, min(1, n - 1)])
                done, refused = t._join_lww(ks, (ts, [actor] * n, stored), start)
                assert (done, refused) == (n - start, [])
                for k, s, v in list(zip(ks, ts, stored))[start:]:
                    d = LWWRegister._raw(s, actor, v)
                    ref[k] = d if k not in ref else ref[k].join(d)
            elif move < 0.75:  # an own write through the overlay (as the set handle does)
                k, s = rng.choice(keys), t.max_ts + 1
                own = t.own_overlay("a~1")
                assert own is not None
                own[k] = (s, step)
                t.max_ts = s
                d = LWWRegister._raw(s, "a~1", step)
                ref[k] = d if k not in ref else ref[k].join(d)
            else:  # reads
                k = rng.choice(keys)
                want = ref[k].value() if k in ref else None
                assert st.value("s", k) == want and t.value_of(k) == want
        assert {k: t[k] for k in t} == ref, seed


def test_the_overlay_is_folded_once_it_holds_the_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(LWWTable, "OVERLAY_LIMIT", 4)
    t = LWWTable()
    t._join_lww(["a", "b", "c"], ([1, 2, 3], ["b~1"] * 3, [1, 2, 3]), 0)
    assert len(t.own) == 3 and not t._rows
    t._join_lww(["d", "e"], ([4, 5], ["b~1"] * 2, [4, 5]), 0)
    assert not t.own and len(t._rows) == 5
    assert [t.value_of(k) for k in "abcde"] == [1, 2, 3, 4, 5]


def test_a_row_reader_kept_across_changes_reads_what_row_reads() -> None:
    """A reader made once (a predictor's) follows every change: tables created after it,
    own writes not folded yet, cache misses and fills, rows joined, a snapshot loaded,
    fields in any order (LWW and other tables mixed)."""
    st = _store()
    orders = [FIELDS, ("c", "s", "t"), ("t", "c", "s", "s")]
    readers = [st.reader(o) for o in orders]

    def check(k: str) -> None:
        # the readers first: reading a state folds own writes, which would hide a reader
        # that skipped them
        first = [r(k) for r in readers]
        again = [r(k) for r in readers]  # (cache misses first, then hits)
        views = [st.view(k, iter(o) if i % 2 else list(o), 0).values for i, o in enumerate(orders)]
        for o, got, got2, view in zip(orders, first, again, views):
            want = [st.state(f, k).value() for f in o]
            assert got == got2 == st.row(k, o) == want, (o, k)
            assert view == dict(zip(o, want)), (o, k)  # (view keeps a reader per field list)

    check("k")  # no table at all yet
    t = st.table("s", "lww")
    assert isinstance(t, LWWTable)
    t["k"] = LWWRegister._raw(10, "b~1", "remote")
    check("k")
    st.table("c", "gcounter")["k"] = GCounter._of({"b~1": 2})
    st.table("t", "lww")["k"] = LWWRegister._raw(11, "b~1", 1.5)
    check("k")
    orders += orders  # readers made now, with every table there, must notice the load below
    readers += [st.reader(o) for o in orders[len(readers):]]
    check("k")
    own = t.own_overlay("a~1")
    assert own is not None
    own["k"] = (t.max_ts + 1, "mine")  # an own write the cache has not seen
    t.max_ts += 1
    check("k")
    t.join_in("k", LWWRegister._raw(t.max_ts + 5, "z~1", [1, 2]))  # a remote join wins
    check("k")
    t.join_in("k", LWWRegister._raw(t.max_ts + 5, "z~1", 7))  # a scalar: cached by the reads
    check("k")
    st.load({"s": {"k": LWWRegister._raw(5, "b~1", "loaded")}}, st.ctx(), 7)  # every table replaced
    check("k")
    check("absent")


def test_view_keeps_a_bounded_number_of_readers_and_reads_right_past_the_bound(monkeypatch: Any) -> None:
    st = _store()
    monkeypatch.setattr(Store, "VIEW_READERS", 3)
    st.table("s", "lww")["k"] = LWWRegister._raw(10, "b~1", "v")
    st.table("c", "gcounter")["k"] = GCounter._of({"b~1": 4})
    lists = [("s",), ("c",), ("s", "c"), ("c", "s"), ("t", "s"), ("s",)]
    for o in lists * 2:
        assert st.view("k", o, 0).values == {f: st.state(f, "k").value() for f in o}
        assert len(st._views) <= 3
