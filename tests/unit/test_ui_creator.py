"""DashboardCreator: panels from metric names by the Prometheus naming conventions,
layouts, bad names refused, saved dashboards valid and loadable."""

from __future__ import annotations

from pathlib import Path

import promql_parser
import pytest

from monitoring.ui import DashboardCreator
from monitoring.ui.dashboards import DashboardError, DashboardStore

METRICS = [
    "http_requests_total",
    {"name": "http_request_duration_seconds", "kind": "histogram"},
    "node_cpu_usage_percent",
    {"name": "node_memory_used_bytes", "group_by": ["host"], "title": "Memory"},
    "model_prediction_confidence_ratio",
]


def test_each_metric_gets_the_panel_its_kind_wants() -> None:
    d = DashboardCreator().create(metrics=METRICS, group_by=["service"])
    panels = list(d.panels())
    assert [p.title for p in panels] == [
        "http_requests_total (rate)",
        "http_request_duration_seconds p50 / p90 / p99",
        "node_cpu_usage_percent",
        "Memory",
        "model_prediction_confidence_ratio",
    ]
    assert [p.unit for p in panels] == ["ops", "seconds", "percent", "bytes", "percentunit"]
    hist = panels[1].queries
    assert [q.legend for q in hist] == ["{{service}} p50", "{{service}} p90", "{{service}} p99"]
    assert hist[2].promql == (
        "histogram_quantile(0.99, sum by (le, service) "
        "(rate(http_request_duration_seconds_bucket[$__rate_interval])))"
    )
    assert panels[3].queries[0].promql == "avg by (host) (node_memory_used_bytes)"
    for p in panels:  # every query parses (with the built-ins filled in)
        for q in p.queries:
            promql_parser.parse(q.promql.replace("$__rate_interval", "1m"))


@pytest.mark.parametrize(
    ("layout", "shape"),
    [("grid", [2, 2, 1]), ("rows", [1] * 5), (3, [3, 2]), ({"columns": 4, "height": 200}, [4, 1])],
)
def test_layouts(layout: object, shape: list[int]) -> None:
    d = DashboardCreator().create(metrics=METRICS, layout=layout)  # type: ignore[arg-type]
    assert [len(r.panels) for r in d.rows] == shape
    assert {p.width for p in d.panels()} == {12 // shape[0]}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"metrics": []}, "1 to 64"),
        ({"metrics": ["up"] * 65}, "1 to 64"),
        ({"metrics": ['up{job="x"}']}, "not a metric name"),
        ({"metrics": ["up) or vector(1"]}, "not a metric name"),
        ({"metrics": ["up"], "group_by": ["a b"]}, "not a label name"),
        ({"metrics": [{"name": "up", "kind": "summary"}]}, "kind"),
        ({"metrics": ["up"], "layout": "mosaic"}, "layout"),
        ({"metrics": ["up"], "layout": 5}, "layout"),
        ({"metrics": ["up"], "layout": {"columns": 2, "height": 5000}}, "height"),
    ],
)
def test_bad_requests_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(DashboardError, match=fragment):
        DashboardCreator().create(**kwargs)  # type: ignore[arg-type]


def test_save_writes_a_dashboard_that_loads_back(tmp_path: Path) -> None:
    store = DashboardStore(tmp_path, None)
    d = DashboardCreator(store).create(metrics=METRICS, title="Made", save="made")
    assert store.get("made") == d
    with pytest.raises(DashboardError, match="a dashboard name"):
        DashboardCreator(store).create(metrics=METRICS, save="../out")
    with pytest.raises(DashboardError, match="no DashboardStore"):
        DashboardCreator().create(metrics=METRICS, save="x")
