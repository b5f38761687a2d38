"""Exports of a panel's answer (its frames, :mod:`monitoring.ui.panels`): an image
(PNG, SVG, PDF) drawn by the plots' matplotlib renderer, or its data as Parquet; and of
a whole dashboard as one image, its panels laid out as on the page.

Pure apart from the rendering: the app runs these in a worker thread. Text from data
(series names, titles, table cells) is drawn as literal text (``plots.static.literal``):
matplotlib writes SVG text as paths, so a ``<script>`` in a label is only shapes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitoring.plots.config import PlotConfig
from monitoring.plots.data import Trace, bound
from monitoring.plots.static import draw, literal, save
from monitoring.ui.dashboards import Dashboard, Panel
from monitoring.ui.panels import series_points

IMAGE_FORMATS = ("png", "svg", "pdf")
MEDIA = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "parquet": "application/vnd.apache.parquet",
}
PLOT_TYPES = {"timeseries": "line", "scatter": "scatter", "bar": "bar", "heatmap": "heatmap"}
MAX_PANELS = 48  # panels drawn in one dashboard export (the rest are named in a note)
MAX_TABLE_ROWS = 25  # rows of a table or log panel drawn in an image
MAX_CELL = 60  # characters of a cell drawn
UNITS = {
    "percent": "%", "percentunit": "", "seconds": "seconds", "bytes": "bytes", "Bps": "B/s",
    "ms": "ms",
}  # fmt: skip


class ExportError(ValueError):
    """An export that cannot be made; the text says why."""


def panel_traces(frames: Sequence[Mapping[str, Any]]) -> list[Trace]:
    """A panel's frames as the plots' traces: series over time, values and SQL tables
    as categories, a heatmap's buckets as its rows (top bucket last)."""
    out: list[Trace] = []
    for f in frames:
        kind = f.get("kind")
        if kind == "series":
            ts, vs = series_points(f)
            y = np.array([math.nan if v is None else float(v) for v in vs], dtype=float)
            out.append(Trace(str(f.get("name", "")), np.array(ts, "datetime64[ms]"), y,
                             dict(f.get("labels") or {})))  # fmt: skip
        elif kind == "heatmap":
            x = np.array(f["x"], "datetime64[ms]")
            for le, row in zip(f["y"], f["z"], strict=True):
                y = np.array([math.nan if v is None else float(v) for v in row], dtype=float)
                out.append(Trace(f"le {le}", x, y))
    values = [f for f in frames if f.get("kind") == "value"]
    if values:
        names = np.array([str(f.get("name", "")) for f in values], dtype=object)
        y = np.array([_float(f.get("value")) for f in values], dtype=float)
        out.append(Trace("value", names, y))
    return out


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None and not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _table(frames: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((f for f in frames if f.get("kind") == "table"), None)


def _config(panel: Panel, fmt: str, width_px: int, height_px: int) -> PlotConfig:
    plot_type = PLOT_TYPES.get(panel.type, "bar")
    return PlotConfig(
        type=plot_type,
        format=fmt,
        title=panel.title[:200],
        unit=UNITS.get(panel.unit, "" if panel.unit in ("none", "short") else panel.unit)[:32],
        width_px=max(200, min(4000, width_px)),
        height_px=max(150, min(3000, height_px)),
        max_series=200,
    )


def _draw_panel(fig: Figure, ax: Axes, panel: Panel, frames: Any, config: PlotConfig) -> None:
    """One panel on ``ax``: a chart, or a table's first rows as text."""
    table = _table(frames)
    chart = panel.type in PLOT_TYPES or panel.type in ("stat", "gauge")
    if table is not None and not (chart and _two_columns(table)):
        _draw_table(ax, panel, table)
        return
    items = panel_traces(frames)
    if table is not None:  # a bar, stat or gauge of category and value columns
        rows = table.get("rows") or []
        names = np.array([str(r[0]) for r in rows if r], dtype=object)
        items = [Trace("value", names, np.array([_float(r[1]) for r in rows if r], float))]
    if panel.type in ("stat", "gauge") and items and items[0].is_time:
        # a stat of series: each series' last value, as bars
        last = [t.y[np.isfinite(t.y)][-1] if np.isfinite(t.y).any() else math.nan for t in items]
        items = [Trace("value", np.array([t.name for t in items], object), np.array(last))]
    bounded = bound(items, config.max_series, config.points())
    draw(fig, ax, bounded, config)
    if not items:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _two_columns(table: Mapping[str, Any]) -> bool:
    rows = table.get("rows") or []
    return len(table.get("columns") or []) >= 2 and all(
        len(r) >= 2 and isinstance(r[1], int | float) for r in rows[:50]
    )


def _draw_table(ax: Axes, panel: Panel, table: Mapping[str, Any]) -> None:
    ax.axis("off")
    ax.set_title(literal(panel.title), fontsize="medium")
    columns = [literal(str(c), 30) for c in (table.get("columns") or [])][:8]
    rows = table.get("rows") or []
    if not columns or not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    cells = [
        [literal(str(c), MAX_CELL) for c in (list(r) + [""] * len(columns))[: len(columns)]]
        for r in rows[:MAX_TABLE_ROWS]
    ]
    t = ax.table(cellText=cells, colLabels=columns, loc="upper left", cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    if len(rows) > MAX_TABLE_ROWS:
        ax.text(0, 0, f"{len(rows) - MAX_TABLE_ROWS} more rows", fontsize="x-small",
                transform=ax.transAxes, color="0.4")  # fmt: skip


def panel_image(panel: Panel, frames: Any, fmt: str, width_px: int) -> bytes:
    """One panel as a PNG, SVG or PDF."""
    if fmt not in IMAGE_FORMATS:
        raise ExportError(f"format: one of {', '.join(IMAGE_FORMATS)}")
    config = _config(panel, fmt, width_px, panel.height + 60)
    fig = Figure(figsize=(config.width_px / config.dpi, config.height_px / config.dpi))
    FigureCanvasAgg(fig)
    _draw_panel(fig, fig.add_subplot(), panel, frames, config)
    fig.tight_layout()
    return save(fig, fmt, config.dpi)


def dashboard_image(
    dashboard: Dashboard,
    answers: Mapping[str, Any],
    fmt: str,
    start_ms: int,
    end_ms: int,
    width_px: int = 1600,
) -> bytes:
    """The dashboard as one image: its rows in order, each panel ``width`` twelfths of
    the page wide (a row wider than 12 wraps, as on the page) and its height tall.
    ``answers`` maps a panel id to its frames, or to an error text."""
    if fmt not in IMAGE_FORMATS:
        raise ExportError(f"format: one of {', '.join(IMAGE_FORMATS)}")
    lines: list[list[Panel]] = []
    for row in dashboard.rows:
        used = 13  # a new line for every row
        for p in row.panels:
            if used + p.width > 12:
                lines.append([])
                used = 0
            lines[-1].append(p)
            used += p.width
    panels = [p for line in lines for p in line]
    left_out = max(0, len(panels) - MAX_PANELS)
    kept = {id(p) for p in panels[:MAX_PANELS]}
    lines = [[p for p in line if id(p) in kept] for line in lines]
    lines = [line for line in lines if line]
    width_px = max(400, min(4000, width_px))
    heights = [max(p.height for p in line) + 40 for line in lines] or [100]
    head_px = 70
    fig = Figure(figsize=(width_px / 100, (sum(heights) + head_px) / 100))
    FigureCanvasAgg(fig)
    span = f"{_utc(start_ms)} to {_utc(end_ms)} UTC" + (
        f"; {left_out} more panels not drawn (the first {MAX_PANELS})" if left_out else ""
    )
    fig.suptitle(f"{literal(dashboard.title, 100)}\n{span}", fontsize="large")
    grid = fig.add_gridspec(
        len(lines), 12, height_ratios=heights, top=1 - head_px / (sum(heights) + head_px),
        hspace=0.6, wspace=0.9,
    )  # fmt: skip
    for i, line in enumerate(lines):
        col = 0
        for p in line:
            ax = fig.add_subplot(grid[i, col : col + p.width])
            col += p.width
            answer = answers.get(p.id)
            config = _config(p, fmt, width_px * p.width // 12, p.height)
            if isinstance(answer, str) or answer is None:
                ax.axis("off")
                ax.set_title(literal(p.title), fontsize="medium")
                text = f"error: {answer}" if answer else "not drawn"
                ax.text(0.02, 0.5, literal(text, 150), fontsize="small", color="tab:red",
                        transform=ax.transAxes, wrap=True)  # fmt: skip
                continue
            _draw_panel(fig, ax, p, answer, config)
    return save(fig, fmt, 100)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def panel_parquet(frames: Sequence[Mapping[str, Any]], end_ms: int) -> bytes:
    """A panel's data as Parquet, in long form as its CSV: ``series, labels, time,
    value`` for series and instant values (at ``end_ms``, the range's end; a point
    the store did not have is no row, ``NaN`` stays NaN), ``time, le, value`` for a
    heatmap, and an SQL table's own columns (numbers, else text)."""
    table = _table(frames)
    heat = next((f for f in frames if f.get("kind") == "heatmap"), None)
    if table is not None:
        out = _sql_table(table)
    elif heat is not None:
        times, les, values = [], [], []
        for le, row in zip(heat["y"], heat["z"], strict=True):
            for t, v in zip(heat["x"], row, strict=True):
                times.append(t)
                les.append(str(le))
                values.append(_float(v))
        out = pa.table({
            "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "le": pa.array(les, pa.string()), "value": pa.array(values, pa.float64()),
        })  # fmt: skip
    else:
        out = _series_table(frames, end_ms)
    buf = io.BytesIO()
    pq.write_table(out, buf, compression="zstd")
    return buf.getvalue()


def _series_table(frames: Sequence[Mapping[str, Any]], end_ms: int) -> pa.Table:
    names: list[str] = []
    labels: list[list[tuple[str, str]]] = []
    times: list[int] = []
    values: list[float] = []
    for f in frames:
        kind = f.get("kind")
        if kind == "series":
            pts: Any = (
                zip(f["t"], f["v"], strict=True)
                if "t" in f
                else ((f["start"] + k * f["step"], v) for k, v in enumerate(f["v"]))
            )
            pairs = [(t, _float(v)) for t, v in pts if v is not None]
        elif kind == "value":
            pairs = [(end_ms, _float(f.get("value")))]
        else:
            continue
        lab = sorted((str(k), str(v)) for k, v in (f.get("labels") or {}).items())
        for t, v in pairs:
            names.append(str(f.get("name", "")))
            labels.append(lab)
            times.append(int(t))
            values.append(v)
    return pa.table({
        "series": pa.array(names, pa.string()),
        "labels": pa.array(labels, pa.map_(pa.string(), pa.string())),
        "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
        "value": pa.array(values, pa.float64()),
    })  # fmt: skip


def _sql_table(table: Mapping[str, Any]) -> pa.Table:
    columns = [str(c) for c in table.get("columns") or []]
    rows = table.get("rows") or []
    arrays, names, seen = [], [], set()
    for i, name in enumerate(columns):
        cells = [r[i] if i < len(r) else None for r in rows]
        try:
            arr = pa.array(cells)
            if pa.types.is_nested(arr.type) or pa.types.is_null(arr.type):
                raise pa.ArrowInvalid("as text")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = pa.array([None if c is None else str(c) for c in cells], pa.string())
        unique, k = name, 1
        while unique in seen:  # a column name given twice
            k += 1
            unique = f"{name}_{k}"
        seen.add(unique)
        arrays.append(arr)
        names.append(unique)
    return pa.Table.from_arrays(arrays, names=names)


__all__ = [
    "IMAGE_FORMATS",
    "MEDIA",
    "ExportError",
    "dashboard_image",
    "panel_image",
    "panel_parquet",
    "panel_traces",
]
