"""``MetricsAggregator().aggregate(metrics=..., aggregation_rules=...)``.

*Aggregation rules* (:class:`AggregationRules`, or a dict of its fields):

* ``windows``: tumbling event-time window sizes (``["10s", "1m"]``; default
  ``aggregation.windows``). Downsampling is a coarser window: ``["1h"]`` keeps one
  row per series and hour.
* ``statistics``: which of ``count sum min max mean last p50 p90 p99 first increase
  resets`` each result carries (default all); quantiles are DDSketch estimates within
  ``aggregation.quantile_relative_accuracy`` (1 %), the counter fields follow
  docs/aggregation.md.
* ``group_by``: labels kept; the samples of every series with the same values of those
  labels (and the same name) are aggregated together, like PromQL's ``by``. None (the
  default): every series on its own.
* ``metrics``: metric names or globs (``node_cpu_*``) to aggregate; empty: all.

``local`` mode feeds the samples to ``PartitionAggregator`` (the worker's own window
code) and closes every window. ``pipeline`` mode reads the windows the running worker
closed for those samples from ClickHouse (``aggregates`` table), waiting until every
window is there with at least the samples given; it needs windows the worker computes
(``aggregation.windows``) and no ``group_by`` (use a recording rule).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitoring.config import Duration, Settings, ms
from monitoring.facade.common import resolve, wait_for
from monitoring.metrics.aggregator import Aggregate, PartitionAggregator
from monitoring.metrics.samples import Sample, series_key

Statistic = Literal[
    "count", "sum", "min", "max", "mean", "last", "p50", "p90", "p99", "first", "increase",
    "resets",
]  # fmt: skip
STATISTICS: tuple[Statistic, ...] = get_args(Statistic)
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
MAX_SAMPLES = 5_000_000


class AggregationRules(BaseModel):
    """What to aggregate and how (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: list[Duration] | None = Field(None, min_length=1, max_length=8)
    statistics: list[Statistic] = Field(list(STATISTICS), min_length=1)
    group_by: list[str] | None = Field(None, max_length=16)
    metrics: list[str] = Field([], max_length=256)

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[timedelta] | None) -> list[timedelta] | None:
        if v is not None:
            if any(ms(w) < 1000 for w in v):
                raise ValueError("a window is at least 1s")
            if len(set(v)) != len(v):
                raise ValueError("window sizes must be distinct")
        return v

    @field_validator("group_by")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        for label in v or []:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"{label[:80]!r} is not a label name")
        return v


@dataclass(frozen=True)
class AggregatedMetric:
    """One closed window of one series (or group): the statistics asked for, and the
    full ``Aggregate`` record (what the pipeline writes to ClickHouse)."""

    name: str
    labels: Mapping[str, str]
    window_ms: int
    window_start_ms: int
    window_end_ms: int
    values: Mapping[str, float | int | None]
    aggregate: Aggregate = field(repr=False, compare=False)
    origin: Literal["local", "pipeline"] = "local"

    @property
    def series(self) -> str:
        return self.aggregate.series


def as_samples(metrics: Any) -> list[Sample]:
    """``Sample`` values from what ``collect`` returned, or dicts with ``name``,
    ``value``, ``timestamp_ms`` and optional ``labels``, ``kind``."""
    out: list[Sample] = []
    for m in metrics if isinstance(metrics, Iterable) else [metrics]:
        if isinstance(m, Sample):
            out.append(m)
        elif isinstance(m, Mapping):
            from monitoring.wire.sample_encoding import make_series

            s = make_series(str(m["name"]), m.get("labels"), str(m.get("kind", "GAUGE")))
            out.append(
                Sample(s.key, s.name, s.labels, int(m["timestamp_ms"]), float(m["value"]), s.kind)
            )
        else:
            raise TypeError(f"{type(m).__name__} is not a sample (Sample or a dict)")
        if len(out) > MAX_SAMPLES:
            raise ValueError(f"more than {MAX_SAMPLES} samples: aggregate them in parts")
    return out


def _rules(rules: AggregationRules | Mapping[str, Any] | None) -> AggregationRules:
    if isinstance(rules, AggregationRules):
        return rules
    return AggregationRules.model_validate(dict(rules or {}))


def _selected(samples: list[Sample], patterns: Sequence[str]) -> list[Sample]:
    if not patterns:
        return samples
    return [s for s in samples if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def _grouped(samples: list[Sample], by: Sequence[str]) -> list[Sample]:
    out = []
    for s in samples:
        kept = {k: v for k, v in s.labels.items() if k in by}
        out.append(s._replace(series=series_key(s.name, kept), labels=kept))
    return out


def _result(a: Aggregate, stats: Sequence[str], origin: Literal["local", "pipeline"]) -> Any:
    return AggregatedMetric(
        a.name,
        dict(a.labels),
        a.window_ms,
        a.window_start_ms,
        a.window_end_ms,
        {k: getattr(a, k) for k in stats},
        a,
        origin,
    )


class MetricsAggregator:
    """Windows of samples (see the module).

    >>> from monitoring.metrics.samples import Sample
    >>> got = MetricsAggregator(mode="local").aggregate(
    ...     metrics=[Sample("up", "up", {}, 1_000, 1.0), Sample("up", "up", {}, 2_000, 3.0)],
    ...     aggregation_rules={"windows": ["10s"], "statistics": ["count", "mean"]})
    >>> [(a.window_start_ms, dict(a.values)) for a in got]
    [(0, {'count': 2, 'mean': 2.0})]
    """

    def __init__(self, settings: Settings | None = None, *, mode: str | None = None) -> None:
        self.settings, self.mode = resolve(settings, mode)

    def aggregate(
        self,
        metrics: Any,
        aggregation_rules: AggregationRules | Mapping[str, Any] | None = None,
    ) -> list[AggregatedMetric]:
        """The closed windows of ``metrics`` (samples), ordered by window, series, start."""
        rules = _rules(aggregation_rules)
        windows = rules.windows or list(self.settings.aggregation.windows)
        samples = _selected(as_samples(metrics), rules.metrics)
        if self.mode == "pipeline":
            return self._from_store(samples, rules, windows)
        if rules.group_by is not None:
            samples = _grouped(samples, rules.group_by)
        a = self.settings.aggregation
        agg = PartitionAggregator(
            [ms(w) for w in windows],
            ms(a.allowed_lateness),
            a.quantile_relative_accuracy,
            max_series=a.max_series,
        )
        kept, refused = agg.admit(samples)
        if refused:
            raise ValueError(
                f"{len(refused)} series over aggregation.max_series ({a.max_series}), "
                f"such as {refused[0][:200]}"
            )
        closed = agg.process(0, cast(list[Sample], kept)).closed + agg.close_idle()
        closed.sort(key=lambda x: (x.window_ms, x.series, x.window_start_ms))
        return [_result(x, rules.statistics, "local") for x in closed]

    def _from_store(
        self, samples: list[Sample], rules: AggregationRules, windows: list[timedelta]
    ) -> list[AggregatedMetric]:
        if rules.group_by is not None:
            raise ValueError(
                "group_by in pipeline mode: the store keeps windows per series; write a "
                "recording rule (sum by (...)), or aggregate with mode='local'"
            )
        have = self.settings.aggregation.windows
        missing = [w for w in windows if w not in have]
        if missing:
            raise ValueError(
                f"windows {[str(w) for w in missing]}: the worker computes "
                f"aggregation.windows {[str(w) for w in have]} only"
            )
        if not samples:
            return []
        from monitoring.facade.store_io import read_aggregates

        want: dict[tuple[str, int, int], int] = {}
        for s in samples:
            for w in windows:
                wm = ms(w)
                k = (s.series, wm, s.timestamp_ms - s.timestamp_ms % wm)
                want[k] = want.get(k, 0) + 1

        def probe() -> list[Aggregate] | None:
            rows = read_aggregates(self.settings, want)
            got = {(r.series, r.window_ms, r.window_start_ms): r for r in rows}
            if all(k in got and got[k].count >= n for k, n in want.items()):
                return [got[k] for k in want]
            return None

        wait_s = self.settings.python_api.wait.total_seconds()
        rows = wait_for(probe, wait_s, f"{len(want)} windows of the samples in the store")
        rows.sort(key=lambda x: (x.window_ms, x.series, x.window_start_ms))
        return [_result(x, rules.statistics, "pipeline") for x in rows]
