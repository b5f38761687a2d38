"""Performance tracking: RED metrics of services and calls (``monitoring.perf.tracking``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.perf.tracking", "monitoring.perf.asgi", "monitoring.perf.wsgi")

__getattr__, __dir__ = reexport(__name__, TARGETS)
