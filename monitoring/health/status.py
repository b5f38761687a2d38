"""Status monitoring: ``monitoring status``'s parts (processes' heartbeats, lag, the
report: ``gather(settings)``), and the check results.

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = (
    "monitoring.ops.status",
    "monitoring.ops.status_kafka",
    "monitoring.ops.heartbeat",
    "monitoring.ops.checks",
)

__getattr__, __dir__ = reexport(__name__, TARGETS)
