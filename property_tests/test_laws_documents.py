"""Shared laws for the Yjs-backed documents, plus their semantic properties.

The law specs' reference models are partial (they skip values that depend on Yjs's
integration order, see :mod:`crdtsync.testing.specs.documents`), so the properties below
check the semantics users rely on with models that are exact in their own setting:
sequential histories (plain nested-dict / string edits), concurrent writers on disjoint
subtrees, and concurrent writes of one key.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdtsync.testing import CRDTLaws
from crdtsync.testing._spec import Op
from crdtsync.testing.specs.documents import (
    DOCUMENT,
    TEXT,
    apply_json_op,
    document_ops,
    json_model,
    strict_equal,
    text_ops,
)
from crdtsync.types.documents import Document, Text, yjs_client_id


class TestDocumentLaws(CRDTLaws):
    spec = DOCUMENT


class TestTextLaws(CRDTLaws):
    spec = TEXT


_actors = st.sampled_from(["r0", "r1", "r2", "edge-7"])


def _run(state: Any, op: Op, actor: str) -> tuple[Any, Any]:
    delta = op.apply(state, actor=actor, ts=0)
    return state.join(delta), delta


def _join_all(empty: Any, deltas: list[Any]) -> Any:
    for d in deltas:
        empty = empty.join(d)
    return empty


@given(st.lists(st.tuples(_actors, document_ops), max_size=12), st.randoms(use_true_random=False))
def test_document_sequential_history_matches_plain_dict_edits(steps, rnd):
    """Writers taking turns (each seeing all earlier writes) see plain JSON semantics."""
    state, deltas = Document(), []
    for actor, op in steps:
        state, delta = _run(state, op, actor)
        deltas.append(delta)
        assert strict_equal(state.value(), json_model([o for _, o in steps[: len(deltas)]]))
    rnd.shuffle(deltas)
    shuffled = _join_all(Document(), deltas)
    assert shuffled == state, "deltas joined out of order did not converge"


@given(st.lists(st.lists(document_ops, max_size=5), min_size=2, max_size=3), st.randoms(use_true_random=False))
def test_document_concurrent_writers_on_disjoint_subtrees_all_survive(per_replica, rnd):
    """Replicas editing their own subtree under one shared, concurrently created map."""
    deltas, expected = [], {}
    for i, ops in enumerate(per_replica):
        prefix = ("shared", f"r{i}")
        state = Document()
        for op in ops:
            keys = tuple(op.args[0].split(".")) if isinstance(op.args[0], str) else op.args[0]
            op = Op(op.name, ((*prefix, *keys), *op.args[1:]))
            state, delta = _run(state, op, f"r{i}")
            deltas.append(delta)
            apply_json_op(expected, op)
    rnd.shuffle(deltas)
    assert strict_equal(_join_all(Document(), deltas).value(), expected)


_values = st.sampled_from([0, 1, 1.0, True, "x", None, [1], {"a": 2}, {}, {"a": {"b": 1}, "c": 3}, {"a": 5}])


def _one_key_outcome(va: Any, vb: Any, a_wins: bool) -> Any:
    """Two dicts are two sets of writes to their keys: they merge key by key, and a key
    both wrote goes the same way recursively. Otherwise the higher client id wins."""
    if isinstance(va, dict) and isinstance(vb, dict):
        return {
            k: _one_key_outcome(va[k], vb[k], a_wins) if k in va and k in vb else (va[k] if k in va else vb[k])
            for k in va.keys() | vb.keys()
        }
    return va if a_wins else vb


@given(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8), _values, _values,
       st.sampled_from(["k", "a.k", "a.b.k"]), st.booleans())
def test_document_concurrent_writes_to_one_key_go_to_the_higher_client_id(a, b, va, vb, path, seeded):
    if yjs_client_id(a) == yjs_client_id(b):
        return
    base = Document()
    if seeded:
        base = base.join(base.set(path, "before", actor="seed"))
    da, db = base.set(path, va, actor=a), base.set(path, vb, actor=b)
    want = _one_key_outcome(va, vb, yjs_client_id(a) > yjs_client_id(b))
    for merged in (base.join(da).join(db), base.join(db).join(da)):
        assert strict_equal(merged.get(path), want)


def _text_model(ops: list[Op]) -> str:
    s = ""
    for op in ops:
        if op.name == "insert":
            i, chunk = op.args
            s = s[:i] + chunk + s[i:]
        else:
            i, n = op.args
            s = s[:i] + s[i + n :]
    return s


@given(st.lists(st.tuples(_actors, text_ops), max_size=15), st.randoms(use_true_random=False))
def test_text_sequential_edits_match_string_edits(steps, rnd):
    state, deltas = Text(), []
    for actor, op in steps:
        state, delta = _run(state, op, actor)
        deltas.append(delta)
    assert state.value() == _text_model([op for _, op in steps])
    rnd.shuffle(deltas)
    assert _join_all(Text(), deltas) == state, "deltas joined out of order did not converge"
