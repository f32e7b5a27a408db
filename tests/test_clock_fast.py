"""The HLC's fast path: the window of the current millisecond (``HLC.now`` and the write
handles, which inline it) issues exactly the stamps the slow path would."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from crdtsync import Feature, GCounter, LWWRegister, MemoryLog, Replica
from crdtsync.clock import HLC, hlc_logical, hlc_wall_ms, make_hlc


def _stamps_for(ms: float, stamp) -> list[int]:
    out: list[int] = []
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        out.append(stamp())
    return out


def test_fast_path_is_monotonic_across_millisecond_boundaries():
    h = HLC()
    fences: list[int] = []
    h.fence = fences.append
    stamps = _stamps_for(20, h.now)
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    walls = [hlc_wall_ms(ts) for ts in stamps]
    assert len(set(walls)) >= 5, "the run spans several milliseconds"
    # the first stamp of each millisecond is fresh (logical 0) and the fence saw it, once
    assert fences == sorted(set(walls))
    firsts = {}
    for ts in stamps:
        firsts.setdefault(hlc_wall_ms(ts), ts)
    assert all(hlc_logical(ts) == 0 for ts in firsts.values())
    # most stamps took the window (the same ms as the one before, logical + 1)
    assert sum(1 for a, b in zip(stamps, stamps[1:]) if b == a + 1) > len(stamps) // 2
    assert h._fast_to > 0, "the owner's clock has an open window"


def test_window_is_the_wall_millisecond_of_the_last_fresh_stamp():
    h = HLC()
    h.now()
    deadline = time.monotonic() + 1
    while h._fast_to == 0 and time.monotonic() < deadline:
        h.now()
    assert h._fast_to > 0
    assert hlc_logical(h.last) == 0 and h._fast_from == hlc_wall_ms(h.last) * 1_000_000
    assert h._fast_to - h._fast_from == 1_000_000


def test_observing_a_remote_stamp_ahead_closes_the_window():
    h = HLC()
    h.now()
    h.now()
    ahead = make_hlc(time.time_ns() // 1_000_000 + 5_000, 7)  # 5 s ahead (within drift)
    h.observe(ahead)
    assert h._fast_to == 0
    after = [h.now() for _ in range(1000)]
    assert after[0] == ahead + 1
    assert after == list(range(ahead + 1, ahead + 1001)), "no window opens while the clock is ahead"
    assert h._fast_to == 0


@pytest.mark.parametrize("move", ["update", "restore"])
def test_update_and_restore_close_the_window(move: str):
    h = HLC()
    h.now()
    h.now()
    ahead = make_hlc(time.time_ns() // 1_000_000 + 3_000)
    got = getattr(h, move)(ahead)
    assert h._fast_to == 0
    nxt = h.now()
    assert nxt > ahead and (got is None or nxt > got)


def test_a_simulated_clock_never_opens_the_window():
    now_ms = [1_000]
    h = HLC(clock=lambda: now_ms[0])
    a = h.now()
    now_ms[0] += 1
    b = h.now()
    assert h._fast_to == 0 and b == make_hlc(1_001) and a == make_hlc(1_000)


def test_two_threads_never_share_a_stamp_on_the_fast_path():
    h = HLC()
    h.now()  # the main thread owns it (the first stamp is taken under the lock)
    deadline = time.monotonic() + 1
    while h._fast_to == 0 and time.monotonic() < deadline:
        h.now()  # its first stamp of a new millisecond opens the window
    assert h._fast_to > 0
    main: list[int] = []
    other: list[int] = []
    go = threading.Event()

    def stamp_other() -> None:
        go.wait()
        other.extend(_stamps_for(30, h.now))

    t = threading.Thread(target=stamp_other)
    t.start()
    go.set()
    main.extend(_stamps_for(30, h.now))
    t.join()
    assert h._shared and h._fast_to == 0, "a second thread closes the window for good"
    assert all(a < b for a, b in zip(main, main[1:])) and all(a < b for a, b in zip(other, other[1:]))
    assert len(set(main) | set(other)) == len(main) + len(other)


async def _handles_stamp_in_order() -> None:
    schema = [Feature("count", GCounter), Feature("score", LWWRegister)]
    r = await Replica.open(schema=schema, log=MemoryLog(), name="a", follow=False, control=False)
    inc, put = r.writer("count", "increment"), r.writer("score", "set")
    inc("k", 1)
    put("k", 0)
    for i in range(5_000):
        inc(f"k{i % 10}", 1)
        put(f"k{i % 10}", i)
    stamps = list(r._writer.queue.stamps)
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    assert sum(1 for a, b in zip(stamps, stamps[1:]) if b == a + 1) > len(stamps) // 2
    ahead = make_hlc(time.time_ns() // 1_000_000 + 2_000)
    r.hlc.observe(ahead)
    put("k", -1)
    inc("k", 1)
    assert r._writer.queue.stamps[-2:] == [ahead + 1, ahead + 2]
    assert r.value("score", "k") == -1 and r.value("count", "k") == 2
    await r.flush()
    await r.close()


def test_handles_stamp_on_the_fast_path_and_stay_ordered():
    asyncio.run(_handles_stamp_in_order())
