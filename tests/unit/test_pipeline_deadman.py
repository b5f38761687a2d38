"""Issue 13, "Also": the deadman rule shipped on the pipeline's own output
(``PipelineNoAnomalyScores`` in infra/rules/example.rules.yml) loads, stays quiet while
the worker writes ``anomaly_score`` and fires once none came for five minutes. (The
Watchdog, which covers the evaluator and the notifier: tests/integration/test_watchdog_e2e.py.)"""

from __future__ import annotations

from pathlib import Path

import yaml

from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.promql import compile_expr
from monitoring.alerts.rules import load_rule_file

RULES = Path(__file__).resolve().parents[2] / "infra" / "rules" / "example.rules.yml"
W = 10_000


def test_the_deadman_on_anomaly_scores_fires_only_when_they_stop() -> None:
    loaded = load_rule_file(RULES)
    assert not loaded.errors and any(r.name == "PipelineNoAnomalyScores" for r in loaded.rules)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = next(
        r for g in groups for r in g["rules"] if r.get("alert") == "PipelineNoAnomalyScores"
    )
    expr = compile_expr(rule["expr"])
    h = WindowHistory(W, retention_ms=600_000)
    scores_until_s = 600  # the worker scores every window until 10:00, then stops
    for end_s in range(10, scores_until_s + 1, 10):
        h.add(WindowRow.of("anomaly_score", {"metric": "cpu", "host": "a"}, end_s * 1000, [0.1]))

    def fires(t_s: int) -> bool:
        got = expr.evaluate(h, t_s * 1000)
        assert isinstance(got, list)  # a vector, not a scalar
        return bool(got)

    assert not any(fires(t) for t in range(60, scores_until_s + 300, 10))
    assert fires(scores_until_s + 310) and fires(scores_until_s + 900)
