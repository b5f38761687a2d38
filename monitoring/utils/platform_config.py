"""The platform's documented configuration shape, mapped onto the real settings.

The platform documents its configuration under one top-level ``monitoring:`` key
(``examples/monitoring.yaml``). Inside it, the platform's sections map as follows;
every other key is a section of :class:`monitoring.config.Settings` as is (``kafka``,
``storage``, ``python_api``...), and wins over a value the mapping derived.

=======================================  ===========================================
platform key                             setting
=======================================  ===========================================
metrics.collection.interval              collection.interval
metrics.collection.batch_size            collection.batch_size
metrics.storage.retention                storage.retention.aggregates (and samples,
                                         when shorter than their 7 d)
metrics.storage.compression              storage.compression (true: zstd, false: none,
                                         or zstd / lz4 / none)
alerts.rules (name, condition, duration  alerting.definitions (the seed's rule
  severity, recovery, summary...)         shorthand: ``cpu_usage > 80%`` for 5m)
alerts.notifications.channels            notifier.channels
visualization.dashboards.refresh         ui.refresh
visualization.dashboards.retention       ui.max_range (the longest range a dashboard
                                         may show)
visualization.plots.types                plots.types
visualization.reports.schedule, format   reporting.schedule, reporting.format
logging (level, rotation, compression)   logging (``daily`` = midnight UTC rotation)
=======================================  ===========================================

An unknown key fails with its path and the keys allowed there:

>>> from_platform({"monitoring": {"metrics": {"colection": {}}}}, "f")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
monitoring.config.ConfigError: f: monitoring.metrics.colection: unknown key (allowed: ...)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitoring.config import ConfigError, Duration

SECTIONS = ("metrics", "alerts", "visualization")


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Collection(_P):
    interval: Duration | None = None
    batch_size: int | None = Field(None, ge=1, le=100_000)


class _Storage(_P):
    retention: Duration | None = None
    compression: bool | Literal["zstd", "lz4", "none"] | None = None


class _Metrics(_P):
    collection: _Collection = _Collection()
    storage: _Storage = _Storage()


class _Notifications(_P):
    channels: list[Literal["email", "slack", "pagerduty", "webhook", "alertmanager"]] | None = None


class _Alerts(_P):
    rules: list[dict[str, Any]] | None = Field(None, max_length=10_000)
    notifications: _Notifications = _Notifications()


class _Dashboards(_P):
    refresh: Duration | None = None
    retention: Duration | None = None


class _Plots(_P):
    types: list[Literal["line", "bar", "scatter", "heatmap"]] | None = Field(None, min_length=1)


class _Reports(_P):
    schedule: Literal["off", "daily", "weekly"] | None = None
    format: Literal["pdf", "html"] | None = None


class _Visualization(_P):
    dashboards: _Dashboards = _Dashboards()
    plots: _Plots = _Plots()
    reports: _Reports = _Reports()


class _Platform(_P):
    metrics: _Metrics = _Metrics()
    alerts: _Alerts = _Alerts()
    visualization: _Visualization = _Visualization()


SAMPLES_RETENTION = timedelta(days=7)


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    if value is None:
        return
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged onto ``base`` (``over`` wins)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _problem(err: Any) -> str:
    loc = ".".join(str(p) for p in ("monitoring", *err["loc"]))
    if err["type"] == "extra_forbidden":
        model = _model_at(err["loc"][:-1])
        allowed = ", ".join(model.model_fields) if model is not None else ""
        return f"{loc}: unknown key" + (f" (allowed: {allowed})" if allowed else "")
    return f"{loc}: {err['msg']}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = _Platform
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def from_platform(doc: dict[str, Any], where: str = "configuration") -> dict[str, Any]:
    """The settings' sections from a document with the top-level ``monitoring:`` key;
    :class:`ConfigError` naming ``monitoring.<path>`` and the reason when it is wrong."""
    extra = sorted(str(k) for k in doc if k != "monitoring")
    if extra:
        raise ConfigError(
            f"{where}: {', '.join(extra)}: unknown key beside 'monitoring' (put every "
            "section under monitoring:)"
        )
    body = doc.get("monitoring")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: monitoring: must be a mapping of sections")
    platform = {k: v for k, v in body.items() if k in SECTIONS}
    real = {k: v for k, v in body.items() if k not in SECTIONS}
    for key in ("metrics", "alerts", "visualization"):
        if key in platform and platform[key] is None:
            platform[key] = {}
    try:
        p = _Platform.model_validate(platform)
    except ValidationError as e:
        raise ConfigError(f"{where}: " + "; ".join(_problem(x) for x in e.errors())) from None
    out: dict[str, Any] = {}
    m = p.metrics
    _put(out, "collection.interval", m.collection.interval)
    _put(out, "collection.batch_size", m.collection.batch_size)
    if m.storage.retention is not None:
        _put(out, "storage.retention.aggregates", m.storage.retention)
        if m.storage.retention < SAMPLES_RETENTION:
            _put(out, "storage.retention.samples", m.storage.retention)
    c = m.storage.compression
    if c is not None:
        _put(out, "storage.compression", c if isinstance(c, str) else ("zstd" if c else "none"))
    a = p.alerts
    _put(out, "alerting.definitions", a.rules)
    _put(out, "notifier.channels", a.notifications.channels)
    v = p.visualization
    _put(out, "ui.refresh", v.dashboards.refresh)
    _put(out, "ui.max_range", v.dashboards.retention)
    _put(out, "plots.types", v.plots.types)
    _put(out, "reporting.schedule", v.reports.schedule)
    _put(out, "reporting.format", v.reports.format)
    return _merge(out, real)
