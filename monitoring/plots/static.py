"""Static images (PNG, SVG, PDF) with matplotlib's Agg canvas.

A :class:`~matplotlib.figure.Figure` per plot, never pyplot's global state, so plots
can be drawn from several threads. Text from data (series names, titles) is shown
literally: ``$`` would start mathtext and is escaped. Times are UTC with matplotlib's
concise date labels; values carry their unit through an SI-prefix formatter.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: before anything imports pyplot

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, PercentFormatter

from monitoring.plots.config import PlotConfig
from monitoring.plots.data import Bounded, heatmap_grid

SI_UNITS = {
    "bytes": "B",
    "byte": "B",
    "b": "B",
    "b/s": "B/s",
    "seconds": "s",
    "second": "s",
    "s": "s",
}
MAX_LEGEND = 20  # legend entries shown (the rest are still drawn)


def literal(text: str, limit: int = 120) -> str:
    r"""Text as matplotlib shows it verbatim, cut to ``limit`` characters: every ``$``
    escaped, so no pair of them opens mathtext (matplotlib then shows ``\$`` as ``$``
    and any other backslash as it is, so backslashes are left alone).

    >>> literal("cost $5 and $6"), literal("C:\\path")
    ('cost \\$5 and \\$6', 'C:\\path')
    """
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def render(bounded: Bounded, config: PlotConfig) -> bytes:
    """The plot as PNG, SVG or PDF bytes."""
    fig = Figure(figsize=(config.width_px / config.dpi, config.height_px / config.dpi))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw(fig, ax, bounded, config)
    if bounded.notes or not bounded.traces:
        items = bounded.traces
        note = "; ".join(bounded.notes) if items else "no data for this query and time range"
        fig.text(0.01, 0.01, literal(note, 200), fontsize="x-small", color="0.4")
    fig.tight_layout()
    return save(fig, config.format, config.dpi)


def save(fig: Figure, fmt: str, dpi: int = 100) -> bytes:
    """``fig`` as PNG, SVG or PDF bytes (PDF text as TrueType, so it can be extracted)."""
    out = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else None
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(out, format=fmt, dpi=dpi, metadata=metadata)
    return out.getvalue()


def draw(fig: Figure, ax: Axes, bounded: Bounded, config: PlotConfig) -> None:
    """The plot on ``ax`` of ``fig`` (a dashboard's export draws several on one figure)."""
    items = bounded.traces
    time_axis = any(t.is_time for t in items)
    if config.type == "heatmap":
        _heatmap(fig, ax, bounded, config)
    else:
        for t in items:
            name = literal(t.name)
            if config.type == "line":
                ax.plot(t.x, t.y, label=name, linewidth=1.2)
            elif config.type == "scatter":
                ax.scatter(t.x, t.y, label=name, s=8)
            else:
                _bars(ax, bounded, config)
                break
        _value_axis(ax.yaxis, config)
        if config.legend and items and config.type != "bar":
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(handles[:MAX_LEGEND], labels[:MAX_LEGEND], fontsize="small", loc="best")
    if time_axis and config.type != "bar":
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel(literal(config.x_label or ("time (UTC)" if time_axis else "")))
    if config.type != "heatmap":
        ax.grid(True, alpha=0.3)
    ax.set_title(literal(config.title or _default_title(bounded)), fontsize="medium")


def _default_title(bounded: Bounded) -> str:
    names = {t.labels.get("__name__", "") for t in bounded.traces} - {""}
    return ", ".join(sorted(names)[:3])


def _value_axis(axis: Axis, config: PlotConfig) -> None:
    unit = config.unit.strip()
    label = config.y_label or ""
    if unit in ("%", "percent"):
        axis.set_major_formatter(PercentFormatter())
    elif unit.lower() in SI_UNITS:
        axis.set_major_formatter(EngFormatter(unit=SI_UNITS[unit.lower()]))
    elif unit:
        label = f"{label} ({unit})" if label else unit
    axis.set_label_text(literal(label))


def _bars(ax: Axes, bounded: Bounded, config: PlotConfig) -> None:
    """Bars: categories on x; several series side by side. A time axis shows each
    series' last value (a bar chart of a range is its latest state)."""
    items = bounded.traces
    if any(t.is_time for t in items):
        cats = [literal(t.name, 40) for t in items]
        vals = [float(t.y[np.isfinite(t.y)][-1]) if np.isfinite(t.y).any() else 0.0 for t in items]
        ax.bar(range(len(cats)), vals, color="tab:blue")
        ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize="small")
        return
    cats = list(dict.fromkeys(str(x) for t in items for x in t.x))
    pos = {c: i for i, c in enumerate(cats)}
    width = 0.8 / max(1, len(items))
    for k, t in enumerate(items):
        xs = [pos[str(x)] + k * width - 0.4 + width / 2 for x in t.x]
        ax.bar(xs, t.y, width=width, label=literal(t.name))
    ax.set_xticks(
        range(len(cats)), [literal(c, 40) for c in cats], rotation=30, ha="right", fontsize="small"
    )
    if config.legend and len(items) > 1:
        ax.legend(fontsize="small")


def _heatmap(fig: Figure, ax: Axes, bounded: Bounded, config: PlotConfig) -> None:
    names, xs, grid = heatmap_grid(bounded.traces, config.points())
    if not names:
        return
    if np.issubdtype(xs.dtype, np.datetime64):
        edges = mdates.date2num(xs.astype("datetime64[ms]").astype("O"))
        step = edges[1] - edges[0] if len(edges) > 1 else 1 / 1440
        x_edges = np.append(edges, edges[-1] + step)
    else:
        x_edges = np.arange(len(xs) + 1)
    y_edges = np.arange(len(names) + 1)
    mesh = ax.pcolormesh(
        x_edges, y_edges, np.ma.masked_invalid(grid), cmap="viridis", rasterized=True
    )
    ax.set_yticks(np.arange(len(names)) + 0.5, [literal(n, 30) for n in names], fontsize="small")
    if np.issubdtype(xs.dtype, np.datetime64):
        ax.xaxis_date()
    bar = fig.colorbar(mesh, ax=ax)
    _value_axis(bar.ax.yaxis, config)
