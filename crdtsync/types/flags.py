"""Feature flags: enable-wins and disable-wins switches, and multivariate rollout flags.

The two boolean flags share one causal core (a dot function ``{dot: bool}`` plus a
:class:`~crdtsync.clock.Context`, see :mod:`crdtsync.types._dots`). Every write adds a
fresh dot carrying its value and puts every dot the writer currently sees into the
delta's context, so a write supersedes everything it has seen and only *concurrent*
writes survive side by side. When concurrent writes disagree, the flag's declared rule
decides (enable wins, or disable wins) and :attr:`conflict` says that it had to.

:class:`VariantFlag` serves one of several weighted variants per entity: an LWW config
register (variants, targeting rules, default variant, bucketing salt) plus a kill
switch with kill-wins semantics built on the disable-wins core.

Same-dot rule (all three): call a mutator on the writer's current state; two writes
made from one stale state share a dot, and joining them raises
:class:`~crdtsync.errors.DotReuse` instead of silently keeping one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .._encoding import corrupt, value_key
from ..clock import Context, Dot
from ._base import CRDT, actor_of, register, want_int, want_list, want_str
from ._dots import Removals, check_dots_in_context, join_dotfun, reused

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BUCKETS",
    "DisableWinsFlag",
    "EnableWinsFlag",
    "Evaluation",
    "Rule",
    "VariantConfig",
    "VariantFlag",
    "bucket_of",
]

def _agree(dot: Dot, a: bool, b: bool) -> bool:
    # A dot names one write: two values under one dot are two writes made from one state
    if a != b:
        raise reused("flag", dot, "an enable and a disable")
    return a


class _CausalFlag(CRDT[bool]):
    """Shared causal core of :class:`EnableWinsFlag` and :class:`DisableWinsFlag`.

    Same-dot rule: a mutator takes the writer's next dot from the state it is called on,
    so call it on the writer's current state (join each delta before making the next
    one; the Replica does). Joining two states that use one dot for two different writes
    raises :class:`~crdtsync.errors.DotReuse` (an enable and a disable under one dot); a
    re-delivered identical delta is a no-op. Not detectable: a stale delta whose dot the
    other side has already seen removed looks exactly like an observed remove and is
    dropped.
    """

    __slots__ = ("_ctx", "_default", "_fun")
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("enable", "disable")
    NEEDS_TIME: ClassVar[bool] = False
    RECORDS_REMOVALS: ClassVar[bool] = True

    _fun: Mapping[Dot, bool]
    _ctx: Context
    _default: bool

    def __init__(self, *, default: bool = False) -> None:
        if not isinstance(default, bool):
            raise TypeError(f"default must be True or False, got {default!r}")
        self._fun = {}
        self._ctx = Context()
        self._default = default

    @classmethod
    def _make(cls, fun: Mapping[Dot, bool], ctx: Context, default: bool) -> Self:
        state = cls.__new__(cls)
        state._fun = fun
        state._ctx = ctx
        state._default = default
        return state

    @staticmethod
    def _decide(values: Iterable[bool]) -> bool:
        """The flag's value given the values of its live (concurrent) writes."""
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------
    @property
    def default(self) -> bool:
        """The value before any write (fixed at construction)."""
        return self._default

    @property
    def live(self) -> Mapping[Dot, bool]:
        """The surviving writes: dot -> value, one per concurrent writer (read-only)."""
        return MappingProxyType(dict(self._fun))

    @property
    def context(self) -> Context:
        """Every write this state has seen."""
        return self._ctx

    @property
    def conflict(self) -> bool:
        """True when concurrent writes disagree, so the flag's rule decided the value."""
        return len(set(self._fun.values())) > 1

    @property
    def enabled_by(self) -> frozenset[str]:
        """Actors whose surviving write is an enable."""
        return frozenset(d.replica for d, v in self._fun.items() if v)

    @property
    def disabled_by(self) -> frozenset[str]:
        """Actors whose surviving write is a disable."""
        return frozenset(d.replica for d, v in self._fun.items() if not v)

    def value(self) -> bool:
        if not self._fun:
            return self._default
        return self._decide(self._fun.values())

    def params(self) -> Mapping[str, Any]:
        return {"default": self._default}

    # -- mutators --------------------------------------------------------------
    def _write(self, on: bool, actor: str) -> Self:
        actor_of(actor)
        dot = self._ctx.next_dot(actor)
        return self._make({dot: on}, Context.from_dots([*self._fun, dot]), self._default)

    def enable(self, *, actor: str) -> Self:
        """Delta that turns the flag on, superseding every write this state has seen."""
        return self._write(True, actor)

    def disable(self, *, actor: str) -> Self:
        """Delta that turns the flag off, superseding every write this state has seen."""
        return self._write(False, actor)

    # -- lattice ---------------------------------------------------------------
    def join(self, other: Self) -> Self:
        self._check_joinable(other)
        if other is self:
            return self
        ctx = self._ctx.join(other._ctx)
        fun = join_dotfun(self._fun, self._ctx, other._fun, other._ctx, _agree)
        if ctx == self._ctx and fun == self._fun:
            return self
        if ctx == other._ctx and fun == other._fun:
            return other
        return self._make(fun, ctx, self._default)

    # -- removal records (for ORMap) ----------------------------------------------
    def _removals(self) -> Removals:
        return Removals(self._ctx, frozenset(self._fun))

    def _forget(self, removals: Removals) -> Self:
        fun = {d: v for d, v in self._fun.items() if not removals.removed(d)}
        return self if len(fun) == len(self._fun) else self._make(fun, self._ctx, self._default)

    def _seen(self, record: Removals, actor: str) -> Self:
        joined = self._ctx.join(Context.from_vv({actor: record.ctx.max_seq(actor)}))
        return self if joined == self._ctx else self._make(self._fun, joined, self._default)

    # -- encoding --------------------------------------------------------------
    def _payload(self) -> Any:
        return [
            self._default,
            [[d.replica, d.seq, v] for d, v in sorted(self._fun.items())],
            self._ctx.to_payload(),
        ]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> Self:
        tag = cls.TYPE_TAG
        rows = want_list(payload, tag)
        if len(rows) != 3:
            corrupt(tag, "expected [default, dots, context]")
        default, entries, ctx_rows = rows
        if not isinstance(default, bool):
            corrupt(tag, f"default must be a bool, got {type(default).__name__}")
        fun: dict[Dot, bool] = {}
        prev: Dot | None = None
        for entry in want_list(entries, f"{tag}.dots"):
            if not (isinstance(entry, list) and len(entry) == 3):
                corrupt(f"{tag}.dots", "entry is not [replica, seq, value]")
            replica = want_str(entry[0], f"{tag}.dots")
            if not replica:
                corrupt(f"{tag}.dots", "empty replica id")
            seq = want_int(entry[1], f"{tag}.dots", minimum=1)
            if not isinstance(entry[2], bool):
                corrupt(f"{tag}.dots", f"value must be a bool, got {type(entry[2]).__name__}")
            dot = Dot(replica, seq)
            if prev is not None and not prev < dot:
                corrupt(f"{tag}.dots", "dots are not in strictly ascending order")
            prev = dot
            fun[dot] = entry[2]
        ctx = Context.from_payload(ctx_rows, f"{tag}.context")
        check_dots_in_context(fun, ctx, tag)
        return cls._make(fun, ctx, default)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _CausalFlag)
        return self._default == other._default and self._fun == other._fun and self._ctx == other._ctx

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        extra = ", conflict" if self.conflict else ""
        return f"{type(self).__name__}({self.value()!r}{extra})"


@register
class EnableWinsFlag(_CausalFlag):
    """Enable wins over a concurrent disable; starts disabled (or at ``default``).

    A write supersedes every write it has seen, so the value is the default until the
    first write, then enabled iff some surviving (concurrent) write is an enable. Use it
    for opt-ins. Cost: one dot per concurrent writer (a later write reclaims the dots it
    has seen) plus the causal context, one int per writer when delivery is causal.

    Payload: ``[default: bool, [[replica, seq, value: bool], ...] sorted by dot,
    context rows]`` (context rows as in :meth:`crdtsync.clock.Context.to_payload`);
    every listed dot must be inside the context.
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "ewflag"

    @staticmethod
    def _decide(values: Iterable[bool]) -> bool:
        return any(values)


@register
class DisableWinsFlag(_CausalFlag):
    """Disable wins over a concurrent enable; starts disabled unless ``default=True``.

    A write supersedes every write it has seen, so the value is the default until the
    first write, then enabled only if every surviving (concurrent) write is an enable.
    Use it for kill switches, created with ``default=True`` so that they start enabled.
    Cost: one dot per concurrent writer (a later write reclaims the dots it has seen)
    plus the causal context, one int per writer when delivery is causal.

    Payload: ``[default: bool, [[replica, seq, value: bool], ...] sorted by dot,
    context rows]``, exactly as :class:`EnableWinsFlag`.
    """

    __slots__ = ()
    TYPE_TAG: ClassVar[str] = "dwflag"

    @staticmethod
    def _decide(values: Iterable[bool]) -> bool:
        return all(values)


# -- variant flags ------------------------------------------------------------------

#: Sticky buckets per flag; variant weights are in these units (basis points).
BUCKETS = 10_000

Scalar = str | int | float | bool
Reason = Literal["killed", "rule", "split", "default"]

_OPS = frozenset({"eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "contains", "starts_with", "exists"})
_ONE_VALUE = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "exists"})
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def bucket_of(salt: str, entity_key: str) -> int:
    """The sticky bucket (0..9999) of ``entity_key`` under ``salt``.

    ``blake2b(utf8(salt + "\\x00" + entity_key), digest_size=8)`` read big-endian, modulo
    :data:`BUCKETS`: the same on every process, host and Python version (unlike ``hash()``).
    """
    if not isinstance(salt, str) or not isinstance(entity_key, str):
        raise TypeError("salt and entity_key must be str")
    data = (salt + "\x00" + entity_key).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") % BUCKETS


def _check_scalar(v: Any, what: str) -> Scalar:
    if isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        if not -(2**63) <= v < 2**64:
            raise ValueError(f"{what}: integer {v} does not fit in 64 bits")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{what}: {v} is not a finite number")
        return v + 0.0  # -0.0 -> 0.0, so equal rules encode alike
    raise TypeError(f"{what}: values are str, int, float or bool, got {type(v).__name__}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _same(a: Any, b: Any) -> bool:
    """Equality that never confuses ``True`` with ``1`` or ``"1"`` with ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def _compare(op: str, x: Any, v: Any) -> bool:
    if not ((_is_number(x) and _is_number(v)) or (isinstance(x, str) and isinstance(v, str))):
        return False
    if op == "lt":
        return bool(x < v)
    if op == "le":
        return bool(x <= v)
    if op == "gt":
        return bool(x > v)
    return bool(x >= v)


@dataclass(frozen=True)
class Rule:
    """A targeting rule: entities whose ``attribute`` satisfies ``op`` get ``variant``.

    ``values`` is a tuple of str/int/float/bool (a single scalar or a list is accepted
    and stored as a tuple). Operators:

    * ``eq`` / ``ne``: one value; equal / not equal (``True`` never equals ``1``).
    * ``in`` / ``not_in``: one or more values; equal to one of them / to none of them.
    * ``lt`` ``le`` ``gt`` ``ge``: one value; both numbers, or both strings (compared
      lexicographically); anything else does not match.
    * ``contains``: a str attribute containing one of the (str) values as a substring,
      or a list/tuple/set attribute holding one of the values.
    * ``starts_with``: a str attribute starting with one of the (str) values.
    * ``exists``: one bool; ``True`` matches a present attribute, ``False`` an absent one.

    An attribute that is absent or ``None`` matches no operator except ``exists``
    (``False``); in particular ``ne`` and ``not_in`` do not match a missing attribute.
    """

    attribute: str
    op: str
    values: tuple[Scalar, ...]
    variant: str

    def __post_init__(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute:
            raise TypeError(f"Rule.attribute must be a non-empty str, got {self.attribute!r}")
        if self.op not in _OPS:
            raise ValueError(f"unknown rule op {self.op!r}; use one of {sorted(_OPS)}")
        if not isinstance(self.variant, str) or not self.variant:
            raise TypeError(f"Rule.variant must be a non-empty variant name, got {self.variant!r}")
        raw: Any = self.values
        if isinstance(raw, (list, tuple)):
            vals = tuple(_check_scalar(v, f"rule on {self.attribute!r}") for v in raw)
        else:
            vals = (_check_scalar(raw, f"rule on {self.attribute!r}"),)
        object.__setattr__(self, "values", vals)
        where = f"rule {self.attribute!r} {self.op}"
        if not vals:
            raise ValueError(f"{where}: give at least one value")
        if self.op in _ONE_VALUE and len(vals) != 1:
            raise ValueError(f"{where}: takes exactly one value, got {len(vals)}; use 'in' for several")
        if self.op == "exists" and not isinstance(vals[0], bool):
            raise ValueError(f"{where}: the value is True (attribute present) or False (absent)")
        if self.op in ("lt", "le", "gt", "ge") and isinstance(vals[0], bool):
            raise ValueError(f"{where}: compare with a number or a str, not a bool")
        if self.op == "starts_with" and not all(isinstance(v, str) for v in vals):
            raise ValueError(f"{where}: prefixes must be str")

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        """Whether an entity with these attributes is targeted by this rule."""
        x = attributes.get(self.attribute)
        op, vals = self.op, self.values
        if op == "exists":
            return (x is not None) == vals[0]
        if x is None:
            return False
        if op == "eq":
            return _same(x, vals[0])
        if op == "ne":
            return not _same(x, vals[0])
        if op == "in":
            return any(_same(x, v) for v in vals)
        if op == "not_in":
            return not any(_same(x, v) for v in vals)
        if op == "contains":
            if isinstance(x, str):
                return any(isinstance(v, str) and v in x for v in vals)
            if isinstance(x, (list, tuple, set, frozenset)):
                return any(_same(e, v) for e in x for v in vals)
            return False
        if op == "starts_with":
            return isinstance(x, str) and any(x.startswith(str(v)) for v in vals)
        return _compare(op, x, vals[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain summary: ``{"attribute", "op", "values": [...], "variant"}``."""
        return {"attribute": self.attribute, "op": self.op, "values": list(self.values), "variant": self.variant}

    def _row(self) -> list[Any]:
        return [self.attribute, self.op, list(self.values), self.variant]


@dataclass(frozen=True)
class Evaluation:
    """Which variant an entity gets, and why.

    ``reason`` is ``"killed"`` (the kill switch is on: the default variant is served),
    ``"rule"`` (targeting rule number ``rule`` matched), ``"split"`` (the entity's
    sticky ``bucket`` fell in a variant's weight) or ``"default"`` (no rule matched and
    the bucket is beyond the total weight). ``variant`` is ``None`` only for a flag that
    has never been configured.
    """

    variant: str | None
    reason: Reason
    rule: int | None = None
    bucket: int | None = None


@dataclass(frozen=True)
class VariantConfig:
    """One validated configuration of a :class:`VariantFlag`.

    ``variants`` are ``(name, weight)`` in walk order, weights in basis points of the
    :data:`BUCKETS` buckets (``500`` is 5%), totalling at most 10 000; buckets beyond
    the total get ``default``. Build one with :meth:`build`, which validates.
    """

    variants: tuple[tuple[str, int], ...]
    rules: tuple[Rule, ...]
    default: str
    salt: str

    @classmethod
    def build(
        cls,
        variants: Sequence[tuple[str, int]],
        rules: Sequence[Rule] = (),
        default: str | None = None,
        salt: str = "",
    ) -> VariantConfig:
        """Validate and build a config; raises TypeError/ValueError saying what to fix."""
        if isinstance(variants, (str, bytes)) or not isinstance(variants, Sequence):
            raise TypeError("variants must be a list of (name, weight) pairs, e.g. [('on', 500), ('off', 0)]")
        if not variants:
            raise ValueError("give at least one variant, e.g. [('on', 500), ('off', 0)]")
        out: list[tuple[str, int]] = []
        names: set[str] = set()
        total = 0
        for item in variants:
            if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
                raise TypeError(f"each variant is a (name, weight) pair, got {item!r}")
            name, weight = item
            if not isinstance(name, str) or not name:
                raise TypeError(f"variant names are non-empty str, got {name!r}")
            if not isinstance(weight, int) or isinstance(weight, bool):
                raise TypeError(f"weight of variant {name!r} must be an int (basis points), got {weight!r}")
            if weight < 0:
                raise ValueError(f"weight of variant {name!r} is {weight}; weights are basis points >= 0")
            if name in names:
                raise ValueError(f"variant {name!r} is listed twice; give each variant once")
            names.add(name)
            total += weight
            out.append((name, weight))
        if total > BUCKETS:
            raise ValueError(
                f"variant weights add up to {total} basis points; they must total at most {BUCKETS} "
                "(100%); buckets beyond the total get the default variant"
            )
        order = [n for n, _ in out]
        if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
            raise TypeError("rules must be a list of Rule")
        for i, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise TypeError(f"rule {i} is a {type(rule).__name__}; build it with Rule(attribute, op, values, variant)")
            if rule.variant not in names:
                raise ValueError(
                    f"rule {i} serves unknown variant {rule.variant!r}; add it to variants "
                    f"(weight 0 is fine) or use one of {order}"
                )
        if default is None:
            default = out[0][0]
        if not isinstance(default, str):
            raise TypeError(f"default must be a variant name, got {default!r}")
        if default not in names:
            raise ValueError(
                f"default {default!r} is not a variant; add it to variants (weight 0 is fine) "
                f"or use one of {order}"
            )
        if not isinstance(salt, str):
            raise TypeError(f"salt must be a str (usually the flag's name), got {salt!r}")
        if "\x00" in salt:
            raise ValueError("salt must not contain NUL characters")
        return cls(tuple(out), tuple(rules), default, salt)

    def evaluate(self, entity_key: str, attributes: Mapping[str, Any] = _EMPTY) -> Evaluation:
        """The variant for one entity under this config (ignores any kill switch)."""
        if not isinstance(entity_key, str):
            raise TypeError(f"entity_key must be a str, got {type(entity_key).__name__}")
        if not isinstance(attributes, Mapping):
            raise TypeError(f"attributes must be a mapping of name -> value, got {type(attributes).__name__}")
        for i, rule in enumerate(self.rules):
            if rule.matches(attributes):
                return Evaluation(rule.variant, "rule", i, None)
        bucket = bucket_of(self.salt, entity_key)
        upper = 0
        for name, weight in self.variants:
            upper += weight
            if bucket < upper:
                return Evaluation(name, "split", None, bucket)
        return Evaluation(self.default, "default", None, bucket)

    def summary(self) -> dict[str, Any]:
        return {
            "variants": [[n, w] for n, w in self.variants],
            "rules": [r.to_dict() for r in self.rules],
            "default": self.default,
            "salt": self.salt,
        }

    def _rows(self) -> list[Any]:
        return [[[n, w] for n, w in self.variants], [r._row() for r in self.rules], self.default, self.salt]

    @classmethod
    def _from_rows(cls, variants: Any, rules: Any, default: Any, salt: Any) -> VariantConfig:
        vs = [tuple(want_list(v, "variant.variants")) for v in want_list(variants, "variant.variants")]
        rs = []
        for row in want_list(rules, "variant.rules"):
            r = want_list(row, "variant.rules")
            if len(r) != 4:
                corrupt("variant.rules", "rule is not [attribute, op, values, variant]")
            rs.append(Rule(r[0], r[1], tuple(want_list(r[2], "variant.rules")), r[3]))
        return cls.build(vs, rs, want_str(default, "variant.default"), want_str(salt, "variant.salt"))  # type: ignore[arg-type]


def _check_ts(ts: Any) -> int:
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise TypeError(f"ts must be a non-negative int HLC timestamp (HLC.now()), got {ts!r}")
    return ts


@register
class VariantFlag(CRDT[dict[str, Any]]):
    """The latest configuration wins (HLC time, then actor id); a kill wins over a concurrent revive.

    Serves each entity one of several weighted variants: targeting rules first (first
    match wins), then a sticky split by a hash of the entity key, else the default
    variant; a killed flag serves the default variant to everyone. Cost: one config
    (overwrites reclaim the old one whole) plus the kill switch, a
    :class:`DisableWinsFlag` holding one dot per concurrent kill/revive writer and its
    causal context.

    Payload: ``[config, switch]`` where ``config`` is ``nil`` (never configured) or
    ``[ts, actor, [[name, weight], ...] in walk order, [[attribute, op, [values],
    variant], ...] in rule order, default, salt]`` and ``switch`` is the payload of a
    ``DisableWinsFlag(default=True)`` (enabled = not killed).
    """

    __slots__ = ("_config", "_stamp", "_switch")
    TYPE_TAG: ClassVar[str] = "variant"
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("configure", "kill", "revive")
    NEEDS_TIME: ClassVar[bool] = True
    #: the kill switch is causal: an ORMap keeps its removal records (the config is LWW)
    RECORDS_REMOVALS: ClassVar[bool] = True

    _stamp: tuple[int, str] | None
    _config: VariantConfig | None
    _switch: DisableWinsFlag

    def __init__(self) -> None:
        self._stamp = None
        self._config = None
        self._switch = DisableWinsFlag(default=True)

    @classmethod
    def _make(cls, stamp: tuple[int, str] | None, config: VariantConfig | None, switch: DisableWinsFlag) -> VariantFlag:
        state = cls.__new__(cls)
        state._stamp = stamp
        state._config = config
        state._switch = switch
        return state

    # -- removal records (for ORMap): the kill switch's ---------------------------
    def _removals(self) -> Removals:
        return self._switch._removals()

    def _forget(self, removals: Removals) -> VariantFlag:
        switch = self._switch._forget(removals)
        return self if switch is self._switch else VariantFlag._make(self._stamp, self._config, switch)

    def _seen(self, record: Removals, actor: str) -> VariantFlag:
        switch = self._switch._seen(record, actor)
        return self if switch is self._switch else VariantFlag._make(self._stamp, self._config, switch)

    # -- reading ---------------------------------------------------------------
    @property
    def config(self) -> VariantConfig | None:
        """The winning configuration, or ``None`` if the flag was never configured."""
        return self._config

    @property
    def stamp(self) -> tuple[int, str] | None:
        """``(ts, actor)`` of the winning configure, or ``None``."""
        return self._stamp

    @property
    def killed(self) -> bool:
        return not self._switch.value()

    @property
    def kill_switch(self) -> DisableWinsFlag:
        """The kill switch (enabled = serving normally); its ``live`` shows who killed/revived."""
        return self._switch

    @property
    def kill_conflict(self) -> bool:
        """True when a kill and a revive were concurrent (the kill won)."""
        return self._switch.conflict

    def value(self) -> dict[str, Any]:
        if self._config is None:
            return {"configured": False, "killed": self.killed, "variants": [], "rules": [],
                    "default": None, "salt": None}
        return {"configured": True, "killed": self.killed, **self._config.summary()}

    def evaluate(self, entity_key: str, attributes: Mapping[str, Any] = _EMPTY) -> Evaluation:
        """The variant ``entity_key`` gets: killed -> default; rules in order; split; default."""
        if not isinstance(entity_key, str):
            raise TypeError(f"entity_key must be a str, got {type(entity_key).__name__}")
        if not isinstance(attributes, Mapping):
            raise TypeError(f"attributes must be a mapping of name -> value, got {type(attributes).__name__}")
        if self._config is None:
            return Evaluation(None, "killed" if self.killed else "default")
        if self.killed:
            return Evaluation(self._config.default, "killed")
        return self._config.evaluate(entity_key, attributes)

    # -- mutators --------------------------------------------------------------
    def configure(
        self,
        variants: Sequence[tuple[str, int]],
        rules: Sequence[Rule] = (),
        default: str | None = None,
        salt: str | None = None,
        *,
        actor: str,
        ts: int,
    ) -> VariantFlag:
        """Delta replacing the whole configuration (later ``(ts, actor)`` wins).

        ``default`` is served when the flag is killed, or when no rule or split applies;
        omitted, it stays the current default if that is still a variant, else it is the
        first variant. ``salt`` (usually the flag's name) must be given the first time;
        omitted later, it stays the current one. Keep the salt and the order of the
        variants when changing weights, or entities move between variants.
        """
        actor_of(actor)
        _check_ts(ts)
        if salt is None:
            if self._config is None:
                raise ValueError(
                    "pass salt=... the first time (usually the flag's name) so that different "
                    "flags bucket entities independently"
                )
            salt = self._config.salt
        cfg = VariantConfig.build(variants, rules, default, salt)
        if default is None and self._config is not None:
            keep = self._config.default
            if any(name == keep for name, _ in cfg.variants):
                cfg = replace(cfg, default=keep)
        if self._stamp is not None and (ts, actor) <= self._stamp:
            raise ValueError(
                f"ts {ts} from {actor!r} does not come after the current config's {self._stamp}, so "
                "it would lose; stamp writes with the replica's HLC, which has observed that time"
            )
        return self._make((ts, actor), cfg, DisableWinsFlag(default=True))

    def kill(self, *, actor: str, ts: int | None = None) -> VariantFlag:
        """Delta turning the kill switch on: everyone gets the default variant.

        Wins over a concurrent :meth:`revive`. ``ts`` is accepted for a uniform call and
        not used (the switch is ordered causally, not by time).
        """
        if ts is not None:
            _check_ts(ts)
        return self._make(None, None, self._switch.disable(actor=actor))

    def revive(self, *, actor: str, ts: int | None = None) -> VariantFlag:
        """Delta turning the kill switch off again (loses to a concurrent :meth:`kill`)."""
        if ts is not None:
            _check_ts(ts)
        return self._make(None, None, self._switch.enable(actor=actor))

    # -- lattice ---------------------------------------------------------------
    def _config_wins(self, other: VariantFlag) -> bool:
        """Whether this side's config is at least the other's in LWW order."""
        if other._stamp is None or other._config is None:
            return True
        if self._stamp is None or self._config is None:
            return False
        if self._stamp != other._stamp:
            return self._stamp > other._stamp
        # Same (ts, actor) with different configs only comes from a misused clock; the
        # canonical bytes still pick the same winner everywhere.
        return value_key(self._config._rows()) >= value_key(other._config._rows())

    def join(self, other: VariantFlag) -> VariantFlag:
        self._check_joinable(other)
        if other is self:
            return self
        side = self if self._config_wins(other) else other
        switch = self._switch.join(other._switch)
        if side is self and switch is self._switch:
            return self
        if side is other and switch is other._switch:
            return other
        return self._make(side._stamp, side._config, switch)

    # -- encoding --------------------------------------------------------------
    def _payload(self) -> Any:
        config = None
        if self._stamp is not None and self._config is not None:
            config = [self._stamp[0], self._stamp[1], *self._config._rows()]
        return [config, self._switch._payload()]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> VariantFlag:
        rows = want_list(payload, "variant")
        if len(rows) != 2:
            corrupt("variant", "expected [config, switch]")
        raw, switch_rows = rows
        stamp: tuple[int, str] | None = None
        config: VariantConfig | None = None
        if raw is not None:
            cfg = want_list(raw, "variant.config")
            if len(cfg) != 6:
                corrupt("variant.config", "expected [ts, actor, variants, rules, default, salt]")
            ts = want_int(cfg[0], "variant.ts", minimum=0)
            actor = want_str(cfg[1], "variant.actor")
            if not actor:
                corrupt("variant.actor", "empty actor id")
            stamp = (ts, actor)
            config = VariantConfig._from_rows(*cfg[2:])
        switch = DisableWinsFlag._from_payload(switch_rows, version)
        if switch.default is not True:
            corrupt("variant.switch", "the kill switch must default to enabled (not killed)")
        return cls._make(stamp, config, switch)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VariantFlag):
            return NotImplemented
        if self._stamp != other._stamp or self._switch != other._switch:
            return False
        if self._config is None or other._config is None:
            return self._config is other._config
        # compare bytes: dataclass equality would confuse a rule value True with 1
        return value_key(self._config._rows()) == value_key(other._config._rows())

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        if self._config is None:
            return f"VariantFlag(unconfigured, killed={self.killed})"
        c = self._config
        return f"VariantFlag(variants={list(c.variants)}, rules={len(c.rules)}, default={c.default!r}, killed={self.killed})"
