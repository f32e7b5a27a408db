"""Example-based tests of BoundedCounter: what a user relies on."""

from __future__ import annotations

from typing import Any

import pytest

from crdtsync._encoding import packb
from crdtsync.errors import (
    CorruptRecord,
    IncompatibleState,
    InsufficientRights,
    PreconditionFailed,
    UnsupportedVersion,
)
from crdtsync.types import decode_any
from crdtsync.types.bounded import BoundedCounter


def _decode(payload: Any, version: int = 1) -> BoundedCounter:
    s = decode_any(packb(["bcounter", version, payload]))
    assert isinstance(s, BoundedCounter)
    return s


def _apply(state: BoundedCounter, delta: BoundedCounter) -> BoundedCounter:
    return state.join(delta)


def _stocked(**amounts: int) -> BoundedCounter:
    """One state in which each named replica incremented its amount."""
    s = BoundedCounter()
    for actor, n in amounts.items():
        s = s.join(s.increment(n, actor=actor))
    return s


# -- the rule: spend only your own rights ---------------------------------------------


class TestRights:
    def test_starts_at_the_bound_with_no_rights(self) -> None:
        s = BoundedCounter()
        assert s.value() == 0 and s.lower == 0
        assert s.rights("a") == 0
        assert dict(s.local_rights) == {}

    def test_increment_creates_rights_for_its_writer(self) -> None:
        s = _stocked(cloud=5, edge=2)
        assert s.value() == 7
        assert s.rights("cloud") == 5 and s.rights("edge") == 2
        assert dict(s.local_rights) == {"cloud": 5, "edge": 2}

    def test_concurrent_spends_of_own_rights_both_succeed(self) -> None:
        base = _stocked(a=3, b=2)
        at_a = base.join(base.decrement(3, actor="a"))
        at_b = base.join(base.decrement(2, actor="b"))
        for merged in (at_a.join(at_b), at_b.join(at_a)):
            assert merged.value() == 0
            assert dict(merged.local_rights) == {}

    def test_a_replica_without_rights_is_refused(self) -> None:
        s = _stocked(a=10)
        with pytest.raises(InsufficientRights) as err:
            s.decrement(1, actor="b")
        msg = str(err.value)
        assert "'b' holds 0" in msg and "10 more are held by other replicas" in msg
        assert "transfer" in msg
        assert isinstance(err.value, PreconditionFailed)

    def test_a_spend_beyond_own_rights_is_refused_even_if_the_value_covers_it(self) -> None:
        s = _stocked(a=2, b=5)
        with pytest.raises(InsufficientRights, match="'a' holds 2"):
            s.decrement(3, actor="a")
        assert s.decrement(2, actor="a").join(s).value() == 5

    def test_after_a_transfer_the_receiver_can_spend(self) -> None:
        cloud = _stocked(cloud=10)
        edge = BoundedCounter().join(cloud)
        with pytest.raises(InsufficientRights):
            edge.decrement(4, actor="edge")
        cloud = cloud.join(cloud.transfer(4, "edge", actor="cloud"))
        assert cloud.rights("cloud") == 6 and cloud.rights("edge") == 4
        assert cloud.value() == 10  # moving rights does not change the value
        edge = edge.join(cloud)
        edge = edge.join(edge.decrement(4, actor="edge"))
        assert edge.value() == 6 and edge.rights("edge") == 0
        with pytest.raises(InsufficientRights):
            edge.decrement(1, actor="edge")

    def test_transferred_rights_leave_the_sender(self) -> None:
        s = _stocked(a=3)
        s = s.join(s.transfer(3, "b", actor="a"))
        with pytest.raises(InsufficientRights, match="'a' holds 0"):
            s.decrement(1, actor="a")
        with pytest.raises(InsufficientRights, match="'a' holds 0"):
            s.transfer(1, "c", actor="a")
        assert s.transfers == {("a", "b"): 3}

    def test_a_transfer_beyond_own_rights_is_refused(self) -> None:
        s = _stocked(a=3)
        with pytest.raises(InsufficientRights, match="'a' holds 3"):
            s.transfer(4, "b", actor="a")

    def test_rights_pass_along_a_chain_of_transfers(self) -> None:
        s = _stocked(a=5)
        s = s.join(s.transfer(5, "b", actor="a"))
        s = s.join(s.transfer(2, "c", actor="b"))
        s = s.join(s.decrement(2, actor="c"))
        assert dict(s.local_rights) == {"b": 3}
        assert s.value() == 3

    def test_a_transfer_to_oneself_changes_nothing_but_needs_the_rights(self) -> None:
        s = _stocked(a=3)
        assert s.join(s.transfer(2, "a", actor="a")) == s
        with pytest.raises(InsufficientRights):
            s.transfer(4, "a", actor="a")

    def test_zero_amounts_are_empty_deltas_even_without_rights(self) -> None:
        s = _stocked(a=1)
        for delta in (s.increment(0, actor="b"), s.decrement(0, actor="b"), s.transfer(0, "a", actor="b")):
            assert delta == BoundedCounter()
            assert s.join(delta) is s

    def test_a_refused_spend_changes_nothing(self) -> None:
        s = _stocked(a=1)
        before = s.encode()
        with pytest.raises(InsufficientRights):
            s.decrement(2, actor="a")
        assert s.encode() == before

    def test_an_old_state_sees_rights_a_replica_has_already_spent(self) -> None:
        # why only the owner may decide: another replica's view of a's rights can be stale
        s = _stocked(a=2)
        at_a = s.join(s.decrement(2, actor="a"))
        assert s.rights("a") == 2 and at_a.rights("a") == 0
        assert s.join(at_a).rights("a") == 0


# -- deltas carry their justification ---------------------------------------------------


class TestDeltas:
    def test_a_spend_delta_alone_never_goes_below_the_bound(self) -> None:
        s = _stocked(a=5)
        s = s.join(s.transfer(5, "b", actor="a"))
        s = s.join(s.transfer(3, "c", actor="b"))
        delta = s.decrement(3, actor="c")
        assert delta.value() == 2  # carries a's increment and both transfers
        assert BoundedCounter().join(delta).rights("c") == 0

    def test_a_spend_delta_leaves_out_unrelated_replicas(self) -> None:
        s = _stocked(a=5, x=9)
        s = s.join(s.transfer(1, "y", actor="x"))
        delta = s.decrement(1, actor="a")
        assert dict(delta.local_rights) == {"a": 4}
        assert delta.transfers == {}

    def test_deltas_in_any_order_stay_above_the_bound(self) -> None:
        s = _stocked(a=4)
        d1 = s.transfer(4, "b", actor="a")
        s = s.join(d1)
        d2 = s.decrement(4, actor="b")
        for first, second in ((d1, d2), (d2, d1)):
            x = BoundedCounter().join(first)
            assert x.value() >= 0
            assert x.join(second).value() == 0

    def test_increment_delta_holds_the_new_total(self) -> None:
        s = _stocked(a=2)
        delta = s.increment(3, actor="a")
        assert delta.value() == 5
        assert s.join(delta).join(delta).value() == 5  # a duplicate changes nothing


# -- the lower bound ------------------------------------------------------------------


class TestLowerBound:
    def test_a_counter_starts_at_its_bound_and_never_goes_below(self) -> None:
        s = BoundedCounter(lower=10)
        assert s.value() == 10
        with pytest.raises(InsufficientRights):
            s.decrement(1, actor="a")
        s = s.join(s.increment(3, actor="a"))
        s = s.join(s.decrement(3, actor="a"))
        assert s.value() == 10

    def test_negative_bound(self) -> None:
        s = BoundedCounter(lower=-5)
        s = s.join(s.increment(2, actor="a"))
        assert s.value() == -3
        assert sum(s.local_rights.values()) == s.value() - s.lower

    def test_states_with_different_bounds_do_not_join(self) -> None:
        with pytest.raises(IncompatibleState, match="lower"):
            BoundedCounter(lower=0).join(BoundedCounter(lower=1))

    def test_deltas_keep_the_bound(self) -> None:
        s = BoundedCounter(lower=3)
        assert s.increment(1, actor="a").lower == 3
        assert s.decrement(0, actor="a").lower == 3

    @pytest.mark.parametrize("bad,exc", [(1.0, TypeError), (True, TypeError), ("0", TypeError), (2**63, ValueError)])
    def test_bad_bounds_are_refused(self, bad: Any, exc: type[Exception]) -> None:
        with pytest.raises(exc, match="lower"):
            BoundedCounter(lower=bad)


# -- argument validation --------------------------------------------------------------


class TestValidation:
    @pytest.mark.parametrize("method", ["increment", "decrement"])
    @pytest.mark.parametrize("bad,exc", [(1.5, TypeError), (True, TypeError), ("1", TypeError), (-1, ValueError),
                                         (2**63, ValueError)])
    def test_bad_amounts(self, method: str, bad: Any, exc: type[Exception]) -> None:
        with pytest.raises(exc, match=method):
            getattr(_stocked(a=5), method)(bad, actor="a")

    def test_negative_amount_messages_say_what_to_do(self) -> None:
        with pytest.raises(ValueError, match="use decrement"):
            BoundedCounter().increment(-1, actor="a")
        with pytest.raises(ValueError, match="use increment"):
            BoundedCounter().decrement(-1, actor="a")
        with pytest.raises(ValueError, match="transfer back"):
            BoundedCounter().transfer(-1, "b", actor="a")

    @pytest.mark.parametrize("bad", [1.5, True, -1])
    def test_bad_transfer_amounts(self, bad: Any) -> None:
        with pytest.raises((TypeError, ValueError), match="transfer"):
            _stocked(a=5).transfer(bad, "b", actor="a")

    @pytest.mark.parametrize("bad", ["", None, 3])
    def test_bad_transfer_targets(self, bad: Any) -> None:
        with pytest.raises(TypeError, match="receiving replica"):
            _stocked(a=5).transfer(1, bad, actor="a")

    @pytest.mark.parametrize("bad", ["", None, 7])
    def test_bad_actors(self, bad: Any) -> None:
        s = _stocked(a=5)
        for call in (lambda: s.increment(1, actor=bad), lambda: s.decrement(1, actor=bad),
                     lambda: s.transfer(1, "b", actor=bad), lambda: s.rights(bad)):
            with pytest.raises(TypeError, match="actor"):
                call()

    def test_totals_cannot_overflow_64_bits(self) -> None:
        s = BoundedCounter()
        s = s.join(s.increment(2**63 - 1, actor="a"))
        with pytest.raises(ValueError, match="2\\*\\*63"):
            s.increment(1, actor="a")
        assert BoundedCounter.decode(s.encode()) == s


# -- encoding -------------------------------------------------------------------------


class TestEncoding:
    def test_layout(self) -> None:
        s = BoundedCounter(lower=-1)
        s = s.join(s.increment(5, actor="b"))
        s = s.join(s.increment(1, actor="a"))
        s = s.join(s.transfer(2, "c", actor="b"))
        s = s.join(s.transfer(1, "a", actor="b"))
        s = s.join(s.decrement(2, actor="a"))
        assert s._payload() == [-1, [["a", 1], ["b", 5]], [["a", 2]], [["b", "a", 1], ["b", "c", 2]]]
        assert decode_any(s.encode()) == s
        assert s.value() == 3

    def test_empty_round_trip_keeps_the_bound(self) -> None:
        back = BoundedCounter.decode(BoundedCounter(lower=7).encode())
        assert back.lower == 7 and back.value() == 7

    def test_newer_version_is_refused(self) -> None:
        with pytest.raises(UnsupportedVersion):
            _decode([0, [], [], []], version=2)

    @pytest.mark.parametrize(
        "payload",
        [
            None,
            [],
            [0, [], []],
            [0.0, [], [], []],
            [True, [], [], []],
            [0, [["a", 0]], [], []],  # zero totals are omitted
            [0, [["a", -1]], [], []],
            [0, [["b", 1], ["a", 1]], [], []],  # not sorted
            [0, [["a", 1], ["a", 2]], [], []],  # duplicate
            [0, [["", 1]], [], []],  # empty actor
            [0, [[1, 1]], [], []],
            [0, [["a", 1, 2]], [], []],
            [0, [["a", 2**63]], [], []],
            [0, [["a", 1]], [], [["a", "a", 1]]],  # transfer to itself
            [0, [["a", 2]], [], [["a", "c", 1], ["a", "b", 1]]],  # transfers not sorted
            [0, [["a", 2]], [], [["a", "b"]]],
            [0, [], [["a", 1]], []],  # spent rights it never had: value below the bound
            [0, [["a", 1]], [], [["a", "b", 2]]],  # sent more than it had
            [0, [["a", 3]], [], [["a", "b", 2], ["b", "c", 3]]],  # passed on more than it got
            [0, [["a", 3], ["b", 1]], [["a", 1]], [["a", "b", 3]]],  # a overspent, value still >= 0
        ],
    )
    def test_malformed_or_overspent_states_are_corrupt(self, payload: Any) -> None:
        with pytest.raises(CorruptRecord):
            _decode(payload)

    def test_a_well_founded_state_decodes(self) -> None:
        s = _decode([0, [["a", 3]], [["b", 2]], [["a", "b", 2]]])
        assert s.value() == 1 and dict(s.local_rights) == {"a": 1}
