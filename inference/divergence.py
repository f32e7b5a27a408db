"""Decision divergence: the same decision on two replicas' views, compared.

:func:`mirror` runs a predictor's model for one entity on its own replica and on another
replica (a shadow: the other run is recorded in lineage only if the shadow predictor has
a lineage log) and reports whether the two decisions agree (equal output digests), which
inputs differed, and how the two contexts relate (one saw everything the other did, or
they are concurrent: each saw events the other had not). :class:`DivergenceStats` counts
agreements for a running comparison (the "decision divergence" metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crdtsync.clock import Ordering

from .predictor import Prediction, Predictor

if TYPE_CHECKING:
    from crdtsync.replica import Replica

__all__ = ["Divergence", "DivergenceStats", "mirror"]


@dataclass
class Divergence:
    """Two runs of one decision on two replicas."""

    key: str
    primary: Prediction
    shadow: Prediction
    #: field -> (primary's value, shadow's value), for the inputs that differ
    differing: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def agree(self) -> bool:
        return self.primary.record.output_digest == self.shadow.record.output_digest

    @property
    def ordering(self) -> Ordering:
        """How the primary's context relates to the shadow's."""
        return self.primary.record.context.compare(self.shadow.record.context)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "agree": self.agree, "ordering": self.ordering.value,
                "primary": self.primary.prediction_id, "shadow": self.shadow.prediction_id,
                "differing": {f: list(v) for f, v in self.differing.items()}}


@dataclass
class DivergenceStats:
    compared: int = 0
    disagreed: int = 0

    @property
    def divergence_rate(self) -> float:
        return self.disagreed / self.compared if self.compared else 0.0


async def mirror(predictor: Predictor, other: Replica | Predictor, key: str, *,
                 stats: DivergenceStats | None = None) -> Divergence:
    """Run ``predictor`` for ``key`` and the same model on ``other`` (a replica, or a
    predictor on it); see the module doc."""
    shadow = other if isinstance(other, Predictor) else Predictor(other, predictor.model, flags=predictor.flags)
    if shadow.model.identity != predictor.model.identity:
        raise ValueError("a mirrored decision must run the same model on both replicas")
    a = await predictor.predict(key)
    b = await shadow.predict(key)
    diff = {f: (a.values[f], b.values[f]) for f in predictor.fields if a.values[f] != b.values[f]}
    d = Divergence(key, a, b, diff)
    if stats is not None:
        stats.compared += 1
        stats.disagreed += not d.agree
    return d
