"""History checkers on hand-written histories: correct ones pass, classic anomalies fail.

Every anomaly test asserts *which* operation is blamed, so a checker that rejects
everything fails this file as surely as one that accepts everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from typing import Any

import pytest

from crdtsync import Feature, LWWRegister, ORSet
from crdtsync.testing.checkers import (
    CounterModel,
    History,
    KeyedModel,
    Model,
    Operation,
    RegisterModel,
    SearchLimitExceeded,
    check_counter_bounds,
    check_linearizable,
    check_set_full,
)
from crdtsync.testing.cluster import Cluster

REG = RegisterModel(0)


def ops(*rows: tuple[Any, ...]) -> History:
    return History.from_ops(rows)


# -- the history model -------------------------------------------------------------------
def test_from_events_pairs_each_completion_with_its_process_invocation() -> None:
    h = History.from_events([
        ("a", "invoke", "write", 1),
        ("b", "invoke", "read", None),
        ("b", "ok", "read", 0),
        ("a", "info", "write", None),
        ("c", "invoke", "cas", (1, 2)),
    ])
    w, r, c = h.operations
    assert (w.kind, w.arg, w.start, w.end) == ("info", 1, 0, 3)
    assert (r.kind, r.result, r.start, r.end) == ("ok", 0, 1, 2)
    assert (c.kind, c.end) == ("invoke", None) and c.indeterminate
    assert h.pending == (c,)


@pytest.mark.parametrize("events, message", [
    ([("a", "ok", "read", 1)], "no open invocation"),
    ([("a", "invoke", "read", None), ("a", "invoke", "read", None)], "while #0 is open"),
    ([("a", "invoke", "read", None), ("a", "ok", "write", None)], "invoked 'read'"),
    ([("a", "invoke", "read", None, 5), ("a", "ok", "read", 1, 4)], "time order"),
    ([("a", "done", "read", None)], "unknown kind"),
])
def test_from_events_rejects_malformed_histories(events: list[tuple[Any, ...]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        History.from_events(events)


def test_operations_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        Operation(id=0, process="a", f="read", result=0, start=5, end=4)
    with pytest.raises(ValueError, match="needs an end time"):
        Operation(id=0, process="a", f="read", result=0, start=5)
    with pytest.raises(ValueError, match="pending"):
        Operation(id=0, process="a", f="read", kind="invoke", start=5, end=6)
    with pytest.raises(ValueError, match="share id"):
        History([Operation(id=0, process="a", f="read", start=0, end=1)] * 2)


def test_recorder_tokens_complete_exactly_once() -> None:
    h = History()
    t1 = h.invoke("a", "write", 1)
    t2 = h.invoke("b", "read")
    h.ok(t1)
    assert h.ok(t2, 1).result == 1
    with pytest.raises(ValueError, match="already completed"):
        h.fail(t1)
    with pytest.raises(ValueError, match="not issued by this history"):
        History().ok(t1)
    a, b = h.operations
    assert (a.start, b.start, a.end, b.end) == (0, 1, 2, 3)  # logical clock: one tick per event


def test_recorder_clock_never_goes_backwards() -> None:
    readings = iter([10.0, 9.0, 12.0])
    h = History(clock=lambda: next(readings))
    t = h.invoke("a", "read")
    h.invoke("b", "read")
    op = h.ok(t, 0)
    assert h.operations[1].start == 10.0 and op.end == 12.0


def test_record_context_manager_counts_only_what_the_code_confirmed() -> None:
    h = History()
    with h.record("a", "write", 1) as call:
        call.ok()
    with h.record("a", "write", 2):
        pass  # never confirmed: indeterminate
    with pytest.raises(RuntimeError), h.record("a", "write", 3):
        raise RuntimeError("connection reset")
    with h.record("a", "write", 4) as call:
        call.fail()
    assert [op.kind for op in h.operations] == ["ok", "info", "info", "fail"]


# -- linearizability: registers ------------------------------------------------------------------
def test_sequential_register_history_is_linearizable_with_a_witness() -> None:
    h = ops(("a", "write", 1, None, 0, 1), ("b", "read", None, 1, 2, 3),
            ("a", "cas", (1, 2), True, 4, 5), ("b", "read", None, 2, 6, 7))
    r = check_linearizable(h, REG)
    assert r.ok and bool(r)
    assert [op.id for op in r.linearization] == [0, 1, 2, 3]


@pytest.mark.parametrize("seen", [0, 1])
def test_a_read_concurrent_with_a_write_may_see_either_value(seen: int) -> None:
    h = ops(("a", "write", 1, None, 0, 10), ("b", "read", None, seen, 2, 5))
    assert check_linearizable(h, REG).ok


def test_stale_read_after_a_completed_write_is_caught() -> None:
    h = ops(("a", "write", 1, None, 0, 1), ("b", "read", None, 0, 2, 3))
    r = check_linearizable(h, REG)
    assert not r.ok
    assert r.stuck is not None and r.stuck.id == 1
    assert [op.id for op in r.linearization] == [0] and r.state == 1
    assert "#1 b read() -> 0" in r.explanation and "the model returns 1" in r.explanation


def test_two_cas_from_the_same_old_value_cannot_both_succeed() -> None:
    h = ops(("a", "cas", (0, 1), True, 0, 10), ("b", "cas", (0, 2), True, 1, 11))
    r = check_linearizable(h, REG)
    assert not r.ok and r.stuck is not None and r.stuck.id == 1
    assert [op.id for op in r.linearization] == [0] and r.state == 1
    # ... but one of them failing is fine, in either order.
    for winner in (0, 1):
        rows = [("a", "cas", (0, 1), winner == 0, 0, 10), ("b", "cas", (0, 2), winner == 1, 1, 11)]
        assert check_linearizable(ops(*rows), REG).ok


def test_a_read_of_a_value_never_written_is_caught() -> None:
    h = ops(("a", "write", 1, None, 0, 10), ("b", "write", 2, None, 0, 10), ("c", "read", None, 3, 0, 10))
    r = check_linearizable(h, REG)
    assert not r.ok and r.stuck is not None and r.stuck.id == 2


def test_cas_that_reports_false_when_it_should_have_succeeded_is_caught() -> None:
    assert not check_linearizable(ops(("a", "cas", (0, 1), False, 0, 1)), REG).ok
    assert check_linearizable(ops(("a", "cas", (5, 1), False, 0, 1)), REG).ok


def test_real_time_order_is_strict_but_touching_windows_are_concurrent() -> None:
    # The write ends at 5 and the read starts at 5: concurrent, so reading 0 is allowed.
    assert check_linearizable(ops(("a", "write", 1, None, 0, 5), ("b", "read", None, 0, 5, 6)), REG).ok
    assert not check_linearizable(ops(("a", "write", 1, None, 0, 5), ("b", "read", None, 0, 6, 7)), REG).ok


def test_failed_operations_did_not_happen() -> None:
    base = [("a", "write", 1, None, 0, 1, "fail")]
    assert check_linearizable(ops(*base, ("b", "read", None, 0, 2, 3)), REG).ok
    assert not check_linearizable(ops(*base, ("b", "read", None, 1, 2, 3)), REG).ok


@pytest.mark.parametrize("kind", ["info", "invoke"])
def test_indeterminate_write_may_or_may_not_take_effect(kind: str) -> None:
    end = 1 if kind == "info" else None
    write = ("a", "write", 1, None, 0, end, kind)
    # It may never happen ...
    assert check_linearizable(ops(write, ("b", "read", None, 0, 2, 3)), REG).ok
    # ... or happen, even long after the client gave up on it (no upper bound) ...
    later = ops(write, ("b", "read", None, 0, 5, 6), ("b", "read", None, 1, 10, 11))
    assert check_linearizable(later, REG).ok
    # ... but once seen it cannot be undone, and it cannot happen twice.
    undone = ops(write, ("b", "read", None, 1, 2, 3), ("b", "read", None, 0, 4, 5))
    r = check_linearizable(undone, REG)
    assert not r.ok and r.stuck is not None and r.stuck.id == 2
    twice = ops(write, ("b", "read", None, 1, 2, 3), ("c", "write", 2, None, 4, 5),
                ("b", "read", None, 1, 6, 7))
    assert not check_linearizable(twice, REG).ok
    # Had it been acknowledged at time 1, the read at 5 could not miss it.
    acked = ops(("a", "write", 1, None, 0, 1), ("b", "read", None, 0, 5, 6), ("b", "read", None, 1, 10, 11))
    assert not check_linearizable(acked, REG).ok


def test_indeterminate_cas_both_ways() -> None:
    cas = ("a", "cas", (0, 1), None, 0, 1, "info")
    assert check_linearizable(ops(cas, ("b", "read", None, 0, 2, 3)), REG).ok
    assert check_linearizable(ops(cas, ("b", "read", None, 1, 2, 3)), REG).ok
    # It can only succeed from 0: after a write of 5, reading 1 needs the cas to have
    # happened before the write, and then the write hides it.
    blocked = ops(cas, ("b", "write", 5, None, 2, 3), ("b", "read", None, 1, 4, 5))
    assert not check_linearizable(blocked, REG).ok


def test_interchangeable_indeterminate_operations_are_each_used_at_most_once() -> None:
    # Two identical crashed adds can explain at most +2, never +3.
    rows = [("a", "add", 1, None, 0, 1, "info"), ("b", "add", 1, None, 0, 1, "info")]
    assert check_linearizable(ops(*rows, ("c", "read", None, 2, 5, 6)), CounterModel()).ok
    assert not check_linearizable(ops(*rows, ("c", "read", None, 3, 5, 6)), CounterModel()).ok


# -- linearizability: counters -----------------------------------------------------------
def test_counter_with_decrement_if_enough() -> None:
    m = CounterModel(0)
    good = ops(("a", "add", 3, None, 0, 1), ("b", "decrement", 2, True, 2, 5),
               ("c", "decrement", 2, False, 3, 6), ("a", "read", None, 1, 7, 8))
    assert check_linearizable(good, m).ok
    both = ops(("a", "add", 3, None, 0, 1), ("b", "decrement", 2, True, 2, 5),
               ("c", "decrement", 2, True, 3, 6))
    r = check_linearizable(both, m)
    assert not r.ok and "decrement" in r.explanation
    refused = ops(("a", "add", 3, None, 0, 1), ("b", "decrement", 2, False, 2, 3))
    assert not check_linearizable(refused, m).ok


def test_counter_indeterminate_decrement_both_ways() -> None:
    m = CounterModel(5)
    dec = ("a", "decrement", 4, None, 0, 1, "info")
    assert check_linearizable(ops(dec, ("b", "read", None, 5, 2, 3)), m).ok
    assert check_linearizable(ops(dec, ("b", "read", None, 1, 2, 3)), m).ok
    assert not check_linearizable(ops(dec, ("b", "read", None, 3, 2, 3)), m).ok


def test_unknown_operations_are_a_usage_error_not_a_violation() -> None:
    with pytest.raises(ValueError, match="unknown operation 'incr'"):
        check_linearizable(ops(("a", "incr", 1, None, 0, 1)), CounterModel())
    with pytest.raises(ValueError, match="unknown operation 'push'"):
        check_linearizable(ops(("a", "push", 1, None, 0, 1, "info")), REG)


def test_keyed_model_checks_each_key_independently_and_names_the_bad_key() -> None:
    m = KeyedModel(RegisterModel(0))
    rows = [("a", "write", ("x", 1), None, 0, 1), ("b", "write", ("y", 2), None, 0, 1),
            ("a", "read", ("x", None), 1, 2, 3), ("b", "read", ("y", None), 2, 2, 3)]
    assert check_linearizable(ops(*rows), m).ok
    rows[3] = ("b", "read", ("y", None), 1, 2, 3)  # y never held 1 (x did)
    r = check_linearizable(ops(*rows), m)
    assert not r.ok and r.key == "y" and "for key 'y'" in r.explanation


def test_a_custom_model_plugs_in() -> None:
    class Queue(Model[tuple[int, ...]]):
        name = "fifo queue"

        def init(self) -> tuple[int, ...]:
            return ()

        def step(self, state: tuple[int, ...], f: str, arg: Any) -> tuple[tuple[int, ...], Any]:
            if f == "enqueue":
                return state + (arg,), None
            if f == "dequeue":
                return (state[1:], state[0]) if state else (state, None)
            raise ValueError(f)

    good = ops(("a", "enqueue", 1, None, 0, 1), ("b", "enqueue", 2, None, 2, 3), ("c", "dequeue", None, 1, 4, 5))
    bad = ops(("a", "enqueue", 1, None, 0, 1), ("b", "enqueue", 2, None, 2, 3), ("c", "dequeue", None, 2, 4, 5))
    assert check_linearizable(good, Queue()).ok
    assert not check_linearizable(bad, Queue()).ok


def test_search_limit_is_an_error_not_a_verdict() -> None:
    h = simulate(random.Random(3), "counter", clients=5, per_client=40, info_p=0.2)
    with pytest.raises(SearchLimitExceeded, match="configurations"):
        check_linearizable(h, CounterModel(), max_configurations=5)


# -- larger histories --------------------------------------------------------------------
def simulate(rng: random.Random, kind: str, *, clients: int, per_client: int, info_p: float = 0.0) -> History:
    """Clients run against one sequential object; each operation takes effect at a random
    step inside its window; a crashed operation takes effect or not."""
    model: Model[Any] = RegisterModel(0) if kind == "register" else CounterModel(0)
    state = model.init()
    h = History()
    left = dict.fromkeys(range(clients), per_client)
    active: dict[int, list[Any]] = {}
    while active or any(left.values()):
        c = rng.choice([c for c in range(clients) if c in active or left[c]])
        if c not in active:
            left[c] -= 1
            x = rng.random()
            if kind == "register":
                f, arg = ("read", None) if x < .4 else ("write", rng.randint(0, 4)) if x < .7 else \
                    ("cas", (rng.randint(0, 4), rng.randint(0, 4)))
            else:
                f, arg = ("read", None) if x < .4 else ("add", rng.randint(0, 3)) if x < .7 else \
                    ("decrement", rng.randint(0, 3))
            active[c] = [h.invoke(f"c{c}", f, arg), f, arg, False, None]
        elif rng.random() < info_p:
            token, f, arg, applied, _ = active.pop(c)
            if not applied and rng.random() < 0.5:
                state, _ = model.step(state, f, arg)
            h.info(token)
        elif not active[c][3]:
            state, active[c][4] = model.step(state, active[c][1], active[c][2])
            active[c][3] = True
        else:
            token, *_, result = active.pop(c)
            h.ok(token, result)
    return h


@pytest.mark.parametrize("kind", ["register", "counter"])
@pytest.mark.parametrize("info_p", [0.0, 0.02])
def test_five_clients_two_hundred_operations_each(kind: str, info_p: float) -> None:
    model = RegisterModel(0) if kind == "register" else CounterModel(0)
    h = simulate(random.Random(1), kind, clients=5, per_client=200, info_p=info_p)
    assert len(h) == 1000
    r = check_linearizable(h, model)
    assert r.ok, r.explanation
    # One impossible read early on is found, and blamed.
    reads = [op for op in h.operations if op.f == "read" and op.kind == "ok"]
    bad = dataclasses.replace(reads[20], result=-1)
    r = check_linearizable([bad if op.id == bad.id else op for op in h.operations], model)
    assert not r.ok and r.stuck is not None
    assert bad.id in {op.id for op in r.unplaced}


def test_results_do_not_depend_on_the_listed_order() -> None:
    h = simulate(random.Random(7), "register", clients=3, per_client=15, info_p=0.1)
    shuffled = list(h.operations)
    random.Random(0).shuffle(shuffled)
    assert check_linearizable(h, REG) == check_linearizable(shuffled, REG)
    bad = [dataclasses.replace(op, result=9) if op.f == "read" and op.kind == "ok" else op for op in shuffled]
    assert check_linearizable(bad, REG) == check_linearizable(sorted(bad, key=lambda o: -o.id), REG)


# -- recording from threads and asyncio -------------------------------------------------------
class RacyRegister:
    """Compare-and-set as read-then-write with a gap between: not atomic."""

    def __init__(self, gap: threading.Barrier | None = None) -> None:
        self.value = 0
        self.lock = threading.Lock()
        self.gap = gap

    def cas(self, old: int, new: int) -> bool:
        if self.gap is None:
            with self.lock:
                ok = self.value == old
                if ok:
                    self.value = new
                return ok
        ok = self.value == old
        self.gap.wait()  # both threads have compared before either writes
        if ok:
            self.value = new
        return ok


@pytest.mark.parametrize("atomic", [True, False])
def test_threads_record_concurrently(atomic: bool) -> None:
    reg = RacyRegister(None if atomic else threading.Barrier(2))
    h = History()

    def client(name: str, new: int) -> None:
        with h.record(name, "cas", (0, new)) as call:
            call.ok(reg.cas(0, new))

    threads = [threading.Thread(target=client, args=(f"t{i}", i + 1)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with h.record("t0", "read") as call:
        call.ok(reg.value)
    assert len(h) == 3 and not h.pending
    r = check_linearizable(h, REG)
    assert r.ok is atomic, r.explanation


@pytest.mark.parametrize("atomic", [True, False])
def test_asyncio_tasks_record_concurrently(atomic: bool) -> None:
    h = History()
    value = {"v": 0}

    async def cas(name: str, old: int, new: int) -> None:
        with h.record(name, "cas", (old, new)) as call:
            ok = value["v"] == old
            if not atomic:
                await asyncio.sleep(0)  # the other task runs between compare and set
            if ok:
                value["v"] = new
            call.ok(ok)

    async def main() -> None:
        await asyncio.gather(cas("a", 0, 1), cas("b", 0, 2))

    asyncio.run(main())
    assert check_linearizable(h, REG).ok is atomic


# -- against crdtsync replicas ----------------------------------------------------------------
def test_local_reads_of_an_eventual_register_are_not_linearizable() -> None:
    h = History()
    with Cluster(3, schema=[Feature("price", LWWRegister)], seed=5) as c:
        with h.record("writer", "write", 10) as call:
            c.write("n0", "price", "sku-1", "set", 10)
            call.ok()
        with h.record("reader", "read") as call:
            call.ok(c.value("n1", "price", "sku-1"))  # n1 has not heard of it yet
        c.settle()
        with h.record("reader", "read") as call:
            call.ok(c.value("n1", "price", "sku-1"))
    r = check_linearizable(h, RegisterModel(None))
    assert not r.ok and r.stuck is not None and r.stuck.result is None


def test_orset_across_a_partition_loses_nothing_after_heal() -> None:
    h = History()
    with Cluster(5, schema=[Feature("members", ORSet)], seed=3) as c:
        c.partition([["n0", "n1", "n2"], ["n3", "n4"]])
        for i in range(20):
            node = c.names[i % 5]
            with h.record(node, "add", i) as call:
                c.write(node, "members", "team", "add", i)
                call.ok()
            with h.record(node, "read") as call:
                call.ok(set(c.value(node, "members", "team")))
            c.step()
        c.heal()
        c.settle()
        for node in c.names:
            with h.record(node, "read") as call:
                call.ok(set(c.value(node, "members", "team")))
    r = check_set_full(h)
    assert r.valid, r.explanation
    assert r.lost_count == 0 and r.stable_count == 20
    assert r.stale_count > 0  # reads on the other side of the partition missed adds
    assert not check_set_full(h, linearizable=True).valid


# -- set-full ----------------------------------------------------------------------------------
def test_set_full_stable_elements() -> None:
    h = ops(("a", "add", 1, None, 0, 1), ("b", "add", 2, None, 0, 3),
            ("c", "read", None, {1}, 2, 4), ("c", "read", None, {1, 2}, 5, 6))
    r = check_set_full(h)
    assert r.valid and r.stable == (1, 2) and r.stale == () and r.lost == ()
    e = r.elements[2]
    assert e.outcome == "stable" and e.known is not None and e.known.id == 1 and e.stable_latency == 0


def test_set_full_lost_element() -> None:
    h = ops(("a", "add", 1, None, 0, 1), ("a", "add", 2, None, 0, 1),
            ("c", "read", None, {1, 2}, 2, 3), ("c", "read", None, {2}, 4, 5), ("c", "read", None, {2}, 6, 7))
    r = check_set_full(h)
    assert not r.valid and r.lost == (1,) and r.stable == (2,)
    e = r.elements[1]
    assert e.last_present is not None and e.last_present.id == 2
    assert e.last_absent is not None and e.last_absent.id == 4 and e.lost_latency == 1
    assert "lost 1" in r.explanation


def test_set_full_acknowledged_but_never_seen_is_lost() -> None:
    r = check_set_full(ops(("a", "add", 1, None, 0, 1), ("c", "read", None, [], 2, 3)))
    assert r.lost == (1,) and r.elements[1].lost_latency == 0


def test_set_full_read_concurrent_with_the_add_may_miss_it() -> None:
    r = check_set_full(ops(("a", "add", 1, None, 0, 5), ("c", "read", None, [], 2, 3)))
    assert r.valid and r.never_read == (1,)


def test_set_full_stale_element_is_valid_unless_linearizable() -> None:
    h = ops(("a", "add", 1, None, 0, 1), ("c", "read", None, [], 3, 4), ("c", "read", None, [1], 6, 7))
    r = check_set_full(h)
    assert r.valid and r.stable == (1,) and r.stale == (1,)
    assert r.elements[1].stable_latency == 2
    strict = check_set_full(h, linearizable=True)
    assert not strict.valid and "stale 1" in strict.explanation


def test_set_full_duplicates_in_list_reads() -> None:
    h = ops(("a", "add", "x", None, 0, 1), ("c", "read", None, ["x", "x", "x"], 2, 3),
            ("c", "read", None, ["x", "x"], 4, 5))
    r = check_set_full(h)
    assert not r.valid and r.duplicated == {"x": 3} and r.lost == ()
    assert r.elements["x"].max_copies == 3


def test_set_full_indeterminate_adds_both_ways() -> None:
    h = ops(("a", "add", 1, None, 0, 1, "info"), ("a", "add", 2, None, 0, None, "invoke"),
            ("c", "read", None, {1}, 5, 6), ("c", "read", None, {1}, 7, 8))
    r = check_set_full(h)
    assert r.valid and r.stable == (1,) and r.never_read == (2,)
    assert r.elements[1].known is not None and r.elements[1].known.id == 2  # known from the read
    # Seen once, then gone: lost even though the add itself was never acknowledged.
    gone = ops(("a", "add", 1, None, 0, 1, "info"), ("c", "read", None, {1}, 5, 6), ("c", "read", None, [], 7, 8))
    assert check_set_full(gone).lost == (1,)


def test_set_full_unexpected_elements() -> None:
    h = ops(("a", "add", 1, None, 0, 1, "fail"), ("a", "add", 3, None, 10, 11),
            ("c", "read", None, {1, 2, 3}, 2, 3))
    r = check_set_full(h)
    assert not r.valid and set(r.unexpected) == {1, 2, 3}


def test_set_full_rejects_strings_as_reads_and_unknown_functions() -> None:
    with pytest.raises(ValueError, match="iterable"):
        check_set_full(ops(("c", "read", None, "abc", 0, 1)))
    with pytest.raises(ValueError, match="unknown operation 'remove'"):
        check_set_full(ops(("c", "remove", 1, None, 0, 1)))


# -- counter bounds ----------------------------------------------------------------------------
def test_counter_bounds_valid_history() -> None:
    h = ops(("a", "add", 1, None, 0, 1), ("b", "add", 2, None, 2, 10),
            ("c", "read", None, 1, 3, 4), ("c", "read", None, 3, 5, 6), ("a", "add", 5, None, 2, 3, "info"),
            ("c", "read", None, 8, 11, 12))
    r = check_counter_bounds(h)
    assert r.valid and r.reads == 3
    assert r.bounds[2] == (1, 8) and r.bounds[5] == (3, 8)


def test_counter_read_above_the_attempted_sum() -> None:
    h = ops(("a", "add", 1, None, 0, 1), ("b", "add", 2, None, 5, 6), ("c", "read", None, 3, 2, 3))
    r = check_counter_bounds(h)
    assert not r.valid and len(r.violations) == 1
    v = r.violations[0]
    assert (v.read.id, v.value, v.lower, v.upper) == (2, 3, 1, 1) and "above" in str(v)


def test_counter_read_below_the_confirmed_sum() -> None:
    h = ops(("a", "add", 1, None, 0, 1), ("b", "add", 2, None, 0, 1), ("c", "read", None, 1, 2, 3))
    r = check_counter_bounds(h)
    assert not r.valid and (r.violations[0].lower, r.violations[0].upper) == (3, 3)
    assert "below" in r.explanation


def test_counter_bounds_failed_adds_never_count_and_indeterminate_ones_may() -> None:
    base = [("a", "add", 5, None, 0, 1, "fail"), ("b", "add", 2, None, 0, 1, "info")]
    assert check_counter_bounds(ops(*base, ("c", "read", None, 0, 2, 3))).valid
    assert check_counter_bounds(ops(*base, ("c", "read", None, 2, 2, 3))).valid
    assert not check_counter_bounds(ops(*base, ("c", "read", None, 5, 2, 3))).valid


def test_counter_bounds_negative_adds_and_initial_value() -> None:
    h = ops(("a", "add", -3, None, 0, 1), ("b", "add", -2, None, 0, 9, "info"), ("c", "read", None, 5, 2, 3))
    r = check_counter_bounds(h, initial=10)
    assert r.bounds[2] == (5, 7) and r.valid
    assert not check_counter_bounds(h, initial=0).valid


def test_counter_bounds_needs_numbers() -> None:
    with pytest.raises(ValueError, match="needs a number"):
        check_counter_bounds(ops(("c", "read", None, "3", 0, 1)))
