"""Performance optimization suggestions (``monitoring.perf.optimization``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.perf.optimization",)

__getattr__, __dir__ = reexport(__name__, TARGETS)
