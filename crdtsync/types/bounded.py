"""BoundedCounter: a counter that never goes below its lower bound, with no coordination.

The escrow ("bounded counter") design of Balegas et al., *Extending Eventually
Consistent Cloud Databases for Enforcing Numeric Invariants* (SRDS 2015). Every unit of
value above the bound is a *right* held by exactly one replica. An increment creates
rights at its writer; a decrement spends rights its writer holds, and is refused
locally (:class:`~crdtsync.errors.InsufficientRights`) when it holds too few; a
transfer moves rights from its writer to another replica. No replica ever spends a
right another replica could spend too, so concurrent decrements can never take the
value below the bound, whatever order joins happen in.

State (all grow-only totals, joined by pointwise maximum, so join is a lattice join):

* ``inc[a]``: total increments of actor ``a`` (the diagonal ``R[a][a]`` of the rights
  matrix of the paper);
* ``dec[a]``: total decrements of ``a``;
* ``R[a][b]`` for ``a != b``: total rights ``a`` has transferred to ``b``.

The rights ``a`` holds are ``inc[a] + sum_j R[j][a] - sum_j R[a][j] - dec[a]``, and
``value() = lower + sum(inc) - sum(dec)``, which is ``lower`` plus the rights of all
actors together.

Why every state stays above the bound: only ``a`` writes ``dec[a]`` and the row
``R[a][*]``, and it writes them only when its own state shows enough rights. A
spending delta (decrement or transfer) carries its own justification: the entries of
every actor whose rights flow, directly or through transfers, to the writer. So each
delta, and any join of states and deltas in any order, satisfies
``dec[a] + sum_j R[a][j] <= inc[a] + sum_j R[j][a]`` for every actor ``a``; summing
over actors gives ``value() >= lower``. Decoders reject a state that breaks this.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from .._encoding import corrupt
from ..errors import InsufficientRights
from ._base import CRDT, actor_of, check_sorted_unique, register, want_int, want_list, want_str
from .counters import _max_merge

__all__ = ["BoundedCounter"]

_MAX = 2**63 - 1  # every total must fit a signed 64-bit msgpack int


def _amount(n: Any, what: str, hint: str) -> int:
    if type(n) is not int:
        raise TypeError(f"{what} amounts are ints, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{what} amount must be >= 0, got {n}; {hint}")
    if n > _MAX:
        raise ValueError(f"{what} amount {n} does not fit in 64 bits")
    return n


def _bump(total: int, n: int, what: str) -> int:
    new = total + n
    if new > _MAX:
        raise ValueError(f"{what} would exceed 2**63 - 1; the counter cannot grow further")
    return new


@register
class BoundedCounter(CRDT[int]):
    """Decrements spend rights their replica holds, so the value never drops below ``lower``.

    Concurrent increments and decrements all count (value = ``lower`` + increments -
    decrements); a decrement or transfer beyond the writer's local rights is refused
    with :class:`~crdtsync.errors.InsufficientRights` and changes nothing.

    Cost: two ints per actor that ever wrote plus one int per (sender, receiver) pair
    that ever transferred rights; nothing is reclaimed by the type itself (a removed
    replica's entries go with causal-stability pruning, and its rights should be
    transferred away first). A spending delta carries the entries of every actor whose
    rights reach the writer through transfers.

    Payload: ``[lower, [[actor, inc], ...], [[actor, dec], ...], [[from, to, n], ...]]``,
    the first two sorted by actor, the transfers sorted by ``(from, to)`` with
    ``from != to``; every total >= 1 (zero entries are omitted), actors non-empty, and
    no actor spends more than it received (``dec + sent <= inc + received``).

    Same-actor rule (not detectable): a write adds to the writer's totals as this state
    knows them, so two writes by one actor computed from the same stale state give two
    totals of which the join keeps the larger: one is lost silently, and no type-level
    check can tell. Apply each delta to the state before making the next one, or use the
    Replica, which does.

    Args:
        lower: the bound, fixed at creation (states with different bounds do not join).
            The counter starts at ``lower``; every unit above it is a right.
    """

    __slots__ = ("_lower", "_inc", "_dec", "_xfer")
    TYPE_TAG: ClassVar[str] = "bcounter"
    MUTATORS: ClassVar[tuple[str, ...]] = ("increment", "decrement", "transfer")
    NEEDS_TIME: ClassVar[bool] = False

    def __init__(self, *, lower: int = 0) -> None:
        if type(lower) is not int:
            raise TypeError(f"lower must be an int, got {type(lower).__name__}")
        if not -(2**63) <= lower <= _MAX:
            raise ValueError(f"lower must fit in a signed 64-bit int, got {lower}")
        self._lower = lower
        self._inc: dict[str, int] = {}
        self._dec: dict[str, int] = {}
        self._xfer: dict[tuple[str, str], int] = {}

    @classmethod
    def _of(
        cls, lower: int, inc: dict[str, int], dec: dict[str, int], xfer: dict[tuple[str, str], int]
    ) -> BoundedCounter:
        """Adopt clean maps (never mutated afterwards) without copying."""
        s = cls.__new__(cls)
        s._lower = lower
        s._inc = inc
        s._dec = dec
        s._xfer = xfer
        return s

    def _empty(self) -> BoundedCounter:
        return BoundedCounter._of(self._lower, {}, {}, {})

    # -- queries -----------------------------------------------------------------
    @property
    def lower(self) -> int:
        """The bound the value never goes below."""
        return self._lower

    def params(self) -> Mapping[str, Any]:
        return {"lower": self._lower}

    def value(self) -> int:
        return self._lower + sum(self._inc.values()) - sum(self._dec.values())

    def rights(self, actor: str) -> int:
        """Rights ``actor`` holds as far as this state knows.

        On the actor's own replica this is exactly what it may spend now; elsewhere it
        may be stale (spends or transfers not seen yet), so only the owner decides.
        """
        actor_of(actor)
        held = self._inc.get(actor, 0) - self._dec.get(actor, 0)
        for (src, dst), n in self._xfer.items():
            if dst == actor:
                held += n
            elif src == actor:
                held -= n
        return held

    @property
    def local_rights(self) -> Mapping[str, int]:
        """Rights per actor (actors holding none are left out); they sum to ``value() - lower``."""
        held = dict(self._inc)
        for a, n in self._dec.items():
            held[a] = held.get(a, 0) - n
        for (src, dst), n in self._xfer.items():
            held[src] = held.get(src, 0) - n
            held[dst] = held.get(dst, 0) + n
        return MappingProxyType({a: n for a, n in sorted(held.items()) if n})

    @property
    def transfers(self) -> Mapping[tuple[str, str], int]:
        """Total rights moved per ``(from, to)`` pair (the off-diagonal rights matrix)."""
        return MappingProxyType(dict(self._xfer))

    # -- mutators ----------------------------------------------------------------
    def increment(self, n: int = 1, *, actor: str) -> BoundedCounter:
        """Delta adding ``n`` (>= 0) to the value; ``actor`` gains ``n`` rights."""
        _amount(n, "increment", "use decrement to go down")
        actor_of(actor)
        if n == 0:
            return self._empty()
        total = _bump(self._inc.get(actor, 0), n, f"{actor!r}'s increments")
        return BoundedCounter._of(self._lower, {actor: total}, {}, {})

    def decrement(self, n: int = 1, *, actor: str) -> BoundedCounter:
        """Delta subtracting ``n`` (>= 0), spending ``n`` of ``actor``'s rights.

        Call it on ``actor``'s own replica state. Raises
        :class:`~crdtsync.errors.InsufficientRights` if ``actor`` holds fewer than ``n``.
        """
        _amount(n, "decrement", "use increment to go up")
        actor_of(actor)
        if n == 0:
            return self._empty()
        self._spend(n, actor, "decrement by")
        dec = dict(self._dec)
        dec[actor] = _bump(dec.get(actor, 0), n, f"{actor!r}'s decrements")
        return self._justified(actor, self._inc, dec, self._xfer)

    def transfer(self, n: int, to: str, *, actor: str) -> BoundedCounter:
        """Delta moving ``n`` (>= 0) of ``actor``'s rights to replica ``to``.

        The value does not change; ``to`` can spend the rights once it has seen this
        delta. Transferring to oneself changes nothing (the rights still have to be
        held). Raises :class:`~crdtsync.errors.InsufficientRights` if ``actor`` holds
        fewer than ``n``.
        """
        _amount(n, "transfer", "transfer moves rights one way: ask the other replica to transfer back")
        if not isinstance(to, str) or not to:
            raise TypeError(f"to must be a non-empty str (the receiving replica id), got {to!r}")
        actor_of(actor)
        if n == 0:
            return self._empty()
        self._spend(n, actor, "transfer of")
        if to == actor:
            return self._empty()
        xfer = dict(self._xfer)
        xfer[(actor, to)] = _bump(xfer.get((actor, to), 0), n, f"rights moved from {actor!r} to {to!r}")
        return self._justified(actor, self._inc, self._dec, xfer)

    def _spend(self, n: int, actor: str, what: str) -> None:
        held = self.rights(actor)
        if n > held:
            elsewhere = self.value() - self._lower - held
            raise InsufficientRights(
                f"{what} {n} needs {n} rights but {actor!r} holds {held} on this counter "
                f"({elsewhere} more are held by other replicas). Ask a replica that holds rights "
                f"to transfer(k, {actor!r}, actor=...) some to {actor!r} and retry once that "
                "transfer has arrived, or use a SEQUENCED field for decrements that must not be refused."
            )

    def _justified(
        self, actor: str, inc: dict[str, int], dec: dict[str, int], xfer: dict[tuple[str, str], int]
    ) -> BoundedCounter:
        """The part of state (inc, dec, xfer) that justifies ``actor``'s spending.

        That is every entry of the actors whose rights reach ``actor`` through
        transfers (``actor`` included): their increments, decrements and every
        transfer they sent. Joined anywhere, it keeps each of them within its rights.
        """
        senders: dict[str, list[str]] = {}
        for src, dst in xfer:
            senders.setdefault(dst, []).append(src)
        closure = {actor}
        todo = [actor]
        while todo:
            for src in senders.get(todo.pop(), ()):
                if src not in closure:
                    closure.add(src)
                    todo.append(src)
        return BoundedCounter._of(
            self._lower,
            {a: n for a, n in inc.items() if a in closure},
            {a: n for a, n in dec.items() if a in closure},
            {k: n for k, n in xfer.items() if k[0] in closure},
        )

    # -- lattice -----------------------------------------------------------------
    def join(self, other: BoundedCounter) -> BoundedCounter:
        if type(other) is not BoundedCounter or other._lower != self._lower:
            self._check_joinable(other)
        inc = _max_merge(self._inc, other._inc)
        dec = _max_merge(self._dec, other._dec)
        xfer = _max_merge(self._xfer, other._xfer)
        if inc is None and dec is None and xfer is None:
            return self
        return BoundedCounter._of(
            self._lower,
            self._inc if inc is None else inc,
            self._dec if dec is None else dec,
            self._xfer if xfer is None else xfer,
        )

    # -- encoding ----------------------------------------------------------------
    def _payload(self) -> Any:
        return [
            self._lower,
            [[a, self._inc[a]] for a in sorted(self._inc)],
            [[a, self._dec[a]] for a in sorted(self._dec)],
            [[src, dst, self._xfer[(src, dst)]] for src, dst in sorted(self._xfer)],
        ]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> BoundedCounter:
        what = "bcounter"
        body = want_list(payload, what)
        if len(body) != 4:
            corrupt(what, "expected [lower, increments, decrements, transfers]")
        lower = want_int(body[0], f"{what}.lower", minimum=-(2**63))
        if lower > _MAX:
            corrupt(f"{what}.lower", "does not fit in a signed 64-bit int")
        inc = _totals(body[1], f"{what}.increments")
        dec = _totals(body[2], f"{what}.decrements")
        xfer: dict[tuple[str, str], int] = {}
        keys: list[tuple[str, str]] = []
        for row in want_list(body[3], f"{what}.transfers"):
            r = want_list(row, f"{what}.transfers")
            if len(r) != 3:
                corrupt(f"{what}.transfers", "entry is not [from, to, total]")
            src = _actor(r[0], f"{what}.transfers")
            dst = _actor(r[1], f"{what}.transfers")
            if src == dst:
                corrupt(f"{what}.transfers", f"{src!r} transfers to itself")
            keys.append((src, dst))
            xfer[(src, dst)] = _total(r[2], f"{what}.transfers")
        check_sorted_unique(keys, f"{what}.transfers")
        state = cls._of(lower, inc, dec, xfer)
        for a, held in state.local_rights.items():
            if held < 0:
                corrupt(what, f"actor {a!r} spent or sent {-held} more rights than it received")
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BoundedCounter):
            return NotImplemented
        return (
            self._lower == other._lower
            and self._inc == other._inc
            and self._dec == other._dec
            and self._xfer == other._xfer
        )

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        return f"BoundedCounter({self.value()!r}, lower={self._lower!r})"


def _actor(x: Any, what: str) -> str:
    a = want_str(x, what)
    if not a:
        corrupt(what, "empty actor id")
    return a


def _total(x: Any, what: str) -> int:
    n = want_int(x, what, minimum=1)
    if n > _MAX:
        corrupt(what, f"total {n} does not fit in a signed 64-bit int")
    return n


def _totals(rows: Any, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    keys: list[str] = []
    for row in want_list(rows, what):
        r = want_list(row, what)
        if len(r) != 2:
            corrupt(what, "entry is not [actor, total]")
        a = _actor(r[0], what)
        keys.append(a)
        out[a] = _total(r[1], what)
    check_sorted_unique(keys, what)
    return out
