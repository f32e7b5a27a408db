"""Heartbeats, their encoding, and the membership table derived from them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync._encoding import packb
from crdtsync.clock import Context, Dot, make_hlc
from crdtsync.control import Heartbeat, Membership, ReplicaRemoved
from crdtsync.errors import BadInput, CorruptRecord, FutureTimestamp, UnsupportedVersion
from crdtsync.policy import ACKS, ALL, LOG, QUORUM

T0 = 1_700_000_000_000  # an arbitrary wall time in ms


def hb(
    name, ctx=None, wall_ms=T0, *, inc="1", region="eu", role="edge", hlc=None, positions=None, models=None
):
    return Heartbeat(
        actor=f"{name}~{inc}",
        name=name,
        region=region,
        role=role,
        context=ctx if ctx is not None else Context(),
        wall_ms=wall_ms,
        hlc=hlc if hlc is not None else make_hlc(wall_ms),
        positions=positions or {},
        models=models or {},
    )


# -- encoding --------------------------------------------------------------------------

SAMPLE = hb(
    "edge-1",
    Context.from_dots([Dot("edge-1~1", 1), Dot("edge-1~1", 2), Dot("cloud~9", 4)]),
    positions={"shared": 4096, "local": 12},
    models={"risk": "3.1.0"},
)

# Freezes the wire format: a change here is a format version bump.
GOLDEN = (
    "93a9686561727462656174029ca8656467652d317e31a6656467652d31a26575a465646765cf"
    "0000018bcfe56800cf018bcfe5680000009293a7636c6f75647e3900910493a8656467652d31"
    "7e3102909292a56c6f63616c0c92a6736861726564cd10009192a47269736ba5332e312e3000"
    "9090"
)

# Format version 1 (no ping, no echo) is still read.
GOLDEN_V1 = (
    "93a96865617274626561740199a8656467652d317e31a6656467652d31a26575a465646765cf"
    "0000018bcfe56800cf018bcfe5680000009293a7636c6f75647e3900910493a8656467652d31"
    "7e3102909292a56c6f63616c0c92a6736861726564cd10009192a47269736ba5332e312e30"
)


def test_encoding_is_deterministic_and_frozen():
    a = SAMPLE
    b = hb("edge-1", a.context, positions={"local": 12, "shared": 4096}, models={"risk": "3.1.0"})
    assert a.encode() == b.encode()
    assert a.encode().hex() == GOLDEN
    assert Heartbeat.decode(bytes.fromhex(GOLDEN)) == a
    assert Heartbeat.decode(bytes.fromhex(GOLDEN_V1)) == a


def test_ping_and_echo_round_trip():
    h = hb("a")
    h = Heartbeat(h.actor, h.name, h.region, h.role, h.context, h.wall_ms, h.hlc, ping=7, echo={"b": 3, "a": 1},
                  pruned=frozenset({"z~2", "y~1"}))
    back = Heartbeat.decode(h.encode())
    assert back.ping == 7 and dict(back.echo) == {"a": 1, "b": 3} and back.pruned == {"y~1", "z~2"}


def test_stable_for_counts_peers_that_already_pruned():
    m = Membership(local="a")
    m.observe(hb("a", Context({"x~1": 3})), T0)
    m.observe(hb("b", Context()), T0)
    assert not m.stable_for("x~1", 3)  # b has not applied x's events (nor pruned them)
    b = hb("b", Context(), hlc=make_hlc(T0) + 1)
    m.observe(Heartbeat(b.actor, b.name, b.region, b.role, b.context, b.wall_ms, b.hlc, pruned=frozenset({"x~1"})), T0)
    assert m.stable_for("x~1", 3)


def test_heartbeat_is_immutable_and_hashable():
    with pytest.raises(AttributeError):
        SAMPLE.hlc = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        SAMPLE.positions["x"] = 1  # type: ignore[index]
    assert hash(SAMPLE) == hash(Heartbeat.decode(SAMPLE.encode()))


@pytest.mark.parametrize(
    "kw,exc",
    [
        ({"actor": ""}, ValueError),
        ({"region": ""}, ValueError),
        ({"role": None}, TypeError),
        ({"wall_ms": -1}, ValueError),
        ({"hlc": True}, ValueError),
        ({"context": {"a": 1}}, TypeError),
        ({"positions": {"x": -1}}, ValueError),
        ({"models": {"m": 3}}, TypeError),
    ],
)
def test_construction_validates(kw, exc):
    base = dict(actor="a~1", name="a", region="eu", role="", context=Context(), wall_ms=0, hlc=0)
    base.update(kw)
    with pytest.raises(exc):
        Heartbeat(**base)


def _body(**changes):
    body = ["a~1", "a", "eu", "edge", T0, make_hlc(T0), [["a~1", 2, []]], [["log", 5]], [["m", "1"]]]
    fields = ["actor", "name", "region", "role", "wall_ms", "hlc", "context", "positions", "models"]
    for k, v in changes.items():
        body[fields.index(k)] = v
    return packb(["heartbeat", 1, body])


def test_body_helper_is_valid():
    assert Heartbeat.decode(_body()).context == Context({"a~1": 2})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"garbage",
        packb(None),
        packb(["heartbeat", 1]),
        packb(["hearbeat", 1, []]),
        packb(["heartbeat", 0, []]),
        packb(["heartbeat", 1, []]),
        packb(["heartbeat", 1, ["a~1"] * 9]),
        _body(actor=""),
        _body(name=7),
        _body(role=None),
        _body(wall_ms=-5),
        _body(hlc=True),
        _body(hlc=1.5),
        _body(context={"a~1": 2}),
        _body(context=[["a~1", 2, [2]]]),
        _body(positions=[["b", 1], ["a", 2]]),
        _body(positions=[["a", 1], ["a", 2]]),
        _body(positions=[["a", -1]]),
        _body(positions={"a": 1}),
        _body(models=[["m", 1]]),
        _body(models=[["m"]]),
        _body()[:-3],
        _body() + b"\x00",
        packb(["heartbeat", 2, ["a~1", "a", "eu", "edge", T0, 0, [], [], [], -1, [], []]]),
        packb(["heartbeat", 2, ["a~1", "a", "eu", "edge", T0, 0, [], [], [], 0, [["b", "x"]], []]]),
        packb(["heartbeat", 2, ["a~1", "a", "eu", "edge", T0, 0, [], [], [], 0, [], ["b", "a"]]]),
        packb(["heartbeat", 2, ["a~1", "a", "eu", "edge", T0, 0, [], [], [], 0, [], [1]]]),
        packb(["heartbeat", 2, ["a~1", "a", "eu", "edge", T0, 0, [], [], []]]),
    ],
)
def test_garbage_is_a_corrupt_record(data):
    with pytest.raises(CorruptRecord):
        Heartbeat.decode(data)


def test_newer_version_is_unsupported():
    with pytest.raises(UnsupportedVersion, match="upgrade"):
        Heartbeat.decode(packb(["heartbeat", 3, []]))


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8)
heartbeats = st.builds(
    Heartbeat,
    actor=names,
    name=names,
    region=names,
    role=st.text(max_size=4),
    context=st.builds(Context.from_dots, st.lists(st.builds(Dot, names, st.integers(1, 50)), max_size=12)),
    wall_ms=st.integers(0, 2**48),
    hlc=st.integers(0, 2**63 - 1),
    positions=st.dictionaries(names, st.integers(0, 2**63 - 1), max_size=4),
    models=st.dictionaries(names, st.text(max_size=8), max_size=4),
    ping=st.integers(0, 2**63 - 1),
    echo=st.dictionaries(names, st.integers(0, 2**63 - 1), max_size=4),
    pruned=st.frozensets(names, max_size=3),
)


@given(heartbeats)
def test_round_trip(h):
    data = h.encode()
    back = Heartbeat.decode(data)
    assert back == h and back.encode() == data


# -- membership: ordering, future, pruning -------------------------------------------------


def test_newer_replaces_older_and_stale_or_duplicate_is_ignored():
    m = Membership()
    first = hb("a", Context({"a~1": 1}), T0)
    second = hb("a", Context({"a~1": 2}), T0 + 1000)
    assert m.observe(second, T0 + 1000)
    assert not m.observe(first, T0 + 1000)  # older, delivered late
    assert not m.observe(second, T0 + 1000)  # duplicate
    assert m.get("a") == second
    assert (m.stats.accepted, m.stats.stale) == (1, 2)
    # ordered by HLC, not wall time: same wall, larger logical counter wins
    third = hb("a", Context({"a~1": 3}), T0 + 1000, hlc=make_hlc(T0 + 1000, 1))
    assert m.observe(third, T0 + 1000) and m.get("a") == third


def test_future_heartbeat_is_rejected_and_counted():
    m = Membership(max_drift_ms=5_000)
    with pytest.raises(FutureTimestamp, match="NTP"):
        m.observe(hb("a", wall_ms=T0 + 6_000), T0)
    # a wall time far ahead is refused as well, even with a plausible HLC
    with pytest.raises(FutureTimestamp):
        m.observe(hb("a", wall_ms=T0 + 60_000, hlc=make_hlc(T0)), T0)
    assert m.stats.future == 2 and "a" not in m
    assert m.observe(hb("a", wall_ms=T0 + 4_000), T0)  # within the drift bound


def test_removed_replica_is_refused_and_may_rejoin_as_new_incarnation():
    m = Membership()
    m.observe(hb("a", Context({"a~1": 3})), T0)
    m.observe(hb("b"), T0)
    last = m.remove("b")
    assert last.actor == "b~1" and "b" not in m and m.is_removed("b~1")
    with pytest.raises(ReplicaRemoved, match="fresh data directory") as info:
        m.observe(hb("b", wall_ms=T0 + 5_000), T0 + 5_000)
    assert isinstance(info.value, BadInput)
    assert m.stats.removed_refused == 1 and "b" not in m
    assert m.observe(hb("b", inc="2", wall_ms=T0 + 6_000), T0 + 6_000)
    assert m.get("b").actor == "b~2"
    with pytest.raises(KeyError):
        m.remove("nobody")


def test_new_incarnation_supersedes_the_old_one():
    m = Membership()
    m.observe(hb("a", Context({"a~1": 7}), T0), T0)
    # the new incarnation's clock may even be behind: it still replaces the dead one
    assert m.observe(hb("a", Context(), T0 - 10_000, inc="2"), T0)
    assert m.get("a").actor == "a~2" and m.stats.superseded == 1
    with pytest.raises(ReplicaRemoved, match="superseded"):
        m.observe(hb("a", Context({"a~1": 8}), T0 + 1, inc="1"), T0 + 1)


# -- acks and quorums: 5 replicas, 3 + 2 partition --------------------------------------------

FLEET = {"a": "eu", "b": "eu", "c": "eu", "d": "us", "e": "us"}


def _fleet(contexts, wall_ms=T0):
    m = Membership(local="a")
    for name, region in FLEET.items():
        m.observe(hb(name, contexts.get(name, Context()), wall_ms, region=region), wall_ms)
    return m


def test_quorum_math_in_a_3_plus_2_partition():
    x = Dot("a~1", 1)  # written on the 3-side, replicated within it
    y = Dot("d~1", 1)  # written on the 2-side
    side3 = Context.from_dots([x])
    side2 = Context.from_dots([y])
    m = _fleet({"a": side3, "b": side3, "c": side3, "d": side2, "e": side2})
    assert m.members() == set(FLEET) and m.quorum_size() == 3
    assert m.acks(x) == {"a", "b", "c"} and m.has_quorum(x) and not m.all_acked(x)
    assert m.acks(y) == {"d", "e"} and not m.has_quorum(y)
    assert m.acknowledged(QUORUM(), x) and not m.acknowledged(QUORUM(), y)
    assert m.acknowledged(ACKS(2), y) and not m.acknowledged(ACKS(3), y)
    # per region: the us region alone has a quorum for y
    assert m.quorum_size("us") == 2 and m.has_quorum(y, "us") and m.all_acked(y, "us")
    assert m.acknowledged(ALL("us"), y) and not m.acknowledged(ALL(), y)
    # explicit groups count their names, heard from or not
    g = frozenset({"a", "b", "z"})
    assert m.quorum_size(g) == 2 and m.acks(x, g) == {"a", "b"} and m.has_quorum(x, g)
    assert not m.all_acked(x, g)
    # heal: everyone reports both dots
    both = side3.join(side2)
    for name, region in FLEET.items():
        m.observe(hb(name, both, T0 + 5_000, region=region), T0 + 5_000)
    assert m.all_acked(x) and m.all_acked(y) and m.acknowledged(ALL(), y)


def test_empty_groups_never_acknowledge():
    m = _fleet({})
    d = Dot("a~1", 1)
    assert m.members("apac") == set() and m.quorum_size("apac") == 1
    assert not m.has_quorum(d, "apac") and not m.all_acked(d, "apac")
    assert not Membership().all_acked(d)
    with pytest.raises(TypeError, match="heartbeats"):
        m.acknowledged(LOG, d)


def test_removed_replicas_leave_quorums():
    d = Dot("a~1", 1)
    ctx = Context.from_dots([d])
    m = _fleet({"a": ctx, "b": ctx})
    assert not m.has_quorum(d)  # 2 of 5
    m.remove("e")
    m.remove("d")
    assert m.quorum_size() == 2 and m.has_quorum(d)


# -- lag and staleness with injected times ---------------------------------------------------


def test_lag_and_staleness():
    m = Membership(local="a")
    # b reports at T0 it has written 5 events, at T0+1000 it has written 8
    m.observe(hb("b", Context({"b~1": 5}), T0), T0)
    m.observe(hb("b", Context({"b~1": 8}), T0 + 1_000), T0 + 1_000)
    m.observe(hb("c", Context({"c~1": 2}), T0 + 2_000), T0 + 2_000)
    m.observe(hb("a", Context({"a~1": 9}), T0), T0)  # local: never an origin for staleness
    now = T0 + 3_000
    own = Context({"a~1": 9, "b~1": 8, "c~1": 2})
    assert m.lag("b~1", now, own) == 2_000 and m.lag("c~1", now, own) == 1_000
    assert m.staleness(now, own) == 2_000
    # missing b's events 6..8: this replica only has what b had at T0
    behind = Context({"b~1": 5, "c~1": 2})
    assert m.lag("b~1", now, behind) == 3_000 and m.staleness(now, behind) == 3_000
    # further behind than any remembered heartbeat: unknown, so infinitely stale
    assert m.lag("b~1", now, Context({"b~1": 4, "c~1": 2})) == math.inf
    assert m.staleness(now, Context({"b~1": 8})) == math.inf  # nothing of c's
    # a cloud covering the gap counts
    cloudy = Context({"b~1": 6}, [Dot("b~1", 7), Dot("b~1", 8)]).join(Context({"c~1": 2}))
    assert m.lag("b~1", now, cloudy) == 2_000
    # staleness over chosen origins only; ages never go negative
    assert m.staleness(now, behind, origins=["c"]) == 1_000
    assert m.lag("c~1", T0, own) == 0 and m.age("c", T0 + 2_500) == 500
    assert m.staleness(now, Context(), origins=[]) == 0
    with pytest.raises(KeyError):
        m.lag("zz~1", now, own)


def test_lag_history_is_bounded():
    m = Membership(history=2)
    for i in range(1, 5):
        m.observe(hb("b", Context({"b~1": i}), T0 + i * 1_000), T0 + i * 1_000)
    now = T0 + 10_000
    assert m.lag("b~1", now, Context({"b~1": 3})) == 7_000
    assert m.lag("b~1", now, Context({"b~1": 2})) == math.inf  # sample forgotten


# -- causal stability -----------------------------------------------------------------------


def test_stable_context_is_the_meet_of_live_replicas():
    m = _fleet(
        {
            "a": Context({"a~1": 5, "d~1": 2}),
            "b": Context({"a~1": 3, "d~1": 2}),
            "c": Context({"a~1": 4, "d~1": 1}, [Dot("a~1", 6)]),
            "d": Context({"a~1": 5, "d~1": 3}, [Dot("a~1", 6)]),
            "e": Context({"a~1": 4, "d~1": 2}),
        }
    )
    assert m.stable_context() == Context({"a~1": 3, "d~1": 1})
    m.remove("b")
    assert m.stable_context() == Context({"a~1": 4, "d~1": 1})
    assert Membership().stable_context() == Context()


def test_directory_control_delivers_changes_and_skips_torn_files(tmp_path):
    import asyncio

    from crdtsync.control import DirectoryControl

    async def main():
        got_a, got_b = [], []
        a, b = DirectoryControl(tmp_path), DirectoryControl(tmp_path)
        a.start("a", got_a.append)
        b.start("b", got_b.append)
        await a.publish(b"one")
        assert b.poll(got_b.append) == 1 and got_b == [b"one"]
        assert b.poll(got_b.append) == 0                 # unchanged content is not redelivered
        await a.publish(b"two, longer")
        await a.publish(b"3")                           # shorter: the file is truncated
        b.poll(got_b.append)
        assert got_b[-1] == b"3"
        (tmp_path / "c.hb").write_bytes(DirectoryControl.frame(b"from c")[:-2])  # a torn write
        assert b.poll(got_b.append) == 0 and b.torn == 1
        (tmp_path / "c.hb").write_bytes(DirectoryControl.frame(b"from c"))
        assert b.poll(got_b.append) == 1 and got_b[-1] == b"from c"
        assert got_a == []                              # nobody else spoke to a... except c
        a.poll(got_a.append)
        assert got_a == [b"from c"]
        await a.close()
        await b.close()

    asyncio.run(main())
