"""Testing kit for crdtsync and for applications built on it.

Needs the ``testing`` extra (``pip install crdtsync[testing]``, which brings hypothesis).

* :mod:`~crdtsync.testing.strategies`: operations and reachable states of every type;
  ``st.from_type(crdtsync.ORSet)`` works out of the box.
* :class:`CRDTLaws`: the shared law suite; subclass it with a :class:`TypeSpec` for
  your own type.
* :class:`TypeSpec`, :class:`Op`, :class:`HistoryEvent`: how a type and its reference
  model are described; :func:`spec_for` gives the built-in spec of any crdtsync type.
* :class:`~crdtsync.testing.cluster.Cluster` and :func:`assert_converged`: real replicas
  in a seeded simulated network with faults (peers, or hubs and edges);
  :class:`~crdtsync.testing.control_fleet.ControlFleet`: thousands of replicas' control
  code over a modelled data plane, for control-traffic byte budgets.
* History checkers (:mod:`crdtsync.testing.checkers`, unrelated to the law suite's
  ``Op``/``HistoryEvent``): record client operations in a :class:`History` and check
  linearizability (:func:`check_linearizable`), Jepsen's set-full
  (:func:`check_set_full`) and counter bounds (:func:`check_counter_bounds`).
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "crdtsync.testing needs hypothesis: pip install 'crdtsync[testing]'"
    ) from exc

from ._sim import DeltaNetwork
from ._spec import HistoryEvent, Op, TypeSpec, all_specs, register_spec, spec_for
from .checkers import (
    CounterBoundsResult,
    CounterModel,
    History,
    KeyedModel,
    LinearizabilityResult,
    Operation,
    RegisterModel,
    SearchLimitExceeded,
    SetFullResult,
    check_counter_bounds,
    check_linearizable,
    check_set_full,
)
from .cluster import Cluster, assert_converged
from .control_fleet import ControlFleet
from .faults import CuttableLog, LogCut, crash
from .laws import (
    CRDTLaws,
    check_convergence,
    check_decoder_robustness,
    check_delta_correctness,
    check_join_laws,
    check_order_independence,
    check_roundtrip,
    random_network,
)
from .metadata import MetadataSize, metadata_size
from .strategies import operations, states

__all__ = [
    "CuttableLog",
    "LogCut",
    "MetadataSize",
    "crash",
    "metadata_size",
    "CRDTLaws",
    "Cluster",
    "ControlFleet",
    "CounterBoundsResult",
    "CounterModel",
    "History",
    "KeyedModel",
    "LinearizabilityResult",
    "Operation",
    "RegisterModel",
    "SearchLimitExceeded",
    "SetFullResult",
    "assert_converged",
    "check_counter_bounds",
    "check_linearizable",
    "check_set_full",
    "DeltaNetwork",
    "HistoryEvent",
    "Op",
    "TypeSpec",
    "all_specs",
    "check_convergence",
    "check_decoder_robustness",
    "check_delta_correctness",
    "check_join_laws",
    "check_order_independence",
    "check_roundtrip",
    "operations",
    "random_network",
    "register_spec",
    "spec_for",
    "states",
]
