"""Lazy re-exports for the platform's documented module layout (``health/``,
``logging/``, ``performance/``, ``utils/``, ``metrics.exporter``): a module there names
the real modules it stands for, and each public name is the first of those that has
it, imported on first use (PEP 562), so nothing is copied.

>>> import types
>>> m = types.ModuleType("demo")
>>> m.__getattr__, m.__dir__ = reexport("demo", ("json",))
>>> m.dumps([1])
'[1]'
>>> "loads" in m.__dir__()
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def reexport(
    module: str, targets: tuple[str, ...]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``module`` that serve the public names of
    ``targets`` (the first target holding a name wins)."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("_"):
            for target in targets:
                found = importlib.import_module(target)
                if hasattr(found, name):
                    return getattr(found, name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        names: set[str] = set()
        for target in targets:
            names.update(n for n in dir(importlib.import_module(target)) if not n.startswith("_"))
        return sorted(names)

    return __getattr__, __dir__
