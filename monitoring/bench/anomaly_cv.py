"""Leave-one-category-out cross-validation of anomaly detector settings on NAB.

For every candidate setting (:data:`GRID`), every NAB data file is replayed once
through :class:`~monitoring.anomaly.scorer.SeriesScorer` (the agent's code path).
Then, for each category that has anomaly windows (a *fold*):

* **train** on every other category plus the categories without windows
  (``artificialNoAnomaly``): for each candidate, NAB's threshold search over the
  pooled training files; the candidate with the best normalised training score wins
  (ties: the earlier, simpler one), with its threshold;
* **test** on the held-out category plus the categories without windows, at that
  candidate and threshold: nothing of the held-out category chose them. The files
  without windows add no window, only the cost of their false positives, in every
  fold.

The fold scores, their mean and their worst are the figures to report. Scoring uses
the NAB directory's own ``score.py`` (loaded as a module), the same rules as
``score.py --threshold-search``.
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


def score_file(cand: Candidate, ts: Sequence[int], vs: Sequence[float]) -> list[float]:
    """The candidate's scores of one series, from a fresh scorer."""
    update = SeriesScorer(cand.detector, options=cand.options).update
    return [update(t, v).score for t, v in zip(ts, vs, strict=True)]


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
    scored: dict[str, list[Any]] = {}
    t0 = time.process_time()
    for cand in grid:
        progress(f"replaying {cand.name}")
        scored[cand.name] = [
            nab.Scored(df, score_file(cand, *data[df.relpath]), cost) for df in corpus
        ]
    cpu = time.process_time() - t0
    with_windows = sorted({df.category for df in corpus if df.windows})
    always = {df.category for df in corpus} - set(with_windows)
    folds: list[Fold] = []
    table: dict[str, dict[str, float]] = {}
    final = _choose(nab, grid, scored, list(range(len(corpus))), cost)
    for held in with_windows:
        train_idx = [i for i, df in enumerate(corpus) if df.category != held]
        test_idx = [
            i for i, df in enumerate(corpus) if df.category in always or df.category == held
        ]
        train_score, cand, thr, table[held] = _choose(nab, grid, scored, train_idx, cost)
        files = [scored[cand.name][i] for i in test_idx]
        res = [f.score_at(thr) for f in files]
        null, perfect = nab.null_and_perfect([f.df for f in files], cost)
        folds.append(
            Fold(
                held, cand.name, thr, train_score,
                nab.normalise(sum(r[0] for r in res), null, perfect),
                sum(len(f.df.scorable_windows) for f in files), sum(r[5] for r in res),
                sum(r[2] for r in res),
            )
        )  # fmt: skip
    return CvResult(folds, table, points * len(grid), cpu, final[1].name, final[2], final[0])


def _choose(
    nab: ModuleType,
    grid: Sequence[Candidate],
    scored: Mapping[str, list[Any]],
    idx: Sequence[int],
    cost: Mapping[str, float],
) -> tuple[float, Candidate, float, dict[str, float]]:
    """(score, candidate, threshold, every candidate's score) of the best candidate on
    the files ``idx``, each at its own searched threshold."""
    best: tuple[float, Candidate, float] | None = None
    row: dict[str, float] = {}
    for cand in grid:
        files = [scored[cand.name][i] for i in idx]
        thr, raw = nab.search_threshold(files)
        null, perfect = nab.null_and_perfect([f.df for f in files], cost)
        s = nab.normalise(raw, null, perfect)
        row[cand.name] = s
        if best is None or s > best[0]:
            best = (s, cand, thr)
    assert best is not None
    return (*best, row)


#: The candidate settings; ties go to the earlier one. The first four are structural
#: questions about production series; the rest move one constant of the default each
#: to the values considered when it was first set (on every dev file), so that its
#: choice, too, is made inside the folds and its cost shows in the test scores.
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
