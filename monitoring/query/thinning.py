"""The ClickHouse condition that reads only what a ``SelectHint`` may keep (hints.py).

The engine tells the source when and how far back it evaluates a selector. When the
range (or an instant selector's lookback) is at most half the step
(``SelectHint.thins``), the statement keeps only the points inside ``[t_k - range,
t_k]`` of some evaluation time: ``positiveModulo(first - t, step) <= range`` within the
evaluation's span, every value a bound parameter. An instant selector's points are then
cut to the newest per step in numpy (``Columns.thinned``); so are a counter's windows,
whose points are rebuilt from every window's ``increase`` before they can be left out.

Measured (docs/query.md): reading fewer rows saves their transfer and evaluation, not
ClickHouse's scan (a granule holds days of one series); a per-step ``argMax`` in
ClickHouse was slower than the full read and is not used.
"""

from __future__ import annotations

from typing import Any

from monitoring.promql.hints import SelectHint


def params(hint: SelectHint) -> dict[str, Any]:
    """The statement parameters of ``hint``."""
    return {
        "h_first": hint.first_ms,
        "h_step": max(hint.step_ms, 1),
        "h_reach": hint.range_ms,
        "h_lo": hint.first_ms - hint.range_ms,
        "h_last": hint.first_ms + (hint.steps - 1) * max(hint.step_ms, 0),
    }


def in_reach(t: str) -> str:
    """A WHERE condition on the point time expression ``t`` (ms): inside the range of
    the next evaluation time (for a range selector)."""
    return (
        f"positiveModulo({{h_first:Int64}} - ({t}), {{h_step:Int64}}) <= {{h_reach:Int64}} "
        f"AND {_SPAN.format(t=t)}"
    )


# the evaluation's span, in case the statement's interval is wider
_SPAN = "{t} >= {{h_lo:Int64}} AND {t} <= {{h_last:Int64}}"
