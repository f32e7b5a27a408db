"""LocalLog: a durable log in a directory of segment files (the embedded default).

LocalLog is the log a replica uses when there is no server: on a laptop, in each worker
of a web service, and on an edge box as the durable outbox that a forwarder ships to
Kafka. Several OS processes on one host may append to and tail the same directory.

Positions are byte offsets into the stream of record frames (segment headers excluded),
so they are strictly increasing but not contiguous.

On-disk format (version 1)
==========================

All integers are little-endian. CRC-32C is the Castagnoli CRC (see
:mod:`crdtsync._crc32c`).

Directory::

    LOCK                    lock file (fcntl.flock), 28 bytes: u64 "generation" (bumped
                            whenever the set of segments changes); u64 checkpoint base,
                            u64 checkpoint end, u32 CRC-32C of those 16 bytes (see
                            Recovery)
    <base:020d>.seg         a segment; <base> is the position of its first record
    <base:020d>.seg.tmp     a segment being created; deleted by the next open

Segment header (32 bytes, at offset 0 of every segment)::

    0   8  magic            b"CRDTSLOG"
    8   4  format version   1
    12  8  epoch            random u64 chosen when the directory was created; every
                            segment of one log carries the same epoch
    20  8  base position    equal to <base> in the file name
    28  4  CRC-32C of bytes 0..28

Record frame (repeated after the header until the end of the file)::

    0   4  word             bits 0..30: payload length L; bit 31: CONTINUE, set when
                            the next frame belongs to the same appended batch
    4   4  CRC-32C          over the 4 word bytes followed by the L payload bytes
    8   L  payload

The position of a frame at file offset ``o`` of the segment with base ``b`` is
``b + o - 32``. A new segment is started ("rolled") when the next batch would grow the
active one past ``segment_bytes`` (a larger batch gets a segment of its own); its base
is the previous segment's end at that moment, so positions never go back. They may
skip (damage cut from the end of a sealed segment). ``truncate_before`` deletes whole
segments, never the active (last) one. Rolling and deleting bump the generation in
``LOCK`` (rolling bumps it before and after creating the file), which is how other
processes notice.

Validity
--------

A frame is *valid* when ``L <= max_record_bytes`` (and ``L < 2**31``), the frame lies
inside the file, and the CRC matches. Covering the length word with the CRC means a
damaged length is detected like a damaged payload, and a frame is self-checking, which
is what lets a reader find the next frame after damage. A *batch* is a run of valid
frames whose last frame has CONTINUE clear; every earlier frame has it set. A record is
visible to readers only as part of a complete batch (or of a damaged one, below), which
is how an append of several records is all-or-nothing across crashes. A batch never
spans two segments.

A segment header is valid when the magic, the CRC and the base match. A header with a
newer format version raises :class:`~crdtsync.errors.UnsupportedVersion`; a valid
header whose epoch differs from the log's refuses the open (a segment copied in from
another log).

Damage and resynchronisation
----------------------------

When a reader meets a frame that is not valid at offset ``X``, it *resynchronises*: it
looks for the first offset ``Y > X`` where a valid frame starts, trying every offset,
so no valid frame is skipped whatever a damaged length word said. The bytes from ``X``
to ``Y`` are *quarantined*: skipped, counted in :attr:`LocalLog.stats` and logged as a
:class:`CorruptRange`. Every valid frame before and after them is delivered. With
``strict=True`` readers raise :class:`~crdtsync.errors.CorruptRecord` instead.

Damage costs exactly the damaged frames, also inside a batch. A multi-record append is
all-or-nothing against crashes (an append that did not finish is never visible), not
against damage to a completed one: a reader cannot tell where a damaged batch ends (the
CONTINUE bit of the damaged frame is as unreliable as the rest of it), so dropping the
batch whole would risk dropping the next, undamaged one too. So the records of a
damaged batch that check out are delivered, and the CorruptRange says where the lost
ones were. (crdtsync's own records are independent event batches; a consumer whose
records only make sense together must check that itself.) Under ``fsync="never"`` a
power loss can also leave an unfinished batch inside the file; its complete frames are
then delivered the same way.

The one place where an invalid frame need not be damage is the end of the data in the
active segment: a frame running past the end of the file may be a write in progress,
and a torn write can leave any bytes. When no valid frame follows ``X`` there, the
bytes from the start of the batch containing ``X`` to the end of the file are the
segment's *tail*. Readers wait at it; under the lock (no append in progress) it is a
*torn tail*, which recovery and the next append cut, with the complete frames of its
unfinished batch. Except before the checkpoint (below): bytes there were complete
batches at a clean close or when a tail was cut, so an invalid frame there is damage,
quarantined up to the checkpoint at the latest. A sealed segment (one with a
successor) always ends at a batch boundary, because tails are cut before a segment
rolls: an invalid frame there is damage, quarantined up to the next valid frame or the
end of the file. Only a batch whose last frame is missing at the very end of a sealed
segment (all of its frames valid: a torn write, never a bit flip) is quarantined whole.

*False frames.* A resynchronisation candidate is accepted on its CRC alone. Only offsets
whose length word fits ``max_record_bytes`` and the file are candidates (for random
bytes and the default limit, about 1 offset in 128), and a random candidate passes
the CRC-32C with probability 2**-32: about one false frame per 2**39 bytes (512 GiB) of
garbage scanned, and far fewer with smaller segments or limits. A payload that itself
contains a complete valid frame can mislead a resync that starts inside it; this needs
damage to the frame holding such a payload, and the fake record still has to pass the
event codec above.

*Cost.* A resync reads the rest of the segment in 1 MiB windows; a regex on the high
bytes of the length word finds the candidates (in C) and only those are checked in
Python. A candidate longer than 64 KiB has its CRC computed only when it is followed by
the end of the file or by a length word that fits ``max_record_bytes``, so the CRC work
stays within a few times the bytes scanned even for a segment of random garbage. The
price: a frame longer than 64 KiB that directly follows damage and is itself directly
followed by a length word damaged to an impossible value is quarantined with the damage.

Recovery (on open, and before every append)
-------------------------------------------

``LocalLog.open`` takes the lock and (1) deletes ``*.seg.tmp``; (2) reads every
segment header; the last segment, if its header is invalid, is deleted when it holds no
more than a header, otherwise left in place (readers quarantine it) and a new segment
is started after it, so no position is reused; (3) scans the active segment from its
first frame (or from the checkpoint, below): damage followed by valid frames is
quarantined and reported, an invalid or incomplete tail (including the complete frames
of a batch whose last frame is missing) is truncated with ``ftruncate``. What was cut or
quarantined is returned as :attr:`LocalLog.recovery` (a :class:`RecoveryReport`) and
logged on the ``crdtsync.log`` logger. Sealed segments are not scanned at open (that would make an
open cost the size of the log); readers check them as they go.

The *checkpoint* in ``LOCK`` is written by ``close()``: "the active segment with base
B was valid up to file offset E". If it names the active segment, its CRC matches and
``E`` is not past the end of the file, the scan starts at ``E``, so reopening after a
clean close costs nothing however large the active segment is. Damage before ``E`` is
then found by readers, as in sealed segments. Cutting a tail sets the checkpoint to the
cut (everything before it is complete batches or reported damage), so a checkpoint never
points into rewritten bytes.

Every append takes the lock, re-reads the generation (another process may have rolled
or deleted segments), checks the size of the active segment, and validates any bytes
other processes added since it last looked; a torn tail left by a process that died
mid-write is cut there, so the next batch never lands behind garbage.

Durability (``fsync``)
----------------------

``always``: each append is written and fsynced before it returns, one fsync per append.
``group`` (default): append returns after an fsync that covers it; appends that arrive
while an fsync runs share the next one. ``never``: no fsync; the page cache decides.
All three survive the process being killed (the data is in the kernel); ``always`` and
``group`` also survive power loss and kernel crashes for every acknowledged append.
Rolling a segment fsyncs the new segment and the directory unless the policy is
``never``. Readers see a record as soon as it is written, which can be before it is
durable; call :meth:`LocalLog.sync` before persisting a position elsewhere.

Storage errors
--------------

A write the filesystem refuses raises :class:`~crdtsync.errors.StorageFull` (``ENOSPC``,
``EDQUOT``) or :class:`~crdtsync.errors.StorageUnavailable` (``EROFS``, ``EACCES``,
``EPERM``, ``EIO``) from ``open``, ``append``, ``sync`` and ``truncate_before``; both are
also ``OSError`` with the original errno, and each is counted in
:attr:`LogStats.storage_errors`. A failed append leaves nothing behind (a partly written
batch is cut at once, a segment that could not be created is removed) and the log
stays usable; only a failed fsync poisons it (above). ``close`` does not raise.

Locking
-------

``fcntl.flock`` on ``LOCK`` serialises appends, rolls, truncation and tail cuts across
processes (local filesystems only; not NFS). Readers take no lock, except a short
shared one to decide whether an incomplete frame at the end of the active segment is a
write in progress or a torn tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import secrets
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar

from .._crc32c import crc32c
from .._storage import raise_typed, remove_if_present, typed_storage_errors
from ..errors import CorruptRecord, StorageError, UnsupportedVersion
from ._protocol import LogClosed, LogEntry, Opening, Waiters, check_records

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: `import crdtsync` must still work
    _POSIX = False
else:
    _POSIX = hasattr(os, "pread")

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FORMAT_VERSION", "CorruptRange", "FsyncPolicy", "LocalLog", "LogStats", "RecoveryReport"]

logger = logging.getLogger("crdtsync.log")

FsyncPolicy = Literal["always", "group", "never"]
_POLICIES = ("always", "group", "never")

MAGIC = b"CRDTSLOG"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQQ")  # magic, version, epoch, base; then a u32 CRC
HEADER_SIZE = _HEADER.size + 4  # 32
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FRAME = struct.Struct("<II")
FRAME_OVERHEAD = _FRAME.size  # 8
_CONTINUE = 0x8000_0000
_LEN_MASK = 0x7FFF_FFFF

_SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
_LOCK_NAME = "LOCK"

_CHUNK = 1 << 20  # bytes read per pread while scanning
_READ_BUDGET = 1 << 20  # bytes a reader parses per step before yielding entries
_INLINE_BYTES = 128 * 1024  # smaller reads and writes run on the event loop thread
_RECENT_CORRUPTION = 100
_APPEND_FAILED = ("Appending to the LocalLog", "Nothing was appended (a partial write is cut).")


class _NeedThread(Exception):
    """Raised on the loop thread when catching up would mean scanning a lot of bytes."""

_T = TypeVar("_T")


# -- reports --------------------------------------------------------------------------


@dataclass(frozen=True)
class CorruptRange:
    """A damaged stretch of a segment that readers skip (or recovery cut)."""

    segment: str
    """File name of the segment."""
    position: int
    """Position of the first skipped byte: the first damaged frame, or the start of an
    unfinished batch (a torn write at the end of a sealed segment, an invalid header)."""
    length: int
    """Bytes skipped."""
    reason: str

    def __str__(self) -> str:
        return f"{self.segment}: {self.length} bytes at position {self.position} ({self.reason})"


@dataclass
class RecoveryReport:
    """What :meth:`LocalLog.open` found and did. ``clean`` when it changed nothing."""

    directory: str
    created: bool = False
    segments: int = 0
    active_segment: str = ""
    scanned_bytes: int = 0
    """Bytes of record frames checked in the active segment."""
    scanned_records: int = 0
    """Records (in complete batches) found in the active segment."""
    truncated_bytes: int = 0
    """Bytes cut from the end of the active segment (a torn or corrupt tail)."""
    truncated_records: int = 0
    """Complete, valid frames cut with the tail because their batch was unfinished."""
    truncate_reason: str = ""
    corrupt: list[CorruptRange] = field(default_factory=list)
    """Damage inside the active segment, quarantined (not cut)."""
    removed_files: list[str] = field(default_factory=list)
    bad_segments: list[str] = field(default_factory=list)
    """Segments whose header is invalid; readers quarantine them whole."""
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.truncated_bytes or self.corrupt or self.removed_files or self.bad_segments)

    def summary(self) -> str:
        if self.clean:
            return f"LocalLog {self.directory}: clean ({self.scanned_records} records in the active segment)"
        parts = []
        if self.truncated_bytes:
            frames = f"; {self.truncated_records} complete frames of an unfinished batch" if self.truncated_records else ""
            parts.append(
                f"cut {self.truncated_bytes} bytes from the end of {self.active_segment} "
                f"({self.truncate_reason}{frames})"
            )
        if self.corrupt:
            total = sum(c.length for c in self.corrupt)
            parts.append(f"quarantined {len(self.corrupt)} damaged ranges ({total} bytes)")
        if self.bad_segments:
            parts.append(f"segments with an invalid header: {', '.join(self.bad_segments)}")
        if self.removed_files:
            parts.append(f"removed {', '.join(self.removed_files)}")
        return f"LocalLog {self.directory} recovered: " + "; ".join(parts)


@dataclass
class LogStats:
    """Damage this LocalLog instance has seen since it was opened (readers included)."""

    corrupt_ranges: int = 0
    corrupt_bytes: int = 0
    truncated_bytes: int = 0
    """Bytes of torn tails cut after open (left by another process that died mid-write)."""
    storage_errors: int = 0
    """Writes the filesystem refused (full, read-only, ...), raised as
    :class:`~crdtsync.errors.StorageFull` / :class:`~crdtsync.errors.StorageUnavailable`."""
    recent: deque[CorruptRange] = field(default_factory=lambda: deque(maxlen=_RECENT_CORRUPTION))


# -- format helpers ------------------------------------------------------------------


def _segment_name(base: int) -> str:
    return f"{base:020d}.seg"


def _pack_header(epoch: int, base: int) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, epoch, base)
    return head + _U32.pack(crc32c(head))


def _parse_header(data: bytes, base: int) -> tuple[int | None, str]:
    """Return ``(epoch, "")`` for a valid header, ``(None, reason)`` otherwise.

    Raises :class:`UnsupportedVersion` for a valid header of a newer format.
    """
    if len(data) < HEADER_SIZE:
        return None, f"header is {len(data)} bytes, expected {HEADER_SIZE}"
    magic, version, epoch, hbase = _HEADER.unpack_from(data)
    (crc,) = _U32.unpack_from(data, _HEADER.size)
    if magic != MAGIC:
        return None, "bad magic (not a crdtsync segment)"
    if crc != crc32c(data[: _HEADER.size]):
        return None, "header checksum mismatch"
    if version > FORMAT_VERSION:
        raise UnsupportedVersion(
            f"segment {_segment_name(base)} has LocalLog format version {version}; this build reads "
            f"up to {FORMAT_VERSION}: upgrade crdtsync on this host"
        )
    if version < 1:
        return None, f"bad format version {version}"
    if hbase != base:
        return None, f"header says base {hbase}, file name says {base}"
    return int(epoch), ""


# CRC-32C of the 4 bytes of a length word, by word: record sizes repeat, and this saves
# a call per record on the hot paths. Bounded: cleared when it grows large.
_WORD_CRC: dict[int, int] = {}


def _word_crc(word: int) -> int:
    if len(_WORD_CRC) > 65536:
        _WORD_CRC.clear()
    crc = _WORD_CRC[word] = crc32c(_U32.pack(word))
    return crc


def encode_batch(records: Sequence[bytes]) -> bytes:
    """Frame a batch of records (CONTINUE on all but the last)."""
    pack = _FRAME.pack
    word_crc = _WORD_CRC.get
    if len(records) == 1:
        (payload,) = records
        word = len(payload)
        wc = word_crc(word)
        if wc is None:
            wc = _word_crc(word)
        return pack(word, crc32c(payload, wc)) + payload
    parts: list[bytes] = []
    last = len(records) - 1
    for i, payload in enumerate(records):
        word = len(payload) | (_CONTINUE if i < last else 0)
        wc = word_crc(word)
        if wc is None:
            wc = _word_crc(word)
        parts.append(pack(word, crc32c(payload, wc)))
        parts.append(payload)
    return b"".join(parts)


def _list_bases(directory: str) -> list[int]:
    bases = []
    for name in os.listdir(directory):
        m = _SEGMENT_RE.match(name)
        if m:
            bases.append(int(m.group(1)))
    bases.sort()
    return bases


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CHECKPOINT = struct.Struct("<QQ")


def _read_checkpoint(fd: int) -> tuple[int, int] | None:
    data = os.pread(fd, _CHECKPOINT.size + 4, 8)
    if len(data) < _CHECKPOINT.size + 4:
        return None
    if _U32.unpack_from(data, _CHECKPOINT.size)[0] != crc32c(data[: _CHECKPOINT.size]):
        return None
    base, end = _CHECKPOINT.unpack_from(data)
    return int(base), int(end)


def _write_checkpoint(fd: int, base: int, end: int) -> None:
    body = _CHECKPOINT.pack(base, end)
    os.pwrite(fd, body + _U32.pack(crc32c(body)), 8)


def _read_gen(fd: int) -> int:
    data = os.pread(fd, 8, 0)
    return _U64.unpack(data)[0] if len(data) == 8 else 0


# -- scanning ------------------------------------------------------------------------

_OK, _BAD, _INCOMPLETE = 0, 1, 2


def _check_frame(fd: int, off: int, size: int, max_record: int, win: bytes, win_off: int) -> tuple[int, int]:
    """Classify the frame at file offset ``off``: ``(_OK|_BAD|_INCOMPLETE, next offset)``."""
    i = off - win_off
    if 0 <= i and i + FRAME_OVERHEAD <= len(win):
        word, crc = _FRAME.unpack_from(win, i)
    else:
        if off + FRAME_OVERHEAD > size:
            return _INCOMPLETE, 0
        head = os.pread(fd, FRAME_OVERHEAD, off)
        if len(head) < FRAME_OVERHEAD:
            return _INCOMPLETE, 0
        word, crc = _FRAME.unpack(head)
        win, win_off, i = head, off, 0
    n = word & _LEN_MASK
    if n > max_record:
        return _BAD, 0
    nxt = off + FRAME_OVERHEAD + n
    if nxt > size:
        return _INCOMPLETE, 0
    if i + FRAME_OVERHEAD + n <= len(win):
        mv = memoryview(win)
        ok = crc32c(mv[i + FRAME_OVERHEAD : i + FRAME_OVERHEAD + n], crc32c(mv[i : i + 4])) == crc
    else:
        payload = os.pread(fd, n, off + FRAME_OVERHEAD)
        if len(payload) < n:
            return _INCOMPLETE, 0
        ok = crc32c(payload, crc32c(_U32.pack(word))) == crc
    return (_OK, nxt) if ok else (_BAD, 0)


_CHEAP_CANDIDATE = 64 * 1024
"""Resync checks the CRC of a candidate frame up to this size at once; a larger one only
when what follows it is the end of the file or a plausible length word."""


@functools.lru_cache(maxsize=256)
def _length_filter(high: int, mid: int) -> tuple[re.Pattern[bytes], int] | None:
    """A regex finding the offsets whose length word may be ``<= limit``, where ``high``
    and ``mid`` are bits 24..30 and 16..23 of ``limit`` (``mid`` only when ``high`` is 0),
    and how far the match lies past the word's start. None: every offset may be one."""
    if high >= 0x7F:
        return None
    if high == 0:  # byte 3 is 0x00 or 0x80 (CONTINUE), byte 2 at most `mid`
        return re.compile(rb"(?=[\x00-\x%02x][\x00\x80])" % mid), 2
    return re.compile(rb"(?=[\x00-\x%02x\x80-\x%02x])" % (high, 0x80 | high)), 3


def _resync(fd: int, start: int, size: int, max_record: int) -> int | None:
    """The first file offset ``>= start`` where a valid frame starts, or None.

    See "Damage and resynchronisation" in the module docstring: every offset is a
    candidate, so no valid frame is ever skipped. The scan reads 1 MiB windows and finds
    the offsets with a plausible length word with a regex (in C); only those are checked
    in Python, and a candidate longer than ``_CHEAP_CANDIDATE`` has its CRC computed only
    when it is followed by the end of the file or a plausible length word, which bounds
    the CRC work per scanned byte of garbage.
    """
    unpack = _U32.unpack_from
    pos = start
    while pos + FRAME_OVERHEAD <= size:
        win = os.pread(fd, min(_CHUNK, size - pos), pos)
        last = len(win) - FRAME_OVERHEAD  # the last offset of `win` where a frame header fits
        if last < 0:
            return None
        limit = min(max_record, size - pos - FRAME_OVERHEAD)
        filt = _length_filter(limit >> 24, (limit >> 16) & 0xFF if limit >> 24 == 0 else 0)
        if filt is None:
            offsets: Iterable[int] = range(last + 1)
        else:
            pattern, shift = filt
            # a match at offset j + shift needs the bytes up to j + 4: endpos is last + 4
            offsets = (m.start() - shift for m in pattern.finditer(win, shift, last + 4))
        for j in offsets:
            n = unpack(win, j)[0] & _LEN_MASK
            y = pos + j
            nxt = y + FRAME_OVERHEAD + n
            if n > max_record or nxt > size:
                continue
            if n > _CHEAP_CANDIDATE and nxt + 4 <= size:
                k = nxt - pos
                following = unpack(win, k)[0] if k + 4 <= len(win) else _U32.unpack(os.pread(fd, 4, nxt))[0]
                if following & _LEN_MASK > max_record:
                    continue
            if _check_frame(fd, y, size, max_record, win, pos)[0] == _OK:
                return y
        pos += last + 1
    return None


class _Scan:
    __slots__ = ("corrupt", "end", "entries", "records", "start_invalid", "tail")

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.end = 0  # file offset just past the last complete batch consumed
        self.records = 0
        self.corrupt: list[tuple[int, int, str]] = []  # (start, stop, reason) file offsets
        self.tail: tuple[int, str, int] | None = None  # (start, reason, complete frames in it)
        self.start_invalid = False


def _scan(
    fd: int,
    off: int,
    size: int,
    *,
    max_record: int,
    resolve_incomplete: bool,
    collect: bool = False,
    base_pos: int = 0,
    min_pos: int = 0,
    budget: int = 1 << 62,
    check_start: bool = False,
    certified: int = 0,
    chunk: int = _CHUNK,
) -> _Scan:
    """Walk frames from file offset ``off`` to ``size`` (see the module docstring).

    ``resolve_incomplete``: treat a frame running past the end as damage (only safe
    when no write can be in progress, or the segment is sealed). ``check_start``: ``off``
    is not known to be a frame boundary; if the first frame is not valid, stop and set
    ``start_invalid`` instead of quarantining. ``certified``: a file offset known to end
    a complete batch, with only complete batches before it (the end of a sealed
    segment, or the checkpoint of the active one; 0 for none): an invalid frame before
    it is damage even at the end of the data, and the scan resumes at it at the latest.
    """
    res = _Scan()
    entries = res.entries
    kept = 0  # entries[:kept] belong to complete batches; the rest to the current one
    frames = 0  # frames in the current unfinished batch
    records = 0
    start = cur = off  # start of the current batch; current frame
    buf = b""
    mv = memoryview(buf)
    blen = 0
    boff = off  # file offset of buf[0]
    unpack = _FRAME.unpack_from
    word_crc = _WORD_CRC.get
    new_entry = tuple.__new__
    pos_shift = base_pos - HEADER_SIZE
    stop_at = off + budget
    while cur < size:
        i = cur - boff
        kind = _OK
        reason = ""
        if i + FRAME_OVERHEAD > blen:
            buf = os.pread(fd, min(chunk, size - cur), cur)
            mv = memoryview(buf)
            blen = len(buf)
            boff, i = cur, 0
        if i + FRAME_OVERHEAD > blen:
            kind, reason = _INCOMPLETE, "partial frame header at end of file"
        else:
            word, crc = unpack(buf, i)
            n = word & _LEN_MASK
            p1 = i + FRAME_OVERHEAD + n
            if n > max_record:
                kind, reason = _BAD, f"frame length {n} exceeds max_record_bytes {max_record}"
            elif cur + FRAME_OVERHEAD + n > size:
                kind, reason = _INCOMPLETE, "frame runs past end of file"
            else:
                if p1 > blen:
                    buf = os.pread(fd, min(max(chunk, FRAME_OVERHEAD + n), size - cur), cur)
                    mv = memoryview(buf)
                    blen = len(buf)
                    boff, i, p1 = cur, 0, FRAME_OVERHEAD + n
                if p1 > blen:
                    kind, reason = _INCOMPLETE, "file shrank while reading"
                else:
                    wc = word_crc(word)
                    if wc is None:
                        wc = _word_crc(word)
                    if collect:
                        payload = buf[i + FRAME_OVERHEAD : p1]
                        ok = crc32c(payload, wc) == crc
                        if ok and cur + pos_shift >= min_pos:
                            entries.append(new_entry(LogEntry, (cur + pos_shift, payload)))
                    else:
                        ok = crc32c(mv[i + FRAME_OVERHEAD : p1], wc) == crc
                    if ok:
                        frames += 1
                        cur += FRAME_OVERHEAD + n
                        if word < _CONTINUE:  # the last frame of its batch
                            kept = len(entries)
                            records += frames
                            frames = 0
                            start = cur
                            if cur >= stop_at:
                                break
                        continue
                    kind, reason = _BAD, "checksum mismatch"
        # The frame at `cur` is not valid.
        if check_start and cur == off and (kind == _BAD or resolve_incomplete):
            del entries[kept:]
            res.start_invalid = True
            start = off
            break
        damaged = kind == _BAD or resolve_incomplete or cur < certified
        y = _resync(fd, cur + 1, size, max_record) if damaged else None
        if cur < certified and (y is None or y > certified):
            y = certified
        if y is None:  # the end of the data: maybe a write in progress, or a torn one
            del entries[kept:]
            res.tail = (start, reason, frames)
            break
        # Damage with valid data after it costs only the damaged bytes: the frames of
        # this batch before `cur` are delivered too (module docstring).
        kept = len(entries)
        records += frames
        frames = 0
        res.corrupt.append((cur, y, reason))
        start = cur = y
        buf = b""
        mv = memoryview(buf)
        blen = 0
        boff = y
    else:
        if frames:
            res.tail = (start, "unfinished batch (its last frame is missing)", frames)
    del entries[kept:]
    res.records = records
    res.end = start
    return res


# -- the log -------------------------------------------------------------------------

_live_logs: weakref.WeakSet[LocalLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log in list(_live_logs):
        log._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LocalLog:
    """A :class:`~crdtsync.log.Log` in a directory of segment files (format above).

    Open with ``log = await LocalLog.open(path)`` or ``async with LocalLog.open(path) as
    log:``. One instance belongs to one event loop; open one instance per process (or per
    loop) and let the file lock coordinate them.

    :param fsync: ``"group"`` (default), ``"always"`` or ``"never"`` (module docstring).
    :param segment_bytes: roll to a new segment once the active one would grow past this.
    :param max_record_bytes: larger records are refused on append and treated as damage
        when read; use the same value in every process.
    :param commit_window: seconds a group commit waits for more appends before its fsync
        (0: batch whatever arrives while the previous fsync runs).
    :param poll_interval: longest pause of a ``follow`` reader between checks for
        appends by other processes (appends in this process wake it at once).
    :param strict: readers raise :class:`~crdtsync.errors.CorruptRecord` at damage
        instead of skipping it.
    :param create: create the directory if it does not exist.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy | str = "group",
        segment_bytes: int = 32 * 1024 * 1024,
        max_record_bytes: int = 16 * 1024 * 1024,
        commit_window: float = 0.0,
        poll_interval: float = 0.01,
        strict: bool = False,
        create: bool = True,
    ) -> None:
        if fsync not in _POLICIES:
            raise ValueError(f"fsync must be one of {_POLICIES}, got {fsync!r}")
        if not 0 <= max_record_bytes <= _LEN_MASK:
            raise ValueError(f"max_record_bytes must be between 0 and {_LEN_MASK}")
        if segment_bytes < HEADER_SIZE + FRAME_OVERHEAD:
            raise ValueError(f"segment_bytes must be at least {HEADER_SIZE + FRAME_OVERHEAD}")
        self.path = Path(path)
        self._dir = str(self.path)
        self.fsync: FsyncPolicy = fsync  # type: ignore[assignment]  # checked above
        self.segment_bytes = segment_bytes
        self.max_record_bytes = max_record_bytes
        self.commit_window = commit_window
        self.poll_interval = poll_interval
        self.strict = strict
        self._create = create
        #: regions this log carries (a residency scope), or None for a private log
        self.regions: frozenset[str] | None = None
        self.epoch = 0
        self.recovery = RecoveryReport(self._dir)
        self.stats = LogStats()
        self._seen_corruption: set[tuple[str, int]] = set()

        self._tlock = threading.Lock()  # guards the state below against worker threads
        self._lock_fd = -1
        self._gen = -1
        self._bases: list[int] = []
        self._active_base = 0
        self._active_fd = -1
        self._active_end = HEADER_SIZE  # validated size of the active segment
        self._bad_headers: set[int] = set()
        self._inline = False  # running on the loop thread under the lock

        # Durability bookkeeping (event-loop side).
        self._written = 0  # tickets handed to writes that completed
        self._synced = 0  # every ticket <= this is durable
        self._syncing: asyncio.Future[None] | None = None
        self._unsynced: set[int] = set()  # fds written since their last fsync
        self._inflight: set[int] = set()  # fds an fsync is running on
        self._retired: set[int] = set()  # old segment fds waiting to be closed
        self._always_lock: asyncio.Lock | None = None
        self._failed: BaseException | None = None

        self._closing = False
        self._closed = False
        self._appended = Waiters()
        _live_logs.add(self)

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy | str = "group",
        segment_bytes: int = 32 * 1024 * 1024,
        max_record_bytes: int = 16 * 1024 * 1024,
        commit_window: float = 0.0,
        poll_interval: float = 0.01,
        strict: bool = False,
        create: bool = True,
    ) -> Opening[LocalLog]:
        """Open (and recover) the log in ``path``; see the class docstring."""

        async def factory() -> LocalLog:
            log = cls(
                path,
                fsync=fsync,
                segment_bytes=segment_bytes,
                max_record_bytes=max_record_bytes,
                commit_window=commit_window,
                poll_interval=poll_interval,
                strict=strict,
                create=create,
            )
            with log._storage("Opening the LocalLog", "The log was not opened."):
                await asyncio.to_thread(log._open_sync)
            return log

        return Opening(factory, LocalLog.close)

    def _open_sync(self) -> None:
        if not _POSIX:  # pragma: no cover
            raise OSError("LocalLog needs POSIX files (fcntl.flock, os.pread); use MemoryLog or KafkaLog here")
        started = time.monotonic()
        report = self.recovery
        if self._create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise FileNotFoundError(f"no LocalLog directory at {self._dir} (pass create=True to make one)")
        self._lock_fd = os.open(os.path.join(self._dir, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with self._locked_sync():
                self._prepare_locked(report)
                checkpoint = _read_checkpoint(self._lock_fd)
            # Scan the active segment without the lock (it can be large); only the part
            # that may be a write in progress is decided under the lock below.
            size = os.fstat(self._active_fd).st_size
            start = HEADER_SIZE
            if checkpoint is not None and checkpoint[0] == self._active_base and HEADER_SIZE <= checkpoint[1] <= size:
                start = checkpoint[1]
            scan = _scan(self._active_fd, start, size, max_record=self.max_record_bytes, resolve_incomplete=False)
            name = _segment_name(self._active_base)
            report.active_segment = name
            report.scanned_bytes = size - start
            report.scanned_records = scan.records
            for start, stop, reason in scan.corrupt:
                report.corrupt.append(self._report_corrupt(name, self._active_base, start, stop, reason, False))
            self._active_end = scan.end
            with self._locked_sync():
                self._refresh_locked(report)
                report.active_segment = _segment_name(self._active_base)
                report.segments = len(self._bases)
        except BaseException:
            self._close_fds()
            raise
        report.seconds = time.monotonic() - started
        if report.clean:
            logger.debug("%s", report.summary())
        else:
            logger.warning("%s", report.summary())

    def _prepare_locked(self, report: RecoveryReport) -> None:
        """Under the lock at open: clean up, check headers, pick the active segment."""
        for name in os.listdir(self._dir):
            if name.endswith(".seg.tmp"):
                os.unlink(os.path.join(self._dir, name))
                report.removed_files.append(name)
        bases = _list_bases(self._dir)
        if not bases:
            report.created = True
            self.epoch = secrets.randbits(63) or 1
            self._create_segment_locked(0)
            self._bases = [0]
            self._bump_gen()
            self._gen = _read_gen(self._lock_fd)
            self._open_active(0)
            return
        epochs: dict[int, int] = {}
        for base in bases:
            with open(os.path.join(self._dir, _segment_name(base)), "rb") as f:
                epoch, reason = _parse_header(f.read(HEADER_SIZE), base)
            if epoch is None:
                self._bad_headers.add(base)
                report.bad_segments.append(_segment_name(base))
                logger.warning("LocalLog %s: segment %s: %s", self._dir, _segment_name(base), reason)
            else:
                epochs[base] = epoch
        if epochs:
            self.epoch = epochs[max(epochs)]
            foreign = [b for b, e in epochs.items() if e != self.epoch]
            if foreign:
                raise CorruptRecord(
                    f"LocalLog {self._dir}: segments {[_segment_name(b) for b in foreign]} belong to "
                    f"another log (epoch differs from {self.epoch}); move them out of this directory"
                )
        else:
            self.epoch = secrets.randbits(63) or 1
        last = bases[-1]
        if last in self._bad_headers:
            # Appends cannot continue in a segment whose header is unreadable. If it
            # holds nothing but a (torn) header, replace it; otherwise keep it for the
            # readers to quarantine and start a new segment after it, so that no
            # position it covered is ever reused.
            name = _segment_name(last)
            size = os.path.getsize(os.path.join(self._dir, name))
            if size <= HEADER_SIZE:
                os.unlink(os.path.join(self._dir, name))
                report.removed_files.append(name)
                report.bad_segments.remove(name)
                self._bad_headers.discard(last)
                bases.pop()
                new_base = last
            else:
                new_base = last + size - HEADER_SIZE
            self._bump_gen()
            self._create_segment_locked(new_base)
            self._bump_gen()
            bases.append(new_base)
        self._bases = bases
        self._gen = _read_gen(self._lock_fd)
        self._open_active(bases[-1])

    # -- Log protocol -------------------------------------------------------------

    async def append(self, records: Sequence[bytes]) -> int:
        """Append a batch atomically; returns the position of its first record."""
        batch = check_records(records, self.max_record_bytes)
        self._check_writable()
        if not batch:
            return await self.end()
        data = encode_batch(batch)
        try:  # not `with self._storage(...)`: this is the hot path
            if self.fsync == "group":
                position, ticket = await self._write(data)
                await self._durable(ticket)
            elif self.fsync == "always":
                if self._always_lock is None:
                    self._always_lock = asyncio.Lock()
                async with self._always_lock:
                    position, ticket = await self._write(data)
                    await self._sync_round()
            else:
                position, _ = await self._write(data)
        except OSError as exc:
            raise_typed(exc, self._dir, *_APPEND_FAILED, self._count_storage_error)
            raise
        self._appended.wake()
        return position

    async def read(self, from_position: int = 0, *, follow: bool = False) -> AsyncGenerator[LogEntry, None]:
        """Yield records with ``position >= from_position`` in log order (see ``Log``).

        Damaged records are skipped and reported (:attr:`stats`, the ``crdtsync.log``
        logger), or raise :class:`~crdtsync.errors.CorruptRecord` when ``strict``.
        """
        if from_position < 0:
            raise ValueError(f"from_position must be >= 0, got {from_position}")
        self._check_open()
        reader = _Reader(self, from_position)
        idle = 0
        step: asyncio.Future[tuple[list[LogEntry], bool]] | None = None
        try:
            while not self._closed:
                if reader.remaining() > _INLINE_BYTES:
                    step = asyncio.ensure_future(asyncio.to_thread(reader.step, _READ_BUDGET))
                    entries, more = await asyncio.shield(step)
                    step = None
                else:
                    entries, more = reader.step(_INLINE_BYTES)
                if entries:
                    idle = 0
                    for entry in entries:
                        yield entry
                    continue
                if more:
                    continue
                if not follow:
                    return
                # Appends in this process wake us at once; other processes are polled
                # with a backoff from 1 ms to poll_interval.
                idle += 1
                await self._appended.wait(min(self.poll_interval, 0.001 * (1 << min(idle, 10))))
        finally:
            if step is not None and not step.done():
                # Cancelled while a worker thread reads: close its files when it is done.
                step.add_done_callback(reader.close_after)
            else:
                reader.close()

    async def end(self) -> int:
        """The position the next append will get (all records below it are readable)."""
        self._check_open()
        return await self._run_locked(self._end_locked)

    async def close(self) -> None:
        """Wait for pending group commits, then release files. Idempotent.

        Never raises for storage trouble: an append waiting for the final fsync gets
        the error itself, and a checkpoint that cannot be written is only logged (the
        next open then scans the active segment)."""
        if self._closing:
            return
        self._closing = True
        try:
            if self.fsync != "never" and self._failed is None and self._synced < self._written:
                # A failure is reported to the appends that were waiting for it.
                with contextlib.suppress(LogClosed, OSError):
                    await self._durable(self._written)
        finally:
            self._closed = True
            self._appended.wake()
            await asyncio.to_thread(self._close_sync)

    async def truncate_before(self, position: int) -> None:
        """Delete every segment whose records all lie before ``position``.

        The active segment is never deleted. Readers in other processes that have a
        deleted segment open finish reading it (POSIX unlink semantics).
        """
        self._check_writable()
        with self._storage(
            "Deleting old segments of the LocalLog",
            "Every record at or after the position is kept, and so are the segments not deleted yet.",
        ):
            await self._run_locked(self._truncate_before_locked, position, inline=False)

    # -- extras -------------------------------------------------------------------

    async def sync(self) -> None:
        """Make every record this instance wrote durable now (whatever the policy)."""
        self._check_open()
        with self._storage("Syncing the LocalLog", "Appends since the last successful sync may not be durable."):
            if self.fsync == "never":
                await asyncio.to_thread(self._fsync_active_now)
            else:
                await self._durable(self._written)

    async def start(self) -> int:
        """The lowest position still kept (the base of the oldest segment)."""
        self._check_open()
        return await asyncio.to_thread(lambda: (_list_bases(self._dir) or [0])[0])

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"LocalLog({self._dir!r}, fsync={self.fsync!r}{', closed' if self._closed else ''})"

    # -- locking ------------------------------------------------------------------

    class _LockCtx:
        __slots__ = ("log",)

        def __init__(self, log: LocalLog) -> None:
            self.log = log

        def __enter__(self) -> None:
            self.log._enter()

        def __exit__(self, *exc: object) -> None:
            self.log._exit()

    def _locked_sync(self) -> LocalLog._LockCtx:
        return LocalLog._LockCtx(self)

    def _enter(self) -> None:
        self._tlock.acquire()
        try:
            if self._lock_fd < 0:
                raise LogClosed(f"LocalLog {self._dir} is closed; open it again")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except BaseException:
            self._tlock.release()
            raise

    def _try_enter(self) -> bool:
        if not self._tlock.acquire(blocking=False):
            return False
        try:
            if self._lock_fd < 0:
                raise LogClosed(f"LocalLog {self._dir} is closed; open it again")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._tlock.release()
            return False
        except BaseException:
            self._tlock.release()
            raise
        return True

    def _exit(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._tlock.release()

    def _call_locked(self, fn: Callable[..., _T], *args: object) -> _T:
        self._enter()
        try:
            return fn(*args)
        finally:
            self._exit()

    async def _run_locked(self, fn: Callable[..., _T], *args: object, inline: bool = True) -> _T:
        """Run ``fn`` under the lock: on the loop thread if the lock is free at once and the
        work is small, else in a worker thread (so a slow holder never blocks the loop)."""
        if inline and self._try_enter():
            self._inline = True
            try:
                return fn(*args)
            except _NeedThread:
                pass
            finally:
                self._inline = False
                self._exit()
        return await asyncio.to_thread(self._call_locked, fn, *args)

    def _after_fork(self) -> None:
        # A forked child shares the parent's open file description of LOCK, and flock
        # does not exclude holders of one description: re-open it. Thread locks held by
        # parent threads are never released in the child: replace them.
        self._tlock = threading.Lock()
        self._always_lock = None
        self._syncing = None
        if self._lock_fd >= 0 and not self._closed:
            old = self._lock_fd
            self._lock_fd = os.open(os.path.join(self._dir, _LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
            os.close(old)

    # -- state under the lock -------------------------------------------------------

    def _bump_gen(self) -> None:
        gen = _read_gen(self._lock_fd) + 1
        os.pwrite(self._lock_fd, _U64.pack(gen), 0)
        self._gen = gen

    def _create_segment_locked(self, base: int) -> None:
        name = _segment_name(base)
        path = os.path.join(self._dir, name)
        if os.path.exists(path):
            raise FileExistsError(
                errno.EEXIST, f"LocalLog {self._dir}: segment {name} already exists; was the directory edited by hand?"
            )
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.pwrite(fd, _pack_header(self.epoch, base), 0)
                if self.fsync != "never":
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            if self.fsync != "never":
                _fsync_dir(self._dir)
        except BaseException:
            # A full disk, say: leave no half-made segment behind (nothing was in it yet,
            # and the caller holds the lock, so no other process appended to it).
            remove_if_present(tmp)
            remove_if_present(path)
            raise

    def _open_active(self, base: int) -> None:
        fd = os.open(os.path.join(self._dir, _segment_name(base)), os.O_RDWR)
        if self._active_fd >= 0:
            self._retire(self._active_fd)
        self._active_fd = fd
        self._active_base = base
        self._active_end = HEADER_SIZE

    def _retire(self, fd: int) -> None:
        self._retired.add(fd)
        self._reap()

    def _reap(self) -> None:
        for fd in list(self._retired):
            if fd not in self._unsynced and fd not in self._inflight:
                self._retired.discard(fd)
                os.close(fd)

    def _refresh_locked(self, report: RecoveryReport | None = None) -> None:
        """Catch up with other processes: rolls, deletions, appends, torn tails.

        At open, what is found goes into ``report`` (logged once by the caller)."""
        gen = _read_gen(self._lock_fd)
        if gen != self._gen:
            self._gen = gen
            bases = _list_bases(self._dir)
            if not bases:
                raise CorruptRecord(f"LocalLog {self._dir}: every segment file is gone; the directory was emptied")
            self._bases = bases
            if bases[-1] != self._active_base:
                self._open_active(bases[-1])
                head = os.pread(self._active_fd, HEADER_SIZE, 0)
                epoch, reason = _parse_header(head, bases[-1])
                if epoch is None or epoch != self.epoch:
                    raise CorruptRecord(
                        f"LocalLog {self._dir}: active segment {_segment_name(bases[-1])} has an invalid "
                        f"header ({reason or 'epoch differs'}); reopen the log to recover"
                    )
        size = os.fstat(self._active_fd).st_size
        if size == self._active_end:
            return
        if size < self._active_end:
            self._active_end = HEADER_SIZE  # shrunk under us (cut elsewhere): re-validate
        if self._inline and size - self._active_end > _INLINE_BYTES:
            raise _NeedThread  # other processes wrote a lot: validate it off the loop thread
        scan = _scan(
            self._active_fd, self._active_end, size, max_record=self.max_record_bytes, resolve_incomplete=True
        )
        name = _segment_name(self._active_base)
        for start, stop, reason in scan.corrupt:
            rng = self._report_corrupt(name, self._active_base, start, stop, reason, False)
            if report is not None:
                report.corrupt.append(rng)
        if scan.tail is not None:
            start, reason, frames = scan.tail
            os.ftruncate(self._active_fd, start)
            # Everything before the cut is complete batches or reported damage: certify
            # it, so readers treat damage just before the cut as damage, not as a write.
            _write_checkpoint(self._lock_fd, self._active_base, start)
            if report is not None:
                report.truncated_bytes += size - start
                report.truncated_records += frames
                report.truncate_reason = reason
            else:
                self.stats.truncated_bytes += size - start
                logger.warning(
                    "LocalLog %s: cut a torn tail of %d bytes (%s) from %s at position %d",
                    self._dir,
                    size - start,
                    reason,
                    name,
                    self._active_base + start - HEADER_SIZE,
                )
            size = start
        self._active_end = size

    def _end_locked(self) -> int:
        self._refresh_locked()
        return self._active_base + self._active_end - HEADER_SIZE

    def _append_locked(self, data: bytes) -> tuple[int, int]:
        self._refresh_locked()
        off = self._active_end
        if off > HEADER_SIZE and off + len(data) > self.segment_bytes:
            self._roll_locked()
            off = self._active_end
        fd = self._active_fd
        size = len(data)
        try:
            done = os.pwrite(fd, data, off)
            while done < size:  # short writes are rare (signals, full disks)
                done += os.pwrite(fd, memoryview(data)[done:], off + done)
        except BaseException:
            try:
                os.ftruncate(fd, off)  # all or nothing
            except OSError:
                pass  # the unfinished batch is invisible and the next append cuts it
            raise
        self._active_end = off + size
        return self._active_base + off - HEADER_SIZE, fd

    def _roll_locked(self) -> None:
        new_base = self._active_base + self._active_end - HEADER_SIZE
        # Bump before (a crash after creating the segment still makes others re-list)
        # and after (a reader that re-listed in between sees a change again).
        self._bump_gen()
        self._create_segment_locked(new_base)
        self._bump_gen()
        self._bases.append(new_base)
        self._open_active(new_base)

    def _truncate_before_locked(self, position: int) -> None:
        self._refresh_locked()
        bases = self._bases
        doomed = [bases[i] for i in range(len(bases) - 1) if bases[i + 1] <= position]
        if not doomed:
            return
        gone: list[int] = []
        try:
            for base in doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self._dir, _segment_name(base)))
                gone.append(base)
            if self.fsync != "never":
                _fsync_dir(self._dir)
        finally:
            if gone:  # also after a failure half-way: others must re-list what is left
                self._bump_gen()
                self._bases = [b for b in bases if b not in gone]
                self._bad_headers.difference_update(gone)

    # -- writing and durability ----------------------------------------------------

    async def _write(self, data: bytes) -> tuple[int, int]:
        # Small writes that need no roll run on the loop thread when the lock is free at
        # once (a page-cache write of a few KiB); the rest go to a worker thread.
        done = None
        if len(data) <= _INLINE_BYTES and self._active_end + len(data) <= self.segment_bytes and self._try_enter():
            self._inline = True
            try:
                done = self._append_locked(data)
            except _NeedThread:
                pass
            finally:
                self._inline = False
                self._exit()
        if done is None:
            done = await asyncio.to_thread(self._call_locked, self._append_locked, data)
        position, fd = done
        if self.fsync != "never":
            self._unsynced.add(fd)
        self._written += 1
        return position, self._written

    async def _durable(self, ticket: int) -> None:
        """Group commit: return once an fsync that started after write ``ticket`` ends."""
        while self._synced < ticket:
            if self._failed is not None:
                raise LogClosed(f"LocalLog {self._dir} failed: {self._failed}; reopen it") from self._failed
            if self._syncing is not None:
                await asyncio.shield(self._syncing)
                continue
            if self._closed:
                raise LogClosed(f"LocalLog {self._dir} was closed before this append was durable")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._syncing = fut
            try:
                if self.commit_window > 0:
                    await asyncio.sleep(self.commit_window)
                await self._sync_round()
            finally:
                self._syncing = None
                fut.set_result(None)

    async def _sync_round(self) -> None:
        target = self._written
        fds = list(self._unsynced)
        if not fds:  # rounds run one at a time: earlier rounds synced everything written
            self._synced = max(self._synced, target)
            return
        self._unsynced.clear()
        self._inflight.update(fds)
        try:
            with self._storage(
                "Syncing (fsync) the LocalLog",
                "Appends since the last successful fsync may not be durable, so the log refuses appends until "
                "it is reopened (reopening runs recovery).",
            ):
                await asyncio.to_thread(_fsync_all, fds)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages: nothing
            # written since the last good fsync can be trusted. Refuse further appends.
            self._failed = exc
            logger.error("LocalLog %s: fsync failed (%s); the log refuses appends until reopened", self._dir, exc)
            raise
        except BaseException:
            self._unsynced.update(fds)  # cancelled: the next round syncs them again
            raise
        finally:
            self._inflight.difference_update(fds)
        self._synced = max(self._synced, target)
        self._reap()

    def _fsync_active_now(self) -> None:
        with self._tlock:
            if self._active_fd >= 0:
                os.fsync(self._active_fd)

    def _close_sync(self) -> None:
        if self._failed is None and self._lock_fd >= 0:
            try:
                with self._locked_sync():
                    self._refresh_locked()
                    _write_checkpoint(self._lock_fd, self._active_base, self._active_end)
            except (OSError, CorruptRecord) as exc:
                logger.warning("LocalLog %s: no checkpoint written at close: %s", self._dir, exc)
        with self._tlock:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in [*self._retired, self._active_fd, self._lock_fd]:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._retired.clear()
        self._unsynced.clear()
        self._active_fd = self._lock_fd = -1

    # -- reporting -----------------------------------------------------------------

    def _report_corrupt(
        self, name: str, base: int, start: int, stop: int, reason: str, raise_strict: bool = True
    ) -> CorruptRange:
        rng = CorruptRange(name, base + start - HEADER_SIZE, stop - start, reason)
        key = (name, rng.position)
        if key not in self._seen_corruption:
            self._seen_corruption.add(key)
            self.stats.corrupt_ranges += 1
            self.stats.corrupt_bytes += rng.length
            self.stats.recent.append(rng)
            logger.warning("LocalLog %s: quarantined damaged data: %s", self._dir, rng)
        if self.strict and raise_strict:
            raise CorruptRecord(f"LocalLog {self._dir}: {rng}")
        return rng

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed(f"LocalLog {self._dir} is closed; open it again")
        if self._lock_fd < 0:
            raise LogClosed(f"LocalLog {self._dir} is not open: use `await LocalLog.open(path)`")

    def _storage(self, doing: str, outcome: str) -> contextlib.AbstractContextManager[None]:
        """Storage ``OSError`` escaping the block become typed errors, counted in stats."""
        return typed_storage_errors(self._dir, doing, outcome, self._count_storage_error)

    def _count_storage_error(self, exc: StorageError) -> None:
        self.stats.storage_errors += 1
        logger.error("%s", exc)

    def _check_writable(self) -> None:
        self._check_open()
        if self._closing:
            raise LogClosed(f"LocalLog {self._dir} is closed; open it again")
        if self._failed is not None:
            raise LogClosed(f"LocalLog {self._dir} failed: {self._failed}; reopen it") from self._failed


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)


class _Reader:
    """The state of one ``read()``: which segment, which offset, what is verified.

    ``step`` is synchronous and bounded (about 1 MiB of frames); ``read`` runs it on the
    loop thread when little is pending and in a worker thread otherwise.
    """

    def __init__(self, log: LocalLog, from_position: int) -> None:
        self.log = log
        self.dir = log._dir
        self.max_record = log.max_record_bytes
        self.min_pos = from_position
        self.fd = -1
        self.base = -1
        self.off = HEADER_SIZE
        self.size = 0
        self.sealed = False
        self.unverified = False  # self.off is not yet known to be a frame boundary
        self.gen = -1
        self.bases: list[int] = []
        self.lock_fd = -1
        self.stuck_at = (-1, -1)
        self.stuck_since = 0.0

    def close(self) -> None:
        for fd in (self.fd, self.lock_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self.lock_fd = -1

    def close_after(self, fut: asyncio.Future[tuple[list[LogEntry], bool]]) -> None:
        if not fut.cancelled():
            fut.exception()  # retrieved: the consumer is gone
        self.close()

    def remaining(self) -> int:
        return self.size - self.off if self.fd >= 0 else 0

    # -- segment list ------------------------------------------------------------

    def _gen_now(self) -> int:
        if self.lock_fd < 0:
            self.lock_fd = os.open(os.path.join(self.dir, _LOCK_NAME), os.O_RDONLY)
        return _read_gen(self.lock_fd)

    def _refresh_bases(self, force: bool = False) -> None:
        gen = self._gen_now()
        if force or gen != self.gen:
            self.gen = gen
            self.bases = _list_bases(self.dir)

    def _open_segment(self, base: int, off: int, unverified: bool) -> bool:
        """Open segment ``base`` at ``off``; False if it vanished or is unreadable whole."""
        name = _segment_name(base)
        try:
            fd = os.open(os.path.join(self.dir, name), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            head = os.pread(fd, HEADER_SIZE, 0)
            epoch, reason = _parse_header(head, base)
        except BaseException:
            os.close(fd)
            raise
        if epoch is not None and epoch != self.log.epoch:
            epoch, reason = None, f"belongs to another log (epoch {epoch}, this log is {self.log.epoch})"
        if epoch is None:
            size = os.fstat(fd).st_size
            os.close(fd)
            self.log._report_corrupt(name, base, 0, max(size, HEADER_SIZE), f"invalid segment header: {reason}")
            return False
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.base, self.off, self.unverified = fd, base, off, unverified
        self.sealed = False
        self.size = os.fstat(fd).st_size
        return True

    def _seek_first(self) -> bool:
        """Open the segment holding ``min_pos`` (or the first one after it)."""
        self._refresh_bases(force=True)
        for i, base in enumerate(self.bases):
            if i + 1 < len(self.bases) and self.bases[i + 1] <= self.min_pos:
                continue  # every record of this segment lies before min_pos
            if base >= self.min_pos:
                ok = self._open_segment(base, HEADER_SIZE, False)
            else:
                ok = self._open_segment(base, HEADER_SIZE + self.min_pos - base, True)
            if ok:
                return True
        return False

    def _next_segment(self) -> bool:
        for base in self.bases:
            if base > self.base and self._open_segment(base, HEADER_SIZE, False):
                return True
        return False

    # -- one step ------------------------------------------------------------------

    def step(self, budget: int) -> tuple[list[LogEntry], bool]:
        """Parse about ``budget`` bytes; return ``(entries, more)`` (more: call again now)."""
        if self.fd < 0 and not self._seek_first():
            return [], False
        self.size = os.fstat(self.fd).st_size
        if self.off < self.size:
            # A sealed segment ends at a batch boundary: damage there is never a write.
            scan = self._scan_here(budget, self.sealed, self.size if self.sealed else 0)
            if scan is None:
                return [], True
            if scan.entries or (scan.tail is None and self.off < self.size):
                return scan.entries, True
            if scan.tail is not None:
                if self.sealed:
                    start, reason, _ = scan.tail
                    self.log._report_corrupt(_segment_name(self.base), self.base, start, self.size, reason)
                    self.off = self.size
                else:
                    self._refresh_bases()
                    if any(b > self.base for b in self.bases):
                        self.sealed = True  # rescan with tails resolved: all writes to it ended
                        return [], True
                    return self._resolve_stuck_tail(budget)
        # At the end of this segment's data: is there a successor?
        self._refresh_bases()
        if any(b > self.base for b in self.bases):
            if not self.sealed:
                # Sealed now; re-read once more with tails resolved (all writes to it ended).
                self.sealed = True
                return [], True
            if self._next_segment():
                return [], True
        return [], False

    def _scan_here(self, budget: int, resolve: bool, certified: int) -> _Scan | None:
        """Scan from ``self.off``, report the damage found and move past what was read.

        None when ``self.off`` turned out not to be a frame boundary (the next step walks
        from the segment's start instead)."""
        scan = _scan(
            self.fd,
            self.off,
            self.size,
            max_record=self.max_record,
            resolve_incomplete=resolve,
            collect=True,
            base_pos=self.base,
            min_pos=self.min_pos,
            budget=budget,
            check_start=self.unverified,
            certified=certified,
            chunk=budget + FRAME_OVERHEAD,
        )
        if scan.start_invalid:
            self.off, self.unverified = HEADER_SIZE, False
            return None
        if scan.end > self.off:
            self.unverified = False
        name = _segment_name(self.base)
        for start, stop, reason in scan.corrupt:
            self.log._report_corrupt(name, self.base, start, stop, reason)
        self.off = scan.end
        return scan

    def _resolve_stuck_tail(self, budget: int) -> tuple[list[LogEntry], bool]:
        """At an invalid or incomplete frame in the active segment, decide what it is.

        A write in progress looks like a frame running past the end of the file, and so
        do a torn write and a damaged length word. Under a shared lock no append is in
        progress: if valid frames follow, the damage is quarantined and the reader moves
        past it; so it does when the damage lies before the checkpoint (bytes certified
        complete at the last clean close). A torn tail stays in place (``more`` False)
        until the next append cuts it. Checked at most every 50 ms per reader.
        """
        now = time.monotonic()
        where = (self.base, self.off)
        if where == self.stuck_at and now - self.stuck_since < 0.05:
            return [], False
        self.stuck_at, self.stuck_since = where, now
        if self.lock_fd < 0:
            self._gen_now()
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return [], False  # an append is in progress
        before = self.off
        try:
            self.size = os.fstat(self.fd).st_size
            checkpoint = _read_checkpoint(self.lock_fd)
            certified = 0
            if checkpoint is not None and checkpoint[0] == self.base and checkpoint[1] <= self.size:
                certified = checkpoint[1]
            scan = self._scan_here(budget, True, certified)
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        if scan is None:
            return [], True
        return scan.entries, self.off > before  # damage passed, or the write finished meanwhile
