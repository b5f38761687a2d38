"""``ReportGenerator().generate(data=..., template=...)`` with the settings' defaults.

``data``: a ``ReportData`` (``ReportGenerator.collect(client, period_s)`` gathers the
shipped sections of a period from the store), a mapping for a custom template, or what
``MetricsAggregator.aggregate`` returned: a report of those windows (one section, a row
per series and window size: windows, samples, mean, min, max, p99). ``template``: a
shipped template's name (``default``) or a Jinja2 file's path (sandboxed, autoescaped).
``format`` defaults to ``reporting.format`` (the platform's
``visualization.reports.format``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monitoring.config import Settings
from monitoring.reports.generator import Report, ReportData, ReportError, ReportFormat
from monitoring.reports.generator import ReportGenerator as _Generator
from monitoring.reports.sections import Period, Section

__all__ = ["Report", "ReportData", "ReportError", "ReportGenerator", "windows_report"]

MAX_ROWS = 2000


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def windows_report(results: list[Any], title: str = "Metrics report") -> ReportData:
    """A report of aggregation results: one row per series and window size."""
    rows: dict[tuple[str, int], list[Any]] = {}
    for r in results:
        a = r.aggregate
        acc = rows.setdefault((a.series, a.window_ms), [0, 0, 0.0, float("inf"), -float("inf"),
                                                        -float("inf")])  # fmt: skip
        acc[0] += 1
        acc[1] += a.count
        acc[2] += a.sum
        acc[3] = min(acc[3], a.min)
        acc[4] = max(acc[4], a.max)
        acc[5] = max(acc[5], a.p99)
    start = min(r.aggregate.window_start_ms for r in results) / 1000
    end = max(r.aggregate.window_end_ms for r in results) / 1000
    table = [
        [series, f"{w // 1000}s", str(n), str(c), _fmt(s / c), _fmt(lo), _fmt(hi), _fmt(p99)]
        for (series, w), (n, c, s, lo, hi, p99) in sorted(rows.items())[:MAX_ROWS]
    ]
    section = Section(
        "metrics",
        "Metrics",
        f"{len(rows)} series and window sizes, {len(results)} windows",
        ["series", "window", "windows", "samples", "mean", "min", "max", "max p99"],
        table,
    )
    if len(rows) > MAX_ROWS:
        section.notes.append(f"{len(rows) - MAX_ROWS} more rows left out")
    return ReportData(title, Period(start, end), [section])


class ReportGenerator(_Generator):
    """``monitoring.reports.ReportGenerator`` in ``reporting.format`` by default."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.load()
        super().__init__()

    def generate(
        self,
        data: ReportData | Mapping[str, Any] | list[Any],
        template: str | Path | None = None,
        format: ReportFormat | None = None,
    ) -> Report:
        """Render ``data`` (see the module) with ``template`` (default: the settings')."""
        if isinstance(data, list):
            if not data or not all(hasattr(d, "aggregate") for d in data):
                raise ReportError("data: a ReportData, a mapping, or aggregation results")
            data = windows_report(data)
        return super().generate(
            data,
            template if template is not None else self.settings.reporting.template,
            format or self.settings.reporting.format,
        )
