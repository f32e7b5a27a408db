"""BoundedCounter never goes below its bound, under any schedule hypothesis finds.

3 to 6 replicas increment, decrement and transfer rights at random, each as its own
actor on its own state. Every delta and every snapshot of a replica's state goes into a
pool; any pooled item can be joined into any replica at any time, in any order, any
number of times (no causal delivery, stale snapshots included), and replicas also
exchange full states directly.

Checked after every step, against a ground truth kept as a plain list of the operations
that were accepted:

* no replica's value, and no delta or snapshot, is ever below the bound;
* the rights a replica state or a delta shows sum to ``value - lower`` and none is
  negative (a delta carries the transfers that justify its spend);
* a replica's view of its own rights is exact for what it created, spent and sent, so
  it can only lag the ground truth (transfers still in flight), never exceed it;
* a spend is accepted exactly when the issuing replica's ``rights()`` covered it: every
  refusal was a real shortage, every covered spend went through and used ``n`` rights;
* once everything is joined everywhere, every replica shows the ground-truth value and
  the ground-truth rights of every actor.

A second test relays rights along a path of replicas that each know only the delta
they received, and joins any subset of the deltas in any order: a spending delta must
carry every transfer its rights came through.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crdtsync.errors import InsufficientRights
from crdtsync.types.bounded import BoundedCounter

# biased towards three replicas, so that rights often travel along chains of transfers
REPLICA = st.integers(min_value=0, max_value=2) | st.integers(min_value=0, max_value=5)
CREATED = st.integers(min_value=0, max_value=8)
SPENT = st.integers(min_value=0, max_value=4)


def _name(i: int) -> str:
    return f"r{i}"


class BoundedCounterInvariant(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.lower = 0
        self.states: list[BoundedCounter] = []
        self.pool: list[BoundedCounter] = []
        # ground truth: accepted operations as (actor, kind, amount, target)
        self.accepted: list[tuple[str, str, int, str]] = []

    @initialize(n=st.integers(min_value=3, max_value=6), lower=st.sampled_from([0, 0, -5, 12]))
    def start(self, n: int, lower: int) -> None:
        self.n, self.lower = n, lower
        self.states = [BoundedCounter(lower=lower) for _ in range(n)]

    # -- ground truth ---------------------------------------------------------------
    def true_rights(self, actor: str) -> int:
        held = 0
        for who, kind, amount, to in self.accepted:
            if kind == "increment" and who == actor:
                held += amount
            elif kind == "decrement" and who == actor:
                held -= amount
            elif kind == "transfer":
                held += amount * ((to == actor) - (who == actor))
        return held

    def true_value(self) -> int:
        return self.lower + sum(
            a if k == "increment" else -a for _, k, a, _ in self.accepted if k != "transfer"
        )

    # -- operations -----------------------------------------------------------------
    def _issue(self, r: int, delta: BoundedCounter, kind: str, amount: int, to: str = "") -> None:
        assert delta.value() >= self.lower, f"delta {delta!r} is below the bound"
        overspent = {a: v for a, v in delta.local_rights.items() if v < 0}
        assert not overspent, f"delta {delta!r} lacks the transfers that justify {overspent}"
        self.states[r] = self.states[r].join(delta)
        self.pool.append(delta)
        self.accepted.append((_name(r), kind, amount, to))

    def _spend(self, r: int, kind: str, amount: int, to: str = "") -> None:
        me = _name(r)
        before = self.states[r]
        held = before.rights(me)
        assert held <= self.true_rights(me), "a replica believes it holds rights it does not"
        try:
            if kind == "decrement":
                delta = before.decrement(amount, actor=me)
            else:
                delta = before.transfer(amount, to, actor=me)
        except InsufficientRights as exc:
            assert amount > held, f"{kind} of {amount} refused although {me} held {held}: {exc}"
            assert str(held) in str(exc)
            return
        assert amount <= held, f"{kind} of {amount} accepted although {me} held only {held}"
        self._issue(r, delta, kind, amount, to)
        spent = 0 if to == me else amount
        assert self.states[r].rights(me) == held - spent

    @rule(r=REPLICA, amount=CREATED)
    def increment(self, r: int, amount: int) -> None:
        r %= self.n
        held = self.states[r].rights(_name(r))
        self._issue(r, self.states[r].increment(amount, actor=_name(r)), "increment", amount)
        assert self.states[r].rights(_name(r)) == held + amount

    @rule(r=REPLICA, amount=SPENT)
    def decrement(self, r: int, amount: int) -> None:
        self._spend(r % self.n, "decrement", amount)

    @rule(r=REPLICA, amount=SPENT, to=REPLICA)
    def transfer(self, r: int, amount: int, to: int) -> None:
        self._spend(r % self.n, "transfer", amount, _name(to % self.n))

    @rule(r=REPLICA, to=REPLICA)
    def drain(self, r: int, to: int) -> None:
        """Hand every right over (as before decommissioning a replica): builds chains."""
        r %= self.n
        self._spend(r, "transfer", self.states[r].rights(_name(r)), _name(to % self.n))

    # -- delivery -------------------------------------------------------------------
    @rule(r=REPLICA, pick=st.integers(min_value=0))
    def deliver(self, r: int, pick: int) -> None:
        """Join any pooled delta or snapshot (kept in the pool: duplicates happen)."""
        if self.pool:
            r %= self.n
            self.states[r] = self.states[r].join(self.pool[pick % len(self.pool)])

    @rule(r=REPLICA)
    def catch_up(self, r: int) -> None:
        """Join everything pooled so far (lets rights travel along chains of transfers)."""
        r %= self.n
        for item in self.pool:
            self.states[r] = self.states[r].join(item)

    @rule(a=REPLICA, b=REPLICA, both=st.booleans())
    def sync(self, a: int, b: int, both: bool) -> None:
        """Full-state join from ``b`` into ``a`` (and back); ``b``'s state is also pooled."""
        a, b = a % self.n, b % self.n
        self.pool.append(self.states[b])
        self.states[a] = self.states[a].join(self.states[b])
        if both:
            self.states[b] = self.states[b].join(self.states[a])

    # -- checks ---------------------------------------------------------------------
    @invariant()
    def never_below_the_bound(self) -> None:
        assert self.true_value() >= self.lower
        for r, s in enumerate(self.states):
            assert s.value() >= self.lower, f"r{r} shows {s.value()} below the bound {self.lower}"
            rights = s.local_rights
            assert all(v > 0 for v in rights.values()), f"r{r} shows negative rights {dict(rights)}"
            assert sum(rights.values()) == s.value() - self.lower

    @invariant()
    def own_rights_only_lag(self) -> None:
        for r, s in enumerate(self.states):
            assert s.rights(_name(r)) <= self.true_rights(_name(r))

    def teardown(self) -> None:
        if not self.states:
            return
        everything = self.states[0]
        for s in [*self.states, *self.pool]:
            everything = everything.join(s)
        assert everything.value() == self.true_value()
        for i in range(self.n):
            assert everything.rights(_name(i)) == self.true_rights(_name(i))
        for s in self.states:
            assert s.join(everything) == everything, "a replica holds something no one issued"


TestBoundedCounterInvariant = BoundedCounterInvariant.TestCase


@given(
    path=st.lists(st.integers(min_value=0, max_value=5), min_size=2, max_size=6),
    data=st.data(),
)
def test_rights_relayed_by_deltas_alone(path: list[int], data: st.DataObject) -> None:
    """Rights created at one replica hop along a path of transfers, each replica knowing
    only the delta it received, and the last one spends: every subset of the deltas, in
    every order, stays above the bound and keeps every actor within its rights."""
    hops = [f"r{i}" for i in path]
    created = data.draw(st.integers(min_value=1, max_value=9), label="created")
    state = BoundedCounter(lower=-2)
    delta = state.increment(created, actor=hops[0])
    deltas = [delta]
    state = state.join(delta)  # the first replica's own state
    for sender, receiver in zip(hops, hops[1:]):
        amount = data.draw(st.integers(min_value=0, max_value=state.rights(sender)), label="moved")
        delta = state.transfer(amount, receiver, actor=sender)
        deltas.append(delta)
        state = BoundedCounter(lower=-2).join(delta)  # the receiver knows only this delta
        assert state.rights(receiver) >= (amount if receiver != sender else 0)
    last = hops[-1]
    spent = data.draw(st.integers(min_value=0, max_value=state.rights(last)), label="spent")
    deltas.append(state.decrement(spent, actor=last))
    order = data.draw(st.lists(st.sampled_from(deltas), max_size=2 * len(deltas)), label="order")
    x = BoundedCounter(lower=-2)
    for d in order:
        x = x.join(d)
        assert x.value() >= -2
        assert all(v > 0 for v in x.local_rights.values()), dict(x.local_rights)
    everything = BoundedCounter(lower=-2)
    for d in deltas:
        everything = everything.join(d)
    assert everything.value() == -2 + created - spent
