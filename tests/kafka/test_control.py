"""The control channel over a real broker (``<ns>.control``, :class:`KafkaControl`).

First the transport on its own (order, own messages, late joiners, foreign records, topic
to partition routing), then replicas on KafkaLogs whose heartbeats travel only through the
broker: ack levels, QUORUM reads, staleness, a hub/edge fleet, and the Akka scenario's
QUORUM writes across a 3+2 partition of the control topic (``KafkaControl.block``: each
side deaf to the other while the event log keeps flowing). Waits poll a condition with a
generous deadline; nothing asserts on timings.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from crdtsync.adapters._kafka_control import control_partition
from crdtsync.adapters.kafka import KafkaControl, KafkaLog, KafkaSettings

from crdtsync import Feature, GCounter, LWWRegister, ORSet, Replica
from crdtsync.control.topology import Topology
from crdtsync.errors import StaleRead, Unavailable
from crdtsync.policy import ACKS, ALL, LOCAL, MAX_STALENESS, QUORUM, Tunable

from ._util import arun, namespace

HB = 0.05
LIVE = 1.0
SCHEMA = [
    Feature("free", GCounter),
    Feature("acks2", LWWRegister, policy=Tunable(write=ACKS(2), read=LOCAL, timeout=10.0)),
    Feature("quorum", LWWRegister, policy=Tunable(write=QUORUM(), read=QUORUM(), timeout=10.0)),
    Feature("all", LWWRegister, policy=Tunable(write=ALL(), read=LOCAL, timeout=10.0)),
    Feature("fresh", LWWRegister, policy=Tunable(write=LOCAL, read=MAX_STALENESS(0.3), timeout=10.0)),
    Feature("members", ORSet, policy=Tunable(write=LOCAL, read=LOCAL, timeout=2.0)),
]


async def until(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_partitions_keep_edges_off_the_fleets_heartbeats() -> None:
    for n in (3, 4, 8):
        assert control_partition("peers", n) == 0 and control_partition("hubs", n) == 1
        assert all(control_partition(f"agg.h{i}", n) >= 2 for i in range(50))
    assert {control_partition(f"agg.h{i}", 1) for i in range(10)} == {0}
    with pytest.raises(ValueError, match="control_partitions"):
        KafkaSettings("localhost:1", control_partitions=0)


def test_messages_arrive_in_order_own_are_skipped_late_joiners_hear_the_past(crdtsync_kafka: str) -> None:
    async def body() -> None:
        settings = KafkaSettings(crdtsync_kafka, namespace=namespace("ctl"))
        got: dict[str, list[bytes]] = {"a": [], "b": [], "c": [], "e": []}
        a, b, c, e = (KafkaControl(settings) for _ in range(4))
        try:
            a.subscribe("a", "peers", got["a"].append)
            b.subscribe("b", "peers", got["b"].append)
            e.subscribe("e", "agg.h0", got["e"].append)
            sent = [f"m{i}".encode() for i in range(30)]
            for m in sent:
                await a.publish_to("a", "peers", m)
            await b.publish_to("b", "hubs", b"an edge heartbeat")  # another topic, another partition
            await until(lambda: got["b"] == sent, what="b hears a's messages in order")
            c.subscribe("c", "peers", got["c"].append)  # joins after everything was said
            await until(lambda: got["c"] == sent, what="a late joiner hears the recent past")
            await b.publish_to("b", "peers", b"from b")
            await until(lambda: got["a"] == [b"from b"], what="a hears b, never itself")
            await until(lambda: a.stats.skipped_own >= 30, what="a skips its own messages")
            # a record not written by crdtsync (no key) is counted and skipped
            raw = AIOKafkaProducer(bootstrap_servers=crdtsync_kafka)
            await raw.start()
            try:
                await raw.send_and_wait(settings.control_topic, b"garbage", partition=0)
                await raw.send_and_wait(settings.control_topic, b"x", key=b"no-separator", partition=0)
            finally:
                await raw.stop()
            await until(lambda: b.stats.foreign == 2, what="foreign records counted")
            await a.publish_to("a", "peers", b"still flowing")
            await until(lambda: got["b"][-1] == b"still flowing", what="reading goes on after them")
            # the edge reads only its hub's aggregate partition: no heartbeat reached it
            assert got["e"] == [] and e.stats.skipped_other_topics == 0 and e.stats.bytes_read == 0
            with pytest.raises(ValueError, match="NUL"):
                await a.publish_to("a", "bad\x00topic", b"")
        finally:
            for ch in (a, b, c, e):
                await ch.close()

    arun(body(), 60)


async def _open(settings: KafkaSettings, name: str, **kw: object) -> tuple[KafkaLog, Replica]:
    kl = await KafkaLog.open(settings=settings)
    kw.setdefault("heartbeat_interval", HB)
    kw.setdefault("liveness", LIVE)
    r = await Replica.open(None, schema=SCHEMA, log=kl, name=name, **kw)  # control=True: the broker's
    return kl, r


async def _close(opened: list[tuple[KafkaLog, Replica]]) -> None:
    for kl, r in opened:
        await r.close()
        await kl.close()


def _control(r: Replica) -> KafkaControl:
    ch = r.control
    assert isinstance(ch, KafkaControl), ch
    return ch


def test_ack_levels_quorum_reads_and_staleness_over_the_control_topic(crdtsync_kafka: str) -> None:
    async def body() -> None:
        settings = KafkaSettings(crdtsync_kafka, namespace=namespace("lvl"))
        opened = [await _open(settings, n) for n in "abc"]
        a, b, c = (r for _, r in opened)
        try:
            await until(lambda: all(len(r.membership) == 3 for r in (a, b, c)), what="everyone knows the fleet")
            ev = await a.update("acks2", "k", "set", "two")
            assert a.acknowledged(ACKS(2), ev.dot)
            ev = await b.update("quorum", "k", "set", "q")
            assert b.acknowledged(QUORUM(), ev.dot)
            ev = await c.update("all", "k", "set", "everyone")
            assert ev.dot in a.context and ev.dot in b.context
            for i in range(4):
                writer, reader = (a, c) if i % 2 == 0 else (c, b)
                await writer.update("quorum", "k", "set", i)
                assert await reader.read("quorum", "k") == i
            # staleness: b goes quiet on a's control channel (the log still flows)
            b.write("fresh", "k", "set", "v1")
            await b.flush()
            await until(lambda: a.value("fresh", "k") == "v1" and a.staleness_ms() <= 300, what="a is fresh")
            assert await a.read("fresh", "k") == "v1"
            _control(a).block({"b"})
            await until(lambda: a.staleness_ms() > 300, what="b's silence makes a stale")
            with pytest.raises(StaleRead):
                await a.read("fresh", "k")
            _control(a).unblock()
            await until(lambda: a.staleness_ms() <= 300, what="a is fresh again")
            assert await a.read("fresh", "k") == "v1"
            assert all(_control(r).stats.publish_errors == 0 for r in (a, b, c))
        finally:
            await _close(opened)

    arun(body(), 90)


def test_edges_read_only_their_hubs_aggregate_and_still_get_quorum_acks(crdtsync_kafka: str) -> None:
    async def body() -> None:
        settings = KafkaSettings(crdtsync_kafka, namespace=namespace("hub"))
        opened = [await _open(settings, "h0", topology=Topology("hub"))]
        opened += [await _open(settings, f"e{i}", topology=Topology("edge", hub="h0")) for i in range(3)]
        hub, *edges = (r for _, r in opened)
        try:
            await until(lambda: len(hub.membership) == 4, what="the hub counts every edge")
            ev = await edges[0].update("quorum", "k", "set", "from an edge")
            assert edges[0].acknowledged(QUORUM(), ev.dot)
            assert await edges[1].read("quorum", "k") == "from an edge"
            for e in edges:
                st = _control(e).stats
                # an edge's partition holds its hub's aggregate only: no edge heartbeat read
                assert st.delivered > 0 and st.skipped_other_topics == 0 and st.skipped_own == 0
            assert _control(hub).stats.delivered > 0
        finally:
            await _close(opened)

    arun(body(), 90)


def test_quorum_writes_across_a_control_topic_partition_behave_as_in_the_akka_scenario(
        crdtsync_kafka: str) -> None:
    """Five replicas; QUORUM adds everywhere; a 3+2 partition of the control topic: the
    majority's writes are acknowledged, the minority's fail (fast once it noticed, by
    timeout before); after the heal every replica reads every acknowledged and every
    timed-out add, and no add that failed fast."""

    async def body() -> None:
        rng = random.Random(5)
        settings = KafkaSettings(crdtsync_kafka, namespace=namespace("akka"))
        opened = [await _open(settings, n) for n in "abcde"]
        reps = {r.identity.name: r for _, r in opened}
        acked: set[int] = set()
        timed_out: set[int] = set()
        failed_fast: set[int] = set()
        x = iter(range(10_000))

        async def add(name: str) -> str:
            v = next(x)
            try:
                await reps[name].at(write=QUORUM(), timeout=2.0).update("members", "cluster", "add", v)
            except Unavailable as exc:
                (failed_fast if exc.event is None else timed_out).add(v)
                return "fail" if exc.event is None else "info"
            acked.add(v)
            return "ok"

        try:
            await until(lambda: all(len(r.membership) == 5 for r in reps.values()), what="everyone knows the fleet")
            for _ in range(20):  # (b) QUORUM writes and reads, healthy
                assert await add(rng.choice("abcde")) == "ok"
                before = set(acked)
                got = await reps[rng.choice("abcde")].read("members", "cluster", level=QUORUM())
                assert before <= got, sorted(before - got)
            majority, minority = ["a", "b", "c"], ["d", "e"]
            for n in majority:
                _control(reps[n]).block(minority)
            for n in minority:
                _control(reps[n]).block(majority)
            assert await add("d") in ("fail", "info")  # before the minority noticed: indeterminate
            await until(lambda: all(len(reps[n].membership.live(None, reps[n].now_ms(), int(LIVE * 1000))) == 2
                                    for n in minority), what="the minority notices the cut")
            for i in range(20):  # (c) both sides write
                if i % 3 == 0:
                    assert await add(rng.choice(minority)) == "fail"  # noticed: fails fast, writes nothing
                else:
                    before = set(acked)
                    assert await add(rng.choice(majority)) == "ok"
                    got = await reps[rng.choice(majority)].read("members", "cluster", level=QUORUM())
                    assert before <= got
            with pytest.raises(Unavailable):
                await reps["e"].read("members", "cluster", level=QUORUM(), timeout=1.0)
            for r in reps.values():  # (d) heal
                _control(r).unblock()
            final = acked | timed_out
            await until(lambda: all(r.value("members", "cluster") == final for r in reps.values()), 30,
                        what="every replica reads the final set")
            for r in reps.values():
                assert await r.read("members", "cluster", level=QUORUM()) == final
            assert failed_fast and not failed_fast & final
            assert sum(_control(r).stats.blocked for r in reps.values()) > 0
        finally:
            await _close(opened)

    arun(body(), 120)
