"""Deterministic msgpack helpers shared by every wire and disk format.

Determinism matters because encoded states are hashed (digests for anti-entropy and
lineage) and compared byte for byte against golden vectors. Two rules make msgpack
deterministic here: maps are packed with their keys in a canonical order, and floats
are always packed as 64-bit. Decoding never trusts its input: any failure becomes a
:class:`~crdtsync.errors.CorruptRecord`, and container sizes are bounded by the size of
the buffer (msgpack's default), so hostile length prefixes cannot allocate memory.
"""

from __future__ import annotations

import math
import threading
from typing import Any, NoReturn

import msgpack

from .errors import CorruptRecord, UnsupportedVersion

__all__ = ["packb", "pack_small", "unpackb", "canonical", "value_key", "check_envelope", "corrupt"]

#: JSON-like values a register or document may hold.
Value = Any

_MAX_DEPTH = 64


def _sort_key(item: tuple[Any, Any]) -> tuple[str, Any]:
    k = item[0]
    # Keys of different Python types cannot be compared; order by type name first.
    return (type(k).__name__, k if isinstance(k, (str, bytes, int, float, bool)) else repr(k))


def canonical(value: Value, _depth: int = 0) -> Value:
    """Return ``value`` with every dict re-built in canonical key order and tuples as lists.

    The result packs to the same bytes whatever insertion order the caller used.
    Raises ``TypeError`` for values msgpack cannot carry.
    """
    if _depth > _MAX_DEPTH:
        raise TypeError(f"value nests deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not (-(2**63) <= value < 2**64):
            raise TypeError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return [canonical(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v, _depth + 1) for k, v in sorted(value.items(), key=_sort_key)}
    raise TypeError(
        f"{type(value).__name__} cannot be stored in a CRDT value; use None, bool, int, float, "
        "str, bytes, list or dict"
    )


def packb(obj: Any) -> bytes:
    """Pack ``obj`` deterministically (callers pass canonical values and sorted pairs)."""
    return msgpack.packb(obj, use_bin_type=True, use_single_float=False)  # type: ignore[no-any-return]


_packers = threading.local()
#: a packer whose buffer grew past this is dropped rather than kept for the thread
_KEEP_PACKER_BYTES = 64 * 1024


def pack_small(obj: Any) -> bytes:
    """:func:`packb` for the hot path: the same bytes, from a packer kept per thread.

    ``msgpack.packb`` builds a packer (and its 1 MiB buffer) per call, which costs ten
    times the packing of a small value. A packer is not safe to share between threads,
    hence one per thread; one that packed something large is dropped with its buffer.
    """
    try:
        pack = _packers.pack
    except AttributeError:
        pack = _packers.pack = msgpack.Packer(use_bin_type=True, use_single_float=False).pack
    out: bytes = pack(obj)
    if len(out) > _KEEP_PACKER_BYTES:
        del _packers.pack
    return out


def unpackb(data: bytes | bytearray | memoryview, *, what: str = "record") -> Any:
    """Unpack msgpack bytes, mapping every failure to :class:`CorruptRecord`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptRecord(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError, OverflowError) as exc:
        raise CorruptRecord(f"{what}: not valid msgpack ({type(exc).__name__}: {exc})") from None
    except MemoryError:
        raise CorruptRecord(f"{what}: declares sizes larger than memory allows") from None


def value_key(value: Value) -> bytes:
    """A total order on values: their canonical encoding (used for deterministic tie-breaks)."""
    return packb(canonical(value))


def corrupt(what: str, detail: str) -> NoReturn:
    raise CorruptRecord(f"{what}: {detail}")


def check_envelope(obj: Any, tag: str, max_version: int) -> tuple[int, Any]:
    """Validate a ``[tag, version, payload]`` envelope and return ``(version, payload)``."""
    if not isinstance(obj, list) or len(obj) != 3:
        corrupt(tag, "expected a [tag, version, payload] envelope")
    got_tag, version, payload = obj
    if got_tag != tag:
        corrupt(tag, f"type tag is {got_tag!r}, expected {tag!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        corrupt(tag, f"bad format version {version!r}")
    if version > max_version:
        raise UnsupportedVersion(
            f"{tag}: format version {version} is newer than this build understands "
            f"(max {max_version}); upgrade crdtsync on this replica"
        )
    return version, payload


def is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and (isinstance(x, int) or math.isfinite(x))
