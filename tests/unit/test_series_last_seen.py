"""``series.last_seen`` follows a live series (issue 13, finding 12): a series' row is
written again once per ``storage.series_refresh`` of event time, in both sample paths
(against chDB: tests/integration/test_samples_key.py)."""

from __future__ import annotations

from monitoring.metrics.samples import Sample, SampleBatch
from monitoring.sinks.clickhouse.rows import (
    SERIES_COLUMNS,
    Columns,
    SampleColumns,
    SeriesIds,
    add_sample_batch,
    add_samples,
)

T0 = 1_700_000_000_000


def sample(key: str, ts: int) -> Sample:
    return Sample(key, key.split("{")[0], {}, ts, 1.0)


def seen(out: Columns) -> list[tuple[str, int, int]]:
    """(series, first_seen, last_seen) of the series rows written."""
    cols = dict(zip(SERIES_COLUMNS, out.take(), strict=True))
    return list(zip(cols["series"], cols["first_seen"], cols["last_seen"], strict=True))


def test_batches_write_a_series_row_again_once_per_refresh() -> None:
    ids, out, rows = SeriesIds(refresh_ms=10_000), SampleColumns(), Columns(SERIES_COLUMNS)

    def batch(*points: tuple[str, int]) -> list[tuple[str, int, int]]:
        add_sample_batch(SampleBatch.from_samples([sample(k, t) for k, t in points]), ids, out,
                         rows)  # fmt: skip
        return seen(rows)

    assert batch(("a", T0 + 2), ("b", T0), ("a", T0)) == [("a", T0, T0 + 2), ("b", T0, T0)]
    assert batch(("a", T0 + 9_000), ("b", T0 + 9_999)) == []  # not due yet
    assert batch(("b", T0 + 10_000), ("a", T0 + 10_001), ("b", T0 + 15_000)) == [
        ("b", T0 + 10_000, T0 + 15_000)  # a's row is due at T0 + 10_002
    ]
    assert batch(("a", T0 + 10_002)) == [("a", T0 + 10_002, T0 + 10_002)]
    assert batch(("a", T0 + 5_000), ("b", T0 + 24_999)) == []  # late, and b not due
    assert batch(("b", T0 + 25_000)) == [("b", T0 + 25_000, T0 + 25_000)]


def test_single_samples_write_a_series_row_again_once_per_refresh() -> None:
    ids, out, rows = SeriesIds(refresh_ms=10_000), Columns(("a", "b", "c")), Columns(SERIES_COLUMNS)
    for t in range(0, 35_000, 1_000):  # one sample per message
        add_samples([sample("a", T0 + t)], ids, out, rows)
    assert [r[2] for r in seen(rows)] == [T0, T0 + 10_000, T0 + 20_000, T0 + 30_000]
    add_samples([sample("a", T0 + t) for t in (41_000, 39_000, 40_000)], ids, out, rows)
    assert seen(rows) == [("a", T0 + 39_000, T0 + 41_000)]  # one row per message, as batches


def test_the_due_times_are_bounded_with_the_ids() -> None:
    ids = SeriesIds(max_bytes=20_000, refresh_ms=1)
    out, rows = SampleColumns(), Columns(SERIES_COLUMNS)
    for i in range(1_000):
        add_sample_batch(SampleBatch.from_samples([sample(f"m{{i=\"{i}\"}}", T0)]), ids, out,
                         rows)  # fmt: skip
        assert len(ids.due) <= 100 and ids._bytes <= ids.max_bytes
