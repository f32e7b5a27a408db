"""Digests of what a prediction read and what it answered.

Both are 16-byte BLAKE2b digests of canonical encodings, so equal values always give
equal digests whatever process computes them: feature and flag values as the replica
returned them (msgpack, floats packed as 64-bit), and outputs with numpy arrays and
scalars hashed as dtype, shape and raw bytes (bit-exact, so a re-run that differs in the
last bit of a probability is a mismatch).

The bulk forms (:func:`input_digests`, :func:`output_digests`: a lineage flush digests
its rows all at once) run the hashing in C when ``crdtsync._clineage`` is built (see
:mod:`crdtsync.speedups`): rows packed by ``_chandles.flat_packb`` (the bytes
``pack_small`` gives) and hashed in one loop, numpy outputs hashed from their memory with
the heads looked up once. The Python code here is the definition and the fallback; the C
path hands every row it was not written for back to it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from crdtsync import speedups
from crdtsync._encoding import canonical, pack_small

__all__ = ["input_digest", "input_digests", "output_digest", "output_digests", "plain_outputs"]

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

_blake16 = functools.partial(hashlib.blake2b, digest_size=DIGEST_BYTES)
_digest = hashlib.blake2b.digest


def _numpy_head(k: str, v: Any) -> bytes | None:
    """The packed head of output ``k`` if ``v`` is a numpy value (cached), else None."""
    dtype = getattr(v, "dtype", None)
    if dtype is None or not hasattr(v, "tobytes"):
        return None
    if len(_HEADS) >= _HEADS_KEPT:
        _HEADS.clear()
    head = _HEADS[(k, dtype, v.shape)] = pack_small(str(k)) + pack_small([dtype.str, list(v.shape)])
    return head


def output_digest(outputs: Mapping[str, Any]) -> bytes:
    """The digest of one row's model outputs: for each output name in sorted order, the
    packed name, then for a numpy value its packed ``[dtype, shape]`` and raw bytes (whose
    length those fix), for any other value its canonical packing tagged ``0``."""
    parts = []
    heads = _HEADS
    for k in sorted(outputs):
        v = outputs[k]
        try:
            head: bytes | None = heads[(k, v.dtype, v.shape)]
        except (KeyError, AttributeError, TypeError):  # a new head, or not a numpy value
            head = _numpy_head(k, v)
        if head is not None:
            parts.append(head)
            parts.append(v.tobytes())
        else:
            parts.append(pack_small(str(k)))
            parts.append(pack_small([0, canonical(_plain(v))]))
    return _digest(_blake16(b"".join(parts)))


def input_digests(rows: Sequence[Sequence[Any]]) -> list[bytes]:
    """``[input_digest(r) for r in rows]``, with one packer and the hashing in C loops
    (the lineage log's flush digests many rows at once)."""
    c, h = speedups.clineage, speedups.chandles
    if c is not None and h is not None:  # flat rows packed and hashed in C; the rest by input_digest
        rows = rows if type(rows) is list else list(rows)
        return c.digests(list(map(h.flat_packb, rows)), rows, input_digest)  # type: ignore[no-any-return]
    pack = msgpack.Packer(use_bin_type=True, use_single_float=False).pack  # pack_small's settings
    try:
        blobs = [pack(r) for r in rows]
    except (TypeError, ValueError):  # a row input_digest packs in canonical form
        return [input_digest(r) for r in rows]
    return list(map(_digest, map(_blake16, blobs)))


def _plan(first: Mapping[str, Any]) -> list[tuple[str, bytes, Any, Any, Any]] | None:
    """Per output name of ``first`` in sorted order: (name, packed head, type, dtype,
    shape), when every value is a numpy one; else None."""
    plan = []
    for k in sorted(first):
        v = first[k]
        head = _numpy_head(k, v)
        if head is None:
            return None
        plan.append((k, head, type(v), v.dtype, v.shape))
    return plan


def output_plan(first: Mapping[str, Any]) -> tuple[tuple[Any, ...], ...] | None:
    """What ``_clineage`` digests outputs shaped like ``first`` by: (names, heads, types,
    dtypes, shapes), when they are all numpy values (the C code hashes their memory); else
    None."""
    plan = _plan(first)
    if plan is None or not all(p[2].__module__ == "numpy" for p in plan):
        return None
    return tuple(tuple(col) for col in zip(*plan))


#: what joining a numpy value's memory raises when it is not one flat C-ordered block
#: (a strided view, an object array): then its tobytes() is joined instead
_NOT_FLAT = (BufferError, TypeError, ValueError)


def output_digests(outputs: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """``[output_digest(o) for o in outputs]``; when the first mapping holds numpy values,
    every mapping with the same names, types, dtypes and shapes (a model's outputs, row
    after row) is digested with the heads looked up once."""
    if not outputs:
        return []
    first = outputs[0]
    plan = _plan(first)
    if plan is None:
        return list(map(output_digest, outputs))
    c = speedups.clineage
    c_plan = output_plan(first) if c is not None else None
    if c is not None and c_plan is not None:
        # numpy values hashed from their memory in C (the same bytes as tobytes() for a
        # C-contiguous value; any other value, or a mapping off the plan: output_digest)
        return c.output_digests(outputs if type(outputs) is list else list(outputs), *c_plan,  # type: ignore[no-any-return]
                                output_digest)
    n = len(plan)
    out = []
    if n == 2:  # (the common shape: a label and probabilities)
        (k0, h0, t0, d0, s0), (k1, h1, t1, d1, s1) = plan
        for o in outputs:
            a, b = o.get(k0), o.get(k1)
            if (len(o) == 2 and type(a) is t0 and type(b) is t1 and a.dtype is d0 and b.dtype is d1  # type: ignore[union-attr]
                    and a.shape == s0 and b.shape == s1):  # type: ignore[union-attr]
                try:  # the values' memory as is (tobytes' bytes, for a C-contiguous value)
                    blob = b"".join((h0, a, h1, b))  # type: ignore[arg-type]
                except _NOT_FLAT:
                    blob = b"".join((h0, a.tobytes(), h1, b.tobytes()))  # type: ignore[union-attr]
                out.append(_digest(_blake16(blob)))
            else:
                out.append(output_digest(o))
        return out
    for o in outputs:
        parts = []
        if len(o) == n:
            for k, head, t, d, shape in plan:
                v = o.get(k)
                if type(v) is not t or v.dtype is not d or v.shape != shape:  # type: ignore[union-attr]
                    break
                parts.append(head)
                parts.append(v.tobytes())  # type: ignore[union-attr]
            else:
                out.append(_digest(_blake16(b"".join(parts))))
                continue
        out.append(output_digest(o))
    return out
