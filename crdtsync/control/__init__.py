"""The control channel: replica heartbeats and what is derived from them.

Every replica periodically publishes a heartbeat: who it is, the context of everything it
has applied, its wall and HLC time, log positions, pings and answers. What the policy
engine asks (acks, quorums, staleness, causal stability) is answered from them. The
package, by job:

* :mod:`~crdtsync.control.heartbeat`: :class:`Heartbeat`, the self-contained report and
  its wire format;
* :mod:`~crdtsync.control.stream`: heartbeats on the wire as a *stream* per sender:
  numbered messages carrying only what changed since the previous one, with a periodic
  full one; a receiver never applies a delta on a base it does not hold;
* :mod:`~crdtsync.control.membership`: :class:`Membership`, the latest heartbeat of every
  known replica and the queries derived from it;
* :mod:`~crdtsync.control.topology`: roles (peer, hub, edge) and who reads whom;
* :mod:`~crdtsync.control.aggregate`: what a hub publishes for its edges (fleet sizes,
  acks of recent writes, staleness frontier, stability, quorum-read answers) and the
  edge's view built from it;
* :mod:`~crdtsync.control.transport`: the transport interfaces (one stream, or topics);
  :mod:`~crdtsync.control.memory` and :mod:`~crdtsync.control.directory` implement them.
"""

from __future__ import annotations

from ..errors import ReplicaRemoved
from .directory import DirectoryControl
from .heartbeat import HEARTBEAT_VERSION, Heartbeat
from .membership import Membership, MembershipStats
from .memory import MemoryControl
from .transport import ControlChannel, ControlTransport, Deliver

__all__ = [
    "HEARTBEAT_VERSION",
    "ControlChannel",
    "ControlTransport",
    "Deliver",
    "DirectoryControl",
    "MemoryControl",
    "Heartbeat",
    "Membership",
    "MembershipStats",
    "ReplicaRemoved",
]
