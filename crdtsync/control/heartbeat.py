"""The heartbeat: one replica's self-contained report on the control channel.

Every replica periodically publishes a :class:`Heartbeat`: who it is (actor id, name,
region, role), the :class:`~crdtsync.clock.Context` of everything it has applied, its
wall time and HLC time, its log positions and its active model versions. This module is
the heartbeat as a value and its self-contained ("full") encoding; on the wire a sender
usually sends only what changed (:mod:`crdtsync.control.stream`).

Heartbeat wire format (format version 2), deterministic msgpack::

    ["heartbeat", 2, [actor: str, name: str, region: str, role: str,
                      wall_ms: int >= 0, hlc: int >= 0, context: CONTEXT_ROWS,
                      positions: [[log: str, position: int >= 0], ...],
                      models: [[model: str, version: str], ...],
                      ping: int >= 0, echo: [[replica name: str, ping: int >= 0], ...],
                      pruned: [actor: str, ...]]]

``CONTEXT_ROWS`` is :meth:`Context.to_payload` (``[[replica, n, [cloud seqs]], ...]``);
``positions``, ``models`` and ``echo`` are sorted by key with unique keys. ``ping`` is
non-zero when the sender asks every peer to answer at once (a ``QUORUM``/``ALL`` read
waiting for fresh reports); a peer answers with a heartbeat whose ``echo`` maps the
asker's name to that ping, so the asker knows the context was taken after it asked.
``pruned`` lists, sorted and unique, the removed incarnations the sender has pruned from
its context (so peers do not mistake a pruned entry for one never seen). Format version 1
(the first nine fields) is still decoded, with no ping, echo or pruned. ``actor``, ``name`` and
``region`` are non-empty. A decoder rejects anything else with
:class:`~crdtsync.errors.CorruptRecord`, and a newer format version with
:class:`~crdtsync.errors.UnsupportedVersion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._encoding import check_envelope, corrupt, packb, unpackb
from ..clock import Context
from ._wire import TAG as _TAG
from ._wire import frozen_map as _frozen_map
from ._wire import pairs as _pairs

__all__ = ["HEARTBEAT_SECTIONS", "HEARTBEAT_VERSION", "Heartbeat"]

HEARTBEAT_VERSION = 2


@dataclass(frozen=True)
class Heartbeat:
    """One replica's periodic report on the control channel (immutable).

    Attributes:
        actor: the actor id of the replica's current incarnation (``name~incarnation``,
            the ``replica`` of its dots).
        name, region, role: the replica's identity.
        context: everything the replica has applied.
        wall_ms: the sender's wall time (ms) when it built the heartbeat.
        hlc: the sender's HLC time; orders heartbeats of one incarnation.
        positions: log positions by log (or scope) name.
        models: active model versions by model name.
        ping: non-zero asks every peer to answer now (see the module docstring).
        echo: the latest ping this replica answered, by asking replica's name.
        pruned: removed incarnations this replica pruned from its context.
    """

    actor: str
    name: str
    region: str
    role: str
    context: Context
    wall_ms: int
    hlc: int
    positions: Mapping[str, int] = field(default_factory=dict, hash=False)
    models: Mapping[str, str] = field(default_factory=dict, hash=False)
    ping: int = 0
    echo: Mapping[str, int] = field(default_factory=dict, hash=False)
    pruned: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for attr in ("actor", "name", "region"):
            v = getattr(self, attr)
            if not isinstance(v, str) or not v:
                raise ValueError(f"Heartbeat.{attr} must be a non-empty str, got {v!r:.40}")
        if not isinstance(self.role, str):
            raise TypeError(f"Heartbeat.role must be a str, got {self.role!r:.40}")
        if not isinstance(self.context, Context):
            raise TypeError(f"Heartbeat.context must be a Context, got {type(self.context).__name__}")
        for attr in ("wall_ms", "hlc", "ping"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Heartbeat.{attr} must be a non-negative int, got {v!r:.40}")
        object.__setattr__(self, "positions", _frozen_map(self.positions, "positions", int))
        object.__setattr__(self, "models", _frozen_map(self.models, "models", str))
        object.__setattr__(self, "echo", _frozen_map(self.echo, "echo", int))
        if isinstance(self.pruned, str) or not all(isinstance(a, str) for a in self.pruned):
            raise TypeError("Heartbeat.pruned must be a set of actor ids (str)")
        object.__setattr__(self, "pruned", frozenset(self.pruned))

    def encode(self) -> bytes:
        """Deterministic msgpack bytes (see the module docstring)."""
        return packb(
            [
                _TAG,
                HEARTBEAT_VERSION,
                [
                    self.actor,
                    self.name,
                    self.region,
                    self.role,
                    self.wall_ms,
                    self.hlc,
                    self.context.to_payload(),
                    [[k, v] for k, v in self.positions.items()],
                    [[k, v] for k, v in self.models.items()],
                    self.ping,
                    [[k, v] for k, v in self.echo.items()],
                    sorted(self.pruned),
                ],
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Heartbeat:
        """Parse :meth:`encode` output; bad input raises ``CorruptRecord``/``UnsupportedVersion``."""
        version, body = check_envelope(unpackb(data, what=_TAG), _TAG, HEARTBEAT_VERSION)
        size = 9 if version == 1 else 12
        if not (isinstance(body, list) and len(body) == size):
            corrupt(_TAG, f"expected a {size}-field body")
        ping: Any = 0
        echo: Any = []
        pruned: Any = []
        if version > 1:
            ping, echo, pruned = body[9], body[10], body[11]
            if type(ping) is not int or ping < 0:
                corrupt(_TAG, "ping must be a non-negative int")
            if not (isinstance(pruned, list) and all(isinstance(a, str) for a in pruned)
                    and pruned == sorted(set(pruned))):
                corrupt(_TAG, "pruned must be a sorted list of unique actor ids")
        actor, name, region, role, wall_ms, hlc, ctx, positions, models = body[:9]
        for what, v in (("actor", actor), ("name", name), ("region", region)):
            if not isinstance(v, str) or not v:
                corrupt(_TAG, f"{what} must be a non-empty str")
        if not isinstance(role, str):
            corrupt(_TAG, "role must be a str")
        for what, v in (("wall_ms", wall_ms), ("hlc", hlc)):
            if type(v) is not int or v < 0:
                corrupt(_TAG, f"{what} must be a non-negative int")
        context = Context.from_payload(ctx, what="heartbeat context")
        return cls(
            actor,
            name,
            region,
            role,
            context,
            wall_ms,
            hlc,
            _pairs(positions, "positions", int),
            _pairs(models, "models", str),
            ping,
            _pairs(echo, "echo", int),
            frozenset(pruned),
        )

    # -- as a stream state (crdtsync.control.stream) --------------------------------
    def to_state(self) -> dict[str, Any]:
        """This heartbeat as the sections of a stream state (see :data:`HEARTBEAT_SECTIONS`)."""
        return {
            "s": {"actor": self.actor, "region": self.region, "role": self.role,
                  "wall_ms": self.wall_ms, "hlc": self.hlc, "ping": self.ping},
            "ctx": self.context,
            "pos": self.positions,
            "models": self.models,
            "echo": self.echo,
            "pruned": dict.fromkeys(self.pruned, 1),
        }

    @classmethod
    def from_state(cls, name: str, state: Mapping[str, Any]) -> Heartbeat:
        """The heartbeat a stream state describes (the sender is ``name``); bad values
        raise ``CorruptRecord`` (the wire is untrusted)."""
        s = state["s"]
        try:
            return cls(s.get("actor"), name, s.get("region"), s.get("role"), state["ctx"],
                       s.get("wall_ms"), s.get("hlc"), state["pos"], state["models"],
                       s.get("ping", 0), state["echo"], frozenset(state["pruned"]))
        except (TypeError, ValueError) as exc:
            corrupt(_TAG, f"stream state of {name!r:.40}: {exc}")


#: the sections of a heartbeat's stream state and their types
HEARTBEAT_SECTIONS: dict[str, type] = {
    "s": dict, "ctx": Context, "pos": dict, "models": dict, "echo": dict, "pruned": dict,
}
