"""crdtsync: coherent ML features, flags and model versions across cloud, on-prem and edge.

The core needs only msgpack, pycrdt and crc32c. Heavy integrations are extras:
``crdtsync[kafka]``, ``[avro]``, ``[onnx]``, ``[vectors]``, ``[otel]``, ``[fast]``,
``[testing]``, ``[cli]``, ``[all]``.
"""

from __future__ import annotations

from . import errors
from .clock import HLC, Context, Dot, Ordering
from .events import Batch, Event
from .forwarder import Forwarder
from .log import LocalLog, Log, LogEntry, MemoryLog
from .replica import Change, Replica, ReplicaIdentity, View
from .schema import Definition, Feature, Flag, Schema
from .types import (
    BUILTIN_TYPES,
    CRDT,
    BoundedCounter,
    DisableWinsFlag,
    Document,
    EnableWinsFlag,
    Evaluation,
    GCounter,
    HyperLogLog,
    LWWRegister,
    MaxRegister,
    Mean,
    MinRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Rule,
    Text,
    VariantFlag,
    VectorRegister,
    WindowedCounter,
    WindowedSum,
    decode_any,
    registered_types,
)

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_TYPES",
    "CRDT",
    "Batch",
    "BoundedCounter",
    "Change",
    "Context",
    "Definition",
    "DisableWinsFlag",
    "Document",
    "Dot",
    "EnableWinsFlag",
    "Evaluation",
    "Event",
    "Feature",
    "Flag",
    "Forwarder",
    "GCounter",
    "HLC",
    "HyperLogLog",
    "LWWRegister",
    "LocalLog",
    "Log",
    "LogEntry",
    "MVRegister",
    "MaxRegister",
    "Mean",
    "MemoryLog",
    "MinRegister",
    "ORMap",
    "ORSet",
    "Ordering",
    "PNCounter",
    "Replica",
    "ReplicaIdentity",
    "Rule",
    "Schema",
    "Text",
    "VariantFlag",
    "VectorRegister",
    "View",
    "WindowedCounter",
    "WindowedSum",
    "decode_any",
    "errors",
    "registered_types",
]
