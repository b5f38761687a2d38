"""``monitoring bench query`` at toy sizes: it builds the store, answers every measured
query (raw and aggregates) and prints its summary line. No timing is asserted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitoring.bench.query import build
from monitoring.cli.bench import app
from monitoring.config import Settings
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate

pytestmark = pytest.mark.no_broker


def test_bench_query_prints_its_summary_line() -> None:
    args = ["query", "--series", "120", "--days", "0.05", "--scrape", "60", "--repeat", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert re.fullmatch(
        r"range_1h_p99_ms=[\d.]+ range_7d_p99_ms=[\d.]+ "
        r"histogram_quantile_p99_ms=[\d.]+ ch_http_overhead_ms=-?[\d.]+",
        last,
    ), last


def test_bench_store_windows_carry_counter_fields(tmp_path: Path) -> None:
    """The bench's aggregates carry Aggregate v2's counter fields as the aggregator
    computes them (so the 7-day query reads counters the way a real store's are read):
    checked against the steps of the raw samples, computed here."""
    storage = Settings.load(None).storage.model_copy(update={"dsn": f"chdb://{tmp_path}/db"})
    client = connect(storage.dsn)
    try:
        migrate(client, storage)
        build(client, series=125, days=0.02, scrape_s=15, now_s=1_700_000_040)
        raw = client.query(
            "SELECT series_id, toUnixTimestamp64Milli(ts), value FROM samples "
            "WHERE series_id IN (1, 101, 121, 125) ORDER BY series_id, ts"
        ).result_rows
        stored = client.query(
            "SELECT series_id, window_ms, toUnixTimestamp64Milli(window_start), first, "
            "increase, resets FROM aggregates FINAL WHERE series_id IN (1, 101, 121, 125)"
        ).result_rows
    finally:
        client.close()
    expected: dict[tuple[int, int, int], list[float]] = {}
    prev: dict[int, float] = {}
    for sid, t, v in raw:
        p = prev.get(sid, v)
        step = v - p if v >= p else v
        prev[sid] = v
        for w in (10_000, 60_000):
            key = (sid, w, t - t % w)
            first, inc, resets = expected.get(key, [v, 0.0, 0])
            expected[key] = [first, inc + step, resets + (v < p)]
    got = {(s, w, t): [f, i, r] for s, w, t, f, i, r in stored}
    assert got.keys() == expected.keys()
    for key, (first, inc, resets) in expected.items():
        assert got[key][0] == first and got[key][2] == resets, key
        assert got[key][1] == pytest.approx(inc, rel=1e-12, abs=1e-9), key
