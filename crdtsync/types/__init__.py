"""Delta-state CRDT types, one module per family (see :mod:`crdtsync.types._base`)."""

from __future__ import annotations

from ._base import CRDT, decode_any, register, registered_types, type_for_tag
from .counters import GCounter, PNCounter

__all__ = [
    "CRDT",
    "GCounter",
    "PNCounter",
    "decode_any",
    "register",
    "registered_types",
    "type_for_tag",
]
