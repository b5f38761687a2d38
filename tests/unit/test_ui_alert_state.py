"""The Alerts dashboard's incident panels run the store's alert-state SQL
(``monitoring.query.alert_state``) as written there, with the limit filled in."""

from __future__ import annotations

from monitoring.query.alert_state import DASHBOARD_INCIDENTS, DASHBOARD_MTTA
from monitoring.ui.dashboards import SHIPPED_DIR, DashboardStore


def _words(sql: str) -> list[str]:
    return sql.split()


def test_the_alerts_dashboard_holds_the_alert_state_sql() -> None:
    d = DashboardStore("/nonexistent", SHIPPED_DIR).get("alerts")
    assert d is not None
    mtta, incidents = d.panel("mtta_mttr"), d.panel("incidents")
    assert mtta is not None and incidents is not None
    assert _words(mtta.queries[0].sql) == _words(DASHBOARD_MTTA)
    assert _words(incidents.queries[0].sql) == _words(DASHBOARD_INCIDENTS)
    for sql in (DASHBOARD_MTTA, DASHBOARD_INCIDENTS):  # only what a dashboard binds
        assert "{limit:" not in sql and "{start_ms:Int64}" in sql and "{end_ms:Int64}" in sql
