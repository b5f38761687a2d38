"""Common utilities of the Python API: settings and mode, waiting for results, durations.

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.facade.common", "monitoring.config")

__getattr__, __dir__ = reexport(__name__, TARGETS)
