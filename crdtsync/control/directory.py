"""DirectoryControl: heartbeats as files in a directory shared by the processes of one host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from pathlib import Path

from .._crc32c import crc32c
from .transport import Deliver

log = logging.getLogger("crdtsync.control")

__all__ = ["DirectoryControl"]


class DirectoryControl:
    """Heartbeats as files in a directory shared by the processes of one host.

    Each replica rewrites ``<dir>/<name>.hb`` in place (no rename: replacing a file costs
    a data flush on ext4); every ``poll_interval`` seconds a reader delivers the files
    whose content changed. A file is ``magic "CSHB" | length u32 | crc32c u32 | heartbeat``;
    a reader that catches a write half done sees a bad checksum and simply reads it again
    at the next poll (counted in ``torn``). Nothing grows: one small file per replica.
    The files also persist the last word of every replica across restarts, so a replica
    that restarts knows the fleet (and quorum sizes) before anyone speaks again.
    """

    _MAGIC = b"CSHB"
    #: a reader sees only each replica's latest message: senders send full heartbeats
    latest_only = True

    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float = 0.005) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.poll_interval = poll_interval
        self._name: str | None = None
        self._seen: dict[str, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self._fd = -1
        self.errors = 0
        self.torn = 0

    def start(self, name: str, deliver: Deliver) -> None:
        self._name = name
        self._fd = os.open(self.path / f"{name}.hb", os.O_RDWR | os.O_CREAT, 0o644)
        self.poll(deliver)
        self._task = asyncio.get_running_loop().create_task(self._run(deliver), name=f"crdtsync-control-{name}")

    @classmethod
    def frame(cls, data: bytes) -> bytes:
        return cls._MAGIC + struct.pack(">II", len(data), crc32c(data)) + data

    @classmethod
    def unframe(cls, blob: bytes) -> bytes | None:
        """The heartbeat in a file's bytes, or None if the file is empty or torn."""
        if len(blob) < 12 or blob[:4] != cls._MAGIC:
            return None
        n, crc = struct.unpack(">II", blob[4:12])
        data = blob[12:12 + n]
        if len(data) != n or crc32c(data) != crc:
            return None
        return data

    def poll(self, deliver: Deliver) -> int:
        """Deliver every heartbeat file whose content changed since the last poll."""
        n = 0
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.endswith(".hb") or entry.name == f"{self._name}.hb":
                continue
            try:
                blob = Path(entry.path).read_bytes()
            except FileNotFoundError:
                continue  # removed while we looked
            data = self.unframe(blob)
            if data is None:
                if blob:
                    self.torn += 1
                continue
            if self._seen.get(entry.name) == data:
                continue
            self._seen[entry.name] = data
            deliver(data)
            n += 1
        return n

    async def _run(self, deliver: Deliver) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.poll(deliver)
            except OSError:
                self.errors += 1
                log.exception("reading heartbeats in %s failed; retrying", self.path)

    async def publish(self, data: bytes) -> None:
        if self._fd < 0:
            raise RuntimeError("start() the control channel before publishing")
        blob = self.frame(data)
        os.pwrite(self._fd, blob, 0)
        os.ftruncate(self._fd, len(blob))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
