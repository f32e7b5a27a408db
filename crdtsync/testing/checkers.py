"""History checkers: linearizability, Jepsen's set-full and counter bounds.

A test drives a system from concurrent clients and records every operation it *invoked*
and how it *completed*; a checker then decides whether those observations are allowed
by a specification. Nothing here depends on crdtsync internals: a :class:`History` is a
list of :class:`Operation` records that any test can build, for crdtsync replicas or for
anything else.

The history model follows Jepsen and Knossos. Each operation has a client
(``process``), a function name ``f``, an argument, and one of four outcomes (``kind``):

``"ok"``
    completed and the system confirmed it; ``result`` is what it returned.
``"fail"``
    completed and definitely did **not** take effect (checkers drop it).
``"info"``
    indeterminate (a timeout, a crash, a lost connection): it may or may not have taken
    effect, and if it did, at any time after its start, with no upper bound.
``"invoke"``
    still pending when the history was taken; treated exactly like ``"info"``.

Times are any monotonically increasing numbers (an event counter or seconds). Operation
A *precedes* B in real time only if ``A.end < B.start`` strictly; operations whose
windows touch or overlap are concurrent. The :class:`History` recorder timestamps each
invocation before the call and each completion after it, so recorded windows contain the
real ones; widening a window only allows more orders, so a checker never reports a
violation because of recording delay.

Checkers:

* :func:`check_linearizable`: Wing and Gong's search for a linearization in Lowe's
  just-in-time form, memoized on (placed operations, model state), over Porcupine's
  linked list of events, with P-compositional splitting by key for
  :class:`KeyedModel`. Ships a register (read,
  write, compare-and-set) and a counter (read, add, decrement-if-enough) model.
* :func:`check_set_full`: Jepsen's ``set-full`` analysis (stable / lost / never-read,
  stale, duplicated) for a grow-only set with ``add(element)`` and ``read()``.
* :func:`check_counter_bounds`: Jepsen's ``counter`` analysis: every read lies between
  the adds confirmed before it began and the adds attempted before it ended.

Every result is a frozen dataclass with a ``valid``/``ok`` flag, structured detail and a
readable ``explanation`` (also its ``str()``). Results do not depend on the order in
which operations are listed: checkers sort them by ``(start, end, id)`` first.
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, TypeAlias, TypeVar

__all__ = [
    "CounterBoundsResult",
    "CounterModel",
    "CounterViolation",
    "History",
    "KeyedModel",
    "LinearizabilityResult",
    "Model",
    "Operation",
    "PendingCall",
    "RegisterModel",
    "SearchLimitExceeded",
    "SetElementResult",
    "SetFullResult",
    "Token",
    "check_counter_bounds",
    "check_linearizable",
    "check_set_full",
]

Kind = Literal["invoke", "ok", "fail", "info"]
_KINDS: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
_INF = float("inf")
S = TypeVar("S")


# ---------------------------------------------------------------------------------------
# History model
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Operation:
    """One invocation and its completion, as a client observed them.

    ``start`` is when the client invoked it, ``end`` when the completion was recorded
    (``None`` while ``kind == "invoke"``, i.e. pending). ``arg`` is the argument (use a
    tuple for several), ``result`` the return value of an ``"ok"`` operation. ``id``
    identifies the operation inside its history; equal operations have equal ids.
    """

    id: int
    process: Hashable
    f: str
    arg: Any = None
    kind: Kind = "ok"
    result: Any = None
    start: float
    end: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"operation #{self.id}: kind must be one of {sorted(_KINDS)}, not {self.kind!r}")
        if self.kind == "invoke":
            if self.end is not None:
                raise ValueError(f"operation #{self.id} is pending (kind 'invoke') but has an end time")
        elif self.kind in ("ok", "fail") and self.end is None:
            raise ValueError(f"operation #{self.id} is {self.kind!r} and needs an end time")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"operation #{self.id} ends at {self.end} before it starts at {self.start}")

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def indeterminate(self) -> bool:
        """True for ``"info"`` and pending operations: the effect may or may not exist."""
        return self.kind in ("info", "invoke")

    @property
    def effective_end(self) -> float:
        """The latest time the operation may take effect: ``end`` if it completed with a
        definite outcome, infinity if it is indeterminate."""
        if self.indeterminate or self.end is None:
            return _INF
        return self.end

    def __str__(self) -> str:
        return _fmt_op(self)


@dataclass(frozen=True)
class Token:
    """Handle of an invoked operation, returned by :meth:`History.invoke`."""

    id: int
    _history: int = field(repr=False)


_history_serial = itertools.count()


class History:
    """A thread-safe recorder of operations, and the sequence of them it holds.

    Record from any number of threads or asyncio tasks::

        h = History()
        t = h.invoke("client-1", "write", 3)
        ...                       # perform the operation
        h.ok(t)                   # or h.fail(t), h.info(t), h.ok(t, result)

    Each call takes a short lock and never blocks otherwise, so it is safe inside a
    running event loop. Times come from a logical counter (each invocation or
    completion gets the next integer) unless ``clock`` is given (e.g. ``time.monotonic``;
    readings are clamped so they never go backwards).

    :meth:`record` wraps one call in a ``with`` block; :meth:`from_events` and
    :meth:`from_ops` build histories from tuples in tests; ``History(operations)`` wraps
    existing :class:`Operation` records.
    """

    def __init__(
        self, operations: Iterable[Operation] = (), *, clock: Callable[[], float] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._serial = next(_history_serial)
        self._clock = clock
        self._ops: dict[int, Operation] = {}
        last = -_INF
        for op in operations:
            if op.id in self._ops:
                raise ValueError(f"two operations share id {op.id}")
            self._ops[op.id] = op
            last = max(last, op.start, op.end if op.end is not None else -_INF)
        self._next_id = max(self._ops, default=-1) + 1
        self._last_time = last
        self._tick = 0 if last == -_INF else int(last) + 1

    # -- recording ---------------------------------------------------------------------
    def _now(self) -> float:
        if self._clock is None:
            t: float = self._tick
            self._tick += 1
        else:
            t = max(self._clock(), self._last_time)
        self._last_time = t
        return t

    def invoke(self, process: Hashable, f: str, arg: Any = None) -> Token:
        """Record that ``process`` invokes ``f(arg)`` now; complete it with the token."""
        with self._lock:
            op_id = self._next_id
            self._next_id += 1
            self._ops[op_id] = Operation(id=op_id, process=process, f=f, arg=arg, kind="invoke", start=self._now())
            return Token(op_id, self._serial)

    def _complete(self, token: Token, kind: Kind, result: Any) -> Operation:
        with self._lock:
            op = self._ops.get(token.id) if token._history == self._serial else None
            if op is None:
                raise ValueError(f"{token} was not issued by this history")
            if op.kind != "invoke":
                raise ValueError(f"operation #{op.id} already completed as {op.kind!r}")
            done = Operation(
                id=op.id, process=op.process, f=op.f, arg=op.arg, kind=kind,
                result=result if kind == "ok" else None, start=op.start, end=self._now(),
            )
            self._ops[op.id] = done
            return done

    def ok(self, token: Token, result: Any = None) -> Operation:
        """The operation completed and returned ``result``."""
        return self._complete(token, "ok", result)

    def fail(self, token: Token) -> Operation:
        """The operation completed and definitely did not take effect."""
        return self._complete(token, "fail", None)

    def info(self, token: Token) -> Operation:
        """The outcome is unknown (timeout, crash): it may take effect, even later."""
        return self._complete(token, "info", None)

    def record(self, process: Hashable, f: str, arg: Any = None) -> PendingCall:
        """Invoke now and complete through the returned handle, in a ``with`` block.

        Leaving the block without calling ``ok``/``fail``/``info`` (including by an
        exception, which propagates) records the operation as indeterminate: only what
        the code confirmed counts as confirmed.
        """
        return PendingCall(self, self.invoke(process, f, arg))

    # -- reading -----------------------------------------------------------------------
    @property
    def operations(self) -> tuple[Operation, ...]:
        """A snapshot of every operation, in invocation (id) order."""
        with self._lock:
            return tuple(self._ops[i] for i in sorted(self._ops))

    @property
    def pending(self) -> tuple[Operation, ...]:
        """Operations invoked and not completed yet (checked as indeterminate)."""
        return tuple(op for op in self.operations if op.kind == "invoke")

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def __repr__(self) -> str:
        return f"History({len(self)} operations)"

    # -- building from tuples --------------------------------------------------------------
    @classmethod
    def from_events(cls, events: Iterable[Sequence[Any]]) -> History:
        """Build a history from Jepsen-style events, listed in time order.

        Each event is ``(process, kind, f, value)`` or ``(process, kind, f, value,
        time)``; without a time, an event's position in the list is its time. ``kind``
        is ``"invoke"``, ``"ok"``, ``"fail"`` or ``"info"``. For an invocation ``value``
        is the argument, for ``"ok"`` the return value, otherwise it is ignored. A
        completion closes the open invocation of the same process (one at a time per
        process, as in Jepsen); invocations never completed stay pending::

            History.from_events([
                ("a", "invoke", "write", 1), ("b", "invoke", "read", None),
                ("a", "ok", "write", None),  ("b", "ok", "read", 1),
            ])
        """
        ops: list[Operation] = []
        open_: dict[Hashable, Operation] = {}
        last = -_INF
        for pos, ev in enumerate(events):
            if len(ev) not in (4, 5):
                raise ValueError(f"event {pos}: expected (process, kind, f, value[, time]), got {ev!r}")
            process, kind, f, value = ev[0], ev[1], ev[2], ev[3]
            t = ev[4] if len(ev) == 5 else pos
            if t < last:
                raise ValueError(f"event {pos}: time {t} is before the previous event's {last}; list events in time order")
            last = t
            if kind == "invoke":
                if process in open_:
                    raise ValueError(f"event {pos}: process {process!r} invokes while #{open_[process].id} is open")
                open_[process] = Operation(id=len(ops), process=process, f=f, arg=value, kind="invoke", start=t)
                ops.append(open_[process])
            elif kind in ("ok", "fail", "info"):
                inv = open_.pop(process, None)
                if inv is None:
                    raise ValueError(f"event {pos}: {kind!r} for process {process!r}, which has no open invocation")
                if inv.f != f:
                    raise ValueError(f"event {pos}: completes {f!r} but process {process!r} invoked {inv.f!r}")
                ops[inv.id] = Operation(
                    id=inv.id, process=process, f=f, arg=inv.arg, kind=kind,
                    result=value if kind == "ok" else None, start=inv.start, end=t,
                )
            else:
                raise ValueError(f"event {pos}: unknown kind {kind!r}")
        return cls(ops)

    @classmethod
    def from_ops(cls, rows: Iterable[Sequence[Any]]) -> History:
        """Build a history from whole operations: ``(process, f, arg, result, start, end)``
        with an optional seventh item, the kind (default ``"ok"``). Ids follow row order.
        Use ``end=None`` with kind ``"invoke"`` for a pending operation."""
        ops = []
        for i, row in enumerate(rows):
            if len(row) not in (6, 7):
                raise ValueError(f"row {i}: expected (process, f, arg, result, start, end[, kind]), got {row!r}")
            kind: Kind = row[6] if len(row) == 7 else "ok"
            ops.append(Operation(
                id=i, process=row[0], f=row[1], arg=row[2], kind=kind,
                result=row[3] if kind == "ok" else None, start=row[4], end=row[5],
            ))
        return cls(ops)


class PendingCall:
    """An invoked operation awaiting its completion; see :meth:`History.record`."""

    def __init__(self, history: History, token: Token) -> None:
        self.history = history
        self.token = token
        self.operation: Operation | None = None

    def ok(self, result: Any = None) -> Operation:
        self.operation = self.history.ok(self.token, result)
        return self.operation

    def fail(self) -> Operation:
        self.operation = self.history.fail(self.token)
        return self.operation

    def info(self) -> Operation:
        self.operation = self.history.info(self.token)
        return self.operation

    def __enter__(self) -> PendingCall:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.operation is None:
            self.info()


HistoryLike: TypeAlias = "History | Iterable[Operation]"


def _operations(history: HistoryLike) -> list[Operation]:
    """The operations in canonical order, so results never depend on listing order."""
    ops = list(history.operations if isinstance(history, History) else history)
    ids = [op.id for op in ops]
    if len(set(ids)) != len(ids):
        raise ValueError("two operations share an id; build the history with History(...)")
    ops.sort(key=lambda op: (op.start, op.effective_end, op.id))
    return ops


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------
def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fmt_time(t: float | None) -> str:
    if t is None or t == _INF:
        return "∞"
    return str(int(t)) if float(t).is_integer() else f"{t:g}"


def _fmt_op(op: Operation) -> str:
    if op.arg is None:
        args = ""
    elif isinstance(op.arg, tuple):
        args = ", ".join(_short(a) for a in op.arg)
    else:
        args = _short(op.arg)
    if op.kind == "ok":
        out = f" -> {_short(op.result)}"
    elif op.kind == "fail":
        out = " failed"
    else:
        out = " -> ? (" + ("pending" if op.kind == "invoke" else "indeterminate") + ")"
    close = "]" if op.kind in ("ok", "fail") else ")"
    return f"#{op.id} {op.process} {op.f}({args}){out} [{_fmt_time(op.start)}, {_fmt_time(op.effective_end)}{close}"


# ---------------------------------------------------------------------------------------
# Sequential models
# ---------------------------------------------------------------------------------------
class Model(ABC, Generic[S]):
    """A sequential specification for :func:`check_linearizable`.

    ``step(state, f, arg)`` applies one operation to a state and returns the new state
    and the value the operation returns. States must be hashable and compare by value
    (they are memoized). Models must be deterministic: an operation of unknown outcome
    is then always applicable, which is what lets the checker treat "it happened after
    everything else" and "it never happened" alike.
    """

    name: str = "model"

    @abstractmethod
    def init(self) -> S:
        """The initial state."""

    @abstractmethod
    def step(self, state: S, f: str, arg: Any) -> tuple[S, Any]:
        """Apply ``f(arg)`` to ``state``: ``(new state, return value)``. Raise
        ``ValueError`` for an operation the model does not know."""

    def result_matches(self, f: str, arg: Any, expected: Any, observed: Any) -> bool:
        """Whether an ``"ok"`` operation that returned ``observed`` agrees with the
        model's ``expected``; by default they must be equal."""
        return bool(expected == observed)

    def is_read_only(self, f: str, arg: Any) -> bool:
        """True if ``f`` never changes the state. Indeterminate read-only operations
        constrain nothing, so the checker drops them before searching."""
        return False

    def partition_key(self, op: Operation) -> Hashable:
        """Operations with different keys are checked independently (P-compositionality);
        ``None`` for all means one search over the whole history."""
        return None

    def describe(self, state: S) -> str:
        return _short(state)


class RegisterModel(Model[Any]):
    """A read/write register with compare-and-set.

    ``read()`` returns the value; ``write(v)`` sets it (its recorded result is ignored);
    ``cas((old, new))`` sets ``new`` and returns ``True`` if the value equals ``old``,
    else returns ``False`` and changes nothing. Starts at ``initial``. Values must be
    hashable.
    """

    name = "register"

    def __init__(self, initial: Hashable = None) -> None:
        self.initial = initial

    def init(self) -> Any:
        return self.initial

    def step(self, state: Any, f: str, arg: Any) -> tuple[Any, Any]:
        if f == "read":
            return state, state
        if f == "write":
            return arg, None
        if f == "cas":
            old, new = _pair(arg, "cas")
            return (new, True) if state == old else (state, False)
        raise ValueError(f"register model: unknown operation {f!r} (expected read, write or cas)")

    def result_matches(self, f: str, arg: Any, expected: Any, observed: Any) -> bool:
        return f == "write" or bool(expected == observed)

    def is_read_only(self, f: str, arg: Any) -> bool:
        if f not in ("read", "write", "cas"):
            raise ValueError(f"register model: unknown operation {f!r} (expected read, write or cas)")
        return f == "read"


class CounterModel(Model[Any]):
    """A counter with a conditional decrement.

    ``read()`` returns the value; ``add(n)`` adds ``n`` (any sign; its recorded result is
    ignored); ``decrement(n)`` is *decrement-if-enough*: subtracts ``n`` and returns
    ``True`` if the value is at least ``n``, else returns ``False`` and changes nothing.
    Starts at ``initial``.
    """

    name = "counter"

    def __init__(self, initial: int = 0) -> None:
        self.initial = initial

    def init(self) -> Any:
        return self.initial

    def step(self, state: Any, f: str, arg: Any) -> tuple[Any, Any]:
        if f == "read":
            return state, state
        if f == "add":
            return state + arg, None
        if f == "decrement":
            if arg < 0:
                raise ValueError(f"counter model: decrement({arg!r}) needs a non-negative amount")
            return (state - arg, True) if state >= arg else (state, False)
        raise ValueError(f"counter model: unknown operation {f!r} (expected read, add or decrement)")

    def result_matches(self, f: str, arg: Any, expected: Any, observed: Any) -> bool:
        return f == "add" or bool(expected == observed)

    def is_read_only(self, f: str, arg: Any) -> bool:
        if f not in ("read", "add", "decrement"):
            raise ValueError(f"counter model: unknown operation {f!r} (expected read, add or decrement)")
        return f == "read"


class KeyedModel(Model[Any]):
    """Many independent objects, one per key, each specified by ``inner``.

    Every operation's ``arg`` is ``(key, inner_arg)``. Linearizability is compositional
    (Herlihy and Wing), so the checker searches each key's sub-history separately, which
    is exponentially cheaper than one search over all of them.
    """

    def __init__(self, inner: Model[Any]) -> None:
        self.inner = inner
        self.name = f"keyed {inner.name}"

    def init(self) -> Any:
        return self.inner.init()

    def step(self, state: Any, f: str, arg: Any) -> tuple[Any, Any]:
        return self.inner.step(state, f, _pair(arg, f)[1])

    def result_matches(self, f: str, arg: Any, expected: Any, observed: Any) -> bool:
        return self.inner.result_matches(f, _pair(arg, f)[1], expected, observed)

    def is_read_only(self, f: str, arg: Any) -> bool:
        return self.inner.is_read_only(f, _pair(arg, f)[1])

    def partition_key(self, op: Operation) -> Hashable:
        key: Hashable = _pair(op.arg, op.f)[0]
        return key

    def describe(self, state: Any) -> str:
        return self.inner.describe(state)


def _pair(arg: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(arg, (tuple, list)) or len(arg) != 2:
        raise ValueError(f"{what}: expected a pair as argument, got {arg!r}")
    return arg[0], arg[1]


# ---------------------------------------------------------------------------------------
# Linearizability
# ---------------------------------------------------------------------------------------
class SearchLimitExceeded(RuntimeError):
    """The linearizability search explored more configurations than allowed.

    The history is neither proven linearizable nor refuted. Shorten it, reduce the
    number of indeterminate operations (each one stays concurrent with everything after
    it), split it by key with :class:`KeyedModel`, or raise ``max_configurations``.
    """


@dataclass(frozen=True)
class LinearizabilityResult:
    """The outcome of :func:`check_linearizable`.

    If ``ok``, ``linearization`` is a witness: an order of the operations that respects
    real time and the model (indeterminate operations appear only if they were needed).
    If not, ``linearization`` is the longest linearizable prefix the search found,
    ``state`` the model state after it, ``stuck`` the operation that had to take effect
    next (its response had been reached) and ``unplaced`` every operation that could
    have been next, none of which fits. ``key`` names the failing partition of a
    :class:`KeyedModel` (whose witness, on success, lists each key's order in turn).
    """

    ok: bool
    model: str
    operations: int
    configurations: int
    linearization: tuple[Operation, ...]
    explanation: str
    state: Any = None
    stuck: Operation | None = None
    unplaced: tuple[Operation, ...] = ()
    key: Hashable = None

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.explanation


@dataclass
class _Search:
    ok: bool
    configurations: int
    linearization: list[Operation]
    state: Any
    stuck: Operation | None
    unplaced: list[tuple[Operation, str]]


def check_linearizable(
    history: HistoryLike, model: Model[Any], *, max_configurations: int | None = 500_000
) -> LinearizabilityResult:
    """Is there a total order of the operations that explains every result?

    A history is *linearizable* (Herlihy and Wing) if each operation can be assigned an
    instant inside its window ``[start, end]`` such that applying the operations in the
    order of those instants to ``model`` gives every ``"ok"`` operation the result it
    returned. ``"fail"`` operations are dropped; ``"info"`` and pending operations may
    take effect at any instant after their start, or never.

    The search is Wing and Gong's backtracking in Lowe's just-in-time form: the
    invocations and responses are walked in time order, and at the response of an
    operation not yet placed, that operation must be placed now, possibly preceded by
    other pending ones; when nothing fits, the search backtracks. Nodes are memoized on
    (placed operations, model state), so the work is bounded by the number of distinct
    configurations rather than orders: small when few operations overlap, exponential
    in the number of mutually concurrent ones. Indeterminate operations never respond,
    so they stay concurrent with everything after them and are the main cost. Past
    ``max_configurations`` explored nodes it raises :class:`SearchLimitExceeded`
    (``None``: no limit).
    """
    ops = _operations(history)
    groups: dict[Hashable, list[Operation]] = {}
    for op in ops:
        if op.kind == "fail":
            continue
        if op.indeterminate and model.is_read_only(op.f, op.arg):
            continue
        groups.setdefault(model.partition_key(op), []).append(op)
    budget = _INF if max_configurations is None else max_configurations
    explored = 0
    checked = 0
    witness: list[Operation] = []
    for key, group in groups.items():
        s = _search(group, model, budget - explored)
        explored += s.configurations
        checked += len(group)
        if not s.ok:
            return LinearizabilityResult(
                ok=False, model=model.name, operations=checked, configurations=explored,
                linearization=tuple(s.linearization), state=s.state, stuck=s.stuck,
                unplaced=tuple(op for op, _ in s.unplaced), key=key,
                explanation=_explain_failure(model, key, len(groups) > 1, len(group), s),
            )
        witness.extend(s.linearization)
    where = f" ({len(groups)} keys checked independently)" if len(groups) > 1 else ""
    return LinearizabilityResult(
        ok=True, model=model.name, operations=checked, configurations=explored,
        linearization=tuple(witness),
        explanation=(
            f"linearizable with respect to {model.name}{where}: {_plural(checked, 'operation')} "
            f"checked, {len(ops) - checked} dropped (failed, or indeterminate and read-only); "
            f"{_plural(explored, 'configuration')} explored"
        ),
    )


class _Frame:
    """A search node: the forced response ``i``, what is placed, and the choices left."""

    __slots__ = ("i", "placed", "optional", "state", "candidates", "next", "current")

    def __init__(self, i: int, placed: int, optional: int, state: Any, candidates: list[int]) -> None:
        self.i = i
        self.placed = placed  # bitmask of placed "ok" operations
        self.optional = optional  # bitmask of placed indeterminate operations
        self.state = state
        self.candidates = candidates
        self.next = 0
        self.current = -1


def _search(ops: list[Operation], model: Model[Any], budget: float) -> _Search:
    """Just-in-time linearization (Lowe): walk the events in time order and place
    operations only when a response forces it.

    At the response of an unplaced operation X, X must take effect now, possibly after
    other pending (invoked, unplaced) operations: the node tries X first, then each
    pending operation as the next one to place. Indeterminate operations never respond,
    so they are placed only when some later result needs them; left unplaced, they
    never happened. Placed operations leave a doubly-linked list of unplaced ones, so a
    node lists its pending operations without scanning the placed ones.

    Memoization: a node is (placed ok operations, placed indeterminate operations,
    state); which response is forced next depends on the first part only. A node with
    the same ok set and state as a node that already failed, and a superset of its
    indeterminate operations, fails too, so it is skipped: both face the same forced
    responses, and every indeterminate operation still available to it was available
    to the failed node, so any continuation of it was a continuation of the failed one. With no indeterminate operations this is exactly the
    (set, state) memoization of Lowe.
    """
    n = len(ops)
    # Calls sort before responses at equal times: touching windows are concurrent.
    raw = sorted([(op.start, 0, k) for k, op in enumerate(ops)]
                 + [(op.end, 1, k) for k, op in enumerate(ops) if op.kind == "ok" and op.end is not None])
    n_events = len(raw)
    ev_op = [k for _, _, k in raw]
    ev_ret = [bool(r) for _, r, _ in raw]
    call_ev = [0] * n
    for e, (_, r, k) in enumerate(raw):
        if not r:
            call_ev[k] = e
    is_ok = [op.kind == "ok" for op in ops]
    bit: list[int] = []
    n_ok = n_opt = 0
    for k in range(n):
        if is_ok[k]:
            bit.append(1 << n_ok)
            n_ok += 1
        else:
            bit.append(1 << n_opt)
            n_opt += 1
    # Unplaced operations in call order (ops are sorted by start already); head n, tail n+1.
    head, tail = n, n + 1
    nxt = [*range(1, n + 1), 0, tail]
    prv = [head, *range(0, n - 1), head, n - 1]
    nxt[n - 1 if n else head] = tail
    nxt[head] = 0 if n else tail
    prv[tail] = n - 1 if n else head
    is_placed = bytearray(n)
    # Pending indeterminate operations with the same function and argument are
    # interchangeable (neither ever responds), so a node tries only the earliest of each.
    twin: list[int] = []
    classes_of: dict[tuple[str, Any], int] = {}
    for k, op in enumerate(ops):
        try:
            twin.append(classes_of.setdefault((op.f, op.arg), len(classes_of)))
        except TypeError:  # unhashable argument: a class of its own
            twin.append(-1 - k)

    def unlink(y: int) -> None:
        nxt[prv[y]] = nxt[y]
        prv[nxt[y]] = prv[y]
        is_placed[y] = 1

    def relink(y: int) -> None:
        nxt[prv[y]] = y
        prv[nxt[y]] = y
        is_placed[y] = 0

    failed: dict[tuple[int, Any], list[int]] = {}
    explored = 0
    frames: list[_Frame] = []
    placed_seq: list[int] = []
    best_depth = -1
    best: tuple[list[int], Any, int, list[int]] = ([], None, 0, [])
    i, placed, optional, state = 0, 0, 0, model.init()
    while True:
        while i < n_events and (not ev_ret[i] or is_placed[ev_op[i]]):
            i += 1
        if i == n_events:
            return _Search(True, explored, [ops[y] for y in placed_seq], state, None, [])
        dead = failed.get((placed, state))
        if not dead or all(m & ~optional for m in dead):
            if explored >= budget:
                raise SearchLimitExceeded(
                    f"explored {explored} configurations of {n} operations without a verdict"
                )
            explored += 1
            x = ev_op[i]
            candidates = [x]
            classes: set[int] = set()
            y = nxt[head]
            while y != tail and call_ev[y] < i:
                if is_ok[y]:
                    if y != x:
                        candidates.append(y)
                elif twin[y] not in classes:
                    classes.add(twin[y])
                    candidates.append(y)
                y = nxt[y]
            frames.append(_Frame(i, placed, optional, state, candidates))
        # Place the next candidate of the innermost node, backtracking when one runs out.
        while frames:
            fr = frames[-1]
            if fr.current >= 0:
                relink(fr.current)
                placed_seq.pop()
                fr.current = -1
            while fr.next < len(fr.candidates):
                y = fr.candidates[fr.next]
                fr.next += 1
                op = ops[y]
                new_state, expected = model.step(fr.state, op.f, op.arg)
                if is_ok[y]:
                    if not model.result_matches(op.f, op.arg, expected, op.result):
                        continue
                    placed, optional = fr.placed | bit[y], fr.optional
                else:
                    placed, optional = fr.placed, fr.optional | bit[y]
                unlink(y)
                fr.current = y
                placed_seq.append(y)
                i, state = fr.i, new_state
                break
            if fr.current >= 0:
                break
            if len(placed_seq) > best_depth:
                best_depth = len(placed_seq)
                best = (list(placed_seq), fr.state, fr.i, fr.candidates)
            key = (fr.placed, fr.state)
            # Keep only the minimal failed sets: a superset of another adds nothing.
            failed[key] = [m for m in failed.get(key, ()) if fr.optional & ~m] + [fr.optional]
            frames.pop()
        if not frames:
            break
    seq, best_state, stuck_event, candidates = best
    unplaced: list[tuple[Operation, str]] = []
    for y in candidates:
        op = ops[y]
        new_state, expected = model.step(best_state, op.f, op.arg)
        if op.kind == "ok" and not model.result_matches(op.f, op.arg, expected, op.result):
            why = f"the model returns {_short(expected)} in this state"
        else:
            why = f"it fits (state becomes {model.describe(new_state)}), but no order continuing from there works"
        unplaced.append((op, why))
    return _Search(False, explored, [ops[y] for y in seq], best_state, ops[ev_op[stuck_event]], unplaced)


def _explain_failure(model: Model[Any], key: Hashable, keyed: bool, n: int, s: _Search) -> str:
    where = f" for key {_short(key)}" if keyed else ""
    lines = [
        f"not linearizable with respect to {model.name}{where}: no order of the {_plural(n, 'operation')} "
        "respects real time and explains every result.",
        f"Longest linearizable prefix ({_plural(len(s.linearization), 'operation')}), "
        f"leaving state {model.describe(s.state)}:",
    ]
    shown = s.linearization[-10:]
    if len(s.linearization) > len(shown):
        lines.append(f"  ... {len(s.linearization) - len(shown)} earlier operations")
    lines += [f"  {_fmt_op(op)}" for op in shown]
    if not s.linearization:
        lines.append("  (none)")
    assert s.stuck is not None
    lines.append(
        f"Then {_fmt_op(s.stuck)} had to take effect before it returned at "
        f"{_fmt_time(s.stuck.end)}, but no operation can be placed next:"
    )
    lines += [f"  {_fmt_op(op)}: {why}" for op, why in s.unplaced]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Jepsen set-full
# ---------------------------------------------------------------------------------------
Outcome = Literal["stable", "lost", "never-read"]


@dataclass(frozen=True)
class SetElementResult:
    """What the reads say about one attempted element.

    ``known`` is the operation that first proved the element exists: its ok add or the
    first read that returned it, whichever completed first. ``last_present`` and
    ``last_absent`` are the reads, among those that completed after the element's add
    was invoked, that began latest and did / did not return it. ``stable_latency``
    (stable elements) is how long after ``known`` completed a read could still miss it
    (0 if none could); ``lost_latency`` (lost elements) is how long after ``known`` it was
    last seen. ``max_copies`` is the largest number of times one read returned it.
    """

    element: Hashable
    outcome: Outcome
    stale: bool
    known: Operation | None
    last_present: Operation | None
    last_absent: Operation | None
    stable_latency: float | None
    lost_latency: float | None
    max_copies: int


@dataclass(frozen=True)
class SetFullResult:
    """The outcome of :func:`check_set_full`; ``valid`` is also its truth value."""

    valid: bool
    elements: Mapping[Hashable, SetElementResult]
    stable: tuple[Hashable, ...]
    lost: tuple[Hashable, ...]
    never_read: tuple[Hashable, ...]
    stale: tuple[Hashable, ...]
    duplicated: Mapping[Hashable, int]
    unexpected: Mapping[Hashable, Operation]
    explanation: str

    @property
    def attempt_count(self) -> int:
        return len(self.elements)

    @property
    def stable_count(self) -> int:
        return len(self.stable)

    @property
    def lost_count(self) -> int:
        return len(self.lost)

    @property
    def never_read_count(self) -> int:
        return len(self.never_read)

    @property
    def stale_count(self) -> int:
        return len(self.stale)

    @property
    def duplicated_count(self) -> int:
        return len(self.duplicated)

    def __bool__(self) -> bool:
        return self.valid

    def __str__(self) -> str:
        return self.explanation


def _ordered(elements: Iterable[Hashable]) -> tuple[Hashable, ...]:
    items = list(elements)
    try:
        return tuple(sorted(items))  # type: ignore[type-var]
    except TypeError:
        return tuple(sorted(items, key=repr))


def _start_key(op: Operation) -> tuple[float, float, int]:
    return (op.start, op.effective_end, op.id)


def check_set_full(
    history: HistoryLike, *, add: str = "add", read: str = "read", linearizable: bool = False
) -> SetFullResult:
    """Jepsen's ``set-full`` analysis of a grow-only set.

    Operations are ``add(element)`` and ``read()`` returning every element present (any
    iterable; a list or tuple may reveal duplicates). For each element whose add was
    attempted (any kind), over the ``"ok"`` reads that completed after the add was first
    invoked (earlier reads cannot have seen it):

    * **stable**: some read returned it, and the latest-starting read that returned it
      started after the latest-starting read that missed it: from some point on, every
      read sees it;
    * **lost**: it was *known* (its add completed ok, or a read returned it), and a read
      that started after it was known, and after every read that returned it began,
      missed it: it was acknowledged, then it vanished;
    * **never-read**: neither; no read began after it was known, or it was never
      confirmed and never seen (a read concurrent with the add may miss it);
    * **stale** (a stable element): a read that began after the element was known
      still missed it; allowed for an eventually consistent set, a violation for a
      linearizable one (``linearizable=True``);
    * **duplicated**: a single read returned it more than once.

    ``valid`` is: no lost element, no duplicate, no *unexpected* element (a read returned
    something no add could have produced: never attempted, only failed adds, or every
    add began after the read ended), and, with ``linearizable=True``, no stale element.
    Element comparisons use the operations' start times (Jepsen's invocation order).
    """
    ops = _operations(history)
    adds: dict[Hashable, list[Operation]] = {}
    reads: list[tuple[Operation, Counter[Hashable]]] = []
    for op in ops:
        if op.f == add:
            adds.setdefault(op.arg, []).append(op)
        elif op.f == read:
            if op.kind != "ok":
                continue
            if op.result is None or isinstance(op.result, (str, bytes)):
                raise ValueError(f"set-full: read {_fmt_op(op)} must return an iterable of elements")
            reads.append((op, Counter(iter(op.result))))  # iter: a dict result counts its keys once
        else:
            raise ValueError(f"set-full: unknown operation {op.f!r} (expected {add!r} or {read!r})")

    duplicated: dict[Hashable, int] = {}
    unexpected: dict[Hashable, Operation] = {}
    for rop, seen in reads:
        for x, copies in seen.items():
            if copies > 1:
                duplicated[x] = max(duplicated.get(x, 0), copies)
            rop_end = rop.effective_end
            if x not in unexpected and not any(
                a.kind != "fail" and a.start <= rop_end for a in adds.get(x, ())
            ):
                unexpected[x] = rop

    results: dict[Hashable, SetElementResult] = {}
    for x, add_ops in adds.items():
        first_invoke = min(a.start for a in add_ops)
        # Known: the earliest completion that proves the element exists (an add wins ties).
        proofs = [(a.effective_end, 0, a.id, a) for a in add_ops if a.kind == "ok"]
        last_present: Operation | None = None
        last_absent: Operation | None = None
        for rop, seen in reads:
            if rop.effective_end < first_invoke:
                continue  # ended before any add of x began: cannot speak about x
            if x in seen:
                proofs.append((rop.effective_end, 1, rop.id, rop))
                if last_present is None or _start_key(rop) > _start_key(last_present):
                    last_present = rop
            elif last_absent is None or _start_key(rop) > _start_key(last_absent):
                last_absent = rop
        known = min(proofs, key=lambda p: p[:3])[3] if proofs else None
        stable = last_present is not None and (last_absent is None or last_absent.start < last_present.start)
        lost = (
            known is not None and last_absent is not None
            and (last_present is None or last_present.start < last_absent.start)
            and known.effective_end < last_absent.start
        )
        stale = False
        stable_latency: float | None = None
        lost_latency: float | None = None
        if stable:
            assert known is not None
            stale = last_absent is not None and last_absent.start > known.effective_end
            stable_latency = max(0.0, last_absent.start - known.effective_end) if last_absent else 0.0
        elif lost:
            assert known is not None
            lost_latency = max(0.0, last_present.start - known.effective_end) if last_present else 0.0
        outcome: Outcome = "stable" if stable else "lost" if lost else "never-read"
        results[x] = SetElementResult(
            element=x, outcome=outcome, stale=stale, known=known, last_present=last_present,
            last_absent=last_absent, stable_latency=stable_latency, lost_latency=lost_latency,
            max_copies=max((seen[x] for _, seen in reads if x in seen), default=0),
        )

    def having(pred: Callable[[SetElementResult], bool]) -> tuple[Hashable, ...]:
        return _ordered(x for x, r in results.items() if pred(r))

    stable_xs = having(lambda r: r.outcome == "stable")
    lost_xs = having(lambda r: r.outcome == "lost")
    never_xs = having(lambda r: r.outcome == "never-read")
    stale_xs = having(lambda r: r.stale)
    valid = not lost_xs and not duplicated and not unexpected and not (linearizable and stale_xs)
    return SetFullResult(
        valid=valid, elements=results, stable=stable_xs, lost=lost_xs, never_read=never_xs,
        stale=stale_xs, duplicated=duplicated, unexpected=unexpected,
        explanation=_explain_set(valid, results, stable_xs, lost_xs, never_xs, stale_xs,
                                 duplicated, unexpected, linearizable),
    )


def _explain_set(
    valid: bool,
    results: Mapping[Hashable, SetElementResult],
    stable: tuple[Hashable, ...],
    lost: tuple[Hashable, ...],
    never_read: tuple[Hashable, ...],
    stale: tuple[Hashable, ...],
    duplicated: Mapping[Hashable, int],
    unexpected: Mapping[Hashable, Operation],
    linearizable: bool,
) -> str:
    lines = [
        f"set-full {'valid' if valid else 'INVALID'}: {len(results)} elements attempted: "
        f"{len(stable)} stable ({len(stale)} stale), {len(lost)} lost, {len(never_read)} never read; "
        f"{len(duplicated)} duplicated, {len(unexpected)} unexpected"
    ]
    for x in lost[:10]:
        r = results[x]
        assert r.known is not None and r.last_absent is not None
        seen = (f"last returned by the read that began at {_fmt_time(r.last_present.start)}"
                if r.last_present else "never returned by any read")
        lines.append(
            f"  lost {_short(x)}: known since {_fmt_time(r.known.effective_end)} ({_fmt_op(r.known)}), {seen}; "
            f"missing from {_fmt_op(r.last_absent)} and every read that began later"
        )
    for x in _ordered(duplicated)[:10]:
        lines.append(f"  duplicated {_short(x)}: one read returned it {duplicated[x]} times")
    for x in _ordered(unexpected)[:10]:
        lines.append(f"  unexpected {_short(x)}: returned by {_fmt_op(unexpected[x])}, but no add of it "
                     "could have taken effect by then")
    worst = sorted(stale, key=lambda x: -(results[x].stable_latency or 0.0))
    for x in worst[: 10 if linearizable else 3]:
        r = results[x]
        assert r.last_absent is not None and r.known is not None
        lines.append(
            f"  stale {_short(x)}: known since {_fmt_time(r.known.effective_end)}, but missing from "
            f"{_fmt_op(r.last_absent)}; visible to every read begun after that"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Jepsen counter bounds
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CounterViolation:
    """A read outside ``[lower, upper]``, the range the adds around it allow."""

    read: Operation
    value: float
    lower: float
    upper: float

    def __str__(self) -> str:
        side = "below" if self.value < self.lower else "above"
        return (f"{_fmt_op(self.read)} is {side} the allowed range "
                f"[{_fmt_time(self.lower)}, {_fmt_time(self.upper)}]")


@dataclass(frozen=True)
class CounterBoundsResult:
    """The outcome of :func:`check_counter_bounds`; ``valid`` is also its truth value.
    ``bounds`` maps every checked read's id to its ``(lower, upper)``."""

    valid: bool
    reads: int
    violations: tuple[CounterViolation, ...]
    bounds: Mapping[int, tuple[float, float]]
    explanation: str

    def __bool__(self) -> bool:
        return self.valid

    def __str__(self) -> str:
        return self.explanation


def check_counter_bounds(
    history: HistoryLike, *, initial: float = 0, add: str = "add", read: str = "read"
) -> CounterBoundsResult:
    """Jepsen's ``counter`` analysis: every read is between what surely happened and what
    may have happened.

    Operations are ``add(n)`` and ``read() -> value``. For an ``"ok"`` read, an add is
    *confirmed* if it completed ok before the read began (``add.end < read.start``), and
    *attempted* if it did not fail and began no later than the read ended (ok, info and
    pending adds). With non-negative increments the read must lie between ``initial +
    sum(confirmed)`` and ``initial + sum(attempted)``. Negative ``n`` are allowed: a
    confirmed add counts fully on both sides, an attempted one that is not confirmed
    lowers the lower bound if negative and raises the upper bound if positive.

    This is a necessary condition of linearizability for counters, cheap (O(n log n))
    and exact about bounds; it does not check that reads are mutually consistent (use
    :func:`check_linearizable` with :class:`CounterModel` for that).
    """
    ops = _operations(history)
    adds: list[Operation] = []
    reads: list[Operation] = []
    for op in ops:
        if op.f == add:
            if op.kind != "fail":
                _number(op.arg, op)
                adds.append(op)
        elif op.f == read:
            if op.kind == "ok":
                _number(op.result, op)
                reads.append(op)
        else:
            raise ValueError(f"counter bounds: unknown operation {op.f!r} (expected {add!r} or {read!r})")

    by_start = sorted(adds, key=lambda a: a.start)
    starts = [a.start for a in by_start]
    confirmed = sorted((a for a in adds if a.kind == "ok"), key=lambda a: a.effective_end)
    ends = [a.effective_end for a in confirmed]

    def prefix(values: Iterable[float]) -> list[float]:
        return [0, *itertools.accumulate(values)]

    # attempted: sum of max(0, n) and of min(0, n); confirmed: the same two sums.
    att_pos = prefix(max(0, a.arg) for a in by_start)
    att_neg = prefix(min(0, a.arg) for a in by_start)
    con_pos = prefix(max(0, a.arg) for a in confirmed)
    con_neg = prefix(min(0, a.arg) for a in confirmed)

    violations: list[CounterViolation] = []
    bounds: dict[int, tuple[float, float]] = {}
    for r in reads:
        assert r.end is not None
        p = bisect_right(starts, r.end)
        d = bisect_left(ends, r.start)
        # Confirmed adds are a subset of attempted ones: they count n on both sides.
        lower = initial + att_neg[p] + con_pos[d]
        upper = initial + att_pos[p] + con_neg[d]
        bounds[r.id] = (lower, upper)
        if not lower <= r.result <= upper:
            violations.append(CounterViolation(r, r.result, lower, upper))
    valid = not violations
    head = (f"counter bounds {'valid' if valid else 'INVALID'}: {len(reads)} reads checked against "
            f"{len(adds)} non-failed adds, {len(violations)} outside their bounds")
    return CounterBoundsResult(
        valid=valid, reads=len(reads), violations=tuple(violations), bounds=bounds,
        explanation="\n".join([head, *(f"  {v}" for v in violations[:20])]),
    )


def _number(value: Any, op: Operation) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"counter bounds: {_fmt_op(op)} needs a number, got {value!r}")
