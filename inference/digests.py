"""Digests of what a prediction read and what it answered.

Both are 16-byte BLAKE2b digests of canonical encodings, so equal values always give
equal digests whatever process computes them: feature and flag values as the replica
returned them (msgpack, floats packed as 64-bit), and outputs with numpy arrays and
scalars hashed as dtype, shape and raw bytes (bit-exact, so a re-run that differs in the
last bit of a probability is a mismatch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from crdtsync._encoding import canonical, pack_small

__all__ = ["input_digest", "output_digest", "plain_outputs"]

DIGEST_BYTES = 16


def input_digest(values: Sequence[Any]) -> bytes:
    """The digest of feature/flag values in the order a predictor reads them."""
    row = values if type(values) is list else list(values)
    try:
        blob = pack_small(row)
    except (TypeError, ValueError):  # dicts in any key order, tuples: canonical form first
        blob = pack_small(canonical(list(values)))
    return hashlib.blake2b(blob, digest_size=DIGEST_BYTES).digest()


def _plain(v: Any) -> Any:
    dtype = getattr(v, "dtype", None)
    if dtype is not None and hasattr(v, "tobytes"):
        shape = list(getattr(v, "shape", ()))
        return [dtype.str, shape, v.tobytes()]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def plain_outputs(outputs: Mapping[str, Any]) -> Any:
    """``outputs`` as canonical msgpack-able values (numpy as ``[dtype, shape, bytes]``)."""
    return canonical({str(k): _plain(v) for k, v in outputs.items()})


#: packed (name, [dtype, shape]) heads of numpy outputs, by (name, dtype, shape): the same
#: few per model, so each digest hashes a cached head and the array's bytes
_HEADS: dict[tuple[Any, Any, Any], bytes] = {}
_HEADS_KEPT = 4096


def output_digest(outputs: Mapping[str, Any]) -> bytes:
    """The digest of one row's model outputs: for each output name in sorted order, the
    packed name, then for a numpy value its packed ``[dtype, shape]`` and raw bytes (whose
    length those fix), for any other value its canonical packing tagged ``0``."""
    parts = []
    for k in sorted(outputs):
        v = outputs[k]
        dtype = getattr(v, "dtype", None)
        if dtype is not None and hasattr(v, "tobytes"):
            where = (k, dtype, v.shape)
            head = _HEADS.get(where)
            if head is None:
                if len(_HEADS) >= _HEADS_KEPT:
                    _HEADS.clear()
                head = _HEADS[where] = pack_small(str(k)) + pack_small([dtype.str, list(v.shape)])
            parts.append(head)
            parts.append(v.tobytes())
        else:
            parts.append(pack_small(str(k)))
            parts.append(pack_small([0, canonical(_plain(v))]))
    return hashlib.blake2b(b"".join(parts), digest_size=DIGEST_BYTES).digest()
