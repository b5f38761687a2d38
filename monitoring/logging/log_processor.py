"""Log processing: the logs agent's parsing, templates and counts.

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.agents.log_processing", "monitoring.logs.records", "monitoring.logs.levels")

__getattr__, __dir__ = reexport(__name__, TARGETS)
