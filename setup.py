"""Build script: the optional compiled parts, ``crdtsync/_ccolumns.c`` (the column loops
of ``crdtsync/_hot.py``), ``crdtsync/_chandles.c`` (the write handles) and
``crdtsync/_clineage.c`` (the digests of a lineage flush), all in C.

Everything else about the package is in ``pyproject.toml``. A C compiler is the only
build tool: with ``CRDTSYNC_PURE=1``, without a working C compiler, or when a file does
not compile, the install still succeeds and :mod:`crdtsync.speedups` runs pure Python
(see ``docs/concepts/speedups.md``).

Two things are written beside each build:

* ``<name>.sha256``: the SHA-256 of the source an extension was built from;
  ``crdtsync.speedups`` ignores an extension whose source has changed since;
* ``_build.json``, the build report: whether a working C compiler was found (a trivial
  file is compiled first to tell), and per extension whether it was built or why not.
  The tests read it: with a working compiler every extension must have been built (a
  compile error is then a failure), without one the pure path is what they test.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
#: extension -> its C source
SOURCES = {"crdtsync._ccolumns": "crdtsync/_ccolumns.c", "crdtsync._chandles": "crdtsync/_chandles.c",
           "crdtsync._clineage": "crdtsync/_clineage.c"}
REPORT = "_build.json"


def _say(msg: str) -> None:
    print(f"crdtsync setup: {msg}", file=sys.stderr)


class BuildExt(build_ext):
    """build_ext that probes the compiler, records which source an extension was built
    from and what was built (the build report), and never fails the install."""

    def build_extensions(self) -> None:
        for stale in [*(HERE / "crdtsync").glob("_hot*.so"), *(HERE / "crdtsync").glob("_hot*.pyd"),
                      HERE / "crdtsync" / "_hot.sha256"]:  # (left by the mypyc build of earlier versions)
            stale.unlink(missing_ok=True)
        self._report: dict[str, Any] = {"python": sys.version.split()[0], "pure_requested": False,
                                        "compiler": False, "compiler_detail": "", "parts": {}}
        if os.environ.get("CRDTSYNC_PURE", "") not in ("", "0"):
            _say("CRDTSYNC_PURE is set: installing pure Python only")
            self._report["pure_requested"] = True
            self._report["compiler_detail"] = "not probed (CRDTSYNC_PURE set)"
            for ext in self.extensions:
                self._part(ext.name, False, "CRDTSYNC_PURE was set at install")
        else:
            ok, detail = self._probe()
            self._report["compiler"], self._report["compiler_detail"] = ok, detail
            if not ok:
                _say(f"no working C compiler ({detail}); installing pure Python only")
                for ext in self.extensions:
                    self._part(ext.name, False, f"no working C compiler ({detail})")
            else:
                super().build_extensions()
        self._write_report()

    def _probe(self) -> tuple[bool, str]:
        """Whether the configured compiler compiles a trivial C file (the tell between
        "no compiler" and "our file does not compile")."""
        with tempfile.TemporaryDirectory(prefix="crdtsync-cc-") as tmp:
            src = Path(tmp) / "probe.c"
            src.write_text("int crdtsync_probe(void) { return 0; }\n")
            try:
                self.compiler.compile([str(src)], output_dir=tmp)
            except Exception as exc:  # (CompileError, a missing executable)
                return False, f"{type(exc).__name__}: {exc}"[:240]
        cc = getattr(self.compiler, "compiler_so", None) or [self.compiler.compiler_type]
        return True, " ".join(cc[:1])

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # (CompileError, LinkError)
            _say(f"compiling {ext.name} failed ({exc!r}); it runs as pure Python")
            self._part(ext.name, False, f"compile error: {type(exc).__name__}: {exc}")
            return
        digest = hashlib.sha256((HERE / SOURCES[ext.name]).read_bytes()).hexdigest()
        for target in self._targets(f"{Path(SOURCES[ext.name]).stem}.sha256"):
            target.write_text(digest + "\n")
        self._part(ext.name, True, "built")

    def _part(self, name: str, built: bool, detail: str) -> None:
        stem = name.rsplit(".", 1)[-1]
        self._report["parts"][stem] = {"built": built, "detail": detail}
        if not built:  # (an extension of an earlier build must not outlive a report saying it is not there)
            for old in [*(HERE / "crdtsync").glob(f"{stem}.*.so"), *(HERE / "crdtsync").glob(f"{stem}.*.pyd"),
                        HERE / "crdtsync" / f"{stem}.sha256"]:
                old.unlink(missing_ok=True)

    def _targets(self, filename: str) -> set[Path]:
        """Where a file beside the extensions goes: the build tree, and the source tree
        (editable installs load the extensions from there)."""
        built = Path(self.get_ext_fullpath("crdtsync._ccolumns")).parent
        out = {built / filename, HERE / "crdtsync" / filename}
        for p in out:
            p.parent.mkdir(parents=True, exist_ok=True)
        return out

    def _write_report(self) -> None:
        text = json.dumps(self._report, indent=2, sort_keys=True) + "\n"
        for target in self._targets(REPORT):
            target.write_text(text)


setup(ext_modules=[Extension(name, [src], optional=True) for name, src in SOURCES.items()],
      cmdclass={"build_ext": BuildExt})
