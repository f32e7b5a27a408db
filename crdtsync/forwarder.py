"""Store-and-forward between an edge's local log and a shared log.

An edge replica reads and writes only its own :class:`~crdtsync.log.local.LocalLog`, so
it keeps serving and recording with no network. A :class:`Forwarder` bridges that log
and a shared one (Kafka, or another LocalLog standing in for it) whenever connected:

* **up**: records of the edge's own origin are appended to the shared log, from the last
  position the shared log acknowledged;
* **down**: records of every other origin are appended to the local log, so the edge has
  them after a restart with no network.

Passes are bounded and checkpointed per batch
---------------------------------------------

A pass (one direction of :meth:`Forwarder.run_once`) copies the records that were in the
source log when it started (below the ``end()`` it read first), and at most
``max_batches`` batches of ``batch`` records if that is set; records written meanwhile
wait for the next pass, so a pass ends however fast upstream writes arrive. After every
batch the destination acknowledged, and at the end of a pass, the progress (the source
position of the last record the batch covers, foreign records skipped included) is
written to the state file. A restart resumes from there.

What a crash re-sends: the batch whose append was acknowledged (or was still in flight)
when the process died and whose checkpoint did not reach the disk; that is at most one
batch (``batch`` records), since the two directions run one after the other and each
appends one batch at a time. Nothing is lost: a position is saved only after the
append holding its records returned, i.e. after they are as durable as the destination
log promises (``LocalLog``: its fsync policy). Delivery is therefore at-least-once;
replicas apply events idempotently by dot, and count the re-sent ones as duplicates.

State file (``state_path``), JSON::

    {"shipped": int | null, "received": int | null}

``shipped`` is the last local position covered by an acknowledged up batch, ``received``
the last shared position covered by an acknowledged down batch (``null``: nothing yet).
It is replaced atomically: written to ``<state_path>.tmp``, fsynced, renamed over the
old file, and the directory fsynced. A file that is not this shape raises
:class:`~crdtsync.errors.CorruptRecord` (delete it to copy everything again).
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
from .log._protocol import Log, read_range

__all__ = ["Forwarder", "ForwardReport"]

log = logging.getLogger("crdtsync.forwarder")


@dataclass(frozen=True)
class ForwardReport:
    shipped: int
    received: int


class ForwarderState:
    """The forwarder's progress file: load it, and replace it atomically and durably.

    Format: see the module docstring. ``path=None`` keeps progress in memory only.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        #: checkpoints written (a replacement of the file each)
        self.saves = 0

    def load(self) -> tuple[int | None, int | None]:
        """(shipped, received) from the file; (None, None) when there is none."""
        if self.path is None or not self.path.exists():
            return None, None
        try:
            d = json.loads(self.path.read_text())
        except ValueError as exc:
            raise CorruptRecord(f"forwarder state {self.path} is not JSON ({exc}); delete it to copy "
                                "everything again (replicas ignore the duplicates)") from exc
        if not isinstance(d, dict) or not all(
                d.get(k) is None or (type(d.get(k)) is int and d[k] >= 0) for k in ("shipped", "received")):
            raise CorruptRecord(f"forwarder state {self.path} is not {{\"shipped\": int|null, "
                                f"\"received\": int|null}}: {str(d)[:80]}; delete it to copy everything again")
        return d.get("shipped"), d.get("received")

    def save(self, shipped: int | None, received: int | None) -> None:
        """Replace the file: write a temporary file, fsync it, rename it over, fsync the directory."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(json.dumps({"shipped": shipped, "received": received}).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.saves += 1


class Forwarder:
    """Bridge ``local`` (the edge's log) and ``shared`` for replica actor ``origin``.

    ``batch`` records go in one append; ``max_batches`` (default: no limit) caps the
    batches of one pass, on top of the bound every pass has (the source's end when the
    pass started). Progress is checkpointed to ``state_path`` after every batch (see the
    module docstring for what a crash re-sends: at most one batch).
    """

    def __init__(
        self,
        local: Log,
        shared: Log,
        *,
        origin: str,
        state_path: str | os.PathLike[str] | None = None,
        codec: Codec | None = None,
        batch: int = 256,
        max_batches: int | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be at least 1 (or None), got {max_batches}")
        self.local = local
        self.shared = shared
        self.origin = origin
        self.codec = codec or MsgpackCodec()
        self.state = ForwarderState(state_path)
        self.state_path = self.state.path
        self.batch = batch
        self.max_batches = max_batches
        self.connected = True
        #: last local position acknowledged by the shared log; last shared position copied down
        self.shipped_pos, self.received_pos = self.state.load()

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
        end = await self.local.end()
        async with contextlib.aclosing(read_range(self.local, self.shipped_pos, end)) as entries:  # type: ignore[type-var]
            async for e in entries:
                if self._origin_of(e.payload) == self.origin:
                    n += 1
        return n

    async def run_once(self) -> ForwardReport:
        """One pass up, then one pass down (no-op while disconnected).

        Each pass copies what its source held when the pass started (at most
        ``max_batches`` batches), checkpointing after every batch.
        """
        if not self.connected:
            return ForwardReport(0, 0)
        return ForwardReport(await self._pass(up=True), await self._pass(up=False))

    async def _pass(self, up: bool) -> int:
        """Copy the wanted records of the source (up: ``local``, own records; down:
        ``shared``, everyone else's) after the saved position and below the source's end
        now, checkpointing after every batch; returns how many were copied."""
        src, dst = (self.local, self.shared) if up else (self.shared, self.local)
        after = self.shipped_pos if up else self.received_pos
        end = await src.end()
        copied = batches = 0
        chunk: list[bytes] = []
        last = after
        async with contextlib.aclosing(read_range(src, after, end)) as entries:  # type: ignore[type-var]
            async for e in entries:
                origin = self._origin_of(e.payload)
                if origin is not None and (origin == self.origin) == up:
                    chunk.append(e.payload)
                last = e.position  # type: ignore[assignment]  # int positions only: shared KafkaLog forwarding is issue 10 item 5
                if len(chunk) >= self.batch:
                    await dst.append(chunk)
                    copied += len(chunk)
                    chunk = []
                    self._checkpoint(up, last)
                    batches += 1
                    if self.max_batches is not None and batches >= self.max_batches:
                        return copied
        if chunk:
            await dst.append(chunk)
            copied += len(chunk)
        if last != after:
            self._checkpoint(up, last)
        return copied

    def _checkpoint(self, up: bool, position: int | None) -> None:
        """Record ``position`` as done for one direction and save the state file."""
        if up:
            self.shipped_pos = position
        else:
            self.received_pos = position
        self.state.save(self.shipped_pos, self.received_pos)
