"""The waiter: ``until(pred, timeout)`` wakes on ticks, re-checks every interval, catches
up by itself when no apply loop runs, and gives up after its timeout (also on 3.10)."""

from __future__ import annotations

import asyncio

from crdtsync.replica.waiting import Waiter

from ._parts import Calls


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_predicate_that_holds_returns_at_once_without_catching_up() -> None:
    catch_up = Calls()

    async def scenario() -> None:
        w = Waiter(10.0, catch_up, lambda: False)
        assert await w.until(lambda: True, 5.0) is True

    run(scenario())
    assert catch_up.n == 0


def test_a_waiter_wakes_on_a_tick_long_before_its_interval() -> None:
    async def scenario() -> None:
        state = {"done": False}
        w = Waiter(3600.0, Calls(), lambda: True)
        task = asyncio.ensure_future(w.until(lambda: state["done"], 3600.0))
        await asyncio.sleep(0)
        assert not task.done()
        state["done"] = True
        w.tick()
        # woken by the tick, not by the hour-long interval or timeout
        assert await asyncio.wait_for(task, 5.0) is True

    run(scenario())


def test_a_tick_wakes_every_waiter_and_each_rechecks_its_own_predicate() -> None:
    async def scenario() -> None:
        state = {"a": False, "b": False}
        w = Waiter(3600.0, Calls(), lambda: True)
        ta = asyncio.ensure_future(w.until(lambda: state["a"], 3600.0))
        tb = asyncio.ensure_future(w.until(lambda: state["b"], 3600.0))
        await asyncio.sleep(0)
        state["a"] = True
        w.tick()
        assert await asyncio.wait_for(ta, 5.0) is True
        await asyncio.sleep(0)
        assert not tb.done(), "b's predicate does not hold: it waits again"
        state["b"] = True
        w.tick()
        assert await asyncio.wait_for(tb, 5.0) is True

    run(scenario())


def test_without_an_apply_loop_the_waiter_catches_up_itself_until_the_predicate_holds() -> None:
    seen = {"n": 0}

    def apply_more() -> None:
        seen["n"] += 1

    catch_up = Calls(apply_more)

    async def scenario() -> None:
        w = Waiter(0.001, catch_up, lambda: False)  # not following: nobody else applies
        assert await w.until(lambda: seen["n"] >= 3, 10.0) is True

    run(scenario())
    assert catch_up.n == 3


def test_a_waiter_whose_predicate_never_holds_returns_false_after_its_timeout() -> None:
    async def scenario() -> None:
        w = Waiter(0.01, Calls(), lambda: True)
        assert await w.until(lambda: False, 0.05) is False

    run(scenario())


def test_the_timeout_is_honoured_on_python_3_10_too(py310_timeouts: type[Exception]) -> None:
    # on 3.10 asyncio.wait_for raises asyncio.TimeoutError, which `suppress(TimeoutError)`
    # lets through: the waiter must still return False rather than raise it
    async def scenario() -> None:
        w = Waiter(0.01, Calls(), lambda: True)
        assert await w.until(lambda: False, 0.05) is False

    run(scenario())


def test_a_zero_timeout_checks_once() -> None:
    async def scenario() -> None:
        w = Waiter(1.0, Calls(), lambda: True)
        assert await w.until(lambda: False, 0.0) is False
        assert await w.until(lambda: True, 0.0) is True

    run(scenario())


def test_without_an_apply_loop_the_first_catch_up_comes_before_any_wait() -> None:
    # nothing would tick a replica that does not follow its log: waiting an interval
    # first made every SESSION/SEQUENCED wait there last a whole heartbeat interval
    state = {"applied": False}
    catch_up = Calls(lambda: state.__setitem__("applied", True))

    async def scenario() -> None:
        w = Waiter(3600.0, catch_up, lambda: False)
        assert await asyncio.wait_for(w.until(lambda: state["applied"], 60.0), 5.0) is True

    run(scenario())
    assert catch_up.n == 1
