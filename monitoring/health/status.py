"""Status monitoring: ``monitoring status``'s parts (processes' heartbeats, lag, the
report: ``gather(settings)``), and the check results.

A thin re-export: each public name of the first of ``TARGETS`` that has it, imported
on first use, so the implementation stays where it lives and nothing is copied.
"""

from __future__ import annotations

import importlib
from typing import Any

TARGETS = (
    "monitoring.ops.status",
    "monitoring.ops.status_kafka",
    "monitoring.ops.heartbeat",
    "monitoring.ops.checks",
)


def __getattr__(name: str) -> Any:
    if not name.startswith("_"):
        for target in TARGETS:
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as e:
                if e.name != target:
                    raise
                continue  # not built yet (a façade that points at it when it lands)
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    names: set[str] = set()
    for target in TARGETS:
        try:
            names.update(n for n in dir(importlib.import_module(target)) if not n.startswith("_"))
        except ModuleNotFoundError:
            continue
    return sorted(names)
