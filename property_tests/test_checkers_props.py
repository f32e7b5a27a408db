"""Laws of the history checkers, on histories produced by really running an object.

``runs(kind)`` drives one sequential object (a register, a counter, a grow-only set)
from several clients. Every operation is invoked, takes effect at one step of the
schedule, then completes; hypothesis picks the interleaving step by step, so an effect
falls anywhere inside its operation's [start, end] window. Some operations crash: a
``fail`` never takes effect; an ``info`` or never-completed one takes effect or not,
possibly after the client gave up on it. Such histories are linearizable by
construction, so:

* the linearizability checker accepts them, with a witness that really is one;
* a read changed to a value the object can never hold is rejected;
* set-full and counter-bounds accept the set and counter runs, and catch a dropped
  acknowledged element and an inflated read;
* no result depends on the order in which the operations are listed.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crdtsync.testing.checkers import (
    CounterModel,
    History,
    Model,
    Operation,
    RegisterModel,
    check_counter_bounds,
    check_linearizable,
    check_set_full,
)

MODELS: dict[str, Model[Any]] = {"register": RegisterModel(0), "counter": CounterModel(0)}


_CALLS: dict[str, list[tuple[str, Any]]] = {
    "register": [("read", None), *[("write", v) for v in range(4)],
                 *[("cas", (a, b)) for a in range(3) for b in range(4)]],
    "counter": [("read", None), *[("add", n) for n in range(4)], *[("decrement", n) for n in range(4)]],
    "adds": [("read", None), *[("add", n) for n in range(4)]],
    "set": [("read", None), ("add", None)],  # each set add gets a fresh element
}
_FATES = ["ok", "ok", "ok", "ok", "fail", "info", "info-no-effect", "pending", "pending-no-effect"]


def _apply(kind: str, state: Any, f: str, arg: Any, as_list: bool) -> tuple[Any, Any]:
    if kind == "set":
        if f == "add":
            return state | {arg}, None
        return state, sorted(state, key=repr) if as_list else frozenset(state)
    return MODELS["counter" if kind == "adds" else kind].step(state, f, arg)


@st.composite
def runs(draw: Any, kind: str, max_clients: int = 4, max_ops: int = 14) -> History:
    """A history of ``kind`` operations run against one sequential object, ending with one
    read (for sets: one add, then one read) after everything else.

    The calls and the schedule are drawn up front (few large draws keep generation
    cheap); each schedule number picks the next step among those possible: invoke on a
    free client, apply a live operation's effect, or complete one. Past the end of the
    schedule the first possible step is taken.
    """
    n_clients = draw(st.integers(1, max_clients))
    calls = draw(st.lists(st.tuples(st.sampled_from(_CALLS[kind]), st.sampled_from(_FATES)), max_size=max_ops))
    schedule = draw(st.lists(st.integers(0, 63), max_size=4 * max_ops))
    as_list = draw(st.booleans())
    state: Any = frozenset() if kind == "set" else 0
    h = History()
    free = list(range(n_clients))
    # Each live operation: token, f, arg, fate, whether it must still take effect,
    # result (once applied), whether it still awaits a completion.
    live: list[dict[str, Any]] = []
    for step in itertools.count():
        actions: list[tuple[str, Any]] = []
        if calls:
            actions += [("invoke", c) for c in free]
        for op in live:
            if op["apply"]:
                actions.append(("apply", op))
            if op["open"] and (op["fate"] != "ok" or not op["apply"]):
                actions.append(("complete", op))
        if not actions:
            break
        what, x = actions[schedule[step] % len(actions) if step < len(schedule) else 0]
        if what == "invoke":
            (f, arg), fate = calls.pop(0)
            if kind == "set" and f == "add":
                arg = len(h)
            free.remove(x)
            live.append({"token": h.invoke(f"c{x}", f, arg), "client": x, "f": f, "arg": arg,
                         "fate": fate, "apply": not fate.endswith("no-effect") and fate != "fail",
                         "result": None, "open": True})
        elif what == "apply":
            state, x["result"] = _apply(kind, state, x["f"], x["arg"], as_list)
            x["apply"] = False
        else:
            if x["fate"] == "ok":
                h.ok(x["token"], x["result"])
            elif x["fate"] == "fail":
                h.fail(x["token"])
            elif x["fate"].startswith("info"):
                h.info(x["token"])
            # pending: the client gives up silently and moves on; the effect may still come.
            x["open"] = False
            free.append(x["client"])
        live = [op for op in live if op["open"] or op["apply"]]
    if kind == "set":
        t = h.invoke("final", "add", "last")
        state, result = _apply(kind, state, "add", "last", as_list)
        h.ok(t, result)
    t = h.invoke("final", "read")
    h.ok(t, _apply(kind, state, "read", None, as_list)[1])
    return h


def _assert_witness(h: History, r: Any, model: Model[Any]) -> None:
    """The reported linearization is one: every ok operation once, no failed one, real
    time respected, and replaying it through the model gives every recorded result."""
    order = list(r.linearization)
    ids = [op.id for op in order]
    assert len(ids) == len(set(ids))
    assert {op.id for op in h.operations if op.kind == "ok"} <= set(ids)
    assert all(op.kind != "fail" for op in order)
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            assert not (b.end is not None and b.kind in ("ok", "fail") and b.end < a.start), (a, b)
    state = model.init()
    for op in order:
        state, expected = model.step(state, op.f, op.arg)
        if op.kind == "ok":
            assert model.result_matches(op.f, op.arg, expected, op.result), op


@given(st.sampled_from(["register", "counter"]).flatmap(lambda k: st.tuples(st.just(k), runs(k))))
def test_runs_of_a_sequential_object_are_linearizable(case: tuple[str, History]) -> None:
    kind, h = case
    r = check_linearizable(h, MODELS[kind])
    assert r.ok, r.explanation
    _assert_witness(h, r, MODELS[kind])


def _mutate_one_read(h: History, data: st.DataObject, value: Any) -> list[Operation]:
    reads = [op for op in h.operations if op.f == "read" and op.kind == "ok"]
    victim = data.draw(st.sampled_from(reads))
    return [dataclasses.replace(op, result=value) if op.id == victim.id else op for op in h.operations]


@given(st.data())
def test_a_read_of_a_value_never_written_is_not_linearizable(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["register", "counter"]))
    h = data.draw(runs(kind))
    # Registers only ever hold 0..3; counters (non-negative adds, decrement-if-enough)
    # never go below 0.
    bad = _mutate_one_read(h, data, 99 if kind == "register" else -1)
    r = check_linearizable(bad, MODELS[kind])
    assert not r.ok and r.stuck is not None
    assert r.explanation.startswith("not linearizable")


@given(runs("set"))
def test_set_runs_pass_set_full(h: History) -> None:
    r = check_set_full(h, linearizable=True)
    assert r.valid, r.explanation
    assert r.lost == r.stale == () and not r.duplicated and not r.unexpected
    assert "last" in r.stable


@given(runs("set"), st.data())
def test_dropping_an_acknowledged_element_from_the_last_read_loses_it(h: History, data: st.DataObject) -> None:
    acked = sorted({op.arg for op in h.operations if op.f == "add" and op.kind == "ok"}, key=repr)
    x = data.draw(st.sampled_from(acked))
    last = max(h.operations, key=lambda op: op.start)
    cut = type(last.result)(e for e in last.result if e != x)
    r = check_set_full([dataclasses.replace(op, result=cut) if op is last else op for op in h.operations])
    assert not r.valid and x in r.lost


@given(runs("adds"))
def test_counter_runs_pass_counter_bounds(h: History) -> None:
    r = check_counter_bounds(h)
    assert r.valid, r.explanation
    assert r.reads == sum(1 for op in h.operations if op.f == "read" and op.kind == "ok")


@given(runs("adds"), st.data())
def test_an_impossible_counter_read_violates_the_bounds(h: History, data: st.DataObject) -> None:
    attempted = sum(op.arg for op in h.operations if op.f == "add" and op.kind != "fail")
    bad = _mutate_one_read(h, data, data.draw(st.sampled_from([-1, attempted + 1])))
    r = check_counter_bounds(bad)
    assert not r.valid and len(r.violations) == 1


@given(st.data())
def test_results_do_not_depend_on_the_listed_order(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["register", "counter", "set", "adds"]))
    h = data.draw(runs(kind))
    ops = list(h.operations)
    if data.draw(st.booleans()):  # exercise failing results too
        ops = _mutate_one_read(History(ops), data, 99 if kind != "set" else ["ghost", "ghost"])
    shuffled = data.draw(st.permutations(ops))
    if kind == "set":
        assert check_set_full(ops) == check_set_full(shuffled)
    elif kind == "adds":
        assert check_counter_bounds(ops) == check_counter_bounds(shuffled)
    else:
        assert check_linearizable(ops, MODELS[kind]) == check_linearizable(shuffled, MODELS[kind])


def _brute_force(ops: list[Operation], model: Model[Any]) -> bool:
    """The definition, literally: some subset of the indeterminate operations, in some
    order that no real-time precedence contradicts, explains every ok result."""
    must = [op for op in ops if op.kind == "ok"]
    maybe = [op for op in ops if op.indeterminate]
    for k in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, k):
            for order in itertools.permutations(must + list(extra)):
                if any(b.kind == "ok" and b.end is not None and b.end < a.start
                       for i, a in enumerate(order) for b in order[i + 1:]):
                    continue
                state = model.init()
                for op in order:
                    state, expected = model.step(state, op.f, op.arg)
                    if op.kind == "ok" and not model.result_matches(op.f, op.arg, expected, op.result):
                        break
                else:
                    return True
    return False


@st.composite
def arbitrary_histories(draw: Any, kind: str) -> list[Operation]:
    """Small histories with arbitrary windows and results: mostly not linearizable."""
    ops = []
    for i in range(draw(st.integers(1, 6))):
        f, arg = draw(st.sampled_from(_CALLS[kind]))
        op_kind = draw(st.sampled_from(["ok", "ok", "ok", "fail", "info", "invoke"]))
        start = draw(st.integers(0, 8))
        end = None if op_kind == "invoke" else start + draw(st.integers(0, 4))
        result = None
        if op_kind == "ok" and f in ("read", "cas", "decrement"):
            result = draw(st.booleans()) if f != "read" else draw(st.integers(0, 4))
        ops.append(Operation(id=i, process=f"c{i}", f=f, arg=arg, kind=op_kind, result=result,
                             start=start, end=end))
    return ops


@given(st.sampled_from(["register", "counter"]).flatmap(
    lambda k: st.tuples(st.just(k), arbitrary_histories(k))))
def test_agrees_with_the_definition_on_small_arbitrary_histories(case: tuple[str, list[Operation]]) -> None:
    kind, ops = case
    model = MODELS[kind]
    assert check_linearizable(ops, model).ok == _brute_force(ops, model)
