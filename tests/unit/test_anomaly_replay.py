"""``monitoring anomaly replay``: the agent's scores, row for row."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitoring.anomaly import SeriesScorer
from monitoring.anomaly.replay import parse_timestamp_ms
from monitoring.anomaly.synthetic import generate
from monitoring.cli import app


def write_csv(path: Path, stamps: list[str], values: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value"])
        w.writerows(zip(stamps, values, strict=True))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def to_float(text: str) -> float:
    return float(text) if text else float("nan")


def nab_stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def series() -> tuple[list[int], list[str]]:
    s = generate(400, seed=11, spike_at=300, spike=12.0)
    values = [repr(v) for v in s.values]
    values[50] = ""  # a missing value: NaN, scored 0.0
    return s.timestamps_ms, values


def test_replay_file_equals_series_scorer(tmp_path: Path, series: tuple) -> None:
    ts, values = series
    stamps = [nab_stamp(t) for t in ts]
    write_csv(tmp_path / "in.csv", stamps, values)
    res = CliRunner().invoke(
        app, ["anomaly", "replay", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out.csv")]
    )
    assert res.exit_code == 0, res.output
    rows = read_csv(tmp_path / "out.csv")
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    assert [r["timestamp"] for r in rows] == stamps
    assert [r["value"] for r in rows] == values
    sc = SeriesScorer()
    expected = [
        sc.update(t, float(v) if v else float("nan")).score for t, v in zip(ts, values, strict=True)
    ]
    got = [float(r["anomaly_score"]) for r in rows]
    assert got == expected
    assert all(0.0 <= x <= 1.0 for x in got) and max(got) > 0.4


def test_replay_directory_mirrors_tree_and_accepts_epoch_stamps(
    tmp_path: Path, series: tuple
) -> None:
    ts, values = series
    write_csv(tmp_path / "in/catA/a.csv", [str(t) for t in ts], values)  # epoch ms
    write_csv(tmp_path / "in/catB/b.csv", [str(t // 1000) for t in ts], values)  # epoch s
    res = CliRunner().invoke(
        app,
        ["anomaly", "replay", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
         "--detector", "zscore"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    a = read_csv(tmp_path / "out/catA/a.csv")
    b = read_csv(tmp_path / "out/catB/b.csv")
    assert [r["timestamp"] for r in a] == [str(t) for t in ts]
    sc = SeriesScorer("zscore")
    expected = [
        sc.update(t, float(v) if v else float("nan")).score for t, v in zip(ts, values, strict=True)
    ]
    assert [float(r["anomaly_score"]) for r in a] == expected
    assert [r["anomaly_score"] for r in b] == [r["anomaly_score"] for r in a]


def test_replay_errors_are_clear(tmp_path: Path) -> None:
    write_csv(tmp_path / "bad.csv", ["2014-04-01 00:00:00", "yesterday"], ["1", "2"])
    runner = CliRunner()
    res = runner.invoke(
        app, ["anomaly", "replay", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.csv")]
    )
    assert res.exit_code == 2
    assert "bad.csv row 3: bad timestamp 'yesterday'" in res.output
    res = runner.invoke(
        app,
        ["anomaly", "replay", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.csv"),
         "--detector", "nope"],
    )  # fmt: skip
    assert res.exit_code == 2 and "unknown detector 'nope'" in res.output


def test_parse_timestamp_forms() -> None:
    assert parse_timestamp_ms("2014-04-01 00:00:00") == 1_396_310_400_000
    assert parse_timestamp_ms("2014-04-01T00:00:00+02:00") == 1_396_303_200_000
    assert parse_timestamp_ms("1396310400") == 1_396_310_400_000
    assert parse_timestamp_ms("1396310400000") == 1_396_310_400_000
    with pytest.raises(ValueError):
        parse_timestamp_ms("nan")
