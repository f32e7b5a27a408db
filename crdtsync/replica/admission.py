"""Admission: which events a replica accepts, from others and from itself.

Remote events are untrusted input. Admission decides, per batch and per event, whether
an event may be applied here:

* **identity**: an origin's first claim (region, role) is pinned; a batch claiming
  anything else is refused (``identity_mismatch``), as is one whose claim is not even
  well-formed (``bad_identity``) or whose region the log's scope does not carry;
* **removed incarnations**: events of a replica removed from the fleet beyond the last
  seq the removal accepted are refused (``removed_replica``);
* **definitions**: type, residency, writer roles, sequencing, reserved fields (see
  :meth:`Admission.verdict`); a replica may record only its own fleet join, and only
  admins remove replicas or publish definitions;
* **clock drift**: an event stamped further ahead of this clock than ``max_drift_ms``
  is not refused but *held* (:class:`HeldEvents`) and applied once the clock catches up.

The rule that keeps this safe: **a dot enters the context only when its event is
applied**. A refused event's dot stays out, so a forged record carrying an honest
writer's next seq cannot make the genuine event look like a duplicate, and an event
refused for a transient reason is applied when the reason passes. Local writes are
checked by :meth:`Admission.check_write` with the same rules, so an honest writer never
produces what its peers refuse. Undecodable records are quarantined
(``<data>/quarantine``) and counted.

Refusals for good are also *reported*: a log that keeps a dead-letter channel (KafkaLog's
``<ns>.dlq``) offers ``dead_letter(position, payload, reason)``, and :class:`Admission`
calls it, through :meth:`Admission.reading`, with the record being applied when a batch is
refused for its claimed identity (a forged origin or region), and with every record it
quarantines. The verdict itself stays here; the log only files the record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._storage import remove_if_present
from ..clock import hlc_wall_ms
from ..errors import PermissionDenied, ReplicaRemoved, ResidencyViolation
from ..events import Event
from ..log._protocol import Position, covers, earliest, format_position
from ..policy import SEQUENCED
from ..schema import SCHEMA_FIELD, Definition
from ..sequenced import FLEET_FIELD, SEQ_FIELD, SequencedOp
from .definitions import Definitions
from .identity import ReplicaIdentity
from .stats import ReplicaStats

__all__ = ["Admission", "HeldEvents", "RefusalSink"]

#: where refused-for-good records are filed: ``(position, payload, reason)``
RefusalSink = Callable[[Position, bytes, str], None]

log = logging.getLogger("crdtsync.replica")

#: events held back for a future timestamp, at most (beyond, they are re-read on restart)
MAX_HELD = 1_000_000


class Admission:
    """Verdicts on remote batches and events, and on local writes."""

    def __init__(self, identity: ReplicaIdentity, definitions: Definitions, stats: ReplicaStats,
                 scope: frozenset[str] | None, data_dir: Path | None) -> None:
        self.identity = identity
        self.actor = identity.actor
        self.definitions = definitions
        self.stats = stats
        #: the regions the replica's log carries (None: not scoped)
        self.scope = scope
        self.data_dir = data_dir
        #: removed incarnations -> the last seq still accepted from them (0: none)
        self.removed: dict[str, int] = {}
        self.pins: dict[str, tuple[str, str]] = {}  # origin -> (region, role) it first claimed
        # (origin, claim) pairs already logged: a forger repeating itself is counted in the
        # stats every time but logged once, so a flood of refusals cannot flood the log
        self._logged: set[tuple[str, Any]] = set()
        #: set once recovery applied this replica's own log: own events new after that are forged
        self.recovered = False
        #: where refused records are filed (the log's dead-letter channel), if anywhere
        self.sink: RefusalSink | None = None
        self._record: tuple[Position, bytes] | None = None  # the record being applied

    def reading(self, position: Position, payload: bytes) -> None:
        """The apply loop is about to apply the record ``payload`` at ``position``
        (refusals of its batch are filed with it); :meth:`done_reading` after."""
        self._record = (position, payload)

    def done_reading(self) -> None:
        self._record = None

    def _report(self, reason: str) -> None:
        if self.sink is not None and self._record is not None:
            self.sink(self._record[0], self._record[1], reason)

    # -- local writes ------------------------------------------------------------
    def check_write(self, fname: str, key: str | None = None) -> Definition:
        """The definition of ``fname`` if this replica may write it; raises otherwise."""
        d = self.definitions.get(fname)
        if self.actor in self.removed:
            raise ReplicaRemoved(
                f"this replica's incarnation {self.actor!r} was removed from the fleet; "
                "restart it with a fresh data directory to rejoin as a new incarnation"
            )
        if d.writers is not None and self.identity.role not in d.writers:
            raise PermissionDenied(
                f"role {self.identity.role!r} may not write {fname!r} (writers: {sorted(d.writers)})"
            )
        if d.residency is not None:
            if self.identity.region not in d.residency:
                raise ResidencyViolation(
                    f"{fname!r} may live only in {sorted(d.residency)}; this replica is in {self.identity.region!r}"
                )
            if self.scope is not None and not self.scope <= d.residency:
                raise ResidencyViolation(
                    f"{fname!r} may live only in {sorted(d.residency)}, but this replica's log is "
                    f"scoped to {sorted(self.scope)}; write it through a log scoped to those regions"
                )
        if key is not None and not isinstance(key, str):
            raise TypeError(f"entity keys are str, got {type(key).__name__}")
        return d

    # -- remote events -----------------------------------------------------------
    def batch_verdict(self, origin: str, region: Any, role: Any) -> str | None:
        """Why a whole batch must be refused, if so: it claims an identity other than the one
        its origin first claimed, or a region its channel does not carry. (Events of a
        removed origin beyond its last accepted seq: see :meth:`late`.)"""
        if not isinstance(region, str) or not isinstance(role, str):
            return "bad_identity"
        claim = (region, role)
        if origin == self.actor and self.recovered and claim != (self.identity.region, self.identity.role):
            # this replica's own events are never new to it unless forged (its own
            # records read back are duplicates, so its claim is never pinned)
            self._warn_once(origin, claim, "a record claims to be this replica's (%s) with %s; rejected "
                            "(logged once per claim, counted every time)", origin, claim)
            self._report(_forgery(origin, claim, (self.identity.region, self.identity.role)))
            return "identity_mismatch"
        pinned = self.pins.setdefault(origin, claim)
        if pinned != claim:
            self._warn_once(origin, claim, "%s claims %s but first claimed %s; rejected "
                            "(logged once per claim, counted every time)", origin, claim, pinned)
            self._report(_forgery(origin, claim, pinned))
            return "identity_mismatch"
        if self.scope is not None and region not in self.scope:
            self._report(f"forged region: {origin} claims region {region!r}, outside this log's scope "
                         f"{sorted(self.scope)}")
            return "residency"
        return None

    _LOGGED_MAX = 1024  # distinct forged claims logged; past it, only the stats count them

    def _warn_once(self, origin: str, claim: Any, msg: str, *args: Any) -> None:
        key = (origin, claim)
        if key in self._logged or len(self._logged) >= self._LOGGED_MAX:
            log.debug(msg, *args)
            return
        self._logged.add(key)
        log.warning(msg, *args)

    def late(self, origin: str, seq: int) -> bool:
        """Whether ``origin``'s event ``seq`` comes after its removal from the fleet."""
        upto = self.removed.get(origin)
        return upto is not None and seq > upto

    def verdict(self, fname: str, tag: str, region: str, role: str) -> str | None:
        """Why events of ``fname`` with type ``tag`` from (region, role) must be rejected, if so."""
        if fname == SCHEMA_FIELD or fname == FLEET_FIELD:
            if tag != "lww":
                return "wrong_type"
            if fname == SCHEMA_FIELD and not self.definitions.is_admin(role):
                return "permission"
            return None
        if fname == SEQ_FIELD:
            return "reserved_field"
        d = self.definitions.find(fname)
        if d is None:
            # learned later; the state is kept under its own type. An operation needs
            # its definition now: it is evaluated in log order.
            return "unknown_field" if tag == SequencedOp.TYPE_TAG else None
        sequenced = d.policy.write == SEQUENCED
        if (tag == SequencedOp.TYPE_TAG) != sequenced:
            return "not_sequenced"
        if not sequenced and tag != d.type_tag:
            return "wrong_type"
        if d.residency is not None and (
            self.identity.region not in d.residency or region not in d.residency
            # a log carrying regions outside the residency must not bring the field in
            or (self.scope is not None and not self.scope <= d.residency)
        ):
            return "residency"
        if d.writers is not None and role not in d.writers:
            return "permission"
        return None

    def fleet_allowed(self, key: str, origin: str, role: str) -> bool:
        """A replica records only its own join; removals need an admin role."""
        if key.startswith("join/"):
            return key == f"join/{origin}"
        return key.startswith("remove/") and self.definitions.is_admin(role)

    def quarantine(self, position: Position, payload: bytes, exc: Exception) -> None:
        """Keep an undecodable record aside (``<data>/quarantine``) and count it.

        The record's bytes (``<position>.bin``) and the reason (``<position>.txt``) are
        kept whole or not at all: each is written to a temporary file that is renamed
        into place, and a write the disk refuses (full, read-only) unlinks what it left,
        so no truncated copy passes for the record. The record is counted either way,
        and the apply loop goes on."""
        self.stats.records_quarantined += 1
        log.warning("quarantined record at position %s: %s", position, exc)
        if self.sink is not None:  # the log's dead-letter channel files it too
            self.sink(position, payload, f"{type(exc).__name__}: {exc}")
        if self.data_dir is None:
            return
        qdir = self.data_dir / "quarantine"
        stem = format_position(position)
        reason = f"{type(exc).__name__}: {exc}\n".encode()
        kept: list[Path] = []
        try:
            qdir.mkdir(exist_ok=True)
            for suffix, data in ((".bin", payload), (".txt", reason)):
                final = qdir / f"{stem}{suffix}"
                tmp = qdir / f"{stem}{suffix}.tmp"
                kept.append(tmp)
                tmp.write_bytes(data)
                os.replace(tmp, final)
                kept.append(final)
        except OSError as err:  # a full disk must not stop the apply loop on this record
            self.stats.storage_errors += 1
            log.error("could not keep the quarantined record at position %s in %s: %s", position, qdir, err)
            for path in kept:
                remove_if_present(path)


def _forgery(origin: str, claim: tuple[str, str], pinned: tuple[str, str]) -> str:
    """The dead-letter reason for ``origin`` claiming ``claim`` when it is ``pinned``."""
    kind = "forged region" if claim[0] != pinned[0] else "forged origin"
    return (f"{kind}: {origin} claims (region, role) {claim!r:.80}, but is pinned to {pinned!r:.80}")


class HeldEvents:
    """Remote events held back because their timestamp is ahead of this clock.

    Each is applied once ``wall ms >= its wall time - max_drift_ms``. Held events live in
    memory; a snapshot never names a position past the record that carried the first of
    them (:meth:`floor`), so a restart re-reads and holds them again.
    """

    def __init__(self, stats: ReplicaStats, max_drift_ms: int, actor: str) -> None:
        self._stats = stats
        self.max_drift_ms = max_drift_ms
        self.actor = actor
        # (wall ms from which it may apply, event, batch meta, position applied before its record)
        self._held: list[tuple[int, Event, Mapping[str, Any], Position | None]] = []
        self.due = 0  # earliest wall ms at which a held event may apply
        self._overflowed = False  # more were held than MAX_HELD (those wait for a restart)
        self._overflow_before: Position | None = None

    def __bool__(self) -> bool:
        return bool(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, ev: Event, meta: Mapping[str, Any], before: Position | None) -> None:
        """Hold ``ev``; ``before`` is the position applied before its record."""
        if len(self._held) >= MAX_HELD:
            # still not lost: snapshots do not pass the first held record, so a restart re-reads it
            log.error("%s holds %d future-stamped events already; %s waits for a restart",
                      self.actor, len(self._held), ev.dot)
            if not self._overflowed or (self._overflow_before is not None
                                        and (before is None or not covers(before, self._overflow_before))):
                self._overflowed, self._overflow_before = True, before
            return
        due = hlc_wall_ms(ev.hlc) - self.max_drift_ms
        self.due = min(self.due, due) if self._held else due
        self._held.append((due, ev, meta, before))
        self._stats.events_held = len(self._held)

    def take_due(self, wall_ms: int) -> list[tuple[int, Event, Mapping[str, Any], Position | None]]:
        """Remove and return the held events that may apply at ``wall_ms``."""
        if not self._held or wall_ms < self.due:
            return []
        ready = [h for h in self._held if h[0] <= wall_ms]
        self._held = [h for h in self._held if h[0] > wall_ms]
        self.due = min((h[0] for h in self._held), default=0)
        self._stats.events_held = len(self._held)
        return ready

    def floor(self, position: Position | None) -> Position | None:
        """The position a snapshot may name, given the last applied ``position``: the record
        applied before the first record that holds an event, while any is held."""
        if not self._held and not self._overflowed:
            return position
        befores = [b for _, _, _, b in self._held]
        if self._overflowed:
            befores.append(self._overflow_before)
        if any(b is None for b in befores):
            return None
        return earliest([b for b in befores if b is not None])
