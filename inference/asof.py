"""Point-in-time state: ``as_of(replica, context | time)`` and training-set export.

Both use :class:`~crdtsync.inference.fold.Fold`, the fold :func:`explain` uses, so the
values a training set gets for (entity, time) are the values a prediction made then read.

A **context** names a state exactly. A **time** is turned into a context in one of two
ways:

* with a :class:`Timeline` of ``(time, context)`` samples of one replica (every lineage
  record is one: :meth:`Timeline.from_lineage`; :meth:`Timeline.sample` adds one now),
  the context at ``t`` is that of the latest sample at or before ``t``: what that replica
  had applied then, to the resolution of the samples (a prediction's own time gives
  exactly the context it read);
* without one, the *event-time* cut: every event the log holds stamped at or before
  ``t`` (what a replica that had received everything would have had).

:func:`point_in_time` exports many (entity key, time) pairs as rows (a pandas DataFrame
with ``as_frame=True`` when pandas is installed).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crdtsync.clock import Context

from .fold import Fold
from .history import EventHistory
from .lineage_log import LineageReader

if TYPE_CHECKING:
    from crdtsync.replica import Replica

__all__ = ["Timeline", "PointInTime", "as_of", "point_in_time", "event_time_context"]


class Timeline:
    """``(time, context)`` samples of one replica, in time order."""

    def __init__(self, samples: Iterable[tuple[int, Context]] = ()) -> None:
        pairs = sorted(samples, key=lambda p: p[0])
        self.times = [t for t, _ in pairs]
        self.contexts = [c for _, c in pairs]

    @classmethod
    def from_lineage(cls, reader: LineageReader, replica: str) -> Timeline:
        """Every prediction of actor ``replica`` in a lineage log is a sample."""
        recs = (reader.get(pid) for pid in reader.ids())
        return cls((r.time, r.context) for r in recs if r.replica == replica)

    def sample(self, replica: Replica) -> None:
        """Add the replica's context now."""
        self.add(replica.hlc.peek(), replica.context)

    def add(self, time: int, ctx: Context) -> None:
        i = bisect.bisect_right(self.times, time)
        self.times.insert(i, time)
        self.contexts.insert(i, ctx)

    def at(self, time: int) -> Context | None:
        """The context of the latest sample at or before ``time`` (``None``: none)."""
        i = bisect.bisect_right(self.times, time)
        return self.contexts[i - 1] if i else None


def event_time_context(history: EventHistory, time: int) -> Context:
    """Every dot the history holds of an event stamped at or before ``time`` (HLC)."""
    dots = [(e.origin, e.seq) for evs in history.events.values() for e in evs if e.hlc <= time]
    return Context.from_dots(dots)  # type: ignore[arg-type]


@dataclass
class PointInTime:
    """State at one context, read like a replica."""

    fold: Fold
    context: Context

    def value(self, field: str, key: str) -> Any:
        return self.view(key, [field])[field]

    def view(self, key: str, fields: Sequence[str]) -> dict[str, Any]:
        return self.fold.values(fields, key, self.context)


def _context(fold: Fold, at: Context | int, timeline: Timeline | None) -> Context:
    if isinstance(at, Context):
        return at
    if timeline is not None:
        ctx = timeline.at(at)
        return ctx if ctx is not None else Context()
    return event_time_context(fold.history, at)


async def as_of(source: Replica | Fold, at: Context | int, *, timeline: Timeline | None = None) -> PointInTime:
    """The state of ``source`` (a replica: folded from its log; or a ready
    :class:`Fold`) at a context or an HLC time (see the module doc)."""
    fold = source if isinstance(source, Fold) else Fold(EventHistory(source.log, source.codec), schema=source.schema)
    await fold.refresh()
    return PointInTime(fold, _context(fold, at, timeline))


def point_in_time(fold: Fold, pairs: Iterable[tuple[str, int]], fields: Sequence[str], *,
                  timeline: Timeline | None = None, as_frame: bool = False) -> Any:
    """Feature values for each (entity key, HLC time) pair: rows ``{"key", "time", field...}``
    (a pandas DataFrame with ``as_frame=True``). Call ``await fold.refresh()`` first."""
    rows = []
    memo: dict[int, Context] = {}
    for key, t in pairs:
        ctx = memo.get(t)
        if ctx is None:
            ctx = memo[t] = _context(fold, t, timeline)
        rows.append({"key": key, "time": t, **fold.values(fields, key, ctx)})
    if as_frame:
        import pandas as pd

        return pd.DataFrame(rows, columns=["key", "time", *fields])
    return rows
