"""Consistency levels, their strength order, policies, overrides and their encoding."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtsync._encoding import canonical, packb
from crdtsync.clock import Context, Dot
from crdtsync.errors import CorruptRecord, CrdtSyncError, UnsupportedVersion
from crdtsync.policy import (
    ACKS,
    ALL,
    LINEARIZABLE,
    LOCAL,
    LOG,
    MAX_STALENESS,
    QUORUM,
    SEQUENCED,
    SESSION,
    Eventual,
    Policy,
    PolicyViolation,
    Resolved,
    Strong,
    Tunable,
    is_at_least,
    level_from_dict,
    level_to_dict,
)

EU3 = frozenset({"a", "b", "c"})
FIVE = frozenset({"a", "b", "c", "d", "e"})
GROUPS = [None, "eu", "us", EU3, FIVE]


def _write_universe() -> list:
    out = [LOCAL, LOG, SEQUENCED]
    for g in GROUPS:
        out += [QUORUM(g), ALL(g)]
        top = len(g) if isinstance(g, frozenset) else 5
        out += [ACKS(n, g) for n in range(1, top + 1)]
    return out


WRITES = _write_universe()
READS = [
    LOCAL,
    LINEARIZABLE,
    *[MAX_STALENESS(t, w) for t in (0.5, 2, 15) for w in (False, True)],
    *[
        SESSION(c)
        for c in (
            Context(),
            Context({"a": 1}),
            Context({"a": 2}),
            Context({"b": 1}),
            Context({"a": 2, "b": 1}),
        )
    ],
]


# -- the order, table by table -------------------------------------------------------

WRITE_TABLE = [
    # (stronger-or-equal?, a, b)
    (True, LOG, LOCAL),
    (False, LOCAL, LOG),
    (True, ACKS(1), LOG),
    (True, ACKS(3), ACKS(2)),
    (False, ACKS(2), ACKS(3)),
    (True, QUORUM(), ACKS(1)),
    (False, QUORUM(), ACKS(2)),  # fleet size unknown statically
    (False, ACKS(2), QUORUM()),
    (True, ALL(), QUORUM()),
    (True, ALL(), ACKS(4)),
    (False, QUORUM(), ALL()),
    (True, SEQUENCED, ALL()),
    (False, ALL(), SEQUENCED),
    (False, ACKS(3, group="eu"), QUORUM()),  # different groups
    (False, QUORUM(), ACKS(3, group="eu")),
    (False, QUORUM("eu"), QUORUM("us")),
    (False, ALL("eu"), ALL()),
    (True, ALL(), ALL("eu")),  # the whole fleet covers every group
    (True, ALL(), ACKS(2, EU3)),
    (True, QUORUM(EU3), ACKS(2, EU3)),  # quorum of 3 is 2
    (False, ACKS(2, EU3), QUORUM(EU3)),
    (True, ACKS(3, EU3), QUORUM(EU3)),
    (False, ACKS(3, FIVE), QUORUM(FIVE)),  # quorum of 5 is 3: same condition, QUORUM ranks above
    (True, QUORUM(FIVE), ACKS(3, FIVE)),
    (True, ACKS(4, FIVE), QUORUM(FIVE)),
    (False, ACKS(2, EU3), ACKS(2, FIVE)),
    (True, ALL(EU3), ACKS(3, EU3)),
    (False, ACKS(3, EU3), ALL(EU3)),
]

READ_TABLE = [
    (True, MAX_STALENESS(2), LOCAL),
    (False, LOCAL, MAX_STALENESS(2)),
    (True, MAX_STALENESS(1), MAX_STALENESS(2)),
    (False, MAX_STALENESS(2), MAX_STALENESS(1)),
    (True, MAX_STALENESS(1), MAX_STALENESS(2, wait=True)),
    (False, MAX_STALENESS(2), MAX_STALENESS(2, wait=True)),  # same bound, other behaviour
    (True, LINEARIZABLE, MAX_STALENESS(0.001)),
    (False, MAX_STALENESS(0.001), LINEARIZABLE),
    (True, SESSION(Context({"a": 1})), LOCAL),
    (False, SESSION(Context({"a": 1})), MAX_STALENESS(60)),
    (False, MAX_STALENESS(60), SESSION(Context({"a": 1}))),
    (False, LINEARIZABLE, SESSION(Context({"a": 1}))),
    (True, SESSION(Context({"a": 2, "b": 1})), SESSION(Context({"a": 1}))),
    (False, SESSION(Context({"a": 1})), SESSION(Context({"b": 1}))),
]


@pytest.mark.parametrize("expected,a,b", WRITE_TABLE + READ_TABLE, ids=repr)
def test_order_table(expected, a, b):
    assert is_at_least(a, b) is expected


def test_local_is_both_kinds_and_bottom():
    assert all(is_at_least(w, LOCAL) for w in WRITES)
    assert all(is_at_least(r, LOCAL) for r in READS)
    assert all(is_at_least(SEQUENCED, w) for w in WRITES)


def test_mixing_kinds_is_a_type_error():
    with pytest.raises(TypeError, match="write level"):
        is_at_least(LOG, LINEARIZABLE)
    with pytest.raises(TypeError):
        is_at_least(MAX_STALENESS(1), ACKS(1))
    with pytest.raises(TypeError):
        is_at_least("QUORUM", LOCAL)  # type: ignore[arg-type]


def _check_partial_order(universe):
    for a in universe:
        assert is_at_least(a, a), a
    for a, b in itertools.product(universe, repeat=2):
        if a != b and is_at_least(a, b):
            assert not is_at_least(b, a), (a, b)
    ge = {(a, b) for a, b in itertools.product(universe, repeat=2) if is_at_least(a, b)}
    for a, b in ge:
        for c in universe:
            if (b, c) in ge:
                assert (a, c) in ge, (a, b, c)


def test_write_order_is_a_partial_order_exhaustively():
    _check_partial_order(WRITES)


def test_read_order_is_a_partial_order_exhaustively():
    _check_partial_order(READS)


def _satisfied(level, acked: frozenset[str]) -> bool:
    """Reference model of an ack level for an explicit group."""
    members = level.group
    got = len(acked & members)
    if isinstance(level, ACKS):
        return got >= level.n
    if isinstance(level, QUORUM):
        return got >= len(members) // 2 + 1
    return got == len(members)


def test_stronger_ack_levels_imply_weaker_ones_for_explicit_groups():
    # the order on explicit groups agrees with the acknowledgement condition itself
    for g in (EU3, FIVE):
        levels = [lv for lv in WRITES if isinstance(lv, (ACKS, QUORUM, ALL)) and lv.group == g]
        subsets = [frozenset(c) for k in range(len(g) + 1) for c in itertools.combinations(sorted(g), k)]
        for a, b in itertools.product(levels, repeat=2):
            if is_at_least(a, b):
                assert all(_satisfied(b, s) for s in subsets if _satisfied(a, s)), (a, b)


contexts = st.builds(
    Context.from_dots, st.lists(st.builds(Dot, st.sampled_from("abc"), st.integers(1, 6)), max_size=8)
)
read_levels = st.one_of(
    st.just(LOCAL),
    st.just(LINEARIZABLE),
    st.builds(MAX_STALENESS, st.sampled_from([0.25, 1.0, 2.0, 30.0]), st.booleans()),
    st.builds(SESSION, contexts),
)


@given(read_levels, read_levels, read_levels)
def test_read_order_is_a_partial_order_with_generated_tokens(a, b, c):
    assert is_at_least(a, a)
    if is_at_least(a, b) and is_at_least(b, a):
        assert a == b
    if is_at_least(a, b) and is_at_least(b, c):
        assert is_at_least(a, c)


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: ACKS(0), ValueError, "ACKS"),
        (lambda: ACKS(-1), ValueError, "ACKS"),
        (lambda: ACKS(True), TypeError, "int"),
        (lambda: ACKS(4, group={"a", "b"}), ValueError, "never be met"),
        (lambda: QUORUM(group=""), ValueError, "empty"),
        (lambda: QUORUM(group=set()), ValueError, "at least one"),
        (lambda: ALL(group=3), TypeError, "group"),
        (lambda: MAX_STALENESS(-1), ValueError, "positive"),
        (lambda: MAX_STALENESS(0), ValueError, "positive"),
        (lambda: MAX_STALENESS(float("nan")), ValueError, "finite"),
        (lambda: MAX_STALENESS(1, wait="yes"), TypeError, "bool"),
        (lambda: SESSION({"a": 1}), TypeError, "Context"),
        (lambda: Strong(on_unavailable="local"), ValueError, "silently degrade"),
        (lambda: Tunable(SEQUENCED, LOCAL, on_unavailable="local"), ValueError, "silently degrade"),
        (lambda: Tunable(LOCAL, LINEARIZABLE, on_unavailable="local"), ValueError, "silently degrade"),
        (lambda: Tunable(LOCAL, LOCAL, on_unavailable="retry"), ValueError, "on_unavailable"),
        (lambda: Tunable(LOCAL, SESSION(Context())), ValueError, "per call"),
        (lambda: Tunable(LINEARIZABLE, LOCAL), TypeError, "read level, not a write level"),
        (lambda: Tunable(QUORUM, LOCAL), TypeError, r"QUORUM\(\.\.\.\)"),
        (lambda: Strong(timeout=0), ValueError, "timeout"),
        (lambda: Strong(timeout=float("inf")), ValueError, "timeout"),
        (lambda: Eventual(max_lag=-5), ValueError, "max_lag"),
        (lambda: Policy(write=LOCAL, read=LOCAL), TypeError, "Tunable"),
    ],
)
def test_validation_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_levels_normalize_and_are_immutable():
    assert ACKS(2, group={"b", "a"}) == ACKS(2, group=frozenset({"a", "b"}))
    assert ACKS(2, group=["a", "b"]).group == frozenset({"a", "b"})
    assert MAX_STALENESS(2) == MAX_STALENESS(2.0) and type(MAX_STALENESS(2).seconds) is float
    assert repr(ACKS(2, group={"b", "a"})) == "ACKS(2, group=frozenset({'a', 'b'}))"
    assert repr(QUORUM("eu")) == "QUORUM(group='eu')" and repr(LOCAL) == "LOCAL"
    with pytest.raises(AttributeError):
        ACKS(2).n = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Strong().timeout = 1.0  # type: ignore[misc]


def test_tunable_with_local_fallback_for_ack_levels_is_allowed():
    p = Tunable(write=ACKS(2), read=MAX_STALENESS(2, wait=True), timeout=1, on_unavailable="local")
    assert p.on_unavailable == "local" and p.timeout == 1.0


# -- policies and resolve ----------------------------------------------------------------


def test_policy_shapes():
    s = Strong()
    assert (s.write, s.read, s.timeout, s.on_unavailable, s.max_lag) == (
        SEQUENCED,
        LINEARIZABLE,
        5.0,
        "raise",
        None,
    )
    e = Eventual(max_lag=900)
    assert (e.write, e.read, e.max_lag) == (LOCAL, LOCAL, 900.0)
    t = Tunable(write=ACKS(2), read=MAX_STALENESS(2))
    assert isinstance(t, Policy) and t.write == ACKS(2)
    assert Strong() == Strong() and Strong() != Tunable(SEQUENCED, LINEARIZABLE)
    assert len({Strong(), Strong(), Eventual()}) == 2


def test_describe():
    assert Strong(timeout=2).describe() == (
        "strong: writes SEQUENCED, reads LINEARIZABLE; raises Unavailable/StaleRead after 2s"
    )
    assert Eventual(max_lag=900).describe() == (
        "eventual: writes LOCAL, reads LOCAL; freshness SLO 900s (measured, not enforced)"
    )
    assert "falls back to local after 5s" in Tunable(ACKS(2), LOCAL, on_unavailable="local").describe()


def test_resolve_without_overrides_returns_the_definition():
    p = Tunable(write=ACKS(2), read=MAX_STALENESS(2), timeout=3)
    assert p.resolve() == Resolved(ACKS(2), MAX_STALENESS(2), 3.0, "raise")


def test_resolve_accepts_stronger_overrides():
    p = Tunable(write=ACKS(2), read=MAX_STALENESS(2), on_unavailable="local")
    r = p.resolve(write=ACKS(3), read=MAX_STALENESS(0.5))
    assert (r.write, r.read, r.on_unavailable) == (ACKS(3), MAX_STALENESS(0.5), "local")
    # strengthening to a CP level drops the local fallback
    assert p.resolve(read=LINEARIZABLE).on_unavailable == "raise"
    assert p.resolve(write=SEQUENCED).on_unavailable == "raise"
    # a session token is an override of LOCAL reads
    tok = Context({"a": 3})
    assert Eventual().resolve(read=SESSION(tok)).read == SESSION(tok)
    assert Eventual().resolve(write=QUORUM(), read=LINEARIZABLE).write == QUORUM()


@pytest.mark.parametrize(
    "policy,kw,match",
    [
        (Strong(), {"read": LOCAL}, "read override LOCAL is weaker .* LINEARIZABLE"),
        (Strong(), {"write": ALL()}, r"write override ALL\(\) is weaker .* SEQUENCED"),
        (Tunable(ACKS(3, group="eu"), LOCAL), {"write": QUORUM()}, "incomparable"),
        (Tunable(ACKS(2), LOCAL), {"write": ACKS(1)}, r"ACKS\(1\)"),
        (Tunable(LOG, MAX_STALENESS(2)), {"read": SESSION(Context())}, "SESSION"),
        (Tunable(LOG, MAX_STALENESS(2)), {"read": MAX_STALENESS(2, wait=True)}, "MAX_STALENESS"),
        (Tunable(LOG, MAX_STALENESS(2)), {"read": MAX_STALENESS(3)}, "MAX_STALENESS"),
    ],
)
def test_resolve_refuses_weaker_overrides(policy, kw, match):
    with pytest.raises(PolicyViolation, match=match) as info:
        policy.resolve(**kw)
    assert isinstance(info.value, CrdtSyncError) and isinstance(info.value, ValueError)


def test_resolve_refuses_wrong_kinds():
    with pytest.raises(TypeError):
        Strong().resolve(write=LINEARIZABLE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Eventual().resolve(read=LOG)  # type: ignore[arg-type]


# -- encoding ------------------------------------------------------------------------------

POLICIES = [
    Strong(),
    Strong(timeout=0.25),
    Eventual(),
    Eventual(max_lag=900, timeout=2),
    Tunable(ACKS(2), MAX_STALENESS(2)),
    Tunable(ACKS(2, group={"x", "y", "z"}), MAX_STALENESS(0.5, wait=True), timeout=1, on_unavailable="local"),
    Tunable(QUORUM("eu"), LOCAL, on_unavailable="local"),
    Tunable(ALL(), LINEARIZABLE),
    Tunable(LOG, LOCAL),
    Tunable(SEQUENCED, LINEARIZABLE),
]


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_policy_round_trip_through_msgpack(policy):
    d = policy.to_dict()
    wire = packb(canonical(d))
    back = Policy.from_dict(msgpack.unpackb(wire, raw=False))
    assert back == policy and type(back) is type(policy)
    assert packb(canonical(back.to_dict())) == wire


def test_policy_encoding_is_frozen():
    assert Tunable(ACKS(2, group={"b", "a"}), MAX_STALENESS(2)).to_dict() == {
        "v": 1,
        "policy": "tunable",
        "write": {"level": "acks", "n": 2, "group": ["a", "b"]},
        "read": {"level": "max_staleness", "seconds": 2.0, "wait": False},
        "timeout": 5.0,
        "on_unavailable": "raise",
        "max_lag": None,
    }


def test_session_is_never_encoded():
    with pytest.raises(ValueError, match="per call"):
        level_to_dict(SESSION(Context()))


@pytest.mark.parametrize("level", WRITES + READS[:8], ids=repr)
def test_level_round_trip(level):
    assert level_from_dict(level_to_dict(level)) == level


GOOD = Tunable(ACKS(2, group="eu"), MAX_STALENESS(2)).to_dict()


def _with(**kw):
    d = dict(GOOD)
    d.update(kw)
    return d


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {},
        _with(v="1"),
        _with(v=0),
        _with(v=True),
        _with(policy="paranoid"),
        _with(extra=1),
        _with(timeout=5),  # ints are not the canonical float form
        _with(timeout=-1.0),
        _with(on_unavailable="maybe"),
        _with(max_lag=3.0),
        _with(write={"level": "acks", "n": 0, "group": None}),
        _with(write={"level": "acks", "n": True, "group": None}),
        _with(write={"level": "acks", "n": 2}),
        _with(write={"level": "quorum", "group": ["b", "a"]}),
        _with(write={"level": "quorum", "group": []}),
        _with(write={"level": "quorum", "group": 7}),
        _with(write={"level": "linearizable"}),
        _with(write={"level": "teleport"}),
        _with(write="local"),
        _with(read={"level": "max_staleness", "seconds": 2.0, "wait": 1}),
        _with(read={"level": "max_staleness", "seconds": 2, "wait": False}),
        _with(read={"level": "session", "token": []}),
        _with(policy="strong"),
        _with(policy="eventual"),
        _with(on_unavailable="local", read={"level": "linearizable"}),
    ],
)
def test_garbage_policy_dicts_are_corrupt_records(bad):
    with pytest.raises(CorruptRecord):
        Policy.from_dict(bad)


def test_newer_policy_version_is_unsupported():
    with pytest.raises(UnsupportedVersion, match="upgrade"):
        Policy.from_dict(_with(v=2))
