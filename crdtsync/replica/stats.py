"""The counters a replica keeps (exported as metrics by ``crdtsync.telemetry``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ReplicaStats"]


@dataclass
class ReplicaStats:
    """Counters a replica keeps (exported as metrics by ``crdtsync.telemetry``)."""

    events_applied: int = 0
    events_local: int = 0
    events_duplicate: int = 0
    records_applied: int = 0
    records_quarantined: int = 0
    events_rejected: dict[str, int] = field(default_factory=dict)
    subscriber_errors: int = 0
    snapshots_written: int = 0
    #: sequenced operations whose condition did not hold (same count at every replica)
    ops_refused: int = 0
    #: sequenced operations cancelled by their writer before the log ordered them
    ops_cancelled: int = 0
    #: times a field's freshness SLO (``Eventual(max_lag=...)``) went from met to missed
    slo_breaches: dict[str, int] = field(default_factory=dict)
    #: local writes refused (``ClockSkew``) because this replica's clock was ahead of its peers'
    clock_skew: int = 0
    #: remote events held back now because their timestamp is ahead of this clock (they are
    #: applied once it catches up; ``events_rejected["future_timestamp"]`` counts arrivals)
    events_held: int = 0
    #: flushes and snapshots the disk refused (``StorageFull``/``StorageUnavailable``)
    storage_errors: int = 0

    def reject(self, reason: str, n: int = 1) -> None:
        self.events_rejected[reason] = self.events_rejected.get(reason, 0) + n

