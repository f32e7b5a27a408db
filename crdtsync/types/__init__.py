"""Delta-state CRDT types, one module per family (see :mod:`crdtsync.types._base`)."""

from __future__ import annotations

from ._base import CRDT, decode_any, register, registered_types, type_for_tag
from .aggregates import HyperLogLog, Mean, WindowedCounter, WindowedSum
from .bounded import BoundedCounter
from .collections import ORMap, ORSet
from .counters import GCounter, PNCounter
from .documents import Document, Text
from .flags import DisableWinsFlag, EnableWinsFlag, Evaluation, Rule, VariantFlag
from .registers import LWWRegister, MaxRegister, MinRegister, MVRegister
from .vectors import VectorRegister

__all__ = [
    "CRDT",
    "BoundedCounter",
    "DisableWinsFlag",
    "Document",
    "EnableWinsFlag",
    "Evaluation",
    "GCounter",
    "HyperLogLog",
    "LWWRegister",
    "MVRegister",
    "MaxRegister",
    "Mean",
    "MinRegister",
    "ORMap",
    "ORSet",
    "PNCounter",
    "Rule",
    "Text",
    "VariantFlag",
    "VectorRegister",
    "WindowedCounter",
    "WindowedSum",
    "decode_any",
    "register",
    "registered_types",
    "type_for_tag",
]

#: the built-in types, in documentation order
BUILTIN_TYPES = (
    GCounter, PNCounter, LWWRegister, MVRegister, MaxRegister, MinRegister, ORSet, ORMap,
    EnableWinsFlag, DisableWinsFlag, VariantFlag, WindowedCounter, WindowedSum, Mean,
    HyperLogLog, VectorRegister, Document, Text, BoundedCounter,
)
