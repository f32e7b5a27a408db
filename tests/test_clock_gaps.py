"""Contexts with gaps: the range form of the dot cloud agrees with a plain set of dots.

The model is a frozenset of dots. Every operation of :class:`Context` is checked
against the same operation on sets, on contexts grown by random adds, runs, joins and
constructors with gaps anywhere (issue 8, defect 4: a context with gaps must stay
exact and cheap).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtsync.clock import Context, Dot, Ordering

REPLICAS = ["a", "b", "c"]
TOP = 48
Model = frozenset[Dot]



def _ops(top: int) -> st.SearchStrategy[tuple]:
    seqs = st.integers(1, top)
    dots = st.builds(Dot, st.sampled_from(REPLICAS), seqs)
    return st.one_of(
        st.tuples(st.just("add"), st.sampled_from(REPLICAS), seqs),
        st.tuples(st.just("range"), st.sampled_from(REPLICAS), st.integers(-2, top), st.integers(-1, top)),
        st.tuples(st.just("add_all"), st.lists(dots, max_size=8)),
        st.tuples(st.just("vv"), st.dictionaries(st.sampled_from(REPLICAS), st.integers(0, top // 4), max_size=3),
                  st.lists(dots, max_size=6)),
    )


# dense (few seqs: runs meet and merge often) and sparse (many gaps)
OPS = [_ops(10), _ops(TOP)]


def _apply(pair: tuple[Context, Model], o: tuple) -> tuple[Context, Model]:
    ctx, model = pair
    if o[0] == "add":
        d = Dot(o[1], o[2])
        return ctx.add(d), model | {d}
    if o[0] == "range":
        _, r, first, last = o
        return ctx.add_range(r, first, last), model | {Dot(r, s) for s in range(max(first, 1), last + 1)}
    if o[0] == "add_all":
        return ctx.add_all(o[1]), model | set(o[1])
    _, vv, cloud = o  # a context from the constructor, joined in
    other = Context(vv, cloud)
    return ctx.join(other), model | {Dot(r, s) for r, n in vv.items() for s in range(1, n + 1)} | set(cloud)


@st.composite
def contexts(draw: st.DrawFn) -> tuple[Context, Model]:
    pair: tuple[Context, Model] = (Context(), frozenset())
    for o in draw(st.lists(draw(st.sampled_from(OPS)), max_size=10)):
        pair = _apply(pair, o)
    return pair


def _prefix(model: Iterable[Dot], r: str) -> int:
    have = {s for x, s in model if x == r}
    n = 0
    while n + 1 in have:
        n += 1
    return n


def _reference_encoding(model: Model) -> bytes:
    """Wire format 1 computed from the set alone (module docstring of crdtsync.clock)."""
    rows = []
    for r in sorted({x for x, _ in model}):
        n = _prefix(model, r)
        rows.append([r, n, sorted(s for x, s in model if x == r and s > n)])
    return msgpack.packb([1, rows])


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _agrees(ctx: Context, model: Model) -> None:
    assert set(ctx.dots()) == model and len(ctx) == len(model) and bool(ctx) == bool(model)
    for r in REPLICAS + ["z"]:
        n = _prefix(model, r)
        assert ctx.vv.get(r, 0) == n
        assert ctx.max_seq(r) == max((s for x, s in model if x == r), default=0)
        assert ctx.next_dot(r) == Dot(r, ctx.max_seq(r) + 1)
        assert ctx.cloud_ranges(r) == tuple(_runs([s for x, s in model if x == r and s > n]))
        for s in range(1, TOP + 3):
            assert (Dot(r, s) in ctx) == (Dot(r, s) in model)
        for first, last in [(1, TOP + 2), (3, 9), (n, n + 5), (TOP, TOP + 4), (7, 6)]:
            lacking = [s for s in range(max(first, 1), last + 1) if Dot(r, s) not in model]
            assert ctx.missing(r, first, last) == _runs(lacking)
    cloud = frozenset(d for d in model if d.seq > _prefix(model, d.replica))
    assert ctx.cloud == cloud and ctx.cloud_size() == len(cloud) and ctx.is_compact() == (not cloud)
    assert ctx.replicas() == {r for r, _ in model}
    same = Context.from_dots(model)
    assert ctx == same and hash(ctx) == hash(same)
    blob = ctx.encode()
    assert blob == _reference_encoding(model), "wire format 1, byte for byte"
    assert Context.decode(blob) == ctx and Context.decode(blob).encode() == blob


@settings(max_examples=300)
@given(contexts())
def test_every_query_agrees_with_the_set_of_dots(pair):
    _agrees(*pair)


@settings(max_examples=300)
@given(contexts(), contexts())
def test_join_meet_order_and_without_agree_with_sets(p, q):
    (a, ma), (b, mb) = p, q
    _agrees(a.join(b), ma | mb)
    _agrees(a | b, ma | mb)
    _agrees(a.meet(b), ma & mb)
    assert (a <= b) == (ma <= mb) and (a >= b) == (ma >= mb)
    assert (a < b) == (ma < mb) and (a > b) == (ma > mb)
    assert (a == b) == (ma == mb)
    want = (Ordering.EQUAL if ma == mb else Ordering.BEFORE if ma < mb
            else Ordering.AFTER if ma > mb else Ordering.CONCURRENT)
    assert a.compare(b) is want and a.concurrent(b) == (want is Ordering.CONCURRENT)
    _agrees(a.without(["b"]), frozenset(d for d in ma if d.replica != "b"))
    assert a.subtract_dots(mb) == mb - ma


def test_a_permanent_gap_keeps_one_range_however_many_runs_follow_it():
    ctx = Context().add_range("w", 1, 1024)
    for first in range(1026, 1026 + 1024 * 1000, 1024):  # a million seqs after seq 1025
        ctx = ctx.add_range("w", first, first + 1023)
    last = 1025 + 1024 * 1000
    assert ctx.vv == {"w": 1024} and ctx.cloud_ranges("w") == ((1026, last),)
    assert ctx.cloud_size() == last - 1025 and ctx.max_seq("w") == last
    assert Dot("w", 1025) not in ctx and Dot("w", 1026) in ctx and Dot("w", last) in ctx
    assert ctx.missing("w", 1, last + 2) == [(1025, 1025), (last + 1, last + 2)]
    assert Context.decode(ctx.encode()) == ctx
    filled = ctx.add(Dot("w", 1025))
    assert filled.vv == {"w": last} and filled.is_compact(), "the gap filled folds the range in"
