"""Validation helpers shared by the control channel's wire formats.

``frozen_map`` checks and freezes a mapping given to a constructor (a ``TypeError`` or
``ValueError`` for a programming error); ``pairs`` parses a ``[[key, value], ...]`` list
read from the wire (a :class:`~crdtsync.errors.CorruptRecord` for bad input: the wire is
untrusted).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .._encoding import corrupt

__all__ = ["frozen_map", "pairs"]

TAG = "heartbeat"


def frozen_map(m: Mapping[str, Any], what: str, value_type: type) -> Mapping[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(m):
        v = m[k]
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be str, got {k!r:.40}")
        if value_type is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"{what}[{k!r}] must be a non-negative int, got {v!r:.40}")
        if value_type is str and not isinstance(v, str):
            raise TypeError(f"{what}[{k!r}] must be a str, got {v!r:.40}")
        out[k] = v
    return MappingProxyType(out)


def pairs(raw: Any, what: str, value_type: type, what_tag: str = TAG) -> dict[str, Any]:
    if not isinstance(raw, list):
        corrupt(what_tag, f"{what} is not a list of pairs")
    out: dict[str, Any] = {}
    last: str | None = None
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            corrupt(what_tag, f"{what}: bad pair {pair!r:.60}")
        k, v = pair
        if last is not None and k <= last:
            corrupt(what_tag, f"{what}: keys not sorted and unique")
        last = k
        if value_type is int and (type(v) is not int or v < 0):
            corrupt(what_tag, f"{what}[{k!r:.40}] is not a non-negative int")
        if value_type is str and not isinstance(v, str):
            corrupt(what_tag, f"{what}[{k!r:.40}] is not a str")
        out[k] = v
    return out
