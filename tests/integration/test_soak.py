"""The soak's code path, short and slow-rate (the 30-minute run is `monitoring chaos
--soak 30m`, its figures in BENCHMARKS.md): a one-step ramp measures the peak, the
soak runs at its half against a real store, worker, evaluator and notifier, samples
every process's RSS and every group's lag, and counts the stored windows exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitoring.dev.soak import PIPELINE, SoakConfig, SoakRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_soak_short(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = SoakConfig(
        duration_s=30, warmup_s=6, n_series=100, sample_every_s=2, settle_s=180,
        hot_s=22, cold_s=12, ramp_start=800, ramp_max=800, ramp_step_s=5, ramp_drain_s=60,
        overrides={"anomaly__enabled": "false"},
    )  # fmt: skip
    said: list[str] = []
    result = SoakRun(cfg, tmp_path, kafka_bootstrap, say=said.append, delete_topics=True).run()
    lines = result.lines()
    print("\n".join(result.ramp + lines))  # the report, in the test's output
    assert result.ramp and "held" in result.ramp[0] and result.peak == 800, said
    assert result.rate == 400 and result.interval_ms == 250
    assert result.samples == 36 * 4 * 100  # 36 s of ticks every 250 ms, 100 series each
    assert set(PIPELINE) <= set(result.rss) and "producer" in result.rss
    assert all(result.rss_row(p) is not None for p in PIPELINE)
    assert any(g.endswith("worker") for g in result.lag) and any(
        g.endswith(".store") for g in result.lag
    )
    assert result.converged, "\n".join(lines + said)
    assert (result.lost, result.duplicated, result.alerts_differing) == (0, 0, 0), lines
    assert not result.exits and result.alerts_expected == 1  # one 34 s cycle in 36 s
    assert re.fullmatch(
        r"rounds=0 lost=0 duplicated=0 alerts_differing=0 rss_growth_pct=-?\d+\.\d", lines[-1]
    )
