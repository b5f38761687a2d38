"""Input validation: the samples contract (``check_series``, ``InvalidSample``, ``Limits``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.metrics.samples", "monitoring.wire.sample_encoding")

__getattr__, __dir__ = reexport(__name__, TARGETS)
