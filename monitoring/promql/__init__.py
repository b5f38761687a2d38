"""PromQL over raw samples, with Prometheus 2.42's semantics (docs/promql.md).

A pure domain package: no I/O. The caller supplies a ``Source`` (ClickHouse in
production, a list of ``SeriesData`` in tests); ``Engine.instant``/``Engine.range``
call ``source.select`` once per selector and evaluate every step at once with numpy.

Interface notes (additions, backward compatible):

* ``Engine(..., default_step_ms=60_000)``: a subquery's step when it has none.
* ``Engine.check_resolution(start, end, step)`` raises ``TooLarge`` whose
  ``error_type`` is ``bad_data`` (Prometheus's API answers the resolution limit so);
  other ``TooLarge`` errors are ``execution``.
* ``Result.string``: ``(t_ms, value)`` for a string result.
* ``selectors(query, lookback_ms=300_000)``: the reach also counts subquery ranges
  and offsets; ``@`` and negative offsets are resolved by the engine itself, which asks
  the source for exactly the interval each selector needs.
"""

from monitoring.promql.engine import Engine, resolution_error
from monitoring.promql.hints import SelectHint
from monitoring.promql.model import (
    BadQuery,
    EvalError,
    Matcher,
    PromQLError,
    QueryTimeout,
    Result,
    SeriesData,
    Source,
    TooLarge,
)
from monitoring.promql.plan import parse, selectors

__all__ = [
    "BadQuery",
    "Engine",
    "EvalError",
    "Matcher",
    "PromQLError",
    "QueryTimeout",
    "Result",
    "SelectHint",
    "SeriesData",
    "Source",
    "TooLarge",
    "parse",
    "resolution_error",
    "selectors",
]
