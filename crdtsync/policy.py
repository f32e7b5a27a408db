"""Consistency levels and per-field policies: how much coordination a read or write pays.

A field's definition carries a :class:`Policy`: a **write level**, a **read level**, a
``timeout`` (seconds) for the levels that wait, and what to do when that coordination
cannot be had (``on_unavailable``). A call may override either level, but only toward a
*stronger* one (:func:`is_at_least`); :meth:`Policy.resolve` returns the effective levels
of one call or raises :class:`PolicyViolation`.

This module only *describes* policies; waiting for acknowledgements and checking
staleness is the job of the replica, using :mod:`crdtsync.control` (heartbeats).

Write levels (weakest first): ``LOCAL`` (applied locally and in the local log), ``LOG``
(the shared log acknowledged it), ``ACKS(n, group)`` / ``QUORUM(group)`` / ``ALL(group)``
(replicas of ``group`` report, in their heartbeats, a context containing the write's dot),
``SEQUENCED`` (totally ordered by one shared log partition; conditional operations get a
definite outcome). Read levels: ``LOCAL``, ``MAX_STALENESS(seconds, wait)``,
``SESSION(token)``, ``LINEARIZABLE``. ``LOCAL`` is one object that is both a write and a
read level.

A *group* is ``None`` (every known replica of the fleet), a region name (``str``) or an
explicit ``frozenset`` of replica names.

Strength order (``is_at_least(a, b)``: "``a`` promises at least what ``b`` does"), a
partial order on each kind; pairs not listed are **incomparable**, so an override between
them is refused:

* writes: ``LOCAL < LOG < every ack level < SEQUENCED``. Among ack levels of the *same*
  group: ``ACKS(n) <= ACKS(m)`` iff ``n <= m``; ``ACKS(1) <= QUORUM``; every ``ACKS(n)``
  and ``QUORUM`` are below ``ALL``. ``ACKS(n >= 2)`` and ``QUORUM`` of a region or of the
  fleet are incomparable (the quorum size depends on membership at run time); for an
  explicit set of ``N`` names with ``q = N // 2 + 1``, ``ACKS(n) <= QUORUM`` iff
  ``n <= q`` and ``QUORUM < ACKS(n)`` iff ``n > q``. Ack levels of *different* groups are
  incomparable (``ACKS(3, group="eu")`` vs ``QUORUM()`` is refused), except that
  ``ALL()`` (the whole fleet) is above every ack level of every group. ``ACKS(n) <= ALL``
  assumes the group has at least ``n`` members; with fewer, ``ACKS(n)`` can never be
  acknowledged anyway (it raises ``Unavailable`` at its timeout). ``SEQUENCED`` is the
  strongest level by the coordination it buys (a total order), but note that it waits for
  the log, not for other replicas to apply the write.
* reads: ``LOCAL < MAX_STALENESS(t) < LINEARIZABLE``; ``MAX_STALENESS(t) <=
  MAX_STALENESS(u)`` iff ``t < u``, or ``t == u`` with the same ``wait`` (the same bound
  with a different behaviour is incomparable: an override must not change it silently).
  ``SESSION(token)`` is above ``LOCAL`` only; ``SESSION(a) <= SESSION(b)`` iff token
  ``a <= b``. It is incomparable with ``MAX_STALENESS`` and ``LINEARIZABLE`` (a token may
  hold writes still waiting in an edge's outbox, which the shared log's end does not
  include).

Encoding (``Policy.to_dict``, carried inside a schema definition event; only
msgpack-friendly values, floats always ``float``)::

    {"v": 1, "policy": "strong" | "eventual" | "tunable",
     "write": LEVEL, "read": LEVEL, "timeout": float,
     "on_unavailable": "raise" | "local", "max_lag": float | None}
    LEVEL = {"level": "local" | "log" | "sequenced" | "linearizable"}
          | {"level": "acks", "n": int, "group": GROUP}
          | {"level": "quorum" | "all", "group": GROUP}
          | {"level": "max_staleness", "seconds": float, "wait": bool}
    GROUP = None | region: str | [replica names, sorted]

A ``SESSION`` token is per call and is never part of a definition: encoding one raises
``ValueError``. ``Policy.from_dict`` rejects anything else with
:class:`~crdtsync.errors.CorruptRecord` (or :class:`~crdtsync.errors.UnsupportedVersion`
for ``"v"`` above 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._encoding import corrupt
from .clock import Context
from .errors import CrdtSyncError, PolicyViolation, UnsupportedVersion

__all__ = [
    "ACKS",
    "ALL",
    "LINEARIZABLE",
    "LOCAL",
    "LOG",
    "MAX_STALENESS",
    "QUORUM",
    "SEQUENCED",
    "SESSION",
    "Eventual",
    "Group",
    "OnUnavailable",
    "Policy",
    "PolicyViolation",
    "ReadLevel",
    "Resolved",
    "Strong",
    "Tunable",
    "WriteLevel",
    "is_at_least",
    "level_from_dict",
    "level_to_dict",
]

_POLICY_VERSION = 1

#: who must acknowledge: ``None`` = the fleet, ``str`` = a region, ``frozenset`` = names
Group = str | frozenset[str] | None
OnUnavailable = Literal["raise", "local"]


def _check_group(group: object) -> Group:
    if group is None:
        return None
    if isinstance(group, str):
        if not group:
            raise ValueError("a group region name must not be empty; use group=None for the whole fleet")
        return group
    if isinstance(group, (set, frozenset, list, tuple)):
        names = frozenset(group)
        if not names:
            raise ValueError("an explicit group needs at least one replica name")
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"group members must be non-empty replica names, got {sorted(map(repr, names))}")
        return names
    raise TypeError(
        f"group must be None (the fleet), a region name or a set of replica names, not {type(group).__name__}"
    )


def _group_repr(group: Group) -> str:
    if isinstance(group, frozenset):
        return "frozenset({" + ", ".join(repr(n) for n in sorted(group)) + "})"
    return repr(group)


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return v


# -- levels --------------------------------------------------------------------------


class WriteLevel:
    """Base of every write level (what acknowledges a write)."""

    __slots__ = ()


class ReadLevel:
    """Base of every read level (how fresh a read must be)."""

    __slots__ = ()


@dataclass(frozen=True, repr=False)
class _Local(WriteLevel, ReadLevel):
    """Writes: applied locally and appended to the local log. Reads: local state now."""

    def __repr__(self) -> str:
        return "LOCAL"


@dataclass(frozen=True, repr=False)
class _Log(WriteLevel):
    """The shared log acknowledged the write (Kafka ``acks=all``)."""

    def __repr__(self) -> str:
        return "LOG"


@dataclass(frozen=True, repr=False)
class _Sequenced(WriteLevel):
    """Totally ordered by one shared log partition; conditional ops get a definite outcome."""

    def __repr__(self) -> str:
        return "SEQUENCED"


@dataclass(frozen=True, repr=False)
class _Linearizable(ReadLevel):
    """Sync to the log's current end before reading."""

    def __repr__(self) -> str:
        return "LINEARIZABLE"


@dataclass(frozen=True, repr=False)
class ACKS(WriteLevel):
    """Acknowledged once ``n`` replicas of ``group`` report a context containing the dot."""

    n: int
    group: Group = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int):
            raise TypeError(f"ACKS(n): n must be an int, not {type(self.n).__name__}")
        if self.n < 1:
            raise ValueError(f"ACKS({self.n}) acknowledges nothing; use ACKS(1) or more (or LOCAL / LOG)")
        group = _check_group(self.group)
        if isinstance(group, frozenset) and self.n > len(group):
            raise ValueError(
                f"ACKS({self.n}) can never be met by a group of {len(group)} replicas "
                f"{sorted(group)}; use ALL(group) or a smaller n"
            )
        object.__setattr__(self, "group", group)

    def __repr__(self) -> str:
        return f"ACKS({self.n})" if self.group is None else f"ACKS({self.n}, group={_group_repr(self.group)})"


@dataclass(frozen=True, repr=False)
class QUORUM(WriteLevel, ReadLevel):
    """Write: acknowledged once a majority (``N // 2 + 1``) of ``group`` reports the dot.
    Read: returns local state once it includes everything a majority of ``group``
    reported (in heartbeats answering this read), so it sees every ``QUORUM`` write
    acknowledged before the read began."""

    group: Group = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", _check_group(self.group))

    def __repr__(self) -> str:
        return "QUORUM()" if self.group is None else f"QUORUM(group={_group_repr(self.group)})"


@dataclass(frozen=True, repr=False)
class ALL(WriteLevel, ReadLevel):
    """Write: acknowledged once every known replica of ``group`` reports the dot. Read: local
    state once it includes everything every member of ``group`` reported to this read."""

    group: Group = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", _check_group(self.group))

    def __repr__(self) -> str:
        return "ALL()" if self.group is None else f"ALL(group={_group_repr(self.group)})"


@dataclass(frozen=True, repr=False)
class MAX_STALENESS(ReadLevel):
    """Local state if this replica heard every origin it tracks within ``seconds``.

    Otherwise the read waits (``wait=True``, up to the policy timeout) or raises
    :class:`~crdtsync.errors.StaleRead`.
    """

    seconds: float
    wait: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", _seconds(self.seconds, "MAX_STALENESS(seconds)"))
        if not isinstance(self.wait, bool):
            raise TypeError(f"MAX_STALENESS(wait=...) must be a bool, not {type(self.wait).__name__}")

    def __repr__(self) -> str:
        return f"MAX_STALENESS({self.seconds!r}{', wait=True' if self.wait else ''})"


@dataclass(frozen=True, repr=False)
class SESSION(ReadLevel):
    """State that includes every dot of ``token`` (the caller's earlier writes and reads).

    Per call only: a token is never part of a definition.
    """

    token: Context

    def __post_init__(self) -> None:
        if not isinstance(self.token, Context):
            raise TypeError(
                f"SESSION(token) takes a Context (e.g. a View's context), not {type(self.token).__name__}"
            )

    def __repr__(self) -> str:
        return f"SESSION({self.token!r})"


LOCAL = _Local()
LOG = _Log()
SEQUENCED = _Sequenced()
LINEARIZABLE = _Linearizable()

_AckLevel = ACKS | QUORUM | ALL
_CONSTRUCTORS: tuple[type, ...] = (ACKS, QUORUM, ALL, MAX_STALENESS, SESSION)


def _write_rank(level: WriteLevel) -> int:
    if isinstance(level, _Local):
        return 0
    if isinstance(level, _Log):
        return 1
    if isinstance(level, (ACKS, QUORUM, ALL)):
        return 2
    if isinstance(level, _Sequenced):
        return 3
    raise TypeError(f"unknown write level {level!r}")


def _ack_at_least(a: _AckLevel, b: _AckLevel) -> bool:
    if isinstance(a, ALL) and a.group is None:
        return True  # every replica of the fleet covers every group
    if a.group != b.group:
        return False
    g = a.group
    if isinstance(b, ACKS):
        if isinstance(a, ACKS):
            return a.n >= b.n
        if isinstance(a, QUORUM):
            if isinstance(g, frozenset):
                return len(g) // 2 + 1 >= b.n
            return b.n == 1
        return True  # ALL(g) >= ACKS(n, g)
    if isinstance(b, QUORUM):
        if isinstance(a, ACKS):
            return isinstance(g, frozenset) and a.n > len(g) // 2 + 1
        return True  # QUORUM(g) or ALL(g) >= QUORUM(g)
    return isinstance(a, ALL)  # b is ALL(g)


def _read_at_least(a: ReadLevel, b: ReadLevel) -> bool:
    if isinstance(b, _Local) or a == b:
        return True
    if isinstance(a, (QUORUM, ALL)) and isinstance(b, (QUORUM, ALL)):
        return _ack_at_least(a, b)
    if isinstance(a, _Linearizable):
        return isinstance(b, MAX_STALENESS)
    if isinstance(a, MAX_STALENESS) and isinstance(b, MAX_STALENESS):
        return a.seconds < b.seconds or (a.seconds == b.seconds and a.wait == b.wait)
    if isinstance(a, SESSION) and isinstance(b, SESSION):
        return b.token <= a.token
    return False


def _check_kind(level: object, kind: type, what: str) -> None:
    if isinstance(level, kind):
        return
    if isinstance(level, type) and level in _CONSTRUCTORS:
        raise TypeError(
            f"{level.__name__} needs arguments: write {level.__name__}(...), e.g. QUORUM() for the fleet"
        )
    other = "read" if kind is WriteLevel else "write"
    if isinstance(level, (WriteLevel, ReadLevel)):
        raise TypeError(f"{level!r} is a {other} level, not a {what}")
    raise TypeError(f"expected a {what} (LOCAL, ACKS(2), ...), got {level!r:.80}")


def is_at_least(a: WriteLevel | ReadLevel, b: WriteLevel | ReadLevel) -> bool:
    """True when level ``a`` promises at least what ``b`` does (see the module docstring).

    Both must be write levels or both read levels (``LOCAL`` is both). Incomparable pairs
    return False in both directions.
    """
    if isinstance(a, WriteLevel) and isinstance(b, WriteLevel):
        ra, rb = _write_rank(a), _write_rank(b)
        if ra != rb:
            return ra > rb
        if ra == 2:
            return _ack_at_least(a, b)  # type: ignore[arg-type]  # rank 2 is exactly the ack levels
        return True  # same argument-less level
    if isinstance(a, ReadLevel) and isinstance(b, ReadLevel):
        return _read_at_least(a, b)
    _check_kind(a, WriteLevel if isinstance(b, WriteLevel) else ReadLevel, "level of the same kind")
    _check_kind(b, WriteLevel if isinstance(a, WriteLevel) else ReadLevel, "level of the same kind")
    raise TypeError(f"cannot compare {a!r} with {b!r}: one is a write level, the other a read level")


# -- encoding of levels ---------------------------------------------------------------

_SIMPLE: dict[str, WriteLevel | ReadLevel] = {
    "local": LOCAL,
    "log": LOG,
    "sequenced": SEQUENCED,
    "linearizable": LINEARIZABLE,
}


def _group_out(group: Group) -> Any:
    return sorted(group) if isinstance(group, frozenset) else group


def level_to_dict(level: WriteLevel | ReadLevel) -> dict[str, Any]:
    """The msgpack-friendly form of a level (see the module docstring)."""
    for name, simple in _SIMPLE.items():
        if level == simple:
            return {"level": name}
    if isinstance(level, ACKS):
        return {"level": "acks", "n": level.n, "group": _group_out(level.group)}
    if isinstance(level, QUORUM):
        return {"level": "quorum", "group": _group_out(level.group)}
    if isinstance(level, ALL):
        return {"level": "all", "group": _group_out(level.group)}
    if isinstance(level, MAX_STALENESS):
        return {"level": "max_staleness", "seconds": level.seconds, "wait": level.wait}
    if isinstance(level, SESSION):
        raise ValueError("a SESSION token is per call and is never part of a definition; pass it as read=")
    raise TypeError(f"not a consistency level: {level!r:.80}")


def _group_in(raw: Any, what: str) -> Group:
    if raw is None or isinstance(raw, str):
        return _check_group(raw)
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        if raw != sorted(set(raw)):
            corrupt(what, "group names must be sorted and unique")
        return _check_group(raw)
    corrupt(what, f"bad group {raw!r:.80}")


def level_from_dict(d: Any, what: str = "level") -> WriteLevel | ReadLevel:
    """Inverse of :func:`level_to_dict`; anything malformed raises ``CorruptRecord``."""
    if not isinstance(d, dict) or not isinstance(d.get("level"), str):
        corrupt(what, f"expected a level dict, got {d!r:.80}")
    name = d["level"]
    keys = set(d)
    try:
        if name in _SIMPLE and keys == {"level"}:
            return _SIMPLE[name]
        if name == "acks" and keys == {"level", "n", "group"} and type(d["n"]) is int:
            return ACKS(d["n"], _group_in(d["group"], what))
        if name in ("quorum", "all") and keys == {"level", "group"}:
            return (QUORUM if name == "quorum" else ALL)(_group_in(d["group"], what))
        if name == "max_staleness" and keys == {"level", "seconds", "wait"} and type(d["seconds"]) is float:
            return MAX_STALENESS(d["seconds"], d["wait"])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CrdtSyncError):
            raise
        corrupt(what, str(exc))
    corrupt(what, f"unknown or malformed level {d!r:.80}")


# -- policies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """The effective levels of one call, after overrides."""

    write: WriteLevel
    read: ReadLevel
    timeout: float
    on_unavailable: OnUnavailable


def _is_cp(write: WriteLevel, read: ReadLevel) -> bool:
    return write == SEQUENCED or read == LINEARIZABLE


@dataclass(frozen=True, init=False)
class Policy:
    """A field's consistency policy. Build one with :class:`Strong`, :class:`Eventual` or
    :class:`Tunable`; every policy has the same fields.

    Attributes:
        write, read: the definition's levels.
        timeout: seconds a waiting level (ack levels, ``SEQUENCED``, ``LINEARIZABLE``,
            ``MAX_STALENESS(wait=True)``) waits before giving up.
        on_unavailable: ``"raise"`` (:class:`~crdtsync.errors.Unavailable` /
            :class:`~crdtsync.errors.StaleRead`) or ``"local"`` (fall back to a local
            write or read, counted). Never ``"local"`` for ``SEQUENCED`` or
            ``LINEARIZABLE``: CP fields must not silently degrade.
        max_lag: freshness SLO in seconds (measured and alarmed, never enforced), or None.
    """

    write: WriteLevel
    read: ReadLevel
    timeout: float
    on_unavailable: OnUnavailable
    max_lag: float | None

    _KIND = "policy"

    def __init__(
        self,
        *,
        write: WriteLevel,
        read: ReadLevel,
        timeout: float = 5.0,
        on_unavailable: OnUnavailable = "raise",
        max_lag: float | None = None,
    ) -> None:
        if type(self) is Policy:
            raise TypeError("build a policy with Strong(), Eventual() or Tunable(write=..., read=...)")
        _check_kind(write, WriteLevel, "write level")
        _check_kind(read, ReadLevel, "read level")
        if isinstance(read, SESSION):
            raise ValueError(
                "a SESSION token is per call and cannot be part of a definition; "
                "declare LOCAL (or stronger) and pass read=SESSION(token) on the call"
            )
        if on_unavailable not in ("raise", "local"):
            raise ValueError(f"on_unavailable must be 'raise' or 'local', got {on_unavailable!r}")
        if on_unavailable == "local" and _is_cp(write, read):
            raise ValueError(
                f"on_unavailable='local' would silently degrade a {write!r}/{read!r} field; "
                "strong (CP) fields raise Unavailable instead. Use a weaker level if serving "
                "local data is acceptable"
            )
        object.__setattr__(self, "write", write)
        object.__setattr__(self, "read", read)
        object.__setattr__(self, "timeout", _seconds(timeout, "timeout"))
        object.__setattr__(self, "on_unavailable", on_unavailable)
        object.__setattr__(self, "max_lag", None if max_lag is None else _seconds(max_lag, "max_lag"))

    def resolve(self, write: WriteLevel | None = None, read: ReadLevel | None = None) -> Resolved:
        """The effective levels of one call with optional per-call overrides.

        An override must be at least as strong as the definition's level
        (:func:`is_at_least`), else :class:`PolicyViolation`. A call that strengthens
        to ``SEQUENCED`` or ``LINEARIZABLE`` always raises when unavailable.
        """
        w, r = self.write, self.read
        if write is not None:
            _check_kind(write, WriteLevel, "write level")
            if not is_at_least(write, w):
                raise PolicyViolation(
                    f"write override {write!r} is weaker than or incomparable with the definition's "
                    f"{w!r}; overrides may only strengthen a field's policy"
                )
            w = write
        if read is not None:
            _check_kind(read, ReadLevel, "read level")
            if not is_at_least(read, r):
                raise PolicyViolation(
                    f"read override {read!r} is weaker than or incomparable with the definition's "
                    f"{r!r}; overrides may only strengthen a field's policy"
                )
            r = read
        on = self.on_unavailable
        if _is_cp(w, r):
            on = "raise"
        return Resolved(w, r, self.timeout, on)

    def describe(self) -> str:
        """A one-line, human-readable summary."""
        parts = [f"{self._KIND}: writes {self.write!r}, reads {self.read!r}"]
        if not (self.write == LOCAL and self.read == LOCAL):
            if self.on_unavailable == "raise":
                parts.append(f"raises Unavailable/StaleRead after {self.timeout:g}s")
            else:
                parts.append(f"falls back to local after {self.timeout:g}s")
        if self.max_lag is not None:
            parts.append(f"freshness SLO {self.max_lag:g}s (measured, not enforced)")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The msgpack-friendly form carried inside a definition (see the module docstring)."""
        return {
            "v": _POLICY_VERSION,
            "policy": self._KIND,
            "write": level_to_dict(self.write),
            "read": level_to_dict(self.read),
            "timeout": self.timeout,
            "on_unavailable": self.on_unavailable,
            "max_lag": self.max_lag,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Policy:
        """Rebuild a policy from :meth:`to_dict` output; bad input raises ``CorruptRecord``."""
        what = "policy"
        if not isinstance(d, Mapping):
            corrupt(what, f"expected a dict, got {type(d).__name__}")
        v = d.get("v")
        if type(v) is not int or v < 1:
            corrupt(what, f"bad format version {v!r}")
        if v > _POLICY_VERSION:
            raise UnsupportedVersion(
                f"policy: format version {v} is newer than this build understands "
                f"(max {_POLICY_VERSION}); upgrade crdtsync on this replica"
            )
        if set(d) != {"v", "policy", "write", "read", "timeout", "on_unavailable", "max_lag"}:
            corrupt(what, f"unexpected keys {sorted(map(str, d))}")
        write = level_from_dict(d["write"], "policy.write")
        read = level_from_dict(d["read"], "policy.read")
        timeout, on, max_lag = d["timeout"], d["on_unavailable"], d["max_lag"]
        if type(timeout) is not float or not (max_lag is None or type(max_lag) is float):
            corrupt(what, "timeout and max_lag must be floats")
        kind = d["policy"]
        try:
            if kind == "strong":
                if write != SEQUENCED or read != LINEARIZABLE or max_lag is not None:
                    corrupt(what, "a strong policy is SEQUENCED + LINEARIZABLE without max_lag")
                return Strong(timeout=timeout, on_unavailable=on)
            if kind == "eventual":
                if write != LOCAL or read != LOCAL:
                    corrupt(what, "an eventual policy is LOCAL + LOCAL")
                return Eventual(max_lag=max_lag, timeout=timeout, on_unavailable=on)
            if kind == "tunable":
                if max_lag is not None:
                    corrupt(what, "a tunable policy has no max_lag")
                if not isinstance(write, WriteLevel) or not isinstance(read, ReadLevel):
                    corrupt(what, "write/read levels of the wrong kind")
                return Tunable(write=write, read=read, timeout=timeout, on_unavailable=on)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CrdtSyncError):
                raise
            corrupt(what, str(exc))
        corrupt(what, f"unknown policy kind {kind!r:.40}")


@dataclass(frozen=True, init=False)
class Strong(Policy):
    """``SEQUENCED`` writes + ``LINEARIZABLE`` reads (CP): ``Unavailable`` after ``timeout``
    when the shared log cannot be reached; never degrades to local."""

    _KIND = "strong"

    def __init__(self, timeout: float = 5.0, on_unavailable: OnUnavailable = "raise") -> None:
        super().__init__(write=SEQUENCED, read=LINEARIZABLE, timeout=timeout, on_unavailable=on_unavailable)

    def __repr__(self) -> str:
        return f"Strong(timeout={self.timeout!r})"


@dataclass(frozen=True, init=False)
class Eventual(Policy):
    """``LOCAL`` writes + ``LOCAL`` reads (AP), with an optional freshness SLO ``max_lag``
    (seconds) that is measured and alarmed, never enforced. ``timeout`` and
    ``on_unavailable`` apply to calls that override toward stronger levels."""

    _KIND = "eventual"

    def __init__(
        self, max_lag: float | None = None, timeout: float = 5.0, on_unavailable: OnUnavailable = "raise"
    ) -> None:
        super().__init__(
            write=LOCAL, read=LOCAL, timeout=timeout, on_unavailable=on_unavailable, max_lag=max_lag
        )

    def __repr__(self) -> str:
        return f"Eventual(max_lag={self.max_lag!r}, timeout={self.timeout!r})"


@dataclass(frozen=True, init=False)
class Tunable(Policy):
    """Any other pair of levels, e.g. ``Tunable(write=ACKS(2), read=MAX_STALENESS(2))``."""

    _KIND = "tunable"

    def __init__(
        self,
        write: WriteLevel,
        read: ReadLevel,
        timeout: float = 5.0,
        on_unavailable: OnUnavailable = "raise",
    ) -> None:
        super().__init__(write=write, read=read, timeout=timeout, on_unavailable=on_unavailable)

    def __repr__(self) -> str:
        return (
            f"Tunable(write={self.write!r}, read={self.read!r}, timeout={self.timeout!r}, "
            f"on_unavailable={self.on_unavailable!r})"
        )
