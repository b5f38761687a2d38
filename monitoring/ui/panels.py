"""Pure parts of a panel query: the step for a panel's width, variables, legends, and
the store's answers reshaped into the frames the browser draws.

A frame is one of:

- ``{"kind": "series", "name", "labels", "start": ms, "step": ms, "v": [str | None]}``
  (a range query's series: point ``k`` is at ``start + k * step``, ``None`` where the
  store had no point; the values are the store's own strings, ``"NaN"`` and ``"+Inf"``
  included, which the browser reads as gaps);
- ``{"kind": "series", "name", "labels", "t": [ms], "v": [float | None]}`` (a
  time-keyed SQL column);
- ``{"kind": "value", "name", "labels", "value"}`` (an instant query's sample);
- ``{"kind": "table", "columns", "types", "rows"}`` (SQL);
- ``{"kind": "heatmap", "x": [ms], "y": [bucket], "z": [[count]]}`` (histogram buckets).

Elsewhere values the JSON cannot carry (NaN, infinities) are ``None``: a gap in the chart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from monitoring.ui.dashboards import Panel, Query

# Steps a panel's points fall on (seconds): a range refetched later lines up with the last
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400)  # fmt: skip
MIN_WIDTH_PX, MAX_WIDTH_PX = 10, 4000
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_RE2_META = re.compile(r"([\\.+*?()|\[\]{}^$])")
ALL = "$__all"  # a variable's value meaning every value
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class PanelError(ValueError):
    """A panel request refused before anything reaches the store; the text says why."""


def choose_step(start_ms: int, end_ms: int, width_px: int, min_step_s: float = 1.0) -> int:
    """The smallest nice step (seconds, at least ``min_step_s``) that gives at most
    ``width_px`` points over ``start_ms``..``end_ms`` (see :func:`first_point`).

    >>> choose_step(0, 3_600_000, 800)
    5
    >>> choose_step(0, 7 * 86_400_000, 1000)
    900
    >>> choose_step(0, 60_000, 1000, min_step_s=10)
    10
    """
    width = max(MIN_WIDTH_PX, min(MAX_WIDTH_PX, int(width_px)))
    span_s = max(0.0, (end_ms - start_ms) / 1000)
    floor = max(1.0, float(min_step_s), span_s / width)
    candidates = [s for s in NICE_STEPS if s >= floor] or [math.ceil(floor / 86400) * 86400]
    for step in candidates:
        if points(start_ms, end_ms, step) <= width:
            return step
    step = candidates[-1]
    while points(start_ms, end_ms, step) > width:
        step *= 2
    return step


def first_point(start_ms: int, end_ms: int, step_s: int) -> int:
    """The range query's first evaluation time: whole steps back from ``end_ms``, not
    before ``start_ms``. The last point is the end itself, so a sample stored just
    before a refetch is drawn (a grid aligned to the start could end up to a step
    before it).

    >>> first_point(1_000, 10_500, 2)
    2500
    """
    step_ms = step_s * 1000
    return end_ms - (end_ms - start_ms) // step_ms * step_ms


def points(start_ms: int, end_ms: int, step_s: int) -> int:
    """How many points a range query at ``step_s`` over the range returns."""
    return (end_ms - first_point(start_ms, end_ms, step_s)) // (step_s * 1000) + 1


def regex_escape(value: str) -> str:
    """A literal for an RE2 regex (``=~``).

    >>> regex_escape("a.b(c)")
    'a\\\\.b\\\\(c\\\\)'
    """
    return _RE2_META.sub(r"\\\1", value)


def promql_string(value: str) -> str:
    """The inside of a PromQL double-quoted string holding ``value``.

    >>> promql_string('say "hi"\\\\')
    'say \\\\"hi\\\\"\\\\\\\\'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def substitute(promql: str, variables: Mapping[str, str], step_s: int, range_s: int = 3600) -> str:
    """``$var`` and ``${var}`` replaced by the variable's value, regex-escaped and
    string-escaped (so it is matched with ``=~"$var"``; every value is ``.*``);
    ``$__interval`` is the step, ``$__rate_interval`` four steps and at least a minute,
    ``$__range`` the panel's time range.

    >>> substitute('up{job=~"$job"}[$__rate_interval]', {"job": 'a"b'}, 30)
    'up{job=~"a\\\\"b"}[120s]'
    >>> substitute('up{job=~"$job"}', {"job": ALL}, 30)
    'up{job=~".*"}'
    """
    builtins = {
        "__interval": f"{step_s}s",
        "__rate_interval": f"{max(4 * step_s, 60)}s",
        "__range": f"{max(1, range_s)}s",
    }

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        if name not in variables:
            raise PanelError(f"the query uses ${name}, which is not a variable of the dashboard")
        value = variables[name]
        return ".*" if value == ALL else promql_string(regex_escape(value))

    return _VAR.sub(one, promql)


def sql_parameters(
    sql: str, variables: Mapping[str, str], start_ms: int, end_ms: int, step_s: int
) -> dict[str, str]:
    """The ``param_<name>`` values an SQL query binds (a variable's ``All`` is ``''``):
    only those its text names, so ClickHouse never sees a parameter it has no
    placeholder for."""
    values = {
        "start_ms": str(start_ms),
        "end_ms": str(end_ms),
        "step_s": str(step_s),
        **{k: ("" if v == ALL else v) for k, v in variables.items()},
    }
    return {f"param_{k}": v for k, v in values.items() if "{" + k + ":" in sql}


def series_name(metric: Mapping[str, str], legend: str) -> str:
    """A series' display name: the legend with ``{{label}}`` filled, or its labels.

    >>> series_name({"__name__": "up", "job": "a"}, "")
    'up{job="a"}'
    >>> series_name({"service": "api"}, "{{service}} p99")
    'api p99'
    """
    if legend:
        return _LEGEND.sub(lambda m: metric.get(m.group(1), ""), legend)
    name = metric.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def number(v: Any) -> float | None:
    """A value of the store's JSON as a float; None for NaN, infinities and non-numbers.

    >>> number("1.5"), number("NaN"), number("+Inf"), number(None)
    (1.5, None, None, None)
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def prom_frames(
    data: Mapping[str, Any],
    query: Query,
    max_series: int,
    start_ms: int = 0,
    step_s: int = 1,
    end_ms: int | None = None,
) -> tuple[list[Any], int]:
    """Frames of a Prometheus ``data`` object, at most ``max_series``; and how many
    series the answer had. A matrix's points are put on the grid of the range query
    that asked for them (``start_ms``, ``step_s``, up to ``end_ms``)."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [{"kind": "value", "name": query.legend or "scalar", "labels": {},
                 "value": number(result[1])}], 1  # fmt: skip
    if not isinstance(result, list):
        return [], 0
    step_ms = step_s * 1000
    # the store's ``format=grid``: values on the grid the UI asked for, no timestamps
    gridded = data.get("start_ms") == start_ms and data.get("step_ms") == step_ms
    frames: list[Any] = []
    for item in result[:max_series]:
        if not isinstance(item, dict):
            continue
        metric = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        name = series_name(metric, query.legend)
        if name == "{}":  # an aggregate without labels: name it by its query
            name = query.promql if len(query.promql) <= 80 else query.promql[:79] + "…"
        if kind == "matrix":
            v = (
                on_grid(item.get("v"), start_ms, step_ms, end_ms)
                if gridded
                else grid_values(item.get("values") or [], start_ms, step_ms, end_ms)
            )
            frames.append({"kind": "series", "name": name, "labels": metric,
                           "start": start_ms, "step": step_ms, "v": v})  # fmt: skip
        elif kind == "vector":
            frames.append({"kind": "value", "name": name, "labels": metric,
                           "value": number((item.get("value") or [0, None])[1])})  # fmt: skip
    return frames, len(result)


def on_grid(values: Any, start_ms: int, step_ms: int, end_ms: int | None) -> list[str | None]:
    """A ``format=grid`` series' values as the page wants them: strings kept, anything
    else ``None``, at most the grid's length (up to ``end_ms``).

    >>> on_grid(["1", None, 2, "NaN"], 0, 1000, 2000)
    ['1', None, None]
    """
    if not isinstance(values, list) or step_ms <= 0:
        return []
    if end_ms is not None:
        values = values[: max(0, (end_ms - start_ms) // step_ms + 1)]
    return [v if type(v) is str else None for v in values]


def grid_values(
    pts: Sequence[Any], start_ms: int, step_ms: int, end_ms: int | None = None
) -> list[str | None]:
    """A matrix series' value strings on the grid ``start_ms + k * step_ms`` (up to
    ``end_ms``, else the last point): the store's strings as they are, ``None`` where
    it has no point; a point off the grid or outside it, or not a string, is dropped.

    >>> grid_values([[1, "1"], [3, "NaN"]], 1000, 1000)
    ['1', None, 'NaN']
    >>> grid_values([[1, "1"], [2, "2"]], 1000, 1000, 2000)
    ['1', '2']
    """
    if not pts or step_ms <= 0:
        return []
    try:
        last = round(float(pts[-1][0]) * 1000) if end_ms is None else end_ms
        n = (last - start_ms) // step_ms + 1
        if n <= 0:
            return []
        if (  # the whole grid, as a range query answers a series without gaps
            len(pts) == n
            and round(float(pts[0][0]) * 1000) == start_ms
            and round(float(pts[-1][0]) * 1000) == start_ms + (n - 1) * step_ms
        ):
            out: list[str | None] = [v if type(v) is str else None for _, v in pts]
            return out
        out = [None] * min(n, len(pts) * 4 + 1024) if end_ms is None else [None] * n
        for t, v in pts:
            k, off = divmod(round(float(t) * 1000) - start_ms, step_ms)
            if off == 0 and 0 <= k < len(out) and type(v) is str:
                out[k] = v
        return out
    except (TypeError, ValueError, IndexError):
        return []


def series_points(frame: Mapping[str, Any]) -> tuple[list[int], list[float | None]]:
    """A series frame's times (ms) and values as numbers, whichever its shape.

    >>> series_points({"start": 1000, "step": 500, "v": ["1", None, "+Inf"]})
    ([1000, 1500, 2000], [1.0, None, None])
    """
    if "t" in frame:
        return list(frame["t"]), list(frame["v"])
    start, step = frame["start"], frame["step"]
    return [start + k * step for k in range(len(frame["v"]))], [number(v) for v in frame["v"]]


def time_ms(v: Any) -> int | None:
    """A time column's cell as epoch ms: a number (seconds if small, else ms) or a
    ``YYYY-MM-DD hh:mm:ss[.fff]`` text in UTC; None for anything else, and for a time not
    finite or beyond the year 9999 (``'inf'`` was an OverflowError: a 500).

    >>> time_ms(1.5), time_ms("2026-01-01 00:00:00"), time_ms("inf"), time_ms(1e300)
    (1500, 1767225600000, None, None)
    """
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v) or abs(v) > MAX_TIME_MS:
            return None
        return round(v * 1000) if abs(v) < 1e11 else round(v)
    if isinstance(v, str):
        try:
            return time_ms(float(v))
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(v.replace(" ", "T"))
        except ValueError:
            return None
        return round((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
    return None


def sql_frames(
    meta: Sequence[Mapping[str, Any]], rows: Sequence[Sequence[Any]], panel: Panel, max_series: int
) -> tuple[list[Any], int]:
    """Frames of an SQL answer (JSONCompact's ``meta`` and ``data``).

    Charts over time want the first column to be a time (DateTime or epoch): each
    numeric column is then a series, or, with a String column named ``series``, the
    first numeric column split by it. Other charts, and tables, get the table.
    """
    columns = [str(m.get("name", "")) for m in meta]
    types = [str(m.get("type", "")) for m in meta]
    table = {"kind": "table", "columns": columns, "types": types, "rows": [list(r) for r in rows]}
    timed = panel.type in ("timeseries", "scatter", "bar") and types and "Date" in types[0]
    if not timed:
        return [table], 1
    numeric = [i for i, t in enumerate(types) if i > 0 and _numeric(t)]
    split = columns.index("series") if "series" in columns else None
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = time_ms(r[0])
        if t is None:
            continue
        if split is not None and numeric:
            keys = [(str(r[split]), numeric[0])]
        else:
            keys = [(columns[i], i) for i in numeric]
        for name, i in keys:
            if name not in out and len(out) >= max_series:
                continue
            f = out.setdefault(name, {"kind": "series", "name": name, "labels": {},
                                      "t": [], "v": []})  # fmt: skip
            f["t"].append(t)
            f["v"].append(number(r[i]))
    total = len({str(r[split]) for r in rows}) if split is not None else len(numeric)
    return list(out.values()), total


def _numeric(ch_type: str) -> bool:
    t = ch_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    return t.startswith(("Int", "UInt", "Float", "Decimal"))


def heatmap(frames: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Cumulative histogram buckets (series with an ``le`` label, as ``sum by (le)
    (rate(x_bucket[...]))`` answers) as a heatmap of per-bucket counts over time.

    >>> h = heatmap([{"labels": {"le": "+Inf"}, "t": [0, 1], "v": [5, 7]},
    ...              {"labels": {"le": "0.1"}, "start": 0, "step": 1, "v": ["2", "3"]}])
    >>> h["y"], h["z"]
    (['0.1', '+Inf'], [[2.0, 3.0], [3.0, 4.0]])
    """
    buckets = [
        (f["labels"]["le"], series_points(f))
        for f in frames
        if "le" in (f.get("labels") or {}) and ("t" in f or "start" in f)
    ]
    if not buckets:
        return None
    buckets.sort(key=lambda b: _le(b[0]))
    x = sorted({t for _, (ts, _) in buckets for t in ts})
    col = {t: i for i, t in enumerate(x)}
    cumulative = []
    for _, (ts, vs) in buckets:
        row: list[float | None] = [None] * len(x)
        for t, v in zip(ts, vs, strict=True):
            row[col[t]] = v
        cumulative.append(row)
    z: list[list[float | None]] = []
    for i, row in enumerate(cumulative):
        if i == 0:
            z.append(row)
            continue
        below = cumulative[i - 1]
        z.append(
            [
                None if a is None or b is None else max(0.0, a - b)
                for a, b in zip(row, below, strict=True)
            ]
        )
    return {"kind": "heatmap", "x": x, "y": [le for le, _ in buckets], "z": z}


def _le(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.inf
