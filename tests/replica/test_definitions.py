"""Definitions: the schema in code plus definitions learned from the log (``_schema``);
malformed ones are counted and ignored; admins."""

from __future__ import annotations

import pytest

from crdtsync import Feature, GCounter, LWWRegister, Tunable
from crdtsync.policy import LOCAL, QUORUM
from crdtsync.replica.stats import ReplicaStats

from ._parts import defs

CODE = Feature("clicks", GCounter)
REMOTE = Feature("limits", LWWRegister, writers={"risk"}, residency={"eu"},
                 policy=Tunable(write=QUORUM(), read=LOCAL))


def test_code_definitions_come_first_and_unknown_fields_raise_a_key_error_naming_the_known() -> None:
    d = defs(CODE)
    assert d.get("clicks") is CODE and d.find("nope") is None
    with pytest.raises(KeyError, match="clicks"):
        d.get("nope")


def test_a_definition_learned_from_the_log_is_enforced_like_one_in_code() -> None:
    d = defs(CODE)
    learned: list[int] = []
    d.on_learn = lambda: learned.append(1)
    before = d.generation
    d.learn(REMOTE.to_dict())
    got = d.get("limits")
    assert got.same_as(REMOTE)
    assert got.writers == frozenset({"risk"}) and got.residency == frozenset({"eu"})
    assert got.policy.write == QUORUM()
    assert [x.name for x in d] == ["clicks", "limits"]
    assert d.generation != before and learned == [1], "caches keyed on the generation go stale"


def test_the_schema_in_code_wins_over_a_learned_definition_of_the_same_name() -> None:
    d = defs(CODE)
    d.learn(Feature("clicks", LWWRegister).to_dict())
    assert d.get("clicks") is CODE and d.remote == {}


def test_learning_the_same_definition_again_changes_nothing() -> None:
    d = defs(CODE)
    d.learn(REMOTE.to_dict())
    gen = d.generation
    calls: list[int] = []
    d.on_learn = lambda: calls.append(1)
    d.learn(REMOTE.to_dict())  # every replay of the log, every recovery reads it again
    assert d.generation == gen and calls == [], "write-permission caches are not dropped for nothing"
    newer = Feature("limits", LWWRegister, writers={"risk", "ops"}, version=2)
    d.learn(newer.to_dict())
    assert d.get("limits").same_as(newer) and d.generation != gen and calls == [1]


@pytest.mark.parametrize("bad", [{"name": "x"}, {"name": "bad name!", "template": b""}, "not a definition", 42,
                                 ["limits"]])
def test_a_malformed_definition_is_counted_and_ignored(bad: object) -> None:
    stats = ReplicaStats()
    d = defs(CODE, stats=stats)
    d.learn(bad)
    assert d.remote == {} and stats.events_rejected == {"bad_definition": 1}


def test_admins_are_any_role_unless_named() -> None:
    assert defs().is_admin("anyone")
    d = defs(admins=["ops"])
    assert d.is_admin("ops") and not d.is_admin("default")
    assert defs(admins=[]).is_admin("ops") is False, "an empty admin list means nobody"
