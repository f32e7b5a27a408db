"""Operations on ``SEQUENCED`` fields: carried as operations, evaluated in log order.

A write to a field whose policy is ``SEQUENCED`` (``Strong()``) does not ship a delta
computed at the writer. It ships a :class:`SequencedOp`: the mutator name, its arguments
and an optional condition. Every replica applies the field's operations in the single
order of the shared log and evaluates each one against the state it has at that point,
so every replica reaches the same outcome (the condition held or not), and the writer
learns it when it applies its own operation.

Determinism rules (what makes the fold identical everywhere):

* a sequenced field changes only through sequenced operations (plain deltas for it are
  rejected and counted, and a ``SequencedOp`` for a non-sequenced field likewise);
* the delta an operation produces is computed from the current state, with the
  operation's origin as actor and, for time-stamped types, the stamp
  ``max(event hlc, previous stamp + 1)``, where *previous stamp* is the largest stamp
  the replica has given any sequenced operation (kept in the state, so snapshots carry
  it): a later operation in log order always wins an LWW comparison, whatever the
  writers' clocks say.

Failed appends: when appending an operation fails (or times out), its outcome is unknown:
it may have been written. The writer's next sequenced operation is appended in one record
after a *cancellation* of each such operation (same dot, mutator ``""``). In log order
either the original comes first (it is applied; the cancellation is a duplicate) or the
cancellation does (the original, if it ever lands, is a duplicate): the same at every
replica, and no dot is left missing from anyone's context.

Conditions (``cond``): ``None``, ``["eq", value]`` (the field's current value equals
``value``: compare-and-set) or ``["ge", n]`` (the current value is at least ``n``:
decrement-if-enough). Payload::

    [target type tag: str, mutator: str, args: list, kwargs: {str: any}, cond]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ._encoding import corrupt, is_finite_number
from .errors import CrdtSyncError, IncompatibleState
from .types._base import CRDT, register

__all__ = ["SequencedOp", "Outcome", "Evaluation", "evaluate", "evaluate_condition", "SEQ_FIELD", "FLEET_FIELD", "CANCEL"]

#: the mutator name of a cancellation: a writer whose append failed re-sends the same dot
#: with this op before its next operation; whichever copy the log orders first wins
CANCEL = ""

#: reserved field holding the sequencing stamp (a MaxRegister under key ``"stamp"``)
SEQ_FIELD = "_seq"
#: reserved field holding fleet decisions (removed incarnations), LWW per actor id
FLEET_FIELD = "_fleet"

_CONDS = ("eq", "ge")


@register
class SequencedOp(CRDT[None]):
    """An operation on a ``SEQUENCED`` field, evaluated by each replica in log order.

    Not a state: it is never joined (``join`` raises ``IncompatibleState``); the replica
    turns it into a delta at apply time (see the module docstring). Payload:
    ``[target tag, mutator, args, kwargs, cond]``.
    """

    __slots__ = ("target", "op", "args", "kwargs", "cond")

    TYPE_TAG: ClassVar[str] = "seqop"
    VERSION: ClassVar[int] = 1

    def __init__(
        self,
        target: str,
        op: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        cond: tuple[str, Any] | None = None,
    ) -> None:
        if not isinstance(target, str) or not isinstance(op, str):
            raise TypeError("target and op must be str")
        if cond is not None and (len(cond) != 2 or cond[0] not in _CONDS):
            raise ValueError(f"cond must be None, ('eq', value) or ('ge', n), got {cond!r:.80}")
        if cond is not None and cond[0] == "ge" and not is_finite_number(cond[1]):
            raise ValueError(f"('ge', n) needs a finite number, got {cond[1]!r:.80}")
        self.target = target
        self.op = op
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.cond = None if cond is None else (cond[0], cond[1])

    def join(self, other: SequencedOp) -> SequencedOp:
        raise IncompatibleState("a sequenced operation is applied in log order, never joined")

    def value(self) -> None:
        return None

    def _payload(self) -> Any:
        return [
            self.target,
            self.op,
            list(self.args),
            dict(sorted(self.kwargs.items())),
            None if self.cond is None else [self.cond[0], self.cond[1]],
        ]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> SequencedOp:
        what = cls.TYPE_TAG
        if not (isinstance(payload, list) and len(payload) == 5):
            corrupt(what, "expected [target, op, args, kwargs, cond]")
        target, op, args, kwargs, cond = payload
        if not isinstance(target, str) or not isinstance(op, str) or op.startswith("_"):
            corrupt(what, "target and op must be str (op not private)")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            corrupt(what, "args must be a list and kwargs a map")
        if not all(isinstance(k, str) for k in kwargs) or {"actor", "ts"} & set(kwargs):
            corrupt(what, "kwargs keys must be str and may not set actor or ts")
        c: tuple[str, Any] | None = None
        if cond is not None:
            if not (isinstance(cond, list) and len(cond) == 2 and cond[0] in _CONDS):
                corrupt(what, f"bad condition {cond!r:.60}")
            if cond[0] == "ge" and not is_finite_number(cond[1]):
                corrupt(what, "('ge', n) needs a finite number")
            c = (cond[0], cond[1])
        return cls(target, op, tuple(args), kwargs, c)

    def __repr__(self) -> str:
        return f"SequencedOp({self.target}.{self.op}{self.args!r} if {self.cond!r})"


def evaluate_condition(cond: tuple[str, Any] | None, current: Any) -> bool:
    """Whether ``cond`` holds for a field whose current value is ``current``."""
    if cond is None:
        return True
    kind, arg = cond
    if kind == "eq":
        return bool(_normal(current) == _normal(arg))
    try:
        return bool(current is not None and current >= arg)
    except TypeError:
        return False


@dataclass(frozen=True)
class Evaluation:
    """What one sequenced operation does to the state it finds (see :func:`evaluate`).

    Attributes:
        state: the field's new state, when the operation took effect (``None`` otherwise).
        stamp: the sequencing stamp it took (``None`` unless it took effect); the next
            operation's stamp is above it.
        error: why it could not take effect, when that is an error (no such mutator, bad
            arguments) rather than a condition that did not hold.
        failed: the mutator raised (the same failure at every replica).
        cancelled: a cancellation (the writer gave up on this seq).
    """

    state: CRDT[Any] | None
    stamp: int | None
    error: str | None = None
    failed: bool = False
    cancelled: bool = False

    @property
    def applied(self) -> bool:
        return self.state is not None


def evaluate(op: SequencedOp, state: CRDT[Any], origin: str, hlc: int, last_stamp: int | None) -> Evaluation:
    """Evaluate ``op`` (written by ``origin`` at ``hlc``) against ``state``, the field's
    state at that point in log order, after operations whose largest stamp is
    ``last_stamp`` (``None``: none yet). Pure: the replica applying its log
    (:class:`~crdtsync.replica.sequencer.SequencerClient`) and the fold rebuilding a past
    state (:class:`~crdtsync.inference.Fold`) both call it, so they cannot disagree."""
    if op.op == CANCEL:
        return Evaluation(None, None, cancelled=True)
    if op.target != state.TYPE_TAG or op.op not in type(state).MUTATORS:
        return Evaluation(None, None, f"{state.TYPE_TAG} has no mutator {op.op!r} (operation for {op.target!r})")
    if not evaluate_condition(op.cond, state.value()):
        return Evaluation(None, None)
    stamp = max(hlc, last_stamp + 1) if last_stamp is not None else hlc
    kwargs = dict(op.kwargs)
    kwargs["actor"] = origin
    if type(state).NEEDS_TIME:
        kwargs["ts"] = stamp
    try:
        new = state.join(getattr(state, op.op)(*op.args, **kwargs))
    except (TypeError, ValueError, CrdtSyncError) as exc:
        return Evaluation(None, None, f"{type(exc).__name__}: {exc}", failed=True)
    return Evaluation(new, stamp)


def _normal(v: Any) -> Any:
    # values travel through msgpack: tuples come back as lists
    if isinstance(v, tuple):
        return [_normal(x) for x in v]
    if isinstance(v, list):
        return [_normal(x) for x in v]
    return v


@dataclass(frozen=True)
class Outcome:
    """The result of a sequenced operation, the same at every replica.

    Attributes:
        applied: the condition held (or there was none) and the mutation took effect.
        current: the field's value just before the operation, in log order.
        value: the field's value just after it.
        position: log position of the record holding the operation.
        error: why the mutation itself failed (bad arguments...), if it did.
    """

    applied: bool
    current: Any
    value: Any
    position: int | None
    error: str | None = None
