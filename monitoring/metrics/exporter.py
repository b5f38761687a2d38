"""Metrics export: read stored metrics out through the store's standard protocols
(PromQL ``query``/``query_range`` and ClickHouse SQL, ``StoreClient``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.query.client",)

__getattr__, __dir__ = reexport(__name__, TARGETS)
