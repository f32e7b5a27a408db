"""The replica and its parts.

:class:`Replica` is the public face (``async with Replica.open(...)``). Inside, it is a
facade over parts that each own their state and do one job; ``docs/concepts/replica.md``
draws how they fit:

* :mod:`~crdtsync.replica.store`: state tables, context, position, reads;
* :mod:`~crdtsync.replica.writer`: local writes, dots, the pending queue, group commit;
* :mod:`~crdtsync.replica.admission`: what is accepted (identity pins, residency,
  permissions, removed incarnations, held-back future events, quarantine);
* :mod:`~crdtsync.replica.apply`: decoding and joining log records;
* :mod:`~crdtsync.replica.follower`: catch-up, tailing, position waiters;
* :mod:`~crdtsync.replica.coordination` and :mod:`~crdtsync.replica.levels`: what each
  consistency level waits for, and the real-time driver of those waits;
* :mod:`~crdtsync.replica.sequencer`: ``SEQUENCED`` operations and their outcomes;
* :mod:`~crdtsync.replica.fleet`: roster, removal, stability pruning;
* :mod:`~crdtsync.replica.heartbeats`, :mod:`~crdtsync.replica.skew`: the control
  channel and clock skew against peers;
* :mod:`~crdtsync.replica.subscriptions`, :mod:`~crdtsync.replica.persistence`
  (snapshots, recovery, compaction), :mod:`~crdtsync.replica.identity`.
"""

from __future__ import annotations

from .antientropy import AntiEntropySettings
from .facade import Replica
from .heartbeats import default_control
from .identity import ReplicaIdentity
from .sessions import Leveled, Session
from .stats import ReplicaStats
from .store import View
from .subscriptions import Change, ChangeStream

__all__ = ["Replica", "ReplicaIdentity", "Change", "ChangeStream", "View", "ReplicaStats", "Session", "Leveled",
           "default_control", "AntiEntropySettings"]
