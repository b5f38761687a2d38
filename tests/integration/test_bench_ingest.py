"""``monitoring bench ingest`` and ``bench scrape`` at toy sizes: every scrape done and
sent, every end-to-end probe found in a stored aggregate, and the summary line of issue
17 with the end-to-end fields. No timing is asserted."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from monitoring.cli.bench import app

pytestmark = pytest.mark.integration

SCRAPE = ["--targets", "3", "--series", "25", "--interval", "1", "--duration", "3",
          "--warmup", "1", "--collections", "2"]  # fmt: skip


def test_bench_ingest_prints_the_four_numbers(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITORING_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)
    args = ["ingest", "--rw-requests", "7", "--otlp-requests", "3", *SCRAPE,
            "--e2e-seconds", "3", "--e2e-warmup", "1", "--e2e-series", "20",
            "--e2e-targets", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert re.fullmatch(
        r"remote_write_samples_per_cpu_s=\d+ otlp_points_per_cpu_s=\d+ "
        r"scrape_missed_intervals=\d+ collector_cpu_pct=[\d.]+ "
        r"remote_write_e2e_p99_ms=\d+ otlp_e2e_p99_ms=\d+ scrape_e2e_p99_ms=\d+ "
        r"collector_e2e_p99_ms=\d+",
        lines[-1],
    ), lines[-1]
    # one line per path: samples followed, every one of them in a stored window
    paths = ("remote_write", "otlp", "scrape", "collector")
    for line, path in zip(lines[-5:-1], paths, strict=True):
        m = re.fullmatch(
            rf"e2e {path}: (\d+) samples followed \((\d+) not stored\), (\d+) windows of "
            r"1000 ms: receipt -> stored aggregate p50/p99 -?\d+/-?\d+ ms; after window end "
            r"\+ 1000 ms lateness p50/p99 -?\d+/-?\d+ ms \(.+\)",
            line,
        )
        assert m, line
        assert int(m.group(1)) > 0 and m.group(2) == "0" and int(m.group(3)) > 0, line
    m = re.search(r"(\d+)/(\d+) scrapes, ([\d,]+) samples/s, [\d.]+ cores, (\d+) unsent", lines[-7])
    assert m, lines[-7]
    assert int(m.group(1)) > 0 and m.group(4) == "0"
    assert lines[-6].startswith("system collector: ")


@pytest.mark.no_broker
def test_bench_scrape_into_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["scrape", "--no-kafka", "--no-one-core", *SCRAPE])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"scrape_missed_intervals=\d+ collector_cpu_pct=[\d.]+",
        result.output.strip().splitlines()[-1],
    )
    assert "(not sent)" in result.output
