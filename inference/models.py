"""Models a :class:`~crdtsync.inference.Predictor` runs: the protocol, ONNX, any callable.

A :class:`Model` takes rows of feature values (one row per entity, values in the order
of :attr:`Model.features`) and returns one output mapping per row. Its
:class:`ModelIdentity` says exactly which model it is (name, version, the sha256 of its
bytes and the settings that can change its numbers); lineage records carry the identity,
and :func:`~crdtsync.inference.explain` refuses to re-run a decision on a model whose
identity differs.

:class:`OnnxModel` wraps an onnxruntime ``InferenceSession`` (extra ``onnx``). A mapping
says which features feed which model input (``{input name: [feature, ...]}``); dtypes
and shapes are checked once, when the model is built, against the session's input
signature, and each call's values are checked as they are converted (a missing value or
a non-number raises :class:`~crdtsync.errors.ModelInputError`, nothing runs). Thread
settings default to one intra-op and one inter-op thread, which makes outputs bit-for-bit
reproducible on the same build (they are part of the identity).

:class:`CallableModel` wraps any Python function of a feature dict (a scikit-learn
model, a rule, a client of a remote model); its identity is what the caller declares.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from crdtsync.errors import ModelInputError

__all__ = ["ModelIdentity", "Model", "CallableModel", "OnnxModel", "Outputs"]

#: one row's outputs: output name -> value (numpy arrays for ONNX)
Outputs = Mapping[str, Any]


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a decision: enough to refuse re-running it on another one."""

    name: str
    version: str
    sha256: str
    #: settings that can change outputs (session options, threads, providers); sorted pairs
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        """A short stable reference (``name@version#sha256[:12]``) for humans and logs."""
        return f"{self.name}@{self.version}#{self.sha256[:12]}"

    def to_list(self) -> list[Any]:
        return [self.name, self.version, self.sha256, [list(p) for p in self.settings]]

    @classmethod
    def from_list(cls, obj: Any) -> ModelIdentity:
        name, version, sha, settings = obj
        return cls(str(name), str(version), str(sha), tuple((str(k), str(v)) for k, v in settings))


@runtime_checkable
class Model(Protocol):
    """What a predictor runs."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def run_batch(self, rows: Sequence[Sequence[Any]]) -> list[Outputs]:
        """Outputs for each row of feature values (ordered as :attr:`features`)."""
        ...


class CallableModel:
    """Any Python function as a model: ``fn(features: dict) -> outputs dict``.

    ``batch_fn(list of dicts) -> list of outputs`` is used by batches when given. The
    identity is declared: ``sha256`` defaults to a hash of the function's code object
    (its bytecode and constants), which changes when the code does.
    """

    def __init__(self, fn: Callable[[dict[str, Any]], Outputs], *, features: Sequence[str], name: str,
                 version: str = "1", sha256: str | None = None,
                 batch_fn: Callable[[list[dict[str, Any]]], list[Outputs]] | None = None) -> None:
        self._fn = fn
        self._batch_fn = batch_fn
        self._features = tuple(features)
        if not self._features:
            raise ModelInputError(f"model {name!r}: give at least one feature name")
        self._identity = ModelIdentity(name, str(version), sha256 or _code_hash(fn), (("kind", "callable"),))

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def features(self) -> tuple[str, ...]:
        return self._features

    def run_batch(self, rows: Sequence[Sequence[Any]]) -> list[Outputs]:
        dicts = [dict(zip(self._features, row)) for row in rows]
        if self._batch_fn is not None:
            out = self._batch_fn(dicts)
            if len(out) != len(dicts):
                raise ModelInputError(f"model {self._identity.ref}: batch_fn returned {len(out)} outputs for {len(dicts)} rows")
            return out
        return [self._fn(d) for d in dicts]


def _code_hash(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    h = hashlib.sha256()
    if code is not None:
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
        h.update(getattr(fn, "__qualname__", "").encode())
    else:  # a callable object: its class and repr
        h.update(f"{type(fn).__module__}.{type(fn).__qualname__}:{fn!r}".encode())
    return h.hexdigest()


# -- ONNX -----------------------------------------------------------------------------

#: struct codes of the input dtypes run_one fills with struct (the float ones: for them
#: struct's conversion is numpy's; the others are filled by numpy)
_STRUCT_CODES = {"float32": "f", "float64": "d"}
_ONE_ROW = (1,)

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(float16)": "float16",
}


@dataclass(frozen=True)
class _InputPlan:
    """How one ONNX input is built from feature columns."""

    name: str
    columns: tuple[int, ...]  # indices into the model's feature tuple
    dtype: str
    rank: int  # 2: [batch, n]; 1: [batch] (one column)


class OnnxModel:
    """An ONNX model run by onnxruntime.

    Args:
        model: the model's bytes, or a path to a ``.onnx`` file.
        name, version: the identity's declared part.
        features: feature names in column order, when the model has one input
            (``[batch, len(features)]``).
        inputs: ``{input name: [feature, ...]}`` for models with several inputs (each of
            shape ``[batch, n]``, or ``[batch]`` for one feature); instead of ``features``.
        outputs: the output names to keep (all by default).
        intra_op_threads, inter_op_threads: onnxruntime thread pools (1 and 1 by default:
            reproducible outputs); part of the identity.
        session_options: further ``SessionOptions`` attributes (``{"graph_optimization_level": ...}``);
            part of the identity.
        providers: execution providers (CPU by default); part of the identity.
    """

    def __init__(self, model: bytes | str | os.PathLike[str], *, name: str, version: str = "1",
                 features: Sequence[str] = (), inputs: Mapping[str, Sequence[str]] | None = None,
                 outputs: Sequence[str] | None = None, intra_op_threads: int = 1, inter_op_threads: int = 1,
                 session_options: Mapping[str, Any] | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.name = name
        self.version = str(version)
        self._given_features = tuple(features)
        self._given_inputs = dict(inputs) if inputs is not None else None
        self._given_outputs = list(outputs) if outputs is not None else None
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.session_options = dict(session_options or {})
        self.providers = tuple(providers)
        self._build(model)

    def _build(self, model: bytes | str | os.PathLike[str]) -> None:
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - the onnx extra brings both
            raise ImportError("OnnxModel needs the onnx extra: pip install 'crdtsync[onnx]'") from exc
        self._np = np
        self._nd = np.ndarray
        blob = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.model_bytes = blob
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = self.inter_op_threads
        for k, v in self.session_options.items():
            if not hasattr(opts, k):
                raise ModelInputError(f"model {self.name!r}: onnxruntime SessionOptions has no option {k!r}")
            setattr(opts, k, v)
        self.session = ort.InferenceSession(blob, sess_options=opts, providers=list(self.providers))
        settings = {
            "intra_op_threads": str(self.intra_op_threads),
            "inter_op_threads": str(self.inter_op_threads),
            "providers": ",".join(self.providers),
            "onnxruntime": ort.__version__,
            **{f"opt.{k}": str(v) for k, v in self.session_options.items()},
        }
        self._identity = ModelIdentity(self.name, str(self.version), hashlib.sha256(blob).hexdigest(),
                                       tuple(sorted(settings.items())))
        self._plans, self._features = self._plan()
        self._one = threading.local()  # run_one's input arrays, one set per thread
        # run_one's session call: the binding under InferenceSession.run, whose checks
        # (input names, OrtValue ownership, WebGPU graph capture, falling back to
        # another execution provider) hold by construction for run_one's own CPU arrays;
        # the public run when that binding is not there or other providers are in play
        binding = getattr(self.session, "_sess", None)
        cpu_only = tuple(self.providers) == ("CPUExecutionProvider",)
        self._run = binding.run if cpu_only and callable(getattr(binding, "run", None)) else self.session.run
        known = [o.name for o in self.session.get_outputs()]
        wanted = self._given_outputs if self._given_outputs is not None else known
        unknown = [o for o in wanted if o not in known]
        if unknown:
            raise ModelInputError(f"model {self.name!r} has no outputs {unknown} (it has {known})")
        self._out_names = wanted

    def _plan(self) -> tuple[list[_InputPlan], tuple[str, ...]]:
        sig = {i.name: i for i in self.session.get_inputs()}
        mapping = dict(self._given_inputs) if self._given_inputs is not None else None
        if mapping is None:
            if len(sig) != 1:
                raise ModelInputError(f"model {self.name!r} has inputs {sorted(sig)}; map features to each with inputs=")
            if not self._given_features:
                raise ModelInputError(f"model {self.name!r}: give features= (its input's columns, in order)")
            mapping = {next(iter(sig)): list(self._given_features)}
        elif self._given_features:
            raise ModelInputError(f"model {self.name!r}: give features= or inputs=, not both")
        missing = [n for n in sig if n not in mapping]
        extra = [n for n in mapping if n not in sig]
        if missing or extra:
            raise ModelInputError(f"model {self.name!r}: inputs {missing} are not mapped, {extra} do not exist "
                                  f"(the model takes {sorted(sig)})")
        features: list[str] = []
        plans = []
        for iname, cols in mapping.items():
            meta = sig[iname]
            dtype = _ONNX_DTYPES.get(meta.type)
            if dtype is None:
                raise ModelInputError(f"model {self.name!r}: input {iname!r} has type {meta.type}; "
                                      f"features can feed {sorted(_ONNX_DTYPES)}")
            shape = list(meta.shape)
            cols = list(cols)
            if len(shape) == 2:
                width = shape[1]
                if isinstance(width, int) and width != len(cols):
                    raise ModelInputError(f"model {self.name!r}: input {iname!r} takes {width} columns, "
                                          f"the mapping gives {len(cols)}")
            elif len(shape) == 1:
                if len(cols) != 1:
                    raise ModelInputError(f"model {self.name!r}: input {iname!r} has shape {shape}: map one feature")
            else:
                raise ModelInputError(f"model {self.name!r}: input {iname!r} has shape {shape}; "
                                      "only [batch, n] and [batch] inputs can be fed from features")
            ix = []
            for c in cols:
                if c not in features:
                    features.append(c)
                ix.append(features.index(c))
            plans.append(_InputPlan(iname, tuple(ix), dtype, len(shape)))
        return plans, tuple(features)

    @property
    def identity(self) -> ModelIdentity:
        return self._identity

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature the inputs take, in first-use order (rows are in this order)."""
        return self._features

    def feeds(self, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        """The onnxruntime input dict for ``rows`` (values checked and converted)."""
        np = self._np
        for row in rows:
            if None in row:  # numpy would turn a missing value into NaN silently
                name = self._features[list(row).index(None)]
                raise ModelInputError(f"model {self._identity.ref}: needs numbers; feature {name!r} is None "
                                      "(never written for this entity: write it, or use a CallableModel with a default)")
        feeds = {}
        for p in self._plans:
            try:
                arr = np.array([[row[i] for i in p.columns] for row in rows], dtype=p.dtype)
            except (TypeError, ValueError) as exc:
                bad = next(((self._features[i], row[i]) for row in rows for i in p.columns
                            if not _is_number(row[i])), None)
                what = f"feature {bad[0]!r} is {bad[1]!r}" if bad else str(exc)
                raise ModelInputError(f"model {self._identity.ref}: input {p.name!r} needs numbers; {what}") from None
            if arr.ndim != 2:  # an empty batch
                arr = arr.reshape(len(rows), len(p.columns))
            feeds[p.name] = arr if p.rank == 2 else arr[:, 0]
        return feeds

    def run_one(self, row: Sequence[Any]) -> Outputs:
        """``run_batch([row])[0]``, bit for bit, without building the input arrays: each
        input is filled into a one-row array kept per thread (the predictor's hot path).

        A float input is filled by :mod:`struct` straight into the array's memory (the
        same C conversion numpy does, float32 rounding included); it refuses anything but
        numbers (``None``, a string, a value out of float32 range), and then the numpy
        fill and the checks of :meth:`feeds` decide, as they do for a batch."""
        try:
            feeds, fills = self._one.feeds, self._one.fills
        except AttributeError:  # the first call on this thread
            feeds, fills = self._one_buffers()
        for buf, cols, whole, packer in fills:
            vals = row if whole else [row[i] for i in cols]
            if packer is not None:
                try:
                    packer(buf, 0, *vals)
                    continue
                except (struct.error, TypeError, OverflowError):
                    pass  # not plain numbers: numpy's fill and feeds()'s checks below
            if None in vals:  # numpy would turn a missing value into NaN silently
                self.feeds([row])  # raises the ModelInputError naming the missing feature
            try:
                buf[0] = vals
            except (TypeError, ValueError):
                self.feeds([row])  # raises the ModelInputError naming the bad value
                raise
        return self._one_row(self._run(self._out_names, feeds, None))

    def _one_buffers(self) -> tuple[dict[str, Any], list[tuple[Any, tuple[int, ...], bool, Any]]]:
        """This thread's one-row input arrays of :meth:`run_one` and how each is filled."""
        np = self._np
        feeds, fills = {}, []
        for p in self._plans:
            buf = np.empty((1, len(p.columns)), dtype=p.dtype)
            feeds[p.name] = buf if p.rank == 2 else buf[:, 0]
            code = _STRUCT_CODES.get(p.dtype)
            packer = struct.Struct(f"={len(p.columns)}{code}").pack_into if code is not None else None
            fills.append((buf, p.columns, p.columns == tuple(range(len(self._features))), packer))
        self._one.feeds, self._one.fills = feeds, fills
        return feeds, fills

    def _one_row(self, raw: Sequence[Any]) -> Outputs:
        """:meth:`_outputs` of a one-row run: the same mapping, with the common shapes
        (one or two numpy outputs, each with its one row first) taken without a loop."""
        names, nd = self._out_names, self._nd
        if len(raw) == 2:
            a, b = raw
            if type(a) is nd and type(b) is nd and a.shape[:1] == _ONE_ROW == b.shape[:1]:
                a.setflags(write=False)  # read-only: digested later (outputs_read_only)
                b.setflags(write=False)
                return {names[0]: a[0], names[1]: b[0]}
        elif len(raw) == 1:
            a = raw[0]
            if type(a) is nd and a.shape[:1] == _ONE_ROW:
                a.setflags(write=False)
                return {names[0]: a[0]}
        return self._outputs(raw, 1)[0]

    def run_batch(self, rows: Sequence[Sequence[Any]]) -> list[Outputs]:
        if not rows:
            return []
        return self._outputs(self.session.run(self._out_names, self.feeds(rows)), len(rows))

    #: outputs are read-only numpy values (a predictor may digest them later)
    outputs_read_only = True

    def _outputs(self, raw: Sequence[Any], n: int) -> list[Outputs]:
        """Per-row output mappings of one session run on ``n`` rows (shapes checked; the
        arrays made read-only, so rows handed out cannot be changed under their digest)."""
        names = self._out_names
        for arr in raw:
            setflags = getattr(arr, "setflags", None)
            if setflags is not None:
                setflags(write=False)
        if n == 1:
            one = {}
            for name, arr in zip(names, raw):
                if getattr(arr, "shape", ())[:1] != (1,):
                    break
                one[name] = arr[0]
            else:
                return [one]
        for name, arr in zip(names, raw):
            if getattr(arr, "shape", (None,))[:1] != (n,):
                raise ModelInputError(f"model {self._identity.ref}: output {name!r} has shape "
                                      f"{getattr(arr, 'shape', None)}, not one row per input row")
        return [{name: arr[i] for name, arr in zip(names, raw)} for i in range(n)]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
