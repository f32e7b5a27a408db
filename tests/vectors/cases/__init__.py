"""Golden-vector cases: one module per type family, each defining ``CASES``.

``CASES`` is a list of ``(name, builder)``; ``name`` is ``"<type_tag>/<case>"`` and
``builder()`` returns a state built through the public mutators and joins (never a
hand-written payload), so a vector freezes what real code produces.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any


def all_cases() -> list[tuple[str, Callable[[], Any]]]:
    out: list[tuple[str, Callable[[], Any]]] = []
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        out.extend(importlib.import_module(f"{__name__}.{m.name}").CASES)
    return out
