"""Durations in Alertmanager configs: Prometheus' compound form, as whole milliseconds.

Accepts what ``monitoring.config.parse_duration`` accepts (``500ms``, ``1.5m``, a number
of seconds) plus Prometheus' compound ``1h30m`` and ``y`` (365 days).

>>> parse_duration_ms("1h30m")
5400000
>>> parse_duration_ms("30s")
30000
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from monitoring.config import ms, parse_duration

_UNITS = (("y", 31_536_000_000), ("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000),
          ("m", 60_000), ("s", 1000), ("ms", 1))  # fmt: skip
_COMPOUND = re.compile("".join(rf"(?:(\d+){u})?" for u, _ in _UNITS))


def parse_duration_ms(value: Any) -> int:
    """Milliseconds of a duration; ``ValueError`` naming the value when it is not one."""
    if isinstance(value, str):
        if value.strip() == "0":
            return 0
        m = _COMPOUND.fullmatch(value.strip())
        if m and value.strip() and any(m.groups()):
            return sum(int(g) * unit for g, (_, unit) in zip(m.groups(), _UNITS, strict=True) if g)
    result = ms(parse_duration(value))
    if result < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    return result


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
"""A pydantic field type: a duration string in the config, whole milliseconds in Python."""
