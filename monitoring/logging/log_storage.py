"""Log storage: logs shipped to the logs topic, which the store keeps
(``monitoring.sdk.log_shipping``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.sdk.log_shipping", "monitoring.sdk.log_tail")

__getattr__, __dir__ = reexport(__name__, TARGETS)
