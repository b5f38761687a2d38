"""What a plot draws: :class:`Trace` lists made from what users hand in.

:func:`traces` takes the store client's answers (a list of
:class:`~monitoring.query.client.Series` or a :class:`~monitoring.query.client.Table`),
a mapping ``name -> (x, y)``, or traces as they are. A SQL table's first column is the
x axis (times when it is a ``DateTime``, in UTC: one typed in a zone, which ClickHouse
prints in that zone, is converted), its other text columns name the series (one trace
per distinct value), its numeric columns are the values.

:func:`bound` keeps at most ``max_series`` traces (the largest by peak) and
``max_points`` points per trace: a time series is downsampled with MinMax-LTTB
(``tsdownsample``), which keeps the visual shape (peaks and dips) of a line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler, NaNMinMaxLTTBDownsampler

from monitoring.query.client import Series, Table

_ZONE = re.compile(r"DateTime(?:64)?\((?:\d+,\s*)?'([^']+)'\)")
MAX_CATEGORIES = 500  # bars of a category axis
MAX_TRACES_IN = 10_000  # traces handed in at all (the store's series limit)


@dataclass(frozen=True)
class Trace:
    """One drawn series: a name, x (``datetime64[ms]``, numbers or strings) and y."""

    name: str
    x: np.ndarray
    y: np.ndarray
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def is_time(self) -> bool:
        return np.issubdtype(self.x.dtype, np.datetime64)


@dataclass
class Bounded:
    """Traces as drawn, and what was left out (said on the plot)."""

    traces: list[Trace]
    notes: list[str] = field(default_factory=list)


def traces(data: Any) -> list[Trace]:
    """Traces from the store client's answers, a mapping or traces (see the module)."""
    if isinstance(data, Table):
        return from_table(data)
    if isinstance(data, Mapping):
        if len(data) > MAX_TRACES_IN:
            raise ValueError(f"more than {MAX_TRACES_IN} series to plot")
        return [_trace(str(k), *_pair(v)) for k, v in data.items()]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if len(data) > MAX_TRACES_IN:
            raise ValueError(f"more than {MAX_TRACES_IN} series to plot")
        out = []
        for item in data:
            if isinstance(item, Trace):
                out.append(item)
            elif isinstance(item, Series):
                x = item.t_ms.astype("datetime64[ms]")
                out.append(Trace(item.legend(), x, item.values.astype(float), dict(item.labels)))
            else:
                raise TypeError(f"cannot plot a {type(item).__name__}")
        return out
    raise TypeError(f"cannot plot {type(data).__name__}: give series, a table or a mapping")


def _pair(v: Any) -> tuple[Any, Any]:
    if isinstance(v, Mapping):
        return v["x"], v["y"]
    x, y = v
    return x, y


def _trace(name: str, x: Any, y: Any) -> Trace:
    xa = np.asarray(x)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"series {name!r}: x and y must be one-dimensional and equally long")
    return Trace(name, xa, ya)


def from_table(table: Table) -> list[Trace]:
    """A SQL answer as traces (see the module)."""
    if not table.columns:
        return []
    x_type = table.types[0]
    xs = table.column(table.columns[0])
    if x_type.startswith(("DateTime", "Nullable(DateTime", "Date")):
        x = np.array([np.datetime64(str(v).replace(" ", "T")[:23], "ms") for v in xs])
        zone = _ZONE.search(x_type)
        if zone and zone.group(1) != "UTC":  # printed in its zone: to UTC
            x = _to_utc(x, zone.group(1))
    elif _numeric(x_type):
        x = np.array(xs, dtype=float)
    else:
        x = np.array([str(v) for v in xs], dtype=object)
    keys = [i for i, t in enumerate(table.types) if i > 0 and not _numeric(t)]
    values = [i for i, t in enumerate(table.types) if i > 0 and _numeric(t)]
    if not values:
        raise ValueError("the table has no numeric column to plot")
    groups: dict[tuple[str, ...], list[int]] = {}
    for r, row in enumerate(table.rows):
        groups.setdefault(tuple(str(row[k]) for k in keys), []).append(r)
    if len(groups) * len(values) > MAX_TRACES_IN:
        raise ValueError(
            f"more than {MAX_TRACES_IN} series to plot ({len(groups)} distinct "
            f"{', '.join(table.columns[k] for k in keys)} x {len(values)} value columns)"
        )
    out = []
    for group, rows in groups.items():
        labels = {table.columns[k]: v for k, v in zip(keys, group, strict=True)}
        for vi in values:
            parts = [", ".join(group)] if group else []
            if len(values) > 1 or not group:
                parts.append(table.columns[vi])
            y = np.array([_float(table.rows[r][vi]) for r in rows], dtype=float)
            out.append(Trace(" ".join(p for p in parts if p), x[rows], y, labels))
    return out


def _to_utc(x: np.ndarray, zone: str) -> np.ndarray:
    """Wall times of ``zone`` (``datetime64[ms]``) as UTC."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone!r} in the first column's type") from None
    out = [
        (t.astype("datetime64[ms]").astype(datetime).replace(tzinfo=tz)).astimezone(UTC) for t in x
    ]
    return np.array([np.datetime64(t.replace(tzinfo=None), "ms") for t in out])


def _numeric(t: str) -> bool:
    inner = t.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return inner.startswith(("Int", "UInt", "Float", "Decimal"))


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _peak(t: Trace) -> float:
    finite = t.y[np.isfinite(t.y)]
    return float(np.max(np.abs(finite))) if finite.size else -1.0


def bound(items: list[Trace], max_series: int, max_points: int) -> Bounded:
    """At most ``max_series`` traces and ``max_points`` points each (see the module)."""
    notes = []
    if len(items) > max_series:
        keep = sorted(range(len(items)), key=lambda i: -_peak(items[i]))[:max_series]
        notes.append(f"{len(items) - max_series} more series not drawn (largest {max_series})")
        items = [items[i] for i in sorted(keep)]
    items, dropped = _categories(items, MAX_CATEGORIES)
    if dropped:
        notes.append(f"{dropped} more categories not drawn (the first {MAX_CATEGORIES})")
    out = []
    thinned = 0
    for t in items:
        if len(t.x) > max_points:
            thinned += 1
            t = _thin(t, max_points)
        out.append(t)
    if thinned:
        notes.append(f"{thinned} series downsampled to {max_points} points (MinMax-LTTB)")
    return Bounded(out, notes)


def _categories(items: list[Trace], limit: int) -> tuple[list[Trace], int]:
    """Traces on a category axis (x neither times nor numbers) kept to the first
    ``limit`` categories, in order of appearance; and how many were left out."""
    if all(t.is_time or np.issubdtype(t.x.dtype, np.number) for t in items):
        return items, 0
    seen = dict.fromkeys(str(x) for t in items for x in t.x)
    if len(seen) <= limit:
        return items, 0
    keep = set(list(seen)[:limit])
    out = []
    for t in items:
        mask = np.array([str(x) in keep for x in t.x], dtype=bool)
        out.append(Trace(t.name, t.x[mask], t.y[mask], t.labels))
    return out, len(seen) - limit


def _thin(t: Trace, n: int) -> Trace:
    if not (t.is_time or np.issubdtype(t.x.dtype, np.number)):
        return Trace(t.name, t.x[:n], t.y[:n], t.labels)  # categories: the first n
    x = t.x.astype("datetime64[ms]").astype(np.int64) if t.is_time else t.x.astype(float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], t.y[order]
    n = max(n, 4)
    sampler = NaNMinMaxLTTBDownsampler() if np.isnan(y).any() else MinMaxLTTBDownsampler()
    idx = np.asarray(sampler.downsample(x, y, n_out=n), dtype=np.int64)
    xs = x[idx].astype("datetime64[ms]") if t.is_time else x[idx]
    return Trace(t.name, xs, y[idx], t.labels)


def heatmap_grid(items: list[Trace], max_columns: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Rows, x and a matrix for a heatmap.

    Histogram buckets (every trace has an ``le`` label): one row per bucket, sorted by
    its bound, holding what falls in it (each cumulative bucket less the one below).
    Otherwise one row per trace. Columns are the union of the x values, averaged into at
    most ``max_columns`` as the grid is filled (its memory is rows x ``max_columns``,
    whatever the number of distinct x values).
    """
    if not items:
        return [], np.array([]), np.zeros((0, 0))
    xs = np.unique(np.concatenate([t.x for t in items]))
    k = max(1, -(-len(xs) // max_columns))  # x values per column
    columns = -(-len(xs) // k)
    sums = np.zeros((len(items), columns))
    counts = np.zeros((len(items), columns))
    for i, t in enumerate(items):
        finite = np.isfinite(t.y)
        where = np.searchsorted(xs, t.x[finite]) // k
        np.add.at(sums[i], where, t.y[finite])
        np.add.at(counts[i], where, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(counts > 0, sums / counts, np.nan)  # a column of no data stays NaN
    xs = xs[::k]
    if all("le" in t.labels for t in items):
        order = sorted(range(len(items)), key=lambda i: _le(items[i].labels["le"]))
        grid = grid[order]
        names = [f"le {items[i].labels['le']}" for i in order]
        below = np.vstack([np.zeros((1, grid.shape[1])), grid[:-1]])
        grid = np.clip(grid - np.nan_to_num(below), 0, None)
    else:
        names = [t.name for t in items]
    return names, xs, grid


def _le(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")
