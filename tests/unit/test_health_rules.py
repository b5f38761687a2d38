"""The shipped health rules (infra/rules/health.rules.yml) load, and each fires on the
series ``monitoring status --export`` writes for a failing deployment and stays quiet on
a healthy one: reports made over time, turned into samples by ``series_of``, into
windows as the aggregation would close them, evaluated as the evaluator does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.rules import Rule, load_rule_file
from monitoring.ops.status import Heartbeat, LagRow, StatusLimits, StatusReport, series_of

RULES = Path(__file__).resolve().parents[2] / "infra" / "rules" / "health.rules.yml"
W = 10_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % W
EVERY = 15_000  # the exporter's --watch
LIMITS = StatusLimits()


def rules() -> dict[str, Rule]:
    ruleset = load_rule_file(RULES)
    assert ruleset.errors == []
    return {r.name: r for r in ruleset.rules}


def test_the_rules_load() -> None:
    assert sorted(rules()) == [
        "ConsumerLagGrowing",
        "DeadLettersRising",
        "NoWindowsClosing",
        "ProcessDown",
        "StatusExporterSilent",
        "StoreFailing",
    ]


def beat(kind: str, now: int, figures: dict[str, Any], age_ms: int = 1_000) -> Heartbeat:
    return Heartbeat(kind, f"{kind}@h:1", "h", 1, "0.1.0", T0 - 60_000, now - age_ms, 5000, True,
                     (), figures)  # fmt: skip


Scenario = Callable[[int], tuple[StatusReport, int]]


def healthy(i: int) -> tuple[StatusReport, int]:
    now = T0 + i * EVERY
    report = StatusReport(
        now,
        heartbeats=[
            beat("store", now, {"status": "ok", "pending_rows": 5}),
            beat("worker", now, {"aggregation.closed_through_ms": {"0": now - 12_000}}),
        ],
        lag=[LagRow("m.worker", "m.metrics.samples", 0, 100, 120, 20 + i % 3)],
    )
    return report, 40  # dead letters: none since the start


def failing(i: int) -> tuple[StatusReport, int]:
    now = T0 + i * EVERY
    closed = T0 - 60_000  # the worker's windows stopped closing at the start
    report = StatusReport(
        now,
        heartbeats=[
            beat("store", now, {"status": "degraded", "pending_rows": 100_000}),
            beat(
                "worker",
                now,
                {"aggregation.closed_through_ms": {"0": closed}},
                age_ms=now - T0 + 1_000,
            ),
        ],
        lag=[LagRow("m.worker", "m.metrics.samples", 0, 100, 20_000 + 500 * i, 19_900 + 500 * i)],
    )
    return report, 40 + i // 4  # a dead letter every minute


def history(scenario: Scenario, steps: int) -> WindowHistory:
    """The exporter's samples in 10 s windows (one sample each: the exporter writes every
    15 s, so some windows are empty, as they would be)."""
    h = WindowHistory(W, retention_ms=3_600_000)
    for i in range(steps):
        report, dead_total = scenario(i)
        for name, labels, value, _kind in series_of(report, LIMITS, dead_total):
            end = report.now_ms - report.now_ms % W + W
            h.add(WindowRow.of(name, labels, end, [value]))
    return h


def firing(rule: Rule, h: WindowHistory, t_ms: int) -> list[dict[str, str]]:
    value = rule.compiled.evaluate(h, t_ms)
    assert isinstance(value, list)  # an instant vector
    return [dict(labels) for labels, _v in value]


STEPS = 60  # 15 minutes of exports
END = T0 + (STEPS - 1) * EVERY - (T0 + (STEPS - 1) * EVERY) % W + W


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("ConsumerLagGrowing", {"consumergroup": "m.worker", "partition": "0"}),
        ("DeadLettersRising", {}),
        ("StoreFailing", {"process": "store@h:1"}),
        ("NoWindowsClosing", {"partition": "0"}),
        ("ProcessDown", {"kind": "worker", "process": "worker@h:1"}),
    ],
)
def test_each_rule_fires_on_a_failing_deployment_only(name: str, labels: dict[str, str]) -> None:
    rule = rules()[name]
    bad = firing(rule, history(failing, STEPS), END)
    assert len(bad) == 1 and labels.items() <= bad[0].items(), bad
    assert firing(rule, history(healthy, STEPS), END) == []


def test_lag_must_keep_growing_for_five_minutes() -> None:
    assert rules()["ConsumerLagGrowing"].for_ms == 300_000


def test_the_exporters_deadman_fires_only_once_its_figures_stop() -> None:
    """StatusExporterSilent: quiet while the exporter writes (healthy or failing), firing
    once nothing came for five minutes, quiet again when it writes again."""
    rule = rules()["StatusExporterSilent"]
    assert firing(rule, history(healthy, STEPS), END) == []
    assert firing(rule, history(failing, STEPS), END) == []
    h = history(healthy, STEPS)  # the exporter's last write is just before END
    assert firing(rule, h, END + 4 * 60_000) == []
    assert firing(rule, h, END + 6 * 60_000) == [{}]
