"""The sequencer client: ``SEQUENCED`` operations and their outcomes.

A sequenced write travels as a :class:`~crdtsync.sequenced.SequencedOp` event (mutator,
args, condition) under this replica's sequencing origin ``<actor>/s``, appended to the
sequencing log (the replica's own log, or an upstream log for an edge whose own log is a
store-and-forward outbox). Every replica evaluates the op in log order against the state
it has at that point (:meth:`SequencerClient.apply_op`), so conditional ops
(compare-and-set, bounded decrement) reach the same outcome everywhere; the writer learns
it when it applies its own event. Time-stamped types get the stamp ``max(hlc, previous
stamp + 1)``, kept in the ``_seq`` state, so the later op in log order wins whatever the
writers' clocks say. An op whose append failed is cancelled by the writer's next one
(same dot, op ``""``): whichever copy comes first in log order wins and the other is a
duplicate, so no replica is left with a gap in its context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ..clock import HLC, Context, Dot
from ..errors import CorruptRecord, CrdtSyncError, Unavailable, UnsupportedVersion
from ..events import Batch, Codec, Event
from ..log._protocol import Log, Position, read_range
from ..schema import Definition
from ..sequenced import CANCEL, SEQ_FIELD, Outcome, SequencedOp, evaluate
from ..types._base import CRDT
from ..types.registers import MaxRegister
from .definitions import Definitions
from .stats import ReplicaStats
from .store import Store
from .waiting import Waiter

__all__ = ["SequencerClient"]

log = logging.getLogger("crdtsync.replica")


class SequencerClient:
    """Sequenced operations of one replica: appending them, and evaluating everyone's."""

    def __init__(self, actor: str, sequencer: Log, own_log: Log, store: Store, definitions: Definitions,
                 stats: ReplicaStats, hlc: HLC, codec: Codec, meta: Mapping[str, str], waiter: Waiter,
                 catch_up: Callable[[], Awaitable[object]], following: Callable[[], bool],
                 sync: Callable[[], Awaitable[None]]) -> None:
        self.seq_actor = f"{actor}/s"  # the origin of this replica's sequenced operations
        self.sequencer = sequencer
        self._own_log = own_log
        self._store = store
        self._definitions = definitions
        self._stats = stats
        self.hlc = hlc
        self.codec = codec
        self.meta = meta
        self._waiter = waiter
        self._catch_up = catch_up
        self._following = following
        self._sync = sync
        self.closed = False
        self.next_seq = 1
        self._unsettled: list[Event] = []  # sequenced ops whose append failed
        self._lock = asyncio.Lock()
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}
        self._scanned: Position | None = None  # sequencer position scanned by sync_to_end
        self._need = Context()  # dots seen in the sequencer up to _scanned

    # -- writing -------------------------------------------------------------------
    async def run(
        self, d: Definition, key: str, op: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        cond: tuple[str, Any] | None, timeout: float,
    ) -> tuple[Outcome, Event]:
        """Sequence one operation and wait for its outcome (``Unavailable`` on timeout)."""
        if self.closed:
            raise RuntimeError("replica is closed")
        template = d.empty()
        if op not in type(template).MUTATORS:
            raise ValueError(f"{type(template).__name__} has no mutator {op!r}; it has {list(type(template).MUTATORS)}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._lock:  # one append at a time keeps this replica's seqs in order
            # operations whose append failed come first, as cancellations with the same
            # dots: in log order either the original or its cancellation comes first, and
            # the other is a duplicate, so no seq is left as a gap in anyone's context
            events = [
                Event(u.origin, u.seq, self.hlc.now(), u.field, u.key,
                      SequencedOp(u.delta.target if isinstance(u.delta, SequencedOp) else "", CANCEL),
                      u.field_version)
                for u in self._unsettled
            ]
            ev = Event(self.seq_actor, self.next_seq, self.hlc.now(), d.name, key,
                       SequencedOp(template.TYPE_TAG, op, args, kwargs, cond), d.version)
            events.append(ev)
            fut: asyncio.Future[Outcome] = loop.create_future()
            self._outcomes[ev.seq] = fut
            record = self.codec.encode(Batch.of(events, self.meta))
            self.next_seq += 1
            try:
                await asyncio.wait_for(self.sequencer.append([record]), max(0.0, deadline - loop.time()))
            except (asyncio.TimeoutError, OSError, CrdtSyncError) as exc:
                self._unsettled.append(ev)
                self._outcomes.pop(ev.seq, None)
                raise Unavailable(
                    f"{d.name}/{key}: the log did not sequence {op} within {timeout:g}s ({type(exc).__name__}: "
                    f"{exc}); its outcome is unknown until this replica's next sequenced operation, "
                    "which either finds it applied (once, in log order) or cancels it",
                    event=ev,
                ) from exc
            self._unsettled.clear()
        try:
            if not self._following():
                await self._catch_up()
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time())), ev
        except asyncio.TimeoutError:
            raise Unavailable(
                f"{d.name}/{key}: {op} was sequenced but not applied here within {timeout:g}s; "
                "it will be applied, once, in log order",
                event=ev,
            ) from None
        finally:
            # nobody waits for it any more (answered, timed out, cancelled): a pending one
            # kept here would pile up, and closing would fail it with nobody to retrieve it
            self._outcomes.pop(ev.seq, None)

    def fail_waiting(self, exc: Exception | None = None) -> None:
        """The replica closes (or crashed): whoever waits for an outcome gets ``exc``
        (default: ``Unavailable``)."""
        for fut in self._outcomes.values():
            if not fut.done():
                fut.set_exception(exc or Unavailable("the replica closed before the operation was applied"))
        self._outcomes.clear()

    # -- applying --------------------------------------------------------------------
    def apply_op(self, ev: Event, op: SequencedOp, tbl: MutableMapping[str, CRDT[Any]], cur: CRDT[Any] | None) -> None:
        """Evaluate a sequenced operation against the state it finds, in log order
        (:func:`~crdtsync.sequenced.evaluate`), and keep what it did."""
        state = cur if cur is not None else self._definitions.get(ev.field).empty()
        before = state.value()
        stamps = self._store.tables.setdefault(SEQ_FIELD, {})
        last = stamps.get("stamp")
        done = evaluate(op, state, ev.origin, ev.hlc, int(last.value() or 0) if last is not None else None)
        if done.cancelled:  # the writer gave up on this seq before the log ordered it
            self._stats.ops_cancelled += 1
            return
        if done.state is not None:
            tbl[ev.key] = done.state
            stamps["stamp"] = (last if last is not None else MaxRegister()).join(
                MaxRegister().set(done.stamp, actor=ev.origin))
        elif done.failed:
            self._stats.reject("op_failed")
        elif done.error is None:
            self._stats.ops_refused += 1
        if ev.origin == self.seq_actor:
            fut = self._outcomes.pop(ev.seq, None)
            if fut is not None and not fut.done():
                after = tbl[ev.key].value() if ev.key in tbl else before
                fut.set_result(Outcome(done.applied, before, after, None, done.error))

    # -- LINEARIZABLE reads ---------------------------------------------------------
    async def sync_to_end(self, timeout: float | None = None) -> None:
        """Wait until everything the sequencing log holds now is applied here (see
        :meth:`Replica.sync_to_end`)."""
        wait = 5.0 if timeout is None else timeout
        try:
            if self.sequencer is self._own_log:
                await asyncio.wait_for(self._sync(), wait)
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            need = await asyncio.wait_for(self._sequencer_dots(), wait)
        except (asyncio.TimeoutError, OSError, CrdtSyncError) as exc:
            raise Unavailable(
                f"could not sync to the sequencing log's end within {wait:g}s ({type(exc).__name__}: {exc})"
            ) from exc
        if not await self._waiter.until(lambda: need <= self._store.ctx(), max(0.0, deadline - loop.time())):
            raise Unavailable(
                f"the sequencing log's records did not reach this replica within {wait:g}s "
                "(is its forwarder running?)"
            )

    async def _sequencer_dots(self) -> Context:
        end = await self.sequencer.end()
        dots: list[Dot] = []
        async for entry in read_range(self.sequencer, self._scanned, end):
            try:
                dots.extend(ev.dot for ev in self.codec.decode(entry.payload).events)
            except (CorruptRecord, UnsupportedVersion) as exc:
                # the apply loop quarantines and counts it when it arrives here
                log.debug("skipping an undecodable sequencer record at %s: %s", entry.position, exc)
            self._scanned = entry.position
        self._need = self._need.add_all(dots) if dots else self._need
        return self._need
