"""Which implementation of the hot loops runs: compiled (mypyc) or pure Python.

:mod:`crdtsync._hot` holds the replica's innermost loops (write handles, format-2 column
checks, the counter join). ``pip install`` compiles it with mypyc when it can (a C
compiler and mypy at build time; see ``setup.py``, and ``docs/concepts/speedups.md``);
the build never fails for want of one, and without it the same file runs as plain
Python. This module picks one at import:

* ``CRDTSYNC_PURE=1`` in the environment: the pure-Python source, always;
* else the compiled extension if there is one *built from the current source*
  (``setup.py`` records the SHA-256 of ``_hot.py`` beside it, in ``_hot.sha256``; an
  extension left over from an older source is ignored, with a warning, rather than run
  code that no longer matches the source);
* else the pure-Python source.

:data:`ACTIVE` says which (``"mypyc"`` or ``"pure"``) and :data:`REASON` why; the
benchmarks print both. Every caller reaches the hot loops through :data:`hot`.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

__all__ = ["ACTIVE", "REASON", "hot", "source_digest", "load_pure"]

_DIR = Path(__file__).resolve().parent
_SOURCE = _DIR / "_hot.py"
_DIGEST_FILE = _DIR / "_hot.sha256"


def source_digest() -> str:
    """The SHA-256 of ``_hot.py`` as it is now (what the build records)."""
    return hashlib.sha256(_SOURCE.read_bytes()).hexdigest()


def load_pure(name: str = "crdtsync._hot") -> ModuleType:
    """``_hot.py`` imported from its source, whatever extension lies beside it."""
    loader = importlib.machinery.SourceFileLoader(name, str(_SOURCE))
    spec = importlib.util.spec_from_loader(name, loader, origin=str(_SOURCE))
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = str(_SOURCE)
    sys.modules[name] = mod
    loader.exec_module(mod)
    return mod


def _compiled_files() -> list[Path]:
    return [p for suffix in importlib.machinery.EXTENSION_SUFFIXES for p in _DIR.glob("_hot" + suffix)]


def _choose() -> tuple[str, str, ModuleType]:
    if os.environ.get("CRDTSYNC_PURE", "") not in ("", "0"):
        return "pure", "CRDTSYNC_PURE is set", load_pure()
    if not _compiled_files():
        return "pure", "no compiled extension (built without a C compiler or mypyc)", load_pure()
    try:
        recorded = _DIGEST_FILE.read_text().strip()
    except OSError:
        recorded = ""
    if recorded != source_digest():
        warnings.warn("crdtsync: the compiled crdtsync._hot was built from another version of _hot.py; "
                      "running the pure-Python source (rebuild with `pip install -e .`)", RuntimeWarning,
                      stacklevel=2)
        return "pure", "compiled extension is stale (built from another _hot.py)", load_pure()
    from . import _hot  # the extension module: import prefers it to the .py beside it

    if not getattr(_hot, "__file__", "").endswith(".py"):
        return "mypyc", f"compiled extension {Path(_hot.__file__ or '').name}", _hot
    return "pure", "the extension did not load", _hot


#: ``"mypyc"`` or ``"pure"``: which implementation of :mod:`crdtsync._hot` runs
ACTIVE: str
#: why (for the benchmark header and bug reports)
REASON: str
#: the module in use
hot: ModuleType
ACTIVE, REASON, hot = _choose()
