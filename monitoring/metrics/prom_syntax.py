"""Prometheus' text forms, one copy for the whole project: metric and label names,
durations in Prometheus' compound form, and sample values as Prometheus prints them.

Pure: no I/O. The samples contract, the rule files, the scrape configs, the PromQL
engine and the Prometheus HTTP API all read and write these forms the same way.

Names match the whole string: Go's ``$`` ends the text, Python's ``$`` also matches
before a final newline, so the patterns end with ``\\Z`` (``"job\\n"`` is no label name).

>>> bool(LABEL_NAME.match("job")), bool(LABEL_NAME.match("job\\n"))
(True, False)
>>> prom_duration_ms("1h30m"), prom_duration_ms("0"), prom_duration_ms("90")
(5400000, 0, None)
>>> [format_value(v) for v in (1.0, 0.25, 1e21, float("nan"), float("-inf"), -0.0)]
['1', '0.25', '1000000000000000000000', 'NaN', '-Inf', '-0']
"""

from __future__ import annotations

import math
import re

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
"""A metric name (``model.IsValidMetricName``)."""
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
"""A label name (``model.LabelName.IsValid``)."""

DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?\Z"
)
"""Prometheus' compound duration (``model.ParseDuration``): units y w d h m s ms,
largest first, each at most once; a year is 365 days."""
DURATION_UNITS_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def prom_duration_ms(text: str) -> int | None:
    """Milliseconds of a Prometheus duration (``1h30m``, ``250ms``, ``0``); ``None`` when
    ``text`` is not one (an empty string, a bare number other than 0, ``1.5m``...)."""
    if text == "0":
        return 0
    m = DURATION.match(text)
    if not text or m is None:
        return None
    return sum(int(g) * u for g, u in zip(m.groups(), DURATION_UNITS_MS, strict=True) if g)


def format_value(v: float) -> str:
    """``v`` as Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: the shortest digits that
    read back exactly, never an exponent (Prometheus' API values, ``count_values``)."""
    s = repr(v)
    if "e" in s or "n" in s:
        if v != v:
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        import numpy as np  # only for values repr writes with an exponent

        return str(np.format_float_positional(v, trim="-"))
    return s[:-2] if s.endswith(".0") else s
