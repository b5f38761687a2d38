"""What the PromQL subset rejects at load time, and how it says so."""

from __future__ import annotations

import pytest

from monitoring.alerts.promql import UnsupportedExpression, compile_expr


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("cpu offset 5m", "'offset' is not supported"),
        ("avg_over_time(cpu[5m] offset 1m)", "'offset' is not supported"),
        ("cpu @ 1700000000", "'@' modifier is not supported"),
        ("max_over_time(cpu[5m:1m])", "subqueries are not supported"),
        ("cpu[5m]", "must be the argument of a range function"),
        ("histogram_quantile(0.9, cpu)", "function 'histogram_quantile' is not supported"),
        ('label_replace(cpu, "a", "b", "c", "d")', "function 'label_replace' is not supported"),
        ("time()", "function 'time' is not supported"),
        ("topk(3, cpu)", "aggregation 'topk' is not supported"),
        ("stddev(cpu)", "aggregation 'stddev' is not supported"),
        ("quantile(0.9, cpu)", "aggregation 'quantile' is not supported"),
        ("cpu * on(host) group_left(dc) info", "group_left/group_right"),
        ("cpu atan2 mem", "operator 'atan2' is not supported"),
        ('"text"', "string literals are not supported"),
        ('cpu{host=~"(?<x"}', "cannot parse|bad regex"),
        ("nosuchfunc(cpu)", "unknown function with name 'nosuchfunc'"),
        ("rate(cpu)", "expected type matrix"),
        ("sum(cpu[5m])", "expected type vector"),
        ("cpu >", "cannot parse"),
        ("1 > 2", "comparisons between scalars must use BOOL"),
        ("", "empty"),
    ],
)
def test_rejected_with_a_clear_message(expr: str, message: str) -> None:
    with pytest.raises(UnsupportedExpression, match=message):
        compile_expr(expr)


@pytest.mark.parametrize(
    "expr",
    [
        'sum by (service) (rate(http_errors_total{code=~"5.."}[5m])) > 0.1',
        "avg_over_time(cpu[1m]) > 80 and on(host) mem > 90 unless maint == 1",
        "-cpu + 2 ^ 2 % 3 >= bool 1",
        "count without (host) (up == 0) > 2",
        "predict_linear(disk[1h], 4 * 3600) < 0",
        "quantile_over_time(0.99, lat[5m]) > 0.5 or absent(lat)",
        'absent_over_time(cpu{env="prod"}[10m])',
        "(cpu)",
    ],
)
def test_supported_expressions_compile(expr: str) -> None:
    compile_expr(expr)


def test_compiled_expression_reports_its_longest_range_and_metrics() -> None:
    c = compile_expr("rate(a[5m]) > 1 and on(x) avg_over_time(b[1h]) < 2 or c")
    assert c.max_range_ms == 3_600_000
    assert c.metric_names == frozenset({"a", "b", "c"})
    assert compile_expr("1 + 1 > bool 1").is_scalar
