"""Digests of what a prediction read and what it answered.

Both are 16-byte BLAKE2b digests of a canonical msgpack encoding, so equal values always
give equal digests whatever process computes them: feature and flag values as the
replica returned them (floats packed as 64-bit), and outputs with numpy arrays and
scalars packed as ``[dtype, shape, raw bytes]`` (bit-exact, so a re-run that differs in
the last bit of a probability is a mismatch).
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
    try:
        blob = pack_small(list(values))
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


def output_digest(outputs: Mapping[str, Any]) -> bytes:
    """The digest of one row's model outputs (the digest of :func:`plain_outputs`' packing;
    numpy outputs, the common case, are hashed without building it)."""
    names = sorted(outputs)
    parts: list[Any] = []
    for k in names:
        v = outputs[k]
        dtype = getattr(v, "dtype", None)
        if dtype is None or not hasattr(v, "tobytes") or type(k) is not str:
            return hashlib.blake2b(pack_small(plain_outputs(outputs)), digest_size=DIGEST_BYTES).digest()
        parts.append(k)
        parts.append([dtype.str, list(v.shape), v.tobytes()])
    # the same bytes as packing {name: [dtype, shape, bytes], ...} with sorted keys
    blob = pack_small(dict(zip(parts[::2], parts[1::2])))
    return hashlib.blake2b(blob, digest_size=DIGEST_BYTES).digest()
