"""Leave-one-category-out cross-validation of anomaly detector settings on NAB.

For every candidate setting (:data:`GRID`), every NAB data file is replayed once
through :class:`~monitoring.anomaly.scorer.SeriesScorer` (the agent's code path) with
no suppression; a candidate *threshold* (:data:`THRESHOLDS`) is then the scorer's alert
level: a point at or above it is a detection and the next ``suppress`` points are not
(:func:`detections`, the scorer's rule), so suppression starts at the decision
threshold. For each category that has anomaly windows (a *fold*):

* **train** on every other category plus the categories without windows
  (``artificialNoAnomaly``): each candidate at its best threshold on the pooled
  training files (NAB's standard profile; a threshold scored by the mean over it and
  its neighbours, :data:`NEIGHBOURS`); the chosen candidate is the earliest of the
  grid whose training score is within **one window** of the best (``100 / windows``
  normalised points: a window missed instead of detected); a smaller difference is
  noise, not evidence (the one-standard-error rule of model selection), and the grid
  lists the default and the simpler settings first;
* **test** on the held-out category plus the categories without windows, at that
  candidate and threshold: nothing of the held-out category chose them. The files
  without windows add no window, only the cost of their false positives, in every
  fold.

The fold scores, their mean and their worst are the figures to report. Scoring uses
the NAB directory's own ``score.py`` (loaded as a module): its per-row credits, the
same rules as ``score.py`` at a fixed threshold on the scorer's output.
"""

from __future__ import annotations

import csv
import importlib.util
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from monitoring.anomaly.registry import get_spec
from monitoring.anomaly.replay import parse_timestamp_ms
from monitoring.anomaly.scorer import SeriesScorer

PROFILE = "standard"


@dataclass(frozen=True)
class Candidate:
    """One setting of the grid: a detector with constructor options, and why it is there."""

    name: str
    detector: str
    options: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Fold:
    """The result of one held-out category."""

    category: str
    candidate: str
    threshold: float
    train_score: float
    test_score: float
    windows: int
    detected: int
    false_positives: int


@dataclass
class CvResult:
    folds: list[Fold]
    train_table: dict[str, dict[str, float]]  # category held out -> candidate -> train score
    points: int
    cpu_s: float
    chosen: str = ""  # the candidate chosen on every file: what ships (not a test score)
    chosen_threshold: float = 0.0
    chosen_score: float = 0.0  # its score on the files it was chosen on

    @property
    def mean(self) -> float:
        return sum(f.test_score for f in self.folds) / len(self.folds)

    @property
    def worst(self) -> float:
        return min(f.test_score for f in self.folds)


def load_score_module(nab_dir: Path) -> ModuleType:
    """The NAB directory's ``score.py`` as a module."""
    script = nab_dir / "score.py"
    if not (nab_dir / "data").is_dir() or not script.is_file():
        raise FileNotFoundError(f"{nab_dir} has no data/ directory or score.py")
    spec = importlib.util.spec_from_file_location("nab_score", script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {script}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_series(path: Path) -> tuple[list[int], list[float]]:
    """(epoch ms, values) of a NAB-layout CSV (``timestamp,value``)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r]
    return (
        [parse_timestamp_ms(r["timestamp"]) for r in rows],
        [float(r["value"]) if r["value"].strip() else float("nan") for r in rows],
    )


#: Candidate thresholds: scores 0.20-0.80 in steps of 0.01, tail probabilities
#: 1e-2 to 1e-8 in steps of a factor 10^0.1.
THRESHOLDS: tuple[float, ...] = tuple(round(0.2 + 0.01 * k, 2) for k in range(61))
#: A threshold is judged by its training score averaged with this many neighbours on
#: either side (±0.02: tail probabilities within a factor 1.6), so that the choice is
#: not the edge of a cliff that a small shift of the scores on unseen data falls off.
NEIGHBOURS = 2


def score_file(
    cand: Candidate, ts: Sequence[int], vs: Sequence[float], threshold: float | None = None
) -> list[float]:
    """The candidate's scores of one series, from a fresh scorer whose alert level is
    ``threshold`` (``None``: no suppression at all)."""
    level = 2.0 if threshold is None else threshold  # scores are <= 1: never suppresses
    update = SeriesScorer(cand.detector, options=cand.options, alert_level=level).update
    return [update(t, v).score for t, v in zip(ts, vs, strict=True)]


def detections(scores: Sequence[float], threshold: float, suppress: int) -> list[int]:
    """Indices the scorer reports at alert level ``threshold``, from its unsuppressed
    scores: a point at or above it, then ``suppress`` points that score 0."""
    out: list[int] = []
    cool = 0
    for i, s in enumerate(scores):
        if cool > 0:
            cool -= 1
        elif s >= threshold:
            out.append(i)
            cool = suppress
    return out


def _file_result(sf: Any, hits: Sequence[int]) -> tuple[float, int, int]:
    """(raw score, windows detected, false positives) of one file's detections: the
    rules of ``score.py``'s ``Scored.score_at`` on a 0/1 score."""
    p = sf.df.probation
    best: dict[int, float] = {}
    fp, fp_sum = 0, 0.0
    for i in hits:
        if i < p:
            continue
        w, c = sf.df.row_window[i - p], sf.credit[i - p]
        if w < 0:
            fp += 1
            fp_sum += c
        elif w not in best or c > best[w]:
            best[w] = c
    raw = fp_sum + sum(best.get(w, -sf.fn_w) for w in sf.df.scorable_windows)
    return raw, len(best), fp


def cross_validate(
    nab_dir: Path,
    grid: Sequence[Candidate],
    *,
    files_per_category: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> CvResult:
    """Leave-one-category-out over ``nab_dir`` (module docstring).

    ``files_per_category`` > 0 keeps only the first that many files of each category
    (quick iterations; report the full run).
    """
    nab = load_score_module(nab_dir)
    src = nab.NabSource(str(nab_dir))
    corpus = nab.load_corpus(src)
    if files_per_category > 0:
        kept: dict[str, int] = {}
        sub = []
        for df in corpus:
            kept[df.category] = kept.get(df.category, 0) + 1
            if kept[df.category] <= files_per_category:
                sub.append(df)
        corpus = sub
    cost = nab.load_profiles(src)[0][PROFILE]
    data = {df.relpath: read_series(nab_dir / "data" / df.relpath) for df in corpus}
    points = sum(len(ts) for ts, _ in data.values())
    base = [nab.Scored(df, [0.0] * df.n, cost) for df in corpus]  # credits per row
    # candidate -> threshold -> per file (raw score, windows detected, false positives)
    scored: dict[str, dict[float, list[tuple[float, int, int]]]] = {}
    cpu = 0.0
    for cand in grid:
        progress(f"replaying {cand.name}")
        suppress = get_spec(cand.detector).suppress
        t0 = time.process_time()
        if get_spec(cand.detector).protect:  # learning depends on the level: replay each
            runs = {
                thr: [score_file(cand, *data[df.relpath], thr) for df in corpus]
                for thr in THRESHOLDS
            }
            hits = {
                thr: [[i for i, x in enumerate(r) if x >= thr] for r in rs]
                for thr, rs in runs.items()
            }
        else:
            raw = [score_file(cand, *data[df.relpath]) for df in corpus]
            hits = {thr: [detections(r, thr, suppress) for r in raw] for thr in THRESHOLDS}
        cpu += time.process_time() - t0
        scored[cand.name] = {
            thr: [_file_result(sf, h) for sf, h in zip(base, hs, strict=True)]
            for thr, hs in hits.items()
        }
    with_windows = sorted({df.category for df in corpus if df.windows})
    always = {df.category for df in corpus} - set(with_windows)
    folds: list[Fold] = []
    table: dict[str, dict[str, float]] = {}
    final = _choose(nab, grid, corpus, scored, list(range(len(corpus))), cost)
    for held in with_windows:
        train_idx = [i for i, df in enumerate(corpus) if df.category != held]
        test_idx = [
            i for i, df in enumerate(corpus) if df.category in always or df.category == held
        ]
        train_score, cand, thr, table[held] = _choose(nab, grid, corpus, scored, train_idx, cost)
        res = [scored[cand.name][thr][i] for i in test_idx]
        null, perfect = nab.null_and_perfect([corpus[i] for i in test_idx], cost)
        folds.append(
            Fold(
                held, cand.name, thr, train_score,
                nab.normalise(sum(r[0] for r in res), null, perfect),
                sum(len(corpus[i].scorable_windows) for i in test_idx), sum(r[1] for r in res),
                sum(r[2] for r in res),
            )
        )  # fmt: skip
    return CvResult(folds, table, points * len(grid), cpu, final[1].name, final[2], final[0])


def _choose(
    nab: ModuleType,
    grid: Sequence[Candidate],
    corpus: Sequence[Any],
    scored: Mapping[str, Mapping[float, list[tuple[float, int, int]]]],
    idx: Sequence[int],
    cost: Mapping[str, float],
) -> tuple[float, Candidate, float, dict[str, float]]:
    """(score, candidate, threshold, every candidate's score) on the files ``idx``.

    A candidate's score is its best over the thresholds of the training score averaged
    over the threshold and its :data:`NEIGHBOURS` on either side (ties: the higher
    threshold); the chosen candidate is the earliest within one window of the best
    (module docstring).
    """
    null, perfect = nab.null_and_perfect([corpus[i] for i in idx], cost)
    best: dict[str, tuple[float, float]] = {}
    for cand in grid:
        by_thr = scored[cand.name]
        raw = [nab.normalise(sum(by_thr[t][i][0] for i in idx), null, perfect) for t in THRESHOLDS]
        smooth = [
            sum(raw[max(0, k - NEIGHBOURS) : k + NEIGHBOURS + 1])
            / len(raw[max(0, k - NEIGHBOURS) : k + NEIGHBOURS + 1])
            for k in range(len(raw))
        ]
        k = max(range(len(raw)), key=lambda j: (smooth[j], j))
        best[cand.name] = (smooth[k], THRESHOLDS[k])
    top = max(s for s, _ in best.values())
    one_window = 100.0 * (float(cost["tpWeight"]) + float(cost["fnWeight"])) / (perfect - null)
    cand = next(c for c in grid if best[c.name][0] >= top - one_window - 1e-9)
    return best[cand.name][0], cand, best[cand.name][1], {k: v[0] for k, v in best.items()}


#: The candidate settings; within one window of the best, the earlier one wins. The
#: first four are structural questions about production series; the rest move one
#: constant of the default each to the values considered when it was first set (on
#: every dev file), so that its choice, too, is made inside the folds and its cost
#: shows in the test scores.
GRID: tuple[Candidate, ...] = (
    Candidate(
        "robust", "robust", {},
        "the default: forecasters, likelihood, burst/daily/recurrence damping, range novelty",
    ),
    Candidate(
        "no-range", "robust", {"range_score": 0.0},
        "no range novelty: heavy-tailed series (event counts) set new extremes routinely",
    ),
    Candidate(
        "no-daily", "robust", {"daily_tol": -1, "recur_days": 0},
        "no daily damping: a series without a daily rhythm gains nothing from it, and it "
        "can hide an incident that repeats yesterday's",
    ),
    Candidate(
        "core", "robust", {"range_score": 0.0, "daily_tol": -1, "recur_days": 0},
        "forecasters, likelihood and burst damping only: the fewest parts",
    ),
    *(
        Candidate(f"{key}={value:g}", "robust", {key: value}, why)
        for key, values, why in (
            ("record_margin", (1.0, 1.05), "how much above the recent record a surprise is new"),
            ("daily_damp", (0.5, 0.7), "how much a surprise seen yesterday is damped"),
            ("daily_margin", (1.0, 1.5), "how much above yesterday's a surprise is new"),
            ("recur_damp", (0.5, 1.0), "how much a surprise seen on two days is damped"),
            ("likelihood_alpha", (1 / 500, 1 / 2000), "the likelihood's memory (points^-1)"),
            ("range_tol", (0.05, 0.2), "the margin around the range seen (share of it)"),
        )
        for value in values
    ),
)  # fmt: skip


def format_report(res: CvResult, grid: Sequence[Candidate]) -> list[str]:
    """One line per fold and the training-score table (the last line is not included)."""
    lines = [f"grid: {', '.join(c.name for c in grid)}"]
    lines += [f"  {c.name}: {c.why}" for c in grid]
    for f in res.folds:
        lines.append(
            f"fold {f.category}: chose {f.candidate} threshold={f.threshold:.4f} "
            f"train={f.train_score:.2f} test={f.test_score:.2f} "
            f"windows_hit={f.detected}/{f.windows} fp={f.false_positives}"
        )
    lines.append(
        f"chosen on every file (what ships): {res.chosen} threshold={res.chosen_threshold:.4f} "
        f"(in-sample {res.chosen_score:.2f}, not a test score)"
    )
    if len(grid) > 1:
        for held, row in res.train_table.items():
            cells = " ".join(f"{k}={v:.2f}" for k, v in row.items())
            lines.append(f"  train scores without {held}: {cells}")
    return lines
