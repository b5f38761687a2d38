"""Documented path of ``NotificationService`` (alerts delivered with the notifier's integrations):
``monitoring.facade.alerting``, imported on use, so the ``monitoring.alerts`` domain
package imports no adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.facade.alerting import NotificationService

__all__ = ["NotificationService"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("monitoring.facade.alerting"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
