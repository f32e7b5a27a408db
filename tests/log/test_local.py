"""LocalLog: on-disk format, recovery, damage, rolling, truncation, fsync policies."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest

from crdtsync.errors import CorruptRecord, UnsupportedVersion
from crdtsync.log import LocalLog, LogClosed, LogEntry
from crdtsync.log import local as local_mod
from crdtsync.log.local import FRAME_OVERHEAD, HEADER_SIZE, encode_batch

from ._util import arun


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


async def read_all(log: LocalLog, start: int = 0) -> list[LogEntry]:
    return [e async for e in log.read(start)]


def payloads(entries: list[LogEntry]) -> list[bytes]:
    return [e.payload for e in entries]


async def build(path: Path, batches: list[list[bytes]], **kw: object) -> list[int]:
    async with LocalLog.open(path, fsync="never", **kw) as log:  # type: ignore[arg-type]
        return [await log.append(b) for b in batches]


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# -- format -----------------------------------------------------------------------


def test_format_is_as_specified(tmp_path: Path) -> None:
    """The bytes on disk match the module docstring exactly (a golden check)."""
    arun(build(tmp_path, [[b"ab", b"cde"], [b""]]))
    (seg,) = segments(tmp_path)
    assert seg.name == "00000000000000000000.seg"
    data = seg.read_bytes()
    magic, version, _epoch, base, hcrc = struct.unpack_from("<8sIQQI", data)
    assert (magic, version, base) == (b"CRDTSLOG", 1, 0)
    assert hcrc == local_mod.crc32c(data[:28])
    assert len(data) == HEADER_SIZE + 3 * FRAME_OVERHEAD + 5
    word, crc = struct.unpack_from("<II", data, 32)
    assert word == 0x8000_0000 | 2  # CONTINUE: "cde" follows in the same batch
    assert crc == local_mod.crc32c(data[32:36] + b"ab")
    word, crc = struct.unpack_from("<II", data, 42)
    assert word == 3 and crc == local_mod.crc32c(data[42:46] + b"cde")
    assert data[50:53] == b"cde"
    assert encode_batch([b""]) == data[53:]
    assert (tmp_path / "LOCK").exists()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    async def body() -> None:
        positions = await build(tmp_path, [[b"x%d" % i] for i in range(50)], segment_bytes=256)
        async with LocalLog.open(tmp_path, segment_bytes=256) as log:
            assert log.recovery.clean, log.recovery.summary()
            entries = await read_all(log)
            assert [e.position for e in entries] == positions
            assert payloads(entries) == [b"x%d" % i for i in range(50)]
            epoch = log.epoch
            p = await log.append([b"after"])
            assert p > positions[-1]
        async with LocalLog.open(tmp_path) as log:
            assert log.epoch == epoch
            assert payloads(await read_all(log))[-1] == b"after"

    arun(body())


def test_open_without_create_raises(tmp_path: Path) -> None:
    async def body() -> None:
        with pytest.raises(FileNotFoundError):
            await LocalLog.open(tmp_path / "missing", create=False)

    arun(body())


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        LocalLog("x", fsync="sometimes")
    with pytest.raises(ValueError):
        LocalLog("x", segment_bytes=10)
    with pytest.raises(ValueError):
        LocalLog("x", max_record_bytes=1 << 31)


# -- recovery: torn tails -----------------------------------------------------------


def test_torn_tail_at_every_offset_of_the_last_batch(tmp_path: Path) -> None:
    """Cut the file at every byte of the last batch: recovery removes exactly that
    batch's remains, the earlier records survive, and the log takes appends again."""
    src = tmp_path / "src"
    first = [[b"alpha" * 3], [b"beta", b"gamma" * 5]]
    last = [b"one", b"two" * 4, b"three" * 2]

    async def prepare() -> tuple[int, int]:
        await build(src, first)
        before = segments(src)[0].stat().st_size
        await build(src, [last])
        return before, segments(src)[0].stat().st_size

    before, after = arun(prepare())
    expected = [p for b in first for p in b]

    async def check(cut: int) -> None:
        work = tmp_path / f"cut{cut}"
        shutil.copytree(src, work)
        seg = segments(work)[0]
        os.truncate(seg, cut)
        async with LocalLog.open(work, fsync="never") as log:
            report = log.recovery
            assert report.truncated_bytes == cut - before
            assert report.clean == (cut == before)
            if cut > before:
                assert report.truncate_reason
            assert payloads(await read_all(log)) == expected
            assert seg.stat().st_size == before, "the torn tail is gone from disk"
            position = await log.append([b"new"])
            assert payloads(await read_all(log, position)) == [b"new"]
        async with LocalLog.open(work, fsync="never") as log:
            assert log.recovery.clean
            assert payloads(await read_all(log)) == [*expected, b"new"]
        shutil.rmtree(work)

    for cut in range(before, after):
        arun(check(cut))


@pytest.mark.parametrize("garbage", ["zeros", "random", "half-frame"])
def test_garbage_tail_is_cut(tmp_path: Path, garbage: str) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"keep-%d" % i] for i in range(5)])
        seg = segments(tmp_path)[0]
        size = seg.stat().st_size
        tail = {
            "zeros": bytes(4096),  # unwritten blocks after a power loss read as zeros
            "random": os.urandom(777),
            "half-frame": encode_batch([b"x" * 100])[:50],
        }[garbage]
        with seg.open("ab") as f:
            f.write(tail)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.truncated_bytes == len(tail)
            assert payloads(await read_all(log)) == [b"keep-%d" % i for i in range(5)]
            assert seg.stat().st_size == size

    arun(body())


def test_unfinished_batch_is_cut_whole(tmp_path: Path) -> None:
    """A batch whose last frame never made it is invisible and cut: appends are atomic."""

    async def body() -> None:
        await build(tmp_path, [[b"a"]])
        seg = segments(tmp_path)[0]
        frames = encode_batch([b"b1", b"b2", b"b3"])
        partial = frames[: 2 * (FRAME_OVERHEAD + 2)]  # two complete frames, both CONTINUE
        with seg.open("ab") as f:
            f.write(partial)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.truncated_records == 2
            assert payloads(await read_all(log)) == [b"a"]

    arun(body())


def test_recovery_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"a"]])
        with segments(tmp_path)[0].open("ab") as f:
            f.write(b"\x01\x02\x03")
        with caplog.at_level(logging.WARNING, logger="crdtsync.log"):
            log = await LocalLog.open(tmp_path)
            await log.close()
        assert "cut" in caplog.text and "3 bytes" in caplog.text

    arun(body())


def test_stale_tmp_segment_is_removed(tmp_path: Path) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"a"]])
        (tmp_path / "00000000000000000099.seg.tmp").write_bytes(b"half a header")
        async with LocalLog.open(tmp_path) as log:
            assert log.recovery.removed_files == ["00000000000000000099.seg.tmp"]
            assert payloads(await read_all(log)) == [b"a"]
        assert not list(tmp_path.glob("*.tmp"))

    arun(body())


# -- damage -------------------------------------------------------------------------


def test_damage_mid_active_segment_is_quarantined_not_cut(tmp_path: Path) -> None:
    async def body() -> None:
        positions = await build(tmp_path, [[b"rec-%02d" % i * 10] for i in range(10)])
        seg = segments(tmp_path)[0]
        # Flip a payload byte of record 4.
        flip(seg, HEADER_SIZE + positions[4] + FRAME_OVERHEAD + 3)
        (tmp_path / "LOCK").write_bytes(b"")  # no checkpoint: recovery scans it all
        async with LocalLog.open(tmp_path, fsync="never") as log:
            report = log.recovery
            assert report.truncated_bytes == 0
            assert len(report.corrupt) == 1
            assert report.corrupt[0].position == positions[4]
            assert "checksum" in report.corrupt[0].reason
            got = await read_all(log)
            assert payloads(got) == [b"rec-%02d" % i * 10 for i in range(10) if i != 4]
            assert log.stats.corrupt_ranges == 1
            p = await log.append([b"after"])
            assert payloads(await read_all(log, p)) == [b"after"]

    arun(body())


@pytest.mark.parametrize("word", [0x7FFF_FFFF, 0xFFFF_FFFF, 5000, 0])
def test_damaged_length_word(tmp_path: Path, word: int) -> None:
    """A hostile or damaged length never allocates, never crashes, and is resynced past."""

    async def body() -> None:
        positions = await build(tmp_path, [[b"rec-%02d" % i * 10] for i in range(10)])
        seg = segments(tmp_path)[0]
        data = bytearray(seg.read_bytes())
        struct.pack_into("<I", data, HEADER_SIZE + positions[3], word)
        seg.write_bytes(bytes(data))
        async with LocalLog.open(tmp_path, fsync="never", max_record_bytes=1 << 20) as log:
            assert log.recovery.clean  # before the close checkpoint: found by readers
            assert payloads(await read_all(log)) == [b"rec-%02d" % i * 10 for i in range(10) if i != 3]
            assert log.stats.corrupt_ranges == 1
        (tmp_path / "LOCK").write_bytes(b"")  # without a checkpoint, recovery finds it
        async with LocalLog.open(tmp_path, fsync="never", max_record_bytes=1 << 20) as log:
            assert len(log.recovery.corrupt) == 1
            assert log.recovery.truncated_bytes == 0
            assert payloads(await read_all(log)) == [b"rec-%02d" % i * 10 for i in range(10) if i != 3]

    arun(body())


def test_damage_in_sealed_segment_is_skipped_by_readers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        recs = [[b"r%03d" % i * 8] for i in range(40)]
        positions = await build(tmp_path, recs, segment_bytes=512)
        segs = segments(tmp_path)
        assert len(segs) > 3
        base = int(segs[1].stem)
        victim = next(i for i, p in enumerate(positions) if p > base)  # second record of segment 1
        flip(segs[1], HEADER_SIZE + positions[victim] - base + FRAME_OVERHEAD)
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=512) as log:
            assert log.recovery.clean  # sealed segments are not scanned at open
            with caplog.at_level(logging.WARNING, logger="crdtsync.log"):
                got = await read_all(log)
            assert payloads(got) == [r[0] for i, r in enumerate(recs) if i != victim]
            assert log.stats.corrupt_ranges == 1
            assert log.stats.recent[0].position == positions[victim]
            assert "quarantined" in caplog.text
            await read_all(log)  # a second reader: counted once
            assert log.stats.corrupt_ranges == 1
        async with LocalLog.open(tmp_path, fsync="never", strict=True) as log:
            with pytest.raises(CorruptRecord):
                await read_all(log)

    arun(body())


RECS = [b"rec-%02d" % i * 10 for i in range(10)]


def test_good_frame_between_two_damaged_ones_is_delivered(tmp_path: Path) -> None:
    """Resynchronisation accepts the next valid frame even when the one after it is
    damaged too: a lone survivor between two damaged frames is not swallowed."""

    async def body() -> None:
        positions = await build(tmp_path, [[r] for r in RECS])
        seg = segments(tmp_path)[0]
        for victim in (3, 5, 6):
            flip(seg, HEADER_SIZE + positions[victim] + FRAME_OVERHEAD + 2)
        (tmp_path / "LOCK").write_bytes(b"")
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert [(c.position, c.length) for c in log.recovery.corrupt] == [
                (positions[3], positions[4] - positions[3]),
                (positions[5], positions[7] - positions[5]),
            ]
            assert payloads(await read_all(log)) == [r for i, r in enumerate(RECS) if i not in (3, 5, 6)]

    arun(body())


def test_damaged_length_pointing_at_a_later_frame_skips_nothing(tmp_path: Path) -> None:
    """A length word damaged so that it ends exactly at a later frame boundary: the
    frames it would have covered are still found (resync scans from the damage on)."""

    async def body() -> None:
        positions = await build(tmp_path, [[r] for r in RECS])
        seg = segments(tmp_path)[0]
        data = bytearray(seg.read_bytes())
        struct.pack_into("<I", data, HEADER_SIZE + positions[3], positions[7] - positions[3] - FRAME_OVERHEAD)
        seg.write_bytes(bytes(data))
        (tmp_path / "LOCK").write_bytes(b"")
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert [(c.position, c.length) for c in log.recovery.corrupt] == [(positions[3], positions[4] - positions[3])]
            assert payloads(await read_all(log)) == [r for i, r in enumerate(RECS) if i != 3]

    arun(body())


def test_damaged_batch_delivers_its_undamaged_records(tmp_path: Path) -> None:
    """The documented choice: damage inside a completed batch costs only the damaged
    frame; the batch's other records are delivered and the range names the lost one."""

    async def body() -> None:
        batch = [b"first" * 5, b"second" * 5, b"third" * 5]
        p0, p1, p2 = await build(tmp_path, [[b"before"], batch, [b"after"]])
        middle = p1 + FRAME_OVERHEAD + len(batch[0])
        flip(segments(tmp_path)[0], HEADER_SIZE + middle + FRAME_OVERHEAD + 1)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert payloads(await read_all(log)) == [b"before", batch[0], batch[2], b"after"]
            (rng,) = log.stats.recent
            assert (rng.position, rng.length) == (middle, FRAME_OVERHEAD + len(batch[1]))

    arun(body())


def test_damage_at_the_end_of_the_active_segment_before_the_checkpoint(tmp_path: Path) -> None:
    """Bytes before the clean-close checkpoint were complete: damage in the last batch
    there is damage, not a write in progress. Readers report it and deliver the rest of
    that batch, and appends go after it."""

    async def body() -> None:
        batch = [b"x" * 30, b"y" * 30]
        _, p = await build(tmp_path, [[b"a"], batch])
        last = p + FRAME_OVERHEAD + len(batch[0])
        flip(segments(tmp_path)[0], HEADER_SIZE + last + FRAME_OVERHEAD + 4)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.clean
            assert payloads(await read_all(log)) == [b"a", b"x" * 30]
            assert [(c.position, c.length) for c in log.stats.recent] == [(last, FRAME_OVERHEAD + 30)]
            q = await log.append([b"b"])
            assert q == last + FRAME_OVERHEAD + 30
            assert payloads(await read_all(log)) == [b"a", b"x" * 30, b"b"]

    arun(body())


def test_damage_just_before_a_cut_torn_tail(tmp_path: Path) -> None:
    """Recovery cuts a torn tail right after damage it reported: the cut certifies what
    lies before it, so readers deliver the frames before the damage at once."""

    async def body() -> None:
        await build(tmp_path, [[b"a"], [b"b" * 20, b"c" * 20]])
        seg = segments(tmp_path)[0]
        c_frame = seg.stat().st_size - FRAME_OVERHEAD - 20
        flip(seg, c_frame + FRAME_OVERHEAD + 3)  # c is damaged
        torn = encode_batch([b"d" * 20, b"e" * 20])[:-5]  # d is valid, so c is damage, not tail
        with seg.open("ab") as f:
            f.write(torn)
        (tmp_path / "LOCK").write_bytes(b"")
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.truncated_bytes == len(torn)
            assert len(log.recovery.corrupt) == 1
            assert payloads(await read_all(log)) == [b"a", b"b" * 20]

    arun(body())


def test_resync_through_garbage_bounds_its_checksum_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanning a MiB of random garbage (default 16 MiB max_record_bytes) computes CRCs
    over a few times the scanned bytes, not over every plausible-looking huge frame."""
    import random

    async def body() -> None:
        await build(tmp_path, [[b"before"]])
        seg = segments(tmp_path)[0]
        garbage = random.Random(7).randbytes(1 << 20)
        with seg.open("ab") as f:
            f.write(garbage + encode_batch([b"after"]))
        crc_bytes = 0
        real = local_mod.crc32c

        def counting(data: bytes | memoryview, value: int = 0) -> int:
            nonlocal crc_bytes
            crc_bytes += len(data)
            return real(data, value)

        monkeypatch.setattr(local_mod, "crc32c", counting)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert payloads(await read_all(log)) == [b"before", b"after"]
            assert log.stats.corrupt_ranges == 1
        assert crc_bytes < 8 * len(garbage), crc_bytes

    arun(body())


def test_damaged_tail_of_sealed_segment(tmp_path: Path) -> None:
    async def body() -> None:
        recs = [[b"r%03d" % i * 8] for i in range(40)]
        await build(tmp_path, recs, segment_bytes=512)
        segs = segments(tmp_path)
        size = segs[0].stat().st_size
        os.truncate(segs[0], size - 5)  # a torn end in a segment that already has a successor
        async with LocalLog.open(tmp_path, fsync="never") as log:
            got = payloads(await read_all(log))
            assert len(got) == len(recs) - 1
            assert log.stats.corrupt_ranges == 1

    arun(body())


def test_bad_header_in_sealed_segment_quarantines_it_whole(tmp_path: Path) -> None:
    async def body() -> None:
        recs = [[b"r%03d" % i * 8] for i in range(40)]
        positions = await build(tmp_path, recs, segment_bytes=512)
        segs = segments(tmp_path)
        flip(segs[1], 10)  # version field
        lo, hi = int(segs[1].stem), int(segs[2].stem)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.bad_segments == [segs[1].name]
            got = await read_all(log)
            assert payloads(got) == [r[0] for r, p in zip(recs, positions) if not lo <= p < hi]
            assert log.stats.corrupt_ranges == 1

    arun(body())


def test_bad_header_in_last_segment_starts_a_new_one(tmp_path: Path) -> None:
    async def body() -> None:
        recs = [[b"r%03d" % i * 8] for i in range(40)]
        positions = await build(tmp_path, recs, segment_bytes=512)
        segs = segments(tmp_path)
        last_base = int(segs[-1].stem)
        flip(segs[-1], 0)
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.bad_segments == [segs[-1].name]
            p = await log.append([b"fresh"])
            assert p > positions[-1], "no position of the damaged segment is reused"
            got = await read_all(log)
            assert payloads(got) == [r[0] for r, q in zip(recs, positions) if q < last_base] + [b"fresh"]

    arun(body())


def test_header_only_last_segment_is_replaced(tmp_path: Path) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"r%03d" % i * 8] for i in range(40)], segment_bytes=512)
        segs = segments(tmp_path)
        nxt = tmp_path / f"{int(segs[-1].stem) + segs[-1].stat().st_size - HEADER_SIZE:020d}.seg"
        nxt.write_bytes(b"\0" * 20)  # a roll whose header never reached the disk
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.removed_files == [nxt.name]
            await log.append([b"x"])
            assert payloads(await read_all(log))[-1] == b"x"

    arun(body())


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"a"]])
        seg = segments(tmp_path)[0]
        data = bytearray(seg.read_bytes())
        struct.pack_into("<I", data, 8, 2)
        struct.pack_into("<I", data, 28, local_mod.crc32c(bytes(data[:28])))
        seg.write_bytes(bytes(data))
        with pytest.raises(UnsupportedVersion):
            await LocalLog.open(tmp_path)

    arun(body())


def test_segment_from_another_log_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        await build(tmp_path / "a", [[b"a" * 600]], segment_bytes=512)
        await build(tmp_path / "b", [[b"b" * 600], [b"c"]], segment_bytes=512)
        foreign = segments(tmp_path / "b")[-1]
        shutil.copy(foreign, tmp_path / "a" / foreign.name)
        with pytest.raises(CorruptRecord, match="another log"):
            await LocalLog.open(tmp_path / "a")

    arun(body())


# -- reading ------------------------------------------------------------------------


def test_incomplete_batch_is_invisible_until_finished(tmp_path: Path) -> None:
    """A reader racing a writer never sees part of a batch (simulated write in progress)."""

    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never") as log:
            await log.append([b"a"])
            seg = segments(tmp_path)[0]
            frames = encode_batch([b"b1", b"b2"])
            with seg.open("ab") as f:
                f.write(frames[:-3])
            assert payloads(await read_all(log)) == [b"a"]
            with seg.open("ab") as f:
                f.write(frames[-3:])
            assert payloads(await read_all(log)) == [b"a", b"b1", b"b2"]

    arun(body())


def test_reader_skips_damaged_length_written_after_open(tmp_path: Path) -> None:
    """Damage in the active segment that looks like a write in progress (a length running
    past the end) is resolved by a reader under the shared lock: it skips past it."""

    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never") as log:
            positions = [await log.append([b"rec-%d" % i * 5]) for i in range(6)]
            seg = segments(tmp_path)[0]
            data = bytearray(seg.read_bytes())
            struct.pack_into("<I", data, HEADER_SIZE + positions[2], 100_000)
            seg.write_bytes(bytes(data))
            assert payloads(await read_all(log)) == [b"rec-%d" % i * 5 for i in range(6) if i != 2]

    arun(body())


def test_read_from_any_offset(tmp_path: Path) -> None:
    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=300) as log:
            for i in range(30):
                await log.append([bytes([65 + i % 26]) * (5 + i * 3)])
            entries = await read_all(log)
            end = await log.end()
            for start in range(end + 2):
                assert await read_all(log, start) == [e for e in entries if e.position >= start]

    arun(body())


def test_read_payload_that_looks_like_a_frame(tmp_path: Path) -> None:
    """A payload that embeds a valid frame does not confuse a read from a non-boundary
    position unless that position points into it (documented limit)."""

    async def body() -> None:
        inner = encode_batch([b"fake"])
        async with LocalLog.open(tmp_path, fsync="never") as log:
            p = await log.append([b"prefix" + inner])
            q = await log.append([b"real"])
            assert payloads(await read_all(log, p + 1)) == [b"real"]
            assert [e.position for e in await read_all(log, p)] == [p, q]

    arun(body())


def test_follow_across_rolls_and_instances(tmp_path: Path) -> None:
    """A follower sees appends made through another LocalLog instance (polling), across
    segment rolls."""

    async def body() -> None:
        reader_log = await LocalLog.open(tmp_path, fsync="never", segment_bytes=400, poll_interval=0.005)
        writer_log = await LocalLog.open(tmp_path, fsync="never", segment_bytes=400)
        want = [b"m%03d" % i * 6 for i in range(60)]
        seen: list[bytes] = []

        async def follow() -> None:
            async for e in reader_log.read(0, follow=True):
                seen.append(e.payload)
                if len(seen) == len(want):
                    return

        task = asyncio.create_task(follow())
        for w in want:
            await writer_log.append([w])
            if len(seen) % 7 == 0:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(task, 20)
        assert seen == want
        assert len(segments(tmp_path)) > 3
        await writer_log.close()
        await reader_log.close()

    arun(body())


def test_two_instances_in_one_process_interleave(tmp_path: Path) -> None:
    async def body() -> None:
        a = await LocalLog.open(tmp_path, fsync="never", segment_bytes=600)
        b = await LocalLog.open(tmp_path, fsync="never", segment_bytes=600)

        async def write(log: LocalLog, tag: bytes) -> list[int]:
            out = []
            for i in range(50):
                out.append(await log.append([tag + b"%d" % i, tag + b"%d'" % i]))
                await asyncio.sleep(0)
            return out

        pa, pb = await asyncio.gather(write(a, b"A"), write(b, b"B"))
        assert not set(pa) & set(pb)
        entries = await read_all(a)
        assert len(entries) == 200
        by_pos = {e.position: e.payload for e in entries}
        assert all(by_pos[p] == b"A%d" % i for i, p in enumerate(pa))
        assert all(by_pos[p] == b"B%d" % i for i, p in enumerate(pb))
        assert await a.end() == await b.end()
        await a.close()
        await b.close()

    arun(body())


# -- rolling and truncation ------------------------------------------------------------


def test_segments_roll_at_the_configured_size(tmp_path: Path) -> None:
    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=1000) as log:
            for i in range(100):
                await log.append([b"%03d" % i * 10])
            big = await log.append([b"B" * 3000])  # larger than a segment: alone in one
            await log.append([b"after"])
        segs = segments(tmp_path)
        bases = [int(s.stem) for s in segs]
        for s, nxt in zip(segs, bases[1:]):
            assert int(s.stem) + s.stat().st_size - HEADER_SIZE == nxt, "bases are contiguous"
        sizes = [s.stat().st_size for s in segs]
        assert all(size <= 1000 for size in sizes if size < 3000)
        assert big in bases and big + 3000 + FRAME_OVERHEAD in bases

    arun(body())


def test_truncate_before_deletes_whole_segments_only(tmp_path: Path) -> None:
    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never", segment_bytes=500) as log:
            positions = [await log.append([b"%03d" % i * 8]) for i in range(60)]
            bases = [int(s.stem) for s in segments(tmp_path)]
            await log.truncate_before(bases[3])
            assert [int(s.stem) for s in segments(tmp_path)] == bases[3:]
            assert await log.start() == bases[3]
            got = await read_all(log)
            assert [e.position for e in got] == [p for p in positions if p >= bases[3]]
            await log.truncate_before(bases[4] + 1)  # inside segment 4: segment 4 stays
            assert int(segments(tmp_path)[0].stem) == bases[4]
            await log.truncate_before(10**12)  # never the active segment
            assert [int(s.stem) for s in segments(tmp_path)] == [bases[-1]]
            p = await log.append([b"still works"])
            assert payloads(await read_all(log, p)) == [b"still works"]
            assert payloads(await read_all(log, 0))[-1] == b"still works"

    arun(body())


def test_truncate_seen_by_another_instance(tmp_path: Path) -> None:
    async def body() -> None:
        a = await LocalLog.open(tmp_path, fsync="never", segment_bytes=500)
        b = await LocalLog.open(tmp_path, fsync="never", segment_bytes=500)
        for i in range(60):
            await a.append([b"%03d" % i * 8])
        bases = [int(s.stem) for s in segments(tmp_path)]
        await b.truncate_before(bases[-1])
        assert next(e.position for e in await read_all(a)) == bases[-1]
        await a.append([b"x"])
        await b.append([b"y"])
        assert payloads(await read_all(a))[-2:] == [b"x", b"y"]
        await a.close()
        await b.close()

    arun(body())


# -- fsync policies ------------------------------------------------------------------


class FsyncSpy:
    """Records, for every fsync that completed, the file size it covered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.covered: dict[int, int] = {}  # inode -> largest size covered by a finished fsync
        self.calls = 0
        real = os.fsync

        def spy(fd: int) -> None:
            st = os.fstat(fd)
            real(fd)
            self.calls += 1
            self.covered[st.st_ino] = max(self.covered.get(st.st_ino, 0), st.st_size)

        monkeypatch.setattr(os, "fsync", spy)

    def durable(self, seg: Path, file_offset_end: int) -> bool:
        return self.covered.get(seg.stat().st_ino, 0) >= file_offset_end


@pytest.mark.parametrize("policy", ["always", "group"])
def test_append_returns_after_an_fsync_covering_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    spy = FsyncSpy(monkeypatch)

    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync=policy) as log:
            seg = segments(tmp_path)[0]

            async def one(i: int) -> None:
                payload = b"%04d" % i * 5
                p = await log.append([payload])
                assert spy.durable(seg, HEADER_SIZE + p + FRAME_OVERHEAD + len(payload))

            calls = spy.calls
            for i in range(5):
                await one(i)
            assert spy.calls - calls >= 5  # sequential appends: one fsync each
            calls = spy.calls
            await asyncio.gather(*(one(i) for i in range(100)))
            if policy == "group":
                assert spy.calls - calls < 100, "concurrent appends share fsyncs"
            else:
                assert spy.calls - calls >= 100, "always: one fsync per append"

    arun(body())


def test_never_policy_does_not_fsync_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never") as log:
            spy = FsyncSpy(monkeypatch)
            for _i in range(20):
                await log.append([b"x"])
            assert spy.calls == 0
            await log.sync()
            assert spy.calls == 1

    arun(body())


def test_group_commit_window(tmp_path: Path) -> None:
    async def body() -> None:
        async with LocalLog.open(tmp_path, commit_window=0.002) as log:
            ps = await asyncio.gather(*(log.append([b"%d" % i]) for i in range(50)))
            assert len(set(ps)) == 50
            assert len(await read_all(log)) == 50

    arun(body())


def test_failed_fsync_poisons_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        log = await LocalLog.open(tmp_path)
        await log.append([b"ok"])

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "simulated I/O error")

        monkeypatch.setattr(os, "fsync", broken)
        with pytest.raises(OSError):
            await log.append([b"lost?"])
        with pytest.raises(LogClosed, match="failed"):
            await log.append([b"refused"])
        monkeypatch.undo()
        await log.close()
        async with LocalLog.open(tmp_path) as again:  # reopening recovers
            assert payloads(await read_all(again))[0] == b"ok"

    arun(body())


def test_failed_write_appends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (ENOSPC) leaves no part of the batch behind."""

    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never") as log:
            await log.append([b"before"])
            real = os.pwrite
            calls = {"n": 0}

            def half(fd: int, data: bytes | memoryview, offset: int) -> int:
                calls["n"] += 1
                if calls["n"] == 1:
                    return real(fd, bytes(data)[: len(data) // 2], offset)
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(os, "pwrite", half)
            with pytest.raises(OSError):
                await log.append([b"b1" * 20, b"b2" * 20])
            monkeypatch.undo()
            assert payloads(await read_all(log)) == [b"before"]
            await log.append([b"after"])
            assert payloads(await read_all(log)) == [b"before", b"after"]

    arun(body())


def test_close_flushes_pending_group_commits(tmp_path: Path) -> None:
    async def body() -> None:
        log = await LocalLog.open(tmp_path)
        tasks = [asyncio.create_task(log.append([b"%d" % i])) for i in range(20)]
        await asyncio.sleep(0)
        await log.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        ok = [r for r in results if isinstance(r, int)]
        assert all(isinstance(r, (int, LogClosed)) for r in results)
        async with LocalLog.open(tmp_path) as again:
            assert len(await read_all(again)) >= len(ok)

    arun(body())


def test_catching_up_with_a_lot_written_elsewhere(tmp_path: Path) -> None:
    """An instance that has not looked for a while validates what others wrote (off the
    event loop thread when it is large) and appends after it."""

    async def body() -> None:
        a = await LocalLog.open(tmp_path, fsync="never")
        b = await LocalLog.open(tmp_path, fsync="never")
        await a.append([b"first"])
        for i in range(300):
            await b.append([b"%04d" % i * 250])  # ~300 KiB behind a's back
        end = await a.end()
        assert end == await b.end()
        p = await a.append([b"last"])
        assert p == end
        got = payloads(await read_all(b))
        assert got[0] == b"first" and got[-1] == b"last" and len(got) == 302
        await a.close()
        await b.close()

    arun(body())


def test_cancelled_readers_release_their_files(tmp_path: Path) -> None:
    async def body() -> None:
        async with LocalLog.open(tmp_path, fsync="never") as log:
            for _ in range(60):
                await log.append([b"x" * 10_000])  # large enough for worker-thread reads
            fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0

            async def consume() -> None:
                async for _ in log.read(0):
                    await asyncio.sleep(0)

            for delay in (0.0, 0.0005, 0.002, 0.01):
                task = asyncio.create_task(consume())
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            await asyncio.sleep(0.1)  # let worker threads finish and close
            assert log.stats.corrupt_ranges == 0
            if fds_before:
                assert len(os.listdir("/proc/self/fd")) <= fds_before
            assert len(await read_all(log)) == 60

    arun(body())


def test_clean_close_checkpoint_makes_reopen_cheap(tmp_path: Path) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"%04d" % i * 20] for i in range(500)])
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.scanned_bytes == 0
            await log.append([b"more"])
            # A process dies after appending more, leaving a torn tail past the checkpoint.
            with segments(tmp_path)[0].open("ab") as f:
                f.write(encode_batch([b"torn" * 50])[:30])
            log._closed = True  # simulate the crash: no close, no new checkpoint
            log._close_fds()
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert 0 < log.recovery.scanned_bytes < 200
            assert log.recovery.truncated_bytes == 30
            got = payloads(await read_all(log))
            assert len(got) == 501 and got[-1] == b"more"

    arun(body())


def test_stale_checkpoint_past_a_cut_is_not_trusted(tmp_path: Path) -> None:
    async def body() -> None:
        await build(tmp_path, [[b"%04d" % i * 20] for i in range(50)])  # checkpoint at the end
        seg = segments(tmp_path)[0]
        size = seg.stat().st_size
        os.truncate(seg, size - 10)  # the last record torn after the checkpoint was written
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.truncated_bytes > 0
            for i in range(5):
                await log.append([b"new-%d" % i * 30])  # grows past the old checkpoint
            log._closed = True
            log._close_fds()
        async with LocalLog.open(tmp_path, fsync="never") as log:
            assert log.recovery.truncated_bytes == 0 and not log.recovery.corrupt
            got = payloads(await read_all(log))
            assert len(got) == 54 and got[-1] == b"new-4" * 30

    arun(body())
