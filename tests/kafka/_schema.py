"""A schema with one field of every built-in type (from the shipped type specs), and
operations drawn from each type's own strategy, shared by the Kafka replication tests
and their worker processes."""

from __future__ import annotations

import random
import warnings
from typing import Any

from crdtsync.schema import Feature
from crdtsync.testing import all_specs
from crdtsync.testing._spec import Op

SPECS = sorted(all_specs().values(), key=lambda s: s.label)
SCHEMA = [Feature(f"f_{s.label.lower().replace('[', '_').replace(']', '')}", s.empty) for s in SPECS]
FIELDS = [d.name for d in SCHEMA]
REJECTS = {f: s.rejects for f, s in zip(FIELDS, SPECS)}


def draw_ops(n_per_field: int, seed: int) -> list[tuple[str, str, Op]]:
    """``n_per_field`` operations of every field on keys a/b/c, in a shuffled order."""
    from hypothesis.errors import NonInteractiveExampleWarning

    rng = random.Random(seed)
    out: list[tuple[str, str, Op]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        for fname, spec in zip(FIELDS, SPECS):
            for _ in range(n_per_field):
                out.append((fname, rng.choice("abc"), spec.ops.example()))
    rng.shuffle(out)
    return out


def apply_ops(replica: Any, ops: list[tuple[str, str, Op]]) -> int:
    """Write ``ops`` on ``replica``; returns how many the types accepted."""
    written = 0
    for fname, key, op in ops:
        try:
            replica.write(fname, key, op.name, *op.args)
            written += 1
        except REJECTS[fname]:
            pass  # a legitimate refusal (a bounded decrement beyond its rights)
    return written
