"""monitoring.plots: every type in every format makes a real file; bounds; escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest

from monitoring.plots import PlotConfig, PlotGenerator
from monitoring.plots.data import Trace, bound, from_table, heatmap_grid, traces
from monitoring.query.client import Series, Table

T0 = 1_780_000_000_000
HOSTILE = {
    "__name__": "hostile_gauge",
    "svc": "<script>alert('x')</script>",
    "note": '"><img src=x onerror=alert(1)>',
}


def _series(n_series: int = 3, points: int = 120, step_ms: int = 60_000) -> list[Series]:
    t = T0 + step_ms * np.arange(points, dtype=np.int64)
    rng = np.random.default_rng(1)
    return [
        Series({"__name__": "cpu", "host": f"h{i}"}, t, 40 + i + rng.normal(0, 2, points))
        for i in range(n_series)
    ]


def _buckets(points: int = 60) -> list[Series]:
    t = T0 + 60_000 * np.arange(points, dtype=np.int64)
    out = []
    for le, share in (("0.1", 0.5), ("0.5", 0.8), ("+Inf", 1.0), ("0.25", 0.7)):
        out.append(Series({"le": le}, t, np.full(points, 10.0 * share)))
    return out


def _pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", data))


@pytest.mark.parametrize("kind", ["line", "bar", "scatter", "heatmap"])
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf", "html"])
def test_every_type_and_format_is_a_real_file(kind: str, fmt: str) -> None:
    data = _buckets() if kind == "heatmap" else _series()
    plot = PlotGenerator().generate(
        data=data, plot_config={"type": kind, "format": fmt, "title": "t", "unit": "%"}
    )
    body = plot.content
    if fmt == "png":
        assert body.startswith(b"\x89PNG\r\n\x1a\n") and len(body) > 5_000
    elif fmt == "svg":
        root = ET.fromstring(body)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10
    elif fmt == "pdf":
        assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF")
        assert _pdf_pages(body) == 1
    else:
        page = body.decode()
        assert page.lower().startswith("<!doctype html>") and "Plotly.newPlot" in page
        assert len(page) > 1_000_000  # plotly.js itself is in the page
        assert not re.search(r"<script[^>]+src=", page)  # nothing fetched from a CDN


class _Scripts(HTMLParser):
    """Counts script elements and attributes that run code."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0
        self.handlers: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.images += tag == "img"
        self.handlers += [k for k, _ in attrs if k.startswith("on")]


@pytest.mark.parametrize("kind", ["line", "bar", "heatmap"])
def test_html_labels_cannot_inject(kind: str) -> None:
    t = T0 + 60_000 * np.arange(30, dtype=np.int64)
    labels = HOSTILE if kind != "heatmap" else {**HOSTILE, "le": "<b>1</b>"}
    data = [Series(labels, t, np.arange(30.0))]
    clean = PlotGenerator().generate(data=_series(1), plot_config={"format": "html"}).content
    plot = PlotGenerator().generate(
        data=data,
        plot_config={"type": kind, "format": "html", "title": "<script>alert(2)</script>"},
    )
    page = plot.content.decode()
    for needle in ("<script>alert", "<img src=x", "</script><", "<b>1"):
        assert needle not in page
    hostile, baseline = _Scripts(), _Scripts()
    hostile.feed(page)
    baseline.feed(clean.decode())
    assert hostile.scripts == baseline.scripts and hostile.images == baseline.images == 0
    assert hostile.handlers == baseline.handlers
    assert "&lt;script&gt;" in page.replace("\\u0026", "&")  # shown, as text


def test_static_plots_show_labels_literally() -> None:
    data = [Series({"__name__": "cost", "v": "$5 and $6"}, np.array([T0]), np.array([1.0]))]
    svg = PlotGenerator().generate(data=data, plot_config={"format": "svg"}).content
    ET.fromstring(svg)  # mathtext would have failed or rendered math; this parses


def test_points_are_downsampled_keeping_peaks() -> None:
    (s,) = _series(1, points=100_000, step_ms=1000)
    s.values[54_321] = 1e6  # one spike
    out = bound(traces([s]), max_series=20, max_points=500)
    (t,) = out.traces
    assert len(t.x) <= 500 and t.y.max() == 1e6
    assert np.all(np.diff(t.x.astype(np.int64)) > 0)
    assert out.notes == ["1 series downsampled to 500 points (MinMax-LTTB)"]


def test_nan_gaps_survive_downsampling() -> None:
    (s,) = _series(1, points=5_000)
    s.values[100:200] = np.nan
    (t,) = bound(traces([s]), 20, 300).traces
    assert len(t.x) <= 300


def test_series_are_bounded_largest_first() -> None:
    t = T0 + 60_000 * np.arange(10, dtype=np.int64)
    many = [Series({"host": f"h{i}"}, t, np.full(10, float(i))) for i in range(50)]
    out = bound(traces(many), max_series=5, max_points=1000)
    assert [t.labels["host"] for t in out.traces] == ["h45", "h46", "h47", "h48", "h49"]
    assert out.notes == ["45 more series not drawn (largest 5)"]
    plot = PlotGenerator().generate(data=many, plot_config={"max_series": 5})
    assert plot.series == 5 and plot.notes == out.notes


def test_heatmap_of_buckets_holds_each_bucket_alone() -> None:
    names, xs, grid = heatmap_grid(traces(_buckets(10)), max_columns=100)
    assert names == ["le 0.1", "le 0.25", "le 0.5", "le +Inf"]
    assert np.allclose(grid[:, 0], [5.0, 2.0, 1.0, 2.0]) and len(xs) == 10
    _, xs, grid = heatmap_grid(traces(_buckets(100)), max_columns=30)
    assert len(xs) <= 30 and grid.shape == (4, len(xs))


def test_sql_tables_become_traces() -> None:
    long = Table(
        ["t", "service", "rps"],
        ["DateTime64(3, 'UTC')", "LowCardinality(String)", "Float64"],
        [["2026-12-06 07:00:00.000", "api", 1.0], ["2026-12-06 07:01:00.000", "api", 2.0],
         ["2026-12-06 07:00:00.000", "web", 3.0]],
    )  # fmt: skip
    got = from_table(long)
    assert [(t.name, t.y.tolist()) for t in got] == [("api", [1.0, 2.0]), ("web", [3.0])]
    assert got[0].is_time and str(got[0].x[1]) == "2026-12-06T07:01:00.000"
    wide = Table(["name", "n", "m"], ["String", "UInt64", "Float64"], [["a", 1, 2.5]])
    assert [(t.name, t.x.tolist()) for t in from_table(wide)] == [("n", ["a"]), ("m", ["a"])]
    bars = PlotGenerator().generate(data=wide, plot_config={"type": "bar", "format": "png"})
    assert bars.content.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no numeric column"):
        from_table(Table(["a"], ["String"], [["x"]]))


def test_no_data_is_a_plot_saying_so() -> None:
    plot = PlotGenerator().generate(data=[], plot_config={"format": "svg"})
    assert b"no data" in plot.content or ET.fromstring(plot.content) is not None
    html = PlotGenerator().generate(data=[], plot_config={"format": "html"}).content
    assert b"no data for this query" in html


def test_bad_config_and_data_are_refused() -> None:
    with pytest.raises(ValueError):
        PlotConfig.model_validate({"type": "pie"})
    with pytest.raises(ValueError):
        PlotConfig.model_validate({"width_px": 100_000})
    with pytest.raises(TypeError):
        traces(42)
    with pytest.raises(ValueError, match="equally long"):
        traces({"a": ([1, 2], [1.0])})
    with pytest.raises(TypeError):
        traces([Trace("a", np.array([1]), np.array([1.0])), "x"])


def test_svg_labels_cannot_break_out_of_comments() -> None:
    name = "--><script>alert(1)</script><!--"
    svg = (
        PlotGenerator()
        .generate(data={name: ([1, 2], [1.0, 2.0])}, plot_config={"format": "svg", "title": name})
        .content.decode()
    )
    assert "<script" not in svg
    assert not ET.fromstring(svg).findall(".//{http://www.w3.org/2000/svg}script")


def test_heatmap_memory_is_bounded_by_the_columns_drawn() -> None:
    """100 traces of 4,000 points at times no two share: 400,000 distinct times. The grid
    is binned to the columns drawn as it is filled, never built at full width first."""
    import tracemalloc

    rng = np.random.default_rng(0)
    items = [
        Trace(f"t{i}", (T0 + i + 1000 * np.arange(4000)).astype("datetime64[ms]"), rng.random(4000))
        for i in range(100)
    ]
    tracemalloc.start()
    try:
        _, xs, grid = heatmap_grid(items, max_columns=4000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert grid.shape == (100, len(xs)) and len(xs) <= 4000
    assert peak < 64 << 20, f"{peak >> 20} MiB"
    assert np.isfinite(grid).all() and 0.3 < float(grid.mean()) < 0.7


def test_heatmap_columns_keep_the_latest_times() -> None:
    """901 columns into 900 at most: the newest point is still drawn."""
    t = (T0 + 60_000 * np.arange(901)).astype("datetime64[ms]")
    y = np.zeros(901)
    y[-1] = 100.0
    _, xs, grid = heatmap_grid([Trace("a", t, y)], max_columns=900)
    assert len(xs) <= 900 and grid.shape[1] == len(xs) and np.nanmax(grid) > 0


def test_bar_categories_are_bounded() -> None:
    from monitoring.plots.data import MAX_CATEGORIES

    data = {f"s{j}": ([f"c{j}-{i}" for i in range(200)], list(range(200))) for j in range(5)}
    plot = PlotGenerator().generate(data=data, plot_config={"type": "bar", "format": "svg"})
    drawn = set(re.findall(rb"<!-- (c\d+-\d+) -->", plot.content))
    assert 0 < len(drawn) <= MAX_CATEGORIES, len(drawn)
    assert any("categories" in n for n in plot.notes), plot.notes
    page = PlotGenerator().generate(data=data, plot_config={"type": "bar", "format": "html"})
    assert page.content.count(b'"c4-199"') == 0 and any("categories" in n for n in page.notes)


def test_a_table_of_too_many_series_is_refused() -> None:
    from monitoring.plots.data import MAX_TRACES_IN

    rows = [["2026-12-01 00:00:00.000", f"k{i}", 1.0] for i in range(MAX_TRACES_IN + 1)]
    table = Table(["t", "k", "v"], ["DateTime64(3)", "String", "Float64"], rows)
    with pytest.raises(ValueError, match=f"more than {MAX_TRACES_IN} series"):
        traces(table)
    many = {f"s{i}": ([0], [1.0]) for i in range(MAX_TRACES_IN + 1)}
    with pytest.raises(ValueError, match=f"more than {MAX_TRACES_IN} series"):
        traces(many)


@pytest.mark.parametrize(
    "raw", ["C:\\path\\x", "cost $5 and $6", "$\\alpha$", "\\$x$", "a\\$b$", "\\\\$$", "$"]
)
def test_static_text_is_shown_as_written(raw: str) -> None:
    """What matplotlib displays of a label is the label: never mathtext, and backslashes
    are not doubled."""
    from matplotlib.figure import Figure

    from monitoring.plots.static import literal

    text = Figure().add_subplot().text(0, 0, literal(raw))
    shown, math = text._preprocess_math(text.get_text())
    assert (shown, math) == (raw, False)


@pytest.mark.parametrize(
    ("type_", "text", "utc"),
    [
        ("DateTime64(3, 'Asia/Tokyo')", "2026-12-01 09:00:00.250", "2026-12-01T00:00:00.250"),
        ("Nullable(DateTime('Europe/Berlin'))", "2026-07-01 02:00:00", "2026-07-01T00:00:00"),
        ("DateTime('UTC')", "2026-12-01 09:00:00", "2026-12-01T09:00:00"),
        ("DateTime64(3)", "2026-12-01 09:00:00.000", "2026-12-01T09:00:00"),
    ],
)
def test_a_time_column_in_a_zone_is_placed_in_utc(type_: str, text: str, utc: str) -> None:
    """ClickHouse prints a zoned DateTime in its zone; the time axis is UTC."""
    (t,) = traces(Table(["t", "v"], [type_, "Float64"], [[text, 1.0]]))
    assert t.x[0] == np.datetime64(utc, "ms")
