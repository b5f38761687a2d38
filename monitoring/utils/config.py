"""Configuration management: the settings (``monitoring.config``: YAML + ``MONITORING_*``
environment) and the platform's configuration shape (``platform_config``).

>>> s = Settings.load(None)
>>> s.python_api.mode
'pipeline'
"""

from __future__ import annotations

from monitoring.config import (
    ConfigError,
    Duration,
    Settings,
    ms,
    parse_duration,
)
from monitoring.utils.platform_config import from_platform

__all__ = ["ConfigError", "Duration", "Settings", "from_platform", "ms", "parse_duration"]
