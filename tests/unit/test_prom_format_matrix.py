"""``matrix_json`` (distinct timestamps and values formatted once) is the text of
formatting every point on its own with ``format_ts``/``format_value`` (hypothesis:
repeated values, -0, NaN, infinities, tiny and huge numbers, millisecond times)."""

from __future__ import annotations

import json

import numpy as np
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.query.prom_format import (
    format_ts,
    format_value,
    format_values,
    grid_json,
    matrix_json,
)


def reference(series: list[tuple[dict[str, str], np.ndarray, np.ndarray]]) -> str:
    return (
        "["
        + ",".join(
            f'{{"metric":{json.dumps(labels)},"values":['
            + ",".join(
                f'[{format_ts(int(a))},"{format_value(float(b))}"]'
                for a, b in zip(t.tolist(), v.tolist(), strict=True)
            )
            + "]}"
            for labels, t, v in series
        )
        + "]"
    )


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-7, 1e16, 2.0**60]),
)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 10**13), values), max_size=30),
        max_size=5,
    )
)
def test_matrix_json_is_each_point_formatted(rows: list[list[tuple[int, float]]]) -> None:
    series = [
        (
            {"i": str(i)},
            np.array([p[0] for p in pts], dtype=np.int64),
            np.array([p[1] for p in pts], dtype=np.float64),
        )
        for i, pts in enumerate(rows)
    ]
    assert matrix_json(series) == reference(series)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(-3, 12), values), max_size=14),
        max_size=5,
    ),
    st.sampled_from([1000, 15_000]),
    st.integers(0, 20),
)
def test_grid_json_is_each_grid_points_formatted_value(
    rows: list[list[tuple[int, float]]], step_ms: int, off_grid: int
) -> None:
    """Every series' value string at each step of the grid, ``null`` where it has no
    point; points off the grid or outside it are left out."""
    start, n = 50_000, 10
    series = []
    for i, pts in enumerate(rows):
        by_k = dict(sorted(pts))  # one point per timestamp, as the engine gives
        ts = np.array([start + k * step_ms + (off_grid if k == 5 else 0) for k in by_k])
        series.append(({"i": str(i)}, ts, np.array(list(by_k.values()), dtype=np.float64)))
    got = json.loads(grid_json(series, start, step_ms, start + (n - 1) * step_ms))
    assert (got["start_ms"], got["step_ms"]) == (start, step_ms)
    for (labels, ts, vs), item in zip(series, got["result"], strict=True):
        want: list[str | None] = [None] * n
        for t, v in zip(ts.tolist(), vs.tolist(), strict=True):
            k, off = divmod(t - start, step_ms)
            if off == 0 and 0 <= k < n:
                want[k] = format_value(v)
        assert item == {"metric": labels, "v": want}


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_format_values_is_format_value_of_each(xs: list[float]) -> None:
    assert format_values(np.array(xs, dtype=np.float64)) == [format_value(x) for x in xs]


def test_format_values_matches_go_over_magnitudes() -> None:
    """The vectorised digits (orjson's) are repr's for every magnitude it writes plainly."""
    rng = np.random.default_rng(7)
    xs = np.concatenate(
        [rng.random(2000) * 10.0**e * rng.choice([-1, 1], 2000) for e in range(-6, 18)]
    )
    assert format_values(xs) == [format_value(x) for x in xs.tolist()]


magnitudes = st.one_of(
    values,
    st.integers(-(10**17), 10**17).map(float),  # whole numbers, past 1e16 too
    st.floats(1e-6, 1e17).map(lambda x: round(x, 3)),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.lists(magnitudes, min_size=6, max_size=6), min_size=1, max_size=4))
def test_grid_json_of_full_rows_is_each_values_string(rows: list[list[float]]) -> None:
    """Series with a point at every step (orjson writes the whole row when every value
    is plain) give the same strings as formatting each value on its own."""
    start, step = 0, 1000
    series = [
        ({"i": str(i)}, np.arange(start, start + 6 * step, step), np.array(r, dtype=np.float64))
        for i, r in enumerate(rows)
    ]
    got = json.loads(grid_json(series, start, step, start + 5 * step))
    assert [item["v"] for item in got["result"]] == [[format_value(x) for x in r] for r in rows]
