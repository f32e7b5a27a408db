"""Which implementation of the hot paths runs: compiled or pure Python.

Two optional extension modules, both built by ``pip install`` when it can (a C compiler;
mypy for the first; see ``setup.py`` and ``docs/concepts/speedups.md``), and never a
reason for an install to fail:

* :mod:`crdtsync._hot`, the column loops of the apply path (format-2 stamp column, the
  stamped counter check, the counter join), compiled by mypyc from ``_hot.py`` itself:
  without the extension the same file runs as plain Python;
* ``crdtsync._chandles``, the fast paths of the two specialised write handles in C
  (``_chandles.c``); without it :mod:`crdtsync.replica.handles` uses its closures, the
  reference the C code is tested against (``tests/replica/test_chandles.py``).

Each is picked at import: ``CRDTSYNC_PURE=1`` in the environment means pure Python for
both; else an extension is used if it is there *and was built from the current source*
(``setup.py`` records the SHA-256 of the source beside it, ``<name>.sha256``; an
extension left over from another source is ignored with a warning, so that a checkout
never runs code that no longer matches what it reads). :data:`ACTIVE` says what runs
(``"compiled"``, ``"pure"`` or ``"partial"``), :data:`PARTS` per module and
:data:`REASONS` why; the benchmarks print them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

__all__ = ["ACTIVE", "PARTS", "REASONS", "hot", "chandles", "source_digest", "load_pure", "describe", "pure"]

_DIR = Path(__file__).resolve().parent
#: extension module -> (its source file, what compiles it)
SOURCES = {"_hot": ("_hot.py", "mypyc"), "_chandles": ("_chandles.c", "c")}


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
        return None, "not built (no C compiler, or no mypy, at install)"
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


_hot_ext, _hot_why = _extension("_hot")
_c_ext, _c_why = _extension("_chandles")

#: the column loops: the mypyc-compiled module, or ``_hot.py`` run as Python
hot: ModuleType = _hot_ext if _hot_ext is not None else load_pure()
#: the C write handles, or None (:mod:`crdtsync.replica.handles` then uses its closures)
chandles: ModuleType | None = _c_ext
#: per module: ``"mypyc"``/``"c"`` or ``"pure"``
PARTS: dict[str, str] = {"_hot": "mypyc" if _hot_ext is not None else "pure",
                         "_chandles": "c" if _c_ext is not None else "pure"}
#: per module: why it runs as it does
REASONS: dict[str, str] = {"_hot": _hot_why, "_chandles": _c_why}
#: ``"compiled"`` (both extensions), ``"pure"`` (neither) or ``"partial"``
ACTIVE: str = ("compiled" if _hot_ext is not None and _c_ext is not None
               else "pure" if _hot_ext is None and _c_ext is None else "partial")


def describe() -> str:
    """One line for a benchmark header or a bug report."""
    return f"{ACTIVE} (" + "; ".join(f"{n}: {REASONS[n]}" for n in SOURCES) + ")"


_pure_hot: ModuleType | None = None


@contextlib.contextmanager
def pure() -> Iterator[None]:
    """Run pure Python in this process while inside: the hot loops from the source, and
    the write handles made inside are the Python closures (callers look :data:`hot` and
    :data:`chandles` up at each call). For benchmarks that compare both paths in one run;
    :data:`ACTIVE` keeps saying what the process runs otherwise."""
    global hot, chandles, _pure_hot
    if _pure_hot is None:
        _pure_hot = load_pure("crdtsync._hot_pure")
    saved = hot, chandles
    hot, chandles = _pure_hot, None
    try:
        yield
    finally:
        hot, chandles = saved
