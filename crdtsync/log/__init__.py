"""Logs: the :class:`Log` protocol, :class:`MemoryLog` and :class:`LocalLog`.

Records are opaque bytes at this layer; the event-batch codec (``crdtsync.events``) sits
above it. See ``docs/concepts/log.md`` and the module docstrings of
:mod:`crdtsync.log.local` (the on-disk format) and :mod:`crdtsync.log.memory` (faults).
"""

from __future__ import annotations

from ._protocol import Log, LogClosed, LogEntry, RecordTooLarge
from .local import CorruptRange, FsyncPolicy, LocalLog, LogStats, RecoveryReport
from .memory import MemoryFaults, MemoryLog

__all__ = [
    "CorruptRange",
    "FsyncPolicy",
    "LocalLog",
    "Log",
    "LogClosed",
    "LogEntry",
    "LogStats",
    "MemoryFaults",
    "MemoryLog",
    "RecordTooLarge",
    "RecoveryReport",
]
