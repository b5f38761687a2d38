"""The documented layout imports, the façades' arguments are validated with a reason, and
``monitoring.logging`` does not shadow the standard library's ``logging``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from monitoring.config import Settings
from monitoring.metrics.samples import Sample

DOCUMENTED = {
    "monitoring.metrics.collector": ["MetricsCollector"],
    "monitoring.metrics.aggregator": ["MetricsAggregator", "AggregationRules"],
    "monitoring.metrics.storage": ["MetricsStorage"],
    "monitoring.metrics.exporter": ["StoreClient"],
    "monitoring.alerts.alert_manager": ["AlertManager"],
    "monitoring.alerts.alert_rules": ["AlertRules"],
    "monitoring.alerts.notification": ["NotificationService"],
    "monitoring.alerts.escalation": ["EscalationPolicy"],
    "monitoring.visualization.dashboard": ["DashboardCreator"],
    "monitoring.visualization.plots": ["PlotGenerator"],
    "monitoring.visualization.reports": ["ReportGenerator"],
    "monitoring.visualization.export": ["to_grafana", "export_dashboard"],
    "monitoring.performance.tracking": ["CallTracker", "HttpMetrics"],
    "monitoring.performance.analysis": ["analyze_service"],
    "monitoring.performance.optimization": ["hot_routes"],
    "monitoring.performance.benchmarking": ["resolve_target", "BenchRecorder"],
    "monitoring.health.health_check": ["CheckResult", "Status"],
    "monitoring.health.status": ["gather", "Heartbeat", "ProcessStatus"],
    "monitoring.health.diagnostics": ["run"],
    "monitoring.health.recovery": ["DeadLetter", "replay_verdict"],
    "monitoring.logging.logger": ["configure_logging", "get_logger"],
    "monitoring.logging.log_processor": [],
    "monitoring.logging.log_analyzer": [],
    "monitoring.logging.log_storage": [],
    "monitoring.utils.config": ["Settings", "from_platform"],
    "monitoring.utils.validation": ["check_series", "InvalidSample"],
    "monitoring.utils.monitoring_utils": ["resolve", "wait_for", "parse_duration"],
    "monitoring.utils.logging": ["configure_logging"],
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_every_documented_module_imports_with_its_names(module: str) -> None:
    m = importlib.import_module(module)
    for name in DOCUMENTED[module]:
        if not hasattr(m, name):
            found = [n for n in dir(m) if not n.startswith("_")][:20]
            pytest.fail(f"{module} has no {name} (has {found})")
    assert dir(m)  # the re-exported names are listed


def test_monitoring_logging_does_not_shadow_the_standard_library() -> None:
    code = (
        "import monitoring.logging, monitoring.utils.logging, monitoring.logging.logger as l\n"
        "import logging, logging.handlers\n"
        "assert logging.__file__.endswith('/logging/__init__.py')\n"
        "assert 'site-packages' not in logging.__file__ and 'monitoring' not in logging.__file__\n"
        "assert callable(l.configure_logging) and logging.getLogger('x')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    pkg = Path(importlib.import_module("monitoring").__file__ or "").parent
    relative = [
        p for p in pkg.rglob("*.py") if "from . import logging" in p.read_text()
    ]  # the one way the package name could shadow the library inside it
    assert relative == []


def local() -> Settings:
    return Settings.load(None).model_copy(
        update={"python_api": Settings.load(None).python_api.model_copy(update={"mode": "local"})}
    )


def samples() -> list[Sample]:
    now = int(time.time() * 1000) // 60_000 * 60_000 - 120_000
    out = []
    for i in range(12):
        for host, base in (("a", 10.0), ("b", 30.0)):
            labels = {"host": host, "dc": "x"}
            out.append(Sample(f'cpu{{dc="x",host="{host}"}}', "cpu", labels, now + i * 5_000,
                              base + i))  # fmt: skip
    return out


def test_aggregation_rules_group_by_statistics_and_metrics() -> None:
    from monitoring.metrics.aggregator import MetricsAggregator

    agg = MetricsAggregator(local())
    got = agg.aggregate(samples(), {"windows": ["1m"], "group_by": ["dc"],
                                    "statistics": ["count", "min", "max"]})  # fmt: skip
    assert [(g.series, dict(g.values)) for g in got] == [
        ('cpu{dc="x"}', {"count": 24, "min": 10.0, "max": 41.0}),
    ]
    assert agg.aggregate(samples(), {"metrics": ["mem*"]}) == []
    per_series = agg.aggregate(samples(), {"windows": ["1m"], "statistics": ["mean"]})
    assert sorted(g.values["mean"] for g in per_series) == [15.5, 35.5]


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        ({"windows": ["500ms"]}, "at least 1s"),
        ({"windows": ["1m", "60s"]}, "distinct"),
        ({"statistics": ["median"]}, "Input should be"),
        ({"group_by": ["bad-label"]}, "not a label name"),
        ({"group_by": ["dc\n"]}, "not a label name"),
        ({"window": ["1m"]}, "Extra inputs are not permitted"),
    ],
)
def test_aggregation_rules_are_validated(rules: dict[str, object], reason: str) -> None:
    from monitoring.metrics.aggregator import MetricsAggregator

    with pytest.raises(ValueError, match=reason):
        MetricsAggregator(local()).aggregate(samples(), rules)


def test_pipeline_mode_refuses_what_the_store_cannot_answer() -> None:
    from monitoring.metrics.aggregator import MetricsAggregator

    agg = MetricsAggregator(Settings.load(None), mode="pipeline")
    with pytest.raises(ValueError, match="recording rule"):
        agg.aggregate(samples(), {"group_by": ["dc"]})
    with pytest.raises(ValueError, match="the worker computes"):
        agg.aggregate(samples(), {"windows": ["5m"]})
    with pytest.raises(ValueError, match="mode must be"):
        MetricsAggregator(Settings.load(None), mode="remote")


@pytest.mark.parametrize(
    ("thresholds", "conditions", "reason"),
    [
        ({"cpu": "eighty"}, None, "a number"),
        ({"cpu": {"above": 1, "below": 0}}, None, "one of 'above' or 'below'"),
        ({"cpu": 80}, {"cpu": {"for": "5m"}}, "unknown key"),
        ({"cpu": 80}, {"mem": {"duration": "5m"}}, "have no threshold"),
        ({"cpu": 80}, {"cpu": {"duration": "five"}}, "cpu_high"),
        (None, [{"name": "x", "condition": "rate(("}], "rule 'x'"),
    ],
)
def test_thresholds_and_conditions_are_validated(
    thresholds: dict[str, object] | None, conditions: object, reason: str
) -> None:
    from monitoring.alerts.alert_rules import AlertRules

    with pytest.raises(ValueError, match=reason):
        AlertRules(Settings.load(None)).define_rules(thresholds, conditions)  # type: ignore[arg-type]


def test_below_thresholds_and_whole_rules() -> None:
    from monitoring.alerts.alert_rules import AlertRules

    rules = AlertRules(Settings.load(None)).define_rules(
        {"disk_free_ratio": {"below": 0.1}},
        [{"alert": "Down", "expr": "up == 0", "for": "1m"}],
    )
    assert [(r.name, r.expr, r.for_ms) for r in rules] == [
        ("disk_free_ratio_low", "disk_free_ratio < 0.1", 0),
        ("Down", "up == 0", 60_000),
    ]


def test_channels_are_resolved_or_refused_with_a_reason(tmp_path: Path) -> None:
    from monitoring.alerts.notification import NotificationService

    f = tmp_path / "am.yml"
    f.write_text(
        "route: {receiver: hooks}\nreceivers:\n  - name: hooks\n"
        "    webhook_configs: [{url: 'http://127.0.0.1:1/x'}]\n"
    )
    base = Settings.load(None)
    s = base.model_copy(update={"notifier": base.notifier.model_copy(update={"config": str(f)})})
    svc = NotificationService(s, mode="local")
    assert len(svc.receiver(["webhook"]).webhook_configs) == 1
    assert len(svc.receiver(["hooks"]).webhook_configs) == 1
    inline = svc.receiver([{"type": "slack", "api_url": "http://127.0.0.1:1/s"}])
    assert len(inline.slack_configs) == 1
    for channels, reason in (
        (["email"], "no receiver of .* has email_configs"),
        (["carrier-pigeon"], "not a type"),
        ([{"type": "fax"}], "'type' is one of"),
        ([{"type": "slack"}], "api_url"),
        ([], "1 to 32"),
        (["webhook"] * 33, "1 to 32"),
    ):
        with pytest.raises(ValueError, match=reason):
            svc.receiver(channels)


def test_collector_local_mode_validates_and_counts(tmp_path: Path) -> None:
    from monitoring.metrics.collector import MetricsCollector

    mc = MetricsCollector(local())
    got = mc.collect(sources=[lambda: {"ok": 1, "bad name": 2, "inf": float("inf")}])
    assert [s.name for s in got] == ["ok"]  # the contract refuses the others, counted
    assert mc.collect() == 0  # no instruments in local mode
    with pytest.raises(TypeError, match="options of the pipeline"):
        MetricsCollector(local(), mode="local", batch=False)
    with pytest.raises(ValueError, match="rounds > 1 needs an interval"):
        mc.collect(sources=[lambda: {}], rounds=2)
    with pytest.raises(AttributeError, match="local mode has no producer"):
        mc.record("x", 1.0)
    ticks = mc.collect(sources=[lambda: {"t": 1}], interval=0.01, rounds=3, timestamp_ms=10**12)
    assert [s.timestamp_ms for s in ticks] == [10**12, 10**12 + 10, 10**12 + 20]


def test_pipeline_collector_says_when_kafka_did_not_take_the_samples() -> None:
    from monitoring.facade.common import ResultTimeout
    from monitoring.metrics.collector import MetricsCollector

    base = Settings.load(None)
    s = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}),
            "python_api": base.python_api.model_copy(update={"wait": timedelta(seconds=1)}),
        }
    )
    mc = MetricsCollector(s, mode="pipeline", num_partitions=1, metadata_timeout=0.5)
    try:
        with pytest.raises(ResultTimeout, match=r"1 of 1 samples not acknowledged by Kafka"):
            mc.collect(sources=[lambda: {"up": 1}])
    finally:
        mc.close(timeout=0.1)
