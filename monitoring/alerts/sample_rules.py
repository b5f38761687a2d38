"""Rule expressions outside the window subset, evaluated by ``monitoring.promql``.

``compile_rule_expr`` compiles with the window subset (``alerts/promql.py``, exact over
the windows' statistics) when it can; an expression it rejects is parsed by
``monitoring.promql`` instead, checked against what that engine evaluates, and becomes
a ``SampleQuery`` node: at each evaluation time ``T`` it runs ``Engine.instant`` over
the history seen as one sample per window (``window_source.WindowSource``: the
window's ``last`` at its end), so ``rate(c[5m])`` is Prometheus's rate over 10 s
samples and ``histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))`` works over
the SDK's ``_bucket{le}`` series.

What the node reads back in time (ranges, offsets, subqueries and the lookback of
instant selectors, ``monitoring.promql.selectors``) is its ``max_range_ms``, so the
history keeps enough windows. Refused at load, with the reason: a query that does
not parse (the message carries Prometheus's ``line:column`` position), a string or
range-vector result, ``@`` with a fixed time (the history holds only recent windows)
and functions or aggregations the engine does not evaluate.

>>> from monitoring.alerts.history import WindowHistory, WindowRow
>>> h = WindowHistory(10_000, 60_000)
>>> for host, v in (("a", 5.0), ("b", 7.0), ("c", 6.0)):
...     _ = h.add(WindowRow.of("cpu", {"host": host}, 10_000, [v]))
>>> e = compile_rule_expr("topk(1, cpu)")
>>> type(e.root).__name__, e.evaluate(h, 10_000)
('SampleQuery', [((('__name__', 'cpu'), ('host', 'b')), 7.0)])
"""

from __future__ import annotations

from typing import Any

from monitoring.alerts.history import DEFAULT_LOOKBACK_MS, NAME, Labels
from monitoring.alerts.matchers import MatcherError
from monitoring.alerts.promql import (
    CompiledExpr,
    Context,
    EvalError,
    Node,
    UnsupportedExpression,
    compile_expr,
)
from monitoring.alerts.window_source import WindowSource, matcher_test
from monitoring.promql import BadQuery, Engine, PromQLError, parse, selectors
from monitoring.promql import functions as pfn
from monitoring.promql import plan as pp
from monitoring.promql.rangefuncs import RANGE_FUNCTIONS

FUNCTIONS = frozenset(
    [
        *RANGE_FUNCTIONS,
        *pfn.MATH,
        *pfn.DATE_FUNCTIONS,
        "predict_linear",
        "absent",
        "absent_over_time",
        "time",
        "pi",
        "vector",
        "scalar",
        "histogram_quantile",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "timestamp",
        "label_replace",
        "label_join",
        "sort",
        "sort_desc",
    ]
)
"""Functions ``monitoring.promql`` evaluates (``calls.py``): Prometheus 2.42's, without
native histograms."""
AGGREGATIONS = frozenset(
    [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "quantile",
        "topk",
        "bottomk",
        "count_values",
    ]
)
COMPARISONS = frozenset(["==", "!=", ">", "<", ">=", "<="])
MAX_SERIES = 1_000_000
"""Per selector: the history bounds the series already; a rule must not fail on size."""
_SOURCE_KEY = "\0window_source"


class SampleQuery(Node):
    """A whole expression evaluated by ``monitoring.promql`` at ``ctx.t_ms``."""

    def __init__(self, text: str, plan: pp.Node, scalar: bool) -> None:
        self.text = text
        self.plan = plan  # parsed once, at load
        self.is_scalar = scalar
        self.key = "\0promql:" + text  # rules with the same expression share one result

    def eval(self, ctx: Context) -> Any:
        source = ctx.results.get(_SOURCE_KEY)
        if source is None:
            source = ctx.results[_SOURCE_KEY] = WindowSource(ctx.history, ctx.matches)
        h = ctx.history
        engine = Engine(
            lookback_ms=h.lookback_ms, max_series=MAX_SERIES, default_step_ms=h.window_ms
        )
        try:
            res = engine.instant(source, self.plan, ctx.t_ms)
        except PromQLError as e:
            raise EvalError(e.message) from None
        if res.type == "scalar":
            assert res.scalar is not None
            return float(res.scalar[1])
        if res.type != "vector":  # pragma: no cover - refused at load
            raise EvalError(f"the expression returned a {res.type}, not a vector or scalar")
        return [(_labels(lab), float(v[0])) for lab, _, v in res.series]


def _labels(d: dict[str, str]) -> Labels:
    return tuple(sorted(d.items()))


def check_plan(text: str) -> pp.Node:
    """``text``'s plan if the sample engine can evaluate it as a rule, else
    ``UnsupportedExpression`` with the reason (and the position for a parse error)."""
    try:
        plan = parse(text)
    except BadQuery as e:
        raise UnsupportedExpression(e.message) from None
    if plan.kind not in ("vector", "scalar"):
        what: str = plan.kind
        if plan.kind == "matrix":
            what = "range vector: use it inside a function such as rate or avg_over_time"
        raise UnsupportedExpression(
            f"a rule expression must be an instant vector or a scalar, got a {what}"
        )
    for node in pp.walk(plan):
        if isinstance(node, pp.Call) and node.func not in FUNCTIONS:
            raise UnsupportedExpression(f"function '{node.func}' is not supported")
        if isinstance(node, pp.Aggregate) and node.op not in AGGREGATIONS:
            raise UnsupportedExpression(f"aggregation '{node.op}' is not supported")
        at = getattr(node, "at", None)
        if isinstance(node, pp.VectorSel | pp.Subquery) and at is not None and at.kind == "at":
            raise UnsupportedExpression(
                "'@' with a fixed time is not supported in rules: the history holds only "
                "the recent windows (use offset)"
            )
        if isinstance(node, pp.VectorSel):
            for m in node.matchers:
                if m.op in ("=~", "!~"):
                    try:
                        matcher_test(m)
                    except MatcherError as e:
                        raise UnsupportedExpression(str(e)) from None
    return plan


def reach_ms(text: str, lookback_ms: int = DEFAULT_LOOKBACK_MS) -> int:
    """How far before the evaluation time the expression reads (never negative)."""
    return max([0, *(r for _, r in selectors(text, lookback_ms))])


def compile_samples(text: str, lookback_ms: int = DEFAULT_LOOKBACK_MS) -> CompiledExpr:
    """Compile for the sample engine; ``UnsupportedExpression`` when it cannot."""
    plan = check_plan(text)
    names = {
        next((m.value for m in n.matchers if m.name == NAME and m.op == "="), None)
        for n in pp.walk(plan)
        if isinstance(n, pp.VectorSel)
    }
    node = SampleQuery(text, plan, plan.kind == "scalar")
    return CompiledExpr(text, node, reach_ms(text, lookback_ms), frozenset(names))


def compile_rule_expr(text: str) -> CompiledExpr:
    """The window subset when it supports ``text``, else the sample engine."""
    try:
        return compile_expr(text)
    except UnsupportedExpression as subset_error:
        if not isinstance(text, str) or not text.strip():
            raise
        try:
            return compile_samples(text)
        except UnsupportedExpression as e:
            raise e from subset_error


def bool_comparison(text: str) -> str:
    """A top-level comparison ``a > b`` rewritten as ``a > bool b`` (for ``recovery``);
    ``UnsupportedExpression`` when ``text`` is not a comparison on series without bool.

    >>> bool_comparison('max_over_time(x{a=~"b|c"}[5m:] offset 1m) >= on(a) y')
    'max_over_time(x{a=~"b|c"}[5m:] offset 1m) >= bool on(a) y'
    """
    plan = check_plan(text)
    if (
        not isinstance(plan, pp.Binary)
        or plan.op not in COMPARISONS
        or plan.return_bool
        or plan.kind != "vector"
    ):
        raise UnsupportedExpression(
            f"must be a comparison on series without bool, like 'cpu_usage < 70', got {text!r}"
        )
    pos = _top_operator(text)
    if pos is None:  # pragma: no cover - a parsed comparison has one
        raise UnsupportedExpression(f"cannot find the comparison in {text!r}")
    at, op = pos
    out = f"{text[: at + len(op)]} bool{text[at + len(op) :]}"
    check = parse(out)
    if not (isinstance(check, pp.Binary) and check.return_bool and check.op == plan.op):
        raise UnsupportedExpression(f"cannot find the comparison in {text!r}")  # pragma: no cover
    return out


_OPEN, _CLOSE = "([{", ")]}"


def _top_operator(text: str) -> tuple[int, str] | None:
    """The last comparison operator outside brackets, strings and comments (comparisons
    are left-associative and bind looser than arithmetic: that one is the root)."""
    depth, i, n = 0, 0, len(text)
    found: tuple[int, str] | None = None
    while i < n:
        c = text[i]
        if c in "\"'`":
            i += 1
            while i < n and text[i] != c:
                i += 2 if text[i] == "\\" and c != "`" else 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and c in "=!<>":
            two = text[i : i + 2]
            if two in COMPARISONS:
                found = (i, two)
                i += 2
                continue
            if c in "<>":
                found = (i, c)
        i += 1
    return found
