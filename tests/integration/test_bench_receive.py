"""``monitoring bench receive`` at toy sizes: every request admitted and acknowledged,
and its summary line. No timing is asserted."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from monitoring.cli.bench import app

pytestmark = pytest.mark.integration


def test_bench_receive_prints_its_summary_line(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITORING_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)
    args = ["receive", "--rw-series", "300", "--rw-per-request", "100", "--rw-requests", "9",
            "--otlp-per-request", "100", "--otlp-requests", "4"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    # 3 warm-up requests (300 series) then 6 measured; OTLP: 1 warm-up, 3 measured
    assert "remote_write: 600 samples in 6 requests" in lines[-3]
    assert "600 samples buffered and acknowledged" in lines[-3]
    assert "otlp: 300 data points in 3 requests" in lines[-2]
    assert re.fullmatch(r"remote_write_samples_per_cpu_s=\d+ otlp_points_per_cpu_s=\d+", lines[-1])
