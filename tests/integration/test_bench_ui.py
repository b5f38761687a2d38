"""``monitoring bench ui`` on a small store: every measure is taken and the last line
has its shape (no assertion on timing)."""

from __future__ import annotations

import re

import pytest

from monitoring.bench.ui import run

pytestmark = pytest.mark.no_broker


def test_bench_ui_measures_panel_first_load_and_event_to_pixel() -> None:
    res = run(
        series=230, days=1, scrape_s=120, repeat=3, loads=2, probes=2, progress=lambda _: None
    )
    assert res.panel_series == 200  # 100 counters' rates and 100 gauges
    assert res.panel_points > 200
    assert len(res.panel_ms) == 3 and len(res.first_load_ms) == 2
    assert len(res.panel_cpu_ms) == 3 and all(c > 0 for c in res.panel_cpu_ms)
    assert len(res.first_load_cpu_ms) == 2 and all(c > 0 for c in res.first_load_cpu_ms)
    assert len(res.event_to_pixel_ms) == 2
    assert re.fullmatch(
        r"panel_p99_ms=\d+\.\d first_load_ms=\d+\.\d event_to_pixel_ms=\d+\.\d", res.summary()
    )
