"""Documented path of ``MetricsStorage`` (``monitoring.facade.storage``), imported on use:
it is an adapter (ClickHouse), and ``monitoring.metrics`` stays a pure package."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.facade.storage import MetricsStorage, StoreResult

__all__ = ["MetricsStorage", "StoreResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from monitoring.facade import storage

        return getattr(storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
