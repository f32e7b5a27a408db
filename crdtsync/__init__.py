"""crdtsync: coherent ML features, flags and model versions across cloud, on-prem and edge.

The core needs only msgpack and pycrdt. Heavy integrations are extras:
``crdtsync[kafka]``, ``[avro]``, ``[onnx]``, ``[otel]``, ``[fast]``, ``[testing]``, ``[all]``.
"""

from __future__ import annotations

from . import errors
from .clock import HLC, Context, Dot, Ordering
from .types import CRDT, GCounter, PNCounter, decode_any, registered_types

__version__ = "0.1.0"

__all__ = [
    "CRDT",
    "HLC",
    "Context",
    "Dot",
    "GCounter",
    "Ordering",
    "PNCounter",
    "decode_any",
    "errors",
    "registered_types",
]
