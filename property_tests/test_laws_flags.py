"""Shared laws for the flags, plus the sticky-bucketing properties of VariantFlag."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from crdtsync.testing import CRDTLaws, spec_for
from crdtsync.testing.specs.flags import DWFLAG_ON, rules
from crdtsync.types.flags import (
    BUCKETS,
    DisableWinsFlag,
    EnableWinsFlag,
    Rule,
    VariantConfig,
    VariantFlag,
    bucket_of,
)


class TestEnableWinsFlagLaws(CRDTLaws):
    spec = spec_for(EnableWinsFlag)


class TestDisableWinsFlagLaws(CRDTLaws):
    spec = spec_for(DisableWinsFlag)


class TestDisableWinsFlagDefaultOnLaws(CRDTLaws):
    spec = DWFLAG_ON


class TestVariantFlagLaws(CRDTLaws):
    spec = spec_for(VariantFlag)


# -- sticky bucketing ------------------------------------------------------------------

_keys = st.text(max_size=12)
_salts = st.text(max_size=8).filter(lambda s: "\x00" not in s)


def test_buckets_are_pinned():
    # Frozen values: a change here re-buckets every entity of every deployed flag.
    assert bucket_of("checkout", "user-1") == 8407
    assert bucket_of("checkout", "user-2") == 9224
    assert bucket_of("checkout", "station-7") == 9788
    assert bucket_of("checkout", "") == 1113


@given(_salts, _keys)
def test_bucket_is_blake2b_of_salt_nul_key(salt, key):
    digest = hashlib.blake2b((salt + "\x00" + key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    assert bucket_of(salt, key) == int.from_bytes(digest, "big") % 10_000
    assert 0 <= bucket_of(salt, key) < BUCKETS


def _slots(config: VariantConfig) -> list[str]:
    """Naive split: lay the variants out slot by slot over the 10 000 buckets."""
    slots: list[str] = []
    for name, weight in config.variants:
        slots.extend([name] * weight)
    slots.extend([config.default] * (BUCKETS - len(slots)))
    return slots


@st.composite
def _weights(draw, n: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, BUCKETS), min_size=n, max_size=n)))
    return [b - a for a, b in zip([0, *cuts[:-1]], cuts)]


_names = ["a", "b", "c", "d"]


@given(st.data(), _salts, st.lists(_keys, min_size=1, max_size=20))
def test_split_matches_naive_layout(data, salt, keys):
    n = data.draw(st.integers(1, 4))
    weights = data.draw(_weights(n))
    names = _names[:n]
    config = VariantConfig.build(list(zip(names, weights)), (), data.draw(st.sampled_from(names)), salt)
    slots = _slots(config)
    for key in keys:
        ev = config.evaluate(key)
        assert ev.bucket == bucket_of(salt, key)
        assert ev.variant == slots[ev.bucket]
        assert ev.reason == ("split" if ev.bucket < sum(weights) else "default")


@given(st.data(), _salts, st.lists(_keys, min_size=1, max_size=30))
def test_raising_a_weight_keeps_everyone_already_in_it(data, salt, keys):
    """Raise variant i's weight, keep the ones before it, shrink the ones after it as needed."""
    n = data.draw(st.integers(1, 4))
    before = data.draw(_weights(n))
    i = data.draw(st.integers(0, n - 1))
    head = sum(before[:i])
    raised = data.draw(st.integers(before[i], BUCKETS - head))
    after = list(before[: i + 1])
    after[i] = raised
    room = BUCKETS - head - raised
    for w in before[i + 1:]:
        w2 = data.draw(st.integers(0, min(w, room)) | st.integers(0, room))
        after.append(w2)
        room -= w2
    names = _names[:n]
    old = VariantConfig.build(list(zip(names, before)), (), names[0], salt)
    new = VariantConfig.build(list(zip(names, after)), (), names[0], salt)
    for key in keys:
        was = old.evaluate(key)
        if was.reason == "split" and was.variant == names[i]:
            assert new.evaluate(key).variant == names[i], f"{key!r} left {names[i]} when its weight rose"


@given(_salts, st.lists(_keys, min_size=1, max_size=30), st.lists(st.integers(0, BUCKETS), min_size=2, max_size=5))
def test_rollout_5_25_100_only_adds_entities(salt, keys, steps):
    """A two-variant rollout (new first, rest on the default) never takes anyone back."""
    steps = sorted(steps)
    served = [
        {k for k in keys
         if VariantConfig.build([("new", w), ("old", 0)], (), "old", salt).evaluate(k).variant == "new"}
        for w in steps
    ]
    for smaller, larger in itertools.pairwise(served):
        assert smaller <= larger


@given(st.lists(rules(["x", "y"]), min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(["country", "plan", "age", "tags"]),
                       st.sampled_from(["DE", "pro", "beta"]) | st.integers(-3, 100) | st.booleans()
                       | st.none() | st.lists(st.sampled_from(["DE", "pro", 1, True]), max_size=3),
                       max_size=4),
       _keys)
def test_first_matching_rule_wins(rs, attributes, key):
    config = VariantConfig.build([("x", 5_000), ("y", 0)], rs, "y", "s")
    ev = config.evaluate(key, attributes)
    matching = [i for i, r in enumerate(rs) if r.matches(attributes)]
    if matching:
        assert (ev.reason, ev.rule, ev.variant) == ("rule", matching[0], rs[matching[0]].variant)
    else:
        assert ev.reason in ("split", "default") and ev.rule is None


@given(st.sampled_from(["country", "plan"]), st.sampled_from(
    ["eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "contains", "starts_with"]))
def test_missing_attribute_matches_only_exists_false(attribute, op):
    values = ("DE",) if op != "lt" else (3,)
    rule = Rule(attribute, op, values, "x")
    assert not rule.matches({})
    assert not rule.matches({attribute: None})
    assert Rule(attribute, "exists", False, "x").matches({})
    assert not Rule(attribute, "exists", True, "x").matches({})
