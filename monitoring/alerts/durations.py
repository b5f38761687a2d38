"""Durations in Alertmanager configs: Prometheus' compound form, as whole milliseconds.

Accepts what ``monitoring.config.parse_duration`` accepts (``500ms``, ``1.5m``, a number
of seconds) plus Prometheus' compound ``1h30m`` and ``y`` (365 days).

>>> parse_duration_ms("1h30m")
5400000
>>> parse_duration_ms("30s")
30000
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from monitoring.config import ms, parse_duration
from monitoring.metrics.prom_syntax import prom_duration_ms


def parse_duration_ms(value: Any) -> int:
    """Milliseconds of a duration; ``ValueError`` naming the value when it is not one."""
    if isinstance(value, str):
        compound = prom_duration_ms(value.strip())
        if compound is not None:
            return compound
    result = ms(parse_duration(value))
    if result < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    return result


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
"""A pydantic field type: a duration string in the config, whole milliseconds in Python."""
