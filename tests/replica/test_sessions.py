"""Sessions give read-your-writes and monotonic reads, also across replicas; ``at(...)``
forwards its stronger levels."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crdtsync import Feature, GCounter, MemoryLog, Replica
from crdtsync.clock import Context, Dot
from crdtsync.errors import StaleRead
from crdtsync.events import Event
from crdtsync.policy import ACKS, QUORUM, SESSION
from crdtsync.replica.sessions import Leveled, Session

from ._parts import event

FIELDS = [Feature("clicks", GCounter)]


class FakeReplica:
    """What a session uses of its replica: ``update``, ``read``, ``context``, ``levels``."""

    def __init__(self) -> None:
        self.context = Context()
        self.reads: list[tuple[str, str, Any, Any]] = []
        self.seq = 0
        self.levels = self
        self.leveled: list[tuple[Any, ...]] = []

    async def update(self, field_name: str, key: str, op: str, *args: Any, **kwargs: Any) -> Event:
        self.seq += 1
        self.context = self.context.add(Dot("a~1", self.seq))
        return event("a~1", self.seq, field_name, key, GCounter().increment(self.seq, actor="a~1"))

    async def read(self, field_name: str, key: str, *, level: Any = None, timeout: Any = None) -> Any:
        self.reads.append((field_name, key, level, timeout))
        return 7


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_sessions_token_grows_with_its_writes_and_reads_ask_for_it() -> None:
    async def scenario() -> None:
        r = FakeReplica()
        s = Session(r, Context())  # type: ignore[arg-type]
        ev = await s.update("clicks", "k", "increment", 1)
        assert s.token == Context().add(ev.dot)
        assert await s.read("clicks", "k", timeout=0.5) == 7
        (_, _, level, timeout) = r.reads[0]
        assert level == SESSION(Context().add(ev.dot)) and timeout == 0.5

    run(scenario())


def test_a_session_read_takes_in_what_the_replica_had_so_later_reads_never_go_back() -> None:
    async def scenario() -> None:
        r = FakeReplica()
        r.context = Context().add(Dot("b~1", 5))  # the replica holds b's writes too
        s = Session(r, Context())  # type: ignore[arg-type]
        await s.read("clicks", "k")
        assert Dot("b~1", 5) in s.token, "monotonic reads: the next replica must have b's writes too"

    run(scenario())


def test_leveled_forwards_its_stronger_levels_and_timeout() -> None:
    async def scenario() -> None:
        r = FakeReplica()
        calls: list[tuple[Any, ...]] = []

        async def update(*args: Any) -> str:
            calls.append(args)
            return "ev"

        r.update = update  # type: ignore[method-assign,assignment]  (levels.update is the replica here)
        lv = Leveled(r, ACKS(2), QUORUM(), 0.3)  # type: ignore[arg-type]
        assert await lv.update("clicks", "k", "increment", 1, by="x") == "ev"
        assert calls == [("clicks", "k", "increment", (1,), {"by": "x"}, ACKS(2), 0.3)]
        assert await lv.read("clicks", "k") == 7
        assert r.reads[-1][2:] == (QUORUM(), 0.3)

    run(scenario())


def test_read_your_writes_across_replicas_with_the_sessions_token() -> None:
    async def scenario() -> None:
        log = MemoryLog()
        async with Replica.open(schema=FIELDS, log=log, name="a", follow=False, control=False) as a, \
                Replica.open(schema=FIELDS, log=log, name="b", follow=False, control=False) as b:
            on_a = a.session()
            await on_a.update("clicks", "k", "increment", 3)
            await a.flush()
            assert b.value("clicks", "k") == 0, "b has not applied a's write yet"
            on_b = b.session(on_a.token)
            assert await on_b.read("clicks", "k", timeout=5) == 3, "the session's write is visible on b"

    asyncio.run(scenario())


def test_a_session_read_on_a_replica_that_cannot_get_the_write_raises_stale_read() -> None:
    async def scenario() -> None:
        async with Replica.open(schema=FIELDS, log=MemoryLog(), name="a", follow=False, control=False) as a, \
                Replica.open(schema=FIELDS, log=MemoryLog(), name="b", follow=False, control=False) as b:
            s = a.session()
            await s.update("clicks", "k", "increment", 1)
            with pytest.raises(StaleRead):
                await b.session(s.token).read("clicks", "k", timeout=0.05)
            assert b.stats.events_rejected.get("stale_read") == 1

    asyncio.run(scenario())
