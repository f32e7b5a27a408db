"""Unit tests of the anti-entropy part: digests, the journal, what a peer lacks, repair."""

from __future__ import annotations

import asyncio

import pytest

from crdtsync import Feature, GCounter, ORSet, Replica
from crdtsync.clock import Context
from crdtsync.errors import CorruptRecord
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.log.memory import MemoryLog
from crdtsync.replica.antientropy import MAGIC, Digest, Journal, is_digest, lacked, range_hashes
from crdtsync.types.counters import GCounter as G

SCHEMA = [Feature("count", GCounter), Feature("members", ORSet)]
CODEC = MsgpackCodec(write_version=2)


def record(origin: str, first: int, n: int) -> bytes:
    evs = [Event(origin, first + i, 1_000 + first + i, "count", "k", G().increment(1, actor=origin))
           for i in range(n)]
    return CODEC.encode(Batch.of(evs, {"region": "default", "role": "default"}))


def test_digest_round_trips_and_is_told_apart_from_heartbeats() -> None:
    ctx = Context({"a": 3, "b": 7})
    d = Digest("n1", ctx, {"count": (b"\x01" * 8, b"\x02" * 8)})
    data = d.encode()
    assert is_digest(data) and data.startswith(MAGIC)
    back = Digest.decode(data)
    assert back == d
    assert not is_digest(b"\x93\x01\x02\x03")


@pytest.mark.parametrize("bad", [
    MAGIC + b"\xff\xff", MAGIC + b"\x91\x01", b"not a digest",
    MAGIC + b"\x94\x02\xa1n\x90\x90",  # version 2
    MAGIC + b"\x94\x01\xa1n\x90\x91\x92\xa1f\x91\xc4\x03abc",  # a 3-byte hash
])
def test_bad_digests_are_typed_errors(bad: bytes) -> None:
    with pytest.raises(CorruptRecord):
        Digest.decode(bad)


def test_lacked_is_what_mine_has_and_the_peer_does_not() -> None:
    mine = Context({"a": 10, "gone": 4}).add_range("b", 5, 6)
    peer = Context({"a": 3}).add_range("a", 6, 7)
    assert lacked(mine, peer) == {"a": [(4, 5), (8, 10)], "b": [(5, 6)], "gone": [(1, 4)]}
    assert lacked(peer, mine) == {}


def test_journal_is_bounded_and_finds_records_a_peer_lacks() -> None:
    recs = [record("a", 1 + 5 * i, 5) for i in range(6)]
    j = Journal(max_bytes=sum(len(r) for r in recs[2:]))
    for r in recs:
        j.add(r)
        j.add(r)  # once only
    assert len(j) == 4 and j.evicted == 2
    mine = Context({"a": 30})
    peer = Context({"a": 17})
    got = j.lacking(mine, peer)
    assert [sp for sp, _ in got] == [("a", 16, 5), ("a", 21, 5), ("a", 26, 5)]
    # a record this replica did not admit itself (not in its context) is never re-sent
    assert j.lacking(Context({"a": 15}), peer) == []
    assert j.covered("a", 1, 30) == 20


def test_range_hashes_see_a_state_difference() -> None:
    one = {"count": {"k": G().increment(1, actor="a")}}
    two = {"count": {"k": G().increment(2, actor="a")}}
    assert range_hashes(one) != range_hashes(two)
    assert range_hashes(one) == range_hashes({"count": dict(one["count"])})


def test_replicas_repair_over_memory_control_in_the_background() -> None:
    async def body() -> None:
        from crdtsync.control import MemoryControl

        hub = MemoryControl()
        la, lb = MemoryLog(may_lose_records=True), MemoryLog(may_lose_records=True)  # separate logs: nothing replicates but anti-entropy
        a = await Replica.open(None, schema=SCHEMA, log=la, name="a", control=hub.endpoint(), heartbeat_interval=0.02)
        b = await Replica.open(None, schema=SCHEMA, log=lb, name="b", control=hub.endpoint(), heartbeat_interval=0.02)
        for i in range(20):
            a.write("members", "k", "add", f"a{i}")
        await a.flush()
        await asyncio.sleep(0.5)
        # a re-published into its own log; b's log never carried a's records
        assert a.antientropy.stats.records_republished > 0
        assert b.antientropy.stats.digests_received > 0 and a.antientropy.stats.digests_received > 0
        assert len(b.value("members", "k")) == 0
        # copying a's log into b's (what a shared log or a link does) now converges b
        async for e in la.read(0):
            await lb.append([e.payload])
        await b.catch_up()
        assert b.value("members", "k") == a.value("members", "k")
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_bad_digest_bytes_on_the_control_channel_are_counted_not_raised() -> None:
    async def body() -> None:
        r = await Replica.open(None, schema=SCHEMA, log=MemoryLog(), name="r", control=False)
        assert r.observe_heartbeat(MAGIC + b"garbage") is False
        assert r.antientropy.stats.digests_bad == 1
        await r.close()

    asyncio.run(body())


def test_digests_travel_over_directory_control_next_to_heartbeats(tmp_path) -> None:
    """A real LocalLog and DirectoryControl (a latest-only channel): digests arrive and
    heartbeats still do (the peer is a live member)."""
    async def body() -> None:
        from crdtsync.log.local import LocalLog

        log_a = await LocalLog.open(tmp_path / "log")
        log_b = await LocalLog.open(tmp_path / "log")
        a = await Replica.open(None, schema=SCHEMA, log=log_a, name="a", control=True, heartbeat_interval=0.05)
        b = await Replica.open(None, schema=SCHEMA, log=log_b, name="b", control=True, heartbeat_interval=0.05)
        # a LocalLog loses nothing, so its replicas publish no digests unless asked to
        assert a.antientropy.message() is None
        a.antientropy.enabled = b.antientropy.enabled = True
        a.write("members", "k", "add", "x")
        await a.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not (a.antientropy.stats.digests_received and b.antientropy.stats.digests_received
                   and b.membership.get("a") is not None and b.value("members", "k") == frozenset({"x"})):
            assert loop.time() < deadline, "no digests or heartbeats over DirectoryControl"
            await asyncio.sleep(0.05)
        assert a.antientropy.stats.digests_bad == b.antientropy.stats.digests_bad == 0
        await a.close()
        await b.close()
        await log_a.close()
        await log_b.close()

    asyncio.run(asyncio.wait_for(body(), 30))
