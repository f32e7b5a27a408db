"""The small-delta join fast paths of ORSet and ORMap equal the full join.

The shared law suite works on small states, below the sizes where ORSet and ORMap
switch to joining a delta through their reverse dot index; these properties build large
states and compare the fast path with the full join on every step.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync import ORMap, ORSet

ACTORS = ["a", "b", "c"]


@settings(max_examples=60)
@given(st.data())
def test_orset_fast_join_equals_full_join(data):
    replicas = [ORSet() for _ in ACTORS]
    # grow each replica well past the fast-path threshold, with overlapping elements
    for i in range(data.draw(st.integers(40, 90), label="size")):
        r = i % 3
        replicas[r] = replicas[r].join(replicas[r].add(data.draw(st.integers(0, 120)), actor=ACTORS[r]))
    replicas[0] = replicas[0].join(replicas[1])
    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        r = data.draw(st.integers(0, 2))
        s = replicas[r]
        e = data.draw(st.integers(0, 120))
        if data.draw(st.booleans()):
            delta = s.add(e, actor=ACTORS[r])
        else:
            other = replicas[data.draw(st.integers(0, 2))]
            delta = s.remove(e, actor=ACTORS[r], observed=other.dots_of(e) if data.draw(st.booleans()) else None)
        for target in range(3):
            t = replicas[target]
            fast, full = t.join(delta), t._join_full(delta)
            assert fast == full and fast.value() == full.value()
            assert delta.join(t) == full
        replicas[r] = replicas[r].join(delta)
        if data.draw(st.booleans()):
            a, b = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
            replicas[a] = replicas[a].join(replicas[b])


@settings(max_examples=40)
@given(st.data())
def test_ormap_fast_join_equals_full_join(data):
    replicas = [ORMap() for _ in ACTORS]
    for i in range(data.draw(st.integers(20, 50), label="size")):
        r = i % 3
        k = f"k{data.draw(st.integers(0, 60))}"
        replicas[r] = replicas[r].join(replicas[r].update(k, "increment", 1, actor=ACTORS[r]))
    replicas[0] = replicas[0].join(replicas[2])
    for _ in range(data.draw(st.integers(1, 20), label="steps")):
        r = data.draw(st.integers(0, 2))
        s = replicas[r]
        k = f"k{data.draw(st.integers(0, 60))}"
        if data.draw(st.booleans()):
            delta = s.update(k, data.draw(st.sampled_from(["increment", "decrement"])), 2, actor=ACTORS[r])
        else:
            delta = s.remove(k, actor=ACTORS[r])
        for target in range(3):
            t = replicas[target]
            fast, full = t.join(delta), t._join_full(delta)
            assert fast == full and fast.value() == full.value()
            assert delta.join(t) == full
        replicas[r] = replicas[r].join(delta)
        if data.draw(st.booleans()):
            a, b = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
            replicas[a] = replicas[a].join(replicas[b])
