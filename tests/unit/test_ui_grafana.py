"""Grafana dashboard JSON from every shipped dashboard: the shapes Grafana's dashboard
model (schema 39) wants. Without a Grafana here, what is checked is the model's shape
(ids, grid, targets, templating, inputs), not that Grafana renders it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from monitoring.config import Settings
from monitoring.ui.dashboards import SHIPPED_DIR, DashboardStore, from_data
from monitoring.ui.grafana import SCHEMA_VERSION, grafana_sql, to_grafana
from monitoring.ui.server import UiServer
from monitoring.ui.store import StoreClient

STORE = DashboardStore("/nonexistent", SHIPPED_DIR)
PANEL_TYPES = {"timeseries", "barchart", "stat", "gauge", "table", "heatmap", "logs", "row"}


def grid_overlaps(panels: list[dict[str, Any]]) -> list[tuple[int, int]]:
    cells: dict[tuple[int, int], int] = {}
    clashes = []
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    clashes.append((cells[(x, y)], p["id"]))
                cells[(x, y)] = p["id"]
    return clashes


@pytest.mark.parametrize("name", STORE.names())
def test_every_shipped_dashboard_exports_to_grafana_s_model(name: str) -> None:
    d = STORE.get(name)
    assert d is not None
    g = json.loads(json.dumps(to_grafana(name, d)))  # JSON-able
    assert g["schemaVersion"] == SCHEMA_VERSION and g["uid"] == name and g["title"] == d.title
    assert g["time"]["to"] == "now" and re.fullmatch(r"now-\d+[smhd]", g["time"]["from"])
    assert {i["name"] for i in g["__inputs"]} == {"DS_PROMETHEUS", "DS_CLICKHOUSE"}
    ids = [p["id"] for p in g["panels"]]
    assert len(ids) == len(set(ids))
    assert not grid_overlaps(g["panels"])
    charts = [p for p in g["panels"] if p["type"] != "row"]
    assert len(charts) == len(list(d.panels()))
    for p in g["panels"]:
        assert p["type"] in PANEL_TYPES
        gp = p["gridPos"]
        assert gp["x"] >= 0 and gp["x"] + gp["w"] <= 24 and gp["h"] >= 1
    for p in charts:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in ("${DS_PROMETHEUS}", "${DS_CLICKHOUSE}")
            if "expr" in t:
                assert t["range"] != t["instant"]
            else:
                assert not re.search(r"(?<!\$)\{[A-Za-z_]\w*:[A-Za-z]", t["rawSql"]), t["rawSql"]
    for v in g["templating"]["list"]:
        assert v["type"] in ("query", "custom", "textbox")
        if v["type"] == "query" and v["datasource"]["type"] == "prometheus":
            assert v["query"]["query"].startswith("label_values(")


def test_sql_parameters_become_grafana_variables() -> None:
    sql = "SELECT {step_s:UInt32} FROM t WHERE a = {a:String} AND ts < {end_ms:Int64}"
    assert grafana_sql(sql) == (
        "SELECT intDiv($__interval_ms, 1000) FROM t WHERE a = ${a:sqlstring} AND ts < $__to"
    )


def test_all_is_a_regex_for_promql_and_empty_for_sql() -> None:
    d = from_data({
        "title": "T",
        "variables": [{"name": "p", "label": "job"}, {"name": "s", "values": ["x"]}],
        "rows": [{"panels": [{"queries": [{"promql": 'up{job=~"$p"}'},
                                          {"sql": "SELECT {s:String}"}]}]}],
    }, "t")  # fmt: skip
    p, s = to_grafana("t", d)["templating"]["list"]
    assert (p["allValue"], s["allValue"]) == (".*", "")


def test_the_route_serves_it_as_a_download(tmp_path: Path) -> None:
    base = Settings.load(None)
    ui = base.ui.model_copy(update={"dashboards_dir": str(tmp_path)})
    server = UiServer(base.model_copy(update={"ui": ui}), CollectorRegistry(), "127.0.0.1", 0,
                      store=StoreClient("http://store"))  # fmt: skip
    with TestClient(server.app, base_url="http://127.0.0.1") as c:
        resp = c.get("/api/ui/dashboards/services/grafana")
        assert resp.status_code == 200
        assert resp.headers["content-disposition"] == 'attachment; filename="services.grafana.json"'
        assert resp.json()["title"] == "Services"
        assert c.get("/api/ui/dashboards/nope/grafana").status_code == 404
    server.server.sock.close()
