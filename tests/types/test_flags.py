"""Example tests for the flags: the conflict rules between replicas, validation, evaluation."""

from __future__ import annotations

import pytest

from crdtsync._encoding import packb, unpackb
from crdtsync.clock import Dot, make_hlc
from crdtsync.errors import CorruptRecord, IncompatibleState
from crdtsync.types._base import decode_any
from crdtsync.types.flags import (
    DisableWinsFlag,
    EnableWinsFlag,
    Evaluation,
    Rule,
    VariantConfig,
    VariantFlag,
    bucket_of,
)

T0 = make_hlc(1_700_000_000_000)


def _exchange(a, b):
    """Full-state sync in both directions; returns the two resulting replicas."""
    return a.join(b), b.join(a)


# -- enable-wins / disable-wins ---------------------------------------------------------


@pytest.mark.parametrize("cls", [EnableWinsFlag, DisableWinsFlag])
def test_starts_at_its_default(cls):
    assert cls().value() is False
    assert cls(default=True).value() is True
    assert not cls().conflict
    assert cls().live == {}


@pytest.mark.parametrize("cls, expected", [(DisableWinsFlag, False), (EnableWinsFlag, True)])
def test_concurrent_disable_and_enable_use_the_declared_rule(cls, expected):
    # USE_CASES 3: the console disables while a disconnected store enables.
    base = cls(default=True)
    cloud = base.join(base.disable(actor="cloud"))
    store = base.join(base.enable(actor="store-17"))
    x, y = _exchange(cloud, store)
    assert x == y
    assert x.value() is expected
    assert x.conflict
    assert x.enabled_by == {"store-17"}
    assert x.disabled_by == {"cloud"}
    assert set(x.live.values()) == {True, False}


@pytest.mark.parametrize("cls", [EnableWinsFlag, DisableWinsFlag])
def test_a_write_that_saw_the_conflict_settles_it(cls):
    base = cls()
    a = base.join(base.enable(actor="a"))
    b = base.join(base.disable(actor="b"))
    merged = a.join(b)
    assert merged.conflict
    settled = merged.join(merged.enable(actor="c"))
    assert settled.value() is True
    assert not settled.conflict
    assert list(settled.live) == [Dot("c", 1)]
    # the settling write reaches a replica that only had one side: same result
    assert b.join(settled) == settled
    settled = settled.join(settled.disable(actor="b"))
    assert settled.value() is False
    assert list(settled.live) == [Dot("b", 2)]


@pytest.mark.parametrize("cls", [EnableWinsFlag, DisableWinsFlag])
def test_sequential_writes_keep_one_dot(cls):
    s = cls()
    for i in range(50):
        s = s.join(s.enable(actor="edge") if i % 2 else s.disable(actor="edge"))
    assert s.value() is True
    assert list(s.live) == [Dot("edge", 50)]
    assert dict(s.context.vv) == {"edge": 50} and s.context.is_compact()


def test_concurrent_writes_that_agree_are_no_conflict():
    base = DisableWinsFlag()
    x = base.join(base.enable(actor="a")).join(base.enable(actor="b"))
    assert x.value() is True and not x.conflict
    assert x.enabled_by == {"a", "b"}


def test_delta_carries_only_the_new_dot_and_what_it_supersedes():
    s = EnableWinsFlag()
    s = s.join(s.enable(actor="a")).join(s.disable(actor="b"))
    delta = s.disable(actor="c")
    assert list(delta.live) == [Dot("c", 1)]
    assert set(delta.context.dots()) == {Dot("a", 1), Dot("b", 1), Dot("c", 1)}
    after = s.join(delta)
    assert after.value() is False and list(after.live) == [Dot("c", 1)]


def test_delta_joined_out_of_order_still_converges():
    s = DisableWinsFlag()
    d1 = s.enable(actor="a")
    s1 = s.join(d1)
    d2 = s1.disable(actor="a")
    # d2 arrives before d1: d1 must not resurrect
    late = s.join(d2).join(d1)
    assert late == s1.join(d2)
    assert late.value() is False


def test_flags_with_different_defaults_or_rules_do_not_join():
    with pytest.raises(IncompatibleState):
        DisableWinsFlag().join(DisableWinsFlag(default=True))
    with pytest.raises(IncompatibleState):
        DisableWinsFlag().join(EnableWinsFlag())  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [EnableWinsFlag, DisableWinsFlag])
def test_flag_argument_validation(cls):
    with pytest.raises(TypeError, match="default must be True or False"):
        cls(default=1)
    with pytest.raises(TypeError, match="actor must be a non-empty str"):
        cls().enable(actor="")
    with pytest.raises(TypeError, match="actor"):
        cls().disable(actor=3)


@pytest.mark.parametrize("cls", [EnableWinsFlag, DisableWinsFlag])
def test_flag_roundtrip_and_corrupt_payloads(cls):
    s = cls(default=True)
    s = s.join(s.enable(actor="a")).join(s.disable(actor="b"))
    assert cls.decode(s.encode()) == s
    assert decode_any(s.encode()).value() == s.value()
    env = unpackb(s.encode())
    bad_payloads = [
        [1, env[2][1], env[2][2]],  # default not a bool
        [True, [["a", 1, 1]], env[2][2]],  # value not a bool
        [True, [["b", 1, False], ["a", 1, True]], env[2][2]],  # dots not sorted
        [True, [["z", 1, True]], env[2][2]],  # live dot outside the context
        [True, [["a", 0, True]], env[2][2]],  # seq below 1
        [True, env[2][1]],  # missing context
    ]
    for payload in bad_payloads:
        with pytest.raises(CorruptRecord):
            cls.decode(packb([env[0], env[1], payload]))


# -- variant flags: configuration ---------------------------------------------------------

VARIANTS = [("treatment", 500), ("control", 0)]


def _configured(**kw):
    f = VariantFlag()
    args = {"rules": (), "default": "control", "salt": "checkout", "actor": "cloud", "ts": T0}
    args.update(kw)
    return f.join(f.configure(VARIANTS, **args))


def test_unconfigured_flag():
    f = VariantFlag()
    assert f.value() == {"configured": False, "killed": False, "variants": [], "rules": [],
                         "default": None, "salt": None}
    assert f.evaluate("user-1") == Evaluation(None, "default", None, None)
    assert f.config is None and f.stamp is None


def test_value_summary():
    f = _configured(rules=[Rule("plan", "in", ["beta", "staff"], "treatment")])
    assert f.value() == {
        "configured": True,
        "killed": False,
        "variants": [["treatment", 500], ["control", 0]],
        "rules": [{"attribute": "plan", "op": "in", "values": ["beta", "staff"], "variant": "treatment"}],
        "default": "control",
        "salt": "checkout",
    }
    assert f.stamp == (T0, "cloud")


def test_later_config_wins_and_ties_break_by_actor():
    f = VariantFlag()
    early = f.configure([("a", 0)], salt="s", actor="zeta", ts=T0)
    late = f.configure([("b", 0)], salt="s", actor="alpha", ts=T0 + 1)
    for x in (early.join(late), late.join(early)):
        assert x.config is not None and x.config.default == "b"
    # identical timestamps: the greater actor id wins, in every join order
    tie_a = f.configure([("a", 0)], salt="s", actor="edge-1", ts=T0)
    tie_b = f.configure([("b", 0)], salt="s", actor="edge-2", ts=T0)
    assert tie_a.join(tie_b) == tie_b.join(tie_a)
    assert tie_a.join(tie_b).value()["default"] == "b"


def test_identical_stamps_with_different_configs_still_converge():
    f = VariantFlag()
    x = f.configure([("a", 0)], salt="s", actor="edge", ts=T0)
    y = f.configure([("b", 0)], salt="s", actor="edge", ts=T0)  # a reused clock value
    assert x.join(y) == y.join(x)


def test_configure_rejects_a_stale_timestamp():
    f = _configured(ts=T0 + 10)
    with pytest.raises(ValueError, match="does not come after"):
        f.configure(VARIANTS, default="control", actor="cloud", ts=T0 + 10)
    with pytest.raises(ValueError, match="does not come after"):
        f.configure(VARIANTS, default="control", actor="other", ts=T0)
    f.configure(VARIANTS, default="control", actor="zz", ts=T0 + 10)  # same time, greater actor


def test_salt_is_required_once_then_kept():
    f = VariantFlag()
    with pytest.raises(ValueError, match="salt"):
        f.configure(VARIANTS, actor="cloud", ts=T0)
    f = _configured()
    g = f.join(f.configure([("treatment", 2_500), ("control", 0)], default="control", actor="cloud", ts=T0 + 1))
    assert g.value()["salt"] == "checkout"


def test_default_is_the_first_variant_unless_given_or_kept():
    f = VariantFlag()
    f = f.join(f.configure([("off", 0), ("on", 100)], salt="s", actor="a", ts=T0))
    assert f.value()["default"] == "off"
    f = f.join(f.configure([("on", 100), ("off", 0)], default="on", actor="a", ts=T0 + 1))
    assert f.value()["default"] == "on"
    # omitted: the current default stays while it is still a variant
    f = f.join(f.configure([("off", 100), ("on", 0)], actor="a", ts=T0 + 2))
    assert f.value()["default"] == "on"
    f = f.join(f.configure([("v3", 100), ("v4", 0)], actor="a", ts=T0 + 3))
    assert f.value()["default"] == "v3"


@pytest.mark.parametrize("variants, rules, default, salt, exc, message", [
    ([], (), None, "s", ValueError, "at least one variant"),
    ("on", (), None, "s", TypeError, "list of \\(name, weight\\)"),
    ([("on", -1)], (), None, "s", ValueError, "basis points >= 0"),
    ([("on", 1.5)], (), None, "s", TypeError, "must be an int"),
    ([("on", True)], (), None, "s", TypeError, "must be an int"),
    ([("on", 1), ("on", 2)], (), None, "s", ValueError, "listed twice"),
    ([("", 1)], (), None, "s", TypeError, "non-empty str"),
    ([("on", 6_000), ("off", 5_000)], (), None, "s", ValueError, "at most 10000"),
    ([("on", 1)], (), "off", "s", ValueError, "default 'off' is not a variant"),
    ([("on", 1)], [Rule("plan", "eq", "pro", "gold")], None, "s", ValueError, "unknown variant 'gold'"),
    ([("on", 1)], [("plan", "eq", "pro", "on")], None, "s", TypeError, "Rule\\(attribute"),
    ([("on", 1)], (), None, "a\x00b", ValueError, "NUL"),
    ([("on", 1)], (), None, 7, TypeError, "salt must be a str"),
])
def test_config_validation(variants, rules, default, salt, exc, message):
    with pytest.raises(exc, match=message):
        VariantFlag().configure(variants, rules, default, salt, actor="cloud", ts=T0)


def test_mutator_argument_validation():
    f = VariantFlag()
    with pytest.raises(TypeError, match="ts must be"):
        f.configure(VARIANTS, salt="s", actor="cloud", ts=-1)
    with pytest.raises(TypeError, match="ts must be"):
        f.kill(actor="cloud", ts="now")
    with pytest.raises(TypeError, match="actor"):
        f.kill(actor="")
    with pytest.raises(TypeError, match="entity_key"):
        f.evaluate(42)
    with pytest.raises(TypeError, match="attributes"):
        _configured().evaluate("u", [("plan", "pro")])


def test_all_zero_weights_serve_the_default():
    f = VariantFlag()
    f = f.join(f.configure([("a", 0), ("b", 0)], default="b", salt="s", actor="x", ts=T0))
    for key in ("u1", "u2", "u3"):
        ev = f.evaluate(key)
        assert ev.variant == "b" and ev.reason == "default" and ev.bucket == bucket_of("s", key)


# -- variant flags: evaluation --------------------------------------------------------------


def test_rules_first_then_split_then_default():
    f = _configured(rules=[
        Rule("country", "in", ("DE", "FR"), "control"),
        Rule("plan", "eq", "beta", "treatment"),
    ])
    assert f.evaluate("u", {"country": "DE", "plan": "beta"}) == Evaluation("control", "rule", 0, None)
    assert f.evaluate("u", {"country": "US", "plan": "beta"}) == Evaluation("treatment", "rule", 1, None)
    # no rule: the sticky bucket decides (buckets pinned in property_tests/test_laws_flags.py)
    assert bucket_of("checkout", "user-1") == 8407
    assert f.evaluate("user-1") == Evaluation("control", "default", None, 8407)
    g = _configured(ts=T0 + 1)
    g = g.join(g.configure([("treatment", 9_000), ("control", 0)], default="control", actor="cloud", ts=T0 + 2))
    assert g.evaluate("user-1") == Evaluation("treatment", "split", None, 8407)
    assert g.evaluate("user-2") == Evaluation("control", "default", None, 9224)


def test_rollout_5_25_100_keeps_stations_that_already_have_the_model():
    # USE_CASES 2: a model version rolls out to 5%, 25%, then 100% of stations.
    stations = [f"station-{i}" for i in range(400)]
    f = VariantFlag()
    served = []
    for step, weight in enumerate([500, 2_500, 10_000]):
        f = f.join(f.configure([("v2", weight), ("v1", 0)], default="v1", salt="model:ranker",
                               actor="cloud", ts=T0 + step))
        served.append({s for s in stations if f.evaluate(s).variant == "v2"})
    assert served[0] <= served[1] <= served[2] == set(stations)
    assert 0 < len(served[0]) < len(served[1]) < len(stations)
    # the salt decides who goes first: another flag picks a different 5%
    other = VariantConfig.build([("v2", 500), ("v1", 0)], (), "v1", "model:detector")
    assert {s for s in stations if other.evaluate(s).variant == "v2"} != served[0]


def test_kill_serves_the_default_and_wins_over_a_concurrent_revive():
    f = _configured(rules=[Rule("plan", "eq", "beta", "treatment")])
    killed = f.join(f.kill(actor="cloud", ts=T0 + 5))
    assert killed.evaluate("u", {"plan": "beta"}) == Evaluation("control", "killed", None, None)
    assert killed.value()["killed"] is True
    # a store revives concurrently (it has not seen the kill): the kill wins
    revived_elsewhere = f.join(f.revive(actor="store"))
    x, y = _exchange(killed, revived_elsewhere)
    assert x == y and x.killed and x.kill_conflict
    assert x.kill_switch.disabled_by == {"cloud"} and x.kill_switch.enabled_by == {"store"}
    # a revive that saw the kill brings the flag back
    back = x.join(x.revive(actor="store"))
    assert not back.killed and not back.kill_conflict
    assert back.evaluate("u", {"plan": "beta"}).reason == "rule"


def test_kill_before_any_config_and_reconfigure_does_not_revive():
    f = VariantFlag()
    f = f.join(f.kill(actor="cloud"))
    assert f.evaluate("u") == Evaluation(None, "killed", None, None)
    f = f.join(f.configure(VARIANTS, default="control", salt="s", actor="cloud", ts=T0))
    assert f.killed and f.evaluate("u").variant == "control"


def test_variant_roundtrip_and_corrupt_payloads():
    f = _configured(rules=[Rule("age", "ge", 18, "treatment"), Rule("tags", "contains", ["vip", 3], "control")])
    f = f.join(f.kill(actor="cloud"))
    assert VariantFlag.decode(f.encode()) == f
    assert decode_any(f.encode()).value() == f.value()
    env = unpackb(f.encode())
    config, switch = env[2]
    bad = [
        [config[:5], switch],  # short config
        [[-1, *config[1:]], switch],  # negative ts
        [[config[0], "", *config[2:]], switch],  # empty actor
        [[*config[:2], [["treatment", -5], ["control", 0]], *config[3:]], switch],  # negative weight
        [[*config[:3], [["plan", "eq", ["x"], "gold"]], *config[4:]], switch],  # rule serves unknown variant
        [[*config[:3], [["plan", "near", ["x"], "control"]], *config[4:]], switch],  # unknown op
        [[*config[:4], "gold", config[5]], switch],  # unknown default
        [config, [False, switch[1], switch[2]]],  # switch must default to not killed
        [config],
    ]
    for payload in bad:
        with pytest.raises(CorruptRecord):
            VariantFlag.decode(packb([env[0], env[1], payload]))


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule, attributes, matches", [
    (Rule("plan", "eq", "pro", "x"), {"plan": "pro"}, True),
    (Rule("plan", "eq", "pro", "x"), {"plan": "free"}, False),
    (Rule("beta", "eq", True, "x"), {"beta": 1}, False),  # True never equals 1
    (Rule("n", "eq", 1, "x"), {"n": 1.0}, True),
    (Rule("n", "eq", 1, "x"), {"n": "1"}, False),
    (Rule("plan", "ne", "pro", "x"), {"plan": "free"}, True),
    (Rule("plan", "ne", "pro", "x"), {}, False),  # missing never matches
    (Rule("country", "in", ("DE", "FR"), "x"), {"country": "FR"}, True),
    (Rule("country", "not_in", ("DE", "FR"), "x"), {"country": "US"}, True),
    (Rule("country", "not_in", ("DE", "FR"), "x"), {"country": None}, False),
    (Rule("age", "lt", 18, "x"), {"age": 17.5}, True),
    (Rule("age", "le", 18, "x"), {"age": 18}, True),
    (Rule("age", "gt", 18, "x"), {"age": 18}, False),
    (Rule("age", "ge", 18, "x"), {"age": "19"}, False),  # mixed types never compare
    (Rule("age", "ge", 18, "x"), {"age": True}, False),
    (Rule("since", "ge", "2024-01-01", "x"), {"since": "2024-06-30"}, True),
    (Rule("email", "contains", "@corp", "x"), {"email": "a@corp.com"}, True),
    (Rule("tags", "contains", ("vip", "staff"), "x"), {"tags": ["staff"]}, True),
    (Rule("tags", "contains", 1, "x"), {"tags": [True]}, False),
    (Rule("tags", "contains", "vip", "x"), {"tags": 5}, False),
    (Rule("region", "starts_with", ("eu-", "uk-"), "x"), {"region": "eu-west-1"}, True),
    (Rule("region", "starts_with", "eu-", "x"), {"region": "us-east-1"}, False),
    (Rule("beta", "exists", True, "x"), {"beta": False}, True),
    (Rule("beta", "exists", True, "x"), {"beta": None}, False),
    (Rule("beta", "exists", False, "x"), {}, True),
])
def test_rule_operators(rule, attributes, matches):
    assert rule.matches(attributes) is matches


@pytest.mark.parametrize("args, exc, message", [
    (("plan", "like", "p", "x"), ValueError, "unknown rule op"),
    (("plan", "eq", ("a", "b"), "x"), ValueError, "exactly one value"),
    (("plan", "in", (), "x"), ValueError, "at least one value"),
    (("plan", "exists", "yes", "x"), ValueError, "True .* or False"),
    (("age", "lt", True, "x"), ValueError, "not a bool"),
    (("plan", "starts_with", 3, "x"), ValueError, "prefixes must be str"),
    (("plan", "eq", None, "x"), TypeError, "values are str, int, float or bool"),
    (("plan", "eq", float("nan"), "x"), ValueError, "finite"),
    (("", "eq", "p", "x"), TypeError, "attribute"),
    (("plan", "eq", "p", ""), TypeError, "variant"),
])
def test_rule_validation(args, exc, message):
    with pytest.raises(exc, match=message):
        Rule(*args)


def test_rule_values_are_normalized_to_a_tuple():
    assert Rule("plan", "in", ["a", "b"], "x").values == ("a", "b")
    assert Rule("plan", "eq", "a", "x").values == ("a",)
    assert Rule("n", "eq", -0.0, "x") == Rule("n", "eq", 0.0, "x")
