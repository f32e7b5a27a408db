"""Snapshots: a replica's state, context and log position, written atomically.

A snapshot bounds recovery time: a restarting replica loads the newest valid snapshot
and replays only the log tail after its position.

File format (``snapshot-<16 hex digits of a counter>.snap`` in the snapshot directory)::

    magic "CSNP" | format version u8 (2) | crc32c u32 BE of body | body length u64 BE | body

``body`` is msgpack: ``[version, actor, context, position, next_seq, hlc, fields, schema,
events_applied, unlogged]``, where ``fields`` is ``[[field, [[key, nested state], ...]], ...]``
sorted, and ``unlogged`` (version 2) lists log records of the replica's own writes that
were not yet appended when the snapshot was taken (recovery appends them again, so no seq
exists only in a snapshot). Version 1 bodies (without ``unlogged``) are still read. A file is valid when the magic,
version, length and CRC all check; an invalid file is skipped (and reported) and the
next older one is tried. Writes go to a temporary file (``snapshot-<counter>.tmp``), are
fsynced, renamed into place and the directory is fsynced, so a crash leaves either the
old or the new snapshot, never a torn one. The newest ``keep`` snapshots are kept.

A write the filesystem refuses raises :class:`~crdtsync.errors.StorageFull` or
:class:`~crdtsync.errors.StorageUnavailable` and removes its temporary file; the earlier
snapshots stay. A temporary file left by a crash during a save is removed when the
store is opened.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._crc32c import crc32c
from ._encoding import corrupt, packb, unpackb
from ._storage import remove_if_present, typed_storage_errors
from .clock import Context
from .errors import CorruptRecord, UnsupportedVersion
from .log._protocol import Position, position_from_wire, position_to_wire
from .types._base import CRDT, decode_nested, encode_nested

__all__ = ["Snapshot", "SnapshotStore", "FileSnapshotStore", "MemorySnapshotStore"]

log = logging.getLogger("crdtsync.snapshots")

_MAGIC = b"CSNP"
_VERSION = 2
_HEADER = struct.Struct(">4sBIQ")


@dataclass
class Snapshot:
    """What a snapshot holds."""

    actor: str
    context: Context
    position: Position | None
    next_seq: int
    hlc: int
    state: Mapping[str, Mapping[str, CRDT[Any]]]
    schema: list[dict[str, Any]] = field(default_factory=list)
    events_applied: int = 0
    #: log records of own writes not yet in the log when the snapshot was taken
    unlogged: list[bytes] = field(default_factory=list)


def encode_snapshot(s: Snapshot) -> bytes:
    fields = []
    for fname in sorted(s.state):
        tbl = s.state[fname]
        fields.append([fname, [[k, encode_nested(tbl[k])] for k in sorted(tbl)]])
    body = packb([
        _VERSION, s.actor, s.context.to_payload(), position_to_wire(s.position), s.next_seq, s.hlc, fields,
        s.schema, s.events_applied, list(s.unlogged),
    ])
    return _HEADER.pack(_MAGIC, _VERSION, crc32c(body), len(body)) + body


def decode_snapshot(blob: bytes) -> Snapshot:
    if len(blob) < _HEADER.size:
        corrupt("snapshot", "shorter than its header")
    magic, version, crc, length = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        corrupt("snapshot", "bad magic")
    if version > _VERSION:
        raise UnsupportedVersion(f"snapshot format version {version} is newer than this build understands")
    body = blob[_HEADER.size:]
    if len(body) != length or crc32c(body) != crc:
        corrupt("snapshot", "length or checksum mismatch (torn or damaged file)")
    obj = unpackb(body, what="snapshot")
    try:
        _, actor, ctx, position, next_seq, hlc, fields, schema, applied, *rest = obj
        if len(rest) != (0 if version == 1 else 1):
            raise ValueError(f"{len(obj)} fields for version {version}")
        unlogged = rest[0] if rest else []
        if not (isinstance(unlogged, list) and all(isinstance(r, bytes) for r in unlogged)):
            raise TypeError("unlogged must be a list of records")
        state: dict[str, dict[str, CRDT[Any]]] = {}
        for fname, rows in fields:
            state[fname] = {k: decode_nested(enc) for k, enc in rows}
        return Snapshot(actor, Context.from_payload(ctx), position_from_wire(position, "snapshot"), next_seq, hlc, state, schema, applied, unlogged)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptRecord(f"snapshot: malformed body ({exc})") from None


class SnapshotStore(Protocol):
    def save(self, blob: bytes) -> None: ...

    def load_latest(self) -> Snapshot | None: ...


class FileSnapshotStore:
    """Snapshots as files in a directory (atomic tmp + fsync + rename)."""

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 2) -> None:
        self.dir = Path(directory)
        with typed_storage_errors(self.dir, "Creating the snapshot directory", "No snapshot store was opened."):
            self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("snapshot-*.tmp"):  # a crash during save() left it
            remove_if_present(stale)
        self.keep = keep
        #: snapshot files found damaged and skipped
        self.skipped: list[str] = []

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("snapshot-*.snap"))

    def save(self, blob: bytes) -> None:
        files = self._files()
        n = int(files[-1].stem.split("-")[1], 16) + 1 if files else 1
        final = self.dir / f"snapshot-{n:016x}.snap"
        tmp = final.with_suffix(".tmp")
        with typed_storage_errors(
            self.dir, "Writing a snapshot", "No snapshot was written; the earlier ones are kept (recovery replays the log from them)."
        ):
            try:
                with open(tmp, "wb") as f:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                remove_if_present(tmp)
                raise
        with typed_storage_errors(
            self.dir, "Finishing a snapshot", "The new snapshot is in place but may not survive a power loss yet."
        ):
            _fsync_dir(self.dir)
            for old in self._files()[: -self.keep]:
                old.unlink(missing_ok=True)

    def load_latest(self) -> Snapshot | None:
        for path in reversed(self._files()):
            try:
                return decode_snapshot(path.read_bytes())
            except (CorruptRecord, UnsupportedVersion) as exc:
                log.warning("skipping damaged snapshot %s: %s", path, exc)
                self.skipped.append(str(path))
        return None


class MemorySnapshotStore:
    """Snapshots kept in memory (the simulated cluster's 'disk')."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def save(self, blob: bytes) -> None:
        self.blobs.append(blob)
        del self.blobs[:-2]

    def load_latest(self) -> Snapshot | None:
        for blob in reversed(self.blobs):
            try:
                return decode_snapshot(blob)
            except (CorruptRecord, UnsupportedVersion):
                continue
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_digest(state: Mapping[str, Mapping[str, CRDT[Any]]]) -> bytes:
    """A deterministic digest of a state map (used to compare replicas cheaply)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for fname in sorted(state):
        tbl = state[fname]
        for k in sorted(tbl):
            h.update(packb([fname, k]))
            h.update(tbl[k].encode())
    return h.digest()
