"""``monitoring bench anomaly``'s measurement helpers (the numbers themselves are not asserted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitoring.bench.anomaly import AnomalyBench, measure_speed, score_nab


def test_summary_line_format() -> None:
    res = AnomalyBench("robust", 10, 41_234.6, 31_728, 16_829)
    assert res.summary_line() == "points_per_s=41235 bytes_per_series=31728 nab_standard=na"
    res.nab = {"standard": 67.0213, "reward_low_FP_rate": 53.3}
    assert res.summary_line().endswith(" nab_standard=67.02")


@pytest.mark.parametrize("name", ["robust", "zscore"])
def test_measure_speed_reports_positive_numbers(name: str) -> None:
    pps, nbytes, ckpt = measure_speed(name, series=2, points=400)
    assert pps > 0 and nbytes > 0 and ckpt > 0
    assert re.fullmatch(r"points_per_s=\d+ bytes_per_series=\d+ nab_standard=na",
                        AnomalyBench(name, 800, pps, nbytes, ckpt).summary_line())  # fmt: skip


def test_score_nab_needs_a_nab_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no data/ directory or score\.py"):
        score_nab(tmp_path, "robust")
