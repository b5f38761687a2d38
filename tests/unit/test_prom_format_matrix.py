"""``matrix_json`` (distinct timestamps and values formatted once) is the text of
formatting every point on its own with ``format_ts``/``format_value`` (hypothesis:
repeated values, -0, NaN, infinities, tiny and huge numbers, millisecond times)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.query.prom_format import format_ts, format_value, matrix_json


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


@settings(max_examples=300, deadline=None)
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
