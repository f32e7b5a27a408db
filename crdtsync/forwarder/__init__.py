"""Store-and-forward between an edge's local log and a shared log (another LocalLog, or Kafka).

An edge replica reads and writes only its own :class:`~crdtsync.log.local.LocalLog`, so
it keeps serving and recording with no network: the local log is its **outbox**. A
:class:`Forwarder` bridges that log and a shared one whenever connected:

* **up**: records of the edge's own origin are appended to the shared log, from the last
  local position the shared log acknowledged. On a partitioned shared log
  (:class:`~crdtsync.adapters.kafka.KafkaLog`) each record goes to the partition the log
  routes it to (its ``partition_of``): a batch is split into one append per partition;
* **down**: records of every other origin are appended to the local log, so the edge has
  them after a restart with no network.

:class:`ForwarderService` runs it for good: it opens the shared log, passes while the
link works, and reconnects with capped, jittered exponential :class:`Backoff` when the
broker is unreachable. :class:`ForwarderStats` (``forwarder.stats``, and the stats file
``crdtsync status`` shows) counts what was shipped and received, the outbox depth, lag,
reconnects and the last error. Setup and operation: ``docs/guides/edge.md``.

Passes are bounded and checkpointed per batch
---------------------------------------------

A pass (one direction of :meth:`Forwarder.run_once`) copies the records that were in the
source log when it started (below the ``end()`` it read first), and at most
``max_batches`` batches of ``batch`` records if that is set; records written meanwhile
wait for the next pass, so a pass ends however fast upstream writes arrive. After every
batch the destination acknowledged (every partition's append of it), and at the end of a
pass, the progress (the source position of the last record the batch covers, foreign
records skipped included) is written to the state file. A restart resumes from there.

What a crash re-sends: the batch whose append was acknowledged (or was still in flight)
when the process died and whose checkpoint did not reach the disk; that is at most one
batch (``batch`` records) per direction, since the two directions run one after the
other and each appends one batch at a time (its partitions' appends concurrently). A
batch split over partitions of which some appends landed and one failed is sent again
whole. Nothing is lost: a position is saved only after every append holding its records
returned, i.e. after they are as durable as the destination log promises (``LocalLog``:
its fsync policy; Kafka: ``acks="all"``). Delivery is therefore at-least-once; replicas
apply events idempotently by dot, and count the re-sent ones as duplicates.

Positions are the logs' own: ints for a LocalLog, a
:class:`~crdtsync.log.VectorPosition` (one offset per partition) for Kafka; the forwarder
compares them only through :mod:`crdtsync.log._protocol` (``covers``, ``read_range``).

State file (``state_path``), JSON, see :mod:`~crdtsync.forwarder.state`::

    {"version": 2, "shipped": position | null, "received": position | null}

``shipped`` is the last local position covered by an acknowledged up batch, ``received``
the last shared position covered by an acknowledged down batch (``null``: nothing yet);
a vector position is ``[[offset, ...], partition, generation]``. The first format,
``{"shipped": int | null, "received": int | null}``, is still read. The file is replaced
atomically: written to ``<state_path>.tmp``, fsynced, renamed over the old file, and the
directory fsynced. A file that is not this shape, or a position of another kind of log
than the one it is used with, raises :class:`~crdtsync.errors.CorruptRecord` (delete it
to copy everything again); one of a newer version :class:`~crdtsync.errors.UnsupportedVersion`.
"""

from __future__ import annotations

from .passes import Forwarder, ForwardReport
from .service import Backoff, ForwarderService
from .state import STATE_VERSION, ForwarderState
from .stats import ForwarderStats, OutboxGauge, read_stats_file, stats_path_for

__all__ = ["STATE_VERSION", "Backoff", "ForwardReport", "Forwarder", "ForwarderService", "ForwarderState",
           "ForwarderStats", "OutboxGauge", "read_stats_file", "stats_path_for"]
