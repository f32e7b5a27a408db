"""The Log protocol's promises, checked against every backend (CONVENTIONS.md, shape 5).

A new backend (KafkaLog) joins by adding itself to the ``make_log`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from crdtsync.log import Log, LogClosed, LogEntry, RecordTooLarge
from crdtsync.log._protocol import covers, reached

from ._util import LogFactory, arun, far_past, in_log_order, just_after, log_order


async def _all(log: Log, start: int = 0) -> list[LogEntry]:
    return [e async for e in log.read(start)]


def test_is_a_log(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        assert isinstance(log, Log)
        await log.close()

    arun(body())


def test_empty_log(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        assert await _all(log) == []
        first = await log.end()
        position = await log.append([b"x"])
        assert reached(position, first)
        if isinstance(first, int):
            assert position == first
        assert await _all(log) == [LogEntry(position, b"x")]
        await log.close()

    arun(body())


def test_append_returns_first_position_and_end_is_next(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        p1 = await log.append([b"a", b"bb", b"ccc"])
        end1 = await log.end()
        p2 = await log.append([b"dddd"])
        assert reached(p2, end1) and not reached(p1, end1)
        if isinstance(end1, int):
            assert p2 == end1 > p1
        entries = await _all(log)
        assert [e.payload for e in entries] == in_log_order([(p1, [b"a", b"bb", b"ccc"]), (p2, [b"dddd"])])
        by_payload = {e.payload: e.position for e in entries}
        assert by_payload[b"a"] == p1 and by_payload[b"dddd"] == p2
        positions = [e.position for e in entries]
        for i, earlier in enumerate(positions):  # positions strictly increase
            for later in positions[i + 1:]:
                assert covers(later, earlier) and not covers(earlier, later)
        end = await log.end()
        assert not reached(positions[-1], end) and all(covers(end, p) for p in positions)
        await log.close()

    arun(body())


def test_read_resumes_exactly_at_a_returned_position(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        for i in range(30):
            await log.append([b"r%d" % i, b"s%d" % i])
        entries = await _all(log)
        for k, e in enumerate(entries):
            assert await _all(log, e.position) == entries[k:]
        await log.close()

    arun(body())


def test_read_from_between_positions(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        for i in range(20):
            await log.append([bytes([i]) * (i * 7)])
        entries = await _all(log)
        for k, e in enumerate(entries[:-1]):
            # The first position after e (non-contiguous positions leave a gap to probe).
            assert await _all(log, just_after(e.position)) == entries[k + 1 :]
        assert await _all(log, await log.end()) == []
        far = far_past(await log.end())
        if isinstance(far, int):
            assert await _all(log, far) == []
        else:
            # a vector position is only issued by the log: past its ends means the broker
            # lost records (the alarm is raised) and the read starts again from the start
            assert [e.payload for e in await _all(log, far)] == [e.payload for e in entries]
            assert log.stats.broker_losses == 1  # type: ignore[attr-defined]
        with pytest.raises(ValueError):
            await _all(log, -1)
        await log.close()

    arun(body())


def test_empty_append_appends_nothing(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        await log.append([b"x"])
        end = await log.end()
        assert await log.append([]) == end
        assert await log.end() == end
        assert len(await _all(log)) == 1
        await log.close()

    arun(body())


def test_payloads_round_trip(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        payloads = [b"", b"\x00", os.urandom(65536), os.urandom(1 << 20), b"\xff" * 3]
        appended = [(await log.append(payloads[:2]), payloads[:2])]
        appended.append((await log.append([bytearray(payloads[2])]), payloads[2:3]))
        appended.append((await log.append([memoryview(payloads[3]), payloads[4]]), payloads[3:]))
        assert [e.payload for e in await _all(log)] == in_log_order(appended)
        assert all(type(e.payload) is bytes for e in await _all(log))
        await log.close()

    arun(body())


def test_concurrent_batches_are_atomic_and_adjacent(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()

        async def writer(w: int) -> list[tuple[int, list[bytes]]]:
            done = []
            for b in range(5):
                batch = [f"{w}.{b}.{i}".encode() * (1 + i) for i in range(1 + (w + b) % 4)]
                done.append((await log.append(batch), batch))
            return done

        results = await asyncio.gather(*(writer(w) for w in range(20)))
        entries = await _all(log)
        by_pos = {e.position: k for k, e in enumerate(entries)}
        total = 0
        for done in results:
            for position, batch in done:
                k = by_pos[position]
                assert [e.payload for e in entries[k : k + len(batch)]] == batch
                total += len(batch)
        assert total == len(entries)
        await log.close()

    arun(body())


def test_follow_sees_later_appends_and_ends_on_close(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        appended = [(await log.append([b"before"]), b"before")]
        seen: list[bytes] = []
        got_all = asyncio.Event()

        async def follower() -> None:
            async for e in log.read(0, follow=True):
                seen.append(e.payload)
                if len(seen) == 6:
                    got_all.set()

        task = asyncio.create_task(follower())
        await asyncio.sleep(0.01)
        for i in range(5):
            appended.append((await log.append([b"after%d" % i]), b"after%d" % i))
        await asyncio.wait_for(got_all.wait(), 10)
        # in append order within each partition (a single-stream log has one)
        streams: dict[int, list[bytes]] = {}
        for position, payload in appended:
            streams.setdefault(log_order(position)[0], []).append(payload)
        for payloads in streams.values():
            assert [s for s in seen if s in payloads] == payloads
        assert sorted(seen) == sorted(p for _, p in appended)
        await log.close()
        await asyncio.wait_for(task, 10)  # ends by itself once the log is closed

    arun(body())


def test_follow_can_be_abandoned(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        appended = [(await log.append([b"a", b"b"]), [b"a", b"b"])]
        reader = log.read(0, follow=True)
        async with contextlib.aclosing(reader):  # type: ignore[type-var]
            async for e in reader:
                if e.payload == b"b":
                    break
        appended.append((await log.append([b"c"]), [b"c"]))
        assert [e.payload for e in await _all(log)] == in_log_order(appended)
        await log.close()

    arun(body())


def test_readers_are_independent(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        for i in range(10):
            await log.append([b"%d" % i])
        r1, r2 = log.read(0), log.read(0)
        a = [await r1.__anext__() for _ in range(3)]
        b = [e async for e in r2]
        a += [e async for e in r1]
        assert a == b and len(a) == 10
        await log.close()

    arun(body())


def test_record_too_large_appends_nothing(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        limit = log.max_record_bytes  # type: ignore[attr-defined]
        with pytest.raises(RecordTooLarge):
            await log.append([b"ok", b"x" * (limit + 1)])
        assert await _all(log) == []
        await log.close()

    arun(body())


def test_bad_arguments(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        with pytest.raises(TypeError):
            await log.append(b"not a batch")
        with pytest.raises(TypeError):
            await log.append(["text"])  # type: ignore[list-item]
        assert await _all(log) == []
        await log.close()

    arun(body())


def test_closed_log_refuses_use(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        await log.append([b"x"])
        await log.close()
        await log.close()  # idempotent
        with pytest.raises(LogClosed):
            await log.append([b"y"])
        with pytest.raises(LogClosed):
            await log.end()
        with pytest.raises(LogClosed):
            await _all(log)

    arun(body())


def test_truncate_before_keeps_everything_at_or_after(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        for i in range(60):
            await log.append([b"record-%03d" % i * 4])
        entries = await _all(log)
        end = await log.end()
        cut = entries[40].position
        await log.truncate_before(cut)
        kept = await _all(log)
        assert kept == [e for e in entries if covers(e.position, kept[0].position)]
        assert covers(cut, kept[0].position)
        assert await log.end() == end
        assert await _all(log, cut) == entries[40:]
        await log.truncate_before(far_past(end, 1_000_000))  # past the end: keeps the newest records
        more = await log.append([b"more"])
        after = await _all(log)
        assert [e.payload for e in after if e.position == more] == [b"more"]
        rest = [e for e in after if e.position != more]
        assert [e.payload for e in rest] == [e.payload for e in entries if rest and covers(e.position, rest[0].position)]
        await log.close()

    arun(body())


def test_async_with_closes(make_log: LogFactory) -> None:
    async def body() -> None:
        log = await make_log()
        async with log:  # type: ignore[attr-defined]
            await log.append([b"x"])
        with pytest.raises(LogClosed):
            await log.append([b"y"])

    arun(body())
