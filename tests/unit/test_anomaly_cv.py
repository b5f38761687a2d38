"""Leave-one-category-out cross-validation (``monitoring bench anomaly --cv``).

Runs on a small synthetic corpus in NAB's layout, scored by NAB's ``score.py`` from
``../shared/nab`` (skipped where it is absent: the scorer is not part of the repo).
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitoring.anomaly.synthetic import generate
from monitoring.bench.anomaly_cv import (
    Candidate,
    cross_validate,
    format_report,
    load_score_module,
    read_series,
    score_file,
)

SCORE_PY = Path(__file__).resolve().parents[3] / "shared" / "nab" / "score.py"
N = 700


def stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    if not SCORE_PY.is_file():
        pytest.skip("NAB's score.py is not next to the repository")
    shutil.copy(SCORE_PY, tmp_path / "score.py")
    windows: dict[str, list[list[str]]] = {}
    for c, cat in enumerate(["catA", "catB", "catC", "quiet"]):
        for k in range(2):
            spike = None if cat == "quiet" else 400 + 50 * k
            s = generate(N, seed=10 * c + k, spike_at=spike, spike=15.0, daily_amplitude=3.0)
            rel = f"{cat}/s{k}.csv"
            (tmp_path / "data" / cat).mkdir(parents=True, exist_ok=True)
            with open(tmp_path / "data" / rel, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["timestamp", "value"])
                w.writerows(
                    (stamp(t), repr(v)) for t, v in zip(s.timestamps_ms, s.values, strict=True)
                )
            ts = [stamp(t) for t in s.timestamps_ms]
            windows[rel] = [] if spike is None else [[ts[spike - 10], ts[spike + 10]]]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return tmp_path


GRID = (
    Candidate("robust", "robust", {}, "the default"),
    Candidate("zscore", "zscore", {"window": 50}, "a weaker baseline"),
)


def test_folds_are_the_categories_with_windows_and_choose_on_training_only(corpus: Path) -> None:
    res = cross_validate(corpus, GRID)
    assert [f.category for f in res.folds] == ["catA", "catB", "catC"]
    nab = load_score_module(corpus)
    src = nab.NabSource(str(corpus))
    for f in res.folds:
        row = res.train_table[f.category]
        assert set(row) == {"robust", "zscore"}
        assert f.train_score == max(row.values()) and row[f.candidate] == f.train_score
        # the test score is score.py's own, at the fold's threshold, on the held-out
        # category plus the category without windows (its false positives count)
        out = corpus / "out" / f.category
        cand = next(c for c in GRID if c.name == f.candidate)
        for rel in json.loads((corpus / "labels/combined_windows.json").read_text()):
            ts, vs = read_series(corpus / "data" / rel)
            nab.write_results(
                str(out), "x", rel, [stamp(t) for t in ts], vs, score_file(cand, ts, vs)
            )
        ref = nab.score_results(
            src, str(out), categories=[f.category, "quiet"], thresholds={"standard": f.threshold},
            profiles=["standard"],
        )["profiles"]["standard"]  # fmt: skip
        assert f.test_score == pytest.approx(ref["score"])
        assert f.windows == 2 and f.detected == ref["windows_detected"]
    assert res.mean == pytest.approx(sum(f.test_score for f in res.folds) / 3)
    assert res.worst == min(f.test_score for f in res.folds)
    lines = format_report(res, GRID)
    assert [ln.split(":")[0] for ln in lines if ln.startswith("fold ")] == [
        "fold catA", "fold catB", "fold catC"
    ]  # fmt: skip
    # what ships is the best candidate on every file
    alone = [cross_validate(corpus, [c]) for c in GRID]
    assert res.chosen_score == max(a.chosen_score for a in alone)
    assert res.chosen == max(alone, key=lambda a: a.chosen_score).chosen


def test_files_per_category_subsamples(corpus: Path) -> None:
    res = cross_validate(corpus, GRID[:1], files_per_category=1)
    assert all(f.windows == 1 for f in res.folds)


def test_needs_a_nab_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no data/ directory or score\.py"):
        cross_validate(tmp_path, GRID)
