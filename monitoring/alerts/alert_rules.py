"""Documented path of ``AlertRules`` (the evaluator's rules from thresholds and conditions):
``monitoring.facade.alerting``, imported on use, so the ``monitoring.alerts`` domain
package imports no adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.facade.alerting import AlertRules

__all__ = ["AlertRules"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("monitoring.facade.alerting"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
