"""The evaluation-cost bench helper runs on a small load (its numbers come from the bench)."""

from __future__ import annotations

from monitoring.alerts.rules import load_rules_text
from monitoring.bench.alerts import make_rules, make_series, run_eval_bench


def test_bench_load_is_valid_and_runs() -> None:
    rules = make_rules(200, seed=1)
    assert len({r.key for r in rules}) == 200
    assert {r.compiled.max_range_ms for r in rules} >= {0, 60_000, 300_000}
    series = make_series(1000)
    assert len({key for key, _, _ in series}) == 1000
    assert len({name for _, name, _ in series}) == 10
    res = run_eval_bench(rules=40, series=500, closes=2, seed=1)
    assert (res.rules, res.series, res.closes) == (40, 500, 2)
    assert res.eval_ms_per_close > 0 and res.eval_ms_max >= res.eval_ms_per_close


def test_bench_rules_round_trip_through_the_loader() -> None:
    """The generated expressions are ordinary rule-file expressions."""
    for r in make_rules(50, seed=2):
        text = f"groups: [{{name: g, rules: [{{alert: {r.name}, expr: '{r.expr}'}}]}}]"
        assert load_rules_text(text).errors == []
