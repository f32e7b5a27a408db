"""The fold: the state of fields of an entity at a causal context, rebuilt from the log.

State at context ``C`` is the join of the deltas of the events whose dots are in ``C``
(invariant 3 of ARCHITECTURE.md). A ``SEQUENCED`` field's state is not a join: its
operations are replayed in log order with the replica's own evaluation (see
:meth:`Fold._sequenced_state`). :class:`Fold` computes it for any (fields, key, C)
from an :class:`~crdtsync.inference.history.EventHistory`, starting from the newest
:class:`~crdtsync.inference.history.Checkpoint` whose context is inside ``C`` when there
is one (the log before it may have been compacted away) and joining the events of ``C``
the checkpoint lacks. Before folding it checks that every dot of ``C`` is available (in
the checkpoint or the log): if not, the events were compacted away
(:class:`~crdtsync.errors.BeyondHorizon`) or the log lost or never had them
(:class:`~crdtsync.errors.LineageMismatch`), so a fold never silently answers from
partial history.

:func:`~crdtsync.inference.explain` and :func:`~crdtsync.inference.as_of` (point-in-time
training data) both use this class, so serving and training read one reality.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crdtsync.clock import Context
from crdtsync.errors import BeyondHorizon, LineageMismatch
from crdtsync.policy import SEQUENCED
from crdtsync.schema import SCHEMA_FIELD, Definition, Schema
from crdtsync.sequenced import SEQ_FIELD, evaluate
from crdtsync.types._base import CRDT

from .history import Checkpoint, CheckpointStore, EventHistory

__all__ = ["Fold", "EventRef"]


@dataclass(frozen=True)
class EventRef:
    """One event behind a rebuilt value."""

    field: str
    origin: str
    seq: int
    hlc: int
    position: int
    delta: Any  # the delta's value, for humans

    @property
    def replica(self) -> str:
        """The name of the replica that wrote it (the origin without its incarnation)."""
        return self.origin.split("~", 1)[0]


class Fold:
    """Rebuilds state at a context from an event history and checkpoints."""

    def __init__(self, history: EventHistory, checkpoints: CheckpointStore | None = None,
                 schema: Schema | None = None) -> None:
        self.history = history
        self.checkpoints = checkpoints
        self.schema = schema
        self._defs: dict[str, Definition] = {}
        self._joinable: set[str] = set()
        #: the last SEQUENCED replay: (context, base, states), reused for its other fields
        self._replayed: tuple[Context, Checkpoint | None, int, dict[tuple[str, str], CRDT[Any]]] | None = None

    async def refresh(self) -> None:
        """Read what the log gained since the last refresh."""
        await self.history.refresh()
        self._replayed = None

    # -- definitions ----------------------------------------------------------------
    def definition(self, field: str) -> Definition:
        known = self._defs.get(field)
        if known is not None:
            return known
        d: Definition | None = None
        if self.schema is not None and field in self.schema:
            d = self.schema.get(field)
        if d is None:
            regs = self.history.of(SCHEMA_FIELD, field)
            if not regs:
                raise KeyError(f"no definition of field {field!r}: pass schema= or keep the log's _schema events")
            state = regs[0].delta
            for e in regs[1:]:
                state = state.join(e.delta)
            d = Definition.from_dict(state.value())
        self._defs[field] = d
        return d

    # -- bases and coverage ----------------------------------------------------------
    def base_for(self, ctx: Context) -> Checkpoint | None:
        """The newest checkpoint whose context is inside ``ctx`` (``None``: none is)."""
        if self.checkpoints is None:
            return None
        best = None
        for cp in self.checkpoints.all():
            if cp.context <= ctx and (best is None or len(cp.context) > len(best.context)):
                best = cp
        return best

    def check(self, ctx: Context, base: Checkpoint | None) -> None:
        """Raise unless every dot of ``ctx`` is in ``base`` or the history."""
        have = self.history.seen if base is None else base.context.join(self.history.seen)
        if ctx <= have:
            return
        gaps = []
        for r in sorted(ctx.replicas()):
            for a, b in have.missing(r, 1, ctx.max_seq(r)):
                lacking = sum(y - x + 1 for x, y in ctx.missing(r, a, b))
                if lacking < b - a + 1:
                    gaps.append(f"{r}:{a}" if a == b else f"{r}:{a}-{b}")
        where = ", ".join(gaps[:6]) + (" ..." if len(gaps) > 6 else "")
        first = self.history.first_position
        if first is not None and first > 0:
            raise BeyondHorizon(
                f"the state at this context needs events {where}, which the log no longer holds "
                f"(compacted before position {first}) and no kept checkpoint precedes the context; "
                "keep a longer lineage horizon (Retention(horizon=...)) to explain older decisions")
        bad = f"; {len(self.history.undecodable)} damaged records were skipped" if self.history.undecodable else ""
        raise LineageMismatch(
            f"the event log lacks events {where} of the recorded context although nothing was compacted "
            f"(lost, damaged or altered log{bad})")

    # -- folding ------------------------------------------------------------------------
    def state(self, field: str, key: str, ctx: Context, base: Checkpoint | None = None) -> CRDT[Any]:
        """The state of ``field`` of ``key`` at ``ctx`` (call :meth:`check` first)."""
        if field not in self._joinable:
            if self.definition(field).policy.resolve().write == SEQUENCED:
                return self._sequenced_state(field, key, ctx, base)
            self._joinable.add(field)
        st: CRDT[Any] | None = None
        bctx = None
        if base is not None:
            st = base.state.get(field, {}).get(key)
            bctx = base.context
        for e in self.history.of(field, key):
            d = (e.origin, e.seq)
            if d in ctx and (bctx is None or d not in bctx):
                st = e.delta if st is None else st.join(e.delta)
        return st if st is not None else self.definition(field).empty()

    def _sequenced_state(self, field: str, key: str, ctx: Context, base: Checkpoint | None) -> CRDT[Any]:
        """The state of a ``SEQUENCED`` field at ``ctx``: its operations are not joined but
        evaluated one after the other in log order (each against the state it finds, with
        a stamp above every earlier one), so the fold replays every sequenced operation
        of ``ctx`` (of every field: they share the stamp) in the order of the log, from
        ``base`` when there is one, with the replica's own evaluation
        (:func:`~crdtsync.sequenced.evaluate`). A dot the log holds twice (an operation
        and its cancellation) counts where it comes first, as it did at the replica."""
        got = self._replayed
        ops = len(self.history.sequenced)
        if got is None or got[0] is not ctx or got[1] is not base or got[2] != ops:
            got = self._replayed = (ctx, base, ops, self._replay(ctx, base))
        st = got[3].get((field, key))
        if st is None and base is not None:
            st = base.state.get(field, {}).get(key)
        return st if st is not None else self.definition(field).empty()

    def _replay(self, ctx: Context, base: Checkpoint | None) -> dict[tuple[str, str], CRDT[Any]]:
        states: dict[tuple[str, str], CRDT[Any]] = {}
        bctx = base.context if base is not None else None
        stamp: int | None = None
        if base is not None:
            kept = base.state.get(SEQ_FIELD, {}).get("stamp")
            stamp = int(kept.value() or 0) if kept is not None else None
        seen: set[tuple[str, int]] = set()
        for field, key, e in self.history.sequenced:
            d = (e.origin, e.seq)
            if d not in ctx or (bctx is not None and d in bctx) or d in seen:
                continue
            seen.add(d)
            where = (field, key)
            cur = states.get(where)
            if cur is None:
                cur = base.state.get(field, {}).get(key) if base is not None else None
                if cur is None:
                    cur = self.definition(field).empty()
            done = evaluate(e.delta, cur, e.origin, e.hlc, stamp)  # type: ignore[arg-type]
            if done.state is not None:
                states[where] = done.state
                stamp = done.stamp
        return states

    def values(self, fields: Iterable[str], key: str, ctx: Context) -> dict[str, Any]:
        """The values of ``fields`` of ``key`` at ``ctx`` (checked: see :meth:`check`)."""
        base = self.base_for(ctx)
        self.check(ctx, base)
        return {f: self.state(f, key, ctx, base).value() for f in fields}

    def events(self, fields: Iterable[str], key: str, ctx: Context) -> list[EventRef]:
        """The events of ``fields`` of ``key`` inside ``ctx`` that the log still holds,
        oldest first (events only in a checkpoint are not listed one by one)."""
        out = []
        for f in fields:
            for e in self.history.of(f, key):
                if (e.origin, e.seq) in ctx:
                    out.append(EventRef(f, e.origin, e.seq, e.hlc, e.position, _show(e.delta)))
        out.sort(key=lambda r: (r.hlc, r.origin, r.seq))
        return out


def _show(delta: CRDT[Any]) -> Any:
    try:
        return delta.value()
    except Exception as exc:  # a delta alone may not have a meaningful value
        return f"<{type(delta).__name__}: {type(exc).__name__}>"
