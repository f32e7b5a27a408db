"""ORSet against a naive tag-based OR-Set, under arbitrary delta and full-state delivery.

Each of 2..10 replicas holds our :class:`ORSet` next to a reference: a set of
``(element, tag)`` adds (tags are unique ints) and a set of removed tags; merge is the
union of both, the value the elements with a non-removed tag. A remove removes the tags
its writer sees alive; a remove *carrying another replica's observation* removes exactly
the tags that replica sees alive.

As in the optimized OR-Set (Bieniusa et al. 2012; Almeida et al. 2018), an add also
retires the tags of the same element its writer sees alive: the new tag replaces them,
which changes no value at the writer. This matters because deltas arrive here in any
order: a remove that follows a re-add causally, but reached its writer before the first
add did, must still remove the first add (it is in the remove's causal past). The ORSet
gets this from the context its add delta carries; the reference from the retired tags.

Deltas are queued as they are issued and delivered to any replica, in any order, any
number of times; full-state merges happen between any two replicas. After every step
every replica's value must equal its reference's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdtsync.types.collections import ORSet

# small pools, biased towards a few replicas, so that operations meet on the same element
ELEMENTS = st.sampled_from(["a", ("t", 2), None])
REPLICA = st.integers(min_value=0, max_value=2) | st.integers(min_value=0, max_value=9)


@dataclass
class Ref:
    adds: set[tuple[Any, int]] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)

    def alive(self, e: Any) -> set[int]:
        return {t for x, t in self.adds if x == e and t not in self.removed}

    def value(self) -> frozenset[Any]:
        return frozenset(x for x, t in self.adds if t not in self.removed)

    def merge(self, other: Ref) -> None:
        self.adds |= other.adds
        self.removed |= other.removed


class ORSetVersusReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.sets: list[ORSet] = []
        self.refs: list[Ref] = []
        self.queue: list[tuple[ORSet, Ref]] = []
        self.next_tag = 0

    @initialize(n=st.integers(min_value=2, max_value=10))
    def start(self, n: int) -> None:
        self.n = n
        self.sets = [ORSet() for _ in range(n)]
        self.refs = [Ref() for _ in range(n)]

    def _issue(self, r: int, delta: ORSet, ref_delta: Ref) -> None:
        self.sets[r] = self.sets[r].join(delta)
        self.refs[r].merge(ref_delta)
        self.queue.append((delta, ref_delta))

    @rule(r=REPLICA, e=ELEMENTS)
    def add(self, r: int, e: Any) -> None:
        r %= self.n
        delta = self.sets[r].add(e, actor=f"r{r}")
        self.next_tag += 1
        self._issue(r, delta, Ref({(e, self.next_tag)}, self.refs[r].alive(e)))

    @rule(r=REPLICA, e=ELEMENTS)
    def remove(self, r: int, e: Any) -> None:
        r %= self.n
        delta = self.sets[r].remove(e, actor=f"r{r}")
        self._issue(r, delta, Ref(set(), self.refs[r].alive(e)))

    @rule(r=REPLICA, o=REPLICA, e=ELEMENTS)
    def remove_what_another_replica_saw(self, r: int, o: int, e: Any) -> None:
        r, o = r % self.n, o % self.n
        delta = self.sets[r].remove(e, actor=f"r{r}", observed=self.sets[o].dots_of(e))
        self._issue(r, delta, Ref(set(), self.refs[o].alive(e)))

    @rule(r=REPLICA, o=REPLICA)
    def merge(self, r: int, o: int) -> None:
        r, o = r % self.n, o % self.n
        self.sets[r] = self.sets[r].join(self.sets[o])
        self.refs[r].merge(self.refs[o])

    @precondition(lambda self: bool(self.queue))
    @rule(r=REPLICA, i=st.integers(min_value=0), keep=st.booleans())
    def deliver(self, r: int, i: int, keep: bool) -> None:
        r, i = r % self.n, i % len(self.queue)
        delta, ref_delta = self.queue[i] if keep else self.queue.pop(i)
        self.sets[r] = self.sets[r].join(delta)
        self.refs[r].merge(ref_delta)

    @invariant()
    def values_match_the_reference(self) -> None:
        for r in range(self.n):
            got, want = self.sets[r].value(), self.refs[r].value()
            assert got == want, f"r{r} shows {set(got)!r}, the reference {set(want)!r}"

    @invariant()
    def live_dots_are_in_the_context(self) -> None:
        for s in self.sets:
            for e in s:
                assert all(d in s.context for d in s.dots_of(e))

    def teardown(self) -> None:
        if not self.sets:
            return
        # Everything delivered everywhere: all replicas converge on the reference union.
        full = self.sets[0]
        ref = Ref()
        for s, rf in zip(self.sets, self.refs):
            full = full.join(s)
            ref.merge(rf)
        for delta, ref_delta in self.queue:
            full = full.join(delta)
            ref.merge(ref_delta)
        assert full.value() == ref.value()
        assert ORSet.decode(full.encode()) == full


TestORSetReference = ORSetVersusReference.TestCase
