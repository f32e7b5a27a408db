"""VectorRegister: a last-writer-wins numpy array, e.g. an entity's embedding.

A state holds the winning write as immutable bytes (the array's raw little-endian
C-order bytes, its shape, and the register's dtype name) plus its HLC timestamp and
writer. Equality, ordering and encoding go through those bytes, never through float
comparison, so NaN (legitimate in embeddings) and -0.0 cannot break the join laws.

numpy is needed only to write (:meth:`VectorRegister.set`) and read
(:meth:`VectorRegister.value`); it is imported on first use, so ``import crdtsync`` and
decoding, joining and re-encoding states work without it. Install it with
``pip install 'crdtsync[vectors]'``.

Wire format ``vector`` v1 (inside the ``[tag, version, payload]`` envelope)::

    [dtype: str, dim: [int, ...] | nil, write]
    write = [] never set | [ts: uint, actor: str, shape: [int, ...], data: bin]

``dtype`` is one of int8/16/32/64, uint8/16/32/64, float16/32/64, complex64/128;
``data`` holds exactly ``prod(shape) * itemsize`` bytes; ``shape`` equals ``dim`` when
``dim`` is set. Decoders reject anything else with :class:`~crdtsync.errors.CorruptRecord`.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .._encoding import corrupt, packb
from ._base import CRDT, register, want_int, want_list, want_str
from .registers import StampReads, check_ts, intern_actor, lww_pick, want_actor, want_ts

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["VectorRegister"]

#: portable numeric dtypes and their item sizes (no platform-dependent long double)
_DTYPES: Mapping[str, int] = {
    "int8": 1, "int16": 2, "int32": 4, "int64": 8,
    "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8,
    "float16": 2, "float32": 4, "float64": 8,
    "complex64": 8, "complex128": 16,
}
_MAX_NDIM = 32
_MAX_DIM = 2**31 - 1
_MAX_ELEMENTS = 2**40


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError(
            "VectorRegister.set() and .value() need numpy: pip install 'crdtsync[vectors]'"
        ) from None
    return numpy


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, str) and dtype in _DTYPES:
        return sys.intern(dtype)
    try:
        name = _numpy().dtype(dtype).name
    except TypeError:
        raise TypeError(f"dtype {dtype!r} is not a numpy dtype; use e.g. 'float32'") from None
    if name not in _DTYPES:
        raise ValueError(
            f"dtype {name!r} is not supported; use one of {', '.join(_DTYPES)}"
        )
    return sys.intern(name)


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    """Validate a shape; raises TypeError/ValueError (CorruptRecord inside decoders)."""
    dims = list(shape)
    if len(dims) > _MAX_NDIM:
        raise ValueError(f"{what} has {len(dims)} dimensions; at most {_MAX_NDIM} are supported")
    out = []
    for d in dims:
        if isinstance(d, bool):
            raise TypeError(f"{what} must hold ints, got a bool")
        n = operator.index(d)
        if not 0 <= n <= _MAX_DIM:
            raise ValueError(f"{what}: dimension {n} out of range 0..{_MAX_DIM}")
        out.append(n)
    if math.prod(max(n, 1) for n in out) > _MAX_ELEMENTS:
        raise ValueError(f"{what} {tuple(out)} is too large")
    return tuple(out)


def _norm_dim(dim: Any) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, int) and not isinstance(dim, bool):
        dim = (dim,)
    if isinstance(dim, (str, bytes)) or not hasattr(dim, "__iter__"):
        raise TypeError(f"dim must be an int, a tuple of ints or None, got {type(dim).__name__}")
    return _check_shape(dim, "dim")


def _tie_key(v: VectorRegister) -> bytes:
    return packb([list(v._shape), v._data])  # type: ignore[no-any-return]


@register
class VectorRegister(StampReads, CRDT["npt.NDArray[Any] | None"]):
    """The array written with the highest HLC timestamp wins; equal timestamps go to the higher actor id.

    Same rule as :class:`~crdtsync.types.registers.LWWRegister` (an identical
    ``(ts, actor)`` pair falls back to the larger encoded ``[shape, data]``). Starts at
    ``None``. Cost: one array's bytes plus a timestamp and a shared actor id; an
    overwritten array is dropped at once, nothing grows. ``dim`` (fixed shape, optional)
    and ``dtype`` (default float32) are fixed at construction; states with other values
    cannot be joined. Payload: ``[dtype, dim | nil, [] | [ts, actor, shape, data]]``.
    """

    __slots__ = ("_actor", "_data", "_dim", "_dtype", "_shape", "_ts")
    TYPE_TAG: ClassVar[str] = "vector"
    VERSION: ClassVar[int] = 1
    MUTATORS: ClassVar[tuple[str, ...]] = ("set",)
    NEEDS_TIME: ClassVar[bool] = True

    _dtype: str
    _dim: tuple[int, ...] | None
    _ts: int
    _actor: str
    _shape: tuple[int, ...]
    _data: bytes

    def __init__(self, *, dim: int | tuple[int, ...] | None = None, dtype: Any = "float32") -> None:
        self._dtype = _dtype_name(dtype)
        self._dim = _norm_dim(dim)
        self._ts = -1  # never set: below every real timestamp
        self._actor = ""
        self._shape = ()
        self._data = b""

    def _with(self, ts: int, actor: str, shape: tuple[int, ...], data: bytes) -> VectorRegister:
        r = VectorRegister.__new__(VectorRegister)
        r._dtype = self._dtype
        r._dim = self._dim
        r._ts = ts
        r._actor = actor
        r._shape = shape
        r._data = data
        return r

    # -- reads -------------------------------------------------------------------------
    def params(self) -> Mapping[str, Any]:
        return {"dim": self._dim, "dtype": self._dtype}

    @property
    def dim(self) -> tuple[int, ...] | None:
        """The fixed shape of every array in this register (``None``: any shape)."""
        return self._dim

    @property
    def dtype(self) -> str:
        """The element type name, e.g. ``"float32"``."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of the winning array (``None`` if never set)."""
        return self._shape if self._ts >= 0 else None

    def value(self) -> npt.NDArray[Any] | None:
        """The winning array, read-only (it shares the state's bytes), or ``None``."""
        if self._ts < 0:
            return None
        np = _numpy()
        arr = np.frombuffer(self._data, dtype=np.dtype(self._dtype).newbyteorder("<"))
        return arr.reshape(self._shape)  # type: ignore[no-any-return]

    def to_bytes(self) -> bytes | None:
        """The winning array's raw little-endian C-order bytes (``None`` if never set)."""
        return self._data if self._ts >= 0 else None

    # -- mutators ----------------------------------------------------------------------
    def set(self, value: Any, *, actor: str, ts: int | None = None) -> VectorRegister:
        """Delta writing the array ``value`` at HLC time ``ts`` (default: the process clock's now).

        ``value`` is anything ``numpy.asarray`` accepts; it is cast to the register's
        dtype when that loses no range (float64 -> float32 is fine unless a value
        overflows to inf; float -> int is refused) and copied.
        """
        a = intern_actor(actor)
        t = check_ts(ts)
        shape, data = self._encode_array(value)
        return self._with(t, a, shape, data)

    def _encode_array(self, value: Any) -> tuple[tuple[int, ...], bytes]:
        np = _numpy()
        try:
            src = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"VectorRegister.set needs an array of numbers: {exc}") from None
        if src.dtype.kind not in "iufc":
            raise TypeError(
                f"VectorRegister.set needs an array of numbers, got dtype {src.dtype}"
            )
        dt = np.dtype(self._dtype)
        if self._dim is not None and src.shape != self._dim:
            raise ValueError(
                f"this VectorRegister holds arrays of shape {self._dim}, got shape {src.shape}"
            )
        shape = _check_shape(src.shape, "array shape")
        if src.dtype != dt:
            # any int fits an int register if its values do (checked below); otherwise
            # refuse a cast to a lower kind (float -> int, complex -> float)
            if src.dtype.kind not in "iu" and not np.can_cast(src.dtype, dt, casting="same_kind"):
                raise TypeError(
                    f"cannot store a {src.dtype} array in a {self._dtype} VectorRegister "
                    "without losing its kind of value; convert it explicitly"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                cast = src.astype(dt)
            if dt.kind in "iu":
                if not np.array_equal(cast, src):
                    raise ValueError(f"values do not fit in {self._dtype}")
            elif not np.array_equal(np.isfinite(cast), np.isfinite(src)):
                raise ValueError(f"values overflow {self._dtype}; scale them or use a wider dtype")
            src = cast
        data = np.ascontiguousarray(src, dtype=dt.newbyteorder("<")).tobytes()
        return shape, data

    # -- lattice -----------------------------------------------------------------------
    def join(self, other: VectorRegister) -> VectorRegister:
        if other.__class__ is not self.__class__ or other._dtype != self._dtype or other._dim != self._dim:
            self._check_joinable(other)
        return lww_pick(self, other, _tie_key)

    # -- encoding ----------------------------------------------------------------------
    def _payload(self) -> Any:
        dim = None if self._dim is None else list(self._dim)
        if self._ts < 0:
            return [self._dtype, dim, []]
        return [self._dtype, dim, [self._ts, self._actor, list(self._shape), self._data]]

    @classmethod
    def _from_payload(cls, payload: Any, version: int) -> VectorRegister:
        top = want_list(payload, "vector")
        if len(top) != 3:
            corrupt("vector", "expected [dtype, dim, write]")
        dtype = want_str(top[0], "vector.dtype")
        if dtype not in _DTYPES:
            corrupt("vector.dtype", f"unsupported dtype {dtype!r:.40}")
        dim = None if top[1] is None else _check_shape(want_list(top[1], "vector.dim"), "vector.dim")
        empty = cls(dim=dim, dtype=dtype)
        write = want_list(top[2], "vector.write")
        if not write:
            return empty
        if len(write) != 4:
            corrupt("vector.write", "expected [] or [ts, actor, shape, data]")
        ts = want_ts(write[0], "vector.ts")
        actor = want_actor(write[1], "vector.actor")
        for d in want_list(write[2], "vector.shape"):
            want_int(d, "vector.shape", minimum=0)
        shape = _check_shape(write[2], "vector.shape")
        if dim is not None and shape != dim:
            corrupt("vector.shape", f"shape {shape} differs from the register's dim {dim}")
        data = write[3]
        if not isinstance(data, bytes):
            corrupt("vector.data", f"expected bin, got {type(data).__name__}")
        if len(data) != math.prod(shape) * _DTYPES[dtype]:
            corrupt("vector.data", f"{len(data)} bytes do not hold a {dtype} array of shape {shape}")
        return empty._with(ts, actor, shape, data)

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, VectorRegister):
            return NotImplemented
        return (
            self._ts == other._ts
            and self._actor == other._actor
            and self._dtype == other._dtype
            and self._dim == other._dim
            and self._shape == other._shape
            and self._data == other._data
        )

    __hash__ = CRDT.__hash__

    def __repr__(self) -> str:
        params = f"dtype={self._dtype!r}" + ("" if self._dim is None else f", dim={self._dim}")
        if self._ts < 0:
            return f"VectorRegister(None, {params})"
        return (
            f"VectorRegister(shape={self._shape}, {params}, ts={self._ts}, writer={self._actor!r})"
        )
