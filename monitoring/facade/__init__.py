"""The platform's documented Python API (docs/python-api.md): thin façades over the real
pipeline, re-exported at the documented paths (``monitoring.metrics.collector``,
``monitoring.alerts.notification``, ``monitoring.visualization.dashboard``...).

Each class runs in one of two modes, chosen explicitly (``mode=``) or by
``python_api.mode`` in the settings (default ``pipeline``):

* ``pipeline``: events go to Kafka through the producer SDK, the running worker and
  store do the work, results are read back from ClickHouse through the store's query
  endpoint (waiting up to ``python_api.wait`` for them);
* ``local``: the same domain classes fed directly in this process (notebooks, tests),
  results returned.

These modules are adapters (they do I/O); the domain packages only re-export them lazily.
"""

from monitoring.facade.common import Mode, resolve

__all__ = ["Mode", "resolve"]
