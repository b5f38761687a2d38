"""ClickHouse statements that read only what a ``SelectHint`` keeps (see hints.py).

The engine tells the source when and how far back it evaluates a selector. When the
step is long next to the range (``SelectHint.thins``), the statement leaves out in
ClickHouse what the evaluation never looks at, every value bound as a parameter:

* a range selector: the points with ``positiveModulo(first - t, step) <= range``, i.e.
  inside ``[t_k - range, t_k]`` of the first evaluation time ``t_k >= t``;
* an instant selector: per series and bucket ``(t_{k-1}, t_k]`` only the newest point
  (``argMax``), when it is inside the lookback of ``t_k``.

These are :meth:`SelectHint.keep` in SQL; ``tests/integration/test_query_thinning.py``
compares the two on a chDB store.
"""

from __future__ import annotations

from typing import Any

from monitoring.promql.hints import SelectHint

# the bucket k of a point at ``{t}`` (0 up to the first time, then ceil((t - first) / step))
_BUCKET = (
    "if({t} <= {{h_first:Int64}}, 0, intDiv({t} - {{h_first:Int64}} - 1, {{h_step:Int64}}) + 1)"
)


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


def newest_per_step(t: str, value: str, order: str, table: str, where: str, extra: str = "") -> str:
    """A statement of ``series_id, t, v`` (plus ``extra`` columns): per series and
    step bucket the newest point (ties broken by ``order``, the table's key), when it
    is inside the lookback of its evaluation time."""
    bucket = _BUCKET.format(t=t)
    return (
        f"SELECT series_id, max({t}) AS t, argMax({value}, {order}) AS v{extra} "
        f"FROM {table} WHERE {where} AND {_SPAN.format(t=t)} GROUP BY series_id, {bucket} AS k "
        "HAVING t >= {h_first:Int64} + k * {h_step:Int64} - {h_reach:Int64} "
        "ORDER BY series_id, t"
    )
