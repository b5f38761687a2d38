"""``DashboardCreator().create(metrics=..., layout=...)`` with the settings' defaults.

The dashboard is saved (``save``: a name, True for one made from the title, False or
None not to) to ``ui.dashboards_dir``; ``saved`` is its file. ``metrics`` are metric names,
``{"name", "kind", "group_by", "title"}`` mappings, or what
``MetricsAggregator.aggregate`` / ``MetricsCollector.collect`` returned (their distinct
metric names). ``layout`` is ``grid`` (two panels a row), ``rows``, 1 to 4
columns, or ``{"columns": n, "height": px}``. ``monitoring ui`` serves a saved one at
``/d/<name>`` (and its JSON at ``/api/ui/dashboards/<name>``); ``refresh`` defaults to
``ui.refresh``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monitoring.config import Settings
from monitoring.ui.creator import DashboardCreator as _Creator
from monitoring.ui.dashboards import Dashboard, DashboardError, DashboardStore

__all__ = ["Dashboard", "DashboardCreator", "DashboardError", "DashboardStore"]


def metric_names(metrics: Sequence[Any]) -> list[Any]:
    """Names (or specs) of ``metrics``: results of aggregate/collect become their names."""
    out: list[Any] = []
    for m in metrics:
        name = m if isinstance(m, str | Mapping) else getattr(m, "name", None)
        if name is None:
            raise DashboardError(f"metrics: {type(m).__name__} is not a metric name or result")
        if name not in out:
            out.append(name)
    return out


class DashboardCreator(_Creator):
    """``monitoring.ui.creator.DashboardCreator`` saving to ``ui.dashboards_dir``."""

    def __init__(
        self, store: DashboardStore | None = None, settings: Settings | None = None
    ) -> None:
        self.settings = settings if settings is not None else Settings.load()
        super().__init__(store or DashboardStore(self.settings.ui.dashboards_dir))
        self.saved: Path | None = None

    def create(
        self,
        metrics: Sequence[Any],
        layout: str | int | Mapping[str, Any] = "grid",
        title: str = "Metrics",
        group_by: Sequence[str] = (),
        last: str = "1h",
        save: str | bool | None = True,
    ) -> Dashboard:
        """A dashboard with one panel per metric, saved (see the module)."""
        dashboard = super().create(metric_names(metrics), layout, title, group_by, last, None)
        if dashboard.refresh is None:
            dashboard = dashboard.model_copy(update={"refresh": self.settings.ui.refresh})
        if save is not None and save is not False:
            name = slug(title) if save is True else save
            assert self.store is not None
            self.saved = self.store.save(name, dashboard)
        return dashboard


def slug(title: str) -> str:
    """A dashboard file name from a title: ``CPU & memory`` -> ``cpu-memory``."""
    s = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:64]
    return s or "dashboard"
