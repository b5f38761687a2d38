"""Interactive HTML with plotly: zoom, hover values, legend toggles; works offline.

The page embeds plotly.js from the installed package (``include_plotlyjs=True``: no
CDN). Data never becomes markup: plotly writes the figure as JSON with ``<``, ``>`` and
``/`` as ``\\u`` escapes (a label cannot close the script), and every text from data
(series names, titles, category labels) is HTML-escaped before plotly.js sees it, so
plotly.js's own tag support (``<b>``, ``<a href>``) shows such text literally.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from monitoring.plots.config import PlotConfig
from monitoring.plots.data import Bounded, heatmap_grid


def text(value: str, limit: int = 200) -> str:
    """Data text as plotly.js shows it literally.

    >>> text('<img src=x onerror=alert(1)>')
    '&lt;img src=x onerror=alert(1)&gt;'
    """
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return html.escape(value, quote=False)  # plotly.js decodes &lt; &gt; &amp;, not &quot;


def render(bounded: Bounded, config: PlotConfig, full_html: bool = True) -> bytes:
    """The plot as an HTML page (or a ``<div>`` when not ``full_html``)."""
    fig = go.Figure()
    items = bounded.traces
    if config.type == "heatmap":
        names, xs, grid = heatmap_grid(items, config.points())
        if names:
            fig.add_trace(
                go.Heatmap(
                    x=_x(xs), y=[text(n) for n in names], z=[_nulls(row) for row in grid],
                    colorbar={"title": {"text": text(config.unit)}}, hoverongaps=False,
                )
            )  # fmt: skip
    elif config.type == "bar" and any(t.is_time for t in items):
        last = [float(t.y[np.isfinite(t.y)][-1]) if np.isfinite(t.y).any() else 0.0 for t in items]
        fig.add_trace(go.Bar(x=[text(t.name) for t in items], y=last))
    else:
        for t in items:
            y = _nulls(t.y)
            name = text(t.name, 100)
            if config.type == "bar":
                fig.add_trace(go.Bar(x=[text(str(x)) for x in t.x], y=y, name=name))
            else:
                mode = "lines" if config.type == "line" else "markers"
                fig.add_trace(go.Scattergl(x=_x(t.x), y=y, name=name, mode=mode))
    time_axis = any(t.is_time for t in items)
    notes = "; ".join(bounded.notes) if items else "no data for this query and time range"
    y_title = config.y_label or ""
    if config.unit and config.type != "heatmap":
        y_title = f"{y_title} ({config.unit})" if y_title else config.unit
    fig.update_layout(
        title={"text": text(config.title)},
        width=config.width_px,
        height=config.height_px,
        showlegend=config.legend,
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0},
        template="plotly_white",
        hovermode="x unified" if config.type == "line" else "closest",
        xaxis={"title": {"text": text(config.x_label or ("time (UTC)" if time_axis else ""))}},
        yaxis={"title": {"text": text(y_title)}, "ticksuffix": _suffix(config.unit)},
        annotations=[
            {"text": text(notes), "xref": "paper", "yref": "paper", "x": 1, "y": 1.06,
             "xanchor": "right", "showarrow": False, "font": {"size": 10, "color": "#666"}}
        ] if notes else [],
    )  # fmt: skip
    page = fig.to_html(include_plotlyjs=True, full_html=full_html, config={"responsive": True})
    return page.encode()


def _x(xs: np.ndarray) -> list[object]:
    if np.issubdtype(xs.dtype, np.datetime64):
        return [str(x) for x in xs.astype("datetime64[ms]")]
    return [text(str(x)) if isinstance(x, str) else x for x in xs.tolist()]


def _suffix(unit: str) -> str:
    return {"%": "%", "percent": "%", "bytes": "B", "seconds": "s"}.get(unit.strip(), "")


def _nulls(values: np.ndarray) -> list[float | None]:
    """Values with gaps (NaN, ±Inf) as None, which plotly draws as gaps."""
    return [v if math.isfinite(v) else None for v in values.tolist()]
