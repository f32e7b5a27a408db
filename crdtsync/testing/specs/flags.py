"""Specs and reference models for the flags.

The models work from the causal definition, not from dots: an event is *live* when no
other event has it in its causal past; an enable-wins flag is on iff some live event is
an enable, a disable-wins flag iff there are live events and all are enables, and with
no live event either shows its default. A variant flag's config is the configure event
with the greatest ``(ts, actor)``; its kill switch is the disable-wins rule applied to
the kill/revive events alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from ...types.flags import DisableWinsFlag, EnableWinsFlag, Rule, VariantFlag
from .._spec import HistoryEvent, Op, TypeSpec, register_spec

__all__ = [
    "DWFLAG",
    "DWFLAG_ON",
    "EWFLAG",
    "VARIANT",
    "flag_model",
    "rules",
    "variant_configs",
    "variant_model",
]


def _live(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    """Events that no other event of ``events`` has seen."""
    seen: set[int] = set()
    for e in events:
        seen |= e.past
    return [e for e in events if e.id not in seen]


def flag_model(*, enable_wins: bool, default: bool) -> Callable[[Sequence[HistoryEvent]], bool]:
    """Reference model of an enable-wins or disable-wins flag."""

    def model(events: Sequence[HistoryEvent]) -> bool:
        live = [e.op.name == "enable" for e in _live(events)]
        if not live:
            return default
        return any(live) if enable_wins else all(live)

    return model


_toggle = st.sampled_from([Op("enable"), Op("disable")])

EWFLAG = register_spec(TypeSpec(EnableWinsFlag, ops=_toggle, model=flag_model(enable_wins=True, default=False)))
DWFLAG = register_spec(TypeSpec(DisableWinsFlag, ops=_toggle, model=flag_model(enable_wins=False, default=False)))

#: a kill switch: DisableWinsFlag created with ``default=True`` (not the registered default)
DWFLAG_ON: TypeSpec[DisableWinsFlag] = TypeSpec(
    DisableWinsFlag, ops=_toggle, model=flag_model(enable_wins=False, default=True),
    make=lambda: DisableWinsFlag(default=True), name="DisableWinsFlag(default=True)",
)


# -- variant flags ------------------------------------------------------------------

_NAMES = ("control", "treatment", "holdout")
_ATTRS = ("country", "plan", "age", "tags")
_STRS = ("DE", "FR", "pro", "beta", "b")


_scalar = st.sampled_from(_STRS) | st.integers(-3, 100) | st.booleans() | st.sampled_from([0.5, 18.0])
# (op, values) pairs, each valid for its op; built once (building strategies per draw is slow)
_op_values = st.one_of(
    st.tuples(st.sampled_from(["eq", "ne"]), st.tuples(_scalar)),
    st.tuples(st.sampled_from(["in", "not_in", "contains"]), st.lists(_scalar, min_size=1, max_size=3).map(tuple)),
    st.tuples(st.sampled_from(["lt", "le", "gt", "ge"]), st.tuples(st.integers(-3, 100) | st.sampled_from(_STRS))),
    st.tuples(st.just("starts_with"), st.lists(st.sampled_from(_STRS), min_size=1, max_size=2).map(tuple)),
    st.tuples(st.just("exists"), st.tuples(st.booleans())),
)
_rule_parts = st.tuples(st.sampled_from(_ATTRS), _op_values, st.integers(0, len(_NAMES) - 1))


def rules(names: Sequence[str] = _NAMES) -> st.SearchStrategy[Rule]:
    """Valid targeting rules serving one of ``names``."""
    names = tuple(names)
    return _rule_parts.map(lambda p: Rule(p[0], p[1][0], p[1][1], names[p[2] % len(names)]))


_name_lists = st.sampled_from([
    (a,) for a in _NAMES
] + [(a, b) for a in _NAMES for b in _NAMES if a != b] + [
    (a, b, c) for a in _NAMES for b in _NAMES for c in _NAMES if len({a, b, c}) == 3
])
_weight = st.sampled_from([0, 1, 500, 2_500, 3_333]) | st.integers(0, 3_333)
_raw_config = st.tuples(
    _name_lists,
    st.tuples(_weight, _weight, _weight),
    st.lists(_rule_parts, max_size=2),
    st.none() | st.integers(0, len(_NAMES) - 1),
    st.sampled_from(["checkout", "ranker", ""]),
)


def _config_args(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    names, weights, parts, default, salt = raw
    variants = tuple(zip(names, weights))
    rs = tuple(Rule(a, ov[0], ov[1], names[i % len(names)]) for a, ov, i in parts)
    return (variants, rs, None if default is None else names[default % len(names)], salt)


def variant_configs() -> st.SearchStrategy[tuple[Any, ...]]:
    """Positional ``configure`` arguments: ``(variants, rules, default, salt)``, always valid."""
    return _raw_config.map(_config_args)


def variant_model(events: Sequence[HistoryEvent]) -> dict[str, Any]:
    """Config: the configure with the greatest (ts, actor). Killed: disable-wins over kill/revive."""
    switches = [e for e in events if e.op.name in ("kill", "revive")]
    killed = any(e.op.name == "kill" for e in _live(switches))
    configs = [e for e in events if e.op.name == "configure"]
    if not configs:
        return {"configured": False, "killed": killed, "variants": [], "rules": [], "default": None, "salt": None}

    def winner(candidates: Sequence[HistoryEvent]) -> HistoryEvent | None:
        return max(candidates, key=lambda e: (e.ts, e.actor), default=None)

    # An omitted default keeps the default the writer saw, if still a variant.
    resolved: dict[int, str] = {}
    for e in configs:  # issue order: a writer's past is resolved before it
        variants, _, default, _ = e.op.args
        names = [name for name, _ in variants]
        if default is None:
            seen = winner([c for c in configs if c.id in e.past])
            default = resolved[seen.id] if seen is not None and resolved[seen.id] in names else names[0]
        resolved[e.id] = default
    last = winner(configs)
    assert last is not None
    variants, rs, _, salt = last.op.args
    default = resolved[last.id]
    return {
        "configured": True,
        "killed": killed,
        "variants": [[name, weight] for name, weight in variants],
        "rules": [
            {"attribute": r.attribute, "op": r.op, "values": list(r.values), "variant": r.variant} for r in rs
        ],
        "default": default,
        "salt": salt,
    }


def _random_op_values(rng: random.Random) -> tuple[str, tuple[Any, ...]]:
    def scalar() -> Any:
        return rng.choice([rng.choice(_STRS), rng.randint(-3, 100), rng.random() < 0.5, 0.5, 18.0])

    op = rng.choice(["eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "contains", "starts_with", "exists"])
    if op in ("eq", "ne"):
        return op, (scalar(),)
    if op in ("in", "not_in", "contains"):
        return op, tuple(scalar() for _ in range(rng.randint(1, 3)))
    if op in ("lt", "le", "gt", "ge"):
        return op, (rng.choice([rng.choice(_STRS), rng.randint(-3, 100)]),)
    if op == "starts_with":
        return op, tuple(rng.choice(_STRS) for _ in range(rng.randint(1, 2)))
    return op, (rng.random() < 0.5,)


def _config_pool(n: int = 200) -> list[Op]:
    """``n`` valid configure ops from a seeded RNG, the same on every run.

    Drawing a whole config costs dozens of hypothesis choices, which dominated the law
    runs; most configure ops pick one of these with a single choice, and a third of
    them are drawn afresh from :func:`variant_configs` (which shrinks well).
    """
    rng = random.Random(20_250_601)
    names = list(_NAMES)
    pool: list[Op] = []
    for _ in range(n):
        k = rng.randint(1, len(names))
        chosen = rng.sample(names, k)
        weights = [rng.choice([0, 1, 500, 2_500, 3_333, rng.randint(0, 3_333)]) for _ in chosen]
        rs = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            op, values = _random_op_values(rng)
            rs.append(Rule(rng.choice(_ATTRS), op, values, rng.choice(chosen)))
        default = rng.choice([None, *chosen])
        salt = rng.choice(["checkout", "ranker", ""])
        pool.append(Op("configure", (tuple(zip(chosen, weights)), tuple(rs), default, salt)))
    return pool


_variant_ops = st.one_of(
    st.sampled_from([Op("kill"), Op("revive")]),
    st.sampled_from(_config_pool()),
    st.sampled_from([Op("kill"), Op("revive")]) | st.builds(Op, st.just("configure"), variant_configs()),
)

VARIANT = register_spec(TypeSpec(VariantFlag, ops=_variant_ops, model=variant_model))
