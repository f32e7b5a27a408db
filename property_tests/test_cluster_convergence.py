"""Invariant 2 on real replicas: any faults, every type, one state after heal + settle.

Five replicas of a schema holding one field of every registered type run random
writes under random partitions, drops, duplicates, reordering, delay, clock skew and
crash/restart; after heal + settle they must agree, and each node's state rebuilt from
its log alone, and from its latest snapshot plus the log tail, must equal its live state.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.schema import Feature
from crdtsync.testing import all_specs
from crdtsync.testing.cluster import Cluster, assert_converged

SPECS = sorted(all_specs().values(), key=lambda s: s.label)
SCHEMA = [Feature(f"f_{s.label.lower().replace('[', '_').replace(']', '')}", s.empty) for s in SPECS]
FIELDS = [d.name for d in SCHEMA]
REJECTS = {f: s.rejects for f, s in zip(FIELDS, SPECS)}  # legitimate refusals (BoundedCounter)


@st.composite
def _write(draw):
    i = draw(st.integers(0, len(SPECS) - 1))
    return FIELDS[i], draw(st.sampled_from(["a", "b", "c"])), draw(SPECS[i].ops)


actions = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 4), _write()),
    st.tuples(st.just("step"), st.integers(1, 3)),
    st.tuples(st.just("partition"), st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("crash"), st.integers(0, 4)),
    st.tuples(st.just("restart"), st.integers(0, 4)),
    st.tuples(st.just("faults"), st.floats(0, 0.5), st.floats(0, 0.5), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("skew"), st.integers(0, 4), st.integers(-5_000, 5_000)),
)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**16), script=st.lists(actions, min_size=5, max_size=60))
def test_replicas_converge_under_faults(seed, script):
    with Cluster(5, schema=SCHEMA, seed=seed, snapshot_every=16) as c:
        names = c.names
        for action in script:
            kind = action[0]
            if kind == "write":
                node = names[action[1]]
                if node not in c.up():
                    continue
                fname, key, op = action[2]
                try:
                    c.write(node, fname, key, op.name, *op.args)
                except REJECTS[fname]:
                    pass  # refused by the type (e.g. not enough rights); nothing was written
            elif kind == "step":
                c.run(action[1])
            elif kind == "partition":
                c.partition([[names[i] for i in action[1]]])
            elif kind == "heal":
                c.heal()
            elif kind == "crash":
                c.crash(names[action[1]])
            elif kind == "restart":
                c.restart(names[action[1]])
            elif kind == "faults":
                c.faults.drop, c.faults.duplicate, c.faults.reorder, c.faults.delay = action[1:]
            elif kind == "skew":
                c.skew(names[action[1]], action[2])
        for n in names:
            c.restart(n)
        c.heal()
        c.settle()
        assert_converged(c)
        for n in names:
            live = c.replica(n).digest()
            assert c.rebuild(n, use_snapshot=False).digest() == live, f"{n}: log replay differs"
            assert c.rebuild(n, use_snapshot=True).digest() == live, f"{n}: snapshot + tail differs"
