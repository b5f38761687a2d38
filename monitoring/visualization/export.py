"""Visualization export: dashboards as Grafana dashboard JSON (``to_grafana``) and
files (``export_dashboard``); plots and reports save themselves (``Plot.save``,
``Report.save``) in the format they were rendered in (PNG, SVG, PDF, HTML)."""

from __future__ import annotations

import json
from pathlib import Path

from monitoring.plots.generator import Plot
from monitoring.reports.generator import Report
from monitoring.ui.dashboards import Dashboard
from monitoring.ui.grafana import to_grafana

__all__ = ["Plot", "Report", "export_dashboard", "to_grafana"]


def export_dashboard(name: str, dashboard: Dashboard, path: str | Path) -> Path:
    """Write ``dashboard`` as Grafana JSON (importable in Grafana) to ``path``."""
    out = Path(path)
    out.write_text(json.dumps(to_grafana(name, dashboard), indent=2))
    return out
