"""The end-to-end bench's join of receipts with stored windows (``bench/ingest_e2e.py``),
on hand-made rows: no broker, no store."""

from __future__ import annotations

from typing import Any

import pytest

from monitoring.bench.ingest_e2e import E2EResult, PathLatency, _measure, report, summary_fields


class _Rows:
    """A watch that already saw ``rows`` (window end ms -> seen s, min, max, count)."""

    def __init__(self, rows: dict[int, tuple[float, float, float, int]]) -> None:
        self.rows = rows
        self.closed = False

    def close(self) -> None:
        self.closed = True


def measure(receipts: dict[int, float], rows: Any, by_seq: bool = True, **kw: Any) -> PathLatency:
    args = {"since": 0.0, "until": 1e12, "wait_s": 0.0, **kw}
    return _measure("p", receipts, rows, by_seq, 1000, 1000, **args)


def test_sequence_numbers_find_their_window() -> None:
    watch = _Rows({12_000: (13.0, 1, 3, 3), 13_000: (14.5, 4, 4, 1)})
    res = measure({1: 10.0, 2: 10.25, 3: 10.5, 4: 11.0}, watch)
    assert res.e2e_ms == pytest.approx([3000, 2750, 2500, 3500])
    # stored - (window end + 1 s lateness), once per window
    assert sorted(res.after_close_ms) == pytest.approx([0, 500])
    assert (res.probes, res.missing, watch.closed) == (4, 0, True)


def test_a_sample_in_no_stored_window_is_missing_not_measured() -> None:
    res = measure({1: 10.0, 2: 10.5}, _Rows({12_000: (13.0, 1, 1, 1)}))
    assert (res.probes, res.missing, res.e2e_ms) == (2, 1, pytest.approx([3000]))


def test_only_receipts_in_the_measured_span_count() -> None:
    res = measure({1: 9.0, 2: 10.0, 3: 12.0}, _Rows({12_000: (13.0, 1, 3, 3)}), since=9.5,
                  until=11.0)  # fmt: skip
    assert (res.probes, res.e2e_ms) == (1, pytest.approx([3000]))


def test_timestamps_find_their_window_by_event_time() -> None:
    # the collector: a collection stamped 12.3 s falls in the window ending at 13 s
    res = measure({12_300: 12.3}, _Rows({13_000: (15.0, 0.5, 0.5, 1)}), by_seq=False)
    assert res.e2e_ms == pytest.approx([2700])
    assert res.after_close_ms == pytest.approx([1000])


def test_summary_has_every_path_nan_when_unmeasured() -> None:
    res = E2EResult(1000, 1000, 1000, 0.1, 5.0)
    res.paths["otlp"] = PathLatency("otlp", e2e_ms=[1.0, 2.0, 3.0], after_close_ms=[1.0])
    assert summary_fields(res) == (
        "remote_write_e2e_p99_ms=nan otlp_e2e_p99_ms=3 scrape_e2e_p99_ms=nan "
        "collector_e2e_p99_ms=nan"
    )
    assert len(report(res)) == 4
