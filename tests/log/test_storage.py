"""Storage errors from real filesystems: a full tmpfs (ENOSPC) and a read-only one (EROFS).

Each error is typed (``StorageFull`` / ``StorageUnavailable``, also ``OSError`` with the
original errno), says what to do, is counted in ``LogStats.storage_errors``, leaves no
partial record or temporary file behind, and the log works again once space is back.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from crdtsync.errors import CrdtSyncError, StorageFull, StorageUnavailable
from crdtsync.log import LocalLog, LogClosed
from crdtsync.snapshots import FileSnapshotStore

from .._disk import SmallDisk
from ._util import arun

BIG = 3 * 4096  # a record that needs pages of its own: the kernel must refuse it on a full disk


async def read_all(log: LocalLog) -> list[bytes]:
    return [e.payload async for e in log.read(0)]


@pytest.mark.parametrize("fsync", ["group", "always", "never"])
def test_append_on_a_full_disk_raises_storage_full_and_resumes(small_disk: SmallDisk, fsync: str) -> None:
    path = small_disk.path / "log"

    async def body() -> None:
        async with LocalLog.open(path, fsync=fsync) as log:
            await log.append([b"before"])
            seg = next(path.glob("*.seg"))
            size = seg.stat().st_size
            small_disk.fill()
            with pytest.raises(StorageFull) as info:
                await log.append([b"a" * BIG, b"b" * BIG])
            err = info.value
            assert isinstance(err, OSError) and isinstance(err, CrdtSyncError)
            assert err.errno == errno.ENOSPC
            assert isinstance(err.__cause__, OSError) and not isinstance(err.__cause__, CrdtSyncError)
            assert str(path) in str(err) and "no space left" in str(err) and "Free space" in str(err)
            assert "Nothing was appended" in str(err)
            assert log.stats.storage_errors == 1
            assert seg.stat().st_size == size  # no part of the batch is left behind
            assert await read_all(log) == [b"before"]
            with pytest.raises(StorageFull):  # still full: refused again, counted again
                await log.append([b"c" * BIG])
            assert log.stats.storage_errors == 2
            small_disk.free()
            p = await log.append([b"after" * 1000])
            assert await read_all(log) == [b"before", b"after" * 1000]
            assert p == await log.end() - 8 - 5000
        async with LocalLog.open(path, fsync=fsync) as log:
            assert log.recovery.clean
            assert await read_all(log) == [b"before", b"after" * 1000]

    arun(body())


def test_a_roll_on_a_full_disk_leaves_no_half_made_segment(small_disk: SmallDisk) -> None:
    path = small_disk.path / "log"

    async def body() -> None:
        async with LocalLog.open(path, segment_bytes=8192) as log:
            for i in range(3):
                await log.append([b"%d" % i * 2000])  # the next append rolls
            before = small_disk.files()
            small_disk.fill()
            with pytest.raises(StorageFull):
                await log.append([b"x" * 3000])
            assert small_disk.files() == before  # no .seg.tmp, no empty new segment
            assert log.stats.storage_errors == 1
            small_disk.free()
            await log.append([b"x" * 3000])
            assert len(list(path.glob("*.seg"))) == 2
            assert await read_all(log) == [b"0" * 2000, b"1" * 2000, b"2" * 2000, b"x" * 3000]

    arun(body())


def test_opening_on_a_read_only_filesystem_raises_storage_unavailable(small_disk: SmallDisk) -> None:
    path = small_disk.path / "log"

    async def body() -> None:
        async with LocalLog.open(path) as log:
            await log.append([b"kept"])
        small_disk.read_only()
        with pytest.raises(StorageUnavailable) as info:
            await LocalLog.open(path)
        err = info.value
        assert isinstance(err, OSError) and err.errno == errno.EROFS
        assert "read-only" in str(err) and "remount" in str(err) and "not opened" in str(err)
        small_disk.read_write()
        async with LocalLog.open(path) as log:
            assert await read_all(log) == [b"kept"]

    arun(body())


def test_a_failed_fsync_is_typed_and_poisons_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tmpfs never fails an fsync; NFS and thin-provisioned disks report ENOSPC there."""

    async def body() -> None:
        log = await LocalLog.open(tmp_path)
        await log.append([b"ok"])

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(StorageFull, match="refuses appends until it is reopened"):
            await log.append([b"lost?"])
        assert log.stats.storage_errors == 1
        with pytest.raises(LogClosed, match="failed"):
            await log.append([b"refused"])
        with pytest.raises(LogClosed):
            await log.sync()
        monkeypatch.undo()
        await log.close()
        async with LocalLog.open(tmp_path) as again:
            assert (await read_all(again))[0] == b"ok"

    arun(body())


def test_snapshot_save_on_a_full_disk_leaves_no_temporary_file(small_disk: SmallDisk) -> None:
    store = FileSnapshotStore(small_disk.path / "snaps")
    store.save(b"first" * 10)
    small_disk.fill()
    with pytest.raises(StorageFull) as info:
        store.save(b"x" * BIG)
    assert "No snapshot was written" in str(info.value)
    assert small_disk.files("snapshot-*") == ["snaps/snapshot-0000000000000001.snap"]
    small_disk.free()
    store.save(b"x" * BIG)
    assert small_disk.files("snapshot-*") == [
        "snaps/snapshot-0000000000000001.snap",
        "snaps/snapshot-0000000000000002.snap",
    ]


def test_snapshot_save_on_a_read_only_filesystem(small_disk: SmallDisk) -> None:
    store = FileSnapshotStore(small_disk.path / "snaps")
    store.save(b"first" * 10)
    small_disk.read_only()
    with pytest.raises(StorageUnavailable) as info:
        store.save(b"second" * 10)
    assert info.value.errno == errno.EROFS and "read-only" in str(info.value)
    assert small_disk.files("snapshot-*") == ["snaps/snapshot-0000000000000001.snap"]


def test_a_temporary_file_left_by_a_crash_is_removed_on_open(tmp_path: Path) -> None:
    (tmp_path / "snapshot-0000000000000003.tmp").write_bytes(b"torn")
    FileSnapshotStore(tmp_path)
    assert list(tmp_path.iterdir()) == []
