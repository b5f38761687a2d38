"""Log analysis: drain3 templates and counts per service (``monitoring.logs.analyzer``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.logs.analyzer", "monitoring.logs.templates", "monitoring.logs.counts")

__getattr__, __dir__ = reexport(__name__, TARGETS)
