"""The forwarder's state file and positions: vector positions round-trip, the first (int)
format still loads, damaged or foreign files are typed errors, and a batch is split by
partition with no checkpoint until every partition acknowledged it.

Unit tests: MemoryLogs stand in for the shared log (the real broker runs in
tests/kafka/test_forwarder_kafka.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from crdtsync.adapters._kafka_route import EventRouter

from crdtsync import Forwarder, GCounter, LocalLog, MemoryLog
from crdtsync.clock import make_hlc
from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.events import Batch, Event, MsgpackCodec
from crdtsync.forwarder import STATE_VERSION, ForwarderState
from crdtsync.forwarder.stats import records_behind
from crdtsync.log._protocol import VectorPosition

EDGE = "edge~1"
CODEC = MsgpackCodec()


def record(origin: str, seq: int, key: str = "u") -> bytes:
    ev = Event(origin, seq, make_hlc(1_000 + seq), "clicks", key, GCounter().increment(1, actor=origin))
    return CODEC.encode(Batch.of([ev]))


def test_vector_positions_round_trip_through_the_state_file(tmp_path: Path) -> None:
    state = ForwarderState(tmp_path / "f.json")
    received = VectorPosition([4, 9, 2], partition=1, generation=3)
    state.save(1234, received)
    on_disk = json.loads((tmp_path / "f.json").read_text())
    assert on_disk == {"version": STATE_VERSION, "shipped": 1234, "received": [[4, 9, 2], 1, 3]}
    shipped, back = ForwarderState(tmp_path / "f.json").load()
    assert shipped == 1234 and back == received and isinstance(back, VectorPosition)
    assert back.offsets == (4, 9, 2) and back.generation == 3
    cursor = VectorPosition([5, 5])
    state.save(None, cursor)
    assert ForwarderState(tmp_path / "f.json").load() == (None, cursor)
    assert state.saves == 2 and not (tmp_path / "f.json.tmp").exists()


@pytest.mark.parametrize("old,expected", [
    ('{"shipped": 120, "received": 7}', (120, 7)),
    ('{"shipped": null, "received": null}', (None, None)),
    ('{"shipped": 0, "received": null}', (0, None)),
])
def test_the_first_int_format_still_loads(tmp_path: Path, old: str, expected: tuple[int | None, int | None]) -> None:
    (tmp_path / "f.json").write_text(old)
    assert ForwarderState(tmp_path / "f.json").load() == expected


def test_a_forwarder_resumes_from_a_first_format_file_and_rewrites_it(tmp_path: Path) -> None:
    async def body() -> None:
        local, shared = MemoryLog(), MemoryLog()
        for s in range(1, 6):
            await local.append([record(EDGE, s)])
        (tmp_path / "f.json").write_text('{"shipped": 2, "received": null}')  # positions 0..2 shipped before
        fwd = Forwarder(local, shared, origin=EDGE, state_path=tmp_path / "f.json")
        assert (await fwd.run_once()).shipped == 2
        assert [e.payload async for e in shared.read(0)] == [record(EDGE, 4), record(EDGE, 5)]
        # the down pass stepped over the two records it found there, its own
        assert json.loads((tmp_path / "f.json").read_text()) == {"version": 2, "shipped": 4, "received": 1}

    asyncio.run(body())


@pytest.mark.parametrize("text,error,match", [
    ("{not json", CorruptRecord, "not JSON"),
    (b"\xff\xfe".decode("latin-1"), CorruptRecord, "not JSON"),
    ("[1, 2]", CorruptRecord, "is not"),
    ('{"shipped": 1}', CorruptRecord, "is not"),
    ('{"shipped": "7", "received": null}', CorruptRecord, "not an int"),
    ('{"shipped": -3, "received": null}', CorruptRecord, "not a log position"),
    ('{"shipped": true, "received": null}', CorruptRecord, "not an int|not a position"),
    ('{"version": 2, "shipped": null, "received": [[1, -2], null, 0]}', CorruptRecord, "not a log position"),
    ('{"version": 2, "shipped": null, "received": [[1, 2], 5, 0]}', CorruptRecord, "not a log position"),
    ('{"version": 2, "shipped": null, "received": {"a": 1}}', CorruptRecord, "not a log position"),
    ('{"version": 2, "shipped": null, "received": [[1, 2], 0]}', CorruptRecord, "not a log position"),
    ('{"version": "2", "shipped": null, "received": null}', CorruptRecord, "not a version"),
    ('{"version": 0, "shipped": null, "received": null}', CorruptRecord, "not a version"),
    ('{"version": 1, "shipped": null, "received": [[1], 0, 0]}', CorruptRecord, "version 1 holds int"),
    ('{"version": 3, "shipped": null, "received": null}', UnsupportedVersion, "upgrade crdtsync"),
])
def test_a_bad_state_file_is_a_typed_error_that_says_what_to_do(tmp_path: Path, text: str,
                                                                 error: type[Exception], match: str) -> None:
    (tmp_path / "f.json").write_text(text, encoding="latin-1")
    with pytest.raises(error, match=match) as info:
        ForwarderState(tmp_path / "f.json").load()
    assert "delete it" in str(info.value)


def test_a_state_file_of_another_kind_of_log_is_refused_not_misread(tmp_path: Path) -> None:
    class _Vector(MemoryLog):
        """A shared log whose end is a 3-partition vector (the check reads only ``end``)."""

        async def end(self) -> VectorPosition:  # type: ignore[override]
            return VectorPosition([0, 0, 0])

    async def body() -> None:
        local = MemoryLog()
        (tmp_path / "f.json").write_text('{"shipped": null, "received": 12}')  # written for a LocalLog
        fwd = Forwarder(local, _Vector(), origin=EDGE, state_path=tmp_path / "f.json")
        with pytest.raises(CorruptRecord, match="written for another log"):
            await fwd.run_once()
        (tmp_path / "g.json").write_text('{"version": 2, "shipped": null, "received": [[1, 2], 0, 0]}')
        fwd = Forwarder(local, _Vector(), origin=EDGE, state_path=tmp_path / "g.json")
        with pytest.raises(CorruptRecord, match="written for another log"):  # 2 partitions, the log has 3
            await fwd.run_once()
        (tmp_path / "h.json").write_text('{"version": 2, "shipped": null, "received": [[1, 2, 3], 0, 0]}')
        fwd = Forwarder(MemoryLog(), MemoryLog(), origin=EDGE, state_path=tmp_path / "h.json")
        with pytest.raises(CorruptRecord, match="written for another log"):  # a vector for an int log
            await fwd.run_once()

    asyncio.run(body())


def test_records_behind_counts_partition_offsets() -> None:
    end = VectorPosition([10, 4, 7])
    assert records_behind(None, end) == 21
    assert records_behind(VectorPosition([3, 4, 7], partition=0), end) == 6  # 4..9 of partition 0
    assert records_behind(VectorPosition([9, 4, 7], partition=0), end) == 0
    assert records_behind(VectorPosition([1, 1, 1], generation=0), VectorPosition([2, 2, 2], generation=1)) == 6
    assert records_behind(5, 9) is None  # int positions do not count records


class _Partitioned(MemoryLog):
    """A shared log that routes as KafkaLog does (``partition_of``) and notes every append;
    appends to ``failing`` raise while it is set (after the others were made)."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[tuple[int, list[bytes]]] = []
        self.failing: int | None = None
        self.router = EventRouter(3)  # KafkaLog's own routing: by (field, key) of the first event

    def partition_of(self, records: Sequence[bytes]) -> int:
        return self.router(records)

    async def append(self, records: Sequence[bytes]) -> int:
        p = self.partition_of(records)
        assert all(self.partition_of([r]) == p for r in records), "an append holds one partition's records"
        await asyncio.sleep(0)
        if p == self.failing:
            raise ConnectionError(f"partition {p} unreachable")
        self.appends.append((p, list(records)))
        return await super().append(records)


def test_a_batch_is_split_by_partition_and_checkpointed_only_when_every_part_landed(tmp_path: Path) -> None:
    async def body() -> None:
        local, shared = await LocalLog.open(tmp_path / "local", fsync="never"), _Partitioned()
        records = [record(EDGE, s, key=f"k{s}") for s in range(1, 13)]
        for r in records:
            await local.append([r])
        parts = {shared.partition_of([r]) for r in records}
        assert len(parts) == 3, "the test records spread over three partitions"
        fwd = Forwarder(local, shared, origin=EDGE, state_path=tmp_path / "f.json", batch=6)
        shared.failing = shared.partition_of([records[0]])
        with pytest.raises(ConnectionError):
            await fwd.run_once()
        assert fwd.shipped_pos is None and not (tmp_path / "f.json").exists(), "no checkpoint for a partial batch"
        landed = [r for _, rs in shared.appends for r in rs]
        failed_run_appends = len(shared.appends)
        assert landed and set(landed) < set(records[:6])
        shared.failing = None
        assert (await fwd.run_once()).shipped == 12
        shipped = [r for _, rs in shared.appends for r in rs]
        assert set(shipped) == set(records), "nothing lost"
        assert len(shipped) - len(records) == len(landed), "the failed batch's landed parts sent again, once"
        for _, rs in shared.appends:
            order = [records.index(r) for r in rs]
            assert order == sorted(order), "each partition's part keeps the local order"
        assert fwd.stats.appends == len(shared.appends) - failed_run_appends and fwd.stats.shipped == 12
        await local.close()

    asyncio.run(body())


def test_a_data_loss_of_the_shared_log_ships_the_whole_outbox_again() -> None:
    class _Losing(MemoryLog):
        """A shared log with KafkaLog's data-loss alarm (``on_loss``)."""

        def __init__(self) -> None:
            super().__init__()
            self.listeners: list[Any] = []

        def on_loss(self, listener: Any) -> Any:
            self.listeners.append(listener)
            return lambda: self.listeners.remove(listener)

    async def body() -> None:
        local, shared = MemoryLog(), _Losing()
        for s in range(1, 6):
            await local.append([record(EDGE, s)])
        fwd = Forwarder(local, shared, origin=EDGE)
        assert (await fwd.run_once()).shipped == 5 and (await fwd.run_once()).shipped == 0
        for listener in list(shared.listeners):
            listener("broker restarted empty")
        assert fwd.stats.broker_losses == 1
        assert (await fwd.run_once()).shipped == 5, "everything again: the broker may have lost it"
        assert await fwd.outbox_depth() == 0
        fwd.shared = None  # disconnecting unsubscribes
        assert shared.listeners == []

    asyncio.run(body())
