"""The forwarder's progress file: two positions, loaded and replaced atomically and durably.

Format (JSON)::

    {"version": 2, "shipped": <local position>, "received": <shared position>}

A position is ``null`` (nothing yet), an int (a single-stream log: ``LocalLog``,
``MemoryLog``) or, for a partitioned shared log (``KafkaLog``), the wire form of a
:class:`~crdtsync.log.VectorPosition`: ``[[offset, ...], partition, generation]`` (see
:func:`~crdtsync.log._protocol.position_to_wire`). Files of the first format,
``{"shipped": int | null, "received": int | null}`` with no ``version``, are read as
they are; the next save writes version 2.

What is not this shape raises :class:`~crdtsync.errors.CorruptRecord` (not JSON, wrong
keys or types) or :class:`~crdtsync.errors.UnsupportedVersion` (written by a newer
build); both messages say what to do. Deleting the file makes the forwarder copy
everything again, which is safe: replicas apply events idempotently by dot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import CorruptRecord, UnsupportedVersion
from ..log._protocol import Position, position_from_wire, position_to_wire

__all__ = ["STATE_VERSION", "ForwarderState"]

#: the version this build writes (it reads 1, the unversioned int-only format, and 2)
STATE_VERSION = 2

_DELETE = "delete it to copy everything again (replicas ignore the duplicates)"


class ForwarderState:
    """Load and save a forwarder's (shipped, received) positions; ``path=None`` keeps
    progress in memory only."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        #: checkpoints written (a replacement of the file each)
        self.saves = 0

    def load(self) -> tuple[Position | None, Position | None]:
        """(shipped, received) from the file; (None, None) when there is none."""
        if self.path is None or not self.path.exists():
            return None, None
        try:
            d: Any = json.loads(self.path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(f"forwarder state {self.path} is not JSON ({exc}); {_DELETE}") from exc
        if not isinstance(d, dict) or not {"shipped", "received"} <= d.keys():
            raise CorruptRecord(f"forwarder state {self.path} is not {{\"version\": 2, \"shipped\": position, "
                                f"\"received\": position}}: {str(d)[:80]}; {_DELETE}")
        version = d.get("version", 1)
        if type(version) is not int or version < 1:
            raise CorruptRecord(f"forwarder state {self.path}: version {version!r} is not a version; {_DELETE}")
        if version > STATE_VERSION:
            raise UnsupportedVersion(f"forwarder state {self.path} has version {version}; this build reads up to "
                                     f"{STATE_VERSION}: upgrade crdtsync (or {_DELETE})")
        out = []
        for key in ("shipped", "received"):
            value = d[key]
            if version == 1 and value is not None and type(value) is not int:
                raise CorruptRecord(f"forwarder state {self.path}: {key}={str(value)[:40]} is not an int or null "
                                    f"(version 1 holds int positions only); {_DELETE}")
            if type(value) is bool:
                raise CorruptRecord(f"forwarder state {self.path}: {key}={value!r} is not a position; {_DELETE}")
            try:
                out.append(position_from_wire(value, f"forwarder state {self.path}: {key}"))
            except CorruptRecord as exc:
                raise CorruptRecord(f"{exc}; {_DELETE}") from None
        return out[0], out[1]

    def save(self, shipped: Position | None, received: Position | None) -> None:
        """Replace the file: write a temporary file, fsync it, rename it over, fsync the directory."""
        if self.path is None:
            return
        body = {"version": STATE_VERSION, "shipped": position_to_wire(shipped),
                "received": position_to_wire(received)}
        write_atomically(self.path, json.dumps(body).encode())
        self.saves += 1


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a temporary file renamed over it (fsynced, and the
    directory after the rename, when ``durable``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
