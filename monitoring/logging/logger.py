"""Logging setup: structlog JSON lines, a rotated compressed file (``monitoring.log``).

A lazy re-export of the modules in ``TARGETS`` (``monitoring.facade.reexport``).
"""

from __future__ import annotations

from monitoring.facade.reexport import reexport

TARGETS = ("monitoring.log",)

__getattr__, __dir__ = reexport(__name__, TARGETS)
