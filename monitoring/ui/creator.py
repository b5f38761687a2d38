"""``DashboardCreator().create(metrics=..., layout=...)``: a dashboard from metric names.

Each metric becomes a panel by the Prometheus naming conventions (or the ``kind`` it is
given): a histogram (``kind: histogram``, or a name ending in ``_bucket``) its p50, p90
and p99 with ``histogram_quantile``; a counter (``_total``, ``_count``, ``_sum``) its
rate; anything else (a gauge) its mean. Split by ``group_by`` labels; the unit comes
from the name's suffix (``_seconds``, ``_ms``, ``_bytes``, ``_percent``, ``_ratio``).
``layout`` is ``grid`` (two panels a row), ``rows`` (one), a number of columns (1 to
4), or ``{"columns": n, "height": px}``. With ``save``, the dashboard is written to the
user's dashboards directory under that name.

>>> d = DashboardCreator().create(metrics=["http_requests_total", "node_memory_used_bytes"],
...                               layout="rows", group_by=["service"])
>>> [(p.title, p.unit, p.width) for p in d.panels()]
[('http_requests_total (rate)', 'ops', 12), ('node_memory_used_bytes', 'bytes', 12)]
>>> d.rows[0].panels[0].queries[0].promql
'sum by (service) (rate(http_requests_total[$__rate_interval]))'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitoring.ui.dashboards import Dashboard, DashboardError, DashboardStore, from_data

METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")
MAX_METRICS = 64
Kind = Literal["auto", "counter", "gauge", "histogram"]
_UNITS = (("_seconds", "seconds"), ("_ms", "ms"), ("_bytes", "bytes"), ("_percent", "percent"),
          ("_ratio", "percentunit"))  # fmt: skip
_QUANTILES = (0.5, 0.9, 0.99)


class MetricSpec(BaseModel):
    """One metric of :meth:`DashboardCreator.create` (a bare name is ``{"name": name}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind = "auto"
    group_by: list[str] | None = Field(None, max_length=8)
    title: str = Field("", max_length=200)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not METRIC.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        return v

    @field_validator("group_by")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        for label in v or []:
            if not LABEL.fullmatch(label):
                raise ValueError(f"{label[:80]!r} is not a label name")
        return v


class DashboardCreator:
    """Builds (and optionally saves) dashboards from metric names."""

    def __init__(self, store: DashboardStore | None = None) -> None:
        self.store = store

    def create(
        self,
        metrics: Sequence[str | Mapping[str, Any]],
        layout: str | int | Mapping[str, Any] = "grid",
        title: str = "Metrics",
        group_by: Sequence[str] = (),
        last: str = "1h",
        save: str | None = None,
    ) -> Dashboard:
        """A dashboard with one panel per metric; DashboardError says what is wrong."""
        if not metrics or len(metrics) > MAX_METRICS:
            raise DashboardError(f"metrics: 1 to {MAX_METRICS} metric names")
        try:
            specs = [
                MetricSpec(name=m) if isinstance(m, str) else MetricSpec.model_validate(m)
                for m in metrics
            ]
            defaults = MetricSpec(name="x", group_by=list(group_by)).group_by or []
        except ValueError as e:
            raise DashboardError(f"metrics: {str(e)[:500]}") from None
        columns, height = _layout(layout)
        panels = [_panel(s, s.group_by if s.group_by is not None else defaults) for s in specs]
        width = 12 // columns
        rows = [
            {"panels": [{**p, "width": width, "height": height} for p in panels[i : i + columns]]}
            for i in range(0, len(panels), columns)
        ]
        dashboard = from_data(
            {"title": title, "time": {"last": last}, "tags": ["generated"], "rows": rows},
            "DashboardCreator",
        )
        if save is not None:
            if self.store is None:
                raise DashboardError("save: the creator was given no DashboardStore")
            self.store.save(save, dashboard)
        return dashboard


def _layout(layout: str | int | Mapping[str, Any]) -> tuple[int, int]:
    """Columns per row and panel height."""
    height: Any = 260
    if isinstance(layout, Mapping):
        height = layout.get("height", height)
        layout = layout.get("columns", 2)
    if not isinstance(height, int) or isinstance(height, bool):
        raise DashboardError("layout: height is a whole number of pixels, 80 to 1200")
    columns = {"grid": 2, "rows": 1}.get(layout, layout) if isinstance(layout, str) else layout
    if not isinstance(columns, int) or isinstance(columns, bool) or not 1 <= columns <= 4:
        raise DashboardError("layout: grid, rows, 1 to 4 columns, or {columns, height}")
    if not 80 <= height <= 1200:
        raise DashboardError("layout: height is 80 to 1200 pixels")
    return columns, height


def _kind(spec: MetricSpec) -> str:
    if spec.kind != "auto":
        return spec.kind
    if spec.name.endswith("_bucket"):
        return "histogram"
    if spec.name.endswith(("_total", "_count", "_sum")):
        return "counter"
    return "gauge"


def _unit(name: str, kind: str) -> str:
    base = name.removesuffix("_bucket").removesuffix("_total")
    for suffix, unit in _UNITS:
        if base.endswith(suffix):
            return unit
    return "ops" if kind == "counter" else "none"


def _panel(spec: MetricSpec, group_by: list[str]) -> dict[str, Any]:
    kind = _kind(spec)
    by = ", ".join(group_by)
    legend = " ".join("{{" + label + "}}" for label in group_by)
    if kind == "histogram":
        family = spec.name.removesuffix("_bucket")
        queries = [
            {"promql": f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) "
                       f"(rate({family}_bucket[$__rate_interval])))",
             "legend": f"{legend} p{round(q * 100)}".strip()}
            for q in _QUANTILES
        ]  # fmt: skip
        return {"title": spec.title or f"{family} p50 / p90 / p99",
                "unit": _unit(family, kind), "queries": queries}  # fmt: skip
    if kind == "counter":
        query = f"sum by ({by}) (rate({spec.name}[$__rate_interval]))"
        title = spec.title or f"{spec.name} (rate)"
        unit = _unit(spec.name, kind)
        if unit not in ("ops", "none"):  # a rate of seconds or bytes keeps the base unit
            unit = {"seconds": "none", "ms": "none"}.get(unit, unit)
    else:
        query = f"avg by ({by}) ({spec.name})"
        title = spec.title or spec.name
        unit = _unit(spec.name, kind)
    if not by:
        query = query.replace(" by ()", "")
    return {"title": title, "unit": unit, "queries": [{"promql": query, "legend": legend}]}
