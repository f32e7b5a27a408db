"""Which implementation of the hot paths runs: compiled or pure Python.

Three optional C extension modules, both built by ``pip install`` when it can (a working C
compiler is the only build tool; see ``setup.py`` and ``docs/concepts/speedups.md``), and
never a reason for an install to fail:

* ``crdtsync._ccolumns`` (``_ccolumns.c``), the column loops of the apply and replay
  path (format-2 stamp column, the key and stamped-counter checks, the counter and LWW
  joins): the same functions as :mod:`crdtsync._hot`, which is their reference and runs
  as plain Python without the extension. An input the C code was not written for
  (anything but exact lists, dicts and 64-bit ints where it does arithmetic) is handed
  to the reference function, bound at import here;
* ``crdtsync._chandles`` (``_chandles.c``), the fast paths of the two specialised write
  handles; without it :mod:`crdtsync.replica.handles` uses its closures, the reference
  the C code is tested against (``tests/replica/test_chandles.py``);
* ``crdtsync._clineage`` (``_clineage.c``), the digests of a lineage flush (BLAKE2b of
  many rows in one loop); without it :mod:`crdtsync.inference.digests` runs its own
  Python, the reference (``tests/inference/test_clineage.py``).

Each is picked at import: ``CRDTSYNC_PURE=1`` in the environment means pure Python for
all; else an extension is used if it is there *and was built from the current source*
(``setup.py`` records the SHA-256 of the source beside it, ``<name>.sha256``; an
extension left over from another source is ignored with a warning, so that a checkout
never runs code that no longer matches what it reads). :data:`ACTIVE` says what runs
(``"compiled"``, ``"pure"`` or ``"partial"``), :data:`PARTS` per module and
:data:`REASONS` why; the benchmarks print them. :func:`build_report` is what the install
found (a compiler or not, and per extension built or why not), which the tests use to
tell a missing compiler (the pure path is then what they test) from a compile error (a
failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["ACTIVE", "PARTS", "REASONS", "hot", "chandles", "source_digest", "load_pure", "describe", "pure",
           "build_report", "must_compile"]

_DIR = Path(__file__).resolve().parent
#: extension module -> (its source file, what compiles it)
SOURCES = {"_ccolumns": ("_ccolumns.c", "c"), "_chandles": ("_chandles.c", "c"), "_clineage": ("_clineage.c", "c")}
#: the build report ``setup.py`` writes beside the extensions
BUILD_REPORT = _DIR / "_build.json"


def source_digest(name: str) -> str:
    """The SHA-256 of the source of extension ``name`` as it is now (what the build records)."""
    return hashlib.sha256((_DIR / SOURCES[name][0]).read_bytes()).hexdigest()


def load_pure(name: str = "crdtsync._hot") -> ModuleType:
    """``_hot.py`` imported from its source, whatever extension lies beside it."""
    source = _DIR / "_hot.py"
    loader = importlib.machinery.SourceFileLoader(name, str(source))
    spec = importlib.util.spec_from_loader(name, loader, origin=str(source))
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = str(source)
    sys.modules[name] = mod
    loader.exec_module(mod)
    return mod


def _extension(name: str) -> tuple[ModuleType | None, str]:
    """The built extension ``name`` if it may be used, else None; and why."""
    if os.environ.get("CRDTSYNC_PURE", "") not in ("", "0"):
        return None, "CRDTSYNC_PURE is set"
    if not any((_DIR / (name + suffix)).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return None, "not built (" + _why_not_built(name) + ")"
    try:
        recorded = (_DIR / f"{name}.sha256").read_text().strip()
    except OSError:
        recorded = ""
    if recorded != source_digest(name):
        warnings.warn(f"crdtsync: the compiled crdtsync.{name} was built from another version of "
                      f"{SOURCES[name][0]}; running pure Python instead (rebuild: `pip install -e .`)",
                      RuntimeWarning, stacklevel=3)
        return None, f"stale (built from another {SOURCES[name][0]})"
    try:
        mod = importlib.import_module(f"crdtsync.{name}")
    except ImportError as exc:
        return None, f"did not load ({exc})"
    if str(getattr(mod, "__file__", "")).endswith(".py"):
        return None, "did not load (the import found the source)"
    return mod, f"{SOURCES[name][1]}: {Path(str(mod.__file__)).name}"


def build_report() -> dict[str, Any] | None:
    """What ``setup.py`` found at the last build: ``{"compiler": bool, "compiler_detail":
    str, "pure_requested": bool, "parts": {name: {"built": bool, "detail": str}}}``, or
    None when there is no report (a checkout that was never built)."""
    try:
        report: dict[str, Any] = json.loads(BUILD_REPORT.read_text())
    except (OSError, ValueError):
        return None
    return report


def must_compile() -> tuple[bool, str]:
    """Whether this install had to build the extensions, by the build report: True
    unless the report says there was no working C compiler or ``CRDTSYNC_PURE`` was set
    at install (a compile error with a compiler there, or no report at all, is True: the
    tests then require the compiled parts and fail without them); and why."""
    report = build_report()
    if report is None:
        return True, "no build report: run `pip install -e .`"
    if report.get("pure_requested"):
        return False, "CRDTSYNC_PURE was set at install"
    if not report.get("compiler"):
        return False, f"no working C compiler at install ({report.get('compiler_detail', '')})"
    return True, f"a C compiler was there at install ({report.get('compiler_detail', '')})"


def _why_not_built(name: str) -> str:
    report = build_report()
    if report is None:
        return "no build report: run `pip install -e .`"
    part = report.get("parts", {}).get(name)
    return str(part["detail"]) if part else "not in the build report"


_pure_ref = load_pure()  # (``crdtsync._hot``: the reference, and the pure path)
_cols_ext, _cols_why = _extension("_ccolumns")
_c_ext, _c_why = _extension("_chandles")
_cl_ext, _cl_why = _extension("_clineage")
if _cols_ext is not None:
    _cols_ext.bind(_pure_ref)  # what the C loops hand unusual inputs to

#: the column loops: the C module, or ``_hot.py`` run as Python
hot: ModuleType = _cols_ext if _cols_ext is not None else _pure_ref
#: the C write handles, or None (:mod:`crdtsync.replica.handles` then uses its closures)
chandles: ModuleType | None = _c_ext
#: the C lineage digests, or None (:mod:`crdtsync.inference.digests` then runs Python)
clineage: ModuleType | None = _cl_ext
_EXTS = {"_ccolumns": _cols_ext, "_chandles": _c_ext, "_clineage": _cl_ext}
#: per module: ``"c"`` or ``"pure"``
PARTS: dict[str, str] = {n: "c" if m is not None else "pure" for n, m in _EXTS.items()}
#: per module: why it runs as it does
REASONS: dict[str, str] = {"_ccolumns": _cols_why, "_chandles": _c_why, "_clineage": _cl_why}
#: ``"compiled"`` (every extension), ``"pure"`` (none) or ``"partial"``
ACTIVE: str = ("compiled" if all(m is not None for m in _EXTS.values())
               else "pure" if all(m is None for m in _EXTS.values()) else "partial")


def describe() -> str:
    """One line for a benchmark header or a bug report."""
    return f"{ACTIVE} (" + "; ".join(f"{n}: {REASONS[n]}" for n in SOURCES) + ")"


@contextlib.contextmanager
def pure() -> Iterator[None]:
    """Run pure Python in this process while inside: the hot loops from the source, and
    the write handles made inside are the Python closures (callers look :data:`hot` and
    :data:`chandles` up at each call). For benchmarks that compare both paths in one run;
    :data:`ACTIVE` keeps saying what the process runs otherwise."""
    global hot, chandles, clineage
    saved = hot, chandles, clineage
    hot, chandles, clineage = _pure_ref, None, None
    try:
        yield
    finally:
        hot, chandles, clineage = saved
