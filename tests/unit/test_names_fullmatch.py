"""Names checked by an anchored regex must match whole: ``re.match`` with ``$`` accepts a
trailing newline (``"evil\\n"``), which then reached a file name, a response header or
a query's text. Each check here accepted such a name before."""

from __future__ import annotations

import pytest

from monitoring.query.clickhouse_exec import ClickHouseError, QueryLimits, parse_request
from monitoring.reports.generator import ReportError, ReportGenerator
from monitoring.ui.creator import DashboardCreator
from monitoring.ui.dashboards import DashboardError, Variable, check_name, from_data

TAILS = ["\n", "\r\n"]


@pytest.mark.parametrize("tail", TAILS)
def test_dashboard_names_and_ids(tail: str) -> None:
    with pytest.raises(DashboardError):
        check_name("services" + tail)
    panel = {"id": "p1" + tail, "queries": [{"promql": "up"}]}
    with pytest.raises(DashboardError):
        from_data({"title": "T", "rows": [{"panels": [panel]}]}, "t")
    with pytest.raises(ValueError):
        Variable(name="svc" + tail, label="service")


@pytest.mark.parametrize("tail", TAILS)
def test_creator_metric_and_label_names(tail: str) -> None:
    with pytest.raises(DashboardError):
        DashboardCreator().create(metrics=["up" + tail])
    with pytest.raises(DashboardError):
        DashboardCreator().create(metrics=["up"], group_by=["job" + tail])


@pytest.mark.parametrize("tail", TAILS)
def test_clickhouse_interface_query_id_and_names(tail: str) -> None:
    """The query id is echoed in ``X-ClickHouse-Query-Id``: a newline there broke the
    response (h11 refuses the header) after the query ran."""
    for items in ([("query_id", "q1" + tail)], [("default_format", "JSON" + tail)],
                  [("param_x" + tail, "1")], [("max_threads" + tail, "1")]):  # fmt: skip
        with pytest.raises(ClickHouseError):
            parse_request(items, QueryLimits())


def test_report_template_names() -> None:
    with pytest.raises(ReportError, match="not a file"):
        ReportGenerator().check_template("default\n")  # not the packaged "default"


def test_creator_garbage_is_a_dashboard_error() -> None:
    """A layout height of ``"abc"``, ``inf`` or a list, or a metric that is neither a
    name nor a mapping, raised ValueError, OverflowError or TypeError: not the
    DashboardError the façade documents (and its callers catch)."""
    for layout in ({"height": "abc"}, {"height": float("inf")}, {"height": [1]}):
        with pytest.raises(DashboardError):
            DashboardCreator().create(metrics=["up"], layout=layout)
    for metrics in ([123], [None]):
        with pytest.raises(DashboardError):
            DashboardCreator().create(metrics=metrics)  # type: ignore[arg-type]
