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
    suppress: int | None = None  # points after a detection that score 0 (None: the spec's)


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
    #: candidate -> (CV mean, CV worst) of that candidate alone (its settings fixed, the
    #: threshold still chosen in each fold): how flat the figure is around the defaults
    sensitivity: dict[str, tuple[float, float]] = field(default_factory=dict)

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


@dataclass
class _Replayed:
    """Every candidate's detections on every file, per threshold, and what scores them."""

    nab: ModuleType
    corpus: list[Any]
    cost: Mapping[str, float]
    # candidate -> threshold -> per file (raw score, windows detected, false positives)
    scored: dict[str, dict[float, list[tuple[float, int, int]]]]
    points: int
    cpu_s: float


def _replay(
    nab_dir: Path,
    grid: Sequence[Candidate],
    files_per_category: int,
    progress: Callable[[str], None],
) -> _Replayed:
    """Replay each distinct setting of ``grid`` once over the corpus (candidates that
    differ only in ``suppress`` share a replay: suppression is applied afterwards)."""
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
    scored: dict[str, dict[float, list[tuple[float, int, int]]]] = {}
    free: dict[str, list[list[float]]] = {}  # unsuppressed scores by setting
    cpu = 0.0
    replays = 0
    for cand in grid:
        spec = get_spec(cand.detector)
        suppress = spec.suppress if cand.suppress is None else cand.suppress
        key = f"{cand.detector}:{sorted(cand.options.items())!r}"
        t0 = time.process_time()
        if spec.protect:  # learning depends on the level: replay each
            progress(f"replaying {cand.name}")
            replays += len(THRESHOLDS)
            runs = {
                thr: [score_file(cand, *data[df.relpath], thr) for df in corpus]
                for thr in THRESHOLDS
            }
            hits = {
                thr: [[i for i, x in enumerate(r) if x >= thr] for r in rs]
                for thr, rs in runs.items()
            }
        else:
            if key not in free:
                progress(f"replaying {cand.name}")
                replays += 1
                free[key] = [score_file(cand, *data[df.relpath]) for df in corpus]
            hits = {thr: [detections(r, thr, suppress) for r in free[key]] for thr in THRESHOLDS}
        cpu += time.process_time() - t0
        scored[cand.name] = {
            thr: [_file_result(sf, h) for sf, h in zip(base, hs, strict=True)]
            for thr, hs in hits.items()
        }
    return _Replayed(nab, corpus, cost, scored, points * replays, cpu)


def _folds(
    rp: _Replayed, grid: Sequence[Candidate]
) -> tuple[list[Fold], dict[str, dict[str, float]]]:
    """Each held-out category's fold: chosen on the others, scored on it."""
    nab, corpus, cost, scored = rp.nab, rp.corpus, rp.cost, rp.scored
    with_windows = sorted({df.category for df in corpus if df.windows})
    always = {df.category for df in corpus} - set(with_windows)
    folds: list[Fold] = []
    table: dict[str, dict[str, float]] = {}
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
    return folds, table


def cross_validate(
    nab_dir: Path,
    grid: Sequence[Candidate],
    *,
    files_per_category: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> CvResult:
    """Leave-one-category-out over ``nab_dir`` (module docstring), with the grid's
    choice made inside each fold (nested), and each candidate's own CV alone
    (``sensitivity``: its settings fixed, the threshold chosen in the folds).

    ``files_per_category`` > 0 keeps only the first that many files of each category
    (quick iterations; report the full run).
    """
    rp = _replay(nab_dir, grid, files_per_category, progress)
    folds, table = _folds(rp, grid)
    final = _choose(rp.nab, grid, rp.corpus, rp.scored, list(range(len(rp.corpus))), rp.cost)
    sens: dict[str, tuple[float, float]] = {}
    for cand in grid:
        alone, _ = _folds(rp, [cand])
        scores = [f.test_score for f in alone]
        sens[cand.name] = (sum(scores) / len(scores), min(scores))
    return CvResult(folds, table, rp.points, rp.cpu_s, final[1].name, final[2], final[0], sens)


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


#: Each tunable constant of ``robust`` with its neighbours: half and twice the value
#: where that is meaningful, else the values either side (damping factors: a stronger
#: one and none; margins: none and a wider one). Memory-bound sizes (``window``,
#: ``buckets``) only downwards: twice would break the 50 KB per series budget.
NEIGHBOURS_OF: tuple[tuple[str, tuple[float, ...], str], ...] = (
    ("window", (300,), "points in each rolling window (memory-bound: not 1,200)"),
    ("buckets", (72,), "time-of-day buckets of the daily profile (memory-bound: not 288)"),
    ("min_count", (10, 40), "points before a residual is scored"),
    ("rel_floor", (5e-4, 2e-3), "the least scale, relative to the level"),
    ("mae_alpha", (1 / 250, 1 / 1000), "memory of the mean absolute changes (points^-1)"),
    ("mae_floor", (0.25, 1.0), "the least scale, a share of the mean absolute change"),
    ("likelihood_alpha", (1 / 500, 1 / 2000), "the likelihood's memory (points^-1)"),
    ("record", (50, 200), "points of the burst record"),
    ("record_damp", (0.25, 1.0), "the damping of a surprise within the burst record"),
    ("record_margin", (1.0, 1.05), "how much above the burst record a surprise is new"),
    ("daily_tol", (3, 12), "buckets after this time yesterday that the daily damping reads"),
    ("daily_damp", (0.3, 1.0), "how much a surprise seen yesterday is damped"),
    ("daily_margin", (1.0, 1.5), "how much above yesterday's a surprise is new"),
    ("recur_days", (1, 3), "days a surprise must recur on to be a daily job"),
    ("recur_tol", (3, 12), "buckets either side that count as the same time of day"),
    ("recur_damp", (0.15, 1.0), "how much a surprise seen on each of those days is damped"),
    ("range_tol", (0.05, 0.2), "the margin around the range seen (share of it)"),
    ("range_score", (0.25, 1.0), "the least score of a value outside the range"),
    ("range_min_count", (150, 600), "points before the range is trusted"),
    ("range_decay", (5e-5, 2e-4), "how fast the range relaxes towards the data (per point)"),
)

#: The candidate settings; within one window of the best, the earlier one wins. The
#: first five are structural questions about production series; the rest move one
#: constant of the default each to its neighbours (:data:`NEIGHBOURS_OF`, and the
#: suppression length), so that every constant's choice is made inside the folds
#: (nested) and its cost shows in the sensitivity table.
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
        "no-burst", "robust", {"record": 0},
        "no burst damping: the likelihood alone judges a repeated surprise",
    ),
    Candidate(
        "core", "robust", {"range_score": 0.0, "daily_tol": -1, "recur_days": 0},
        "forecasters, likelihood and burst damping only: the fewest parts",
    ),
    *(
        Candidate(f"{key}={value:g}", "robust", {key: value}, why)
        for key, values, why in NEIGHBOURS_OF
        for value in values
    ),
    *(
        Candidate(f"suppress={n}", "robust", {}, "points silenced after a detection", n)
        for n in (10, 40)
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
    shipped = next((c for c in grid if c.name == res.chosen), None)
    if shipped is not None:
        level = get_spec(shipped.detector).alert_level
        agree = "agrees" if abs(level - res.chosen_threshold) < 1e-9 else "DISAGREES"
        lines.append(
            f"registered alert level of {shipped.detector}: {level:.4f} ({agree}; the agent's "
            "events start there unless anomaly.threshold is set)"
        )
    if len(grid) > 1:
        lines.append(
            "sensitivity (each candidate alone: settings fixed, threshold chosen in the folds):"
        )
        lines += [
            f"  {name}: cv_mean={m:.2f} cv_worst={w:.2f}"
            for name, (m, w) in res.sensitivity.items()
        ]
        for held, row in res.train_table.items():
            cells = " ".join(f"{k}={v:.2f}" for k, v in row.items())
            lines.append(f"  train scores without {held}: {cells}")
    return lines
