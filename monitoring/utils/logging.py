"""Monitoring-specific logging (``monitoring.log``). Inside this package ``import logging``
is still the standard library (absolute imports).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.log",)

__getattr__, __dir__ = reexport(__name__, TARGETS)
