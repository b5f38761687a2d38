"""Recovery procedures: dead letters listed and replayed (``monitoring dlq``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.ops.deadletters", "monitoring.ops.dlq_kafka")

__getattr__, __dir__ = reexport(__name__, TARGETS)
