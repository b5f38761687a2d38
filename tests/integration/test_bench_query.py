"""``monitoring bench query`` at toy sizes: it builds the store, answers every measured
query (raw and aggregates) and prints its summary line. No timing is asserted."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from monitoring.cli.bench import app

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
