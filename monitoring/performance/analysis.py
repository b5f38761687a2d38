"""Performance analysis against a baseline (``monitoring.perf.analysis``, ``store_io``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.perf.analysis", "monitoring.perf.store_io", "monitoring.perf.stats")

__getattr__, __dir__ = reexport(__name__, TARGETS)
