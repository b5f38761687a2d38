"""A dashboard as Grafana's dashboard JSON (schema version 39), for a team that already
runs Grafana: PromQL queries on a Prometheus data source (the store's Prometheus API),
SQL on the ClickHouse data source (``grafana-clickhouse-datasource``). Both are
``__inputs`` that Grafana asks for on import.

What changes on the way: a panel is ``width * 2`` of Grafana's 24 columns and
``height / 30`` rows of 30 px; ``{start_ms:Int64}``, ``{end_ms:Int64}`` and
``{step_s:UInt32}`` become ``$__from``, ``$__to`` and ``intDiv($__interval_ms, 1000)``;
a ``{var:String}`` parameter becomes ``${var:sqlstring}`` (Grafana quotes and escapes
it); a variable's "All" is ``.*`` when PromQL uses it, ``''`` when only SQL does.

>>> from monitoring.ui.dashboards import from_data
>>> d = from_data({"title": "T", "rows": [{"panels": [{"queries": [{"promql": "up"}]}]}]}, "t")
>>> g = to_grafana("t", d)
>>> g["schemaVersion"], g["panels"][1]["targets"][0]["expr"]
(39, 'up')
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from monitoring.ui.dashboards import Dashboard, Panel, Variable

SCHEMA_VERSION = 39
PROMETHEUS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "${DS_CLICKHOUSE}"}
INPUTS = [
    {"name": "DS_PROMETHEUS", "label": "Prometheus (the store's Prometheus API)",
     "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"},
    {"name": "DS_CLICKHOUSE", "label": "ClickHouse (the store's HTTP interface)",
     "type": "datasource", "pluginId": "grafana-clickhouse-datasource",
     "pluginName": "ClickHouse"},
]  # fmt: skip
PANEL_TYPES = {
    "timeseries": "timeseries", "bar": "barchart", "scatter": "timeseries", "stat": "stat",
    "gauge": "gauge", "table": "table", "heatmap": "heatmap", "logs": "logs", "alerts": "table",
}  # fmt: skip
UNITS = {
    "none": "none", "percent": "percent", "percentunit": "percentunit", "seconds": "s",
    "ms": "ms", "bytes": "bytes", "Bps": "Bps", "reqps": "reqps", "ops": "ops", "short": "short",
}  # fmt: skip
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[^{}]+\}")
_BUILTIN_SQL = {
    "start_ms": "$__from",
    "end_ms": "$__to",
    "step_s": "intDiv($__interval_ms, 1000)",
}
ROW_HEIGHT_PX = 30
MAX_UID = 40  # Grafana's limit on a dashboard's uid


def grafana_sql(sql: str) -> str:
    """An SQL query with its ``{name:Type}`` parameters as Grafana variables.

    >>> grafana_sql("SELECT 1 WHERE s = {service:String} AND t > {start_ms:Int64}")
    'SELECT 1 WHERE s = ${service:sqlstring} AND t > $__from'
    """

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        return _BUILTIN_SQL.get(name, "${" + name + ":sqlstring}")

    return _PARAM.sub(one, sql)


def _uses(d: Dashboard, name: str) -> tuple[bool, bool]:
    """Whether PromQL and whether SQL of ``d`` use variable ``name``."""
    var = re.compile(r"\$(\{" + name + r"\}|" + name + r"\b)")
    promql = sql = False
    for p in d.panels():
        for q in p.queries:
            promql = promql or bool(q.promql and var.search(q.promql))
            sql = sql or bool(q.sql and "{" + name + ":" in q.sql)
    return promql, sql


def _variable(d: Dashboard, v: Variable) -> dict[str, Any]:
    in_promql, _ = _uses(d, v.name)
    base: dict[str, Any] = {"name": v.name, "label": v.name, "hide": 0, "multi": False,
                            "skipUrlSync": False}  # fmt: skip
    if v.text:
        return {**base, "type": "textbox", "query": v.default,
                "current": {"text": v.default, "value": v.default}}  # fmt: skip
    all_value = ".*" if in_promql else ""
    extra = {"includeAll": v.include_all, "allValue": all_value if v.include_all else None}
    current = {"text": "All", "value": "$__all"} if v.include_all else {}
    if v.values:
        # Grafana splits a custom variable's query at every comma not written as \\,
        options = ",".join(value.replace(",", "\\,") for value in v.values)
        return {**base, **extra, "type": "custom", "query": options, "current": current,
                "options": []}  # fmt: skip
    if v.sql:
        return {**base, **extra, "type": "query", "datasource": CLICKHOUSE,
                "query": grafana_sql(v.sql), "definition": v.sql, "refresh": 2,
                "current": current, "options": [], "sort": 1}  # fmt: skip
    query = f"label_values({v.match}, {v.label})" if v.match else f"label_values({v.label})"
    return {
        **base, **extra, "type": "query", "datasource": PROMETHEUS, "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2, "current": current, "options": [], "sort": 1,
    }  # fmt: skip


def _targets(p: Panel) -> list[dict[str, Any]]:
    out = []
    for i, q in enumerate(p.queries):
        ref = chr(ord("A") + i)
        if q.promql:
            instant = q.instant or p.type in ("stat", "gauge", "bar", "table")
            out.append({
                "refId": ref, "datasource": PROMETHEUS, "expr": q.promql,
                "legendFormat": q.legend or "__auto", "range": not instant, "instant": instant,
                "format": "heatmap" if p.type == "heatmap" else ("table" if p.type == "table"
                                                                 else "time_series"),
            })  # fmt: skip
        else:
            fmt = {"logs": 2, "timeseries": 0, "scatter": 0}.get(p.type, 1)
            out.append({"refId": ref, "datasource": CLICKHOUSE, "editorType": "sql",
                        "rawSql": grafana_sql(q.sql), "format": fmt,
                        "queryType": {0: "timeseries", 2: "logs"}.get(fmt, "table")})  # fmt: skip
    return out


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    datasource = PROMETHEUS if all(q.promql for q in p.queries) else CLICKHOUSE
    custom: dict[str, Any] = {}
    if p.type == "scatter":
        custom = {"drawStyle": "points", "pointSize": 4}
    elif p.type == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if p.stack else 0,
                  "stacking": {"mode": "normal" if p.stack else "none", "group": "A"}}  # fmt: skip
    defaults: dict[str, Any] = {"unit": UNITS[p.unit], "custom": custom}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    return {
        "id": pid, "type": PANEL_TYPES[p.type], "title": p.title, "description": p.description,
        "gridPos": {"h": max(2, round(p.height / ROW_HEIGHT_PX)), "w": p.width * 2, "x": x,
                    "y": y},
        "datasource": datasource, "targets": _targets(p),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"}},
        "interval": f"{int(p.min_step.total_seconds())}s",
    }  # fmt: skip


def to_grafana(name: str, d: Dashboard) -> dict[str, Any]:
    """Grafana's dashboard JSON for dashboard ``name``."""
    panels: list[dict[str, Any]] = []
    pid = 0
    y = 0
    for row in d.rows:
        pid += 1
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        y += 1
        x = 0
        line_height = 0
        for p in row.panels:
            w = p.width * 2
            if x + w > 24:  # wraps as the page's grid does
                x, y, line_height = 0, y + line_height, 0
            pid += 1
            panel = _panel(p, pid, x, y)
            panels.append(panel)
            line_height = max(line_height, panel["gridPos"]["h"])
            x += w
        y += line_height
    annotations = [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
        "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
        "type": "dashboard",
    }] + [{
        "datasource": CLICKHOUSE, "enable": True, "iconColor": a.color, "name": a.name,
        "target": {"refId": "Anno", "editorType": "sql", "format": 1,
                   "rawSql": grafana_sql(a.sql)},
    } for a in d.annotations]  # fmt: skip
    return {
        "__inputs": INPUTS,
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "datasource", "id": "grafana-clickhouse-datasource", "name": "ClickHouse",
             "version": "4.0.0"},
        ],
        "uid": grafana_uid(name), "title": d.title, "description": d.description,
        "tags": list(d.tags),
        "timezone": "utc", "editable": True, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1,
        "time": {"from": f"now-{_dur(d.time.last.total_seconds())}", "to": "now"},
        "refresh": _dur(d.refresh.total_seconds()) if d.refresh else "",
        "templating": {"list": [_variable(d, v) for v in d.variables]},
        "annotations": {"list": annotations},
        "panels": panels,
    }  # fmt: skip


def grafana_uid(name: str) -> str:
    """A Grafana dashboard uid for ``name``: Grafana refuses one over 40 characters, so a
    longer name keeps its head and a hash of the whole.

    >>> grafana_uid("services"), len(grafana_uid("x" * 64))
    ('services', 40)
    """
    if len(name) <= MAX_UID:
        return name
    return name[: MAX_UID - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def _dur(seconds: float) -> str:
    """Grafana's duration text.

    >>> _dur(3600), _dur(90), _dur(86400 * 7)
    ('1h', '90s', '7d')
    """
    n = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}s"
