"""The real-time driver of the consistency levels: ``await replica.update/read``.

It sequences a leveled operation: admission checks the write, the field's policy resolves
the level (an override may only strengthen it), ``SEQUENCED`` goes to the sequencer
client, ``LOG`` syncs the log, ``LINEARIZABLE`` syncs to the sequencing log's end, and
every other level waits, in real time, for the :class:`~crdtsync.replica.coordination.Wait`
the coordinator builds (the simulated cluster drives the same waits by stepping).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import PolicyViolation, Unavailable
from ..events import Event
from ..log._protocol import Log
from ..policy import ACKS, ALL, LINEARIZABLE, LOCAL, LOG, QUORUM, SEQUENCED, ReadLevel, WriteLevel
from ..sequenced import Outcome
from ..types.registers import LWWRegister
from .admission import Admission
from .coordination import Coordinator, Wait
from .definitions import Definitions
from .handles import WriteHandle, make_handle
from .heartbeats import Heartbeats
from .sequencer import SequencerClient
from .store import Store
from .waiting import Waiter
from .writer import Writer

__all__ = ["LevelDriver"]


class LevelDriver:
    """Leveled writes and reads of one replica, waiting in real time."""

    def __init__(self, admission: Admission, definitions: Definitions, coordinator: Coordinator,
                 writer: Writer, sequencer: SequencerClient, heartbeats: Heartbeats, waiter: Waiter,
                 store: Store, log_: Log) -> None:
        self._admission = admission
        self._definitions = definitions
        self._coord = coordinator
        self._writer = writer
        self._sequencer = sequencer
        self._heartbeats = heartbeats
        self._waiter = waiter
        self._store = store
        self.log = log_
        self._handles: dict[tuple[str, str], WriteHandle] = {}
        self._not_local: dict[tuple[str, str], object] = {}  # -> the writer generation it was true at

    async def wait(self, w: Wait, timeout: float) -> None:
        """Run ``w`` in real time; raise its failure if it runs out."""
        ok = w.ready()
        if not ok and w.patient:
            if w.prompt:
                await self._heartbeats.publish()
            ok = await self._waiter.until(w.ready, timeout)
        if not ok:
            exc = w.failure(f"{timeout:g}s")
            if exc is not None:
                raise exc

    def _local(self, field_name: str, key: str, op: str, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Event | None:
        """An ``update`` of a field written at ``LOCAL``, through a cached write handle:
        the event, queued; None if the field is not written at ``LOCAL`` (the caller
        takes the general path)."""
        h = self._handles.get((field_name, op))
        if h is None:
            if self._not_local.get((field_name, op)) is self._writer.generation:
                return None
            try:
                h = make_handle(self._writer, field_name, op)
            except PolicyViolation:  # not LOCAL: remembered until the writer's plans change
                self._not_local[(field_name, op)] = self._writer.generation
                return None
            self._handles[(field_name, op)] = h
        try:
            h(key, *args, **kwargs)
        except PolicyViolation:  # the policy changed since the handle was made
            del self._handles[(field_name, op)]
            return None
        q = self._writer.queue
        return q.event(len(q.keys) - 1)

    async def update(self, field_name: str, key: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                     write: WriteLevel | None, timeout: float | None) -> Event:
        if write is None and timeout is None:
            ev = self._local(field_name, key, op, args, kwargs)
            if ev is not None:
                await self._writer.flush(linger=True)  # concurrent update() calls share one append
                return ev
        d = self._admission.check_write(field_name, key)
        res = d.policy.resolve(write=write)
        level, wait = res.write, (timeout if timeout is not None else res.timeout)
        if level == SEQUENCED:
            outcome, ev = await self._sequencer.run(d, key, op, args, kwargs, None, wait)
            if outcome.error is not None:
                raise ValueError(f"{field_name}/{key}: {op} failed at apply: {outcome.error}")
            return ev
        if isinstance(level, (ACKS, QUORUM, ALL)):
            try:
                self._coord.check_reachable(level, res.on_unavailable)
            except Unavailable:
                await asyncio.sleep(0)  # a caller retrying in a loop must not starve the heartbeats
                raise
        ev = self._writer.write_raw(field_name, key, d.empty, op, args, kwargs, d.version, d.type is LWWRegister)
        await self._writer.flush(linger=True)  # concurrent update() calls share one append
        if level == LOCAL:
            return ev
        if level == LOG:
            sync = getattr(self.log, "sync", None)
            if sync is not None:
                try:
                    await asyncio.wait_for(sync(), wait)
                except (asyncio.TimeoutError, OSError) as exc:
                    raise Unavailable(f"the log did not confirm {ev.dot} within {wait:g}s: {exc}", event=ev) from exc
            return ev
        self._heartbeats.wake()
        await self.wait(self._coord.ack_wait(level, res.on_unavailable, ev, f"{field_name}/{key}", "here"), wait)
        return ev

    async def read(self, field_name: str, key: str, level: ReadLevel | None, timeout: float | None) -> Any:
        d = self._definitions.get(field_name)
        res = d.policy.resolve(read=level)
        wait = timeout if timeout is not None else res.timeout
        if res.read == LINEARIZABLE:
            await self._sequencer.sync_to_end(wait)
        else:
            w = self._coord.read_wait(res.read, res.on_unavailable, field_name)
            if w is not None:
                await self.wait(w, wait)
        return self._store.value(field_name, key)

    async def conditional(self, field_name: str, key: str, op: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any], cond: tuple[str, Any] | None,
                          timeout: float | None) -> Outcome:
        d = self._admission.check_write(field_name, key)
        res = d.policy.resolve()
        if res.write != SEQUENCED:
            raise PolicyViolation(
                f"conditional operations need a SEQUENCED field (Strong() or Tunable(write=SEQUENCED)); "
                f"{field_name!r} is written at {res.write!r}, where replicas could disagree on the outcome"
            )
        outcome, _ = await self._sequencer.run(d, key, op, args, kwargs, cond,
                                               timeout if timeout is not None else res.timeout)
        return outcome


