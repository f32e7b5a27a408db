"""Built-in ``TypeSpec``s: one module per type family, each registering its specs.

Every module in this package is imported, so a new family is one new file here.
"""

from __future__ import annotations

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
