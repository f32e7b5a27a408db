"""Subscriptions: callbacks and async streams see applied changes of the fields they
ask for, never definitions; a failing callback is counted and stops nobody; unsubscribing
and closing a stream end delivery."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import GCounter
from crdtsync.replica.stats import ReplicaStats
from crdtsync.replica.subscriptions import Change, Subscriptions
from crdtsync.schema import SCHEMA_FIELD

from ._parts import event


def change(fname: str = "clicks", key: str = "k", seq: int = 1, local: bool = False) -> Change:
    return Change(fname, key, event("b~1", seq, fname, key, GCounter().increment(seq, actor="b~1")), local)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_callback_sees_changes_of_its_fields_until_it_unsubscribes() -> None:
    subs = Subscriptions(ReplicaStats())
    assert not subs.active
    every: list[Change] = []
    some: list[Change] = []
    off = subs.subscribe(every.append)
    subs.subscribe(some.append, fields=["tags"])
    assert subs.active
    subs.notify(c1 := change("clicks"))
    subs.notify(c2 := change("tags"))
    assert every == [c1, c2] and some == [c2]
    off()
    off()  # twice is harmless
    subs.notify(change("clicks", seq=2))
    assert every == [c1, c2]


def test_definitions_are_not_offered_to_subscribers() -> None:
    subs = Subscriptions(ReplicaStats())
    seen: list[Change] = []
    subs.subscribe(seen.append)
    subs.notify(change(SCHEMA_FIELD))
    assert seen == []


def test_a_failing_callback_is_counted_and_the_others_still_get_the_change() -> None:
    stats = ReplicaStats()
    subs = Subscriptions(stats)

    def broken(c: Change) -> None:
        raise RuntimeError("subscriber bug")

    seen: list[Change] = []
    subs.subscribe(broken)
    subs.subscribe(seen.append)
    subs.notify(c := change())
    assert seen == [c] and stats.subscriber_errors == 1


def test_a_callback_that_unsubscribes_itself_does_not_make_the_next_one_miss_the_change() -> None:
    subs = Subscriptions(ReplicaStats())
    once: list[Change] = []
    seen: list[Change] = []

    def one_shot(c: Change) -> None:
        once.append(c)
        off()

    off = subs.subscribe(one_shot)
    subs.subscribe(seen.append)
    subs.notify(c := change())
    assert once == [c]
    assert seen == [c], "the subscriber after a self-removing one missed the change"
    subs.notify(change(seq=2))
    assert len(once) == 1 and len(seen) == 2


def test_a_stream_delivers_changes_in_order_and_stops_once_closed() -> None:
    async def scenario() -> None:
        subs = Subscriptions(ReplicaStats())
        stream = subs.stream(fields=["clicks"])
        subs.notify(c1 := change(seq=1))
        subs.notify(change("tags"))
        subs.notify(c2 := change(seq=2))
        assert [await stream.__anext__(), await stream.__anext__()] == [c1, c2]
        await stream.aclose()
        assert not subs.active
        subs.notify(change(seq=3))
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    run(scenario())


def test_closing_a_stream_ends_the_loop_that_waits_on_it() -> None:
    async def scenario() -> None:
        subs = Subscriptions(ReplicaStats())
        stream = subs.stream()
        got: list[Change] = []

        async def consume() -> None:
            async for c in stream:
                got.append(c)

        task = asyncio.ensure_future(consume())
        subs.notify(c := change())
        await asyncio.sleep(0.01)
        assert got == [c]
        await stream.aclose()  # the consumer is waiting for the next change right now
        await asyncio.wait_for(task, 5.0)

    run(scenario())


def test_a_stream_used_as_a_context_manager_unsubscribes_on_exit() -> None:
    async def scenario() -> None:
        subs = Subscriptions(ReplicaStats())
        async with subs.stream() as stream:
            subs.notify(c := change())
            assert await stream.__anext__() == c
            assert subs.active
        assert not subs.active

    run(scenario())


def test_every_subscriber_coming_or_going_is_announced_once() -> None:
    # write handles cache whether anyone listens: each change of that must reach them
    async def scenario() -> None:
        subs = Subscriptions(ReplicaStats())
        changes: list[bool] = []
        subs.on_change = lambda: changes.append(subs.active)
        off = subs.subscribe(lambda c: None)
        off()
        off()  # already gone: nothing to announce
        stream = subs.stream()
        await stream.aclose()
        await stream.aclose()
        assert changes == [True, False, True, False]

    run(scenario())


def test_a_record_s_changes_are_delivered_as_one_by_one_notifies_would() -> None:
    """``notify_all`` (a record's changes at once): in order, without definitions, a
    failing callback counted; one that unsubscribes itself mid-record gets nothing more;
    one subscribing mid-record (a callback or a stream) gets the rest of it."""
    stats = ReplicaStats()
    subs = Subscriptions(stats)
    batch = [change(seq=1), change(SCHEMA_FIELD, seq=2), change(seq=3), change(seq=4), change(seq=5)]
    seen: list[Change] = []
    late: list[Change] = []

    def first(c: Change) -> None:
        seen.append(c)
        if c.event.seq == 1:
            raise RuntimeError("subscriber bug")
        if c.event.seq == 3:
            subs.subscribe(late.append)
            stream_box.append(subs.stream())
        if c.event.seq == 4:
            off()

    stream_box: list[object] = []
    off = subs.subscribe(first)
    subs.notify_all(batch)
    assert seen == [batch[0], batch[2], batch[3]]  # not the definition, nothing after unsubscribing
    assert late == [batch[3], batch[4]] and stats.subscriber_errors == 1
    stream = stream_box[0]
    assert [stream._queue.get_nowait() for _ in range(2)] == [batch[3], batch[4]]  # type: ignore[attr-defined]
    everyone: list[Change] = []
    subs.subscribe(everyone.append)
    subs.notify_all(batch)  # two callbacks: the general path
    assert everyone == [batch[0], batch[2], batch[3], batch[4]] and late[2:] == everyone
