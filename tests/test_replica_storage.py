"""The replica on real filesystems that refuse writes: a full tmpfs (ENOSPC) and a
read-only one (EROFS). Reads keep being served, writes that could not be appended wait
in the queue and are appended once space is back, errors are typed and counted
(``ReplicaStats.storage_errors``), and no temporary file is left behind, also by
``close()``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from crdtsync import Feature, LocalLog, LWWRegister, Replica
from crdtsync.errors import StorageFull, StorageUnavailable
from crdtsync.snapshots import FileSnapshotStore

from ._disk import SmallDisk, small_disk_at
from ._wait import until

SCHEMA = [Feature("segment", LWWRegister)]
BIG = "x" * (3 * 4096)  # an event whose record needs pages of its own


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def test_a_full_disk_refuses_writes_typed_reads_go_on_and_writing_resumes(small_disk: SmallDisk, tmp_path: Path) -> None:
    data = small_disk.path / "r"

    async def scenario() -> None:
        r = await Replica.open(data, schema=SCHEMA, name="edge")
        try:
            await r.update("segment", "u0", "set", "before")
            small_disk.fill()
            with pytest.raises(StorageFull) as info:
                await r.update("segment", "u1", "set", BIG)
            assert "no space left" in str(info.value)
            assert r.stats.storage_errors == 1
            assert r.pending == 1  # queued, not lost
            # Reads keep being served, including the write that waits for space.
            assert await r.read("segment", "u0") == "before"
            assert await r.read("segment", "u1") == BIG
            r.write("segment", "u2", "set", "queued meanwhile")
            with pytest.raises(StorageFull):
                await r.flush()
            assert r.stats.storage_errors == 2 and r.pending == 2
            small_disk.free()
            await r.flush()
            assert r.pending == 0
            # Everything reached the log: a fresh replica reading it sees every write.
            log = await LocalLog.open(data / "log")
            try:
                async with Replica.open(tmp_path / "other", schema=SCHEMA, log=log, follow=False, control=False) as o:
                    await o.catch_up()
                    assert [o.value("segment", k) for k in ("u0", "u1", "u2")] == ["before", BIG, "queued meanwhile"]
            finally:
                await log.close()
        finally:
            await r.close()
        assert small_disk.files("*.tmp") == []

    run(scenario())


def test_close_on_a_full_disk_without_room_for_the_snapshot(small_disk: SmallDisk) -> None:
    """Every write is in the log, but the final snapshot does not fit: close raises the
    typed error, leaves no ``snapshot-*.tmp``, and the next open recovers from the log."""
    data = small_disk.path / "r"

    async def scenario() -> None:
        r = await Replica.open(data, schema=SCHEMA, name="edge")
        for i in range(50):
            r.write("segment", f"k{i}", "set", f"v{i}" * 100)
        await r.flush()
        small_disk.fill()
        with pytest.raises(StorageFull) as info:
            await r.close()
        assert "no final snapshot was written" in str(info.value)
        assert r.stats.storage_errors == 1
        assert small_disk.files("*.tmp") == []
        small_disk.free()
        async with Replica.open(data, schema=SCHEMA) as again:
            assert again.actor == r.actor
            assert again.value("segment", "k49") == "v49" * 100

    run(scenario())


def test_close_on_a_full_disk_with_queued_writes_says_what_was_lost(small_disk: SmallDisk) -> None:
    data = small_disk.path / "r"

    async def scenario() -> None:
        r = await Replica.open(data, schema=SCHEMA, name="edge")
        await r.update("segment", "kept", "set", "durable")
        small_disk.fill()
        r.write("segment", "a", "set", BIG)
        r.write("segment", "b", "set", BIG)
        with pytest.raises(StorageFull) as info:
            await r.close()
        assert "2 queued events were not written and are lost" in str(info.value)
        assert small_disk.files("*.tmp") == []
        small_disk.free()
        async with Replica.open(data, schema=SCHEMA) as again:
            assert again.value("segment", "kept") == "durable"

    run(scenario())


def test_read_only_snapshot_directory_writes_and_reads_go_on(tmp_path: Path) -> None:
    """Snapshots on a filesystem that turned read-only: each snapshot fails typed and
    counted (also the automatic ones of the apply loop); writes and reads go on, and the
    log alone recovers the replica."""

    async def scenario(disk: SmallDisk) -> None:
        store = FileSnapshotStore(disk.path / "snaps")
        r = await Replica.open(tmp_path / "r", schema=SCHEMA, name="edge", snapshots=store, snapshot_every=5)
        try:
            await r.update("segment", "u0", "set", "a")
            await r.snapshot()
            disk.read_only()
            with pytest.raises(StorageUnavailable) as info:
                await r.snapshot()
            assert "read-only" in str(info.value)
            for i in range(20):
                await r.update("segment", f"k{i}", "set", i)
            await r.sync()
            await until(lambda: r.stats.storage_errors >= 2, what="the apply loop's snapshot failing")
            assert [await r.read("segment", f"k{i}") for i in range(20)] == list(range(20))
            with pytest.raises(StorageUnavailable, match="no final snapshot was written"):
                await r.close()
            # A refused automatic snapshot is retried after another snapshot_every
            # events, not after every record (which stalled applying): at most one
            # attempt per 5 writes, plus the explicit one and the one at close.
            assert r.stats.storage_errors <= 1 + 20 // 5 + 1
        finally:
            await r.close()
        disk.read_write()
        assert disk.files("*.tmp") == []
        async with Replica.open(tmp_path / "r", schema=SCHEMA, snapshots=FileSnapshotStore(disk.path / "snaps")) as again:
            assert again.value("segment", "k19") == 19

    with small_disk_at(tmp_path / "snapdisk") as disk:
        run(scenario(disk))


def test_opening_a_replica_on_a_read_only_filesystem(small_disk: SmallDisk) -> None:
    data = small_disk.path / "r"

    async def scenario() -> None:
        async with Replica.open(data, schema=SCHEMA, name="edge") as r:
            await r.update("segment", "u0", "set", "a")
        small_disk.read_only()
        with pytest.raises(StorageUnavailable, match="remount"):
            await Replica.open(data, schema=SCHEMA)
        small_disk.read_write()
        async with Replica.open(data, schema=SCHEMA) as again:
            assert again.value("segment", "u0") == "a"

    run(scenario())
