"""Documented path of the collector: ``monitoring.metrics.collector.MetricsCollector``.

``MetricsCollector`` is the platform's façade (``monitoring.facade.collector``: sources
read in this process, or sent through the producer SDK in ``pipeline`` mode); the SDK's
instruments and errors are re-exported from ``monitoring.sdk.producer``. Both are
adapters, imported lazily, so importing the ``monitoring.metrics`` domain package never
imports Kafka.

Example::

    from monitoring.metrics.collector import MetricsCollector
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.facade.collector import MetricsCollector
    from monitoring.sdk.producer import (
        BufferFullError,
        Counter,
        Gauge,
        Histogram,
        SeriesHandle,
    )

__all__ = ["BufferFullError", "Counter", "Gauge", "Histogram", "MetricsCollector", "SeriesHandle"]


def __getattr__(name: str) -> Any:
    if name == "MetricsCollector":
        from monitoring.facade import collector

        return collector.MetricsCollector
    if name in __all__:
        from monitoring.sdk import producer

        return getattr(producer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
