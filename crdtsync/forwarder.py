"""Store-and-forward between an edge's local log and a shared log.

An edge replica reads and writes only its own :class:`~crdtsync.log.local.LocalLog`, so
it keeps serving and recording with no network. A :class:`Forwarder` bridges that log
and a shared one (Kafka, or another LocalLog standing in for it) whenever connected:

* **up**: records of the edge's own origin are appended to the shared log, from the last
  position the shared log acknowledged;
* **down**: records of every other origin are appended to the local log, so the edge has
  them after a restart with no network.

Progress (the last shipped local position, the last received shared position) is kept in
a small JSON file written atomically after each acknowledged append, so a restart resumes
where it stopped. Delivery is at-least-once (a crash between an append and saving the
position re-ships that record once); replicas apply events idempotently by dot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptRecord, UnsupportedVersion
from .events import Codec, MsgpackCodec
from .log._protocol import Log

__all__ = ["Forwarder", "ForwardReport"]

log = logging.getLogger("crdtsync.forwarder")


@dataclass(frozen=True)
class ForwardReport:
    shipped: int
    received: int


class Forwarder:
    """Bridge ``local`` (the edge's log) and ``shared`` for replica actor ``origin``."""

    def __init__(
        self,
        local: Log,
        shared: Log,
        *,
        origin: str,
        state_path: str | os.PathLike[str] | None = None,
        codec: Codec | None = None,
        batch: int = 256,
    ) -> None:
        self.local = local
        self.shared = shared
        self.origin = origin
        self.codec = codec or MsgpackCodec()
        self.state_path = Path(state_path) if state_path is not None else None
        self.batch = batch
        self.shipped_pos: int | None = None  # last local position acknowledged by the shared log
        self.received_pos: int | None = None  # last shared position copied down
        self.connected = True
        self._load()

    def _load(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            d = json.loads(self.state_path.read_text())
            self.shipped_pos = d.get("shipped")
            self.received_pos = d.get("received")

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"shipped": self.shipped_pos, "received": self.received_pos}))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def _origin_of(self, payload: bytes) -> str | None:
        try:
            decode = getattr(self.codec, "decode_record", None)  # no Event objects for format 2
            rec = decode(payload) if decode is not None else self.codec.decode(payload)
            return rec.origin  # type: ignore[no-any-return]
        except (CorruptRecord, UnsupportedVersion):
            return None  # not ours to judge: replicas quarantine it

    async def outbox_depth(self) -> int:
        """Records of this origin in the local log not yet acknowledged by the shared log."""
        n = 0
        reader = self.local.read(self.shipped_pos or 0)
        async with contextlib.aclosing(reader):  # type: ignore[type-var]
            async for e in reader:
                if self.shipped_pos is not None and e.position <= self.shipped_pos:
                    continue
                if self._origin_of(e.payload) == self.origin:
                    n += 1
        return n

    async def run_once(self) -> ForwardReport:
        """Ship and receive everything available now (no-op while disconnected)."""
        if not self.connected:
            return ForwardReport(0, 0)
        return ForwardReport(await self._up(), await self._down())

    async def _copy(self, src: Log, after: int | None, want_own: bool, dst: Log) -> tuple[int, int | None]:
        copied = 0
        last = after
        chunk: list[bytes] = []
        chunk_last = after
        reader = src.read(after or 0)
        async with contextlib.aclosing(reader):  # type: ignore[type-var]
            async for e in reader:
                if after is not None and e.position <= after:
                    continue
                origin = self._origin_of(e.payload)
                if (origin == self.origin) == want_own and origin is not None:
                    chunk.append(e.payload)
                chunk_last = e.position
                if len(chunk) >= self.batch:
                    await dst.append(chunk)
                    copied += len(chunk)
                    chunk = []
                    last = chunk_last
        if chunk:
            await dst.append(chunk)
            copied += len(chunk)
        last = chunk_last
        return copied, last

    async def _up(self) -> int:
        n, self.shipped_pos = await self._copy(self.local, self.shipped_pos, True, self.shared)
        self._save()
        return n

    async def _down(self) -> int:
        n, self.received_pos = await self._copy(self.shared, self.received_pos, False, self.local)
        self._save()
        return n
