"""Documented path of the producer SDK: ``monitoring.metrics.collector.MetricsCollector``.

The SDK is an adapter (it talks to Kafka) and lives in ``monitoring.sdk.producer``;
this module re-exports it lazily, so importing the ``monitoring.metrics`` domain
package never imports Kafka.

Example::

    from monitoring.metrics.collector import MetricsCollector
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.sdk.producer import (
        BufferFullError,
        Counter,
        Gauge,
        Histogram,
        MetricsCollector,
        SeriesHandle,
    )

__all__ = ["BufferFullError", "Counter", "Gauge", "Histogram", "MetricsCollector", "SeriesHandle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from monitoring.sdk import producer

        return getattr(producer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
