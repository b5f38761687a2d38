"""Grafana export of dashboards whose names and values Grafana would mangle: a dashboard
name over Grafana's 40-character uid limit (names here go to 64: the import failed), and
a fixed variable value holding a comma (split into two values)."""

from __future__ import annotations

from monitoring.ui.dashboards import from_data
from monitoring.ui.grafana import grafana_uid, to_grafana

BODY = {"title": "T", "rows": [{"panels": [{"queries": [{"promql": 'up{x=~"$v"}'}]}]}]}


def test_a_long_name_gets_a_uid_grafana_accepts() -> None:
    long_a, long_b = "a" * 63 + "1", "a" * 63 + "2"
    d = from_data(BODY, "t")
    uids = {to_grafana(n, d)["uid"] for n in (long_a, long_b)}
    assert all(len(u) <= 40 for u in uids) and len(uids) == 2  # still distinct
    assert to_grafana("services", d)["uid"] == "services"
    assert grafana_uid("x" * 40) == "x" * 40


def test_fixed_values_with_commas_stay_whole() -> None:
    d = from_data({**BODY, "variables": [{"name": "v", "values": ["a,b", "c"]}]}, "t")
    var = to_grafana("t", d)["templating"]["list"][0]
    assert var["type"] == "custom" and var["query"] == "a\\,b,c"
