"""Performance benchmarking: the open-loop load generator (``monitoring.perf.benchmarking``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.perf.benchmarking", "monitoring.perf.arrivals")

__getattr__, __dir__ = reexport(__name__, TARGETS)
