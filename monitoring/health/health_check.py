"""Health checks: ``monitoring doctor``'s checks and results (``monitoring.ops``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = (
    "monitoring.ops.checks",
    "monitoring.ops.doctor",
    "monitoring.ops.local_checks",
    "monitoring.ops.kafka_checks",
)

__getattr__, __dir__ = reexport(__name__, TARGETS)
