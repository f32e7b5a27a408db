"""What ``crdtsync status`` shows of an edge's forwarder, read from files alone.

:func:`forwarder_status` needs no running forwarder and no network: the state file gives
the positions, the edge's local log gives the outbox depth (its records of the edge's
origin after the shipped position, counted as the forwarder counts them), and the stats
file a :class:`~crdtsync.forwarder.service.ForwarderService` keeps writing gives the
live counters (shipped, received, lag, reconnects, last error) with their age.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..events import Codec
from ..log._protocol import Log
from .passes import Forwarder
from .stats import read_stats_file, stats_path_for

__all__ = ["forwarder_status"]


async def forwarder_status(state_path: Path, local: Log, origin: str, codec: Codec | None = None) -> dict[str, Any] | None:
    """The forwarder of ``local`` (origin ``origin``) whose state is ``state_path``: a dict
    with ``state``, ``shipped``, ``received``, ``outbox_depth``, ``stats`` (the stats
    file, or None), ``stats_age_s`` and ``error`` (a damaged file, or None); None when
    there is neither a state file nor a stats file."""
    stats_path = stats_path_for(state_path)
    if not state_path.exists() and not stats_path.exists():
        return None
    out: dict[str, Any] = {"state": str(state_path), "shipped": None, "received": None, "outbox_depth": None,
                           "stats": None, "stats_age_s": None, "error": None}
    try:
        fwd = Forwarder(local, None, origin=origin, state_path=state_path, codec=codec)
        out["shipped"], out["received"] = fwd.shipped_pos, fwd.received_pos
        out["outbox_depth"] = await fwd.outbox_depth()
    except BadInput as exc:
        out["error"] = str(exc)
    try:
        stats = read_stats_file(stats_path)
    except BadInput as exc:
        out["error"] = str(exc)
        stats = None
    if stats is not None:
        out["stats"] = stats
        updated = stats.get("updated_at")
        if isinstance(updated, (int, float)):
            out["stats_age_s"] = max(0.0, time.time() - updated)
    return out
