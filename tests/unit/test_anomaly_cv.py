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
    detections,
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
        assert row[f.candidate] == f.train_score
        # the earliest candidate within one window (4 windows in training: 25 points)
        # of the best training score
        assert f.candidate == next(c.name for c in GRID if row[c.name] >= max(row.values()) - 25)
        # the test score is score.py's own, at the fold's threshold, on the held-out
        # category plus the category without windows (its false positives count)
        out = corpus / "out" / f.category
        cand = next(c for c in GRID if c.name == f.candidate)
        for rel in json.loads((corpus / "labels/combined_windows.json").read_text()):
            ts, vs = read_series(corpus / "data" / rel)
            scores = score_file(cand, ts, vs, f.threshold)  # the scorer at that alert level
            nab.write_results(str(out), "x", rel, [stamp(t) for t in ts], vs, scores)
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
    # what ships is chosen by the same rule on every file (6 windows: 100 / 6 points)
    alone = [cross_validate(corpus, [c]) for c in GRID]
    best = max(a.chosen_score for a in alone)
    assert res.chosen == next(a.chosen for a in alone if a.chosen_score >= best - 100 / 6)


def test_files_per_category_subsamples(corpus: Path) -> None:
    res = cross_validate(corpus, GRID[:1], files_per_category=1)
    assert all(f.windows == 1 for f in res.folds)


def test_needs_a_nab_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no data/ directory or score\.py"):
        cross_validate(tmp_path, GRID)


def test_detections_from_unsuppressed_scores_are_the_scorers_at_that_level() -> None:
    s = generate(900, seed=5, spike_at=500, spike=15.0, shift_at=700, shift=8.0)
    cand = Candidate("robust", "robust")
    free = score_file(cand, s.timestamps_ms, s.values)
    for thr in (0.2, 0.38, 0.6):
        at = score_file(cand, s.timestamps_ms, s.values, thr)
        hits = detections(free, thr, suppress=20)
        assert hits == [i for i, x in enumerate(at) if x >= thr]
    assert detections(free, 0.38, suppress=20)  # the spike is found


def test_sensitivity_is_each_candidate_alone_and_suppress_is_applied_after_replay(
    corpus: Path,
) -> None:
    grid = (*GRID, Candidate("suppress=0", "robust", {}, "no suppression", suppress=0))
    res = cross_validate(corpus, grid)
    for cand in grid:
        alone = cross_validate(corpus, [cand])
        assert res.sensitivity[cand.name] == (alone.mean, alone.worst)
    # a candidate that differs only in suppress shares the replay, not the detections
    ts, vs = read_series(corpus / "data" / "catA" / "s0.csv")
    free = score_file(grid[0], ts, vs)
    assert detections(free, 0.36, 0) == [i for i, s in enumerate(free) if s >= 0.36]
    lines = format_report(res, grid)
    assert any(ln.startswith("  suppress=0: cv_mean=") for ln in lines)
    assert res.points == 2 * sum(len(read_series(p)[0]) for p in corpus.glob("data/*/*.csv"))
