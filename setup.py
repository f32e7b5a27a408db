"""Build script: the optional compiled parts, ``crdtsync/_hot.py`` (mypyc) and
``crdtsync/_chandles.c`` (C).

Everything else about the package is in ``pyproject.toml``. Both are optional at every
step: with ``CRDTSYNC_PURE=1``, without mypyc (for the first), when mypyc refuses the
file, or when there is no working C compiler, the install still succeeds and
:mod:`crdtsync.speedups` runs pure Python (see ``docs/concepts/speedups.md``). A built
extension gets the SHA-256 of the source it was built from beside it
(``<name>.sha256``): ``crdtsync.speedups`` ignores an extension whose source has
changed since.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
HOT = "crdtsync/_hot.py"
CHANDLES = "crdtsync/_chandles.c"
#: extension -> the source whose digest is recorded beside it
SOURCES = {"crdtsync._hot": HOT, "crdtsync._hot__mypyc": HOT, "crdtsync._chandles": CHANDLES}


def _say(msg: str) -> None:
    print(f"crdtsync setup: {msg}", file=sys.stderr)


def _ext_modules() -> list[Any]:
    if os.environ.get("CRDTSYNC_PURE", "") not in ("", "0"):
        _say("CRDTSYNC_PURE is set: installing pure Python only")
        return []
    return _mypyc_modules() + [Extension("crdtsync._chandles", [CHANDLES], optional=True)]


def _mypyc_modules() -> list[Any]:
    try:
        from mypyc.build import mypycify
    except Exception as exc:  # (no mypyc in the build environment)
        _say(f"mypyc is not available ({exc}); installing pure Python only")
        return []
    cwd = os.getcwd()
    try:
        os.chdir(HERE)  # mypycify names modules from paths relative to the project
        exts = mypycify(["--follow-imports=skip", HOT], opt_level="3")
    except (Exception, SystemExit) as exc:  # mypyc refused the file: say so, stay pure
        _say(f"mypyc could not compile {HOT} ({exc!r}); installing pure Python only")
        return []
    finally:
        os.chdir(cwd)
    for ext in exts:
        ext.optional = True  # a failed C compile is a warning, not a failed install
    return exts


class BuildExt(build_ext):
    """build_ext that records which source an extension was built from, and never fails
    the install for a failed compile."""

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # (CompileError, LinkError, a missing compiler)
            _say(f"compiling {ext.name} failed ({exc!r}); installing pure Python only")
            return
        source = SOURCES.get(ext.name)
        if source is None:
            return
        digest = hashlib.sha256((HERE / source).read_bytes()).hexdigest()
        stem = Path(source).stem
        built = Path(self.get_ext_fullpath(ext.name)).parent
        targets = {built / f"{stem}.sha256", HERE / "crdtsync" / f"{stem}.sha256"}  # (editable installs copy the .so there)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(digest + "\n")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": BuildExt})
