"""Typed errors raised by crdtsync.

Every error a caller may want to handle has its own class, and every message says
what went wrong and what to do about it. All inherit from :class:`CrdtSyncError`, so
``except crdtsync.errors.CrdtSyncError`` catches everything the library raises on
purpose (a bug still surfaces as a plain Python exception).

Bad input (a corrupt record, an unknown format version, a timestamp from the future)
raises one of the *input* errors below; the replica's apply loop quarantines and counts
the offending record and keeps going.

A filesystem that refuses a write (full, read-only, permission denied, failing) raises a
*storage* error: :class:`StorageFull` or :class:`StorageUnavailable`. They are also
``OSError`` (see :class:`StorageError`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CrdtSyncError",
    "BadInput",
    "CorruptRecord",
    "UnsupportedVersion",
    "FutureTimestamp",
    "IncompatibleState",
    "DotReuse",
    "StaleRead",
    "Unavailable",
    "TopicMismatch",
    "TopicUnavailable",
    "ClockSkew",
    "PreconditionFailed",
    "ResidencyViolation",
    "PermissionDenied",
    "InsufficientRights",
    "LogClosed",
    "RecordTooLarge",
    "PolicyViolation",
    "ReplicaRemoved",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "DataDirLocked",
    "ModelInputError",
    "ModelUnavailable",
    "LineageNotFound",
    "BeyondHorizon",
    "LineageMismatch",
]


class CrdtSyncError(Exception):
    """Base class of every error crdtsync raises on purpose."""


class BadInput(CrdtSyncError, ValueError):
    """Input from outside (bytes, events, timestamps) was rejected; nothing was applied."""


class CorruptRecord(BadInput):
    """Bytes could not be decoded: truncated, bit-flipped, hostile or not crdtsync data.

    The record is rejected whole. If it came from a log, the replica quarantines it and
    keeps applying the rest; re-fetch the data from a healthy replica if it matters.
    """


class UnsupportedVersion(BadInput):
    """The data was written in a format version this build does not understand.

    Upgrade crdtsync on this replica (readers must be at least as new as writers).
    """


class FutureTimestamp(BadInput):
    """A remote hybrid-logical-clock time is further ahead of local time than allowed.

    Either the sender's clock is wrong or this host's is: check NTP on both. The event
    was not applied; raise ``max_drift_ms`` only if the skew is expected.
    """


class IncompatibleState(CrdtSyncError, ValueError):
    """Two states of the same type cannot be joined (their parameters differ).

    For example two HyperLogLogs of different precision, or two windowed aggregates with
    different bucket widths: they belong to different feature definitions.
    """


class DotReuse(IncompatibleState):
    """Two states use one dot (writer, seq) for two different writes; joining them would
    silently keep only one.

    A mutator takes its writer's next dot from the state it is called on, so two
    mutations by one actor computed from the same state (``d1 = s.enable(actor="a")``,
    ``d2 = s.disable(actor="a")``) get the same dot. Apply each delta to the state before
    making the next one (``s = s.join(d1)``, then ``s.disable(...)``), or use the
    :class:`~crdtsync.replica.Replica`, which does. A re-delivered identical delta is not
    misuse and joins as a no-op. Nothing was joined.

    Attributes:
        dot: the reused dot.
    """

    def __init__(self, message: str, *, dot: Any = None) -> None:
        super().__init__(message)
        self.dot = dot


class StaleRead(CrdtSyncError):
    """A read asked for fresher data than this replica can currently prove it has."""


class Unavailable(CrdtSyncError):
    """The coordination a strong or quorum operation needs could not be had in time.

    Attributes:
        event: for an acknowledged-write level (``ACKS``/``QUORUM``/``ALL``/``LOG``) whose
            event was already written locally, that event; ``None`` when nothing was
            written. What happened to it depends on the level: a timed-out ack write is
            *not* withdrawn: it stays applied and keeps replicating (see
            ``Replica.update``); a ``SEQUENCED`` operation whose append timed out has an
            unknown outcome and may still be applied once, in log order.
    """

    def __init__(self, message: str, *, event: Any = None) -> None:
        super().__init__(message)
        self.event = event


class ClockSkew(Unavailable):
    """This replica's clock is ahead of its peers' by more than the drift bound.

    Peers would hold back anything it stamps now (until their clocks catch up), so the
    write was refused before anything was written (``event`` is ``None``). Fix the host's
    clock; writes resume by themselves once it agrees with the fleet's.

    Attributes:
        ahead_ms: how far ahead of the fleet's clock (the median of its peers') it is.
    """

    def __init__(self, message: str, *, ahead_ms: int) -> None:
        super().__init__(message)
        self.ahead_ms = ahead_ms


class PreconditionFailed(CrdtSyncError):
    """A conditional operation (compare-and-set, bounded decrement) did not hold.

    Attributes:
        current: the value the condition was evaluated against (when known).
    """

    def __init__(self, message: str, *, current: Any = None) -> None:
        super().__init__(message)
        self.current = current


class ResidencyViolation(CrdtSyncError):
    """A field was written, carried or applied outside the regions it is limited to."""


class PermissionDenied(CrdtSyncError):
    """The writer's role may not write this field."""


class InsufficientRights(PreconditionFailed):
    """A bounded-counter decrement exceeds the rights this replica holds locally."""


class LogClosed(CrdtSyncError):
    """The log was closed (or failed and closed itself); open it again to keep using it."""


class RecordTooLarge(CrdtSyncError, ValueError):
    """A record is larger than the log's ``max_record_bytes``; nothing was appended.

    Split the batch into smaller records, or raise ``max_record_bytes`` on every process
    that opens the log (readers reject records above their own limit as corrupt).
    """


class TopicMismatch(CrdtSyncError, ValueError):
    """A Kafka topic exists with another partition count than the log's setting.

    The message names the topic, both counts and what to do: open the log with the
    topic's count, or create a new namespace's topic with the right one (Kafka cannot
    shrink a topic, and the key-to-partition map changes when it grows).
    """


class TopicUnavailable(Unavailable):
    """A Kafka topic the log needs is missing and could not be created (no permission,
    creation disabled, or the broker refused); the message says what to create."""


class PolicyViolation(CrdtSyncError, ValueError):
    """A per-call override asked for a weaker (or incomparable) level than the definition's,
    or an operation the field's policy does not allow (a conditional operation on a field
    that is not ``SEQUENCED``).

    Overrides may only strengthen a field's policy. Use the definition's level, a stronger
    one, or change the definition (a new definition version).
    """


class ReplicaRemoved(BadInput):
    """A replica incarnation that was removed from the fleet tried to take part again.

    Its metadata may already have been pruned, so merging it again could resurrect or
    lose data. Restart that replica with a fresh data directory: it rejoins as a new
    incarnation and catches up from the log.
    """


class StorageError(CrdtSyncError, OSError):
    """The filesystem refused a write crdtsync needed; base of the two classes below.

    Also an :class:`OSError` carrying the original ``errno`` and ``filename`` (the original
    error is ``__cause__``): code that caught ``OSError`` before these classes existed,
    or that switches on ``errno``, keeps working, while ``except CrdtSyncError`` now
    catches storage trouble as well. ``str()`` is the message alone: what failed, what
    happened to the data, and what to do. Nothing half-written is left behind: a failed
    append appends nothing, a failed snapshot removes its temporary file.
    """

    def __str__(self) -> str:
        return self.strerror if isinstance(self.strerror, str) else super().__str__()


class StorageFull(StorageError):
    """No space (``ENOSPC``) or no quota (``EDQUOT``) left on the filesystem.

    Free space (or raise the quota) and retry. A replica keeps serving reads meanwhile
    and keeps writes that could not be appended queued: its next ``flush`` (every
    ``update`` flushes) appends them once there is space.
    """


class StorageUnavailable(StorageError):
    """The filesystem refuses writes for another reason: it is read-only (``EROFS``,
    often the kernel's reaction to I/O errors), permission is denied (``EACCES``,
    ``EPERM``) or the device fails (``EIO``). The message says which, and what to do.
    """


class DataDirLocked(CrdtSyncError):
    """Another replica holds this data directory (an OS lock taken by ``Replica.open``).

    Two processes on one data directory would be one actor twice: their events would
    share seqs and replicas would drop one of each pair. Stop the holder first, or give
    this process a data directory of its own. The lock is released on ``close`` and when
    the holding process dies, so this error never outlives its holder.

    Attributes:
        path: the data directory.
        pid, host, replica, since: the holder (process id, host name, replica name, Unix
            time it took the lock), as it described itself; ``None`` where unknown.
    """

    def __init__(self, message: str, *, path: str, pid: int | None = None, host: str | None = None,
                 replica: str | None = None, since: float | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid
        self.host = host
        self.replica = replica
        self.since = since


# -- inference and lineage (crdtsync.inference) ----------------------------------------


class ModelInputError(BadInput):
    """Feature values do not fit a model's inputs (missing value, wrong type, a dtype or
    shape the model does not take, a feature the mapping does not name); nothing was run."""


class ModelUnavailable(CrdtSyncError):
    """The model a lineage record names (by identity) is not available to re-run; give it
    (``models=`` / ``--model``) or archive it next to the lineage log."""


class LineageNotFound(CrdtSyncError, KeyError):
    """No lineage record has this prediction id (in this lineage log)."""


class BeyondHorizon(CrdtSyncError):
    """The state at a recorded context can no longer be rebuilt: the events it needs were
    compacted away and no kept checkpoint precedes it (outside the configured horizon)."""


class LineageMismatch(CrdtSyncError):
    """Re-running a prediction did not reproduce it: the rebuilt inputs' digest or the
    outputs differ from the lineage record (the event log or the model was altered)."""
