"""The platform's three documented examples, as docs/python-api.md writes them, run in
both modes and checked against what they must return: the aggregates of the samples
(an oracle computed here), the alert for the rule crossed, the e-mail received by a real
SMTP server, a dashboard file served by the UI, a PNG plot and a PDF report. The local
run is configured by the platform's example configuration (examples/monitoring.yaml),
which also drives a demo of its own rules and channels."""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fixtures.notify import SMTP_PASSWORD, SMTP_USER, HttpReceiver, SmtpSink

from monitoring.config import Settings
from monitoring.dev.deploy import LocalDeployment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "docs" / "python-api.md"
EXAMPLE_CONFIG = ROOT / "examples" / "monitoring.yaml"
PNG = b"\x89PNG\r\n\x1a\n"


def wait_until(cond: Callable[[], Any], what: str, timeout_s: float = 60) -> None:
    """Poll ``cond`` until it holds (recorded after the answer the sender saw)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.05)  # polling a condition


def page_blocks() -> list[str]:
    """The ``python`` blocks of the Python API page, in order."""
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def run_page() -> dict[str, Any]:
    """Run every block of the page in one namespace (as a reader would, in order)."""
    ns: dict[str, Any] = {"__name__": "python_api_page"}
    for block in page_blocks():
        exec(compile(block, str(PAGE), "exec"), ns)
    return ns


def notifier_file(tmp_path: Path, smtp: SmtpSink, slack: str, pager: str) -> Path:
    """An Alertmanager-shaped notifier config with e-mail, Slack and PagerDuty receivers."""
    doc = {
        "route": {"receiver": "mail"},
        "receivers": [
            {"name": "mail", "email_configs": [{
                "to": "oncall@example.com", "from": "monitoring@example.com",
                "smarthost": f"{smtp.host}:{smtp.port}", "auth_username": SMTP_USER,
                "auth_password": SMTP_PASSWORD, "require_tls": False}]},
            {"name": "chat", "slack_configs": [{"api_url": slack, "channel": "#ops"}]},
            {"name": "pager", "pagerduty_configs": [{"routing_key": "pd-key-1", "url": pager}]},
        ],
    }  # fmt: skip
    p = tmp_path / "notifier.yml"
    p.write_text(yaml.safe_dump(doc))
    return p


def oracle(samples: list[Any], windows_ms: tuple[int, ...]) -> dict[tuple[str, int, int], Any]:
    """(series, window, start) -> the samples' values in arrival order."""
    out: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    for s in samples:
        for w in windows_ms:
            out[(s.series, w, s.timestamp_ms - s.timestamp_ms % w)].append(s.value)
    return out


def check_aggregates(ns: dict[str, Any], origin: str) -> None:
    mine = [s for s in ns["metrics"] if s.name in ("cpu_usage", "memory_usage")]
    assert len(mine) == 180  # 60 readings of three series
    assert any(s.name.startswith("node_") for s in ns["metrics"])  # the "system" source
    expected = oracle(mine, (10_000, 60_000))
    got = {(a.series, a.window_ms, a.window_start_ms): a for a in ns["aggregated_metrics"]}
    assert set(got) == set(expected)
    for key, values in expected.items():
        a = got[key]
        assert a.origin == origin
        v = a.values
        assert (v["count"], v["min"], v["max"], v["last"]) == (
            len(values), min(values), max(values), values[-1],
        ), key  # fmt: skip
        assert math.isclose(v["sum"], sum(values)) and math.isclose(
            v["mean"], sum(values) / len(values)
        ), key
        ranked = sorted(values)
        exact = ranked[math.floor(0.99 * (len(ranked) - 1))]  # the pipeline test's oracle
        assert math.isclose(v["p99"], exact, rel_tol=0.0101), (key, v["p99"], exact)


def check_alerts(ns: dict[str, Any], smtp: SmtpSink) -> None:
    rules = ns["rules"]
    assert [(r.name, r.expr, r.for_ms) for r in rules] == [
        ("cpu_usage_high", "cpu_usage > 80", 300_000),
        ("memory_usage_high", "memory_usage > 90", 300_000),
    ]
    alerts = ns["alerts"]
    assert [(a.status, a.labels["alertname"], a.labels["host"]) for a in alerts] == [
        ("firing", "cpu_usage_high", "web-1")
    ]
    first_end = ns["end_ms"] - 600_000 + 10_000  # the first 10 s window's end
    assert alerts[0].starts_at_ms == first_end + 300_000  # held for the 5 minutes
    assert alerts[0].annotations["summary"].startswith("CPU ")
    wait_until(lambda: len(smtp.envelopes) == 1, "the e-mail")
    sender, to, msg = smtp.envelopes[0]
    assert (sender, to) == ("monitoring@example.com", ["oncall@example.com"])
    assert "cpu_usage_high" in msg["Subject"] and smtp.logins == [SMTP_USER]


def check_visualization(ns: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    from monitoring.ui.server import UiServer

    saved = ns["dashboard_creator"].saved
    assert saved == Path(settings.ui.dashboards_dir).resolve() / "metrics.yaml"
    assert [p.title for p in ns["dashboard"].panels()] == ["cpu_usage", "memory_usage"]
    ui = UiServer(settings, host="127.0.0.1", port=0).start()
    try:
        r = httpx.get(f"{ui.url}/api/ui/dashboards/metrics", timeout=30)
        assert r.status_code == 200, r.text
        served = r.json()
        assert "cpu_usage" in str(served) and "memory_usage" in str(served)
    finally:
        ui.stop()
    plot = ns["plots"]
    assert plot.format == "png" and plot.content.startswith(PNG) and plot.series == 3
    assert plot.save(tmp_path / "plot.png").stat().st_size == len(plot.content)
    report = ns["report"]
    assert report.format == settings.reporting.format
    assert 'cpu_usage{host="web-1"}' in report.html.replace("&#34;", '"')
    assert report.save(tmp_path / f"report.{report.format}").stat().st_size > 1000
    if report.format == "pdf":
        assert report.content.startswith(b"%PDF")


@pytest.fixture
def receivers(
    http_receiver_factory: Callable[..., HttpReceiver],
) -> Iterator[tuple[HttpReceiver, HttpReceiver]]:
    yield http_receiver_factory(), http_receiver_factory()


@pytest.mark.no_broker
def test_examples_local_mode_with_the_example_configuration(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpSink,
    receivers: tuple[HttpReceiver, HttpReceiver],
) -> None:
    slack, pager = receivers
    notifier = notifier_file(tmp_path, smtp_server, f"{slack.url}/slack", f"{pager.url}/pd")
    monkeypatch.setenv("MONITORING_CONFIG", str(EXAMPLE_CONFIG))
    monkeypatch.setenv("MONITORING_PYTHON_API__MODE", "local")
    monkeypatch.setenv("MONITORING_STORAGE__DSN", f"chdb://{tmp_path / 'chdb'}")
    monkeypatch.setenv("MONITORING_NOTIFIER__CONFIG", str(notifier))
    monkeypatch.setenv("MONITORING_UI__DASHBOARDS_DIR", str(tmp_path / "dashboards"))
    settings = Settings.load()
    assert settings.reporting.format == "pdf" and settings.python_api.mode == "local"

    ns = run_page()

    check_aggregates(ns, "local")
    stored = ns["storage"].query(
        "SELECT count(), max(toUInt64(create_table_query LIKE '%toIntervalSecond(2592000)%')) "
        "FROM aggregates FINAL, system.tables WHERE system.tables.name = 'aggregates'"
    )
    assert stored == [(len(ns["aggregated_metrics"]), 1)]  # all rows, kept 30 days
    check_alerts(ns, smtp_server)
    check_visualization(ns, settings, tmp_path)
    ns["storage"].close()

    # the example configuration's own rules and channels: a short demo run
    from monitoring.alerts.alert_manager import AlertManager
    from monitoring.alerts.alert_rules import AlertRules
    from monitoring.alerts.notification import NotificationService

    rules = AlertRules().define_rules()
    assert [(r.name, r.expr, r.for_ms) for r in rules] == [
        ("high_cpu", "cpu_usage > 80", 300_000),
        ("high_memory", "memory_usage > 90", 300_000),
    ]
    alerts = AlertManager().monitor(metrics=ns["aggregated_metrics"], rules=rules)
    assert [(a.labels["alertname"], a.labels["host"]) for a in alerts] == [("high_cpu", "web-1")]
    records = NotificationService().send_notifications(alerts=alerts)
    assert sorted((r.channel, r.outcome) for r in records) == [
        ("email", "delivered"), ("pagerduty", "delivered"), ("slack", "delivered"),
    ]  # fmt: skip
    wait_until(
        lambda: len(smtp_server.envelopes) == 2 and slack.bodies and pager.bodies, "deliveries"
    )
    assert "high_cpu" in str(slack.bodies[0]) and "high_cpu" in str(pager.bodies[0])


def test_examples_pipeline_mode(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pipeline: LocalDeployment,
    smtp_server: SmtpSink,
    receivers: tuple[HttpReceiver, HttpReceiver],
) -> None:
    slack, pager = receivers
    notifier = notifier_file(tmp_path, smtp_server, f"{slack.url}/slack", f"{pager.url}/pd")
    pipeline.start_store()
    pipeline.start("worker", "worker")
    for k, v in pipeline.env.items():
        if k.startswith("MONITORING_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("MONITORING_PYTHON_API__MODE", "pipeline")
    monkeypatch.setenv("MONITORING_PYTHON_API__WAIT", "120s")
    monkeypatch.setenv("MONITORING_NOTIFIER__CONFIG", str(notifier))
    monkeypatch.setenv("MONITORING_UI__DASHBOARDS_DIR", str(tmp_path / "dashboards"))
    settings = Settings.load()
    assert settings.python_api.mode == "pipeline"

    ns = run_page()
    try:
        check_aggregates(ns, "pipeline")
        check_alerts(ns, smtp_server)
        check_visualization(ns, settings, tmp_path)
        # windows computed in this process go to the aggregates topic; the store keeps them
        from monitoring.metrics.aggregator import MetricsAggregator
        from monitoring.metrics.samples import Sample
        from monitoring.metrics.storage import MetricsStorage

        t0 = ns["end_ms"] - 60_000
        extra = [Sample('offline_job{job="x"}', "offline_job", {"job": "x"}, t0 + i * 1000,
                        float(i)) for i in range(20)]  # fmt: skip
        computed = MetricsAggregator(mode="local").aggregate(extra, {"windows": ["10s"]})
        assert MetricsStorage().store(metrics=computed, retention="7d").aggregates == 2
        assert pipeline.query(
            "SELECT count(), sum(count) FROM aggregates FINAL WHERE name = 'offline_job'"
        ) == [[2, 20]]
        # the delivery log reached the store, as the notifier's own does
        pipeline.wait(
            lambda: (
                pipeline.query("SELECT outcome, channel FROM deliveries FINAL")
                == [["delivered", "email"]]
            ),
            60,
            "the delivery in the deliveries table",
        )
    finally:
        ns["collector"].close()
